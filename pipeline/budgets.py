"""Keeping documents to a size: the highest scores up to a token budget, and the factor that scales keep
probabilities to an expected rate. Shared by the selection rules, the correlate stage's page selector and
the rating recipes."""
from __future__ import annotations

import math

import numpy as np


def keep_by_score(scores: np.ndarray, tokens: np.ndarray, token_budget: int | None = None,
                  keep_fraction: float | None = None) -> np.ndarray:
    """Keep pages in descending score (ties by position) until `token_budget` tokens or `keep_fraction`
    of the tokens are kept; the page that crosses the budget is kept."""
    if (token_budget is None) == (keep_fraction is None):
        raise ValueError("give exactly one of token_budget and keep_fraction")
    tokens = np.nan_to_num(np.asarray(tokens, dtype=np.float64))
    if not len(tokens):
        return np.zeros(0, dtype=bool)
    budget = token_budget if token_budget is not None else keep_fraction * tokens.sum()
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    before = np.concatenate([[0.0], np.cumsum(tokens[order])[:-1]])   # tokens kept before each page
    keep = np.zeros(len(tokens), dtype=bool)
    keep[order[before < budget]] = True
    return keep


def solve_keep_factor(weights: np.ndarray, rate: float) -> float:
    """The factor c with mean(min(1, c * w)) = rate: BERTIN's factor (stepwise) or weight (gaussian)
    recomputed so the expected kept fraction is the requested selection rate.

    The mean is piecewise linear and non-decreasing in c. With the weights sorted in decreasing
    order and the first k saturated (c * w_i >= 1), it equals (k + c * sum_{i > k} w_i) / n, so
    the solution is the c = (n * rate - k) / sum_{i > k} w_i that is consistent with its k.
    Infinite weights are always kept; zero weights never are.
    """
    w = np.sort(np.asarray(weights, dtype=float))[::-1]
    n = len(w)
    if n == 0 or not 0 < rate <= 1:
        raise ValueError(f"need documents and a rate in (0, 1], got n={n}, rate={rate}")
    reachable = np.count_nonzero(w > 0) / n
    if rate > reachable + 1e-12:
        raise ValueError(f"rate {rate} is out of reach: only {reachable:.4f} of the documents have a "
                         f"non-zero keep weight")
    n_inf = int(np.count_nonzero(np.isinf(w)))
    if n_inf >= n * rate:
        return math.inf if n_inf == n else 0.0  # infinite weights alone fill the rate
    tail = np.concatenate([np.cumsum(w[::-1])[::-1], [0.0]])  # tail[k] = sum_{i >= k} w_i
    for k in range(n_inf, n):
        if tail[k] <= 0:
            break
        c = (n * rate - k) / tail[k]
        if (k == n_inf or c * w[k - 1] >= 1) and c * w[k] <= 1:
            return float(c)
    return math.inf  # every non-zero weight saturated
