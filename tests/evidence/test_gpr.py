"""GPRegressor: the evidence optimum of scikit-learn's GP, the noisy-sine local optima."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.base import clone
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
from threadpoolctl import threadpool_limits

from twiddle import InvalidParameterError
from twiddle.evidence import GPRegressor, HalfCauchy, LogNormal, Normal


def data_2d(n=30, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2.0, 2.0, size=(n, 2)) * np.array([1.0, 10.0])
    y = np.sin(2 * X[:, 0]) + 0.003 * X[:, 1] ** 2 + 0.1 * rng.standard_normal(n) + 3.0
    return X, y


def noisy_sine(n=40, seed=0):
    """scikit-learn's noise-level example: y = 0.5 + sin(3x) + N(0, 0.3^2) on x in [0, 5]."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.0, 5.0, size=(n, 1))
    y = 0.5 + np.sin(3.0 * X[:, 0]) + 0.3 * rng.standard_normal(n)
    return X, y


def sklearn_gp(X, y, length_scale, constant=1.0, noise=0.1, restarts=5):
    kernel = ConstantKernel(constant, (1e-5, 1e5)) * Matern(
        length_scale, (1e-5, 1e5), nu=2.5
    ) + WhiteKernel(noise, (1e-8, 1e2))
    with threadpool_limits(limits=1):  # small matrices: threads only cost time
        return GaussianProcessRegressor(
            kernel, normalize_y=True, n_restarts_optimizer=restarts, random_state=0
        ).fit(X, y)


def independent_log_evidence(model, X, y):
    """log N(y; mean(y), sd^2 (s2 Matern(U / ell) + (nu2 + jitter) I)) with scikit-learn's
    Matern kernel on the inputs scaled as the model scales them."""
    U = (X - X.min(axis=0)) / (X.max(axis=0) - X.min(axis=0))
    d = X.shape[1]
    ell = np.exp(model.theta_[:d])
    s2, nu2 = math.exp(model.theta_[d]), math.exp(model.theta_[d + 1])
    K = s2 * Matern(length_scale=ell, nu=2.5)(U) + (nu2 + 1e-8) * np.eye(len(y))
    sd = y.std()
    return float(multivariate_normal(np.full(len(y), y.mean()), sd**2 * K).logpdf(y))


def test_same_evidence_optimum_as_scikit_learn():
    X, y = data_2d()
    ours = GPRegressor(seed=0).fit(X, y)
    ref = sklearn_gp(X, y, [1.0, 1.0])
    n, sd = len(y), y.std()
    # scikit-learn reports the evidence of the standardised targets
    assert ours.log_evidence_ + n * math.log(sd) == pytest.approx(
        ref.log_marginal_likelihood_value_, abs=1e-6
    )
    params = ref.kernel_.get_params()
    np.testing.assert_allclose(ours.length_scale_, params["k1__k2__length_scale"], rtol=1e-3)
    assert ours.signal_variance_ / sd**2 == pytest.approx(
        params["k1__k1__constant_value"], rel=1e-3
    )
    assert ours.noise_variance_ / sd**2 == pytest.approx(params["k2__noise_level"], rel=1e-3)
    m1, s1 = ours.predict(X[:10], return_std=True)
    m2, s2 = ref.predict(X[:10], return_std=True)
    np.testing.assert_allclose(m1, m2, rtol=1e-4)
    np.testing.assert_allclose(s1, s2, rtol=1e-3)


def test_log_evidence_by_an_independent_route():
    X, y = data_2d()
    ours = GPRegressor(n_restarts=2, seed=0).fit(X, y)
    assert ours.log_evidence_ == pytest.approx(independent_log_evidence(ours, X, y), rel=1e-10)


