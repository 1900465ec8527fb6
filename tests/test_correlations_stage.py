"""The correlate stage end to end: real text on clean hosts and degraded copies on hosts of their own,
real Spark, a ladder of small Llamas trained here, the cloze task, real Parquet, DuckDB and fastText.
A ladder this small is too noisy to rank six hosts reliably: whether the estimates rank degraded hosts
low is measured on a larger corpus of other real text with the default ladder in
benchmarks/correlation_quality.py; the estimators' behaviour on known single-index data is tested in
test_correlations_core.py."""
import json
import random

import numpy as np
import pyarrow.csv as pacsv
import pytest
from typer.testing import CliRunner

from benchmarks.mixed_corpus import degrade
from pipeline.config import Config, LadderConfig
from pipeline.correlations.ladder import plan_ladder
from pipeline.correlations.stage import check_config, run_correlate
from pipeline.errors import UserError
from pipeline.ingest.stage import run_ingest
from pipeline.selection.stage import run_select
from pipeline.sql import connect
from pipeline.store import Store

pytest.importorskip("torch")
CLEAN = {"docs.python.org": "python_docs", "stdlib.example.org": "stdlib_docstrings", "pypi.org": "pypi_readmes"}
DEGRADED = ("char_noise", "boilerplate", "keyword_spam")


def test_the_ladder_plan_is_reproducible_balanced_and_varied():
    domains = [f"d{i}.org" for i in range(10)]
    cfg = LadderConfig(rungs=9, hidden_sizes=[64, 96], steps=[100, 200], seed=3)
    rungs = plan_ladder(list(reversed(domains)), cfg)
    assert rungs == plan_ladder(domains, cfg)                              # any order, same plan
    assert rungs[0].domains == tuple(domains)                              # the first sees every domain
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]:                          # halves and their complements
        assert len(rungs[a].domains) == 5 and set(rungs[a].domains) | set(rungs[b].domains) == set(domains)
        assert not set(rungs[a].domains) & set(rungs[b].domains)
    assert len({r.domains for r in rungs[1:]}) > 2                         # not one split over and over
    assert [(r.hidden_size, r.steps) for r in rungs[:4]] == [(64, 100), (96, 100), (64, 200), (96, 200)]
    assert len({r.name for r in rungs}) == 9 and plan_ladder(domains, LadderConfig(rungs=9, seed=4)) != rungs


