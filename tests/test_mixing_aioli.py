"""Aioli's pieces against hand-computed cases, and the whole loop on a synthetic problem whose group losses
follow a known linear dynamic law: LearnParams recovers the law, and Aioli's mixture beats stratified."""
import numpy as np
import pytest

from pipeline.mixing.aioli import (AioliSettings, AioliState, desmooth, learn_params, normalise, run_aioli,
                                   smoothed_one_hot, smoothing_matrix, update_weights)


def test_smoothed_one_hot_and_its_matrix_by_hand():
    np.testing.assert_allclose(smoothed_one_hot(3, 1, 0.5), [0.25, 0.5, 0.25])
    np.testing.assert_allclose(smoothing_matrix(3, 0.5), [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]])
    with pytest.raises(ValueError):
        smoothed_one_hot(1, 0, 0.5)


def test_desmoothing_by_hand():
    # A = diag(1, 2, 0): probing group j with q_j lowers group i by A[i, i] * q_j[i].
    D = np.array([[0.5, 0.25, 0.25], [0.5, 1.0, 0.5], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(desmooth(D, 0.5), np.diag([1.0, 2.0, 0.0]), atol=1e-12)
    np.testing.assert_allclose(desmooth(D, 0.5, diagonal=True), np.diag([1.0, 2.0, 0.0]))
    np.testing.assert_array_equal(desmooth(D, 1.0), D)
    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 4))
    np.testing.assert_allclose(desmooth(A @ smoothing_matrix(4, 0.7).T, 0.7), A, atol=1e-12)


def test_normalisation_and_the_exponentiated_update_by_hand():
    A = np.array([[-1.0, 1.0], [0.0, 2.0]])
    np.testing.assert_allclose(normalise(A), [[0, 2 / 6], [1 / 6, 3 / 6]])
    np.testing.assert_allclose(normalise(np.array([[1.0, 3.0], [0.0, 0.0]])), [[0.25, 0.75], [0, 0]])
    s = AioliSettings(eta=1.0)
    first = update_weights(AioliState(np.array([5.0, 7.0])), A, s)      # round 0 restarts from ones
    np.testing.assert_allclose(first.weights, np.exp([1 / 6, 5 / 6]))
    second = update_weights(first, A, s)                                 # then multiplies
    np.testing.assert_allclose(second.weights, np.exp([2 / 6, 10 / 6]))
    e = AioliSettings(eta=1.0, ema=0.5)
    B = np.array([[1.0, 0.0], [1.0, 0.0]])                               # normalised: [[.5, 0], [.5, 0]]
    a = update_weights(AioliState(np.ones(2)), A, e)
    b = update_weights(a, B, e)                                          # A_bar = .5 * B/2 + .5 * A/6
    np.testing.assert_allclose(b.weights, np.exp(0.5 * np.array([1.0, 0.0]) + 0.5 * np.array([1 / 6, 5 / 6])))
    unnormalised = update_weights(AioliState(np.ones(2)), A, AioliSettings(eta=1.0, normalize=False))
    np.testing.assert_allclose(unnormalised.weights, np.exp([-1.0, 3.0]))


class LinearLaw:
    """Per-group validation losses that fall by lr * (A p) per step of training on p: the linear dynamic law."""

    def __init__(self, A, start, lr=0.01):
        self.A, self.loss, self.lr = np.asarray(A, float), np.asarray(start, float).copy(), lr
        self.steps = 0

    def train(self, p, steps):
        assert abs(p.sum() - 1) < 1e-9 and (p >= 0).all() and steps >= 0
        self.loss = self.loss - steps * self.lr * (self.A @ p)
        self.steps += steps

    def evaluate(self):
        return self.loss.copy()


def _law(seed=0, m=4):
    rng = np.random.default_rng(seed)
    A = rng.uniform(0, 1, (m, m)) * 0.2 + np.diag(rng.uniform(0.5, 2.0, m))   # each group helps itself most
    return A, rng.uniform(3, 5, m)


