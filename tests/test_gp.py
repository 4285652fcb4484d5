"""Gaussian-process maths against independent truth: scikit-learn, finite differences,
high-precision arithmetic, quadrature."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from scipy import integrate
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

from twiddle._gp import (
    JITTER,
    FeatureMap,
    GPPosterior,
    Hyperprior,
    fit_map,
    group_sq_dists,
    log_ei,
    log_ei_grad,
    log_evidence,
    log_h,
)
from twiddle._mcmc import effective_sample_size, slice_sample, split_rhat


def data(n=25, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    y = np.sin(3 * X[:, 0]) + X[:, 1] ** 2 + 0.1 * rng.standard_normal(n)
    return X, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_evidence_and_gradient_equal_sklearn(seed):
    X, y = data(seed=seed)
    d = X.shape[1]
    rng = np.random.default_rng(seed + 10)
    ell = np.exp(rng.uniform(-1.5, 1.0, d))
    s2, nu2 = float(np.exp(rng.uniform(-1, 1))), float(np.exp(rng.uniform(-5, -1)))
    kernel = ConstantKernel(s2) * Matern(length_scale=ell, nu=2.5) + WhiteKernel(nu2)
    gpr = GaussianProcessRegressor(kernel, alpha=JITTER, optimizer=None).fit(X, y)
    ref, ref_grad = gpr.log_marginal_likelihood(gpr.kernel_.theta, eval_gradient=True)
    S = group_sq_dists(X, X, np.arange(d), d)
    theta = np.r_[np.log(ell), math.log(s2), math.log(nu2)]
    lml, grad = log_evidence(theta, S, y)
    assert abs(lml - ref) < 1e-8
    # sklearn orders theta as [log s2, log ell..., log nu2]
    np.testing.assert_allclose(grad, ref_grad[[*range(1, d + 1), 0, d + 1]], rtol=1e-8, atol=1e-8)


def test_log_evidence_gradient_matches_finite_differences_with_known_noise():
    X, y = data(n=20, d=2, seed=4)
    d = 2
    extra = np.linspace(0.0, 0.05, 20)
    S = group_sq_dists(X, X, np.arange(d), d)
    theta = np.array([-0.7, 0.2, 0.3, -3.0])
    _, grad = log_evidence(theta, S, y, extra)
    eps = 1e-6
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = eps
        fd = (log_evidence(theta + e, S, y, extra)[0] - log_evidence(theta - e, S, y, extra)[0]) / (
            2 * eps
        )
        assert abs(fd - grad[i]) < 1e-6 * max(1.0, abs(fd))


def test_hyperprior_gradient_and_mode():
    prior = Hyperprior.default(3)
    theta = np.array([0.1, -0.4, 1.2, 0.3, -2.0])
    for log_scale in (False, True):
        _, g = prior.logpdf(theta, log_scale)
        eps = 1e-6
        for i in range(theta.size):
            e = np.zeros_like(theta)
            e[i] = eps
            fd = (prior.logpdf(theta + e, log_scale)[0] - prior.logpdf(theta - e, log_scale)[0]) / (
                2 * eps
            )
            assert abs(fd - g[i]) < 1e-6
    # the natural-scale density peaks at the log-normal mode exp(loc - scale^2)
    _, g = prior.logpdf(prior.modes(3))
    np.testing.assert_allclose(g, 0.0, atol=1e-12)


@pytest.mark.slow
def test_map_fit_reaches_the_evidence_optimum_sklearn_finds():
    # without a hyperprior, MAP is type-II maximum likelihood: compare with sklearn's optimum
    X, y = data(n=30, d=2, seed=5)
    S = group_sq_dists(X, X, np.arange(2), 2)
    _, value, ok = fit_map(S, y, None, np.random.default_rng(0), n_restarts=4)
    assert ok
    kernel = ConstantKernel(1.0, (5e-2, 2e1)) * Matern(
        length_scale=[1.0, 1.0], length_scale_bounds=(5e-3, 2e1), nu=2.5
    ) + WhiteKernel(1e-2, (1e-6, 2.0))
    gpr = GaussianProcessRegressor(kernel, alpha=JITTER, n_restarts_optimizer=8, random_state=0)
    gpr.fit(X, y)
    assert value == pytest.approx(gpr.log_marginal_likelihood_value_, abs=1e-4)


def test_posterior_mean_and_variance_equal_sklearn():
    X, y = data(n=15, d=2, seed=6)
    ell, s2, nu2 = np.array([0.4, 0.9]), 1.7, 0.01
    kernel = ConstantKernel(s2) * Matern(length_scale=ell, nu=2.5) + WhiteKernel(nu2)
    gpr = GaussianProcessRegressor(kernel, alpha=JITTER, optimizer=None).fit(X, y)
    Xq = np.random.default_rng(1).random((7, 2))
    mean_ref, sd_ref = gpr.predict(Xq, return_std=True)
    post = GPPosterior(np.r_[np.log(ell), math.log(s2), math.log(nu2)], X, y, np.arange(2))
    mean, var = post.predict(Xq)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-9, atol=1e-9)
    # sklearn's predictive sd includes the white-noise kernel; the latent variance does not
    np.testing.assert_allclose(var + nu2, sd_ref**2, rtol=1e-8, atol=1e-10)


def test_predict_grad_matches_finite_differences():
    X, y = data(n=12, d=3, seed=7)
    post = GPPosterior(np.array([-0.5, 0.0, 0.4, 0.1, -3.0]), X, y, np.arange(3))
    x = np.array([[0.3, 0.6, 0.2]])
    cols = np.arange(3)
    mean, var, dmean, dvar = post.predict_grad(x, cols)
    m0, v0 = post.predict(x)
    np.testing.assert_allclose([mean[0], var[0]], [m0[0], v0[0]], rtol=1e-10)
    best = float(np.min(y))
    _, dlei = log_ei_grad(mean, var, dmean, dvar, best)
    eps = 1e-6
    for c in cols:
        e = np.zeros_like(x)
        e[0, c] = eps
        mp, vp = post.predict(x + e)
        mm, vm = post.predict(x - e)
        assert abs((mp - mm)[0] / (2 * eps) - dmean[0, c]) < 1e-5
        assert abs((vp - vm)[0] / (2 * eps) - dvar[0, c]) < 1e-5
        fd = (log_ei(mp, vp, best) - log_ei(mm, vm, best))[0] / (2 * eps)
        assert abs(fd - dlei[0, c]) < 1e-4 * max(1.0, abs(fd))


@pytest.mark.parametrize("z", [8.0, 2.0, 0.0, -0.5, -1.0, -2.5, -8.0, -40.0, -300.0, -1e4, -1e8])
def test_log_h_is_accurate_in_the_far_tail(z):
    mpmath.mp.dps = 60
    zz = mpmath.mpf(z)
    ref = float(mpmath.log(mpmath.npdf(zz) + zz * mpmath.ncdf(zz)))
    got = float(log_h(np.array([z]))[0])
    assert abs(got - ref) <= 1e-12 * max(1.0, abs(ref))


def test_log_ei_equals_closed_form_where_that_is_stable():
    from scipy.stats import norm

    mean, var, best = np.array([0.3, -0.2, 1.0]), np.array([0.04, 1.0, 0.25]), 0.1
    sd = np.sqrt(var)
    z = (best - mean) / sd
    ei = sd * (z * norm.cdf(z) + norm.pdf(z))
    np.testing.assert_allclose(np.exp(log_ei(mean, var, best)), ei, rtol=1e-12)


def test_feature_map_categorical_and_conditional_distances():
    # dims: numeric, categorical(3), conditional numeric
    fm = FeatureMap.build(["numeric", "categorical", "numeric"], [0, 3, 0], [False, False, True])
    U = np.array(
        [
            [0.2, 0.5, 0.7],  # choice 1, active
            [0.2, 0.9, 0.7],  # choice 2, active
            [0.2, 0.5, np.nan],  # choice 1, inactive
            [0.2, 0.5, np.nan],
        ]
    )
    Z = fm.transform(U)
    S = group_sq_dists(Z, Z, fm.groups, 3)
    assert S[1, 0, 1] == pytest.approx(1.0)  # two different choices: distance exactly 1
    assert S[1, 0, 2] == 0.0
    assert S[2, 2, 3] == 0.0  # both inactive: no difference
    assert S[2, 0, 2] == pytest.approx((0.7 - 0.5) ** 2 + 0.5)  # active vs inactive
    # the kernel on these features is positive definite
    post_ok = np.linalg.eigvalsh(np.exp(-np.sum(S, axis=0)))
    assert post_ok.min() > -1e-12


@pytest.mark.slow
def test_slice_sampler_matches_a_posterior_known_by_quadrature():
    # a skewed 1-d target: Gamma(3, 1) on log scale, i.e. density of t = log x
    def logp(t):
        x = math.exp(t[0])
        return 3.0 * t[0] - x  # log[x^3 e^-x] with Jacobian of t = log x -> x^(3) e^-x

    norm_c = integrate.quad(lambda t: math.exp(3 * t - math.exp(t)), -20, 5)[0]
    mean_ref = integrate.quad(lambda t: t * math.exp(3 * t - math.exp(t)), -20, 5)[0] / norm_c
    p_ref = integrate.quad(lambda t: math.exp(3 * t - math.exp(t)), -20, 0.5)[0] / norm_c
    misses = 0
    for seed in range(6):
        chains = np.stack(
            [
                slice_sample(logp, np.array([0.0]), 1500, np.random.default_rng([seed, c]), burn=20)
                for c in range(3)
            ]
        )
        draws = chains.reshape(-1)
        ess = float(effective_sample_size(chains)[0])
        sd = float(np.std(draws))
        # Monte-Carlo standard errors from the effective sample size
        se_mean = sd / math.sqrt(ess)
        se_p = math.sqrt(p_ref * (1 - p_ref) / ess)
        ok_mean = abs(np.mean(draws) - mean_ref) < 3.5 * se_mean
        ok_p = abs(np.mean(draws < 0.5) - p_ref) < 3.5 * se_p
        misses += not (ok_mean and ok_p)
        assert float(split_rhat(chains)[0]) < 1.05
        assert ess > 500
    assert misses <= 1  # about 0.1 % chance per seed of a miss at 3.5 standard errors each


def test_group_sq_dists_equal_a_loop_over_columns():
    fm = FeatureMap.build(["numeric", "categorical", "numeric"], [0, 3, 0], [False, False, True])
    rng = np.random.default_rng(3)
    U = rng.random((9, 3))
    U[rng.random(9) < 0.4, 2] = np.nan
    Z = fm.transform(U)
    S = group_sq_dists(Z, Z[:4], fm.groups, 3)
    ref = np.zeros((3, 9, 4))
    for c in range(Z.shape[1]):
        ref[fm.groups[c]] += (Z[:, c][:, None] - Z[:4, c][None, :]) ** 2
    np.testing.assert_allclose(S, ref, rtol=0, atol=1e-15)


def test_log_evidence_gradient_with_grouped_columns_matches_finite_differences():
    # several feature columns share a length scale (one-hot choices, an inactive flag)
    fm = FeatureMap.build(["numeric", "categorical", "numeric"], [0, 3, 0], [False, False, True])
    rng = np.random.default_rng(8)
    U = rng.random((18, 3))
    U[rng.random(18) < 0.3, 2] = np.nan
    Z = fm.transform(U)
    y = rng.standard_normal(18)
    S = group_sq_dists(Z, Z, fm.groups, 3)
    theta = np.array([-0.3, 0.4, -1.0, 0.2, -2.5])
    _, grad = log_evidence(theta, S, y)
    eps = 1e-6
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = eps
        fd = (log_evidence(theta + e, S, y)[0] - log_evidence(theta - e, S, y)[0]) / (2 * eps)
        assert abs(fd - grad[i]) < 1e-6 * max(1.0, abs(fd))


def test_predict_grad_in_a_subset_of_grouped_columns_matches_finite_differences():
    fm = FeatureMap.build(["numeric", "categorical", "numeric"], [0, 2, 0], [False, False, False])
    rng = np.random.default_rng(9)
    Z = fm.transform(rng.random((15, 3)))
    y = rng.standard_normal(15)
    post = GPPosterior(np.array([-0.8, 0.1, -0.4, 0.3, -4.0]), Z, y, fm.groups)
    x = fm.transform(rng.random((3, 3)))
    cols = np.array([0, 3])  # the two numeric columns
    mean, var, dmean, dvar = post.predict_grad(x, cols)
    m0, v0 = post.predict(x)
    np.testing.assert_allclose(mean, m0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(var, v0, rtol=1e-8, atol=1e-12)
    eps = 1e-6
    for j, c in enumerate(cols):
        e = np.zeros_like(x)
        e[:, c] = eps
        mp, vp = post.predict(x + e)
        mm, vm = post.predict(x - e)
        np.testing.assert_allclose((mp - mm) / (2 * eps), dmean[:, j], atol=1e-5)
        np.testing.assert_allclose((vp - vm) / (2 * eps), dvar[:, j], atol=1e-5)


def test_short_warm_fit_never_loses_objective_and_full_fit_is_at_least_as_good():
    X, y = data(n=30, d=3, seed=11)
    S = group_sq_dists(X, X, np.arange(3), 3)
    prior = Hyperprior.default(3)
    start = prior.modes(3)
    lml0, _ = log_evidence(start, S, y)
    value0 = lml0 + prior.logpdf(start)[0]
    _, short, ok = fit_map(
        S, y, prior, np.random.default_rng(0), warm_start=start, n_restarts=0, maxiter=3
    )
    assert ok and short >= value0
    _, full, ok = fit_map(S, y, prior, np.random.default_rng(0), warm_start=start, n_restarts=2)
    assert ok and full >= short - 1e-9
