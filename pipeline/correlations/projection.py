"""Projecting an estimate onto a sampling distribution over domains (Thrush et al., 2025).

The caps tau_i = (tokens_i / total tokens) / keep_fraction take a domain at most once. Both
projections return p with sum p = 1 and 0 <= p_i <= tau_i:

    linear  maximises <p, estimate>: domains in descending estimate order, each at its cap, until the
            mass reaches 1 (the last one fractional). Depends on the estimate's ranks only.
    l2      the Euclidean projection of the estimate: p = clip(estimate + c, 0, tau) with c found by
            bisection so that the sum is 1.

Worked example (the spec's): tau = [.2, .5, .9, .4, 1], estimate = [-.3, 4, 1, .9, 0] gives
linear = [0, .5, .5, 0, 0] and l2 = [0, .5, .3, .2, 0].
"""
from __future__ import annotations

import numpy as np


def caps(tokens, keep_fraction: float) -> np.ndarray:
    """tau_i = token share_i / keep_fraction."""
    tokens = np.asarray(tokens, dtype=np.float64)
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    if np.any(tokens < 0) or tokens.sum() <= 0:
        raise ValueError("token counts must be non-negative with a positive total")
    return tokens / tokens.sum() / keep_fraction


def _check(estimate, tau) -> tuple[np.ndarray, np.ndarray]:
    estimate, tau = np.asarray(estimate, dtype=np.float64), np.asarray(tau, dtype=np.float64)
    if estimate.ndim != 1 or tau.shape != estimate.shape:
        raise ValueError(f"estimate and tau must be vectors of one length, got {estimate.shape} and {tau.shape}")
    if np.any(tau < 0) or not np.all(np.isfinite(tau)) or not np.all(np.isfinite(estimate)):
        raise ValueError("tau must be finite and non-negative, the estimate finite")
    if tau.sum() < 1 - 1e-12:
        raise ValueError(f"the caps sum to {tau.sum():.6g} < 1: no distribution fits under them; raise "
                         "keep_fraction's complement (keep less) or add domains")
    return estimate, tau


def linear(estimate, tau) -> np.ndarray:
    estimate, tau = _check(estimate, tau)
    order = np.argsort(-estimate, kind="stable")              # ties: the earlier domain first
    filled = np.cumsum(tau[order])
    last = int(np.searchsorted(filled, 1.0 - 1e-12))          # the first domain that reaches mass 1
    p = np.zeros_like(estimate)
    p[order[:last]] = tau[order[:last]]
    p[order[last]] = 1.0 - (filled[last - 1] if last else 0.0)
    return p


def l2(estimate, tau, atol: float = 1e-12) -> np.ndarray:
    estimate, tau = _check(estimate, tau)
    lo, hi = -estimate.max(), (tau - estimate).max()          # sum is 0 at lo, sum(tau) >= 1 at hi
    while hi - lo > atol:
        mid = (lo + hi) / 2
        if np.clip(estimate + mid, 0, tau).sum() > 1:
            hi = mid
        else:
            lo = mid
    return np.clip(estimate + (lo + hi) / 2, 0, tau)
