"""Aioli (Chen et al., ICLR 2025): online data mixing under a linear dynamic mixing law, pure numpy.

m groups, proportions p on the simplex. The law: training a round on p lowers group i's validation loss
by (A p)_i. `learn_params` estimates A from short training sweeps: for each group j in a random order
(`lp_rounds` times), train `lp_steps` steps on the smoothed one-hot mixture q_j (g on j, (1-g)/(m-1)
elsewhere) and record how much every group's loss fell, D[:, j] += L_prev - L_new; D is averaged over
the rounds and, with g < 1, de-smoothed row by row (A[i] = Q^-1 D[i], row j of Q being q_j). The outer
loop (`run_aioli`) then normalises A (shifted to be non-negative, scaled to sum 1) and takes an
exponentiated-gradient step on the weights, w <- w * exp(eta * column sums of A) (with `ema`: w =
exp(eta * column sums of the running average of A)), and trains the rest of the round on p = w / sum(w).

Training is a callback, so the same loop drives the proxy trainer (`pipeline.train`) and, in the tests, a
synthetic problem whose losses follow a known law. Faithful to the reference trainer
(HazyResearch/aioli, trainer/aioli_trainer.py), including that the weights restart from ones after a
prior (restricted mode: the prior only shapes the model the first round starts from).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Train = Callable[[np.ndarray, int], None]    # train(proportions, steps)
Evaluate = Callable[[], np.ndarray]          # per-group validation losses now


@dataclass(frozen=True)
class AioliSettings:
    """The reference trainer's hyper-parameters (reported for 160M models: lp_rounds 2-4, lp_steps 4-10,
    eta 0.1-1, one_hot_factor 0.5-0.75); the defaults are the mix stage's (pipeline.config.AioliConfig)."""
    round_steps: int = 200          # U: steps per round, LearnParams' sweeps included
    lp_rounds: int = 8              # K: sweeps over the groups per LearnParams
    lp_steps: int = 1               # S: steps on each smoothed one-hot mixture
    eta: float = 4.0                # step size of the exponentiated-gradient update
    one_hot_factor: float = 0.5     # g: the weight of the swept group (1: pure one-hot, no de-smoothing)
    ema: float | None = None        # average A over rounds (None: multiply the weights every round)
    normalize: bool = True          # shift A to be non-negative and scale it to sum 1 before the update
    diagonal: bool = False          # learn only A's diagonal (D[i, i] / g)
    prior: tuple[float, ...] | None = None   # restricted mode: train on this mixture (None: uniform) first ...
    prior_steps: int = 0            # ... for this many steps (at most the budget)

    def __post_init__(self) -> None:
        if not 0 < self.one_hot_factor <= 1:
            raise ValueError(f"one_hot_factor must be in (0, 1], got {self.one_hot_factor}")
        if self.lp_rounds < 1 or self.lp_steps < 1 or self.round_steps < 1:
            raise ValueError("round_steps, lp_rounds and lp_steps must be >= 1")
        if self.ema is not None and not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if self.prior is not None and self.prior_steps == 0:
            raise ValueError("a prior needs prior_steps > 0 (restricted mode)")

    def learn_steps(self, m: int) -> int:
        """Steps LearnParams takes out of each round."""
        return self.lp_rounds * self.lp_steps * m


def smoothed_one_hot(m: int, j: int, g: float) -> np.ndarray:
    """The mixture LearnParams trains on for group j: g on j, (1 - g) / (m - 1) on every other group."""
    if m < 2:
        raise ValueError(f"mixing needs at least 2 groups, got {m}")
    q = np.full(m, (1 - g) / (m - 1))
    q[j] = g
    return q


def smoothing_matrix(m: int, g: float) -> np.ndarray:
    """Q: row j is the mixture used to probe group j."""
    return np.stack([smoothed_one_hot(m, j, g) for j in range(m)])


def desmooth(D: np.ndarray, g: float, diagonal: bool = False) -> np.ndarray:
    """A from the measured loss drops D (D[i, j]: group i's drop while training on mixture j): the A with
    D[i] = Q A[i] for every row i; with `diagonal`, only A[i, i] = D[i, i] / g. g = 1 leaves D as it is."""
    D = np.asarray(D, dtype=np.float64)
    m = len(D)
    if g == 1:
        return D.copy()
    if diagonal:
        return np.diag(np.diag(D) / g)
    return np.linalg.solve(smoothing_matrix(m, g), D.T).T


