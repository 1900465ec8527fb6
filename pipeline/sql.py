"""SQL over the store: every table registered as a DuckDB view over its Parquet files."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

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
    """Write a query result as csv, json (one object per line) or parquet to `output` (stdout for csv/json)."""
    import sys
    if fmt == "parquet":
        if not output:
            raise UserError("--format parquet needs --output FILE")
        import pyarrow.parquet as pq
        pq.write_table(table, output)
        return
    if fmt == "csv":
        text = table.to_pandas().to_csv(index=False)
    elif fmt == "json":
        text = table.to_pandas().to_json(orient="records", lines=True, force_ascii=False, date_format="iso")
    else:
        raise UserError(f"unknown format {fmt!r}: use table, csv, json or parquet")
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


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
