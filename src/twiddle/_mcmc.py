"""Slice sampling (Neal, 2003), the MCMC kernel shared by the GP sampler and ``evidence``.

Notation
--------
x        point of R^d (hyperparameters in their unconstrained, e.g. log, coordinates)
f(x)     log density up to a constant (log evidence + log hyperprior)
w        initial bracket width per coordinate
y        log height of the slice: f(x) + log U, U ~ Uniform(0, 1)

Each sweep updates every coordinate in turn with univariate slice sampling:
the "stepping-out" procedure places a bracket of width ``w`` at random around
``x_i`` and widens it until both ends are outside the slice, then "shrinkage"
draws uniformly from the bracket, shrinking it towards ``x_i`` on rejections
(Neal 2003, figures 3 and 5). The chain leaves the target distribution
invariant; no step size needs tuning beyond ``w``, which only affects speed.

Reference: R. M. Neal, "Slice sampling", Annals of Statistics 31(3), 2003.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

LogDensity = Callable[[np.ndarray], float]


def slice_sweep(
    logp: LogDensity,
    x: np.ndarray,
    fx: float,
    rng: np.random.Generator,
    width: np.ndarray | float = 1.0,
    max_steps: int = 32,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """One sweep of coordinate-wise slice sampling.

    Parameters
    ----------
    logp : callable
        ``logp(x) -> float``, the log density up to a constant; ``-inf`` outside the support.
    x : array of shape (d,)
        Current state (not modified).
    fx : float
        ``logp(x)``.
    rng : numpy.random.Generator
    width : float or array of shape (d,)
        Initial bracket width per coordinate.
    max_steps : int
        Bound on stepping-out steps per side.
    lower, upper : arrays of shape (d,), optional
        Hard bounds; brackets are clipped to them.

    Returns
    -------
    x_new : array of shape (d,)
    f_new : float
        ``logp(x_new)``.
    """
    x = np.array(x, dtype=float)
    d = x.size
    w = np.broadcast_to(np.asarray(width, dtype=float), (d,))
    lo_b = np.full(d, -np.inf) if lower is None else np.asarray(lower, dtype=float)
    hi_b = np.full(d, np.inf) if upper is None else np.asarray(upper, dtype=float)
    for i in rng.permutation(d):
        y = fx + math.log(rng.random() or 1e-300)
        xi = x[i]
        left = xi - w[i] * rng.random()
        right = left + w[i]
        j = int(rng.integers(0, max_steps + 1))
        k = max_steps - j

        def at(v: float, i: int = i) -> float:
            z = x.copy()
            z[i] = v
            return logp(z)

        left = max(left, lo_b[i])
        right = min(right, hi_b[i])
        while j > 0 and left > lo_b[i] and at(left) > y:
            left = max(left - w[i], lo_b[i])
            j -= 1
        while k > 0 and right < hi_b[i] and at(right) > y:
            right = min(right + w[i], hi_b[i])
            k -= 1
        while True:
            v = left + rng.random() * (right - left)
            fv = at(v)
            if fv > y:
                x[i] = v
                fx = fv
                break
            if v < xi:
                left = v
            else:
                right = v
            if right - left < 1e-12:
                break  # numerically empty bracket: keep the current value
    return x, fx


def slice_sample(
    logp: LogDensity,
    x0: np.ndarray,
    n_samples: int,
    rng: np.random.Generator,
    *,
    burn: int = 0,
    thin: int = 1,
    width: np.ndarray | float = 1.0,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
) -> np.ndarray:
    """Draw ``n_samples`` states of a slice-sampling chain started at ``x0``.

    Returns
    -------
    samples : array of shape (n_samples, d)
    """
    x = np.array(x0, dtype=float)
    fx = logp(x)
    if not math.isfinite(fx):
        raise ValueError("slice_sample needs a starting point with finite log density.")
    out = np.empty((n_samples, x.size))
    for _ in range(burn):
        x, fx = slice_sweep(logp, x, fx, rng, width, lower=lower, upper=upper)
    for s in range(n_samples):
        for _ in range(thin):
            x, fx = slice_sweep(logp, x, fx, rng, width, lower=lower, upper=upper)
        out[s] = x
    return out


def effective_sample_size(chains: np.ndarray) -> np.ndarray:
    """Effective sample size per coordinate, from one or more chains.

    Uses the initial-positive-sequence estimate of the integrated autocorrelation
    time (Geyer 1992) on the pooled, chain-centred autocovariances.

    Parameters
    ----------
    chains : array of shape (n_chains, n_draws, d) or (n_draws, d)

    Returns
    -------
    ess : array of shape (d,)
    """
    c = np.asarray(chains, dtype=float)
    if c.ndim == 2:
        c = c[None]
    m, n, d = c.shape
    ess = np.empty(d)
    for j in range(d):
        x = c[:, :, j] - c[:, :, j].mean(axis=1, keepdims=True)
        var = float(np.mean(x * x))
        if var == 0.0:
            ess[j] = float(m * n)
            continue
        nfft = 1 << (2 * n - 1).bit_length()
        f = np.fft.rfft(x, nfft, axis=1)
        acov = np.fft.irfft(f * np.conj(f), nfft, axis=1)[:, :n].mean(axis=0) / n
        rho = acov / acov[0]
        tau = -1.0
        for t in range(0, n - 1, 2):
            pair = rho[t] + rho[t + 1]
            if pair <= 0:
                break
            tau += 2.0 * pair
        ess[j] = m * n / max(tau, 1e-12 if tau > 0 else 1.0)
    return ess


def split_rhat(chains: np.ndarray) -> np.ndarray:
    """Split-R-hat per coordinate (Gelman et al., BDA3 section 11.4).

    Parameters
    ----------
    chains : array of shape (n_chains, n_draws, d)

    Returns
    -------
    rhat : array of shape (d,)
        Values near 1 (say below 1.01-1.05) suggest the chains mix.
    """
    c = np.asarray(chains, dtype=float)
    if c.ndim == 2:
        c = c[None]
    _, n, d = c.shape
    half = n // 2
    if half < 2:
        return np.full(d, np.nan)
    halves = np.concatenate([c[:, :half], c[:, n - half :]], axis=0)  # (2m, half, d)
    means = halves.mean(axis=1)
    b = half * means.var(axis=0, ddof=1)
    w = halves.var(axis=1, ddof=1).mean(axis=0)
    var_plus = (half - 1) / half * w + b / half
    with np.errstate(divide="ignore", invalid="ignore"):
        rhat: np.ndarray = np.sqrt(var_plus / w)
    return rhat
