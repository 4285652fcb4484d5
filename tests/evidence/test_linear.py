"""Bayesian linear regression: exact evidence, agreement with scikit-learn, ARD, hyperpriors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.base import clone
from sklearn.datasets import load_diabetes
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import ARDRegression, BayesianRidge
from threadpoolctl import threadpool_limits

from twiddle import InvalidParameterError
from twiddle.evidence import (
    BayesianLinearRegression,
    ConvergenceWarning,
    Gamma,
    LogNormal,
    Normal,
    infer,
    linear_evidence,
)

from ._models import mc_z


@pytest.fixture(scope="module")
def diabetes():
    return load_diabetes(return_X_y=True)


def mvn_evidence(X, y, alpha, lam, fit_intercept=True):
    """Independent route: the Gaussian log density of the (centred) targets,
    y ~ N(0, I / alpha + X diag(1 / lambda) X^T), by scipy's multivariate normal."""
    if fit_intercept:
        X = X - X.mean(axis=0)
        y = y - y.mean()
    lam = np.broadcast_to(np.asarray(lam, dtype=float), (X.shape[1],))
    keep = np.isfinite(lam)
    C = np.eye(len(y)) / alpha + (X[:, keep] / lam[keep]) @ X[:, keep].T
    with threadpool_limits(limits=1):  # a busy machine makes threaded LAPACK erratic
        return float(multivariate_normal(np.zeros(len(y)), C).logpdf(y))


def synthetic(n=100, d=10, seed=0, noise=0.5, offset=1.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = np.zeros(d)
    w[[0, 3, 7][: min(3, d)] if d > 7 else [0]] = [3.0, -2.0, 1.5][: 3 if d > 7 else 1]
    y = X @ w + noise * rng.standard_normal(n) + offset
    return X, y


# ----------------------------------------------------------------------------------
# Agreement with BayesianRidge on the diabetes data
# ----------------------------------------------------------------------------------
def test_diabetes_reproduces_bayesian_ridge(diabetes):
    X, y = diabetes
    ours = BayesianLinearRegression().fit(X, y)
    ref = BayesianRidge().fit(X, y)
    # the figures of the issue
    assert ours.alpha_ == pytest.approx(3.4102e-4, rel=1e-4)
    assert ours.lambda_ == pytest.approx(1.1462e-5, rel=1e-4)
    assert ours.log_evidence_ == pytest.approx(-2405.7713076, abs=1e-6)
    # scikit-learn to 1e-6 (its Gamma(1e-6, 1e-6) hyperpriors move lambda by ~3e-7)
    assert ours.alpha_ == pytest.approx(ref.alpha_, rel=1e-6)
    assert ours.lambda_ == pytest.approx(ref.lambda_, rel=1e-6)
    scale = np.abs(ref.coef_).max()
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=0, atol=1e-6 * scale)
    assert ours.intercept_ == pytest.approx(ref.intercept_, rel=1e-9)
    np.testing.assert_allclose(
        ours.sigma_, ref.sigma_, rtol=1e-5, atol=1e-6 * np.abs(ref.sigma_).max()
    )
    m1, s1 = ours.predict(X[:20], return_std=True)
    m2, s2 = ref.predict(X[:20], return_std=True)
    np.testing.assert_allclose(m1, m2, rtol=1e-8)
    np.testing.assert_allclose(s1, s2, rtol=1e-6)
    assert ours.n_iter_ < 30 and ours.inference_ is None


def test_exact_evidence_by_an_independent_route(diabetes):
    X, y = diabetes
    ours = BayesianLinearRegression().fit(X, y)
    assert ours.log_evidence_ == pytest.approx(
        mvn_evidence(X, y, ours.alpha_, ours.lambda_), rel=1e-12
    )
    # away from the optimum too, with and without intercept
    for fit_intercept in (True, False):
        f = linear_evidence(X, y, fit_intercept=fit_intercept)
        for alpha, lam in [(1e-3, 1e-4), (1e-4, 1e-6)][: 1 if not fit_intercept else 2]:
            value, _ = f({"alpha": alpha, "lambda": lam})
            assert value == pytest.approx(mvn_evidence(X, y, alpha, lam, fit_intercept), rel=1e-12)


