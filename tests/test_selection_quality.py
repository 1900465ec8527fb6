"""Clean human text with degraded copies of some of it, through ingest, score and select: the low and
medium perplexity bands must drop the degraded documents far more often than the clean ones, with
SmolLM2-135M-Instruct and with the default reference model trained on the corpus itself."""
import pytest

from benchmarks.selection_quality import drop_rates, write_corpus

pytestmark = pytest.mark.spark


def band_drop_rates(tmp_path, spark, nltk_dir, cfg: dict, n_clean: int, train_reference: bool = False) -> dict:
    """Build the corpus, run ingest (+ train_reference) + score, select with each band at 50%; returns
    {criterion: drop rates by kind}."""
    from pipeline.config import Config
    from pipeline.ingest.stage import run_ingest
    from pipeline.train.stage import run_train_reference
    from pipeline.scoring.stage import run_score
    from pipeline.selection.stage import run_select

    counts = write_corpus(tmp_path / "raw", nltk_dir, n_clean=n_clean, degraded_fraction=0.25, seed=1,
                          kinds=("char_noise", "word_shuffle"))
    assert counts == {"clean": n_clean, "degraded": n_clean // 4}
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
    dropped = band_drop_rates(tmp_path, spark, shared_data / "nltk", cfg, n_clean=96)
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
    dropped = band_drop_rates(tmp_path, spark, shared_data / "nltk", cfg, n_clean=200, train_reference=True)
    # Measured: low 91% of degraded vs 40% of clean dropped, medium 73% vs 45%, high 9% vs 60%.
    assert dropped["low"]["degraded"] >= 1.8 * dropped["low"]["clean"], dropped
    assert dropped["medium"]["degraded"] >= 1.3 * dropped["medium"]["clean"], dropped
    assert dropped["low"]["word-shuffle"] >= 0.8 and dropped["low"]["char-noise"] >= 0.7, dropped
    assert dropped["high"]["degraded"] < dropped["high"]["clean"], dropped
