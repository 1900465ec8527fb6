"""`curate sql` output: query results written as csv / json from a real store through real DuckDB."""
import csv
import io
import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from pipeline.errors import UserError
from pipeline.sql import connect, query, write_result
from pipeline.store import Store


@pytest.fixture
def quarantine_store(tmp_path):
    """A store whose quarantine has a NULL in the integer column source_offset (a whole-file rejection)."""
    store = Store(tmp_path / "store")
    store.write_table(pa.table({
        "source_file": ["/raw/a.jsonl", "/raw/b.jsonl", "/raw/c.jsonl"],
        "source_offset": [3, None, 12],
        "source_format": ["jsonl", "jsonl", "jsonl"],
        "reason": ["malformed_json", "empty_file", "invalid_utf8"],
        "detail": ["not valid JSON", "file is empty", "byte 0xff"],
        "raw": [b"{oops", None, b"caf\xe9"],
    }), schemas.QUARANTINE, "quarantine", "part-0.parquet")
    return store


def run(store: Store, sql: str, fmt: str, tmp_path) -> str:
    con, _ = connect(store)
    out = tmp_path / f"out.{fmt}"
    write_result(query(con, sql), fmt, str(out))
    return out.read_text(encoding="utf-8")


def test_csv_keeps_integers_with_nulls_as_integers(quarantine_store, tmp_path):
    text = run(quarantine_store, "SELECT source_offset, reason, raw FROM quarantine ORDER BY source_file", "csv",
               tmp_path)
    assert text == ("source_offset,reason,raw\n"
                    "3,malformed_json,{oops\n"
                    ",empty_file,\n"                      # NULL: an empty field, not nan or 0.0
                    "12,invalid_utf8,caf\\xe9\n")          # bytes that are not UTF-8 are escaped, not lost


def test_json_keeps_integers_with_nulls_as_integers(quarantine_store, tmp_path):
    text = run(quarantine_store, "SELECT source_offset, reason, count(*) OVER () AS n, sum(source_offset) OVER () "
               "AS total FROM quarantine ORDER BY source_file", "json", tmp_path)
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows == [{"source_offset": 3, "reason": "malformed_json", "n": 3, "total": 15},
                    {"source_offset": None, "reason": "empty_file", "n": 3, "total": 15},
                    {"source_offset": 12, "reason": "invalid_utf8", "n": 3, "total": 15}]
    assert '"source_offset": 3,' in text and "3.0" not in text and "15.0" not in text  # sum() is a HUGEINT


def test_other_types_in_csv_and_json(tmp_path, capsys):
    con = duckdb.connect()
    sql = ("SELECT * FROM (VALUES (2.5::DOUBLE, 3.0::DOUBLE, 1.50::DECIMAL(4, 2), true, [1, 2], {'a': 'x'}, "
           "TIMESTAMP '2024-01-02 03:04:05', 'a,\"b\"', 'nan'::DOUBLE), "
           "(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)) t(f, g, d, b, l, s, ts, q, n)")
    write_result(query(con, sql), "csv", None)                     # stdout
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [["f", "g", "d", "b", "l", "s", "ts", "q", "n"],
                    ["2.5", "3.0", "1.50", "true", "[1, 2]", '{"a": "x"}', "2024-01-02T03:04:05", 'a,"b"', "nan"],
                    [""] * 9]

    write_result(query(con, sql), "json", None)
    first, second = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert first == {"f": 2.5, "g": 3.0, "d": 1.5, "b": True, "l": [1, 2], "s": {"a": "x"},
                     "ts": "2024-01-02T03:04:05", "q": 'a,"b"', "n": None}   # JSON has no NaN
    assert second == dict.fromkeys(first)


def test_parquet_and_bad_formats(quarantine_store, tmp_path):
    con, _ = connect(quarantine_store)
    table = query(con, "SELECT source_offset FROM quarantine")
    with pytest.raises(UserError, match="--output"):
        write_result(table, "parquet", None)
    write_result(table, "parquet", str(tmp_path / "out.parquet"))
    assert pq.read_table(tmp_path / "out.parquet").column("source_offset").type == pa.int64()
    with pytest.raises(UserError, match="unknown format"):
        write_result(table, "xml", None)


def _estimates(run: str, weights: dict[str, float]) -> pa.Table:
    """A correlate run's estimates table: one row per domain, ranked by estimate (= its weight here)."""
    order = sorted(weights, key=lambda d: -weights[d])
    return pa.Table.from_pylist([{
        "run": run, "domain": d, "estimate": weights[d] - 0.1, "rank": order.index(d) + 1, "method": "sign_cdf",
        "sign_cdf": 0.0, "sign": 0.0, "sign_sign": 0.0, "product": 0.0, "spearmanr": 0.0, "pages": 10,
        "store_pages": 20, "store_bytes": 2000, "token_share": 1 / len(weights), "tau": 2 / len(weights),
        "weight": w, "projection": "linear"} for d, w in weights.items()], schema=schemas.CORRELATION_ESTIMATES)


