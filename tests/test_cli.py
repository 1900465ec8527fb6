"""The `curate` command as a user runs it: a real process, real files, real Spark and DuckDB."""
import csv
import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

CURATE = [sys.executable, "-m", "pipeline.cli"]


def curate(*args, cwd=None, input=None):
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "COLUMNS": "200"}
    return subprocess.run([*CURATE, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600, input=input)


def test_help_lists_every_stage():
    out = curate("--help")
    assert out.returncode == 0
    for command in ("init", "ingest", "score", "select", "export", "run", "sql", "demo"):
        assert command in out.stdout
    ingest_help = curate("ingest", "--help").stdout
    assert "--master" in ingest_help and "--overwrite" in ingest_help and "quarantine" in ingest_help


def test_init_writes_a_valid_commented_config(tmp_path):
    out = curate("init", tmp_path / "run.yaml")
    assert out.returncode == 0
    text = (tmp_path / "run.yaml").read_text()
    assert text.count("#") > 10
    from pipeline.config import load_config
    assert load_config(tmp_path / "run.yaml").ingest.num_shards == 4
    again = curate("init", tmp_path / "run.yaml")
    assert again.returncode != 0 and "--force" in again.stderr


@pytest.mark.parametrize("args,message", [
    (["ingest", "does/not/exist.jsonl", "--store", "{tmp}/s"], "input not found: does/not/exist.jsonl"),
    (["ingest", "--config", "{tmp}/missing.yaml"], "config file not found"),
    (["ingest", "--config", "{tmp}/bad.yaml"], "ingest.num_shard: unknown key"),
    (["sql", "{tmp}/no-store", "-c", "SELECT 1"], "store not found"),
])
def test_user_errors_are_one_clear_message(tmp_path, args, message):
    (tmp_path / "bad.yaml").write_text("ingest:\n  num_shard: 2\n")
    out = curate(*[a.format(tmp=tmp_path) for a in args])
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


@pytest.mark.spark
def test_ingest_then_sql_in_every_format(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    with gzip.open(raw / "pages.jsonl.gz", "wt") as f:
        for i in range(40):
            f.write(json.dumps({"body": f"Page {i} explains how tides follow the moon. " * 3,
                                "link": f"https://site{i % 4}.org/p{i}"}) + "\n")
        f.write("{broken\n")
    store = tmp_path / "store"
    config = tmp_path / "run.yaml"
    config.write_text(f"store: {store}\ningest:\n  inputs:\n    - path: {raw}\n"
                      "      fields: {text: body, url: link, id: null}\n  num_shards: 2\n")
    out = curate("ingest", "--config", config)
    assert out.returncode == 0, out.stderr
    assert "reconciled" in out.stdout and "malformed_json" in out.stdout
    again = curate("ingest", "--config", config)
    assert again.returncode == 0 and "already finished (skipped)" in again.stdout

    query = "SELECT domain, count(*) AS n FROM docs GROUP BY domain ORDER BY domain"
    table = curate("sql", store, "-c", query)
    assert table.returncode == 0 and "site0.org" in table.stdout
    rows = list(csv.DictReader(io.StringIO(curate("sql", store, "-c", query, "--format", "csv").stdout)))
    assert rows == [{"domain": f"site{i}.org", "n": "10"} for i in range(4)]
    lines = curate("sql", store, "-c", "SELECT reason FROM quarantine", "--format", "json").stdout.splitlines()
    assert [json.loads(line) for line in lines] == [{"reason": "malformed_json"}]
    out_file = tmp_path / "result.parquet"
    assert curate("sql", store, "-c", query, "--format", "parquet", "--output", out_file).returncode == 0
    assert pq.read_table(out_file).num_rows == 4
    runs = curate("sql", store, "-c", "SELECT stage, status FROM runs", "--format", "csv").stdout
    assert runs.count("ingest,finished") == 2
    bad_sql = curate("sql", store, "-c", "SELECT nope FROM docs")
    assert bad_sql.returncode == 2 and "SQL error" in bad_sql.stderr
    # The interactive prompt reads statements until EOF.
    repl = curate("sql", store, input="SELECT count(*) AS n\nFROM docs;\n")
    assert repl.returncode == 0 and "40" in repl.stdout


@pytest.mark.spark
def test_demo_runs_ingest_and_prints_sql_summary(tmp_path):
    out = curate("demo", "--dir", tmp_path / "demo", "--docs-per-source", 40, "--steps", 8, "--teacher-docs", 0,
                 "--rungs", 0, "--proxy-steps", 8)
    assert out.returncode == 0, out.stderr[-2000:]
    for title in ("documents by host", "languages", "quarantine by reason", "reconciled",
                  "reference model", "perplexity by host", "final proportions and mean held-out loss per method",
                  "held-out loss on target"):
        assert title in out.stdout
    for host in ("docs.python.org", "seo-spam.example.net", "nachrichten.example.de"):
        assert host in out.stdout
    assert Path(tmp_path / "demo" / "store" / "docs").is_dir()
    assert list((tmp_path / "demo" / "store" / "scores").glob("scorer=*/part-*.parquet"))
