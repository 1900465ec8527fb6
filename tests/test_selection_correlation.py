"""The `correlation` selection rule: a `curate correlate` run's page scores (P(include) of its fastText
page selector) kept in descending order up to a keep fraction of the tokens or a token budget, checked
against a brute-force walk on random inputs and end to end on a real store (Parquet + DuckDB)."""
import numpy as np
import pyarrow as pa
import pytest

import schemas
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.selection.rules import PAGE_SCORE, PAGE_TOKENS, apply_rules, parse_rule, rule_label, with_rules
from pipeline.selection.stage import report, run_select, run_what_if
from pipeline.store import Store
from tests.test_selection_stage import config, write_store


def rules_of(*rules) -> list:
    return Config.model_validate({"select": {"rules": list(rules)}}).select.rules


def walk(candidates: list[int], scores, tokens, budget: float | None, fraction: float | None) -> set[int]:
    """Brute force: the candidates by descending score (ties: lower position first), each kept while the
    tokens kept before it are under the budget."""
    if budget is None:
        budget = fraction * sum(tokens[i] for i in candidates)
    kept, total = set(), 0.0
    for i in sorted(candidates, key=lambda i: (-scores[i], i)):
        if total < budget:
            kept.add(i)
        total += tokens[i]
    return kept


@pytest.mark.parametrize("seed", range(8))
def test_correlation_rule_matches_a_brute_force_walk_after_earlier_rules(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    doc_ids = np.array([f"{i:08d}" for i in range(n)], dtype=object)
    page = np.round(rng.random(n), 2)  # rounded: ties happen
    page[rng.random(n) < 0.1] = np.nan  # pages without a page score
    tokens = rng.integers(0, 400, n).astype(float)
    ppl = rng.lognormal(3, 1, n)
    english = rng.random(n) < 0.7
    target = ({"keep_fraction": float(rng.choice([0.1, 0.5, 0.9, 1.0]))} if seed % 2 else
              {"token_budget": int(rng.integers(1, 20_000))})
    rules = rules_of({"type": "where", "sql": "language = 'en'"},
                     {"type": "percentile", "lower": 0, "upper": 80},
                     {"type": "correlation", "run": "web", **target})
    columns = {"perplexity": ppl, PAGE_SCORE: page, PAGE_TOKENS: tokens}
    out = apply_rules(doc_ids, columns, rules, where_matches={0: english})
    before = apply_rules(doc_ids, columns, rules[:2], where_matches={0: english})["kept"]  # the rules before it

    candidates = [i for i in range(n) if before[i] and np.isfinite(page[i])]
    expected = walk(candidates, page, tokens, target.get("token_budget"), target.get("keep_fraction"))
    assert set(np.flatnonzero(out["kept"])) == expected
    label = rule_label(rules[2])
    assert label == (f"correlation:web@{target['keep_fraction']:g}" if "keep_fraction" in target else
                     f"correlation:web@{target['token_budget']}tok")
    for i in range(n):
        if before[i] and not np.isfinite(page[i]):
            assert out["reason"][i] == "no_score"
        elif before[i] and i not in expected:
            assert out["reason"][i] == f"{label}:below"
        elif not before[i]:
            assert not out["kept"][i] and not str(out["reason"][i]).startswith("correlation")
    record = out["thresholds"][2]
    assert record["label"] == label and record["score"] == PAGE_SCORE and record["candidates"] == before.sum()
    assert record["no_score"] == sum(before[i] and not np.isfinite(page[i]) for i in range(n))
    info = record["groups"]["(all)"]
    assert info["n"] == len(candidates) and info["kept"] == len(expected)
    assert info["tokens"] == sum(tokens[i] for i in candidates)
    assert info["tokens_kept"] == sum(tokens[i] for i in expected)
    assert info["min_kept_score"] == (min(page[i] for i in expected) if expected else None)
    dropped = set(candidates) - expected
    assert info["max_dropped_score"] == (max(page[i] for i in dropped) if dropped else None)
    assert info["budget_tokens"] == pytest.approx(target.get("token_budget") or
                                                  target["keep_fraction"] * info["tokens"])


def test_the_command_line_form_of_the_rule():
    assert parse_rule("correlation:default:0.5") == {"type": "correlation", "run": "default", "keep_fraction": "0.5"}
    assert parse_rule("correlation:web:token_budget=1000") == {"type": "correlation", "run": "web",
                                                                "token_budget": "1000"}
    cfg = with_rules(Config(), ["correlation:default:0.5"], ["language = 'en'"])
    assert [rule_label(r) for r in cfg.select.rules] == ["where", "correlation:default@0.5"]
    assert rule_label(with_rules(Config(), ["correlation:web:token_budget=1000"], []).select.rules[0]) == \
        "correlation:web@1000tok"
    with pytest.raises(UserError, match="keep_fraction"):
        with_rules(Config(), ["correlation:web:0.5:token_budget=1000"], [])


def write_page_scores(store: Store, run: str, ids: list[str], seed: int = 0, parts: int = 2) -> dict[str, float]:
    """P(include) for every document but every 11th (unscored), in `parts` part files; returns them."""
    rng = np.random.default_rng(seed)
    scores = {d: float(rng.random()) for i, d in enumerate(ids) if i % 11 != 3}
    rows = [{"doc_id": d, "run": run, "p_include": p, "domain": None, "label": "include" if p > 0.5 else "exclude"}
            for d, p in scores.items()]
    for part in range(parts):
        store.write_table(pa.Table.from_pylist(rows[part::parts], schema=schemas.PAGE_SCORES), schemas.PAGE_SCORES,
                          "correlations", run, "page_scores", f"part-{part:05d}.parquet")
    return scores


def test_select_keeps_the_top_pages_of_a_correlate_run(tmp_path):
    store, ids, split = write_store(tmp_path)
    scores = write_page_scores(store, "web", ids)
    cfg = config(tmp_path, name="corr", rules=[{"type": "where", "sql": "language = 'en'"},
                                               {"type": "correlation", "run": "web", "keep_fraction": 0.5}])
    result = run_select(cfg)
    rows = {r["doc_id"]: r for r in store.read_table("selections", "corr", "part-00000.parquet").to_pylist()}
    assert sorted(rows) == sorted(ids)

    # By hand: English documents outside model-0's training split (the scorer's model), their n_tokens
    # from the scores (20 + i % 7), kept by descending p_include until half their tokens.
    trained = {d for j, d in enumerate(split) if j % 3 != 0}
    english = [i for i, d in enumerate(ids) if i % 5 and d not in trained]
    candidates = [i for i in english if ids[i] in scores]
    p = {i: scores[ids[i]] for i in candidates}
    tokens = {i: 20 + i % 7 for i in candidates}
    expected = {ids[i] for i in walk(candidates, p, tokens, None, 0.5)}
    assert {d for d, r in rows.items() if r["kept"]} == expected
    assert {rows[ids[i]]["reason"] for i in english if ids[i] not in scores} == {"no_score"}
    assert {rows[d]["reason"] for d in set(ids[i] for i in candidates) - expected} == {"correlation:web@0.5:below"}
    assert all(rows[d]["score"] == pytest.approx(scores[d]) for d in expected)
    lowest_kept = min(scores[d] for d in expected)
    assert all(scores[ids[i]] < lowest_kept for i in candidates if ids[i] not in expected)

    record = result.outputs["thresholds"][1]
    assert record["tokens"] == "n_tokens of scorer aaaa000000000001"
    info = record["groups"]["(all)"]
    assert info["min_kept_score"] == pytest.approx(lowest_kept) and info["tokens"] == sum(tokens.values())
    assert info["tokens_kept"] >= 0.5 * info["tokens"] > info["tokens_kept"] - 26  # one page (<= 26 tokens) over
    assert result.counts["no_score"] == sum(ids[i] not in scores for i in english)
    assert "correlation:web@0.5 on page_score" in report(result).text()

    # Unchanged: a no-op; a new correlate run (new page scores) changes the selection's id.
    assert run_select(cfg).skipped
    write_page_scores(store, "web", ids, seed=1, parts=1)
    store.delete("correlations", "web", "page_scores", "part-00001.parquet")
    with pytest.raises(UserError, match="--overwrite"):
        run_select(cfg)
    again = run_select(cfg, overwrite=True)
    assert again.outputs["selection_id"] != result.outputs["selection_id"] and not again.skipped


def test_a_missing_correlate_run_is_a_clear_error(tmp_path):
    store, ids, _ = write_store(tmp_path)
    write_page_scores(store, "web", ids)
    with pytest.raises(UserError, match=r"no page scores of correlate run 'news'.*run `curate correlate` first"
                                        r".*runs with page scores: web"):
        run_select(config(tmp_path, rules=[{"type": "correlation", "run": "news", "keep_fraction": 0.5}]))
    with pytest.raises(UserError, match="one correlate run"):
        run_select(config(tmp_path, rules=[{"type": "correlation", "run": "web", "keep_fraction": 0.5},
                                           {"type": "correlation", "run": "news", "keep_fraction": 0.5}]))


def test_a_selection_without_scores_counts_bytes_over_four(tmp_path):
    store, ids, _ = write_store(tmp_path, scorers=())  # no scorer at all
    scores = write_page_scores(store, "default", ids)
    cfg = config(tmp_path, rules=[{"type": "where", "sql": "n_bytes < 300"},
                                  {"type": "correlation", "token_budget": 2000}])
    result = run_select(cfg)
    assert result.outputs["scorer_id"] is None
    candidates = [i for i in range(len(ids)) if 100 + i < 300 and ids[i] in scores]
    expected = {ids[i] for i in walk(candidates, {i: scores[ids[i]] for i in candidates},
                                     {i: (100 + i) / 4 for i in candidates}, 2000, None)}
    kept = {r["doc_id"] for r in store.read_table("selections", "default", "part-00000.parquet").to_pylist()
            if r["kept"]}
    assert kept == expected
    record = result.outputs["thresholds"][1]
    assert record["label"] == "correlation:default@2000tok" and record["tokens"] == "n_bytes/4 estimate"
    assert record["groups"]["(all)"]["tokens_kept"] == sum((100 + ids.index(d)) / 4 for d in expected)


def test_dry_run_and_what_if_with_a_correlation_rule(tmp_path):
    store, ids, _ = write_store(tmp_path)
    write_page_scores(store, "default", ids)
    cfg = with_rules(config(tmp_path, name="w"), ["correlation:default:0.3"], [])
    result = run_select(cfg, dry_run=True, report_by="language")
    assert not store.exists("selections", "w")
    text = report(result).text()
    assert "correlation:default@0.3" in text and "page_score" in text
    data = run_what_if(cfg)
    assert data["score"] == PAGE_SCORE and data["edges"] == []  # a score order has no band edge
    assert data["distribution"]["groups"][-1]["n"] == data["groups"][-1]["eligible"]
    sweep = run_select(cfg, sweep=(["low"], [0.5])).outputs["report"].to_pylist()  # a band on perplexity after it
    assert sweep[0]["kept"] <= result.counts["kept"]

    from typer.testing import CliRunner
    from pipeline.cli import app
    out = CliRunner().invoke(app, ["select", str(tmp_path), "--rule", "correlation:default:0.3", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "correlation:default@0.3" in out.output and "dry run" in out.output
