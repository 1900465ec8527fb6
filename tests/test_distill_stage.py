"""The distill stage end to end: real Spark, a real (tiny) Llama as the teacher, real Parquet and DuckDB.
The student's quality against a real teacher is measured in benchmarks/selection_quality.py."""
import json
import random

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.config import Config
from pipeline.distill.model import STUDENT_FILE, read_card
from pipeline.distill.stage import run_distill
from pipeline.errors import UserError
from pipeline.ingest.stage import run_ingest
from pipeline.run import run_pipeline, TextOutput
from pipeline.scoring.identity import local_identity
from pipeline.scoring.stage import run_score
from pipeline.selection.stage import run_select
from tests.helpers import make_tiny_model_dir, random_texts

pytestmark = pytest.mark.spark
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-teacher"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """160 documents on four hosts of very different sizes: 100, 40, 15 and 5 documents."""
    raw = tmp_path_factory.mktemp("raw")
    rng = random.Random(3)
    texts = random_texts(160, seed=21)
    hosts = ["big.org"] * 100 + ["mid.org"] * 40 + ["small.org"] * 15 + ["tiny.org"] * 5
    with open(raw / "docs.jsonl", "w") as f:
        for i, (t, h) in enumerate(zip(texts, hosts)):
            text = t if i % 4 else " ".join(rng.sample(t.split(), len(t.split())))  # some shuffled copies
            f.write(json.dumps({"text": f"{text} {i}", "url": f"https://{h}/{i}"}) + "\n")
    return raw


def _config(tmp_path, raw, teacher, **distill):
    return Config.model_validate({
        "store": str(tmp_path / "store"), "spark": {"master": "local[2]"},
        "ingest": {"inputs": [str(raw)], "num_shards": 2},
        "score": {"docs_per_part": 16},
        "distill": {"teacher": str(teacher), "teacher_max_tokens": 32, "min_sample_docs": 40,
                    "sample_fraction": 0.1, "hash_bits": 12, "folds": 3, **distill},
        "select": {"name": "mid", "rules": [{"type": "band", "criterion": "medium", "rate": 0.5}]},
        "stages": ["ingest", "distill", "select"]})


def test_teacher_scores_a_stratified_sample_and_the_student_scores_everything(spark, tmp_path, corpus, teacher):
    cfg = _config(tmp_path, corpus, teacher)
    run_ingest(cfg, spark=spark)
    result = run_distill(cfg, spark)
    out = result.outputs
    store = tmp_path / "store"

    # The sample: 40 of 160 documents (min_sample_docs over 10%), every host represented.
    docs = {r["doc_id"]: r for r in pq.read_table(store / "docs").to_pylist()}
    sample = out["sample"]
    assert sample["n_docs"] == 40 and sample["of_docs"] == 160 and sample["n_groups"] == 4
    teacher_rows = pq.read_table(store / "scores" / f"scorer={out['teacher_id']}").to_pylist()
    assert len(teacher_rows) == 40                       # the teacher scored the sample only
    sampled_hosts = [docs[r["doc_id"]]["host"] for r in teacher_rows]
    assert {h: sampled_hosts.count(h) for h in set(sampled_hosts)}["big.org"] < 40 and "tiny.org" in sampled_hosts

    # The student: its card, its identity, and a score for every document in an ordinary scores table.
    card = read_card(out["student_dir"])
    assert card["teacher"]["scorer_id"] == out["teacher_id"] and card["agreement"]["n_docs"] == 40
    assert card["sample"]["doc_ids_sha256"] == sample["doc_ids_sha256"]
    identity = json.loads((store / "scores" / f"scorer={out['student_id']}" / "_scorer.json").read_text())
    assert identity["backend"] == "student" and identity["distilled"]["teacher"] == out["teacher_id"]
    assert identity["distilled"]["features"]["hash_bits"] == 12 and identity["tokenizer"] == card["teacher"]["tokenizer"]
    student_rows = {r["doc_id"]: r for r in pq.read_table(store / "scores" / f"scorer={out['student_id']}").to_pylist()}
    assert set(student_rows) == set(docs) and result.counts["student_scored_now"] == 160
    teacher_by_id = {r["doc_id"]: r for r in teacher_rows}
    for doc_id, t in teacher_by_id.items():   # the same token accounting as the teacher's rows
        s = student_rows[doc_id]
        assert (s["n_tokens"], s["n_predicted"], s["n_bytes"]) == (t["n_tokens"], t["n_predicted"], t["n_bytes"])
        assert s["perplexity"] == pytest.approx(np.exp(s["nll_mean"])) and s["error"] is None
    # Fitted on the sample, the student follows the teacher there.
    ids = sorted(teacher_by_id)
    t_nll = np.array([teacher_by_id[i]["nll_mean"] for i in ids])
    s_nll = np.array([student_rows[i]["nll_mean"] for i in ids])
    assert np.corrcoef(t_nll, s_nll)[0, 1] > 0.5

    # A re-run keeps the student and scores nothing again.
    again = run_distill(cfg, spark)
    assert not again.outputs["fitted"] and again.outputs["student_id"] == out["student_id"]
    assert again.counts["teacher_scored_now"] == 0 and again.counts["student_scored_now"] == 0

    # Scoring with the student directory directly gives the same rows (the score stage loads it as an engine).
    direct = Config.model_validate({**cfg.model_dump(), "score": {"model": out["student_dir"]}})
    assert local_identity(direct.score).scorer_id == out["student_id"]
    assert run_score(direct, spark).counts["scored_now"] == 0

    # A change of settings refits: another student id, scored from scratch.
    other = run_distill(_config(tmp_path, corpus, teacher, alpha=3.0), spark)
    assert other.outputs["fitted"] and other.outputs["student_id"] != out["student_id"]


def test_a_pipeline_run_selects_with_the_student(spark, tmp_path, corpus, teacher):
    cfg = _config(tmp_path, corpus, teacher)
    rows = run_pipeline(cfg, TextOutput())
    student_id = next(r["result"] for r in rows if r["stage"] == "distill").outputs["student_id"]
    selection = next(r["result"] for r in rows if r["stage"] == "select")
    assert selection.outputs["scorer_id"] == student_id
    kept = duckdb.execute(f"SELECT count(*) FILTER (kept), count(*) FROM "
                          f"read_parquet('{tmp_path}/store/selections/mid/*.parquet')").fetchone()
    assert kept == (80, 160)
    # select again with the config alone (not in a run): the same scorer
    assert run_select(cfg, overwrite=True).outputs["scorer_id"] == student_id


def test_clear_errors(spark, tmp_path, corpus, teacher):
    cfg = _config(tmp_path, corpus, teacher, group_by="colour")
    with pytest.raises(UserError, match="no documents in .* run `curate ingest` first"):
        run_distill(cfg, spark)
    run_ingest(cfg, spark=spark)
    with pytest.raises(UserError, match="distill.teacher '.*nowhere' is not a model directory"):
        run_distill(_config(tmp_path, corpus, tmp_path / "nowhere"), spark)
    with pytest.raises(UserError, match="distill.group_by 'colour' is not a docs column"):
        run_distill(cfg, spark)
    assert not (tmp_path / "store" / "models" / "student" / STUDENT_FILE).exists()
