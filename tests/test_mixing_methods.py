"""The mixing methods side by side on a synthetic problem whose losses follow a known law: each static
method's losses are the law's at its mixture, and Aioli and the fitted log-linear law beat stratified."""
import numpy as np
import pytest

from pipeline.mixing.aioli import AioliSettings
from pipeline.mixing.methods import compare, law_runs, stratified, token_share


class SaturatingLaw:
    """Group losses that fall, per step on mixture p, by lr * (A p)_i * (L_i - floor_i): diminishing returns."""

    def __init__(self, A, start, floor, lr=0.01):
        self.A, self.loss, self.floor, self.lr = np.asarray(A, float), np.array(start, float), np.array(floor), lr

    def train(self, p, steps):
        for _ in range(steps):
            self.loss = self.loss - self.lr * (self.A @ p) * (self.loss - self.floor)

    def evaluate(self):
        return self.loss.copy()


def _problem(seed=0, m=4):
    """Each group helps itself most, and group 0's data helps every group (broad, clean text): mixing
    matters, and the best mixture leans on group 0."""
    rng = np.random.default_rng(seed)
    A = rng.uniform(0, 0.3, (m, m)) + np.diag(rng.uniform(0.5, 3.0, m))
    A[:, 0] += 1.0
    return A, rng.uniform(4, 6, m), rng.uniform(1, 2, m)


def test_static_methods_train_their_mixture_and_the_adaptive_ones_beat_stratified():
    A, start, floor = _problem()
    make = lambda: SaturatingLaw(A, start, floor)  # noqa: E731
    tokens = np.array([500, 100, 300, 100])
    seen = []
    results = compare(make, 4, 400, tokens=tokens, aioli=AioliSettings(round_steps=50, lp_rounds=1, lp_steps=4,
                                                                        eta=1.0, one_hot_factor=0.625),
                      on_method=seen.append)
    by = {r.method: r for r in results}
    assert [r.method for r in seen] == ["stratified", "token_share", "log_linear", "aioli"]
    for method, p in (("stratified", np.full(4, 0.25)), ("token_share", tokens / tokens.sum())):
        reference = make()
        reference.train(p, 400)
        np.testing.assert_allclose(by[method].final, p)
        np.testing.assert_allclose(by[method].losses, reference.loss)
    assert by["aioli"].mean_loss < by["stratified"].mean_loss
    assert by["log_linear"].mean_loss < by["stratified"].mean_loss
    assert by["aioli"].final.argmax() == 0 and by["aioli"].final[0] > 0.5
    assert len(by["aioli"].trajectory) == 8 and by["log_linear"].extra["runs"]["steps"] == 100
    assert np.isclose(by["aioli"].average.sum(), 1) and np.isclose(by["log_linear"].final.sum(), 1)


def test_bad_requests_are_clear_errors():
    make = lambda: SaturatingLaw(np.eye(2), [3, 3], [1, 1])  # noqa: E731
    with pytest.raises(ValueError, match="unknown mixing method"):
        compare(make, 2, 10, methods=["doremi"])
    with pytest.raises(ValueError, match="token counts"):
        compare(make, 2, 10, methods=["token_share"])
    with pytest.raises(ValueError):
        token_share([0, 0])


def test_the_law_runs_start_uniform_and_are_seeded():
    runs = law_runs(3, 5, seed=2)
    np.testing.assert_allclose(runs[0], stratified(3))
    np.testing.assert_allclose(runs.sum(axis=1), 1)
    np.testing.assert_array_equal(runs, law_runs(3, 5, seed=2))
