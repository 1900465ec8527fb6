"""SQL over the store: every table registered as a DuckDB view over its Parquet files."""
from __future__ import annotations

import csv
import datetime
import json
import math
import sys
from contextlib import nullcontext
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterator

import duckdb
import pyarrow as pa

from pipeline.errors import UserError
from pipeline.store import Store

# view name -> (path pattern under the store, read_parquet options). Only `part-*` files: a
# killed writer's temporary `.tmp-*` file is never read. Partitioned tables
# (scores/scorer=<id>/...) get their partition key as a column through hive partitioning.
PARQUET_VIEWS = {
    "docs": ("docs/part-*.parquet", ""),
    "quarantine": ("quarantine/part-*.parquet", ""),
    "scores": ("scores/*/part-*.parquet", ", hive_partitioning = true"),
    "ratings": ("ratings/*/part-*.parquet", ", hive_partitioning = true"),
    "selections": ("selections/*/part-*.parquet", ", filename = true"),  # + selection, from the folder
    "reference_splits": ("reference_splits/*/part-*.parquet", ", hive_partitioning = true"),
    # `curate correlate`, every run (each table has its `run` column):
    "correlations": ("correlations/*/estimates/part-*.parquet", ""),
    "bpb_matrix": ("correlations/*/matrix/part-*.parquet", ""),
    "benchmarks": ("correlations/*/benchmarks/part-*.parquet", ""),
    "page_scores": ("correlations/*/page_scores/part-*.parquet", ""),
    # `curate evaluate`, every evaluation (each table has its `evaluation` column):
    "evaluations": ("evaluations/*/summary.parquet", ""),
    "evaluation_runs": ("evaluations/*/runs.parquet", ""),
}
# views derived from others, created when the view they read is: name -> (that view, query)
DERIVED_VIEWS = {
    # the domains each correlate run samples from, by their projected weight
    "domain_weights": ("correlations", "SELECT run, domain, weight, token_share, tau, projection, rank, estimate "
                                       "FROM correlations WHERE weight > 0 ORDER BY run, weight DESC, domain"),
}


def connect(store: Store) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """An in-memory DuckDB with a view per table present in the store; returns (connection, view names)."""
    if "://" in store.uri:
        raise UserError(f"curate sql reads local stores; copy or mount {store.uri} locally first")
    if not store.exists():
        raise UserError(f"store not found: {store.uri}")
    con = duckdb.connect()
    views = []
    root = Path(store.uri)
    for name, (pattern, options) in PARQUET_VIEWS.items():
        if any(root.glob(pattern)):
            glob = str(root / pattern).replace("'", "''")
            columns = "*"
            if name == "selections":
                columns = r"* EXCLUDE (filename), regexp_extract(filename, '([^/\\]+)[/\\]part-[^/\\]*$', 1) AS selection"
            con.execute(f"CREATE VIEW {name} AS SELECT {columns} FROM read_parquet('{glob}'{options})")
            views.append(name)
    for name, (source, sql) in DERIVED_VIEWS.items():
        if source in views:
            con.execute(f"CREATE VIEW {name} AS {sql}")
            views.append(name)
    if any(root.glob("_runs/*/*.json")):
        glob = str(root / "_runs/*/*.json").replace("'", "''")
        con.execute(f"CREATE VIEW runs AS SELECT * FROM read_json_auto('{glob}', union_by_name = true)")
        views.append("runs")
    return con, views


def query(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    try:
        relation = con.sql(sql)
        # Statements that return no rows (CREATE VIEW, SET, ...) give no relation.
        return relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.Error as e:
        raise UserError(f"SQL error: {e}") from None


def write_result(table: pa.Table, fmt: str, output: str | None) -> None:
    """Write a query result as csv, json (one object per line) or parquet to `output` (stdout for csv/json).

    csv and json are written from the Arrow values, not through pandas, which turns an integer column
    holding a NULL into floats (3 -> 3.0). NULL is an empty csv field and a json null; nested values
    (lists, structs) are JSON text in csv; bytes are text with undecodable bytes escaped (\\xff)."""
    if fmt == "parquet":
        if not output:
            raise UserError("--format parquet needs --output FILE")
        import pyarrow.parquet as pq
        pq.write_table(table, output)
        return
    if fmt not in ("csv", "json"):
        raise UserError(f"unknown format {fmt!r}: use table, csv, json or parquet")
    with open(output, "w", encoding="utf-8", newline="") if output else nullcontext(sys.stdout) as out:
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(table.column_names)
            for row in _rows(table):
                writer.writerow([_csv_field(v) for v in row])
        else:
            for row in _rows(table):
                out.write(json.dumps(dict(zip(table.column_names, map(_plain, row))), ensure_ascii=False) + "\n")


def _rows(table: pa.Table) -> Iterator[tuple]:
    """The rows of `table` as tuples of Python values, a record batch at a time."""
    for batch in table.to_batches():
        yield from zip(*(column.to_pylist() for column in batch.columns))


def _plain(value):
    """A query value as JSON data: NULL -> None, ints stay ints, non-finite floats -> None (JSON has no
    NaN), an integral DECIMAL (DuckDB's sum() of integers is a HUGEINT) -> int, times -> ISO 8601."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return int(value) if value.as_tuple().exponent >= 0 else float(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, (datetime.date, datetime.time)):  # a datetime is a date
        return value.isoformat()
    return str(value)  # timedelta, UUID, ...


def _csv_field(value):
    """One csv field: NULL -> empty, floats and decimals as written (3.0, 2.50), nested values as JSON."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(_plain(value), ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (float, Decimal)):
        return str(value)
    return _plain(value)


def repl(con: duckdb.DuckDBPyConnection, show: Callable[[pa.Table], None], warn: Callable[[str], None]) -> None:
    """Read statements (ending with ';') from standard input until EOF or .quit, showing each result."""
    buffer = ""
    while True:
        try:
            line = input("curate> " if not buffer else "   ...> ")
        except EOFError:
            break
        if line.strip() in (".quit", ".exit") and not buffer:
            break
        buffer += line + "\n"
        if buffer.rstrip().endswith(";"):
            try:
                show(query(con, buffer))
            except UserError as e:
                warn(str(e))
            buffer = ""
