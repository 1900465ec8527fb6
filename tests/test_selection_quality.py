"""Clean human text with degraded copies of some of it, through ingest, score (SmolLM2-135M) and select:
the low and medium perplexity bands must drop the degraded documents far more often than the clean ones."""
import pytest

from benchmarks.selection_quality import drop_rates, write_corpus

pytestmark = pytest.mark.spark


def test_low_and_medium_bands_drop_degraded_copies(tmp_path, spark, shared_data, smollm2_dir):
    from pipeline.config import Config
    from pipeline.ingest import run_ingest
    from pipeline.score import run_score
    from pipeline.select import run_select

    counts = write_corpus(tmp_path / "raw", shared_data / "nltk", n_clean=96, degraded_fraction=0.25, seed=1,
                          kinds=("char_noise", "word_shuffle"))
    assert counts == {"clean": 96, "degraded": 24}
    cfg = {"store": str(tmp_path / "store"), "ingest": {"inputs": [str(tmp_path / "raw")], "num_shards": 1},
           "score": {"model": str(smollm2_dir), "max_tokens": 48, "docs_per_part": 64}}
    run_ingest(Config.model_validate(cfg), spark)
    run_score(Config.model_validate(cfg), spark)
    dropped = {}
    for criterion in ("low", "medium", "high"):
        name = f"{criterion}-50"
        run_select(Config.model_validate({**cfg, "select": {"name": name, "rules": [
            {"type": "band", "criterion": criterion, "rate": 0.5}]}}))
        dropped[criterion] = drop_rates(cfg["store"], name)
    for criterion in ("low", "medium"):
        assert dropped[criterion]["degraded"] >= 0.9, dropped
        assert dropped[criterion]["clean"] <= 0.45, dropped
    # The high band keeps the most surprising text: the degraded copies survive it.
    assert dropped["high"]["degraded"] < 0.2 < dropped["high"]["clean"], dropped
