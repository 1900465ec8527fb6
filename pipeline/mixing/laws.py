"""The static log-linear mixing law (Aioli's offline baseline): fitted on a few small runs at chosen
mixtures, then minimised over the simplex.

    L_i(p) = c_i + b_i * exp(-sum_j A_ij p_j)

Each group's (c_i, b_i, A_i) is fitted separately by Levenberg-Marquardt on the runs' final losses
(m + 2 parameters from n runs: n >= m + 2 runs are needed). The mixture minimising the predicted mean
loss is found by exponentiated gradient (mirror descent on the simplex), from several starts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LogLinearLaw:
    c: np.ndarray       # (m,)
    b: np.ndarray       # (m,)
    A: np.ndarray       # (m, m)

    def losses(self, p: np.ndarray) -> np.ndarray:
        """Predicted per-group losses at mixture(s) p: (m,) -> (m,), (n, m) -> (n, m)."""
        p = np.asarray(p, dtype=np.float64)
        return self.c + self.b * np.exp(-(p @ self.A.T))

    def mean_loss(self, p: np.ndarray) -> np.ndarray:
        return self.losses(p).mean(axis=-1)


def _fit_group(P: np.ndarray, y: np.ndarray, iterations: int, seed: int) -> np.ndarray:
    """[c, b, A_i...] minimising sum_k (c + b exp(-A_i . p_k) - y_k)^2 (Levenberg-Marquardt)."""
    n, m = P.shape
    rng = np.random.default_rng(seed)
    theta = np.concatenate([[y.min() - 0.1 * np.ptp(y) - 1e-3, np.ptp(y) + 1e-3], rng.uniform(0.5, 1.5, m)])

    def residual(t):
        return t[0] + t[1] * np.exp(-P @ t[2:]) - y

    damping, r = 1e-3, residual(theta)
    for _ in range(iterations):
        e = np.exp(-P @ theta[2:])
        J = np.column_stack([np.ones(n), e, -theta[1] * e[:, None] * P])
        g, H = J.T @ r, J.T @ J
        step = np.linalg.solve(H + damping * np.diag(np.diag(H) + 1e-12), -g)
        trial = theta + step
        r_trial = residual(trial)
        if r_trial @ r_trial < r @ r:
            theta, r, damping = trial, r_trial, max(damping / 3, 1e-12)
            if np.abs(step).max() < 1e-12:
                break
        else:
            damping *= 4
            if damping > 1e12:
                break
    return theta


def fit_log_linear(mixtures, losses, iterations: int = 500, seed: int = 0) -> LogLinearLaw:
    """The law fitted to runs at `mixtures` (n x m) with final per-group `losses` (n x m)."""
    P, Y = np.asarray(mixtures, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    n, m = P.shape
    if Y.shape != (n, m):
        raise ValueError(f"expected losses of shape {(n, m)}, got {Y.shape}")
    if n < m + 2:
        raise ValueError(f"fitting a log-linear law on {m} groups needs at least {m + 2} runs, got {n}")
    thetas = np.stack([_fit_group(P, Y[:, i], iterations, seed + i) for i in range(m)])
    return LogLinearLaw(thetas[:, 0], thetas[:, 1], thetas[:, 2:])


def minimise(law: LogLinearLaw, steps: int = 2000, lr: float = 0.5, starts: int = 8, seed: int = 0) -> np.ndarray:
    """The mixture with the lowest predicted mean loss: exponentiated gradient from the uniform mixture and
    `starts - 1` random ones, the best end point."""
    m = len(law.c)
    rng = np.random.default_rng(seed)
    best, best_loss = None, np.inf
    for k in range(starts):
        p = np.full(m, 1 / m) if k == 0 else rng.dirichlet(np.ones(m))
        for _ in range(steps):
            grad = -(law.b * np.exp(-(law.A @ p))) @ law.A / m    # d mean loss / d p
            p = p * np.exp(-lr * grad / (np.abs(grad).max() + 1e-12))
            p /= p.sum()
        loss = float(law.mean_loss(p))
        if loss < best_loss:
            best, best_loss = p, loss
    return best
