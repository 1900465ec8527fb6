"""DataMan's selection recipes over ratings, as pure functions of arrays (Peng et al., 2025). Each
returns a keep mask over the documents given; sizes are in tokens, budgets are token budgets.

    overall_level     documents whose Overall Score is `level`, taken uniformly (by seeded keys) up
                      to the budget
    top_k             the highest scores (one criterion, or `quality_mix`: the sum of all 14) up to
                      the budget; the document that crosses it is kept
    multi_domain      the budget split across sources by their token share, then inside each source
                      across rater domains by their share, then top_k inside each cell
    temperature       each document kept with probability min(1, c * exp(score / tau)), c solved so
                      the expected kept share of documents is `rate` (QuRating-style; tau = 2)
"""
from __future__ import annotations

import numpy as np

from pipeline.budgets import keep_by_score, solve_keep_factor


def quality_mix(scores) -> np.ndarray:
    """The sum of the 14 ratings of each document (an n x 14 array)."""
    return np.asarray(scores, dtype=np.float64).sum(axis=1)


def top_k(values, tokens, token_budget: float) -> np.ndarray:
    return keep_by_score(values, tokens, token_budget=token_budget)


def overall_level(overall, level: int, tokens, keys, token_budget: float | None = None) -> np.ndarray:
    """Documents rated `level`, in ascending `keys` (seeded uniforms: a uniform sample) until the budget."""
    overall, keys = np.asarray(overall), np.asarray(keys, dtype=np.float64)
    match = overall == level
    if token_budget is None:
        return match
    return match & keep_by_score(np.where(match, -keys, -np.inf), np.where(match, tokens, 0), token_budget=token_budget)


def multi_domain(sources, domains, values, tokens, token_budget: float) -> np.ndarray:
    """Quotas by source token share, then by rater-domain share inside each source; top_k in each cell."""
    sources, domains = np.asarray(sources, dtype=object), np.asarray(domains, dtype=object)
    values, tokens = np.asarray(values, dtype=np.float64), np.asarray(tokens, dtype=np.float64)
    total = tokens.sum()
    keep = np.zeros(len(values), dtype=bool)
    for source in sorted(set(sources.tolist()), key=str):
        in_source = sources == source
        source_budget = token_budget * tokens[in_source].sum() / total if total else 0.0
        for domain in sorted(set(domains[in_source].tolist()), key=str):
            cell = np.flatnonzero(in_source & (domains == domain))
            share = tokens[cell].sum() / tokens[in_source].sum() if tokens[in_source].sum() else 0.0
            if source_budget * share > 0:
                keep[cell] = keep_by_score(values[cell], tokens[cell], token_budget=source_budget * share)
    return keep


def temperature_probability(values, tau: float, rate: float) -> np.ndarray:
    """min(1, c * exp(score / tau)) with mean `rate` (scores shifted by their maximum first, which
    changes c only, so exp never overflows)."""
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    values = np.asarray(values, dtype=np.float64)
    weights = np.exp((values - values.max()) / tau)
    return np.minimum(1.0, solve_keep_factor(weights, rate) * weights)


def temperature(values, tau: float, rate: float, uniforms) -> np.ndarray:
    """Keep each document whose seeded uniform falls below its temperature probability."""
    return np.asarray(uniforms, dtype=np.float64) < temperature_probability(values, tau, rate)
