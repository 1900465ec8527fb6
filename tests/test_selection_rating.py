"""The `rating` selection rule: DataMan's recipes over one rater's ratings, end to end on a real store
(Parquet + DuckDB) against the pure recipe functions on the same inputs read back from the Parquet."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.hashing import seeded_uniforms
from pipeline.rating import recipes
from pipeline.rating.raters import resolve_rater, store_raters
from pipeline.selection.rules import parse_rule, rule_label, with_rules
from pipeline.selection.stage import report, run_select
from pipeline.store import Store
from schemas import RATING_CRITERIA, sidecars
from tests.test_selection_stage import config, write_store

RATERS = {"d0d0d0d0d0d0d0d1": ("dataman-1.5b", "constrained"), "5757575757575757": ("dataman-student", "student")}
LLM, STUDENT = RATERS


def write_ratings(store: Store, rater_id: str, ids: list[str], seed: int = 0, parts: int = 2) -> None:
    """Random ratings of `ids` by one rater: every 13th document unrated (no row), every 17th unparsed
    (parsed = false, no scores), the rest with 14 scores 1-5, expected scores and a domain letter A-E."""
    model_name, decoding = RATERS.get(rater_id, (f"model-{rater_id}", "greedy"))
    rng = np.random.default_rng(seed)
    rows = []
    for i, d in enumerate(ids):
        if i % 13 == 5:
            continue
        parsed = i % 17 != 4
        scores = rng.integers(1, 6, len(RATING_CRITERIA)).tolist()
        expected = np.round(rng.uniform(1, 5, len(RATING_CRITERIA)), 3).tolist()
        rows.append({"doc_id": d, "rater_id": rater_id, "model_name": model_name, "decoding": decoding,
                     "domain": "ABCDE"[int(rng.integers(5))] if parsed else None,
                     **{c: s if parsed else None for c, s in zip(RATING_CRITERIA, scores)},
                     **{f"{c}_expected": e if parsed else None for c, e in zip(RATING_CRITERIA, expected)},
                     "answer": "..." if parsed else "The text is a review", "parsed": parsed,
                     "error": None if parsed else "expected 15 lines", "n_text_tokens": 30, "truncated": False})
    for part in range(parts):
        store.write_table(pa.Table.from_pylist(rows[part::parts], schema=schemas.RATINGS), schemas.RATINGS,
                          "ratings", f"rater={rater_id}", f"part-{part:05d}.parquet")
    store.write_json(sidecars.RATER, {"rater_id": rater_id, "model_name": model_name, "weights_sha256": "0" * 64,
                                      "tokenizer": f"{model_name}@0", "backend": "torch", "dtype": "float32",
                                      "decoding": decoding, "prompt_sha256": "1" * 64, "text_tokens": 1900,
                                      "code_version": "test"}, "ratings", f"rater={rater_id}", "_rater.json")


@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    """One store for the module: write_store's 300 documents (one scorer, whose model trained on part of
    them), rated by two raters."""
    root = tmp_path_factory.mktemp("rated")
    store, ids, split = write_store(root)
    for k, rid in enumerate(RATERS):
        write_ratings(store, rid, ids, seed=k)
    trained = {d for j, d in enumerate(split) if j % 3 != 0}
    return root, store, ids, trained


def expected_kept(store: Store, ids: list[str], trained: set[str], rule: dict, english_only: bool,
                  seed: int) -> tuple[set[str], set[str]]:
    """(kept, unrated) by the recipe function on the candidates read back from the rater's Parquet:
    documents outside the scorer's training split (English only after a where rule), in doc_id order,
    their tokens the scorer's n_tokens (20 + i % 7)."""
    rid = rule.get("rater", LLM)
    rid = next((r for r, (name, _) in RATERS.items() if name == rid), rid)
    rows = {r["doc_id"]: r for r in pq.read_table(store.path("ratings", f"rater={rid}")).to_pylist()}
    suffix = "_expected" * rule.get("expected", False)
    criterion = rule.get("criterion", "overall_score")

    def value(row):
        if row is None or not row["parsed"]:
            return None
        return (recipes.quality_mix([[row[c + suffix] for c in RATING_CRITERIA]])[0]
                if criterion == "quality_mix" else row[criterion + suffix])
    eligible = [i for i, d in enumerate(ids) if d not in trained and (i % 5 or not english_only)]
    unrated = {ids[i] for i in eligible if value(rows.get(ids[i])) is None}
    cand = [i for i in eligible if ids[i] not in unrated]
    doc_ids = [ids[i] for i in cand]
    values = np.array([value(rows[d]) for d in doc_ids], dtype=float)
    tokens = np.array([20 + i % 7 for i in cand], dtype=float)
    budget = rule.get("token_budget") or (rule["keep_fraction"] * tokens.sum() if "keep_fraction" in rule else None)
    draws = seeded_uniforms(doc_ids, f"{seed}:{int(english_only)}:(all)")
    recipe = rule.get("recipe", "top_k")
    if recipe == "top_k":
        keep = recipes.top_k(values, tokens, budget)
    elif recipe == "overall_level":
        keep = recipes.overall_level(values, rule.get("level", 5), tokens, draws, budget)
    elif recipe == "multi_domain":
        sources = ["en" if i % 5 else "de" for i in cand] if rule.get("sources") == "language" else \
            [("news.org", "blog.net", "shop.com")[i % 3] for i in cand]
        keep = recipes.multi_domain(sources, [rows[d]["domain"] for d in doc_ids], values, tokens, budget)
    else:
        keep = recipes.temperature(values, rule.get("tau", 2.0), rule["rate"], draws)
    return {d for d, k in zip(doc_ids, keep) if k}, unrated


