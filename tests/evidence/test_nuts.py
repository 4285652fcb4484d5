"""infer(method="nuts"): NumPyro's NUTS against quadrature (skipped without the extra)."""

from __future__ import annotations

import pytest

jnp = pytest.importorskip("jax.numpy")
pytest.importorskip("numpyro")

import numpy as np  # noqa: E402

from twiddle import InvalidParameterError  # noqa: E402
from twiddle.evidence import Gamma, HalfCauchy, Normal, infer  # noqa: E402
from twiddle.evidence._priors import Prior  # noqa: E402

from ._models import S8, Y8, eight_schools, eight_schools_grid, mc_z  # noqa: E402

PRIORS8 = {"mu": Normal(0.0, 5.0), "tau": HalfCauchy(5.0)}


def eight_schools_jax(h):
    v = jnp.asarray(S8) ** 2 + h["tau"] ** 2
    return -0.5 * jnp.sum(jnp.log(2 * jnp.pi * v) + (jnp.asarray(Y8) - h["mu"]) ** 2 / v)


@pytest.mark.slow
def test_nuts_eight_schools_matches_quadrature():
    truth = eight_schools_grid()
    res = infer(eight_schools_jax, PRIORS8, method="nuts", seed=0, n_draws=500, n_burn=300)
    assert res.method == "nuts" and res.n_chains == 4
    assert res.samples_["mu"].shape == (4 * 500,)
    for name in ("mu", "tau"):
        z = mc_z(res.samples_[name], res.n_chains, truth[name], truth[name + "2"])
        assert abs(z) < 3.5, (name, z)
    assert res.rhat_["tau"] < 1.05
    # log_evidence_ is the evidence at the posterior mean (float32 in JAX by default)
    assert res.log_evidence_ == pytest.approx(eight_schools(res.params_), rel=1e-5)
    assert res.n_evaluations_ > 0


@pytest.mark.slow
def test_nuts_conjugate_precision_and_same_seed_same_draws():
    rng = np.random.default_rng(3)
    y = rng.normal(0.0, 0.5, size=30)
    ss = float(y @ y)

    def log_evidence(h):  # y_i ~ N(0, 1 / alpha)
        return 0.5 * y.size * jnp.log(h["alpha"] / (2 * jnp.pi)) - 0.5 * h["alpha"] * ss

    kw = dict(method="nuts", n_draws=300, n_burn=200, n_chains=2)
    a = infer(log_evidence, {"alpha": Gamma(3.0, 2.0)}, seed=1, **kw)
    b = infer(log_evidence, {"alpha": Gamma(3.0, 2.0)}, seed=1, **kw)
    np.testing.assert_array_equal(a.samples_["alpha"], b.samples_["alpha"])
    shape, rate = 3.0 + y.size / 2, 2.0 + ss / 2  # alpha | y ~ Gamma(shape, rate)
    mean, var = shape / rate, shape / rate**2
    z = mc_z(a.samples_["alpha"], a.n_chains, mean, var + mean**2)
    assert abs(z) < 3.5


def test_nuts_rejects_a_prior_it_cannot_map():
    class Custom(Prior):
        def _logpdf(self, x):
            return -x

    with pytest.raises(InvalidParameterError, match="method='mcmc'"):
        infer(eight_schools_jax, {"mu": Custom(), "tau": HalfCauchy(5.0)}, method="nuts")
