"""The mix stage end to end: DuckDB groups with held-out splits in the store, proxies trained under each
method (real torch, tiny), the mixture JSON, and an export that samples it (real Spark)."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.ingest.stage import run_ingest
from pipeline.mixing.groups import heldout_split
from tests.helpers import make_tiny_model_dir, write_host_corpus

pytestmark = pytest.mark.spark
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Three hosts of 60 documents: prose, number lists, and character noise."""
    raw = tmp_path_factory.mktemp("raw")
    write_host_corpus(raw, [("prose.org", "numbers.net", "noise.biz")[i % 3] for i in range(180)], seed=1)
    return raw


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tokenizer"))


def _config(tmp_path, raw, tokenizer=None, **mix):
    return Config.model_validate({
        "store": str(tmp_path / "store"), "spark": {"master": "local[2]"},
        "ingest": {"inputs": [str(raw)], "num_shards": 2},
        "mix": {"name": "m", "steps": 40, "max_docs_per_group": 40, "law_runs": 5, "law_steps": 8,
                "proxy": {"vocab_size": 300, "hidden_size": 32, "num_layers": 1, "num_heads": 1, "max_seq_len": 32,
                          "batch_size": 4, "warmup_steps": 2},
                "aioli": {"round_steps": 20, "lp_rounds": 1, "lp_steps": 2}, **mix},
        "select": {"name": "all"}, "export": {"name": "mixed", "mixture": "m", "shard_bytes": 4096,
                   "tokenizer": str(tokenizer) if tokenizer else None},
        "stages": ["ingest", "mix"]})


def test_mix_writes_groups_and_a_mixture_that_export_samples(spark, tmp_path, corpus, tokenizer_dir):
    from pipeline.export.stage import run_export
    from pipeline.mixing.stage import report, run_mix
    from pipeline.selection.stage import run_select
    cfg = _config(tmp_path, corpus, tokenizer_dir)
    run_ingest(cfg, spark=spark)
    seen = []
    result = run_mix(cfg, progress=lambda phase, done, total, detail="": seen.append((done, total, detail)))
    store = tmp_path / "store"
    groups = pq.read_table(store / "mixtures" / "m" / "groups.parquet").to_pylist()
    assert len(groups) == 180 and {g["group"] for g in groups} == {"prose.org", "numbers.net", "noise.biz"}
    expected = heldout_split([g["doc_id"] for g in groups], [g["group"] for g in groups], 0.1, seed=0)
    assert [g["heldout"] for g in groups] == expected.tolist()
    assert sum(g["sampled"] for g in groups) == 3 * (40 + 6)      # 40 training + all 6 held-out per group
    mixture = json.loads((store / "mixtures" / "m.json").read_text())
    assert mixture["method"] == "aioli" and mixture["group_by"] == "host"
    assert set(mixture["methods"]) == {"stratified", "token_share", "log_linear", "aioli"}
    assert abs(sum(mixture["weights"].values()) - 1) < 1e-9
    for m in mixture["methods"].values():
        assert set(m["losses"]) == set(mixture["weights"]) and np.isfinite(m["mean_loss"])
    assert result.counts["proxies"] == 4 + 5 and seen[-1][:2] == (200, 200)   # 4 methods + the law's 5 runs, in steps: 4 x 40 + 5 x 8
    assert "aioli" in report(result).text() and mixture["proxy"]["tokens_per_second"] > 0

    run_select(cfg, overwrite=True)
    exported = run_export(cfg, spark, overwrite=True)
    docs = pq.read_table(store / "exports" / "mixed" / "documents.parquet").to_pylist()
    heldout_ids = {g["doc_id"] for g in groups if g["heldout"]}
    assert docs and not heldout_ids & {d["doc_id"] for d in docs}
    tokens = {}
    for d in docs:
        tokens[d["group"]] = tokens.get(d["group"], 0) + d["n_tokens"]
    shares = {g: t / sum(tokens.values()) for g, t in tokens.items()}
    for g, w in mixture["weights"].items():
        assert abs(shares.get(g, 0) - w) < 0.1, (shares, mixture["weights"])
    assert exported.counts


def test_bad_groupings_are_clear_errors(tmp_path, corpus, spark):
    from pipeline.mixing.stage import run_mix
    cfg = _config(tmp_path, corpus)
    run_ingest(cfg, spark=spark)
    with pytest.raises(UserError, match="group_by"):
        run_mix(_config(tmp_path, corpus, group_by="no_such_column"))
    with pytest.raises(UserError, match="a mixture needs 2"):
        run_mix(_config(tmp_path, corpus, min_group_docs=100))
    with pytest.raises(UserError, match="needs at least 5 runs"):
        run_mix(_config(tmp_path, corpus, law_runs=3))
