"""The score stage end to end: real Spark, a real (tiny) Llama, real Parquet, a real HTTP service."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.ingest.stage import run_ingest
from pipeline.scoring.stage import run_score
from tests.helpers import fail_scoring_after, make_tiny_model_dir, random_texts, running

pytestmark = pytest.mark.spark
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    texts = random_texts(60, seed=11) + ["", "x"]  # an empty text is quarantined at ingest; "x" is 1 token
    with open(raw / "docs.jsonl", "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"text": t, "url": f"https://site{i % 3}.org/{i}"}) + "\n")
    return raw


def _config(store, raw, model_dir, **score):
    return Config.model_validate({"store": str(store), "spark": {"master": "local[2]"},
                                  "ingest": {"inputs": [str(raw)], "num_shards": 2},
                                  "score": {"model": str(model_dir), "max_tokens": 64, "docs_per_part": 8, **score}})


def _scores(store) -> list[dict]:
    return duckdb.execute(f"SELECT * FROM read_parquet('{store}/scores/*/part-*.parquet', hive_partitioning=true) "
                          "ORDER BY doc_id").fetchall()


def test_scores_match_the_engine_and_resume(spark, tmp_path, corpus, model_dir):
    cfg = _config(tmp_path / "store", corpus, model_dir)
    run_ingest(cfg, spark=spark)
    result = run_score(cfg, spark)
    docs = pq.read_table(tmp_path / "store" / "docs").to_pylist()
    assert result.counts["scored_now"] == len(docs) == 61 and result.counts["already_scored"] == 0
    part_dir = tmp_path / "store" / "scores" / f"scorer={result.outputs['scorer_id']}"
    identity = json.loads((part_dir / "_scorer.json").read_text())
    assert identity["scorer_id"] == result.outputs["scorer_id"] and identity["truncation_label"] == "first_n:64"
    rows = {r["doc_id"]: r for r in pq.read_table(part_dir).to_pylist()}
    assert len(rows) == 61
    # The same numbers as the engine in this process, document by document.
    from pipeline.scoring.torch_engine import TorchEngine
    engine = TorchEngine(model_dir, max_tokens=64)
    expected = {r["doc_id"]: r for r in engine.score([(d["doc_id"], d["text"]) for d in docs])}
    for doc_id, row in rows.items():
        assert row["n_predicted"] == expected[doc_id]["n_predicted"]
        assert row["nll_sum"] == pytest.approx(expected[doc_id]["nll_sum"], rel=1e-4)
        assert row["scorer_id"] == result.outputs["scorer_id"]
    # SQL sees the scores next to the docs, with the scorer partition as a column.
    con = duckdb.connect()
    n = con.execute(f"SELECT count(*) FROM read_parquet('{tmp_path}/store/scores/*/*.parquet', hive_partitioning=true) "
                    "WHERE scorer = ?", [result.outputs["scorer_id"]]).fetchone()[0]
    assert n == 61
    # A re-run scores nothing; losing some parts (a killed job) re-scores exactly those documents.
    again = run_score(cfg, spark)
    assert again.counts["scored_now"] == 0 and again.counts["already_scored"] == 61
    lost = sorted(part_dir.glob("part-*.parquet"))[:2]
    lost_ids = {r["doc_id"] for p in lost for r in pq.read_table(p).to_pylist()}
    for p in lost:
        p.unlink()
    resumed = run_score(cfg, spark)
    assert resumed.counts["scored_now"] == len(lost_ids)
    ids = [r[0] for r in _scores(tmp_path / "store")]
    assert len(ids) == len(set(ids)) == 61
    # A different truncation is a different scorer, stored beside the first.
    sliding = run_score(_config(tmp_path / "store", corpus, model_dir, truncation="sliding", stride=32), spark)
    assert sliding.outputs["scorer_id"] != result.outputs["scorer_id"] and sliding.counts["scored_now"] == 61


def test_where_filter_and_bad_filter(spark, tmp_path, corpus, model_dir):
    cfg = _config(tmp_path / "store", corpus, model_dir, where="domain = 'site0.org'")
    run_ingest(cfg, spark=spark)
    result = run_score(cfg, spark)
    assert 0 < result.counts["scored_now"] < 61
    with pytest.raises(UserError, match="not a valid filter"):
        run_score(_config(tmp_path / "store", corpus, model_dir, where="no_such_column = 1"), spark)


def test_missing_docs_and_model_are_clear_errors(spark, tmp_path, corpus, model_dir):
    with pytest.raises(UserError, match="run `curate ingest` first"):
        run_score(_config(tmp_path / "empty", corpus, model_dir), spark)
    cfg = _config(tmp_path / "store", corpus, tmp_path / "no-model")
    run_ingest(cfg, spark=spark)
    with pytest.raises(UserError, match="not a model directory"):
        run_score(cfg, spark)


def test_score_through_the_service_and_a_failing_service(spark, tmp_path, corpus, model_dir):
    """A service started with --max-docs 4 that stops scoring after 5 requests (the job's client sizes
    its requests to the limit). Every document it answered is written before the job gives up, though
    the parts are far from full, and the re-run scores exactly the others."""
    from pipeline.scoring.engines import load_engine
    from pipeline.scoring.service import ServiceLimits, create_app

    engine = load_engine("torch", model_dir, max_tokens=64)
    budget = {"requests": 5, "answered": []}  # then the service starts failing, as if its GPU fell over
    # 400: refused at once (not retried), so each task fails on its next call
    app = fail_scoring_after(create_app(engine, ServiceLimits(max_documents_per_request=4)), budget, status=400)

    store = tmp_path / "store"
    with running(app) as url:
        cfg = _config(store, corpus, model_dir, model=None, service_url=url, concurrency=1, docs_per_part=100)
        run_ingest(cfg, spark=spark)
        with pytest.raises(UserError) as failure:
            run_score(cfg, spark)
        message = str(failure.value)
        assert "scoring failed" in message and "re-run" in message and "engine crashed" in message
        kept = {r[0] for r in _scores(store)}
        assert len(set(budget["answered"])) == 20 and kept == set(budget["answered"])  # nothing scored is lost
        budget["requests"] = 10_000
        result = run_score(cfg, spark)
        assert result.counts["already_scored"] == len(kept) and result.counts["scored_now"] == 61 - len(kept)
    ids = [r[0] for r in _scores(store)]
    assert len(ids) == len(set(ids)) == 61
    # Scores through the service equal the in-process engine's.
    in_process = {r["doc_id"]: r["nll_sum"] for r in
                  engine.score([(d["doc_id"], d["text"]) for d in pq.read_table(store / "docs").to_pylist()])}
    for row in pq.read_table(store / "scores").to_pylist():
        assert row["nll_sum"] == pytest.approx(in_process[row["doc_id"]], rel=1e-4)


def test_limit_error_rows_are_scored_again(spark, tmp_path, corpus, model_dir):
    """A service with a small per-document limit leaves too_large rows; the same scorer served with
    room for them scores those documents on the re-run, and their new rows replace the old."""
    from pipeline.scoring.engines import load_engine
    from pipeline.scoring.service import ServiceLimits, create_app

    engine = load_engine("torch", model_dir, max_tokens=64)
    store = tmp_path / "store"
    with running(create_app(engine, ServiceLimits(max_bytes_per_document=100))) as url:
        cfg = _config(store, corpus, model_dir, model=None, service_url=url)
        run_ingest(cfg, spark=spark)
        first = run_score(cfg, spark)
    too_large = {r["doc_id"] for r in pq.read_table(store / "scores").to_pylist() if r["error"]}
    assert first.counts["errors"] == len(too_large) > 0
    with running(create_app(engine)) as url:
        again = run_score(cfg.model_copy(update={"score": cfg.score.model_copy(update={"service_url": url})}), spark)
    assert again.outputs["scorer_id"] == first.outputs["scorer_id"]
    assert again.counts["scored_now"] == len(too_large) and again.counts["errors"] == 0
    rows = pq.read_table(store / "scores").to_pylist()
    assert len(rows) == len({r["doc_id"] for r in rows}) == 61 and not any(r["error"] for r in rows)


def test_unreachable_service_is_one_clear_message(spark, tmp_path, corpus, model_dir):
    cfg = _config(tmp_path / "store", corpus, model_dir, model=None, service_url="http://127.0.0.1:9")
    run_ingest(cfg, spark=spark)
    with pytest.raises(UserError, match="unreachable"):
        run_score(cfg, spark)


def test_killed_score_job_resumes_without_loss_or_duplicates(spark, tmp_path, corpus, model_dir):
    """Kill `curate score` (SIGKILL, the whole process group) once parts exist; re-run it."""
    cfg = _config(tmp_path / "store", corpus, model_dir, docs_per_part=2)
    run_ingest(cfg, spark=spark)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(cfg.model_dump(mode="json")))  # JSON is YAML
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    command = [sys.executable, "-m", "pipeline.cli", "score", "--config", str(config)]
    proc = subprocess.Popen(command, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scores_dir = tmp_path / "store" / "scores"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(scores_dir.glob("*/part-*.parquet"))) < 3:
        assert proc.poll() is None, "the score job ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    written = len(_scores(tmp_path / "store"))
    assert 0 < written < 61
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    ids = [r[0] for r in _scores(tmp_path / "store")]
    assert len(ids) == len(set(ids)) == 61
    assert not list(scores_dir.glob("*/.tmp-*"))  # the kill's half-written file was cleared
    record = sorted((tmp_path / "store" / "_runs" / "score").glob("*.json"))
    finished = [json.loads(p.read_text()) for p in record]
    assert any(r["status"] == "finished" and r["counts"]["already_scored"] >= written for r in finished)
    assert Path(tmp_path / "store" / "docs").is_dir()