def test_bayesian_ridge_scores_differ_by_the_hyperprior_terms(diabetes):
    """scikit-learn's score adds a1 log(alpha) - a2 alpha + l1 log(lambda) - l2 lambda.

    (Its last score pairs the final hyperparameters with the weights of the previous
    iteration, hence agreement to ~1e-7 rather than to rounding.)"""
    X, y = diabetes
    ref = BayesianRidge(compute_score=True).fit(X, y)
    exact, _ = linear_evidence(X, y)({"alpha": ref.alpha_, "lambda": ref.lambda_})
    hyper = 1e-6 * (math.log(ref.alpha_) - ref.alpha_ + math.log(ref.lambda_) - ref.lambda_)
    assert hyper == pytest.approx(-1.9e-5, rel=0.05)
    assert ref.scores_[-1] == pytest.approx(exact + hyper, abs=1e-6)


def test_more_features_than_samples_without_intercept():
    X, y = synthetic(n=15, d=40, seed=4)
    ours = BayesianLinearRegression(fit_intercept=False).fit(X, y)
    ref = BayesianRidge(fit_intercept=False, tol=1e-12, max_iter=3000).fit(X, y)
    assert ours.alpha_ == pytest.approx(ref.alpha_, rel=1e-5)
    assert ours.lambda_ == pytest.approx(ref.lambda_, rel=1e-5)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-5, atol=1e-8)
    assert ours.log_evidence_ == pytest.approx(
        mvn_evidence(X, y, ours.alpha_, ours.lambda_, fit_intercept=False), rel=1e-10
    )


@pytest.mark.parametrize("ard", [False, True])
def test_unbounded_evidence_is_reported(ard):
    """Centring leaves n - 1 dimensions; with n_features >= n - 1 the centred targets are
    fitted exactly and the evidence grows without bound as alpha -> inf."""
    X, y = synthetic(n=15, d=40, seed=4)
    with pytest.warns(ConvergenceWarning, match="keeps growing as the noise precision"):
        model = BayesianLinearRegression(ard=ard).fit(X, y)
    assert np.all(np.isfinite(model.coef_))
    # a proper hyperprior on alpha gives a finite answer
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BayesianLinearRegression(
            method="map", alpha_prior=Gamma(2.0, 1.0), lambda_prior=Gamma(2.0, 1.0), seed=0
        ).fit(X, y)


@pytest.mark.parametrize("ard", [False, True])
def test_evidence_gradient_by_finite_differences(ard):
    X, y = synthetic(n=40, d=5, seed=1)
    f = linear_evidence(X, y, ard=ard)
    rng = np.random.default_rng(0)
    keys = ["alpha"] + ([f"lambda_{i}" for i in range(5)] if ard else ["lambda"])
    h = {k: float(rng.uniform(0.3, 3.0)) for k in keys}
    _, grad = f(h)
    for k in keys:
        step = 1e-6 * h[k]
        up, dn = dict(h), dict(h)
        up[k] += step
        dn[k] -= step
        fd = (f(up)[0] - f(dn)[0]) / (2 * step)
        assert grad[k] == pytest.approx(fd, rel=1e-6, abs=1e-8)


# ----------------------------------------------------------------------------------
# MAP: the hyperpriors of scikit-learn
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a1", "a2", "l1", "l2"),
    [(1e-6, 1e-6, 1e-6, 1e-6), (2.0, 1e-2, 1.0, 1e2), (0.5, 10.0, 3.0, 1e3)],
)
def test_map_equals_bayesian_ridge_with_shifted_gamma(diabetes, a1, a2, l1, l2):
    """BayesianRidge(alpha_1=a1, alpha_2=a2, ...) maximises evidence x the natural-scale
    Gamma(a1 + 1, a2) density: twiddle's MAP with those priors lands on the same point."""
    X, y = diabetes
    ref = BayesianRidge(
        alpha_1=a1, alpha_2=a2, lambda_1=l1, lambda_2=l2, tol=1e-14, max_iter=5000
    ).fit(X, y)
    ours = BayesianLinearRegression(
        method="map", alpha_prior=Gamma(a1 + 1.0, a2), lambda_prior=Gamma(l1 + 1.0, l2), seed=0
    ).fit(X, y)
    assert ours.alpha_ == pytest.approx(ref.alpha_, rel=1e-8)
    assert ours.lambda_ == pytest.approx(ref.lambda_, rel=1e-8)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-7)
    assert ours.inference_ is not None and ours.inference_.method == "map"