@pytest.mark.parametrize("g", [0.5, 0.625, 1.0])
def test_learn_params_recovers_the_law(g):
    A, start = _law()
    law = LinearLaw(A, start)
    s = AioliSettings(lp_rounds=3, lp_steps=5, one_hot_factor=g)
    learned, D, after = learn_params(law.train, law.evaluate, law.evaluate(), s, np.random.default_rng(1))
    np.testing.assert_allclose(learned, 5 * 0.01 * A, rtol=1e-9, atol=1e-12)   # S steps x lr x A
    assert law.steps == s.learn_steps(4) == 60 and np.allclose(after, law.loss)


def test_aioli_beats_stratified_on_the_law_and_spends_the_budget_exactly():
    A, start = _law(seed=3)
    settings = AioliSettings(round_steps=100, lp_rounds=2, lp_steps=4, eta=1.0, one_hot_factor=0.625)
    law = LinearLaw(A, start)
    run = run_aioli(law.train, law.evaluate, 4, 1000, settings, seed=0)
    assert run.steps == law.steps == 1000 and len(run.proportions) == len(run.matrices) == 10
    stratified = LinearLaw(A, start)
    stratified.train(np.full(4, 0.25), 1000)
    assert law.loss.sum() < stratified.loss.sum()
    best = int(np.argmax(A.sum(axis=0)))          # the group whose training lowers the summed loss most
    assert run.final[best] == run.final.max() and run.final[best] > run.proportions[0][best] > 0.25
    np.testing.assert_allclose(run.average, np.mean(run.proportions, axis=0))


def test_restricted_mode_trains_the_prior_first_and_counts_its_steps():
    A, start = _law()
    law, seen = LinearLaw(A, start), []
    settings = AioliSettings(round_steps=60, lp_rounds=1, lp_steps=2, prior=(0.7, 0.1, 0.1, 0.1), prior_steps=50)
    original = law.train
    law.train = lambda p, steps: (seen.append((p.copy(), steps)), original(p, steps))
    run = run_aioli(law.train, law.evaluate, 4, 230, settings)
    np.testing.assert_allclose(seen[0][0], [0.7, 0.1, 0.1, 0.1])
    assert seen[0][1] == 50 and run.steps == law.steps == 230 and sum(s for _, s in seen) == 230
    np.testing.assert_allclose(run.proportions[0], [0.7, 0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="prior"):
        AioliSettings(prior=(0.5, 0.5))
    # without a prior, restricted mode trains on uniform proportions, and never past the budget
    law, seen = LinearLaw(A, start), []
    law.train = lambda p, steps: (seen.append((p.copy(), steps)), LinearLaw.train(law, p, steps))
    run = run_aioli(law.train, law.evaluate, 4, 30, AioliSettings(round_steps=60, lp_rounds=1, lp_steps=2,
                                                                  prior_steps=50))
    np.testing.assert_allclose(seen[0][0], [0.25] * 4)
    assert [s for _, s in seen] == [30] and run.steps == law.steps == 30
    with pytest.raises(ValueError, match="round_steps"):
        run_aioli(law.train, law.evaluate, 4, 100, AioliSettings(round_steps=8, lp_rounds=1, lp_steps=2))


def test_steps_too_few_for_another_learnparams_go_to_the_last_proportions():
    A, start = _law(seed=3)
    settings = AioliSettings(round_steps=40, lp_rounds=1, lp_steps=4)     # LearnParams: 16 steps on 4 groups
    law, seen = LinearLaw(A, start), []
    original = law.train
    law.train = lambda p, steps: (seen.append((p.copy(), steps)), original(p, steps))
    run = run_aioli(law.train, law.evaluate, 4, 95, settings)             # rounds end at 40, 80; 15 left < 16
    assert run.steps == law.steps == 95 and len(run.proportions) == 2
    np.testing.assert_allclose(seen[-1][0], run.final)
    assert seen[-1][1] == 15
    tiny = LinearLaw(A, start)
    short = run_aioli(tiny.train, tiny.evaluate, 4, 10, settings)         # not one LearnParams: stratified
    assert short.steps == tiny.steps == 10 and not short.matrices
    np.testing.assert_allclose(short.final, np.full(4, 0.25))
