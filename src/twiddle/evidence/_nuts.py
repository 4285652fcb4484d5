"""No-U-turn sampling of hyperparameters with NumPyro (the optional ``nuts`` extra).

Notation
--------
h            the hyperparameters, a dict of scalars on their natural scale
p(h)         the hyperpriors (twiddle priors, mapped one to one onto NumPyro's
             distributions, which also supply the transforms to unconstrained space)
log p(D | h) the user's log evidence, written with ``jax.numpy`` so that JAX can trace
             and differentiate it

The model handed to NumPyro is ``h_k ~ p_k`` for every name, plus the factor
``log p(D | h)``; NUTS (Hoffman and Gelman 2014) runs in NumPyro's unconstrained
coordinates with its default step-size and mass-matrix adaptation during warm-up.
Where slice sampling (:func:`twiddle.evidence.infer` with ``method="mcmc"``) needs about
``d`` evidence evaluations per sweep and mixes slowly in correlated posteriors of many
hyperparameters (a hierarchical model with one scale per group), NUTS uses gradients
and mixes in far fewer steps per effective draw.

JAX computes in float32 unless its ``jax_enable_x64`` option is on; this module leaves
that global setting to the user.

References
----------
M. D. Hoffman and A. Gelman, "The No-U-Turn sampler", JMLR 15, 2014.
D. Phan, N. Pradhan and M. Jankowiak, "Composable effects for flexible and accelerated
probabilistic programming in NumPyro", 2019.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from twiddle._mcmc import effective_sample_size, split_rhat
from twiddle.evidence._priors import (
    Gamma,
    HalfCauchy,
    InverseGamma,
    LogNormal,
    LogUniform,
    Normal,
    Prior,
    Uniform,
)

_INSTALL = 'method="nuts" needs NumPyro, an optional extra: pip install "twiddle[nuts]"'


def _import() -> tuple[Any, Any, Any, Any]:
    try:
        import jax
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist
    except ImportError as err:
        raise ImportError(_INSTALL) from err
    return jax, jnp, numpyro, dist


def check_priors(priors: list[Prior]) -> None:
    """Raise TypeError, naming the prior, if one has no NumPyro counterpart."""
    supported = (Normal, Gamma, InverseGamma, LogNormal, HalfCauchy, LogUniform, Uniform)
    for p in priors:
        if not isinstance(p, supported):
            raise TypeError(
                f"method='nuts' supports twiddle's Normal, Gamma, InverseGamma, LogNormal, "
                f"HalfCauchy, Uniform and LogUniform priors. Got {type(p).__name__}; use "
                "method='mcmc' (slice sampling), which takes any Prior."
            )


def to_numpyro(prior: Prior, dist: Any) -> Any:
    """The NumPyro distribution of a twiddle prior (same density, same support)."""
    if isinstance(prior, Normal):
        return dist.Normal(prior.loc, prior.scale)
    if isinstance(prior, Gamma):
        return dist.Gamma(prior.shape, prior.rate)
    if isinstance(prior, InverseGamma):
        return dist.InverseGamma(prior.shape, prior.scale)
    if isinstance(prior, LogNormal):
        return dist.LogNormal(prior.loc, prior.scale)
    if isinstance(prior, HalfCauchy):
        return dist.HalfCauchy(prior.scale)
    if isinstance(prior, LogUniform):
        return dist.LogUniform(prior.low, prior.high)
    if isinstance(prior, Uniform):
        return dist.Uniform(prior.low, prior.high)
    check_priors([prior])  # raises, naming the prior
    raise AssertionError("unreachable")


def run_nuts(
    log_evidence: Callable[[dict[str, Any]], Any],
    names: list[str],
    priors: list[Prior],
    *,
    seed: int,
    n_chains: int,
    n_draws: int,
    n_burn: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, Any]:
    """Sample ``p(h | D)`` by NUTS.

    Returns
    -------
    chains : array of shape (n_chains, n_draws, d)
        Draws on the natural scale.
    ess, rhat : arrays of shape (d,)
        twiddle's effective sample size and split R-hat of the chains (the same
        estimators as for slice sampling, so the two methods compare like for like).
    n_steps : int
        Leapfrog steps taken after warm-up (each evaluates the evidence and its
        gradient).
    evidence_at : callable
        ``evidence_at(dict of floats) -> float``, the log evidence evaluated through JAX.
    """
    jax, jnp, numpyro, dist = _import()
    from numpyro.infer import MCMC, NUTS

    dists = [to_numpyro(p, dist) for p in priors]

    def model() -> None:
        h = {k: numpyro.sample(k, d) for k, d in zip(names, dists, strict=True)}
        numpyro.factor("log_evidence", log_evidence(h))

    mcmc = MCMC(
        NUTS(model),
        num_warmup=n_burn,
        num_samples=n_draws,
        num_chains=n_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(seed), extra_fields=("num_steps",))
    grouped = mcmc.get_samples(group_by_chain=True)
    chains = np.stack([np.asarray(grouped[k], dtype=float) for k in names], axis=-1)
    n_steps = int(np.sum(np.asarray(mcmc.get_extra_fields()["num_steps"])))

    def evidence_at(h: dict[str, float]) -> float:
        return float(log_evidence({k: jnp.asarray(v) for k, v in h.items()}))

    return chains, effective_sample_size(chains), split_rhat(chains), n_steps, evidence_at
