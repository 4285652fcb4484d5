"""infer: type-II ML, MAP and MCMC against closed forms, quadrature and finite differences."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from twiddle import InvalidParameterError
from twiddle.evidence import (
    ConvergenceWarning,
    Gamma,
    HalfCauchy,
    InferenceError,
    InferenceResult,
    LogNormal,
    LogUniform,
    Normal,
    Uniform,
    infer,
)
from twiddle.evidence._infer import _Target

from ._models import (
    S8,
    Y8,
    eight_schools,
    eight_schools_grad,
    eight_schools_grid,
    mc_z,
)

PRIORS8 = {"mu": Normal(0.0, 5.0), "tau": HalfCauchy(5.0)}


# ----------------------------------------------------------------------------------
# Optimisation
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [eight_schools, eight_schools_grad], ids=["values", "gradient"])
def test_ml_eight_schools_reaches_the_boundary_maximum(fn):
    """The evidence of eight schools is largest at tau = 0 (the spread of y is below the
    standard errors); there mu is the precision-weighted mean, in closed form."""
    res = infer(fn, PRIORS8, method="ml", seed=0)
    w = 1.0 / S8**2
    mu_hat = float(np.sum(w * Y8) / np.sum(w))
    best = eight_schools({"mu": mu_hat, "tau": 0.0})
    assert res.params_["tau"] < 1e-2
    assert res.params_["mu"] == pytest.approx(mu_hat, abs=1e-4)
    assert res.log_evidence_ == pytest.approx(best, abs=1e-8)
    assert res.objective_ == pytest.approx(res.log_evidence_)
    # a grid over (mu, tau) finds nothing better
    mu, tau = np.meshgrid(np.linspace(-10, 25, 141), np.linspace(0, 30, 121))
    grid = max(eight_schools({"mu": m, "tau": t}) for m, t in zip(mu.flat, tau.flat, strict=True))
    assert res.log_evidence_ >= grid - 1e-12
    assert res.method == "ml" and res.ess_ is None and res.rhat_ is None
    assert {k: v.shape for k, v in res.samples_.items()} == {"mu": (1,), "tau": (1,)}
    assert res.n_chains == 1 and res.n_evaluations_ > 0


def test_map_is_the_natural_scale_mode():
    """With mu ~ N(0, 5^2) and tau ~ HalfCauchy(5) the posterior density of (mu, tau) peaks
    at tau = 0 (both the evidence and the half-Cauchy do), where mu's mode is the
    conjugate normal one; on the log-tau scale the mode would be interior instead."""
    res = infer(eight_schools_grad, PRIORS8, method="map", seed=1)
    w = 1.0 / S8**2
    mu_map = float(np.sum(w * Y8) / (np.sum(w) + 1.0 / 25.0))
    assert res.params_["tau"] < 1e-2
    assert res.params_["mu"] == pytest.approx(mu_map, abs=1e-5)
    expected = (
        eight_schools({"mu": mu_map, "tau": 0.0})
        + Normal(0.0, 5.0).logpdf(mu_map)
        + HalfCauchy(5.0).logpdf(1e-300)
    )
    assert res.objective_ == pytest.approx(expected, abs=1e-8)


def _gaussian_precision(n: int = 30, seed: int = 3) -> tuple[np.ndarray, float]:
    y = np.random.default_rng(seed).normal(0.0, 2.0, n)
    return y, float(y @ y)


def _precision_evidence(y: np.ndarray):
    n, ss = y.size, float(y @ y)

    def f(h: dict[str, float]) -> float:  # y_i ~ N(0, 1 / alpha)
        a = h["alpha"]
        return 0.5 * n * math.log(a / (2 * math.pi)) - 0.5 * a * ss

    return f


def test_ml_and_map_of_a_precision_in_closed_form():
    """y_i ~ N(0, 1/alpha), alpha ~ Gamma(a, b): ML n / S, natural-scale MAP
    (n/2 + a - 1) / (S/2 + b)."""
    y, ss = _gaussian_precision()
    f = _precision_evidence(y)
    prior = {"alpha": Gamma(3.0, 2.0)}
    ml = infer(f, prior, method="ml", seed=0)
    assert ml.params_["alpha"] == pytest.approx(y.size / ss, rel=1e-6)
    mp = infer(f, prior, method="map", seed=0)
    assert mp.params_["alpha"] == pytest.approx((y.size / 2 + 2.0) / (ss / 2 + 2.0), rel=1e-6)


def test_values_only_and_gradient_agree():
    a = infer(eight_schools, PRIORS8, method="map", seed=2)
    b = infer(eight_schools_grad, PRIORS8, method="map", seed=2)
    assert a.objective_ == pytest.approx(b.objective_, abs=1e-8)
    assert a.params_["mu"] == pytest.approx(b.params_["mu"], abs=1e-4)


def test_interval_priors_bound_the_estimate():
    """ML of a precision restricted to [1, 2] when the unrestricted ML is larger."""
    y, ss = _gaussian_precision()
    f = _precision_evidence(y)
    ml_free = y.size / ss
    hi = ml_free / 2
    for prior in (Uniform(hi / 2, hi), LogUniform(hi / 2, hi)):
        res = infer(f, {"alpha": prior}, method="ml", seed=0)
        assert hi - 1e-6 * hi <= res.params_["alpha"] <= hi


@pytest.mark.parametrize("kind", ["ml", "map", "mcmc"])
def test_objective_gradient_in_unconstrained_coordinates(kind):
    """The chain rule through every transform, prior and Jacobian, by central differences."""
    priors = [Normal(0.5, 2.0), Gamma(2.0, 1.0), LogUniform(0.1, 10.0), Uniform(-1.0, 2.0)]
    names = ["a", "b", "c", "d"]

    def fn(h: dict[str, float]) -> tuple[float, dict[str, float]]:
        a, b, c, d = (h[k] for k in names)
        value = -((a - 1) ** 2) - (b - 2) ** 2 / b + math.sin(c) * d - d**2
        grad = {
            "a": -2 * (a - 1),
            "b": -1 + 4 / b**2,
            "c": math.cos(c) * d,
            "d": math.sin(c) - 2 * d,
        }
        return value, grad

    target = _Target(fn, names, priors, kind)
    u = np.array([0.3, -0.2, 0.4, -0.7])
    f0, g = target.logp_grad(u)
    assert f0 == pytest.approx(target.logp(u), rel=1e-12)
    for i in range(u.size):
        e = np.zeros(u.size)
        e[i] = 1e-6
        fd = (target.logp(u + e) - target.logp(u - e)) / 2e-6
        assert g[i] == pytest.approx(fd, rel=1e-6, abs=1e-7)
    # without a gradient, central differences give the same
    values_only = _Target(lambda h: fn(h)[0], names, priors, kind)
    np.testing.assert_allclose(values_only.logp_grad(u)[1], g, rtol=1e-6, atol=1e-7)


def test_same_seed_same_result_and_seed_forms():
    a = infer(eight_schools, PRIORS8, method="map", seed=7)
    b = infer(eight_schools, PRIORS8, method="map", seed=np.random.default_rng(7))
    assert a.params_ == b.params_ and a.n_evaluations_ == b.n_evaluations_


def test_init_is_the_first_start():
    res = infer(eight_schools, PRIORS8, method="ml", n_starts=1, init={"mu": 7.0, "tau": 1.0})
    assert res.params_["tau"] < 1e-2


def test_evidence_minus_infinity_somewhere_is_avoided():
    """-inf (or NaN) marks where the evidence cannot be computed; the search goes around it."""

    def f(h: dict[str, float]) -> float:
        if h["x"] > 3.0:
            return -math.inf
        if h["x"] < -3.0:
            return math.nan
        return -((h["x"] - 2.5) ** 2)

    res = infer(f, {"x": Normal(0.0, 10.0)}, method="ml", seed=0)
    assert res.params_["x"] == pytest.approx(2.5, abs=1e-5)


def test_evidence_never_finite_raises():
    with pytest.raises(InferenceError, match="could not evaluate a finite objective"):
        infer(lambda h: -math.inf, {"x": Normal()}, method="ml", seed=0)


def test_result_repr_is_short():
    res = infer(eight_schools, PRIORS8, method="ml", seed=0)
    assert isinstance(res, InferenceResult)
    assert repr(res).startswith("InferenceResult(method='ml', params_={mu=7.68")


# ----------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"method": "hmc"},
            "The 'method' parameter of infer must be one of 'ml', 'map', 'mcmc', 'nuts'",
        ),
        ({"n_chains": 0}, "The 'n_chains' parameter of infer must be an int >= 1. Got 0 instead."),
        ({"n_draws": 2}, "The 'n_draws' parameter of infer must be an int >= 4. Got 2 instead."),
        ({"n_starts": 1.5}, "The 'n_starts' parameter of infer must be an int >= 1"),
        ({"n_burn": -1}, "The 'n_burn' parameter of infer must be an int >= 0"),
        ({"seed": "x"}, "The 'seed' parameter of infer must be an int >= 0, a numpy"),
        ({"init": {"mu": 0.0}}, "The 'init' parameter of infer must be None or a dict over"),
        ({"init": {"mu": 0.0, "tau": -1.0}}, "The 'init' parameter of infer must give 'tau'"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(InvalidParameterError) as info:
        infer(eight_schools, PRIORS8, **kwargs)
    assert str(info.value).startswith(message)


def test_invalid_priors_and_callable():
    with pytest.raises(InvalidParameterError, match="'priors' parameter of infer"):
        infer(eight_schools, {"mu": (0.0, 5.0)})
    with pytest.raises(InvalidParameterError, match="'priors' parameter of infer"):
        infer(eight_schools, {})
    with pytest.raises(InvalidParameterError, match="'log_evidence' parameter of infer"):
        infer(42, PRIORS8)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", [lambda h: "x", lambda h: (1.0,), lambda h: (1.0, {"mu": 0.0}), lambda h: [1.0]]
)
def test_protocol_violations_are_explained(bad):
    with pytest.raises(InvalidParameterError, match="'log_evidence' parameter of infer"):
        infer(bad, PRIORS8, method="ml", seed=0)


# ----------------------------------------------------------------------------------
# MCMC
# ----------------------------------------------------------------------------------
def test_mcmc_conjugate_precision():
    """alpha | y ~ Gamma(a + n/2, b + S/2) exactly; mean within 3.5 Monte-Carlo errors."""
    y, ss = _gaussian_precision()
    f = _precision_evidence(y)
    res = infer(f, {"alpha": Gamma(3.0, 2.0)}, method="mcmc", seed=0, n_draws=400, n_burn=100)
    shape, rate = 3.0 + y.size / 2, 2.0 + ss / 2
    mean, var = shape / rate, shape / rate**2
    z = mc_z(res.samples_["alpha"], res.n_chains, mean, var + mean**2)
    assert abs(z) < 3.5
    assert res.samples_["alpha"].shape == (4 * 400,)
    assert res.params_["alpha"] == pytest.approx(float(res.samples_["alpha"].mean()))
    assert res.log_evidence_ == pytest.approx(f(res.params_))
    assert res.rhat_["alpha"] < 1.05 and res.ess_["alpha"] > 400


def test_mcmc_eight_schools_one_seed():
    truth = eight_schools_grid()
    res = infer(eight_schools, PRIORS8, method="mcmc", seed=0, n_draws=400, n_burn=100)
    for name in ("mu", "tau"):
        z = mc_z(res.samples_[name], res.n_chains, truth[name], truth[name + "2"])
        assert abs(z) < 3.5, (name, z)


@pytest.mark.slow
def test_mcmc_eight_schools_seed_sweep():
    """Posterior means of mu, tau and log tau against 2-d quadrature, over six seeds:
    at most one |z| > 3.5 per quantity (a miss has probability ~5e-4 if the chains are
    right and the ESS estimate is honest)."""
    truth = eight_schools_grid()
    misses = {"mu": 0, "tau": 0, "logtau": 0}
    for seed in range(6):
        res = infer(eight_schools, PRIORS8, method="mcmc", seed=seed, n_draws=600, n_burn=200)
        draws = {
            "mu": res.samples_["mu"],
            "tau": res.samples_["tau"],
            "logtau": np.log(res.samples_["tau"]),
        }
        for name, x in draws.items():
            z = mc_z(x, res.n_chains, truth[name], truth[name + "2"])
            misses[name] += abs(z) > 3.5
    assert max(misses.values()) <= 1, misses


def test_mcmc_is_deterministic_per_seed():
    kw = {"method": "mcmc", "n_draws": 50, "n_burn": 10, "n_chains": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = infer(eight_schools, PRIORS8, seed=5, **kw)
        b = infer(eight_schools, PRIORS8, seed=5, **kw)
        c = infer(eight_schools, PRIORS8, seed=6, **kw)
    np.testing.assert_array_equal(a.samples_["tau"], b.samples_["tau"])
    assert not np.array_equal(a.samples_["tau"], c.samples_["tau"])


def test_mcmc_warns_on_too_few_draws():
    with pytest.warns(ConvergenceWarning, match="effective sample size below 400"):
        infer(eight_schools, PRIORS8, method="mcmc", seed=0, n_draws=20, n_burn=0)


def test_mcmc_warns_on_high_rhat():
    """A target whose mode drifts while the chains run (as a buggy evidence would) makes
    the first and second halves of each chain disagree: split R-hat flags it."""
    calls = {"n": 0}

    def drifting(h: dict[str, float]) -> float:
        # not a fixed density: the mode moves as the sampler runs, as a bug would
        calls["n"] += 1
        return -0.5 * ((h["x"] - calls["n"] / 2000.0) / 0.01) ** 2

    with pytest.warns(ConvergenceWarning, match="split R-hat above 1.05"):
        infer(drifting, {"x": Normal(0.0, 100.0)}, method="mcmc", seed=0, n_draws=200, n_burn=0)


def test_mcmc_with_lognormal_prior_positive_samples():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # short chains on purpose
        res = infer(
            eight_schools,
            {"mu": Normal(0.0, 5.0), "tau": LogNormal(1.0, 1.0)},
            method="mcmc",
            seed=0,
            n_draws=100,
            n_burn=50,
            n_chains=2,
        )
    assert np.all(res.samples_["tau"] > 0)
