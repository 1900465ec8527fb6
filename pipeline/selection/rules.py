"""Selection rules: pure functions of score arrays that say which documents to keep.

Everything here takes numpy arrays and returns masks, probabilities or thresholds; the select stage
(`pipeline.selection.stage`) loads the scores and applies these per threshold group. Each kind of
score rule is one entry of `SCORE_RULES` (its command-line form, its label and how it decides);
its settings are a pydantic model in `pipeline.config` (`SelectionRule`).

Percentiles are exact, with linear interpolation between order statistics (numpy's default and
DuckDB's `quantile_cont`), so a threshold recorded with a selection can be reproduced in SQL.
A percentile range keeps the half-open interval (q(lower), q(upper)]; a lower bound of 0 or an
upper bound of 100 is open-ended. Adjacent ranges therefore partition the documents: `low` at rate r
and `high` at rate 1 - r never both keep a document and together keep all of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from pipeline.config import apply_overrides
from pipeline.budgets import keep_by_score, solve_keep_factor
from pipeline.errors import UserError
from pipeline.hashing import seeded_uniforms
from pipeline.rating import recipes

CCNET_BUCKETS = ("head", "middle", "tail")


def percentile_bounds(values: np.ndarray, lower: float, upper: float) -> tuple[float, float]:
    """(q(lower), q(upper)) for percentiles in [0, 100]: -inf for lower = 0, +inf for upper = 100."""
    if not 0 <= lower <= upper <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= lower <= upper <= 100, got {lower}, {upper}")
    lo = -math.inf if lower <= 0 else float(np.quantile(values, lower / 100))
    hi = math.inf if upper >= 100 else float(np.quantile(values, upper / 100))
    return lo, hi


def band_percentiles(criterion: str, rate: float) -> tuple[float, float]:
    """Ankner et al.'s selection criteria at selection rate r, as a percentile range:
    low = [0, 100r], medium = [50 - 100r/2, 50 + 100r/2], high = [100 - 100r, 100]."""
    if not 0 < rate <= 1:
        raise ValueError(f"selection rate must be in (0, 1], got {rate}")
    pct = 100 * rate
    if criterion == "low":
        return 0.0, pct
    if criterion == "medium":
        return 50 - pct / 2, 50 + pct / 2
    if criterion == "high":
        return 100 - pct, 100.0
    raise ValueError(f"criterion must be low, medium or high, got {criterion!r}")


def in_range(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """keep = lo < value <= hi (an open lower end, -inf, keeps the minimum)."""
    return (values > lo) & (values <= hi)


def ccnet_buckets(values: np.ndarray, cuts: tuple[float, float] = (30, 60)) -> tuple[np.ndarray, float, float]:
    """CCNet buckets: 0 = head (<= the cuts[0] percentile), 1 = middle (<= cuts[1]), 2 = tail (above).
    Returns (bucket per value, first cut, second cut)."""
    lo, hi = float(np.quantile(values, cuts[0] / 100)), float(np.quantile(values, cuts[1] / 100))
    return np.where(values <= lo, 0, np.where(values <= hi, 1, 2)), lo, hi


def ccnet_perplexity(nll_sum: np.ndarray, n_words: np.ndarray, n_lines: np.ndarray) -> np.ndarray:
    """CCNet's document perplexity 10 ** (-sum log10 p / sum (words + 1)), the sums over lines.

    -sum log10 p = nll_sum / ln 10 for an NLL in nats, and sum over lines of (words + 1) is
    words + lines, so this is exp(nll_sum / (n_words + n_lines))."""
    return np.exp(np.asarray(nll_sum, dtype=float) / (np.asarray(n_words) + np.asarray(n_lines)))


def group_codes(groups) -> tuple[np.ndarray, np.ndarray]:
    """(the sorted group names, each document's index into them), None named "(none)": np.unique's
    (values, inverse), hashed by Arrow rather than sorted as Python objects (fast for a million hosts)."""
    names = pa.array(["(none)" if g is None else str(g) for g in groups], pa.string()).dictionary_encode()
    found = np.array(names.dictionary.to_pylist(), dtype=object)
    order = np.argsort(found)
    rank = np.empty(len(found), dtype=np.int64)
    rank[order] = np.arange(len(found))
    return found[order], rank[names.indices.to_numpy(zero_copy_only=False).astype(np.int64)]


# -- scores normalised within a group ---------------------------------------------------------------
# <column>_pct_in_<group>: a scorer column as its percentile within the document's host or domain.
GROUP_PERCENTILES = {f"{column}_pct_in_{group}": (column, group)
                     for column in ("perplexity", "bits_per_byte", "nll_mean") for group in ("host", "domain")}


def percentile_in_group(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each value's percentile (0-100) within its group: 100 * (r - 0.5) / n, with r its rank (1 = the
    lowest) among the n finite values of its group, tied values given their average rank.

    So a group's values spread evenly over (0, 100) whatever its scale (a group of one sits at 50), and
    a band over the result takes the same share of every group's range. Non-finite values (unscored
    documents) are NaN and count in no group; a group of None is one group, as SQL's PARTITION BY
    treats NULL (the `candidates` view computes the same with rank() and count(*) windows)."""
    values = np.asarray(values, dtype=float)
    out = np.full(len(values), np.nan)
    scored = np.flatnonzero(np.isfinite(values))
    if not len(scored):
        return out
    _, code = group_codes(np.asarray(groups, dtype=object)[scored])
    size = np.bincount(code)
    order = np.lexsort((values[scored], code))  # by group, then value
    c, v = code[order], values[scored][order]
    new_run = np.r_[True, (c[1:] != c[:-1]) | (v[1:] != v[:-1])]  # runs of tied values
    starts, run = np.flatnonzero(new_run), np.cumsum(new_run) - 1
    ties = np.diff(np.r_[starts, len(v)])[run]
    first_rank = starts[run] - np.r_[0, np.cumsum(size)][c] + 1  # rank of the run's first value in its group
    out[scored[order]] = 100 * (first_rank + (ties - 1) / 2 - 0.5) / size[c]
    return out


# -- BERTIN perplexity sampling ---------------------------------------------------------------------
def bertin_stepwise_weights(ppl: np.ndarray, q1: float, q2: float, q3: float) -> np.ndarray:
    """1 / (width of the quartile range holding ppl): Q1 for the 1st quartile, Q2 - Q1, Q3 - Q2, and
    10 * Q3 for the 4th. BERTIN keeps with p = factor * this (clipped to 1), so every quartile
    contributes about `factor` expected documents per unit of perplexity."""
    widths = np.where(ppl < q1, q1, np.where(ppl < q2, q2 - q1, np.where(ppl < q3, q3 - q2, 10 * q3)))
    with np.errstate(divide="ignore"):
        return np.where(widths > 0, 1.0 / np.maximum(widths, 1e-300), np.inf)


def bertin_gaussian_weights(ppl: np.ndarray, q2: float, width: float = 4.5) -> np.ndarray:
    """exp(-(1/width) * ((ppl - Q2) / Q2) ** 2): 1 at the median, falling off on both sides."""
    return np.exp(-(1.0 / width) * ((ppl - q2) / q2) ** 2)


def bertin_keep_probability(ppl: np.ndarray, method: str, rate: float, width: float = 4.5) -> tuple[np.ndarray, dict]:
    """Per-document keep probability of BERTIN sampling at expected rate `rate`, plus the
    quartiles and the solved factor (recorded with the selection)."""
    q1, q2, q3 = (float(x) for x in np.quantile(ppl, [0.25, 0.5, 0.75]))
    if method == "stepwise":
        weights = bertin_stepwise_weights(ppl, q1, q2, q3)
    elif method == "gaussian":
        weights = bertin_gaussian_weights(ppl, q2, width)
    else:
        raise ValueError(f"BERTIN method must be stepwise or gaussian, got {method!r}")
    factor = solve_keep_factor(weights, rate)
    with np.errstate(invalid="ignore"):  # inf * 0 is masked out below
        scaled = np.minimum(1.0, factor * weights)
    prob = np.where(np.isinf(weights), 1.0, np.where(weights > 0, scaled, 0.0))
    return prob, {"q1": q1, "q2": q2, "q3": q3, "factor": factor}


# -- rules applied in order -------------------------------------------------------------------------
GLOBAL = "(all)"            # the threshold group of a rule without `by`
SMALL_GROUPS = "(global)"   # groups under min_group_docs use thresholds of all documents together


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None  # JSON has no infinity: an open end is null


# -- the kinds of score rule -------------------------------------------------------------------------
# Each returns, for one threshold group: (keep mask, reason per document, thresholds to record).
# A correlation rule judges the page scores of a `curate correlate` run (Thrush et al.'s fastText page
# selector, P(include)) and counts each page's tokens against its budget. A rating rule judges one
# rater's ratings (DataMan) and counts the same tokens.
PAGE_SCORE = "page_score"    # P(include) of the rule's correlate run (NaN: no page score)
PAGE_TOKENS = "page_tokens"  # the tokens a correlation or rating rule counts per document (the stage fills it in)
RATING_DOMAIN = "rating_domain"  # the rater's domain letter A-O (multi_domain's second split)


def score_column(rule) -> str:
    """The column a score rule judges: its `score`, a correlation rule's page score, or a rating rule's
    criterion as rating_<criterion>[_expected] (NaN: no parsed rating)."""
    if rule.type == "rating":
        return f"rating_{rule.criterion}" + "_expected" * rule.expected
    return PAGE_SCORE if rule.type == "correlation" else rule.score


def _keep_range(label: str, values: np.ndarray, lower: float, upper: float) -> tuple:
    lo, hi = percentile_bounds(values, lower, upper)
    reasons = np.where(values <= lo, f"{label}:below", f"{label}:above")
    return in_range(values, lo, hi), reasons, {"lower": _finite(lo), "upper": _finite(hi)}


def _band(rule, values: np.ndarray, doc_ids: np.ndarray, draw_seed: str, tokens: np.ndarray) -> tuple:
    return _keep_range(SCORE_RULES["band"].label(rule), values, *band_percentiles(rule.criterion, rule.rate))


def _percentile(rule, values: np.ndarray, doc_ids: np.ndarray, draw_seed: str, tokens: np.ndarray) -> tuple:
    return _keep_range(SCORE_RULES["percentile"].label(rule), values, rule.lower, rule.upper)


def _ccnet(rule, values: np.ndarray, doc_ids: np.ndarray, draw_seed: str, tokens: np.ndarray) -> tuple:
    buckets, head_max, middle_max = ccnet_buckets(values, rule.cuts)
    keep = np.isin(buckets, [CCNET_BUCKETS.index(b) for b in rule.keep])
    reasons = np.array([f"ccnet:{b}" for b in CCNET_BUCKETS], dtype=object)[buckets]
    return keep, reasons, {"head_max": head_max, "middle_max": middle_max}


def _bertin(rule, values: np.ndarray, doc_ids: np.ndarray, draw_seed: str, tokens: np.ndarray) -> tuple:
    prob, info = bertin_keep_probability(values, rule.method, rule.rate, rule.width)
    keep = seeded_uniforms(doc_ids, draw_seed) < prob
    reasons = np.full(len(values), f"{SCORE_RULES['bertin'].label(rule)}:not_drawn", dtype=object)
    return keep, reasons, {k: _finite(v) for k, v in info.items()} | {"expected_kept": float(prob.sum())}


def _correlation(rule, values: np.ndarray, doc_ids: np.ndarray, draw_seed: str, tokens: np.ndarray) -> tuple:
    """Pages in descending score until `keep_fraction` of these pages' tokens or `token_budget` tokens
    (`keep_by_score`: the page that crosses the budget is kept; ties go by position, i.e. doc_id)."""
    if tokens is None:
        raise ValueError(f"a correlation rule counts tokens: the candidates need a {PAGE_TOKENS!r} column")
    tokens = np.nan_to_num(np.asarray(tokens, dtype=float))
    keep = keep_by_score(values, tokens, token_budget=rule.token_budget, keep_fraction=rule.keep_fraction)
    budget = rule.token_budget if rule.token_budget is not None else rule.keep_fraction * tokens.sum()
    reasons = np.full(len(values), f"{SCORE_RULES['correlation'].label(rule)}:below", dtype=object)
    dropped = values[~keep]
    return keep, reasons, {"min_kept_score": float(values[keep].min()) if keep.any() else None,
                           "tokens_kept": float(tokens[keep].sum()), "budget_tokens": float(budget),
                           "tokens": float(tokens.sum()),
                           "max_dropped_score": float(dropped.max()) if len(dropped) else None}


def _correlation_label(rule) -> str:
    target = f"{rule.keep_fraction:g}" if rule.keep_fraction is not None else f"{rule.token_budget}tok"
    return f"correlation:{rule.run}@{target}"


def _rating(rule, values: np.ndarray, doc_ids: np.ndarray, draw_seed: str, tokens: np.ndarray,
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


def _rating_label(rule) -> str:
    """rating:top_k(overall_score)@0.3, rating:overall_level(overall_score=5)@1000tok,
    rating:temperature(quality_mix_expected,tau=2)@0.5, rating:multi_domain(coherence,source=host)@0.3."""
    judged = rule.criterion + "_expected" * rule.expected
    judged += {"overall_level": f"={rule.level}", "temperature": f",tau={rule.tau:g}",
               "multi_domain": f",source={rule.sources}" * (rule.sources != "domain")}.get(rule.recipe, "")
    if rule.recipe == "temperature":
        target = f"@{rule.rate:g}"
    elif rule.keep_fraction is not None:
        target = f"@{rule.keep_fraction:g}"
    else:  # a token budget, or none: overall_level keeps every document at its level
        target = "" if rule.token_budget is None else f"@{rule.token_budget}tok"
    return f"rating:{rule.recipe}({judged}){target}"


def _rating_arguments(values: list[str]) -> tuple[str, str]:
    """`rating:<recipe>:<x>`: x is the level of overall_level, the rate of temperature, else keep_fraction."""
    recipe = values[0] if values else "top_k"
    return "recipe", {"overall_level": "level", "temperature": "rate"}.get(recipe, "keep_fraction")


def _rating_inputs(rule) -> dict[str, str]:
    return {"sources": rule.sources, "domains": RATING_DOMAIN} if rule.recipe == "multi_domain" else {}


@dataclass(frozen=True)
class RuleKind:
    """One kind of score rule: its command-line arguments (`band:medium:0.5` fills criterion, rate; a
    function of the positional values when they depend on the first), its label in reasons and reports,
    and `apply(rule, values, doc_ids, draw_seed, tokens, **inputs)` on one group (`tokens`: the
    documents' PAGE_TOKENS, when the candidates have them; `inputs`: keyword -> candidates column)."""
    arguments: tuple[str, ...] | Callable[[list[str]], tuple[str, ...]]
    label: Callable
    apply: Callable
    example: str
    inputs: Callable = lambda rule: {}


SCORE_RULES: dict[str, RuleKind] = {
    "band": RuleKind(("criterion", "rate"), lambda r: f"band:{r.criterion}@{r.rate:g}", _band, "band:medium:0.5"),
    "percentile": RuleKind(("lower", "upper"), lambda r: f"percentile:{r.lower:g}-{r.upper:g}", _percentile,
                           "percentile:10:60"),
    "ccnet": RuleKind(("keep",), lambda r: "ccnet:" + "+".join(r.keep), _ccnet, "ccnet:head+middle"),
    "bertin": RuleKind(("method", "rate"), lambda r: f"bertin:{r.method}@{r.rate:g}", _bertin,
                       "bertin:gaussian:0.5"),
    "correlation": RuleKind(("run", "keep_fraction"), _correlation_label, _correlation, "correlation:default:0.5"),
    "rating": RuleKind(_rating_arguments, _rating_label, _rating, "rating:top_k:0.3", _rating_inputs),
}
LIST_ARGUMENTS = ("keep", "cuts")  # given as a+b on the command line


def rule_label(rule) -> str:
    """A short name for a rule, used in reasons and reports: band:medium@0.5, percentile:10-60,
    correlation:default@0.5 (or @1000000tok for a token budget), rating:top_k(overall_score)@0.3, ..."""
    return "where" if rule.type == "where" else SCORE_RULES[rule.type].label(rule)


def parse_rule(text: str) -> dict:
    """A score rule from its command-line form, `<type>:<arguments>` then `:key=value` options:
    `band:medium:0.5:by=domain`, `percentile:10:60:score=bits_per_byte`, `ccnet:head+middle:cuts=30+60`,
    `bertin:gaussian:0.5:width=4.5`, `correlation:default:0.5` (a correlate run's pages, half their tokens)
    or `correlation:default:token_budget=1000000`, `rating:top_k:0.3`, `rating:overall_level:5:keep_fraction=0.2`,
    `rating:temperature:0.5:tau=2`, `rating:multi_domain:token_budget=100000:criterion=quality_mix`.
    The dict is validated as a config rule."""
    kind, *parts = text.split(":")
    if kind not in SCORE_RULES:
        raise UserError(f"--rule {text!r}: the rule type must be one of {', '.join(SCORE_RULES)} "
                        f"(SQL predicates go in --where)")
    rule: dict = {"type": kind}
    values = [p for p in parts if "=" not in p]
    arguments = SCORE_RULES[kind].arguments
    if callable(arguments):
        arguments = arguments(values)
    if len(values) > len(arguments):
        raise UserError(f"--rule {text!r}: {kind} takes {':'.join(arguments)} then key=value options")
    rule.update(zip(arguments, values))
    rule.update(p.split("=", 1) for p in parts if "=" in p)
    for key in LIST_ARGUMENTS:
        if key in rule:
            rule[key] = rule[key].split("+")
    return rule


def group_indexes(groups: np.ndarray | None, n: int, min_group_docs: int) -> list[tuple[str, np.ndarray]]:
    """[(group name, positions)]: one global group without `by`; else one per value, except that
    groups under `min_group_docs` are pooled and use thresholds of all n documents."""
    if groups is None:
        return [(GLOBAL, np.arange(n))]
    uniq, inverse = group_codes(groups)
    sizes = np.bincount(inverse, minlength=len(uniq))
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    out = [(str(uniq[g]), order[bounds[g]:bounds[g + 1]]) for g in range(len(uniq)) if sizes[g] >= min_group_docs]
    if len(out) < len(uniq):
        out.append((SMALL_GROUPS, np.arange(n)))
    return out


def apply_rules(doc_ids: np.ndarray, columns: dict[str, np.ndarray], rules: list, seed: int = 0,
                where_matches: dict[int, np.ndarray] | None = None,
                excluded: np.ndarray | None = None) -> dict:
    """Apply `rules` in order to the documents `doc_ids`; each rule sees only what the rules before
    it kept, so its thresholds come from that distribution (e.g. medium 50% of the English documents).

    `columns` holds the score columns (NaN where a document has no score) and the `by` columns, and
    for a correlation rule PAGE_SCORE and PAGE_TOKENS (it keeps `keep_fraction` of the tokens of the
    page-scored documents still kept, or `token_budget` tokens), for a rating rule its `score_column`,
    PAGE_TOKENS and, for multi_domain, RATING_DOMAIN and its `sources` column;
    `where_matches[i]` is the boolean match of rule i (a `where` rule, evaluated by the caller in
    SQL); `excluded` marks documents dropped up front as `reference_split`.
    Returns kept, reason (None when kept), score and group (of the last score rule that saw the
    document), the thresholds of every rule, and `judged`: per score rule i, the positions of the
    documents it judged (`rows`) and their threshold group (`group`).
    """
    n = len(doc_ids)
    kept = np.ones(n, dtype=bool)
    reason = np.full(n, None, dtype=object)
    score = np.full(n, np.nan)
    group = np.full(n, None, dtype=object)
    if excluded is not None:
        kept &= ~excluded
        reason[excluded] = "reference_split"
    thresholds, judged = [], {}
    for i, rule in enumerate(rules):
        active = np.flatnonzero(kept)
        record = {"rule": i, "label": rule_label(rule), "type": rule.type, "candidates": int(len(active))}
        if rule.type == "where":
            drop = active[~where_matches[i][active]]
            kept[drop], reason[drop] = False, f"where:{i}"
            record.update(sql=rule.sql, kept=int(len(active) - len(drop)))
            thresholds.append(record)
            continue
        column, by, kind = score_column(rule), getattr(rule, "by", None), SCORE_RULES[rule.type]
        values = columns[column][active]
        unscored = active[~np.isfinite(values)]
        kept[unscored], reason[unscored] = False, "no_score"
        active = active[np.isfinite(values)]
        values = columns[column][active]
        tokens = columns[PAGE_TOKENS][active] if PAGE_TOKENS in columns else None
        groups = columns[by][active] if by else None
        inputs = {key: columns[name][active] for key, name in kind.inputs(rule).items()}
        record.update(score=column, by=by, no_score=int(len(unscored)), groups={})
        covered = np.zeros(len(active), dtype=bool)
        judged[i] = {"rows": active, "group": np.full(len(active), None, dtype=object)}
        for name, positions in group_indexes(groups, len(active), getattr(rule, "min_group_docs", 1)):
            keep, reasons, info = kind.apply(
                rule, values[positions], doc_ids[active[positions]], f"{seed}:{i}:{name}",
                None if tokens is None else tokens[positions], **{k: v[positions] for k, v in inputs.items()})
            if name == SMALL_GROUPS:  # thresholds of everything, applied to the small groups only
                mine = ~covered[positions]
                positions, keep, reasons = positions[mine], keep[mine], reasons[mine]
            covered[positions] = True
            judged[i]["group"][positions] = name
            rows = active[positions]
            score[rows], group[rows] = values[positions], name
            kept[rows[~keep]], reason[rows[~keep]] = False, reasons[~keep]
            record["groups"][name] = {"n": int(len(rows)), "kept": int(keep.sum()), **info}
        thresholds.append(record)
    return {"kept": kept, "reason": reason, "score": score, "group": group, "thresholds": thresholds,
            "judged": judged}


def with_rules(config, rules: list[str], where: list[str]):
    """`config` with select.rules from the command line: the `where` predicates first, then the `rules`
    (their command-line form), which replace the config's score rules (its own where rules go when
    `where` is given)."""
    if not (rules or where):
        return config
    new = [{"type": "where", "sql": w} for w in where]
    new += [parse_rule(r) for r in rules] if rules else [r.model_dump() for r in config.select.rules
                                                         if r.type != "where"]
    return apply_overrides(config, {"select.rules": new}, source="--rule/--where")