def test_correlate_tables_are_views_across_runs(tmp_path):
    store = Store(tmp_path / "store")
    runs = {"alpha": {"a.org": 0.6, "b.org": 0.0, "c.org": 0.4}, "beta": {"a.org": 0.0, "b.org": 1.0, "c.org": 0.0}}
    for run, weights in runs.items():
        store.write_table(_estimates(run, weights), schemas.CORRELATION_ESTIMATES, "correlations", run, "estimates",
                          "part-00000.parquet")
        store.write_table(pa.table({"run": [run] * 2, "model": ["m1", "m2"], "domain": ["a.org"] * 2,
                                    "bits_per_byte": [1.0, 0.9], "pages": [3, 3], "tokens": [30, 30]}),
                          schemas.BPB_MATRIX, "correlations", run, "matrix", "part-00000.parquet")
        store.write_table(pa.table({"run": [run] * 2, "model": ["m1", "m2"], "benchmark": ["arc"] * 2,
                                    "accuracy": [0.3, None], "accuracy_norm": [0.31, None], "error": [0.7, 0.6], "bits_per_byte": [1.2, None],
                                    "items": [100, None], "used": [True, False]}),
                          schemas.BENCHMARK_RESULTS, "correlations", run, "benchmarks", "part-00000.parquet")
    # page scores in two parts for one run only
    for part, ids in enumerate((["d1", "d2"], ["d3"])):
        store.write_table(pa.table({"doc_id": ids, "run": ["alpha"] * len(ids), "p_include": [0.9, 0.1][:len(ids)],
                                    "domain": ["a.org"] * len(ids), "label": ["include"] * len(ids)}),
                          schemas.PAGE_SCORES, "correlations", "alpha", "page_scores", f"part-{part:05d}.parquet")
    (tmp_path / "store" / "correlations" / "alpha" / "page_scores" / ".tmp-x-part-00009.parquet").write_bytes(b"junk")

    con, views = connect(store)
    assert {"correlations", "bpb_matrix", "benchmarks", "page_scores", "domain_weights"} <= set(views)
    assert con.execute("SELECT run, count(*) FROM correlations GROUP BY run ORDER BY run").fetchall() == \
        [("alpha", 3), ("beta", 3)]
    assert con.execute("SELECT count(*), count(DISTINCT run) FROM bpb_matrix").fetchone() == (4, 2)
    assert con.execute("SELECT count(*) FROM benchmarks WHERE used").fetchone() == (2,)
    assert con.execute("SELECT run, count(*) FROM page_scores GROUP BY run").fetchall() == [("alpha", 3)]  # no .tmp-
    # domain_weights: the domains each run samples from (weight > 0), heaviest first
    rows = query(con, "SELECT * FROM domain_weights").to_pylist()
    assert [(r["run"], r["domain"], r["weight"]) for r in rows] == [
        ("alpha", "a.org", 0.6), ("alpha", "c.org", 0.4), ("beta", "b.org", 1.0)]
    assert list(rows[0]) == ["run", "domain", "weight", "token_share", "tau", "projection", "rank", "estimate"]
    assert rows[0]["rank"] == 1 and rows[0]["estimate"] == pytest.approx(0.5)


def test_correlate_views_only_when_their_files_exist(quarantine_store):
    _, views = connect(quarantine_store)
    assert not {"correlations", "bpb_matrix", "benchmarks", "page_scores", "domain_weights"} & set(views)
    quarantine_store.write_table(_estimates("solo", {"a.org": 1.0}), schemas.CORRELATION_ESTIMATES, "correlations",
                                 "solo", "estimates", "part-00000.parquet")
    con, views = connect(quarantine_store)
    assert {"correlations", "domain_weights"} <= set(views)
    assert not {"bpb_matrix", "benchmarks", "page_scores"} & set(views)
    assert con.execute("SELECT run, domain FROM domain_weights").fetchall() == [("solo", "a.org")]


def test_ratings_are_one_view_across_raters(quarantine_store):
    from tests.test_selection_rating import RATERS, write_ratings
    _, views = connect(quarantine_store)
    assert "ratings" not in views  # no ratings yet: no view, no error
    ids = [f"{i:032x}" for i in range(40)]
    for k, rid in enumerate(RATERS):
        write_ratings(quarantine_store, rid, ids, seed=k, parts=k + 1)
    junk = quarantine_store.path("ratings", f"rater={next(iter(RATERS))}", ".tmp-x-part-00009.parquet")
    with open(junk, "wb") as f:
        f.write(b"junk")
    con, views = connect(quarantine_store)
    assert "ratings" in views
    rows = con.execute("""SELECT rater_id, model_name, decoding, count(*), count(DISTINCT doc_id),
                                 count(*) FILTER (parsed), count(overall_score), min(domain), max(domain)
                          FROM ratings GROUP BY ALL ORDER BY rater_id""").fetchall()
    rated = [i for i in range(40) if i % 13 != 5]  # every 13th unrated, every 17th unparsed (write_ratings)
    parsed = [i for i in rated if i % 17 != 4]
    assert rows == sorted((rid, name, decoding, len(rated), len(rated), len(parsed), len(parsed), "A", "E")
                          for rid, (name, decoding) in RATERS.items())
