"""Real text with degraded copies (benchmarks/mixed_corpus.py) through the pipeline: the perplexity
bands must drop degraded documents far more often than clean ones, with SmolLM2-135M-Instruct, with the
default reference model trained on the corpus itself, and with a student distilled from SmolLM2 on a
corpus of several sources whose clean text differs in perplexity."""
import numpy as np
import pytest

from benchmarks.selection_quality import drop_rates, evaluate, scored, write_corpus

pytestmark = pytest.mark.spark
TWO_SOURCES = {"sources": ("reviews", "science"), "kinds": ("char_noise", "word_shuffle")}


def band_drop_rates(tmp_path, spark, nltk_dir, cfg: dict, per_source: int, train_reference: bool = False) -> dict:
    """Build a two-source corpus, run ingest (+ train_reference) + score, select with each band at 50%;
    returns {criterion: drop rates by kind}."""
    from pipeline.config import Config
    from pipeline.ingest.stage import run_ingest
    from pipeline.train.stage import run_train_reference
    from pipeline.scoring.stage import run_score
    from pipeline.selection.stage import run_select

    counts = write_corpus(tmp_path / "raw", nltk_dir, per_source, degraded_fraction=0.25, seed=1, **TWO_SOURCES)
    assert counts == {"clean": 2 * per_source, "degraded": 2 * per_source // 4}
    cfg = {**cfg, "store": str(tmp_path / "store"), "ingest": {"inputs": [str(tmp_path / "raw")], "num_shards": 1}}
    run_ingest(Config.model_validate(cfg), spark)
    if train_reference:
        run_train_reference(Config.model_validate(cfg))
    run_score(Config.model_validate(cfg), spark)
    dropped = {}
    for criterion in ("low", "medium", "high"):
        name = f"{criterion}-50"
        run_select(Config.model_validate({**cfg, "select": {"name": name, "rules": [
            {"type": "band", "criterion": criterion, "rate": 0.5}]}}))
        dropped[criterion] = drop_rates(cfg["store"], name)
    return dropped


def test_smollm2_low_and_medium_bands_drop_degraded_copies(tmp_path, spark, shared_data, smollm2_dir):
    cfg = {"score": {"model": str(smollm2_dir), "max_tokens": 48, "docs_per_part": 64}}
    dropped = band_drop_rates(tmp_path, spark, shared_data / "nltk", cfg, per_source=48)
    for criterion in ("low", "medium"):
        assert dropped[criterion]["degraded"] >= 0.9, dropped
        assert dropped[criterion]["clean"] <= 0.45, dropped
    # The high band keeps the most surprising text: the degraded copies survive it.
    assert dropped["high"]["degraded"] < 0.2 < dropped["high"]["clean"], dropped


def test_reference_model_low_and_medium_bands_drop_degraded_copies(tmp_path, spark, shared_data):
    """The default reference model (two minutes of training on two CPU cores) on 30% of the corpus;
    documents of its training split are excluded from the selections."""
    model = tmp_path / "reference"
    cfg = {"reference": {"out": str(model), "reference_fraction": 0.3, "min_reference_docs": 0},
           "score": {"model": str(model), "max_tokens": 128, "docs_per_part": 64}}
    dropped = band_drop_rates(tmp_path, spark, shared_data / "nltk", cfg, per_source=100, train_reference=True)
    # Its medium band is no better than chance on some draws (47% of degraded vs 51% of clean dropped,
    # measured): the low band is what a reference model this small gets right.
    assert dropped["low"]["degraded"] >= 1.8 * dropped["low"]["clean"], dropped
    assert dropped["low"]["word-shuffle"] >= 0.8 and dropped["low"]["char-noise"] >= 0.7, dropped
    assert dropped["high"]["degraded"] < dropped["high"]["clean"], dropped


def test_a_student_distilled_from_smollm2_separates_degraded_text_across_sources(tmp_path, spark, shared_data,
                                                                                 smollm2_dir):
    """Seven sources, five kinds of degraded copies (30% of the corpus); SmolLM2 (first 64 tokens)
    scores 150 sampled documents, the student scores the rest: the medium band at the clean share
    must drop most degraded documents and few clean ones."""
    from pipeline.config import Config
    from pipeline.distill.stage import run_distill
    from pipeline.ingest.stage import run_ingest
    from pipeline.sql import connect
    from pipeline.store import Store

    counts = write_corpus(tmp_path / "raw", shared_data / "nltk", per_source=40, degraded_fraction=0.43, seed=2)
    cfg = Config.model_validate({
        "store": str(tmp_path / "store"), "ingest": {"inputs": [str(tmp_path / "raw")], "num_shards": 1},
        "score": {"docs_per_part": 64},
        "distill": {"teacher": str(smollm2_dir), "teacher_max_tokens": 64, "min_sample_docs": 150}})
    run_ingest(cfg, spark)
    out = run_distill(cfg, spark).outputs
    con, _ = connect(Store(cfg.store))
    sample = set(scored(con, out["teacher_id"])[0])
    ids, kinds, values = scored(con, out["student_id"])
    outside = np.array([d not in sample for d in ids])
    assert len(ids) == counts["clean"] + counts["degraded"] and outside.sum() == len(ids) - 150
    result = evaluate("student", values[outside], kinds[outside], [0.7])
    medium = next(b for b in result["bands"] if b["criterion"] == "medium")
    print(result["auc_two_sided"], medium, out["card"]["agreement"])
    assert result["auc_two_sided"] >= 0.85, result
    assert medium["degraded"] >= 0.7 and medium["clean"] <= 0.2, medium