CASES = {
    "top_k": ({"keep_fraction": 0.3}, False, 0),
    "top_k-quality_mix-expected": ({"token_budget": 900, "criterion": "quality_mix", "expected": True,
                                    "rater": STUDENT}, True, 0),
    "overall_level-sampled": ({"recipe": "overall_level", "level": 4, "keep_fraction": 0.1}, False, 3),
    "overall_level-all": ({"recipe": "overall_level", "rater": "dataman-1.5b"}, True, 0),
    "multi_domain": ({"recipe": "multi_domain", "keep_fraction": 0.4, "criterion": "coherence"}, False, 0),
    "multi_domain-by-language": ({"recipe": "multi_domain", "token_budget": 1500, "criterion": "quality_mix",
                                  "sources": "language"}, True, 0),
    "temperature": ({"recipe": "temperature", "rate": 0.5, "expected": True}, False, 7),
    "temperature-quality_mix": ({"recipe": "temperature", "rate": 0.3, "tau": 4.0, "criterion": "quality_mix",
                                 "rater": "dataman-student"}, True, 1),
}


@pytest.mark.parametrize("case", CASES)
def test_each_recipe_keeps_what_the_recipe_function_keeps(rated, case):
    root, store, ids, trained = rated
    rule, english_only, seed = CASES[case]
    rule = {"type": "rating", "rater": LLM, **rule}
    rules = [{"type": "where", "sql": "language = 'en'"}] * english_only + [rule]
    result = run_select(config(root, name=case, rules=rules, seed=seed))
    rows = {r["doc_id"]: r for r in store.read_table("selections", case, "part-00000.parquet").to_pylist()}
    kept = {d for d, r in rows.items() if r["kept"]}
    expected, unrated = expected_kept(store, ids, trained, rule, english_only, seed)
    assert kept == expected
    assert 0 < len(kept) and unrated and result.counts["kept"] == len(kept)

    # unrated and unparsed candidates are dropped as no_score, counted; the rest by the rule's label
    assert {rows[d]["reason"] for d in unrated} == {"no_score"}
    assert result.counts["no_score"] == len(unrated)
    record = result.outputs["thresholds"][-1]
    label = rule_label(Config.model_validate({"select": {"rules": [rule]}}).select.rules[0])
    assert record["label"] == label and record["no_score"] == len(unrated)
    assert record["rater"] == (STUDENT if rule["rater"] in (STUDENT, "dataman-student") else LLM)
    assert record["tokens"] == "n_tokens of scorer aaaa000000000001"
    judged = {d for d, r in rows.items() if r["reason"] not in ("no_score", "reference_split", "where:0")}
    assert {rows[d]["reason"].rsplit(":", 1)[0] for d in judged - kept} == {label}
    assert record["groups"]["(all)"]["n"] == len(judged) and record["groups"]["(all)"]["kept"] == len(kept)
    if rule.get("recipe") == "overall_level":
        assert {rows[d]["score"] for d in kept} == {rule.get("level", 5)}
    assert f"{label} on {record['score']}" in report(result).text()


