"""Selection rules against their specs' definitions, on random score tables (brute-force references)."""
import math
import random

import numpy as np
import pytest

from pipeline.selection import rules as selection
from pipeline.config import SelectConfig


def brute_quantile(values, p):
    """Linear interpolation between order statistics, written out."""
    s = sorted(values)
    pos = p * (len(s) - 1)
    lo = math.floor(pos)
    if lo + 1 >= len(s):
        return s[-1]
    return s[lo] + (pos - lo) * (s[lo + 1] - s[lo])


def brute_band_keep(values, lower_pct, upper_pct):
    """Keep a value above the lower and at most the upper percentile (open ends at 0 and 100)."""
    lo = -math.inf if lower_pct <= 0 else brute_quantile(values, lower_pct / 100)
    hi = math.inf if upper_pct >= 100 else brute_quantile(values, upper_pct / 100)
    return [lo < v <= hi for v in values]


def rules(*dicts):
    return SelectConfig.model_validate({"rules": list(dicts)}).rules


@pytest.mark.parametrize("seed", range(6))
def test_bands_match_the_percentile_definition_and_rank_counts(seed):
    rng = random.Random(seed)
    n = rng.randint(5, 400)
    values = np.array([rng.lognormvariate(3, 1) for _ in range(n)])
    rank = np.argsort(np.argsort(values))
    for criterion in ("low", "medium", "high"):
        rate = rng.uniform(0.05, 0.95)
        lower, upper = selection.band_percentiles(criterion, rate)
        lo, hi = selection.percentile_bounds(values, lower, upper)
        keep = selection.in_range(values, lo, hi)
        assert keep.tolist() == brute_band_keep(values.tolist(), lower, upper)
        # On distinct values the band is a rank interval: floor(p_lo (n-1)) < rank <= floor(p_hi (n-1)).
        first = -1 if lower == 0 else math.floor(lower / 100 * (n - 1))
        last = n - 1 if upper == 100 else math.floor(upper / 100 * (n - 1))
        assert keep.tolist() == [first < r <= last for r in rank]
        assert abs(keep.sum() - rate * n) <= 2


def test_band_percentiles_are_the_papers_criteria():
    assert selection.band_percentiles("low", 0.3) == (0.0, 30.0)
    assert selection.band_percentiles("medium", 0.5) == (25.0, 75.0)
    assert selection.band_percentiles("high", 0.25) == (75.0, 100.0)
    values = np.arange(1.0, 12.0)  # 1..11: the median is 6
    keep = selection.in_range(values, *selection.percentile_bounds(values, 0, 50))
    assert values[keep].tolist() == [1, 2, 3, 4, 5, 6]
    keep = selection.in_range(values, *selection.percentile_bounds(values, 50, 100))
    assert values[keep].tolist() == [7, 8, 9, 10, 11]  # low 50% and high 50% partition the documents
    with pytest.raises(ValueError):
        selection.band_percentiles("medium", 0)


@pytest.mark.parametrize("seed", range(4))
def test_ccnet_buckets_match_the_definition(seed):
    rng = np.random.default_rng(seed)
    values = rng.lognormal(5, 1, rng.integers(3, 300))
    buckets, lo, hi = selection.ccnet_buckets(values, (30, 60))
    p30, p60 = brute_quantile(values.tolist(), 0.3), brute_quantile(values.tolist(), 0.6)
    assert (lo, hi) == pytest.approx((p30, p60))
    expected = ["head" if v <= p30 else "middle" if v <= p60 else "tail" for v in values]
    assert [selection.CCNET_BUCKETS[b] for b in buckets] == expected


def test_ccnet_perplexity_is_the_per_line_formula():
    # Two lines: log10 probabilities of their tokens, and their words.
    lines = [([-1.0, -0.5, -2.0], 2), ([-0.25, -1.25], 1)]
    log10_sum = sum(sum(lp) for lp, _ in lines)
    length = sum(words + 1 for _, words in lines)
    expected = 10 ** (-log10_sum / length)
    nll_sum_nats = -log10_sum * math.log(10)
    got = selection.ccnet_perplexity(np.array([nll_sum_nats]), np.array([3]), np.array([2]))
    assert got[0] == pytest.approx(expected)


