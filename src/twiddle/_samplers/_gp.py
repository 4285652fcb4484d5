"""Gaussian-process Bayesian optimisation sampler.

The GP's own hyperparameters (length scales, signal and noise variance) are fitted
by maximising log evidence + log hyperprior (``fit="map"``) or integrated out by
slice sampling (``fit="mcmc"``, Snoek et al. 2012); both give a stack of
hyperparameter samples (MAP is a stack of one) over which acquisition is averaged.

Observation model. Values are signed so lower is better, standardised, passed
through a Yeo-Johnson power transform fitted by maximum likelihood (so heavy tails
and failed-looking outliers do not dominate), and standardised again. The model is of
the k-fold mean on the study's fixed folds, with a learned homoscedastic noise. A
trial stopped by fold racing enters at its partial mean corrected for the fold
effects all trials share, with that estimate's variance as known noise (mapped
through the same transform); see ``GPSampler(fold_noise=...)``.

Acquisition. Log expected improvement (numerically stable in the far tail) over the
best posterior mean at the observed points. Running trials are handled by "kriging
believer" fantasies: they enter the GP at their posterior mean, which collapses the
variance there, so parallel workers do not all propose the same point. Batch
proposals are chosen one after another in the same way.

Acquisition optimiser (mixed spaces). Random candidates decoded through the space
(so integers, steps, categoricals and conditions are always valid) plus
perturbations of the best observations at three scales; the best few start one
batched L-BFGS-B on the active continuous dimensions with analytic gradients, then,
in spaces with integer or categorical dimensions, a greedy neighbourhood search over
integer steps and categorical choices.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

from twiddle._errors import InvalidParameterError
from twiddle._gp import (
    FeatureMap,
    GPPosterior,
    Hyperprior,
    fit_map,
    group_sq_dists,
    log_ei,
    log_ei_grad,
    sample_mcmc,
)
from twiddle._samplers._base import History, Sampler
from twiddle._samplers._simple import SobolSampler
from twiddle._space import Categorical, Config, Float, Int, Space
from twiddle._threads import single_thread
from twiddle._trial import TrialState, fold_matrix


@dataclasses.dataclass(frozen=True)
class _FitState:
    """The last MAP fit for one space: optimum, objective, observations, age, full fits."""

    theta: np.ndarray
    value: float
    n: int
    since_full: int
    n_full: int


def _key(config: Config) -> str:
    return json.dumps(config, sort_keys=True)


def _half(u: np.ndarray) -> np.ndarray:
    """``u`` with its NaNs (inactive dimensions) at 0.5, for decoding."""
    return np.where(np.isnan(u), 0.5, u)


def warp_outputs(y: np.ndarray, se: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Standardise, Yeo-Johnson transform and standardise ``y``; map ``se`` alongside.

    Returns
    -------
    z : array of shape (n,)
    noise : array of shape (n,) or None
        Variances of the known noise in the units of ``z``.
    """
    mu, sd = float(np.mean(y)), float(np.std(y))
    if not sd > 0:
        return np.zeros_like(y), None if se is None else np.zeros_like(y)
    u = (y - mu) / sd
    lam = yeojohnson_lambda(u)
    v = yeojohnson(u, lam)
    m2, s2 = float(np.mean(v)), float(np.std(v))
    if not s2 > 0:
        return np.zeros_like(y), None if se is None else np.zeros_like(y)
    z = (v - m2) / s2
    noise = None
    if se is not None:
        # derivative of the Yeo-Johnson transform at u
        pos = u >= 0
        deriv = np.empty_like(u)
        deriv[pos] = np.power(u[pos] + 1.0, lam - 1.0)
        deriv[~pos] = np.power(1.0 - u[~pos], 1.0 - lam)
        scaled = np.nan_to_num(se) / sd * deriv / s2
        noise = scaled * scaled
    return z, noise


