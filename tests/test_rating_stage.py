"""The rater and the rate stage: batched constrained decoding against one-document decoding, greedy answers
kept with their parse error, the service's /v1/rate through its client, and the stage end to end (real
Spark, a tiny real chat Llama, Parquet, DuckDB, the students), resuming after kill -9."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

import schemas
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.ingest.stage import run_ingest
from pipeline.rating.constrained import constrained_answer
from pipeline.rating.prompt import ANSWER_SLOTS
from pipeline.rating.rater import prompt_ids, score_slot_probabilities
from pipeline.rating.stage import run_rate
from tests.helpers import make_tiny_model_dir, random_texts, running

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-chat"), chat=True)


@pytest.fixture(scope="module")
def rater(chat_model):
    from pipeline.rating.torch_rater import TorchRater
    return TorchRater(chat_model, text_tokens=48, token_budget=512)


def test_batched_left_padded_answers_equal_one_document_decoding(rater):
    docs = [(f"d{i}", " ".join(random_texts(i + 1, seed=i))) for i in range(7)]
    rows = rater.rate(docs)
    assert [r["doc_id"] for r in rows] == [d for d, _ in docs]
    for (doc_id, text), row in zip(docs, rows):
        prompt = prompt_ids(rater.tokenizer, text, 48)
        chosen, probs = constrained_answer(rater.model, rater.tokenizer, prompt.ids, ANSWER_SLOTS)
        assert row["answer"] == "\n".join(chosen) and row["parsed"] and row["error"] is None
        assert row["domain"] == chosen[0] and row["overall_score"] == int(chosen[-1])
        expected = [float(np.dot(p, np.arange(1, 6))) for p in probs[1:]]
        got = [row[f"{c}_expected"] for c in schemas.RATING_CRITERIA]
        np.testing.assert_allclose(got, expected, rtol=1e-4)
        assert row["n_text_tokens"] == prompt.n_text_tokens and row["truncated"] == prompt.truncated
    assert any(r["truncated"] for r in rows) and not all(r["truncated"] for r in rows)


def test_greedy_answers_that_do_not_parse_are_kept_with_their_error(chat_model):
    from pipeline.rating.torch_rater import TorchRater
    greedy = TorchRater(chat_model, decoding="greedy", text_tokens=32)
    rows = greedy.rate([("a", "some text"), ("b", "other text here")])
    assert [r["doc_id"] for r in rows] == ["a", "b"]
    for row in rows:   # a random model writes noise: never a crash, never a silent drop
        assert not row["parsed"] and row["error"].startswith("expected 15 lines") and row["answer"] is not None
        assert row["overall_score"] is None and row["overall_score_expected"] is None
    assert greedy.identity.rater_id != TorchRater(chat_model, text_tokens=32).identity.rater_id


def test_score_slots_of_a_free_answer():
    pieces = ["E", "\n", *[t for s in "54321543215432" for t in (s, "\n")]][:-1]
    steps = [np.eye(5)[int(p) - 1] if p.strip().isdigit() else np.zeros(5) for p in pieces]
    probs = score_slot_probabilities(pieces, steps)
    assert probs.shape == (14, 5) and [int(np.argmax(p)) + 1 for p in probs] == [int(s) for s in "54321543215432"]
    assert score_slot_probabilities(pieces[:-2], steps[:-2]) is None   # 13 scores: no expected scores


def test_the_service_rates_with_the_same_limits_token_and_metrics(chat_model, rater):
    import httpx

    from pipeline.rating.client import RatingClient
    from pipeline.scoring.engines import load_engine
    from pipeline.scoring.service import ServiceLimits, create_app
    engine = load_engine("torch", chat_model, max_tokens=64)
    from pipeline.rating.engines import rater_on
    served = rater_on(engine, chat_model, text_tokens=48, token_budget=512)
    assert served.model is engine.model and served.identity == rater.identity
    app = create_app(engine, ServiceLimits(max_documents_per_request=3), token="s3cret", rater=served)
    docs = [(f"d{i}", t) for i, t in enumerate(random_texts(5, seed=4))]
    with running(app) as url:
        client = RatingClient(url, token="s3cret")
        assert client.identity == rater.identity and client.request_docs == 3
        rows = client.rate(docs)          # two requests: 3 + 2
        assert rows == rater.rate(docs)
        assert httpx.post(f"{url}/v1/rate", json={"documents": [{"doc_id": "x", "text": "t"}]}).status_code == 401
        too_many = httpx.post(f"{url}/v1/rate", headers={"Authorization": "Bearer s3cret"},
                              json={"documents": [{"doc_id": str(i), "text": "t"} for i in range(4)]})
        assert too_many.status_code == 413 and too_many.json()["limit"] == "max_documents_per_request"
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer s3cret"}).text
        assert "curate_rated_documents_total 5.0" in metrics
    no_rater = create_app(engine)
    with running(no_rater) as url:
        with pytest.raises(UserError, match="has no rater"):
            RatingClient(url).identity


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """120 documents on three hosts: clean sentences, shuffled word salad and number tables."""
    raw = tmp_path_factory.mktemp("raw")
    rng = random.Random(5)
    texts = random_texts(120, seed=9)
    with open(raw / "docs.jsonl", "w") as f:
        for i, t in enumerate(texts):
            host = ("clean.org", "salad.net", "tables.biz")[i % 3]
            text = t if i % 3 == 0 else (" ".join(rng.sample(t.split(), len(t.split()))) if i % 3 == 1
                                         else " | ".join(str(rng.randint(0, 99)) for _ in range(20)))
            f.write(json.dumps({"text": f"{text} {i}", "url": f"https://{host}/{i}"}) + "\n")
    return raw


def _config(tmp_path, raw, model, **rate):
    return Config.model_validate({
        "store": str(tmp_path / "store"), "spark": {"master": "local[2]"},
        "ingest": {"inputs": [str(raw)], "num_shards": 2},
        "rate": {"model": str(model), "text_tokens": 32, "min_sample_docs": 30, "sample_fraction": 0.1,
                 "folds": 3, "docs_per_part": 8, "students": ["overall_score", "accuracy"], **rate},
        "select": {"name": "best", "rules": [{"type": "rating", "recipe": "top_k", "keep_fraction": 0.5}]},
        "stages": ["ingest", "rate", "select"]})


@pytest.mark.spark
def test_rate_a_sample_distil_students_and_rate_everything(spark, tmp_path, corpus, chat_model, capsys):
    cfg = _config(tmp_path, corpus, chat_model)
    run_ingest(cfg, spark=spark)
    result = run_rate(cfg, spark)
    out, counts, store = result.outputs, result.counts, tmp_path / "store"

    llm = pq.read_table(store / "ratings" / f"rater={out['rater_id']}").to_pylist()
    assert len(llm) == 30 == counts["sample_docs"] == counts["rated"] == counts["parsed"] and counts["unparsed"] == 0
    assert {r["doc_id"] for r in llm} <= {r["doc_id"] for r in pq.read_table(store / "docs").to_pylist()}
    assert all(r["parsed"] and 1 <= r["overall_score_expected"] <= 5 and r["decoding"] == "constrained" for r in llm)
    sidecar = json.loads((store / "ratings" / f"rater={out['rater_id']}" / "_rater.json").read_text())
    assert sidecar["rater_id"] == out["rater_id"] and sidecar["text_tokens"] == 32 and "model_path" in sidecar

    card = out["card"]
    assert set(card["agreement"]) == {"overall_score", "accuracy"}
    for a in card["agreement"].values():
        assert a["n_docs"] == 30 and a["folds"] == 3 and 0 <= a["accuracy"] <= 1 and -1 <= a["spearman"] <= 1
    students = pq.read_table(store / "ratings" / f"rater={out['student_id']}").to_pylist()
    assert len(students) == 120 == counts["student_rated_now"] == counts["docs"]
    assert all(1 <= r["overall_score_expected"] <= 5 and r["overall_score"] == round(r["overall_score_expected"])
               and r["coherence"] is None and r["decoding"] == "student" for r in students)
    s_sidecar = json.loads((store / "ratings" / f"rater={out['student_id']}" / "_rater.json").read_text())
    assert s_sidecar["backend"] == "student" and s_sidecar["distilled"]["rater"] == out["rater_id"]
    assert {row["group"] for row in out["by_host"]} == {"clean.org", "salad.net", "tables.biz"}

    # Again, through the spark-submit entry point: it resumes (nothing rated twice, the students kept).
    import yaml

    from jobs.rate import main
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    capsys.readouterr()
    assert main(["--config", str(path)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["counts"]["rated_now"] == 0 and again["counts"]["already_rated"] == 30
    assert again["counts"]["student_rated_now"] == 0 and again["student_id"] == out["student_id"]

    from pipeline.config import apply_overrides
    from pipeline.selection.stage import run_select
    selected = run_select(apply_overrides(cfg, {"select.rules": [
        {"type": "rating", "recipe": "top_k", "keep_fraction": 0.5}]}), overwrite=True)
    assert 0 < selected.counts["kept"] < 120 and selected.outputs["rater_id"] == out["student_id"]   # the students'
    by_llm = run_select(apply_overrides(cfg, {"select.name": "llm", "select.rules": [
        {"type": "rating", "rater": out["rater_id"], "recipe": "top_k", "keep_fraction": 0.5}]}), overwrite=True)
    assert by_llm.outputs["rater_id"] == out["rater_id"] and by_llm.counts["kept"] < 30


@pytest.mark.spark
def test_a_killed_rate_job_resumes_with_every_document_rated_once(tmp_path, corpus, smollm2_dir):
    """SmolLM2 (~0.5 s a document here) rates 20 documents a part each; the job is killed after 3 parts."""
    import yaml
    cfg = _config(tmp_path, corpus, smollm2_dir, min_sample_docs=20, docs_per_part=1, students=[])
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = dict(os.environ)
    curate = [sys.executable, "-m", "pipeline.cli"]
    subprocess.run([*curate, "ingest", "-c", str(path)], check=True, capture_output=True)
    ratings = tmp_path / "store" / "ratings"
    job = subprocess.Popen([*curate, "rate", "-c", str(path)], env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(ratings.glob("rater=*/part-*.parquet"))) < 3:
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    written = pq.read_table(ratings).num_rows
    assert 0 < written < 20
    subprocess.run([*curate, "rate", "-c", str(path)], check=True, capture_output=True)
    ids = pq.read_table(ratings, columns=["doc_id"]).column("doc_id").to_pylist()
    assert len(ids) == 20 == len(set(ids))