# ----------------------------------------------------------------------------------
# ARD
# ----------------------------------------------------------------------------------
def test_ard_matches_ard_regression():
    """Against ARDRegression with its hyperpriors switched off (lambda_1 = ... = 0) and run
    to convergence. scikit-learn prunes a weight once its precision passes
    threshold_lambda = 1e4; the sequential algorithm prunes where the evidence is
    maximised at an infinite precision. On this data the two sets agree: every finite
    precision at the maximum is below 1e4."""
    X, y = synthetic()
    ours = BayesianLinearRegression(ard=True).fit(X, y)
    ref = ARDRegression(
        alpha_1=0.0, alpha_2=0.0, lambda_1=0.0, lambda_2=0.0, tol=1e-10, max_iter=100_000
    ).fit(X, y)
    kept = np.isfinite(ours.lambda_)
    np.testing.assert_array_equal(kept, ref.lambda_ < ref.threshold_lambda)
    assert kept[[0, 3, 7]].all() and 3 <= kept.sum() < 10
    assert np.all(ours.lambda_[kept] < 1e4)
    np.testing.assert_allclose(ours.lambda_[kept], ref.lambda_[kept], rtol=1e-6)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-6, atol=1e-8)
    assert np.all(ours.coef_[~kept] == 0.0)
    assert ours.alpha_ == pytest.approx(ref.alpha_, rel=1e-8)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-7)


def test_ard_is_a_maximum_of_the_exact_evidence():
    X, y = synthetic(seed=2)
    ours = BayesianLinearRegression(ard=True, tol=1e-12).fit(X, y)
    lam = ours.lambda_
    kept = np.isfinite(lam)
    assert ours.log_evidence_ == pytest.approx(mvn_evidence(X, y, ours.alpha_, lam), rel=1e-12)
    f = linear_evidence(X, y, ard=True)
    big = np.where(kept, lam, 1e300)  # 1/lambda = 1e-300: numerically pruned
    h = {"alpha": ours.alpha_} | {f"lambda_{i}": float(v) for i, v in enumerate(big)}
    value, grad = f(h)
    assert value == pytest.approx(ours.log_evidence_, rel=1e-12)
    # stationary in the kept precisions and in alpha (derivatives in log coordinates)
    assert abs(grad["alpha"] * ours.alpha_) < 1e-6
    for i in np.flatnonzero(kept):
        assert abs(grad[f"lambda_{i}"] * lam[i]) < 1e-6
    # bringing back any pruned weight, at any precision, lowers the evidence
    for i in np.flatnonzero(~kept):
        for v in (1e-2, 1.0, 1e2, 1e4, 1e6):
            assert f(h | {f"lambda_{i}": v})[0] < value + 1e-9