@pytest.mark.filterwarnings("ignore:The optimal value found:UserWarning")
def test_noisy_sine_restarts_find_the_better_optimum():
    """One start at a long length scale with all variance as noise stays in the worse
    optimum (the data explained as noise); restarts find the short-length-scale one,
    which is also scikit-learn's best."""
    X, y = noisy_sine()
    var = y.var()
    bad = {"length_scale": 50.0, "signal_variance": var, "noise_variance": var}
    single = GPRegressor(n_restarts=0, **bad).fit(X, y)
    multi = GPRegressor(n_restarts=5, seed=0, **bad).fit(X, y)
    assert multi.log_evidence_ > single.log_evidence_ + 10.0
    # worse optimum: almost everything is noise, the length scale is long
    assert single.noise_variance_ > 0.9 * var and single.length_scale_[0] > 5.0
    assert single.signal_variance_ < 1e-3 * var
    # better optimum: the sine's length scale, noise near 0.3^2
    assert 0.1 < multi.length_scale_[0] < 1.0
    assert 0.05 < multi.noise_variance_ < 0.15
    # scikit-learn, started near each optimum, lands in the same two places
    n, sd = len(y), y.std()
    good_ref = sklearn_gp(X, y, 0.3, restarts=0)
    assert multi.log_evidence_ + n * math.log(sd) == pytest.approx(
        good_ref.log_marginal_likelihood_value_, abs=1e-6
    )
    bad_ref = sklearn_gp(X, y, 50.0, noise=1.0, restarts=0)
    assert bad_ref.log_marginal_likelihood_value_ < good_ref.log_marginal_likelihood_value_ - 10


def test_map_with_the_default_and_with_user_hyperpriors():
    X, y = noisy_sine()
    default = GPRegressor(method="map", seed=0).fit(X, y)
    assert 0.1 < default.length_scale_[0] < 1.0
    # a tight prior on the noise variance pins it
    tight = {
        "length_scale": LogNormal(0.0, 2.0),
        "signal_variance": HalfCauchy(1.0),
        "noise_variance": LogNormal(math.log(0.2), 1e-3),
    }
    pinned = GPRegressor(method="map", prior=tight, seed=0).fit(X, y)
    assert pinned.noise_variance_ == pytest.approx(0.2, rel=1e-2)