def brute_stepwise(ppl, q1, q2, q3):
    out = []
    for p in ppl:
        if p < q1:
            width = q1
        elif p < q2:
            width = q2 - q1
        elif p < q3:
            width = q3 - q2
        else:
            width = 10 * q3
        out.append(1 / width)
    return out


def brute_factor(weights, rate):
    """Bisection on mean(min(1, c w)) = rate."""
    lo, hi = 0.0, 1.0
    while np.minimum(1, hi * weights).mean() < rate:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.minimum(1, mid * weights).mean() < rate else (lo, mid)
    return hi


@pytest.mark.parametrize("seed", range(6))
def test_bertin_weights_and_solved_factor(seed):
    rng = np.random.default_rng(seed)
    ppl = rng.lognormal(4, 0.8, rng.integers(20, 500))
    q1, q2, q3 = (brute_quantile(ppl.tolist(), p) for p in (0.25, 0.5, 0.75))
    stepwise = selection.bertin_stepwise_weights(ppl, q1, q2, q3)
    assert stepwise.tolist() == pytest.approx(brute_stepwise(ppl, q1, q2, q3))
    gaussian = selection.bertin_gaussian_weights(ppl, q2, 4.5)
    assert gaussian.tolist() == pytest.approx([math.exp(-(1 / 4.5) * ((p - q2) / q2) ** 2) for p in ppl])
    for weights in (stepwise, gaussian):
        rate = float(rng.uniform(0.05, 0.95))
        factor = selection.solve_keep_factor(weights, rate)
        assert np.minimum(1, factor * weights).mean() == pytest.approx(rate, abs=1e-9)
        assert factor == pytest.approx(brute_factor(weights, rate), rel=1e-6)


def test_bertin_gaussian_at_the_median_keeps_with_the_solved_weight():
    ppl = np.random.default_rng(0).lognormal(4, 0.5, 1001)
    prob, info = selection.bertin_keep_probability(ppl, "gaussian", 0.3)
    median = np.argsort(ppl)[500]
    assert prob[median] == pytest.approx(min(1.0, info["factor"]))
    assert prob.mean() == pytest.approx(0.3)
    assert prob[np.argmax(ppl)] < prob[median]


def test_solve_keep_factor_edges():
    with pytest.raises(ValueError, match="out of reach"):
        selection.solve_keep_factor(np.array([1.0, 0.0, 0.0, 0.0]), 0.5)
    assert selection.solve_keep_factor(np.array([1.0, 1.0]), 1.0) == pytest.approx(1.0)
    assert selection.solve_keep_factor(np.array([np.inf, 1.0, 1.0, 1.0]), 0.5) == pytest.approx(1 / 3)


# -- rules in combination, against a plain-Python pipeline ------------------------------------------
def brute_apply(doc_ids, columns, rule_list, where, excluded):
    kept = [not e for e in excluded]
    reason = ["reference_split" if e else None for e in excluded]
    for i, rule in enumerate(rule_list):
        active = [j for j in range(len(doc_ids)) if kept[j]]
        if rule.type == "where":
            for j in active:
                if not where[i][j]:
                    kept[j], reason[j] = False, f"where:{i}"
            continue
        for j in active:
            if not math.isfinite(columns[rule.score][j]):
                kept[j], reason[j] = False, "no_score"
        active = [j for j in active if kept[j]]
        groups = {}
        for j in active:
            groups.setdefault(columns[rule.by][j] if rule.by else "(all)", []).append(j)
        pooled = [j for g in groups.values() if len(g) < rule.min_group_docs for j in g]
        members = [g for g in groups.values() if len(g) >= rule.min_group_docs]
        lower, upper = selection.band_percentiles(rule.criterion, rule.rate) if rule.type == "band" \
            else (rule.lower, rule.upper)
        for positions, reference in [(g, g) for g in members] + ([(pooled, active)] if pooled else []):
            ref_values = [columns[rule.score][j] for j in reference]
            keep = dict(zip(reference, brute_band_keep(ref_values, lower, upper)))
            for j in positions:
                if not keep[j]:
                    kept[j], reason[j] = False, "x"
    return kept