def test_a_selection_is_reproducible_and_reads_its_raters_ratings(tmp_path):
    store, ids, _ = write_store(tmp_path)
    write_ratings(store, LLM, ids)
    cfg = config(tmp_path, rules=[{"type": "rating", "recipe": "temperature", "rate": 0.4}])
    first = run_select(cfg)
    assert run_select(cfg).skipped  # unchanged: a no-op
    again = run_select(cfg, overwrite=True, dry_run=True)
    assert again.outputs["selection_id"] == first.outputs["selection_id"] and again.counts == first.counts
    write_ratings(store, LLM, ids, seed=5, parts=1)  # re-rated: a new selection id
    store.delete("ratings", f"rater={LLM}", "part-00001.parquet")
    with pytest.raises(UserError, match="--overwrite"):
        run_select(cfg)
    # the candidates view has the rater's columns, for where rules too
    out = run_select(config(tmp_path, name="w", rules=[{"type": "where", "sql": "rating_overall_score >= 4"},
                                                       {"type": "rating", "keep_fraction": 1.0}]))
    rows = store.read_table("selections", "w", "part-00000.parquet").to_pylist()
    assert all(r["score"] >= 4 for r in rows if r["kept"]) and out.counts["kept"] > 0


def test_an_earlier_rule_that_keeps_nothing_leaves_nothing_to_rate(rated):
    root, store, ids, _ = rated
    result = run_select(config(root, name="none", rules=[{"type": "where", "sql": "false"},
                                                         {"type": "rating", "rater": LLM, "keep_fraction": 0.5}]))
    assert result.counts["kept"] == 0 and result.outputs["thresholds"][1]["groups"]["(all)"]["n"] == 0


def test_raters_are_named_by_id_or_model_name_and_errors_list_them(rated, tmp_path):
    root, store, ids, _ = rated
    assert list(store_raters(store)) == sorted(RATERS)
    assert resolve_rater(store, "dataman-student")["rater_id"] == STUDENT
    assert resolve_rater(store, LLM)["decoding"] == "constrained"
    listing = rf"{STUDENT} \(dataman-student, student\), {LLM} \(dataman-1.5b, constrained\)"
    with pytest.raises(UserError, match=rf"rater 'dataman-9b' has no ratings in .*; raters: {listing}"):
        run_select(config(root, name="x", rules=[{"type": "rating", "rater": "dataman-9b", "keep_fraction": 0.5}]))
    with pytest.raises(UserError, match=rf"has 2 raters: name one in the rating rule .*: {listing}"):
        run_select(config(root, name="x", rules=[{"type": "rating", "keep_fraction": 0.5}]))
    with pytest.raises(UserError, match="one rater"):
        run_select(config(root, name="x", rules=[{"type": "rating", "rater": LLM, "keep_fraction": 0.5},
                                                 {"type": "rating", "rater": STUDENT, "keep_fraction": 0.5}]))
    with pytest.raises(UserError, match="unknown column.*`sources`: nope"):
        run_select(config(root, name="x", rules=[{"type": "rating", "rater": LLM, "recipe": "multi_domain",
                                                  "keep_fraction": 0.5, "sources": "nope"}]))

    lone, lone_ids, _ = write_store(tmp_path / "lone", n=30)
    with pytest.raises(UserError, match=r"no ratings in .*`curate rate`"):
        run_select(config(tmp_path / "lone", rules=[{"type": "rating", "keep_fraction": 0.5}]))
    write_ratings(lone, "0123456789abcdef", lone_ids)
    (tmp_path / "lone" / "ratings" / "rater=fedcba9876543210").mkdir()  # a folder without parts: no rater
    assert resolve_rater(lone, None)["rater_id"] == "0123456789abcdef"


