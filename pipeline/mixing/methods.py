"""Mixing methods side by side, each training a fresh proxy for the same number of steps: stratified
(uniform over groups), token share (the groups' natural proportions), the fitted static log-linear law
(`laws.py`: small runs at random mixtures, the law fitted to their losses, its minimiser), and Aioli.

A proxy is anything with `train(proportions, steps)` and `evaluate() -> per-group losses`; `make_proxy()`
builds a fresh one (the same seed and initial weights every time), so the methods differ only in their
mixtures. The law's small runs are extra training, reported apart (`law_steps`), not charged to its proxy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from pipeline.mixing.aioli import AioliSettings, run_aioli
from pipeline.mixing.laws import LogLinearLaw, fit_log_linear, minimise

METHODS = ("stratified", "token_share", "log_linear", "aioli")


class Proxy(Protocol):
    def train(self, proportions: np.ndarray, steps: int) -> None: ...

    def evaluate(self) -> np.ndarray: ...


@dataclass
class MethodResult:
    method: str
    final: np.ndarray                     # the proportions trained on at the end
    average: np.ndarray                   # time-averaged proportions
    losses: np.ndarray                    # per-group validation losses after training
    trajectory: list[np.ndarray] = field(default_factory=list)   # proportions per round (Aioli) or one
    extra: dict = field(default_factory=dict)

    @property
    def mean_loss(self) -> float:
        return float(np.mean(self.losses))


def stratified(m: int) -> np.ndarray:
    return np.full(m, 1.0 / m)


def token_share(tokens) -> np.ndarray:
    tokens = np.asarray(tokens, dtype=np.float64)
    if tokens.sum() <= 0 or np.any(tokens < 0):
        raise ValueError(f"token counts must be non-negative with a positive sum, got {tokens}")
    return tokens / tokens.sum()


def law_runs(m: int, n: int, seed: int) -> np.ndarray:
    """The mixtures of the law's small runs: uniform, then seeded Dirichlet(1) draws."""
    rng = np.random.default_rng(seed)
    return np.vstack([stratified(m), rng.dirichlet(np.ones(m), n - 1)]) if n > 1 else stratified(m)[None]


def fit_law(make_proxy: Callable[[], Proxy], m: int, runs: int, steps: int, seed: int) -> tuple[LogLinearLaw, np.ndarray, np.ndarray]:
    """(the law, the runs' mixtures, their final losses): `runs` fresh proxies, `steps` steps each."""
    mixtures = law_runs(m, runs, seed)
    losses = []
    for p in mixtures:
        proxy = make_proxy()
        proxy.train(p, steps)
        losses.append(np.asarray(proxy.evaluate(), dtype=np.float64))
    return fit_log_linear(mixtures, np.array(losses), seed=seed), mixtures, np.array(losses)


def static(method: str, make_proxy: Callable[[], Proxy], p: np.ndarray, total_steps: int, **extra) -> MethodResult:
    proxy = make_proxy()
    proxy.train(p, total_steps)
    return MethodResult(method, p, p, np.asarray(proxy.evaluate(), dtype=np.float64), [p], extra)


def compare(make_proxy: Callable[[], Proxy], m: int, total_steps: int, methods=METHODS, tokens=None,
            aioli: AioliSettings = AioliSettings(), law_run_count: int | None = None, law_steps: int | None = None,
            seed: int = 0, on_method: Callable[[MethodResult], None] | None = None) -> list[MethodResult]:
    """Each of `methods` on a fresh proxy for `total_steps` steps. token_share needs `tokens` (per group);
    log_linear fits on `law_run_count` runs (default m + 3) of `law_steps` steps (default total / 4)."""
    unknown = [x for x in methods if x not in METHODS]
    if unknown:
        raise ValueError(f"unknown mixing method(s) {unknown}: choose among {', '.join(METHODS)}")
    results = []
    for method in methods:
        if method == "stratified":
            result = static(method, make_proxy, stratified(m), total_steps)
        elif method == "token_share":
            if tokens is None:
                raise ValueError("token_share needs the groups' token counts")
            result = static(method, make_proxy, token_share(tokens), total_steps)
        elif method == "log_linear":
            runs, steps = law_run_count or m + 3, law_steps or max(1, total_steps // 4)
            law, mixtures, run_losses = fit_law(make_proxy, m, runs, steps, seed)
            result = static(method, make_proxy, minimise(law, seed=seed), total_steps,
                            law={"c": law.c.tolist(), "b": law.b.tolist(), "A": law.A.tolist()},
                            runs={"mixtures": mixtures.tolist(), "losses": run_losses.tolist(), "steps": steps})
        else:
            proxy = make_proxy()
            run = run_aioli(proxy.train, proxy.evaluate, m, total_steps, aioli, seed=seed)
            result = MethodResult(method, run.final, run.average, np.asarray(proxy.evaluate(), dtype=np.float64),
                                  list(run.proportions), {"matrices": [a.tolist() for a in run.matrices]})
        results.append(result)
        if on_method:
            on_method(result)
    return results