@pytest.mark.parametrize("seed", range(8))
def test_apply_rules_matches_a_plain_python_pipeline(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 600))
    doc_ids = np.array([f"d{i:04d}" for i in range(n)], dtype=object)
    ppl = rng.lognormal(3, 1, n)
    ppl[rng.random(n) < 0.05] = np.nan
    columns = {"perplexity": ppl, "bits_per_byte": rng.uniform(0.5, 3, n),
               "domain": rng.choice(["a.org", "b.org", "c.org", "d.org"], n, p=[.5, .3, .15, .05]).astype(object),
               "language": rng.choice(["en", "de"], n).astype(object)}
    rule_list = rules({"type": "where", "sql": "-"},
                      {"type": "band", "criterion": str(rng.choice(["low", "medium", "high"])),
                       "rate": float(rng.uniform(0.2, 0.9)), "by": "domain", "min_group_docs": 25},
                      {"type": "percentile", "lower": float(rng.uniform(0, 30)), "upper": float(rng.uniform(60, 100)),
                       "score": "bits_per_byte", "by": "language"})
    where = {0: rng.random(n) < 0.8}
    excluded = rng.random(n) < 0.1
    out = selection.apply_rules(doc_ids, columns, rule_list, 0, where, excluded)
    assert out["kept"].tolist() == brute_apply(doc_ids, columns, rule_list, where, excluded)
    # Every dropped document says why, and the reasons name the rule that dropped it.
    assert all((r is None) == k for r, k in zip(out["reason"], out["kept"]))
    assert {r.split(":")[0] for r in out["reason"] if r} <= {"reference_split", "where", "no_score", "band", "percentile"}
    # The recorded thresholds are the percentiles of what each group saw (DuckDB's quantile_cont too).
    band = out["thresholds"][1]
    assert sum(g["n"] for g in band["groups"].values()) == band["candidates"] - band["no_score"]


def test_recorded_thresholds_equal_duckdb_quantile_cont():
    import duckdb
    import pyarrow as pa
    rng = np.random.default_rng(3)
    n = 500
    doc_ids = np.array([f"d{i}" for i in range(n)], dtype=object)
    columns = {"perplexity": rng.lognormal(3, 1, n), "domain": rng.choice(["a", "b", "c"], n).astype(object)}
    out = selection.apply_rules(doc_ids, columns, rules({"type": "band", "criterion": "medium", "rate": 0.4,
                                                         "by": "domain"}), 0)
    scores = pa.table({"domain": columns["domain"].tolist(), "ppl": columns["perplexity"]})
    got = duckdb.sql("SELECT domain, quantile_cont(ppl, 0.3), quantile_cont(ppl, 0.7) FROM scores GROUP BY domain").fetchall()
    for domain, lo, hi in got:
        recorded = out["thresholds"][0]["groups"][domain]
        assert (recorded["lower"], recorded["upper"]) == pytest.approx((lo, hi), rel=1e-12)


def test_bertin_and_ccnet_rules_in_apply_rules_are_seeded():
    rng = np.random.default_rng(1)
    n = 3000
    doc_ids = np.array([f"d{i}" for i in range(n)], dtype=object)
    columns = {"perplexity": rng.lognormal(3, 1, n), "ccnet_perplexity": rng.lognormal(5, 1, n),
               "language": np.array(["en"] * n, dtype=object)}
    rule_list = rules({"type": "ccnet", "keep": ["head", "middle"]},
                      {"type": "bertin", "method": "stepwise", "rate": 0.5})
    a = selection.apply_rules(doc_ids, columns, rule_list, seed=1)
    b = selection.apply_rules(doc_ids, columns, rule_list, seed=1)
    c = selection.apply_rules(doc_ids, columns, rule_list, seed=2)
    assert a["kept"].tolist() == b["kept"].tolist() and a["kept"].tolist() != c["kept"].tolist()
    after_ccnet = int(np.count_nonzero(a["reason"] != "ccnet:tail"))
    assert after_ccnet == pytest.approx(0.6 * n, abs=2)
    assert a["kept"].sum() == pytest.approx(0.5 * after_ccnet, abs=4 * math.sqrt(after_ccnet * 0.25))
    assert set(a["reason"][~a["kept"]]) == {"ccnet:tail", "bertin:stepwise@0.5:not_drawn"}