def yeojohnson(u: np.ndarray, lam: float) -> np.ndarray:
    """The Yeo-Johnson power transform of ``u`` (Yeo and Johnson, 2000)."""
    out = np.empty_like(u)
    pos = u >= 0
    if abs(lam) > 1e-12:
        out[pos] = (np.power(u[pos] + 1.0, lam) - 1.0) / lam
    else:
        out[pos] = np.log1p(u[pos])
    if abs(lam - 2.0) > 1e-12:
        out[~pos] = -(np.power(1.0 - u[~pos], 2.0 - lam) - 1.0) / (2.0 - lam)
    else:
        out[~pos] = -np.log1p(-u[~pos])
    return out


def yeojohnson_lambda(u: np.ndarray, bounds: tuple[float, float] = (-2.0, 4.0)) -> float:
    """Maximum-likelihood Yeo-Johnson exponent (normal log-likelihood profile), bounded.

    The profile is evaluated on a grid of exponents at once (step 0.1), then on a finer
    grid (step 0.005) around the best point, and the vertex of a parabola through the
    three best fine points is taken: a few vectorised evaluations instead of a scalar
    search's twenty or thirty.
    """
    n = u.size
    lp = np.log1p(np.abs(u))
    pos = u >= 0
    jac = float(np.sum(np.where(pos, lp, -lp)))

    def neg_loglik(lams: np.ndarray) -> np.ndarray:
        # (1 + u)^lam - 1) / lam for u >= 0 and -((1 - u)^(2 - lam) - 1) / (2 - lam)
        # below, both as expm1(a log1p|u|) / a, with the limit log1p|u| at a = 0
        a = np.where(pos, lams[:, None], 2.0 - lams[:, None])
        with np.errstate(all="ignore"):
            v = np.where(np.abs(a) > 1e-12, np.expm1(a * lp) / np.where(a == 0, 1.0, a), lp)
            var = np.var(np.where(pos, v, -v), axis=1)
            out = 0.5 * n * np.log(var) - (lams - 1.0) * jac
        return np.where(np.isfinite(out) & (var > 0), out, np.inf)

    lo, hi = bounds
    coarse = np.linspace(lo, hi, round((hi - lo) / 0.1) + 1)
    c = coarse[int(np.argmin(neg_loglik(coarse)))]
    fine = np.linspace(max(lo, c - 0.1), min(hi, c + 0.1), 41)
    f = neg_loglik(fine)
    i = int(np.argmin(f))
    if not math.isfinite(float(f[i])):
        return 1.0
    lam = float(fine[i])
    if 0 < i < fine.size - 1:
        f0, f1, f2 = (float(x) for x in f[i - 1 : i + 2])
        curv = f0 - 2.0 * f1 + f2
        if curv > 0 and math.isfinite(curv):
            lam += 0.5 * (fine[1] - fine[0]) * (f0 - f2) / curv
    return lam


