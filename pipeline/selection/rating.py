"""The `rating` selection rule: one rater's DataMan ratings (store/ratings/rater=<id>/) judged by a recipe
of `pipeline.rating.recipes` on the documents the rules before it kept.

`rules.SCORE_RULES["rating"]` declares the rule (its command-line form, label and inputs); its `apply` is
filled in here, because the recipes build on `rules` (solve_keep_factor) and `rules` may not import them
back. Importing this module, as the select stage does, completes the entry.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from pipeline.hashing import seeded_uniforms
from pipeline.rating import recipes
from pipeline.selection.rules import PAGE_TOKENS, RATING_DOMAIN, SCORE_RULES, score_column
from schemas import RATING_CRITERIA


def ratings_sql(glob: str) -> str:
    """The rater's parsed ratings as candidates columns: doc_id, rating_domain, and rating_<criterion> and
    rating_<criterion>_expected for the 14 criteria (an unparsed row gives none: the document is unrated)."""
    columns = [f"CAST({c}{s} AS DOUBLE) AS rating_{c}{s}" for s in ("", "_expected") for c in RATING_CRITERIA]
    return (f"SELECT doc_id, domain AS {RATING_DOMAIN}, {', '.join(columns)} "
            f"FROM read_parquet('{glob}') WHERE parsed")


def rating_columns(rules: list) -> set[str]:
    """The candidates columns the rating rules read: each one's criterion (the 14 behind quality_mix) and,
    for multi_domain, the rater's domain and the `sources` docs column."""
    out = set()
    for rule in rules:
        if rule.type != "rating":
            continue
        suffix = "_expected" * rule.expected
        out |= ({f"rating_{c}{suffix}" for c in RATING_CRITERIA} if rule.criterion == "quality_mix"
                else {score_column(rule)})
        out |= {RATING_DOMAIN, rule.sources} if rule.recipe == "multi_domain" else set()
    return out


def add_quality_mix(columns: dict[str, np.ndarray], rules: list) -> None:
    """rating_quality_mix[_expected]: `recipes.quality_mix`, the sum of the 14 (NaN where one is missing)."""
    for rule in rules:
        if rule.type == "rating" and rule.criterion == "quality_mix":
            suffix = "_expected" * rule.expected
            columns[score_column(rule)] = recipes.quality_mix(
                np.column_stack([columns[f"rating_{c}{suffix}"] for c in RATING_CRITERIA]))


def apply_rating(rule, values: np.ndarray, doc_ids: np.ndarray, draw_seed: str, tokens: np.ndarray,
                 sources: np.ndarray | None = None, domains: np.ndarray | None = None) -> tuple:
    """One group's keep mask by `rule.recipe`; the size target is `token_budget` tokens or `keep_fraction`
    of these documents' tokens. overall_level and temperature draw with `seeded_uniforms(doc_ids, draw_seed)`
    (overall_level takes the documents at the level in ascending uniform order: a uniform sample)."""
    if tokens is None:
        raise ValueError(f"a rating rule counts tokens: the candidates need a {PAGE_TOKENS!r} column")
    label = SCORE_RULES["rating"].label(rule)
    tokens = np.nan_to_num(np.asarray(tokens, dtype=float))
    budget = rule.token_budget if rule.keep_fraction is None else rule.keep_fraction * tokens.sum()
    reasons = np.full(len(values), f"{label}:below", dtype=object)
    info = {"tokens": float(tokens.sum())} | ({} if budget is None else {"budget_tokens": float(budget)})
    if not len(values):  # the recipes need documents; the rules before it kept none
        keep = np.zeros(0, dtype=bool)
    elif rule.recipe in ("top_k", "multi_domain"):
        keep = (recipes.top_k(values, tokens, budget) if rule.recipe == "top_k" else
                recipes.multi_domain(sources, domains, values, tokens, budget))
        info |= {"min_kept_score": float(values[keep].min()) if keep.any() else None,
                 "max_dropped_score": float(values[~keep].max()) if (~keep).any() else None}
    elif rule.recipe == "overall_level":
        keep = recipes.overall_level(values, rule.level, tokens, seeded_uniforms(doc_ids, draw_seed), budget)
        at_level = values == rule.level
        reasons[at_level], reasons[~at_level] = f"{label}:not_drawn", f"{label}:other_level"
        info |= {"at_level": int(at_level.sum()), "tokens_at_level": float(tokens[at_level].sum())}
    else:
        keep = recipes.temperature(values, rule.tau, rule.rate, seeded_uniforms(doc_ids, draw_seed))
        reasons[:] = f"{label}:not_drawn"
        info["expected_kept"] = float(recipes.temperature_probability(values, rule.tau, rule.rate).sum())
    return keep, reasons, info | {"tokens_kept": float(tokens[keep].sum())}


SCORE_RULES["rating"] = replace(SCORE_RULES["rating"], apply=apply_rating)
