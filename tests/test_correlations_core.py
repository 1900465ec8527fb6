"""The correlation estimators against brute-force loops over model pairs and the single-index property,
and the projections against the spec's worked example and a linear program."""
import numpy as np
import pytest

from pipeline.correlations import estimators, projection


def _pairs(X, y, term):
    n = X.shape[0]
    total = np.zeros(X.shape[1])
    for k in range(n):
        for g in range(k + 1, n):
            total += np.sign(y[g] - y[k]) * term(X[g], X[k])
    return 2 * total / (n * (n - 1))


@pytest.mark.parametrize("seed", range(5))
def test_estimators_match_brute_force_pair_loops(seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(3, 30)), int(rng.integers(1, 40))
    X, y = rng.random((n, d)), rng.random(n)
    cdf = np.argsort(np.argsort(X, axis=0), axis=0) / n + 1 / n
    np.testing.assert_allclose(estimators.sign(X, y), _pairs(X, y, lambda a, b: a - b), atol=1e-12)
    np.testing.assert_allclose(estimators.sign_sign(X, y, block=7), _pairs(X, y, lambda a, b: np.sign(a - b)),
                               atol=1e-12)
    rows = {tuple(r): i for i, r in enumerate(X)}
    np.testing.assert_allclose(estimators.sign_cdf(X, y),
                               _pairs(X, y, lambda a, b: cdf[rows[tuple(a)]] - cdf[rows[tuple(b)]]), atol=1e-12)
    np.testing.assert_allclose(estimators.product(X, y), [np.mean(X[:, j] * y) for j in range(d)], atol=1e-12)
    from scipy.stats import spearmanr
    np.testing.assert_allclose(estimators.spearmanr(X, y), [spearmanr(X[:, j], y).statistic for j in range(d)],
                               atol=1e-12)


def test_the_sign_pattern_of_a_single_index_model_is_recovered():
    """y = f(<theta, x>) + noise with f increasing: each estimate has theta's signs, and the rank
    estimators order the texts as theta does."""
    rng = np.random.default_rng(0)
    theta = np.array([3.0, -2.0, 1.0, -0.5, 0.0, 2.5, -3.0, 0.7])
    X = rng.normal(size=(3000, len(theta)))
    y = 1 / (1 + np.exp(-(X @ theta))) + rng.normal(0, 0.05, 3000)
    nonzero = theta != 0
    for method in estimators.ESTIMATORS:
        est = estimators.estimate(X, y, method)
        assert np.array_equal(np.sign(est[nonzero]), np.sign(theta[nonzero])), method
        assert abs(est[~nonzero][0]) < 0.1 * np.abs(est).max(), method
    for method in ("sign_cdf", "sign_sign", "spearmanr", "sign"):
        est = estimators.estimate(X, y, method)
        assert np.array_equal(np.argsort(est), np.argsort(theta)), method


def test_double_centering_and_clear_errors():
    L = np.arange(12.0).reshape(3, 4) ** 1.5
    C = estimators.double_center(L)
    np.testing.assert_allclose(C.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(C.mean(axis=0), 0, atol=1e-12)
    with pytest.raises(ValueError, match="one error per model"):
        estimators.sign_cdf(np.ones((3, 2)), np.ones(4))
    with pytest.raises(ValueError, match="finite"):
        estimators.sign(np.array([[1.0, np.nan], [2.0, 1.0]]), np.ones(2))
    with pytest.raises(ValueError, match="unknown estimator"):
        estimators.estimate(np.ones((3, 2)), np.ones(3), "pearson")


def test_the_worked_example():
    tau, est = [.2, .5, .9, .4, 1], [-.3, 4, 1, .9, 0]
    np.testing.assert_allclose(projection.linear(est, tau), [0, .5, .5, 0, 0], atol=1e-12)
    np.testing.assert_allclose(projection.l2(est, tau), [0, .5, .3, .2, 0], atol=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_projections_against_a_linear_program_and_the_kkt_conditions(seed):
    from scipy.optimize import linprog
    rng = np.random.default_rng(seed)
    d = int(rng.integers(2, 30))
    est = rng.normal(size=d)
    if seed % 2:
        est = np.round(est, 0)                           # many ties
    tau = projection.caps(rng.integers(1, 100, d), keep_fraction=float(rng.uniform(0.05, 1)))
    p = projection.linear(est, tau)
    assert p.sum() == pytest.approx(1) and np.all(p >= 0) and np.all(p <= tau + 1e-12)
    best = linprog(-est, A_eq=np.ones((1, d)), b_eq=[1], bounds=list(zip(np.zeros(d), tau)))
    assert est @ p == pytest.approx(-best.fun, abs=1e-9)
    q = projection.l2(est, tau)
    assert q.sum() == pytest.approx(1, abs=1e-9) and np.all(q >= 0) and np.all(q <= tau + 1e-12)
    # KKT of min |q - est|^2 on the capped simplex: q = clip(est + c, 0, tau) for one c
    free = (q > 1e-9) & (q < tau - 1e-9)
    if free.any():
        c = (q - est)[free]
        assert np.ptp(c) < 1e-8
        np.testing.assert_allclose(q, np.clip(est + c[0], 0, tau), atol=1e-8)
    ties = est[:, None] == est[None, :]                  # tied estimates with equal caps get equal mass
    same_cap = np.isclose(tau[:, None], tau[None, :])
    assert np.isclose(q[:, None], q[None, :], atol=1e-9)[ties & same_cap].all()


def test_caps_that_cannot_hold_a_distribution_are_a_clear_error():
    with pytest.raises(ValueError, match="sum to 0.6 < 1"):
        projection.linear([1.0, 2.0], [0.3, 0.3])
    with pytest.raises(ValueError, match="sum to 0.6 < 1"):
        projection.l2([1.0, 2.0], [0.3, 0.3])
    np.testing.assert_allclose(projection.caps([30, 10], keep_fraction=0.5), [1.5, 0.5])
    with pytest.raises(ValueError, match="keep_fraction"):
        projection.caps([1, 2], keep_fraction=0)
    np.testing.assert_allclose(projection.linear([5.0, 1.0], [1.0, 1.0]), [1.0, 0.0])   # one cap fills it