def test_user_prior_gradient_by_finite_differences():
    X, y = data_2d()
    model = GPRegressor(
        method="map",
        prior={
            "length_scale": LogNormal(0.5, 1.0),
            "signal_variance": HalfCauchy(2.0),
            "noise_variance": LogNormal(-3.0, 1.0),
        },
        n_restarts=0,
    ).fit(X, y)
    log_prior = model._log_prior("map", model.prior, 2)
    theta = np.array([0.1, -0.4, 0.3, -2.0])
    _, g = log_prior(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = 1e-6
        fd = (log_prior(theta + e)[0] - log_prior(theta - e)[0]) / 2e-6
        assert g[i] == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_seeded_and_deterministic():
    X, y = noisy_sine()
    a = GPRegressor(seed=3).fit(X, y)
    b = GPRegressor(seed=3).fit(X, y)
    np.testing.assert_array_equal(a.theta_, b.theta_)
    assert a.n_evaluations_ == b.n_evaluations_


def test_sklearn_contract():
    X, y = noisy_sine()
    model = GPRegressor(n_restarts=1, seed=0)
    twin = clone(model).set_params(n_restarts=2)
    assert twin.get_params()["n_restarts"] == 2 and model.n_restarts == 1
    model.fit(X, y)
    assert model.score(X, y) > 0.8
    with pytest.raises(ValueError, match="X has 2 features"):
        model.predict(np.ones((3, 2)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_restarts": -1}, "The 'n_restarts' parameter of GPRegressor must be an int >= 0."),
        (
            {"method": "nuts"},
            "The 'method' parameter of GPRegressor must be one of 'ml', 'map', 'mcmc'.",
        ),
        (
            {"prior": "default"},
            "The 'prior' parameter of GPRegressor must be None with method='ml'",
        ),
        (
            {"method": "map", "prior": {"length_scale": Normal()}},
            "The 'prior' parameter of GPRegressor must be None, 'default' or a dict",
        ),
        ({"noise_variance": 0.0}, "The 'noise_variance' parameter of GPRegressor must be a finite"),
        ({"length_scale": [1.0, 2.0]}, "The 'length_scale' parameter of GPRegressor must be None"),
    ],
)
def test_invalid_parameters(kwargs, message):
    X, y = noisy_sine()
    with pytest.raises(InvalidParameterError) as info:
        GPRegressor(**kwargs).fit(X, y)
    assert str(info.value).startswith(message)


def _quadrature_posterior_moments(
    U: np.ndarray, t: np.ndarray, axes: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd of theta = (log ell, log s2, log nu2) under evidence x the default
    hyperprior, by brute-force quadrature on a grid; the evidence is written out here
    (batched Cholesky of the Matern-5/2 Gram matrices), independent of twiddle._gp."""
    from twiddle import _gp

    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    n = t.size
    r = np.abs(U[:, None, 0] - U[None, :, 0])
    out = np.empty(len(grid))
    hp = _gp.Hyperprior.default(1)
    for start in range(0, len(grid), 4096):
        th = grid[start : start + 4096]
        z = np.sqrt(5.0) * r[None] / np.exp(th[:, 0])[:, None, None]
        K = np.exp(th[:, 1])[:, None, None] * (1 + z + z**2 / 3) * np.exp(-z)
        K = K + np.exp(th[:, 2])[:, None, None] * np.eye(n)
        L = np.linalg.cholesky(K)
        alpha = np.linalg.solve(L, np.broadcast_to(t, (len(th), n))[..., None])[..., 0]
        logdet = 2 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1)
        lml = -0.5 * (alpha**2).sum(axis=1) - 0.5 * logdet - 0.5 * n * np.log(2 * np.pi)
        m, s = hp.locs(1), hp.scales(1)
        lp = -0.5 * (((th - m) / s) ** 2).sum(axis=1)  # density of theta (log-normal prior)
        out[start : start + 4096] = lml + lp
    w = np.exp(out - out.max())
    w /= w.sum()
    mean = w @ grid
    sd = np.sqrt(w @ (grid - mean) ** 2)
    return mean, sd


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_mcmc_posterior_matches_quadrature(seed):
    rng = np.random.default_rng(10 + seed)
    X = rng.uniform(0, 5, size=(12, 1))
    y = np.sin(X[:, 0]) + 0.2 * rng.standard_normal(12)
    gp = GPRegressor(method="mcmc", seed=seed, n_draws=400).fit(X, y)
    assert gp.theta_samples_.shape == (400, 3)
    assert np.all(gp.rhat_ < 1.1), gp.rhat_
    U = (X - X.min(0)) / (X.max(0) - X.min(0))
    t = (y - y.mean()) / y.std()
    lo, hi = gp.theta_samples_.min(0) - 2.0, gp.theta_samples_.max(0) + 2.0
    axes = [np.linspace(a, b, 32) for a, b in zip(lo, hi, strict=True)]
    mean, sd = _quadrature_posterior_moments(U, t, axes)
    z = (gp.theta_samples_.mean(0) - mean) / (sd / np.sqrt(gp.ess_))
    assert np.all(np.abs(z) < 4.0), z
    # predictions average over the draws: by the law of total variance the mixture's
    # variance is the mean of the draws' variances plus the variance of their means
    Xq = np.linspace(0, 6, 7).reshape(-1, 1)
    mu, std = gp.predict(Xq, return_std=True)
    Uq = (Xq - X.min(0)) / (X.max(0) - X.min(0))
    parts = [post.predict(Uq) for post in gp._posteriors]
    means = np.array([m for m, _ in parts])
    variances = np.array(
        [v + np.exp(post.theta[-1]) for (_, v), post in zip(parts, gp._posteriors, strict=True)]
    )
    total = variances.mean(0) + means.var(0)
    np.testing.assert_allclose(std, y.std() * np.sqrt(total), rtol=1e-9)
    np.testing.assert_allclose(mu, y.mean() + y.std() * means.mean(0), rtol=1e-9)
    assert len(gp._posteriors) == 64  # thinned from the 400 draws


def test_mcmc_rejects_a_hyperprior_less_ml_mix_and_small_n_draws():
    X = np.linspace(0, 1, 6).reshape(-1, 1)
    y = X[:, 0] ** 2
    with pytest.raises(InvalidParameterError, match="n_draws"):
        GPRegressor(method="mcmc", n_draws=2).fit(X, y)
    with pytest.raises(InvalidParameterError, match="'mcmc'"):
        GPRegressor(method="ml", prior="default").fit(X, y)