def test_the_command_line_forms_and_labels():
    forms = {
        "rating:top_k:0.3": ({"recipe": "top_k", "keep_fraction": "0.3"}, "rating:top_k(overall_score)@0.3"),
        "rating:overall_level:5:keep_fraction=0.2": ({"recipe": "overall_level", "level": "5", "keep_fraction": "0.2"},
                                                     "rating:overall_level(overall_score=5)@0.2"),
        "rating:overall_level:3": ({"recipe": "overall_level", "level": "3"}, "rating:overall_level(overall_score=3)"),
        "rating:temperature:rate=0.5:tau=2": ({"recipe": "temperature", "rate": "0.5", "tau": "2"},
                                              "rating:temperature(overall_score,tau=2)@0.5"),
        "rating:temperature:0.5:expected=true": ({"recipe": "temperature", "rate": "0.5", "expected": "true"},
                                                 "rating:temperature(overall_score_expected,tau=2)@0.5"),
        "rating:multi_domain:token_budget=100000:criterion=quality_mix": (
            {"recipe": "multi_domain", "token_budget": "100000", "criterion": "quality_mix"},
            "rating:multi_domain(quality_mix)@100000tok"),
        "rating:multi_domain:0.5:sources=host:rater=dataman-1.5b": (
            {"recipe": "multi_domain", "keep_fraction": "0.5", "sources": "host", "rater": "dataman-1.5b"},
            "rating:multi_domain(overall_score,source=host)@0.5"),
    }
    for text, (fields, label) in forms.items():
        assert parse_rule(text) == {"type": "rating", **fields}, text
        assert rule_label(with_rules(Config(), [text], []).select.rules[0]) == label
    cfg = with_rules(Config(), ["rating:top_k:0.3"], ["language = 'en'"])
    assert [r.type for r in with_rules(cfg, [], ["n_chars > 9"]).select.rules] == ["where", "rating"]  # round trip
    for text, message in {"rating:top_k": "needs keep_fraction or token_budget",
                          "rating:temperature": "needs rate",
                          "rating:top_k:0.3:tau=3": "tau is a setting of recipe temperature",
                          "rating:overall_level:6": "less than or equal to 5",
                          "rating:top_k:0.3:token_budget=9": "one of keep_fraction and token_budget",
                          "rating:overall_level:4:criterion=quality_mix": "integer score",
                          "rating:top_k:0.3:criterion=fun": "quality_mix",
                          "rating:top_k:0.3:0.5": "takes recipe:keep_fraction"}.items():
        with pytest.raises(UserError, match=message):
            with_rules(Config(), [text], [])


def test_the_cli_selects_by_a_rating_rule(rated):
    from typer.testing import CliRunner
    from pipeline.cli import app
    root = rated[0]
    out = CliRunner().invoke(app, ["select", str(root), "--name", "cli", "--rule",
                                   "rating:top_k:0.3:rater=dataman-1.5b", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "rating:top_k(overall_score)@0.3" in out.output and f"rater {LLM}" in out.output
