"""The evaluate stage end to end: held-out groups and a target left out of every arm, proxies (real torch,
tiny) on exactly the same tokens per arm and seed, the comparison in the store and its views, resume."""
import json

import pyarrow.parquet as pq
import pytest

from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.ingest.stage import run_ingest
from tests.helpers import make_tiny_model_dir, write_host_corpus

pytestmark = pytest.mark.spark
pytest.importorskip("torch")

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Prose and number lists (clean), character noise (junk), and more prose on target.org (the target)."""
    raw = tmp_path_factory.mktemp("raw")
    write_host_corpus(raw, [("prose.org", "numbers.net", "noise.biz", "target.org")[i % 4] for i in range(160)]
                      + [("prose.org", "numbers.net", "noise.biz")[i % 3] for i in range(160, 220)], seed=2)
    return raw


def _config(tmp_path, raw, tokenizer=None, **evaluate):
    return Config.model_validate({
        "store": str(tmp_path / "store"), "spark": {"master": "local[2]"},
        "ingest": {"inputs": [str(raw)], "num_shards": 2},
        "select": {"name": "clean", "rules": [{"type": "where", "sql": "host <> 'noise.biz'"}]},
        "export": {"name": "clean", "shard_bytes": 4096, "tokenizer": str(tokenizer) if tokenizer else None},
        "evaluate": {"target_where": "host = 'target.org'", "seeds": 3, "steps": 30, "min_group_docs": 10,
                     "proxy": {"vocab_size": 300, "hidden_size": 32, "num_layers": 1, "num_heads": 1,
                               "max_seq_len": 32, "batch_size": 4, "warmup_steps": 2}, **evaluate},
        "stages": ["ingest"]})


def test_curated_and_random_arms_train_equal_tokens_and_the_comparison_lands_in_the_store(spark, tmp_path, corpus,
                                                                                         monkeypatch):
    from pipeline.evaluate.stage import heldout_sets, report, run_evaluate, take_tokens
    from pipeline.export.stage import run_export
    from pipeline.selection.stage import run_select
    from pipeline.sql import connect, query
    from pipeline.store import Store
    from pipeline.train.reference import train_tokenizer
    cfg = _config(tmp_path, corpus, make_tiny_model_dir(tmp_path / "tok"), arms=["selection:clean", "export:clean"])
    run_ingest(cfg, spark=spark)
    run_select(cfg, overwrite=True)
    run_export(cfg, spark, overwrite=True)
    seen = []
    result = run_evaluate(cfg, progress=lambda phase, done, total, detail="": seen.append((done, total)))
    assert seen[-1] == (9 * 30, 9 * 30) and result.counts["proxies"] == 9   # 3 arms x 3 seeds x 30 steps

    # equal tokens: every proxy trained on steps x batch_size rows of max_seq_len, whatever its arm holds
    store = Store(cfg.store)
    runs = pq.read_table(store.path("evaluations", "default", "runs.parquet")).to_pylist()
    assert {r["train_tokens"] for r in runs} == {30 * 4 * 32}
    assert {r["set"] for r in runs} == {"target", "prose.org", "numbers.net", "noise.biz", "groups_mean"}
    info = json.loads((tmp_path / "store" / "evaluations" / "default" / "_evaluation.json").read_text())
    for seed in range(3):   # the random arm holds as many tokens as the first curated arm (within one document)
        curated, rand = info["arms"]["selection:clean"]["seeds"][seed], info["arms"]["random"]["seeds"][seed]
        assert curated["unique_tokens"] <= rand["unique_tokens"] + 32 and rand["docs"] >= 1

    # the held-out documents and the target are in no arm; an arm reads only the tokens it needs
    con, views = connect(store)
    assert {"evaluations", "evaluation_runs"} <= set(views)
    sets, excluded, _ = heldout_sets(con, cfg)
    target = set(query(con, "SELECT doc_id FROM docs WHERE host = 'target.org'").column("doc_id").to_pylist())
    assert target <= excluded and set(sets["target"]) <= target and len(sets) == 4
    kept = query(con, "SELECT doc_id FROM selections WHERE kept").column("doc_id").to_pylist()
    tokenizer = train_tokenizer(["a b c"] * 10, 300)
    ids, docs = take_tokens(con, tokenizer, [d for d in kept if d not in excluded], "s", 500)
    assert sum(len(d) for d in docs) >= 500 > sum(len(d) for d in docs[:-1]) and not set(ids) & excluded

    # trained on clean text only, the curated arms beat the random subset (a third noise) on the prose target
    summary = query(con, "SELECT * FROM evaluations WHERE set = 'target' ORDER BY arm").to_pylist()
    by_arm = {r["arm"]: r for r in summary}
    assert by_arm["selection:clean"]["beats_random"] and by_arm["selection:clean"]["diff_mean"] < 0
    assert by_arm["random"]["diff_mean"] == 0 and by_arm["random"]["std_loss"] > 0
    noise = query(con, "SELECT arm, mean_loss FROM evaluations WHERE set = 'noise.biz'").to_pylist()
    assert min(noise, key=lambda r: r["mean_loss"])["arm"] == "random"   # the only arm that saw noise
    text = report(result).text()
    assert "beats the random subset on target" in text and "export:clean" in text

    # a re-run reuses every finished proxy: nothing trains, the same numbers come back
    import pipeline.train.proxy as proxy
    monkeypatch.setattr(proxy.ProxyTrainer, "train", lambda *a, **k: pytest.fail("retrained a finished run"))
    again = run_evaluate(cfg)
    assert again.outputs["summary"] == result.outputs["summary"]


def test_bad_arms_and_targets_are_clear_errors(spark, tmp_path, corpus):
    from pipeline.evaluate.stage import run_evaluate
    cfg = _config(tmp_path, corpus)
    run_ingest(cfg, spark=spark)
    with pytest.raises(UserError, match="curate select --name clean"):
        run_evaluate(cfg)
    with pytest.raises(UserError, match="no finished export 'nope'"):
        run_evaluate(_config(tmp_path, corpus, arms=["export:nope"]))
    with pytest.raises(UserError, match="admits no document"):
        run_evaluate(_config(tmp_path, corpus, target_where="host = 'nowhere'"))
    with pytest.raises(UserError, match="is not a file"):
        run_evaluate(_config(tmp_path, corpus, target_file=str(tmp_path / "missing.jsonl"), target_where=None))
    with pytest.raises(ValueError, match="selection:<name> or export:<name>"):
        _config(tmp_path, corpus, arms=["clean"])