def normalise(A: np.ndarray) -> np.ndarray:
    """A shifted by its minimum when that is negative, then divided by its sum."""
    A = np.asarray(A, dtype=np.float64).copy()
    if A.min() < 0:
        A -= A.min()
    total = A.sum()
    return A / total if total > 0 else np.full_like(A, 1 / A.size)


@dataclass
class AioliState:
    weights: np.ndarray
    ema_A: np.ndarray | None = None
    round: int = 0


def update_weights(state: AioliState, A: np.ndarray, settings: AioliSettings) -> AioliState:
    """One exponentiated-gradient step (the reference's, round 0 restarting from ones)."""
    A = normalise(A) if settings.normalize else np.asarray(A, dtype=np.float64)
    ones = np.ones(len(A))
    if settings.ema is not None:
        ema_A = A if state.ema_A is None else (1 - settings.ema) * A + settings.ema * state.ema_A
        weights = ones * np.exp(settings.eta * ema_A.sum(axis=0))
        return AioliState(weights, ema_A, state.round + 1)
    base = ones if state.round == 0 else state.weights
    return AioliState(base * np.exp(settings.eta * A.sum(axis=0)), None, state.round + 1)


def proportions(weights: np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return w / w.sum()


def learn_params(train: Train, evaluate: Evaluate, loss_now: np.ndarray, settings: AioliSettings,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, D, the losses after the sweeps): `lp_rounds` random-order sweeps of `lp_steps` steps on each
    group's smoothed one-hot mixture, starting from the losses `loss_now`."""
    m = len(loss_now)
    previous = np.asarray(loss_now, dtype=np.float64)
    D = np.zeros((m, m))
    for j in np.concatenate([rng.permutation(m) for _ in range(settings.lp_rounds)]):
        train(smoothed_one_hot(m, int(j), settings.one_hot_factor), settings.lp_steps)
        new = np.asarray(evaluate(), dtype=np.float64)
        D[:, j] += previous - new
        previous = new
    D /= settings.lp_rounds
    return desmooth(D, settings.one_hot_factor, settings.diagonal), D, previous


@dataclass
class AioliRun:
    """What a run did: the proportions of each round, the learned A, the losses before each round."""
    proportions: list[np.ndarray] = field(default_factory=list)
    matrices: list[np.ndarray] = field(default_factory=list)
    losses: list[np.ndarray] = field(default_factory=list)
    steps: int = 0

    @property
    def final(self) -> np.ndarray:
        return self.proportions[-1]

    @property
    def average(self) -> np.ndarray:
        """Time-averaged proportions, each round's weighted equally."""
        return np.mean(self.proportions, axis=0)


def run_aioli(train: Train, evaluate: Evaluate, m: int, total_steps: int, settings: AioliSettings,
              seed: int = 0, on_round: Callable[[AioliRun], None] | None = None) -> AioliRun:
    """Aioli for `total_steps` training steps (LearnParams' included): rounds of LearnParams then the rest
    of `round_steps` on the updated proportions; the last round is cut at the budget, and steps too few for
    another LearnParams continue on the last proportions (uniform before the first round)."""
    learn = settings.learn_steps(m)
    if settings.round_steps <= learn:
        raise ValueError(f"round_steps ({settings.round_steps}) must exceed LearnParams' {learn} steps "
                         f"(lp_rounds x lp_steps x {m} groups)")
    rng = np.random.default_rng(seed)
    run = AioliRun()
    if settings.prior_steps:
        prior = proportions(np.asarray(settings.prior if settings.prior is not None else np.ones(m), dtype=np.float64))
        if len(prior) != m:
            raise ValueError(f"the prior has {len(prior)} proportions for {m} groups")
        steps = min(settings.prior_steps, total_steps)
        train(prior, steps)
        run.steps += steps
        run.proportions.append(prior)
    state = AioliState(np.ones(m))
    while run.steps + learn < total_steps:
        loss = np.asarray(evaluate(), dtype=np.float64)
        A, _, _ = learn_params(train, evaluate, loss, settings, rng)
        run.steps += learn
        state = update_weights(state, A, settings)
        p = proportions(state.weights)
        rest = min(settings.round_steps - learn, total_steps - run.steps)
        train(p, rest)
        run.steps += rest
        run.losses.append(loss)
        run.matrices.append(A)
        run.proportions.append(p)
        if on_round:
            on_round(run)
    if run.steps < total_steps:   # too few steps left for LearnParams: they go to the current proportions
        p = proportions(state.weights)
        train(p, total_steps - run.steps)
        run.steps = total_steps
        if not run.proportions:
            run.proportions.append(p)
    return run
