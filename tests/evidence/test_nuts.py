"""infer(method="nuts"): NumPyro's NUTS against quadrature (skipped without the extra).

JAX starts threads when it is imported, and a process that has them must not fork
(some of the executor tests fork on purpose), so each test runs in a fresh
interpreter and JAX is never imported into the test process itself.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

if importlib.util.find_spec("numpyro") is None:  # pragma: no cover - optional extra
    pytest.skip("the nuts extra (NumPyro) is not installed", allow_module_level=True)

TESTS = Path(__file__).resolve().parents[1]

PRELUDE = """
import numpy as np
import jax.numpy as jnp
from twiddle import InvalidParameterError
from twiddle.evidence import Gamma, HalfCauchy, Normal, infer
from twiddle.evidence._priors import Prior
from evidence._models import S8, Y8, eight_schools, eight_schools_grid, mc_z

PRIORS8 = {"mu": Normal(0.0, 5.0), "tau": HalfCauchy(5.0)}

def eight_schools_jax(h):
    v = jnp.asarray(S8) ** 2 + h["tau"] ** 2
    return -0.5 * jnp.sum(jnp.log(2 * jnp.pi * v) + (jnp.asarray(Y8) - h["mu"]) ** 2 / v)
"""


def run_isolated(body: str) -> None:
    code = PRELUDE + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_nuts_eight_schools_matches_quadrature():
    run_isolated(
        """
        truth = eight_schools_grid()
        res = infer(eight_schools_jax, PRIORS8, method="nuts", seed=0, n_draws=500, n_burn=300)
        assert res.method == "nuts" and res.n_chains == 4
        assert res.samples_["mu"].shape == (4 * 500,)
        for name in ("mu", "tau"):
            z = mc_z(res.samples_[name], res.n_chains, truth[name], truth[name + "2"])
            assert abs(z) < 3.5, (name, z)
        assert res.rhat_["tau"] < 1.05
        # the evidence at the posterior mean (JAX computes in float32 by default)
        assert abs(res.log_evidence_ - eight_schools(res.params_)) < 1e-5 * abs(
            eight_schools(res.params_)
        )
        assert res.n_evaluations_ > 0
        """
    )


@pytest.mark.slow
def test_nuts_conjugate_precision_and_same_seed_same_draws():
    run_isolated(
        """
        import warnings
        warnings.simplefilter("error")  # no convergence warning expected
        rng = np.random.default_rng(3)
        y = rng.normal(0.0, 0.5, size=30)
        ss = float(y @ y)

        def log_evidence(h):  # y_i ~ N(0, 1 / alpha)
            return 0.5 * y.size * jnp.log(h["alpha"] / (2 * jnp.pi)) - 0.5 * h["alpha"] * ss

        kw = dict(method="nuts", n_draws=600, n_burn=300, n_chains=2)
        a = infer(log_evidence, {"alpha": Gamma(3.0, 2.0)}, seed=1, **kw)
        b = infer(log_evidence, {"alpha": Gamma(3.0, 2.0)}, seed=1, **kw)
        np.testing.assert_array_equal(a.samples_["alpha"], b.samples_["alpha"])
        shape, rate = 3.0 + y.size / 2, 2.0 + ss / 2  # alpha | y ~ Gamma(shape, rate)
        mean, var = shape / rate, shape / rate**2
        z = mc_z(a.samples_["alpha"], a.n_chains, mean, var + mean**2)
        assert abs(z) < 3.5, z
        """
    )


def test_nuts_rejects_a_prior_it_cannot_map():
    # the prior check comes before NumPyro is imported, so this runs in-process
    from twiddle import InvalidParameterError
    from twiddle.evidence import HalfCauchy, infer
    from twiddle.evidence._priors import Prior

    class Custom(Prior):
        def _logpdf(self, x):
            return -x

    with pytest.raises(InvalidParameterError, match="method='mcmc'"):
        infer(lambda h: 0.0, {"mu": Custom(), "tau": HalfCauchy(5.0)}, method="nuts")