def _corpus(path):
    """Three clean hosts of real text (what Python ships) and three hosts of degraded copies of it."""
    from pipeline.demo import sources
    rng = random.Random(0)
    rows, clean = [], []
    for host, source in CLEAN.items():
        texts = [d["text"] for d in getattr(sources, source)() if len(d["text"]) > 300][:70]
        clean += texts
        rows += [{"text": t, "url": f"https://{host}/{i}"} for i, t in enumerate(texts)]
    for kind in DEGRADED:
        rows += [{"text": degrade(t, kind, rng), "url": f"https://{kind.replace('_', '-')}.bad.example/{i}"}
                 for i, t in enumerate(rng.sample(clean, 50))]
    path.mkdir()
    with open(path / "docs.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def _config(tmp_path, raw, **correlate):
    return Config.model_validate({
        "store": str(tmp_path / "store"), "spark": {"master": "local[2]"},
        "ingest": {"inputs": [str(raw)], "num_shards": 2},
        "correlate": {"ladder": {"rungs": 5, "hidden_sizes": [64], "steps": [60, 120], "max_docs": 400},
                      "pages_per_domain": 12, "min_domain_pages": 10, "target_docs": 40, "task_items": 30,
                      "target_where": "host NOT LIKE '%.bad.example'", "metric": "bits_per_byte",
                      "min_models": 5, **correlate}})


@pytest.mark.spark
def test_correlate_scores_a_ladder_estimates_projects_and_its_selector_scores_every_page(spark, tmp_path):
    raw = _corpus(tmp_path / "raw")
    cfg = _config(tmp_path, raw)
    run_ingest(cfg, spark=spark)
    check_config(cfg)
    result = run_correlate(cfg, spark)
    c, out = result.counts, result.outputs
    assert c["models"] == 5 and c["domains"] == 6 and c["sample_pages"] == 72 and c["rungs_trained_now"] == 5
    est = out["estimates"].to_pandas()
    assert sorted(est["rank"]) == list(range(1, 7)) and est["weight"].sum() == pytest.approx(1.0)
    assert (est["weight"] <= est["tau"] + 1e-12).all() and est["token_share"].sum() == pytest.approx(1.0)
    assert (est.sort_values("rank")["estimate"].diff().dropna() <= 0).all()
    assert est["tau"].to_numpy() == pytest.approx(est["token_share"].to_numpy() / 0.5)

    con, views = connect(Store(cfg.store))
    assert {"correlations", "domain_weights", "bpb_matrix", "benchmarks", "page_scores"} <= set(views)
    assert con.execute("SELECT count(*), count(DISTINCT model) FROM bpb_matrix").fetchone() == (30, 5)
    # the matrix is token-weighted over the sampled pages' score rows
    model, domain, bpb = con.execute("SELECT model, domain, bits_per_byte FROM bpb_matrix LIMIT 1").fetchone()
    scorer = next(m["scorer_id"] for m in out["models"] if m["name"] == model)
    sums = con.execute("""SELECT sum(s.nll_sum) / (ln(2) * sum(s.n_bytes)) FROM scores s JOIN docs d USING (doc_id)
                          WHERE s.scorer = ? AND d.host = ?""", [scorer, domain]).fetchone()
    assert bpb == pytest.approx(sums[0])
    task = Store(cfg.store).path("correlations", "default", "task.jsonl")
    assert sum(1 for _ in open(task)) == 30
    # every page has a selector score; pages of the domains given weight score higher than the rest
    pages = con.execute("""SELECT p.label, avg(p.p_include), count(*) FROM page_scores p GROUP BY 1""").fetchall()
    by_label = {label: (mean, n) for label, mean, n in pages}
    assert sum(n for _, n in by_label.values()) == con.execute("SELECT count(*) FROM docs").fetchone()[0]
    assert by_label["include"][0] > by_label["exclude"][0] + 0.2

    # `curate select` keeps pages in descending selector score up to half the tokens
    raw_config = cfg.model_dump(mode="json")
    raw_config["select"] = {"name": "corr", "rules": [{"type": "correlation", "run": "default", "keep_fraction": 0.5}]}
    run_select(Config.model_validate(raw_config))
    kept = con.execute("""SELECT s.kept, min(p.p_include), max(p.p_include) FROM read_parquet(?) s
                          JOIN page_scores p USING (doc_id) GROUP BY 1 ORDER BY 1""",
                       [Store(cfg.store).path("selections", "corr", "part-*.parquet")]).fetchall()
    (_, _, dropped_max), (_, kept_min, _) = kept
    assert kept_min >= dropped_max

    # a re-run trains and scores nothing again
    again = run_correlate(cfg, spark)
    assert again.counts["rungs_trained_now"] == 0 and again.counts["pages_scored_now"] == 0
    np.testing.assert_allclose(again.outputs["estimates"].column("estimate").to_numpy(), est["estimate"].to_numpy())

    # the report from the store, and `curate benchmark` making a leaderboard that correlate reads
    from pipeline.cli import app
    shown = CliRunner().invoke(app, ["correlate", cfg.store, "--report"])
    assert shown.exit_code == 0 and "domains by estimate" in shown.output and "top domains" in shown.output
    ladder = Store(cfg.store).path("models", "ladder")
    models = [f"{r['name']}={r['path']}" for r in out["models"]]
    csv = tmp_path / "board.csv"
    made = CliRunner().invoke(app, ["benchmark", "--make-task", cfg.store, "--target-where", cfg.correlate.target_where,
                                    "--items", "20", "-o", str(csv), *[a for m in models[:5] for a in ("--model", m)]])
    assert made.exit_code == 0, made.output
    table = pacsv.read_csv(csv)
    assert table.num_rows == 5 and ladder in models[0] and table.column("items").to_pylist() == [20] * 5
    assert sum(1 for _ in open(tmp_path / "board.task.jsonl")) == 20
    assert set(table.column_names) >= {"model", "benchmark", "accuracy", "accuracy_norm", "bits_per_byte"}
    with_board = _config(tmp_path, raw, name="board", models=models[:5], leaderboard=str(csv),
                         ladder={"rungs": 0}, metric="error")
    board = run_correlate(with_board, spark)
    assert board.counts["models"] == 5 and board.counts["pages_scored_now"] == 0   # scores reused


def test_bad_settings_are_clear_errors_before_anything_runs(tmp_path):
    with pytest.raises(UserError, match="at least 5 are needed"):
        check_config(Config.model_validate({"correlate": {"ladder": {"rungs": 2}}}))
    with pytest.raises(UserError, match="not a model directory"):
        check_config(Config.model_validate({"correlate": {"models": [str(tmp_path)], "ladder": {"rungs": 8}}}))
    with pytest.raises(UserError, match="leaderboard .*no such file"):
        check_config(Config.model_validate({"correlate": {"leaderboard": "nope.csv", "ladder": {"rungs": 8}}}))