def test_ard_more_features_than_samples():
    X, y = synthetic(n=40, d=60, seed=0, noise=0.5, offset=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = BayesianLinearRegression(ard=True, fit_intercept=False).fit(X, y)
    kept = np.isfinite(ours.lambda_)
    assert kept[[0, 3, 7]].all() and kept.sum() < 40
    assert ours.log_evidence_ == pytest.approx(
        mvn_evidence(X, y, ours.alpha_, ours.lambda_, fit_intercept=False), rel=1e-10
    )


def test_ard_interpolating_maximum_is_reported():
    """With many more features than samples the ARD evidence can keep growing as the
    noise vanishes and the targets are interpolated (type-II ML overfits with one
    hyperparameter per feature): reported, never a crash."""
    X, y = synthetic(n=30, d=60, seed=3, noise=0.1, offset=0.0)
    with pytest.warns(ConvergenceWarning, match="keeps growing as the noise precision"):
        model = BayesianLinearRegression(ard=True, fit_intercept=False).fit(X, y)
    assert np.all(np.isfinite(model.coef_)) and math.isfinite(model.log_evidence_)


def test_ard_map_with_gamma_priors_is_stationary():
    X, y = synthetic(n=60, d=6, seed=5)
    model = BayesianLinearRegression(
        method="map", ard=True, alpha_prior=Gamma(2.0, 1e-2), lambda_prior=Gamma(2.0, 1.0), seed=0
    ).fit(X, y)
    assert np.all(np.isfinite(model.lambda_))
    # d/dlog lambda_i of [evidence + log prior] = 0 with the Gamma(2, 1) density
    f = linear_evidence(X, y, ard=True)
    h = {"alpha": model.alpha_} | {f"lambda_{i}": float(v) for i, v in enumerate(model.lambda_)}
    _, grad = f(h)
    for i, lam in enumerate(model.lambda_):
        assert abs((grad[f"lambda_{i}"] + 1.0 / lam - 1.0) * lam) < 1e-5
    assert abs((grad["alpha"] + 1.0 / model.alpha_ - 1e-2) * model.alpha_) < 1e-5


# ----------------------------------------------------------------------------------
# MCMC: the hyperparameter posterior against quadrature
# ----------------------------------------------------------------------------------
PRIORS_BLR = {"alpha": Gamma(2.0, 0.5), "lambda": Gamma(2.0, 2.0)}


def _blr_data():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((20, 3))
    y = X @ np.array([1.0, -0.5, 0.25]) + 0.5 * rng.standard_normal(20)
    return X, y


def _blr_grid_truth(X, y):
    """Posterior moments of (log alpha, log lambda) by quadrature on a 2-d grid. The
    evidence is computed in sample space from the eigenvectors of X_c X_c^T (a route
    independent of the estimator's, which works in feature space)."""
    Xc, yc = X - X.mean(0), y - y.mean()
    e, Q = np.linalg.eigh(Xc @ Xc.T)
    z2 = (Q.T @ yc) ** 2
    la = np.linspace(-4.0, 5.0, 451)
    ll = np.linspace(-8.0, 4.0, 481)
    A, L = np.meshgrid(la, ll, indexing="ij")
    v = np.exp(-A)[..., None] + np.clip(e, 0, None) * np.exp(-L)[..., None]
    le = -0.5 * np.sum(np.log(2 * np.pi * v) + z2 / v, axis=-1)
    pa, pl = PRIORS_BLR["alpha"], PRIORS_BLR["lambda"]
    logp = le + pa.logpdf(np.exp(A)) + A + pl.logpdf(np.exp(L)) + L
    w = np.exp(logp - logsumexp(logp))
    assert w[0].sum() + w[-1].sum() + w[:, 0].sum() + w[:, -1].sum() < 1e-10  # tails inside
    return {
        "la": float(np.sum(w * A)),
        "la2": float(np.sum(w * A * A)),
        "ll": float(np.sum(w * L)),
        "ll2": float(np.sum(w * L * L)),
    }


def _blr_z(seed: int, n_draws: int, truth: dict[str, float]) -> list[float]:
    X, y = _blr_data()
    res = infer(
        linear_evidence(X, y), PRIORS_BLR, method="mcmc", seed=seed, n_draws=n_draws, n_burn=100
    )
    la, ll = np.log(res.samples_["alpha"]), np.log(res.samples_["lambda"])
    return [
        mc_z(la, res.n_chains, truth["la"], truth["la2"]),
        mc_z(ll, res.n_chains, truth["ll"], truth["ll2"]),
    ]


def test_mcmc_hyperposterior_one_seed():
    truth = _blr_grid_truth(*_blr_data())
    assert max(abs(z) for z in _blr_z(0, 300, truth)) < 3.5


@pytest.mark.slow
def test_mcmc_hyperposterior_seed_sweep():
    """Posterior means of log alpha and log lambda over six seeds: at most one |z| > 3.5
    per quantity."""
    truth = _blr_grid_truth(*_blr_data())
    zs = np.array([_blr_z(seed, 600, truth) for seed in range(6)])
    assert np.all(np.sum(np.abs(zs) > 3.5, axis=0) <= 1), zs


@pytest.mark.slow
def test_estimator_mcmc_averages_over_the_hyperposterior():
    X, y = _blr_data()
    model = BayesianLinearRegression(
        method="mcmc", alpha_prior=PRIORS_BLR["alpha"], lambda_prior=PRIORS_BLR["lambda"], seed=0
    ).fit(X, y)
    res = model.inference_
    assert res is not None and res.method == "mcmc"
    assert model.alpha_ == pytest.approx(float(res.samples_["alpha"].mean()))
    # coef_ is the average of the per-draw posterior means
    f = linear_evidence(X, y)
    eig = f._eig
    draws = [
        eig.coef(a, lam)
        for a, lam in zip(res.samples_["alpha"], res.samples_["lambda"], strict=True)
    ]
    np.testing.assert_allclose(model.coef_, np.mean(draws, axis=0), rtol=1e-10)
    # the mixture covariance contains the spread of the means: wider than at the mean
    point = BayesianLinearRegression(
        method="map", alpha_prior=PRIORS_BLR["alpha"], lambda_prior=PRIORS_BLR["lambda"], seed=0
    ).fit(X, y)
    assert np.all(np.linalg.eigvalsh(model.sigma_) > 0)
    _, s_mix = model.predict(X, return_std=True)
    assert np.all(np.isfinite(s_mix)) and np.all(s_mix > 0)
    assert model.log_evidence_ == pytest.approx(
        mvn_evidence(X, y, model.alpha_, model.lambda_), rel=1e-10
    )
    assert point.alpha_ != model.alpha_


# ----------------------------------------------------------------------------------
# Estimator contract
# ----------------------------------------------------------------------------------
def test_sklearn_contract(diabetes):
    X, y = diabetes
    model = BayesianLinearRegression(max_iter=50, tol=1e-6)
    assert model.get_params()["max_iter"] == 50
    twin = clone(model).set_params(fit_intercept=False)
    assert twin.fit_intercept is False and model.fit_intercept is True
    with pytest.raises(NotFittedError):
        model.predict(X)
    model.fit(X, y)
    assert model.n_features_in_ == 10
    assert model.score(X, y) == pytest.approx(BayesianRidge().fit(X, y).score(X, y), rel=1e-7)
    with pytest.raises(ValueError, match="X has 3 features"):
        model.predict(X[:, :3])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"max_iter": 0},
            "The 'max_iter' parameter of BayesianLinearRegression must be an int >= 1. "
            "Got 0 instead.",
        ),
        (
            {"tol": 0.0},
            "The 'tol' parameter of BayesianLinearRegression must be a finite number > 0",
        ),
        ({"method": "vb"}, "The 'method' parameter of BayesianLinearRegression must be one of"),
        ({"ard": 1}, "The 'ard' parameter of BayesianLinearRegression must be a bool"),
        (
            {"alpha_prior": Gamma(1.0, 1.0)},
            "The 'alpha_prior' parameter of BayesianLinearRegression must be None with method='ml'",
        ),
        (
            {"method": "map"},
            "The 'alpha_prior' parameter of BayesianLinearRegression must be a Prior",
        ),
        (
            {"method": "map", "alpha_prior": Gamma(1.0, 1.0), "lambda_prior": Normal()},
            "The 'lambda_prior' parameter of BayesianLinearRegression must be a Prior with",
        ),
        (
            {"method": "mcmc", "ard": True, "alpha_prior": Gamma(), "lambda_prior": Gamma()},
            "The 'method' parameter of BayesianLinearRegression with ard=True must be one of "
            "'ml', 'map'",
        ),
    ],
)
def test_invalid_parameters(diabetes, kwargs, message):
    X, y = diabetes
    with pytest.raises(InvalidParameterError) as info:
        BayesianLinearRegression(**kwargs).fit(X, y)
    assert str(info.value).startswith(message)


def test_non_convergence_warns(diabetes):
    X, y = diabetes
    with pytest.warns(ConvergenceWarning, match="did not converge in max_iter=2"):
        BayesianLinearRegression(max_iter=2).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BayesianLinearRegression().fit(X, y)


def test_lognormal_hyperpriors_work_too(diabetes):
    X, y = diabetes
    model = BayesianLinearRegression(
        method="map", alpha_prior=LogNormal(-8.0, 2.0), lambda_prior=LogNormal(-11.0, 2.0), seed=0
    ).fit(X, y)
    assert model.alpha_ == pytest.approx(3.41e-4, rel=0.05)
