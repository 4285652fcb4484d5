"""Models with posteriors known in closed form or by quadrature, shared by the tests."""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.special import logsumexp

from twiddle._mcmc import effective_sample_size

#: Rubin's (1981) eight schools: estimated effects and their standard errors.
Y8 = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
S8 = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(h: dict[str, float]) -> float:
    """Log evidence of (mu, tau), the group effects integrated out: y_j ~ N(mu, s_j^2 + tau^2)."""
    v = S8**2 + h["tau"] ** 2
    return -0.5 * float(np.sum(np.log(2 * np.pi * v) + (Y8 - h["mu"]) ** 2 / v))


def eight_schools_grad(h: dict[str, float]) -> tuple[float, dict[str, float]]:
    v = S8**2 + h["tau"] ** 2
    r = Y8 - h["mu"]
    value = -0.5 * float(np.sum(np.log(2 * np.pi * v) + r**2 / v))
    tau = h["tau"]
    return value, {
        "mu": float(np.sum(r / v)),
        "tau": float(np.sum(-tau / v + r**2 * tau / v**2)),
    }


@functools.lru_cache(maxsize=4)
def eight_schools_grid(mu_scale: float = 5.0, tau_scale: float = 5.0) -> dict[str, float]:
    """Posterior moments under mu ~ N(0, mu_scale), tau ~ HalfCauchy(tau_scale), by quadrature.

    A 2-d trapezoid rule over (mu, log tau) on a fine grid wide enough that the
    neglected tails are below 1e-10 of the mass.
    """
    mu = np.linspace(-45.0, 55.0, 801)
    u = np.linspace(-14.0, 9.0, 801)
    M, U = np.meshgrid(mu, u, indexing="ij")
    T = np.exp(U)
    v = S8[None, None, :] ** 2 + T[..., None] ** 2
    le = -0.5 * np.sum(np.log(2 * np.pi * v) + (Y8 - M[..., None]) ** 2 / v, axis=-1)
    lp = -0.5 * (M / mu_scale) ** 2 - np.log1p((T / tau_scale) ** 2) + U  # + Jacobian of log
    logp = le + lp
    w = np.exp(logp - logsumexp(logp))  # uniform grid: trapezoid = sum up to the edges
    return {
        "mu": float(np.sum(w * M)),
        "mu2": float(np.sum(w * M * M)),
        "tau": float(np.sum(w * T)),
        "tau2": float(np.sum(w * T * T)),
        "logtau": float(np.sum(w * U)),
        "logtau2": float(np.sum(w * U * U)),
    }


def mc_z(samples: np.ndarray, n_chains: int, truth: float, truth_sq: float) -> float:
    """Monte-Carlo z-score of the sample mean against the true posterior mean.

    The standard error is the true posterior standard deviation over the square root
    of the effective sample size estimated from the chains.
    """
    chains = samples.reshape(n_chains, -1)[:, :, None]
    ess = float(effective_sample_size(chains)[0])
    sd = math.sqrt(max(truth_sq - truth**2, 0.0))
    return (float(samples.mean()) - truth) / (sd / math.sqrt(ess))
