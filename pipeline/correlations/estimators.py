"""Estimators of how each text's loss goes with benchmark error across models (Thrush et al., 2025).

Every estimator maps X (N models x D texts, bits per byte) and y (N benchmark errors, 1 - accuracy)
to a D-vector; larger means "lower loss on this text goes with lower error": good text. The U-statistics
average over model pairs k < g with weight 2 / (N (N - 1)):

    sign_cdf   sign(y_g - y_k) * (F_j(x_gj) - F_j(x_kj)),  F_j = rank within column j / N (the paper's)
    sign       sign(y_g - y_k) * (x_gj - x_kj)
    sign_sign  sign(y_g - y_k) * sign(x_gj - x_kj)
    product    mean over k of x_kj * y_k (not a pair statistic)
    spearmanr  Spearman's rank correlation of column j with y: 1 - 6 sum d^2 / (N (N^2 - 1))

Ranks are ordinal (1..N, ties broken by position), as the authors' implementation ranks. No Python
loop over model pairs: for a pair statistic linear in x, sum_{k<g} s_kg (x_g - x_k) = sum_g c_g x_g with
c_g = sum_k sign(y_g - y_k), so it is one matrix product; sign_sign works on column blocks.
"""
from __future__ import annotations

import numpy as np

ESTIMATORS = ("sign_cdf", "sign", "sign_sign", "product", "spearmanr")


def _check(X, y) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be a models x texts matrix, got {X.ndim} dimension(s)")
    if y.ndim != 1 or len(y) != X.shape[0]:
        raise ValueError(f"y must hold one error per model: {X.shape[0]} models, got shape {y.shape}")
    if X.shape[0] < 2:
        raise ValueError(f"at least 2 models are needed, got {X.shape[0]}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("X and y must be finite: drop texts with a missing loss and models without an error")
    return X, y


def ordinal_ranks(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Ranks 1..n along `axis`, ties broken by position."""
    return np.argsort(np.argsort(values, axis=axis, kind="stable"), axis=axis, kind="stable") + 1


def _pair_weights(y: np.ndarray) -> np.ndarray:
    """c_g = sum_k sign(y_g - y_k), scaled by 2 / (N (N - 1)): the pair sum as weights on the models."""
    n = len(y)
    return np.sign(y[:, None] - y[None, :]).sum(axis=1) * (2.0 / (n * (n - 1)))


def sign(X, y) -> np.ndarray:
    X, y = _check(X, y)
    return _pair_weights(y) @ X


def sign_cdf(X, y) -> np.ndarray:
    X, y = _check(X, y)
    return _pair_weights(y) @ (ordinal_ranks(X) / X.shape[0])


def sign_sign(X, y, block: int = 64) -> np.ndarray:
    X, y = _check(X, y)
    n = X.shape[0]
    upper = np.triu(np.sign(y[None, :] - y[:, None]), k=1)   # [k, g] = sign(y_g - y_k) for k < g
    out = np.empty(X.shape[1])
    for start in range(0, X.shape[1], block):                # N x N x block at a time
        cols = X[:, start:start + block]
        signs = np.sign(cols[None, :, :] - cols[:, None, :])  # [k, g, j] = sign(x_gj - x_kj)
        out[start:start + block] = np.einsum("kg,kgj->j", upper, signs)
    return out * (2.0 / (n * (n - 1)))


def product(X, y) -> np.ndarray:
    X, y = _check(X, y)
    return y @ X / X.shape[0]


def spearmanr(X, y) -> np.ndarray:
    X, y = _check(X, y)
    n = X.shape[0]
    d = ordinal_ranks(X) - ordinal_ranks(y)[:, None]
    return 1 - 6 * (d.astype(np.float64) ** 2).sum(axis=0) / (n * (n * n - 1))


def double_center(log_likelihoods) -> np.ndarray:
    """Each model's mean taken out, then each text's (what is left is how a model does on a text
    beyond its overall strength and the text's overall difficulty)."""
    L = np.asarray(log_likelihoods, dtype=np.float64)
    L = L - L.mean(axis=1, keepdims=True)
    return L - L.mean(axis=0, keepdims=True)


def estimate(X, y, method: str = "sign_cdf", center: bool = False) -> np.ndarray:
    """The named estimator (ESTIMATORS) of X and y; `center` double-centres X first."""
    if method not in ESTIMATORS:
        raise ValueError(f"unknown estimator {method!r}: choose one of {', '.join(ESTIMATORS)}")
    return globals()[method](double_center(X) if center else X, y)