def brute_percentile_in_group(values, groups):
    """100 * (average rank - 0.5) / n among the finite values of the same group, one value at a time."""
    out = []
    for v, g in zip(values, groups):
        if not math.isfinite(v):
            out.append(math.nan)
            continue
        mine = [w for w, h in zip(values, groups) if h == g and math.isfinite(w)]
        below, tied = sum(w < v for w in mine), sum(w == v for w in mine)
        average_rank = below + (tied + 1) / 2  # ranks below + 1 ... below + tied, averaged
        out.append(100 * (average_rank - 0.5) / len(mine))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_percentile_in_group_matches_a_brute_force_loop(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    values = rng.integers(0, 12, n).astype(float) * rng.choice([1.0, 0.37])  # many ties
    values[rng.random(n) < 0.1] = np.nan
    values[rng.random(n) < 0.03] = np.inf  # unscored as well
    groups = rng.choice(np.array(["a.org", "b.org", "c.net", None], dtype=object), n)
    got = selection.percentile_in_group(values, groups)
    want = brute_percentile_in_group(values.tolist(), groups.tolist())
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(got)], np.array(want)[~np.isnan(want)], rtol=0, atol=1e-9)
    assert np.all((got[~np.isnan(got)] > 0) & (got[~np.isnan(got)] < 100))


def test_percentile_in_group_spreads_every_group_evenly_whatever_its_scale():
    values = np.array([1.0, 2, 3, 4, 1000, 2000, 3000, 4000, 7, np.nan])
    groups = np.array(["small"] * 4 + ["large"] * 4 + ["alone", "small"], dtype=object)
    pct = selection.percentile_in_group(values, groups)
    assert pct[:4].tolist() == pct[4:8].tolist() == [12.5, 37.5, 62.5, 87.5]
    assert pct[8] == 50 and math.isnan(pct[9])
    tied = selection.percentile_in_group(np.array([5.0, 5, 5, 9]), np.array(["g"] * 4, dtype=object))
    assert tied.tolist() == [37.5, 37.5, 37.5, 87.5]  # ranks 1-3 share rank 2


def test_the_normalised_scores_are_score_columns_of_every_rule():
    from typing import get_args
    from pipeline.config import ScoreColumn
    assert set(get_args(ScoreColumn)) == {"perplexity", "bits_per_byte", "nll_mean", "ccnet_perplexity",
                                          *selection.GROUP_PERCENTILES}
    assert selection.GROUP_PERCENTILES["bits_per_byte_pct_in_domain"] == ("bits_per_byte", "domain")
    band, = rules({"type": "band", "criterion": "medium", "rate": 0.5, "score": "perplexity_pct_in_host"})
    assert band.score == "perplexity_pct_in_host"
    assert selection.parse_rule("percentile:10:60:score=nll_mean_pct_in_domain")["score"] == "nll_mean_pct_in_domain"
    with pytest.raises(Exception, match="perplexity_pct_in_host"):
        rules({"type": "band", "criterion": "low", "rate": 0.5, "score": "perplexity_pct_in_language"})
    # A band over the normalised score takes about the same share of every host, however skewed its scale.
    rng = np.random.default_rng(0)
    hosts = np.repeat(np.array(["clean.org", "spam.net"], dtype=object), [300, 100])
    ppl = np.where(hosts == "clean.org", rng.lognormal(2, 0.5, 400), rng.lognormal(6, 0.5, 400))
    columns = {"perplexity": ppl, "host": hosts,
               "perplexity_pct_in_host": selection.percentile_in_group(ppl, hosts)}
    ids = np.array([f"{i:04d}" for i in range(400)], dtype=object)
    raw = selection.apply_rules(ids, columns, rules({"type": "band", "criterion": "low", "rate": 0.5}))
    assert raw["kept"][hosts == "spam.net"].sum() == 0  # the raw band drops the whole high-perplexity host
    normalised = selection.apply_rules(ids, columns, rules({"type": "band", "criterion": "low", "rate": 0.5,
                                                            "score": "perplexity_pct_in_host"}))
    assert normalised["kept"][hosts == "clean.org"].sum() == 150 and normalised["kept"][hosts == "spam.net"].sum() == 50
    np.testing.assert_array_equal(normalised["score"], columns["perplexity_pct_in_host"])