def fold_adjusted_means(trials: list[Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The k-fold mean of every trial, estimated for trials with missing folds.

    All trials of a study are scored on the same k folds, so fold ``j``'s scores share
    a fold effect ``f_j`` (how much easier or harder that fold is). In the additive
    model ``F_ij = mu_i + f_j + e_ij`` (``sum_j f_j = 0``), the quantity the sampler
    models is the k-fold mean ``mu_i + mean_j e_ij``. A complete trial observes it
    exactly. A trial with only the folds ``S`` (``m`` of ``k``) is estimated by
    ``mean_{j in S} (F_ij - f_j)``, whose error has variance
    ``sigma^2 (k - m) / (k m)``, with ``sigma^2`` the configuration-by-fold
    interaction variance. ``f`` and ``sigma^2`` are estimated from the ``n`` complete
    trials (two-way analysis of variance, ``(n - 1)(k - 1)`` degrees of freedom); the
    error of the estimated ``f`` adds a factor ``1 + 1 / n`` to that variance. With
    fewer than two complete trials (fold racing can stop nearly every trial behind an
    early incumbent), the partial means are not corrected and ``sigma^2`` is the
    spread of each trial's own fold scores, pooled over the trials with two or more.

    Parameters
    ----------
    trials : list of FrozenTrial
        Complete trials and trials with some fold scores, in any order.

    Returns
    -------
    (means, se) with arrays of shape (len(trials),): the estimated k-fold means
    (complete trials: their own mean) and the standard deviations of their errors
    (0 for complete trials); NaN means for trials with no finite fold score; None
    when there are fewer than two folds, or no complete trial pair and no trial with
    two finite fold scores.
    """
    F = fold_matrix(trials)
    F[~np.isfinite(F)] = np.nan  # an infinite fold score says nothing either
    k = F.shape[1]
    full = ~np.isnan(F).any(axis=1) if k else np.zeros(len(trials), bool)
    n = int(full.sum())
    if k < 2:
        return None
    seen = ~np.isnan(F)
    m = seen.sum(axis=1)
    if n >= 2:
        D = F[full] - F[full].mean(axis=1, keepdims=True)
        effect = D.mean(axis=0)  # sums to zero
        resid = D - effect
        sigma2 = float(np.sum(resid * resid)) / ((n - 1) * (k - 1))
        inflate = 1.0 + 1.0 / n
    else:
        # too few complete trials to separate fold effects from the interaction: no
        # correction, and the spread of every trial's own folds (fold effects
        # included, so larger) pooled over the trials with two or more
        many = m >= 2
        if not many.any():
            return None
        dev = F[many] - np.nanmean(F[many], axis=1, keepdims=True)
        sigma2 = float(np.nansum(dev * dev)) / float(np.sum(m[many] - 1))
        effect, inflate = np.zeros(k), 1.0
    means = np.full(len(trials), np.nan)
    means[full] = F[full].mean(axis=1)
    se = np.zeros(len(trials))
    for r in np.flatnonzero(~full & (m > 0)):
        means[r] = float(np.mean(F[r, seen[r]] - effect[seen[r]]))
        se[r] = math.sqrt(sigma2 * (k - m[r]) / (k * m[r]) * inflate)
    return means, se


class GPSampler(Sampler):
    """Bayesian optimisation with a Gaussian process (Matérn-5/2, ARD, categorical kernel).

    Parameters
    ----------
    fit : {"map", "mcmc"}, default "map"
        Fit kernel hyperparameters by maximum a posteriori (evidence + hyperprior), or
        integrate them out by slice sampling.
    n_startup : int, optional
        Trials drawn by scrambled Sobol before the GP takes over. Default
        ``max(10, d + 1)`` for a ``d``-dimensional space (on Hartmann6, 10 start points
        escaped local minima more often than 7: mean best -3.20 against -3.00 over 8
        seeds at 50 trials).
    n_candidates : int, default 512
        Uniform random candidates scored per proposal, next to perturbations of the
        five best observations (at three scales); the best four start local
        optimisation.
    n_mcmc : int, default 8
        Hyperparameter samples with ``fit="mcmc"``.
    hyperprior : Hyperprior, optional
        Priors on the log hyperparameters; default :meth:`Hyperprior.default`.
    fold_noise : {"partial", "se", "off"}, default "partial"
        How trials with fold scores enter the model. The GP models the objective
        itself, the mean score over the study's k folds, which are the same for every
        trial. ``"partial"``: a complete trial observes it (with the learned noise
        only); a trial stopped by fold racing after m folds enters at its mean over
        those folds corrected for the fold effects shared by all trials, with the
        variance of that estimate as known noise (see :func:`fold_adjusted_means`).
        ``"se"``: every trial's standard error of the fold mean is its known noise
        (heteroscedastic), and stopped trials enter at their partial mean. ``"off"``:
        fold scores are ignored and stopped trials left out. ``"se"`` suits folds
        redrawn for each trial; on fixed folds the standard error measures how well
        the k-fold mean predicts new data, not how well two configurations are told
        apart, and it made the GP worse: on 20 scikit-learn tasks x 5 seeds at 100
        trials, normalised score 85.7 against 95.0 and held-out score 0.006 lower
        (``benchmarks/bo/README.md``).

    Notes
    -----
    Cost per proposal. The kernel hyperparameters are refitted fully (from the
    previous optimum to convergence, and every third time from a random draw of the
    hyperprior too) on the first proposal, every ``refit_every`` = 10 proposals after
    that, and whenever the objective gained per new observation falls below
    ``refit_drop`` = -3 nats (the model was surprised); in between, a short
    warm-started fit (``warm_maxiter`` = 6 L-BFGS-B iterations) tracks the optimum.
    The acquisition optimiser runs one batched L-BFGS-B (``acq_maxiter`` = 25
    iterations) from the ``n_starts`` = 4 best candidates. These tuning attributes
    are set in ``__init__`` and can be changed on an instance.
    """

    name = "gp"

    def __init__(
        self,
        *,
        fit: str = "map",
        n_startup: int | None = None,
        n_candidates: int = 512,
        n_mcmc: int = 8,
        hyperprior: Hyperprior | None = None,
        fold_noise: str = "partial",
    ) -> None:
        if fit not in ("map", "mcmc"):
            raise InvalidParameterError(
                f"The 'fit' parameter of GPSampler must be 'map' or 'mcmc'. Got {fit!r} instead."
            )
        if n_startup is not None and (not isinstance(n_startup, int) or n_startup < 1):
            raise InvalidParameterError(
                f"The 'n_startup' parameter of GPSampler must be an int >= 1 or None. "
                f"Got {n_startup!r} instead."
            )
        self.fit = fit
        self.n_startup = n_startup
        self.n_candidates = int(n_candidates)
        self.n_starts = 4
        self.n_top = 5
        self.acq_maxiter = 25
        self.n_perturb = 20
        self.n_mcmc = int(n_mcmc)
        self.hyperprior = hyperprior
        if fold_noise not in ("partial", "se", "off"):
            raise InvalidParameterError(
                "The 'fold_noise' parameter of GPSampler must be 'partial', 'se' or 'off'. "
                f"Got {fold_noise!r} instead."
            )
        self.fold_noise = fold_noise
        self._sobol = SobolSampler()
        self._warm: dict[str, np.ndarray] = {}
        self._fits: dict[str, _FitState] = {}
        self._encoded: dict[str, dict[int, tuple[Config, str, np.ndarray | None]]] = {}
        self.refit_every = 10
        self.refit_drop = -3.0
        self.warm_maxiter = 6
        self.n_fit_restarts = 1
        self.restart_every = 3
        self.last_info: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"GPSampler(fit={self.fit!r})"

    # -- data -----------------------------------------------------------------------
    @staticmethod
    def _encode(
        space: Space, cache: dict[int, tuple[Config, str, np.ndarray | None]], trial: Any
    ) -> np.ndarray | None:
        """Unit-cube row of a finished trial (None if not of this space), cached by number.

        Validating a configuration is the slow part of assembling the data; a finished
        trial's configuration does not change, so it is validated once. The cached
        configuration is compared on every use, so a sampler reused by another study
        (same numbers, other configurations) stays correct.
        """
        hit = cache.get(trial.number)
        if hit is not None and hit[0] == trial.params:
            return hit[2]
        try:
            row: np.ndarray | None = space.encode(space.validate(trial.params))[0]
        except ValueError:
            row = None  # a trial from another space (e.g. enqueued by hand): skipped
        cache[trial.number] = (dict(trial.params), _key(trial.params), row)
        return row

    def _data(
        self, space: Space, history: History
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Unit-cube rows, signed values (lower is better) and known noise (or None).

        Complete trials enter at their value. Trials stopped by fold racing (PRUNED
        with fold scores) enter as :attr:`fold_noise` says; trials pruned on a learning
        curve have no fold scores and are left out: their value is not on the scale of
        the final objective.
        """
        sign = -1.0 if history.direction == "maximize" else 1.0
        cache = self._encoded.setdefault(_key(space.to_json()), {})
        rows: list[np.ndarray] = []
        ys: list[float] = []
        chosen: list[Any] = []
        for t in history.trials:
            if t.value is None or not math.isfinite(t.value):
                continue
            if t.state is TrialState.PRUNED:
                if self.fold_noise == "off" or t.n_folds_done == 0:
                    continue
            elif t.state is not TrialState.COMPLETE:
                continue
            row = self._encode(space, cache, t)
            if row is None:
                continue
            rows.append(row)
            ys.append(sign * t.value)
            chosen.append(t)
        if not rows:
            return np.empty((0, len(space))), np.empty(0), None
        y = np.array(ys, dtype=float)
        U = np.vstack(rows)
        if self.fold_noise == "se":
            se = np.array([math.nan if t.value_se is None else t.value_se for t in chosen])
            keep = np.array(
                [t.state is TrialState.COMPLETE or t.value_se is not None for t in chosen]
            )
            U, y, se = U[keep], y[keep], se[keep]
            return U, y, None if np.all(np.isnan(se)) else np.nan_to_num(se, nan=0.0)
        partial = [i for i, t in enumerate(chosen) if t.state is TrialState.PRUNED]
        if not partial:
            return U, y, None
        adjusted = fold_adjusted_means(chosen)
        if adjusted is None:  # nothing to say how far a partial mean may be off
            keep = np.array([t.state is TrialState.COMPLETE for t in chosen])
            return U[keep], y[keep], None
        means, se = adjusted
        y[partial] = sign * means[partial]
        ok = np.isfinite(y)  # a stopped trial whose fold scores are all NaN says nothing
        return U[ok], y[ok], se[ok]

    # -- main entry -------------------------------------------------------------------
    def suggest(
        self, space: Space, history: History, rng: np.random.Generator, n: int = 1
    ) -> list[Config]:
        # GP matrices are small: BLAS threads only add contention (and are slower on a
        # busy machine by an order of magnitude), so the sampler runs single-threaded.
        with single_thread():
            return self._suggest(space, history, rng, n)

    def _suggest(
        self, space: Space, history: History, rng: np.random.Generator, n: int
    ) -> list[Config]:
        d = len(space)
        n_startup = self.n_startup or max(10, d + 1)
        U, y, se = self._data(space, history)
        self.last_info = {}
        if y.size < n_startup or np.ptp(y) == 0:
            self.last_info = {"phase": "startup"}
            return self._sobol.suggest(space, history, rng, n)

        fmap = feature_map(space)
        z, noise = warp_outputs(y, se)
        Z = fmap.transform(U)
        S = group_sq_dists(Z, Z, fmap.groups, d)
        prior = self.hyperprior or Hyperprior.default(d)
        tag = _key(space.to_json())
        if self.fit == "map":
            theta, ok, kind = self._fit_map(tag, S, z, noise, prior, rng)
            if not ok:
                warnings.warn(
                    "GPSampler: fitting the GP hyperparameters failed; using the previous fit "
                    "(or the prior mean) for this proposal.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            thetas = theta[None, :]
            self.last_info = {"phase": "gp", "fit": "map" if ok else "fallback", "refit": kind}
        else:
            warm = self._warm.get(tag)
            thetas = sample_mcmc(
                S,
                z,
                prior,
                rng,
                n_samples=self.n_mcmc,
                burn=10 if warm is None else 2,
                thin=2,
                start=warm,
                extra_noise=noise,
            )
            self._warm[tag] = thetas[-1]
            self.last_info = {"phase": "gp", "fit": "mcmc", "n_samples": len(thetas)}

        cache = self._encoded.get(_key(space.to_json()), {})
        seen = set()
        for t in history.trials:
            hit = cache.get(t.number)
            seen.add(hit[1] if hit is not None and hit[0] == t.params else _key(t.params))
        seen.update(_key(t.params) for t in history.pending)
        pending_u = [
            space.encode(space.validate(t.params))[0]
            for t in history.pending
            if t.params and _valid(space, t.params)
        ]
        out: list[Config] = []
        for _ in range(n):
            models = self._models(thetas, Z, z, noise, fmap, pending_u)
            best = min(float(np.min(m.predict(Z)[0])) for m in models)
            config = self._maximise(space, fmap, models, best, U, z, rng, seen)
            out.append(config)
            seen.add(_key(config))
            pending_u.append(space.encode(config)[0])
        return out

    def _fit_map(
        self,
        tag: str,
        S: np.ndarray,
        z: np.ndarray,
        noise: np.ndarray | None,
        prior: Hyperprior,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, bool, str]:
        """MAP hyperparameters on a schedule: a full fit or a short warm one.

        - A **full** fit (from the previous optimum, run to convergence) is done for
          the first proposal and ``refit_every`` proposals after the last full fit.
          The first full fit, and every ``restart_every``-th after it, also starts
          from ``n_fit_restarts`` draws of the hyperprior; the very first starts from
          the prior mode in place of a previous optimum.
        - Otherwise a **warm** fit: ``warm_maxiter`` L-BFGS-B iterations from the
          previous optimum, which follow it as data arrive.

        A warm fit becomes a full one when its objective (log evidence + log
        prior) grew by less than ``refit_drop`` per new observation since the previous
        proposal. By the chain rule of the evidence that growth is about the log
        predictive density of the new observations, so a low one means the model was
        surprised and its hyperparameters may be stale. The schedule uses no random
        numbers; only a full fit draws from ``rng``.

        Returns
        -------
        theta : array of shape (d + 2,)
        ok : bool
        kind : {"full", "warm"}
        """
        state = self._fits.get(tag)
        n = z.size
        k = 0 if state is None else state.since_full + 1
        kind = "full" if state is None or k >= self.refit_every else "warm"
        theta = value = None
        if state is not None and kind == "warm":
            theta, value, ok = fit_map(
                S,
                z,
                prior,
                rng,
                extra_noise=noise,
                warm_start=state.theta,
                n_restarts=0,
                maxiter=self.warm_maxiter,
            )
            gain = (value - state.value) / max(n - state.n, 1)
            if not ok or gain < self.refit_drop:
                kind = "full"
        n_full = 0 if state is None else state.n_full
        if kind == "full":
            # random starts on the first fit and on every restart_every-th full fit
            restarts = self.n_fit_restarts if n_full % self.restart_every == 0 else 0
            theta, value, ok = fit_map(
                S,
                z,
                prior,
                rng,
                extra_noise=noise,
                warm_start=None if state is None else state.theta,
                n_restarts=restarts,
            )
            n_full += 1
        assert theta is not None and value is not None
        if ok:
            self._fits[tag] = _FitState(theta, value, n, 0 if kind == "full" else k, n_full)
        return theta, ok, kind

    def _models(
        self,
        thetas: np.ndarray,
        Z: np.ndarray,
        z: np.ndarray,
        noise: np.ndarray | None,
        fmap: FeatureMap,
        pending_u: list[np.ndarray],
    ) -> list[GPPosterior]:
        models = []
        for theta in thetas:
            m = GPPosterior(theta, Z, z, fmap.groups, noise)
            if pending_u:
                Zp = fmap.transform(np.array(pending_u))
                mp, _ = m.predict(Zp)
                extra = None if noise is None else np.r_[noise, np.zeros(len(Zp))]
                m = GPPosterior(theta, np.vstack([Z, Zp]), np.r_[z, mp], fmap.groups, extra)
            models.append(m)
        return models

    # -- acquisition optimisation --------------------------------------------------------
    @staticmethod
    def _acq(models: list[GPPosterior], fmap: FeatureMap, U: np.ndarray, best: float) -> np.ndarray:
        Zc = fmap.transform(U)
        if len(models) == 1:
            one: np.ndarray = log_ei(*models[0].predict(Zc), best)
            return one
        vals = np.stack([log_ei(*m.predict(Zc), best) for m in models])
        out: np.ndarray = logsumexp(vals, axis=0) - math.log(len(models))
        return out

    def _maximise(
        self,
        space: Space,
        fmap: FeatureMap,
        models: list[GPPosterior],
        best: float,
        U_obs: np.ndarray,
        z: np.ndarray,
        rng: np.random.Generator,
        seen: set[str],
    ) -> Config:
        d = len(space)
        parts = [rng.random((self.n_candidates, d))]
        # local perturbations of the best observations, at several scales; the widest
        # also redraws about one coordinate in d, to jump between nearby basins
        top = np.argsort(z)[: min(self.n_top, z.size)]
        k = self.n_perturb
        for i in top:
            base = _half(U_obs[i])
            for scale in (0.01, 0.05, 0.2):
                u = base + scale * rng.standard_normal((k, d))
                if scale > 0.1:
                    flip = rng.random((k, d)) < 1.0 / max(d, 1)
                    u = np.where(flip, rng.random((k, d)), u)
                parts.append(np.clip(u, 0.0, 1.0))
        Uc = space.snap(np.vstack(parts))
        acq = self._acq(models, fmap, Uc, best)
        order = np.argsort(-acq)
        starts = [space.decode(_half(Uc[int(i)])) for i in order[: self.n_starts]]
        finals = self._local_continuous(space, fmap, models, best, starts, self.acq_maxiter)
        vals = self._acq(models, fmap, space.encode(finals), best)
        if _has_discrete(space):
            finals, vals = self._local_discrete(space, fmap, models, best, finals, vals)
        for i in np.argsort(-vals, kind="stable"):
            if _key(finals[int(i)]) not in seen:
                return finals[int(i)]
        # the best candidate not proposed before; candidates snap to a grid on
        # discrete dimensions, so many rows repeat and each distinct row is decoded
        # once (on a continuous space the first candidates are new already)
        tried: set[bytes] = set()
        for i in order:
            row = Uc[int(i)]
            raw = row.tobytes()
            if raw in tried:
                continue
            tried.add(raw)
            cfg = space.decode(_half(row))
            if _key(cfg) not in seen:
                return cfg
        return space.sample(rng)

    def _local_continuous(
        self,
        space: Space,
        fmap: FeatureMap,
        models: list[GPPosterior],
        best: float,
        configs: list[Config],
        maxiter: int,
    ) -> list[Config]:
        """L-BFGS-B on the active continuous dimensions of every start at once.

        Starts with the same active continuous dimensions are optimised jointly: the
        objective is the sum of their (independent) log EI values, so one optimiser run
        moves all of them, at the cost of one batched GP prediction per step.
        """
        out = list(configs)
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, c in enumerate(configs):
            names = tuple(k for k in space if k in c and _is_continuous(space[k]))
            if names:
                groups.setdefault(names, []).append(i)
        col_of = _numeric_columns(fmap)
        log_n = math.log(len(models))
        for names, idx in groups.items():
            dims = np.array([space.names.index(k) for k in names])
            cols = np.array([col_of[j] for j in dims])
            U0 = space.encode([configs[i] for i in idx])
            Z0 = fmap.transform(U0)
            q, k = len(idx), len(dims)

            def neg(x: np.ndarray, Z0: np.ndarray = Z0, cols: np.ndarray = cols) -> Any:
                Zc = Z0.copy()
                Zc[:, cols] = x.reshape(Zc.shape[0], -1)
                if len(models) == 1:
                    total, grad = log_ei_grad(*models[0].predict_grad(Zc, cols), best)
                else:
                    vals, grads = [], []
                    for m in models:
                        v, g = log_ei_grad(*m.predict_grad(Zc, cols), best)
                        vals.append(v)
                        grads.append(g)
                    va = np.stack(vals)  # (s, q)
                    top = va.max(axis=0)
                    w = np.exp(va - top)
                    total = top + np.log(w.sum(axis=0)) - log_n
                    w = w / w.sum(axis=0)
                    grad = np.einsum("sq,sqc->qc", w, np.stack(grads))
                if not np.isfinite(total).all():
                    return 1e10, np.zeros_like(x)
                return -float(np.sum(total)), -grad.ravel()

            try:
                res = minimize(
                    neg,
                    U0[:, dims].ravel(),
                    jac=True,
                    method="L-BFGS-B",
                    bounds=[(0.0, 1.0)] * (q * k),
                    options={"maxiter": maxiter},
                )
                X = np.clip(res.x, 0.0, 1.0).reshape(q, k)
            except (ValueError, FloatingPointError, np.linalg.LinAlgError):
                continue
            for row, i in enumerate(idx):
                u = U0[row].copy()
                u[dims] = X[row]
                new = space.decode(_half(u))
                if _valid(space, new):
                    out[i] = new
        return out

    def _local_discrete(
        self,
        space: Space,
        fmap: FeatureMap,
        models: list[GPPosterior],
        best: float,
        configs: list[Config],
        values: np.ndarray,
    ) -> tuple[list[Config], np.ndarray]:
        """Greedy moves of one integer step or one categorical choice (at most 3 each).

        Every start moves to its best neighbour while that improves the acquisition.
        The moves are made on unit-cube encodings (:func:`_neighbour_rows`), the
        neighbours of all the starts still moving are scored in one batch, and only
        the final points are decoded.
        """
        U = space.snap(space.encode(configs))
        cur = np.array(values, dtype=float)
        moved = np.zeros(len(configs), dtype=bool)
        moving = list(range(len(configs)))
        for _ in range(3):
            rows, owner = _neighbour_rows(space, U[moving])
            if not len(rows):
                break
            vals = self._acq(models, fmap, rows, best)
            still = []
            for row, i in enumerate(moving):
                mine = np.flatnonzero(owner == row)
                if not mine.size:
                    continue
                j = int(mine[np.argmax(vals[mine])])
                if vals[j] > cur[i] + 1e-12:
                    U[i], cur[i], moved[i] = rows[j], vals[j], True
                    still.append(i)
            moving = still
        out = [space.decode(_half(U[i])) if moved[i] else dict(c) for i, c in enumerate(configs)]
        return out, cur


def feature_map(space: Space) -> FeatureMap:
    """The GP feature map of a space (categorical one-hot groups, conditional indicators)."""
    kinds, choices = [], []
    for name in space:
        dim = space[name]
        if isinstance(dim, Categorical):
            kinds.append("categorical")
            choices.append(len(dim.choices))
        else:
            kinds.append("numeric")
            choices.append(0)
    return FeatureMap.build(kinds, choices, [bool(space[k].when) for k in space])


def _is_continuous(dim: Any) -> bool:
    return isinstance(dim, Float) and dim.step is None


def _has_discrete(space: Space) -> bool:
    return any(not _is_continuous(space[k]) for k in space)


def _valid(space: Space, config: Config) -> bool:
    try:
        space.validate(config)
    except ValueError:
        return False
    return True


def _numeric_columns(fmap: FeatureMap) -> dict[int, int]:
    cols: dict[int, int] = {}
    c = 0
    for j, kind in enumerate(fmap.kinds):
        if kind == "categorical":
            c += fmap.n_choices[j]
        else:
            cols[j] = c
            c += 1
        if fmap.conditional[j]:
            c += 1
    return cols


def _neighbour_rows(space: Space, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Encodings one integer step or one categorical choice away from each valid
    encoding (row) of ``U``, with conditions re-resolved: dimensions a move turns on
    start at their middle.

    Returns the neighbours and, for each, the row of ``U`` it comes from. A row's
    neighbours are the encodings of the configurations one such move away, in the
    order of the space's dimensions and, within one, of their values.
    """
    U = np.atleast_2d(U)
    rows: list[np.ndarray] = []
    owner: list[int] = []
    dims = [space[name] for name in space.names]
    for r, u in enumerate(U):
        base = np.where(np.isnan(u), 0.5, u)
        for j, (dim, uj) in enumerate(zip(dims, u.tolist(), strict=True)):
            if math.isnan(uj):  # inactive
                continue
            if isinstance(dim, Categorical):
                q = len(dim.choices)
                here = min(max(math.floor(uj * q), 0), q - 1)
                targets = [(i + 0.5) / q for i in range(q) if i != here]
            elif isinstance(dim, Int) or (isinstance(dim, Float) and dim.step is not None):
                value = dim.decode(uj)
                grid_step = dim.step if dim.step is not None else 1
                steps = (value - grid_step, value + grid_step)
                targets = [dim.encode(v) for v in steps if dim.contains(v)]
            else:
                continue
            for t in targets:
                row = base.copy()
                row[j] = t
                rows.append(row)
                owner.append(r)
    if not rows:
        return np.empty((0, U.shape[1])), np.empty(0, dtype=int)
    # every move puts its coordinate in another cell, so no row equals its start
    return space.snap(np.array(rows)), np.array(owner)
