"""Hyperparameters from the evidence: type-II maximum likelihood, MAP, or MCMC.

Notation
--------
h            hyperparameters on their natural scale, a dict ``{name: h_k}``
d            number of hyperparameters
E(h)         the log evidence log p(D | h), supplied by the caller
p_k(h_k)     hyperprior density of hyperparameter k (natural scale)
u            array of shape (d,): unconstrained coordinates, h_k = T_k(u_k) (see ``_priors``)
J_k(u_k)     log |dT_k / du_k|, the log-Jacobian

Objectives, all maximised or sampled in ``u``:

    "ml"    E(T(u))                                    type-II maximum likelihood
    "map"   E(T(u)) + sum_k log p_k(T_k(u_k))          mode of p(h | D) on the natural scale
    "mcmc"  E(T(u)) + sum_k [log p_k(T_k(u_k)) + J_k]  log density of u under p(h | D)

The maximum of the first two does not depend on the coordinates used to find it
(the optimum of a function is invariant under reparametrisation, unlike the mode of a
density), so "ml" and "map" estimates are the usual natural-scale ones while the
optimiser enjoys well-scaled, unbounded coordinates. The "mcmc" target carries the
Jacobian so the draws of ``h = T(u)`` follow the posterior of ``h``.

Optimisation is multi-start L-BFGS-B (MacKay 1992 maximises the evidence; Rasmussen
and Williams 2006, section 5.4.1, use several restarts against local optima), with the
caller's gradient when given and central finite differences otherwise. MCMC is
coordinate-wise slice sampling (Neal 2003) in ``u``, several chains started from
over-dispersed points around the posterior mode, diagnosed by the effective sample
size and split R-hat (Gelman et al., Bayesian Data Analysis, 3rd ed., section 11.4).

References
----------
D. J. C. MacKay, "Bayesian interpolation", Neural Computation 4(3), 1992.
R. M. Neal, "Slice sampling", Annals of Statistics 31(3), 2003.
C. E. Rasmussen and C. K. I. Williams, Gaussian Processes for Machine Learning, 2006.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy.optimize import minimize

from twiddle._errors import InvalidParameterError, TwiddleError
from twiddle._mcmc import effective_sample_size, slice_sample, split_rhat
from twiddle._threads import single_thread
from twiddle._validation import as_generator, check_choice, check_int
from twiddle.evidence._priors import Prior

_WHERE = "infer"
_PENALTY = 1e25  # objective reported to L-BFGS-B where the evidence is not finite
_U_BOUND = 700.0  # |u| <= 700 keeps exp(u) finite
_LBFGS = {"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-9}
#: Warn when split R-hat exceeds this.
RHAT_WARN = 1.05
#: Warn when the effective sample size is below this many per chain (Stan's rule).
ESS_WARN_PER_CHAIN = 100

LogEvidence = Callable[[dict[str, float]], Any]


class ConvergenceWarning(UserWarning):
    """An optimisation or MCMC run may not have converged; the result is still returned."""


class InferenceError(TwiddleError, RuntimeError):
    """The evidence could not be evaluated anywhere the inference looked."""


@dataclasses.dataclass(frozen=True, repr=False)
class InferenceResult:
    """What :func:`infer` found.

    Attributes
    ----------
    method : str
        "ml", "map", "mcmc" or "nuts".
    params_ : dict of str to float
        The point estimate on the natural scale: the maximiser for "ml" and "map",
        the posterior mean for "mcmc" and "nuts".
    samples_ : dict of str to array of shape (n_samples,)
        Hyperparameter draws on the natural scale. For "mcmc" and "nuts",
        ``n_chains * n_draws``
        draws with the chains concatenated (chain ``c`` is
        ``samples_[k][c * n_draws:(c + 1) * n_draws]``); for "ml" and "map", a stack of
        one (the estimate), so code averaging over samples serves both.
    log_evidence_ : float
        ``log p(D | params_)``.
    objective_ : float
        The maximised objective: the log evidence ("ml"), log evidence plus log prior
        density ("map"); for "mcmc", the log posterior density of ``u`` at its mode,
        up to the normalising constant.
    ess_ : dict of str to float or None
        Effective sample size per hyperparameter ("mcmc" and "nuts" only).
    rhat_ : dict of str to float or None
        Split R-hat per hyperparameter ("mcmc" and "nuts" only).
    n_evaluations_ : int
        Calls of the log-evidence function.
    n_chains : int
        Number of chains (1 for "ml" and "map").
    """

    method: str
    params_: dict[str, float]
    samples_: dict[str, np.ndarray]
    log_evidence_: float
    objective_: float
    ess_: dict[str, float] | None
    rhat_: dict[str, float] | None
    n_evaluations_: int
    n_chains: int = 1

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v:.6g}" for k, v in self.params_.items())
        n = len(next(iter(self.samples_.values())))
        return (
            f"InferenceResult(method={self.method!r}, params_={{{params}}}, "
            f"log_evidence_={self.log_evidence_:.6g}, n_samples={n}, "
            f"n_evaluations_={self.n_evaluations_})"
        )


class _Target:
    """The objective in unconstrained coordinates, with an evaluation counter."""

    def __init__(self, fn: LogEvidence, names: list[str], priors: list[Prior], kind: str) -> None:
        self.fn = fn
        self.names = names
        self.priors = priors
        self.kind = kind
        self.n_eval = 0
        self.has_grad: bool | None = None

    def to_natural(self, u: np.ndarray) -> np.ndarray:
        return np.array(
            [float(p.from_unconstrained(float(ui))) for p, ui in zip(self.priors, u, strict=True)]
        )

    def evidence(self, x: Any) -> tuple[float, np.ndarray | None]:
        """``E(h)`` and, if the caller returns it, its gradient in ``h``."""
        h = {name: float(v) for name, v in zip(self.names, x, strict=True)}
        out = self.fn(h)
        self.n_eval += 1
        if type(out) is float:  # the common case
            if self.has_grad is None:
                self.has_grad = False
            return (out if out == out else -math.inf), None
        grad: np.ndarray | None = None
        if isinstance(out, tuple):
            if len(out) != 2 or not isinstance(out[1], Mapping):
                raise _protocol_error(out)
            value, g = out
            try:
                grad = np.array([float(g[name]) for name in self.names])
            except (KeyError, TypeError, ValueError) as exc:
                raise InvalidParameterError(
                    "The 'log_evidence' parameter of infer returned a gradient that is not a "
                    f"dict of floats over all of {self.names!r} ({exc!r})."
                ) from None
        else:
            value = out
        if self.has_grad is None:
            self.has_grad = grad is not None
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()
        if not isinstance(value, numbers.Real):
            raise _protocol_error(out)
        v = float(value)
        return (v if not math.isnan(v) else -math.inf), grad

    def logp(self, u: np.ndarray) -> float:
        """The objective at ``u`` (``-inf`` outside the support or where E is not finite)."""
        total = 0.0
        x = []
        for p, ui in zip(self.priors, u.tolist(), strict=True):
            xi, logjac = p._x_logjac(ui)
            x.append(xi)
            if self.kind != "ml":
                lp = p.logpdf(xi)
                if lp == -math.inf:
                    return -math.inf
                total += lp
                if self.kind == "mcmc":
                    total += logjac
        value, _ = self.evidence(x)
        if not math.isfinite(value):
            return -math.inf
        return value + total

    def logp_grad(self, u: np.ndarray) -> tuple[float, np.ndarray]:
        """The objective and its gradient in ``u``."""
        if self.has_grad is False:
            return self.logp(u), self._fd_grad(u)
        x = self.to_natural(u)
        value, g = self.evidence(x)
        if g is None:  # first call showed the function gives values only
            f = self._add_prior(u, x, value)
            return f, self._fd_grad(u)
        if not math.isfinite(value) or not np.all(np.isfinite(g)):
            return -math.inf, np.zeros_like(u)
        f = self._add_prior(u, x, value)
        dx = np.array(
            [
                float(p._dx_du(np.float64(ui), np.float64(xi)))
                for p, ui, xi in zip(self.priors, u, x, strict=True)
            ]
        )
        if self.kind != "ml":
            g = g + np.array(
                [float(p.grad_logpdf(float(xi))) for p, xi in zip(self.priors, x, strict=True)]
            )
        grad = g * dx
        if self.kind == "mcmc":
            grad = grad + np.array(
                [float(p._dlog_jac(np.float64(ui))) for p, ui in zip(self.priors, u, strict=True)]
            )
        return f, grad

    def _add_prior(self, u: np.ndarray, x: np.ndarray, value: float) -> float:
        if not math.isfinite(value):
            return -math.inf
        if self.kind == "ml":
            return value
        total = value
        for p, ui, xi in zip(self.priors, u, x, strict=True):
            total += p.logpdf(float(xi))
            if self.kind == "mcmc":
                total += float(p.log_jacobian(float(ui)))
        return total if not math.isnan(total) else -math.inf

    def _fd_grad(self, u: np.ndarray) -> np.ndarray:
        """Central differences, step ~ eps^(1/3) scaled by |u|."""
        g = np.zeros_like(u)
        for i in range(u.size):
            h = 6e-6 * max(1.0, abs(float(u[i])))
            up, dn = u.copy(), u.copy()
            up[i] += h
            dn[i] -= h
            fu, fd = self.logp(up), self.logp(dn)
            if math.isfinite(fu) and math.isfinite(fd):
                g[i] = (fu - fd) / (up[i] - dn[i])
        return g


def _protocol_error(out: Any) -> InvalidParameterError:
    return InvalidParameterError(
        "The 'log_evidence' parameter of infer must be a callable returning a float, or a "
        f"(float, dict of str to float) pair. Got a call returning {out!r} instead."
    )


def _validate_priors(priors: Any) -> tuple[list[str], list[Prior]]:
    ok = isinstance(priors, Mapping) and len(priors) > 0
    if ok:
        ok = all(isinstance(k, str) and isinstance(v, Prior) for k, v in priors.items())
    if not ok:
        raise InvalidParameterError(
            "The 'priors' parameter of infer must be a non-empty dict of str to Prior "
            f"(e.g. {{'tau': HalfCauchy(5.0)}}). Got {priors!r} instead."
        )
    return list(priors.keys()), list(priors.values())


def _validate_init(init: Any, names: list[str], priors: list[Prior]) -> np.ndarray | None:
    if init is None:
        return None
    if not isinstance(init, Mapping) or set(init) != set(names):
        raise InvalidParameterError(
            f"The 'init' parameter of infer must be None or a dict over {names!r}. "
            f"Got {init!r} instead."
        )
    u = np.empty(len(names))
    for i, (name, p) in enumerate(zip(names, priors, strict=True)):
        v = init[name]
        real = isinstance(v, numbers.Real) and not isinstance(v, bool)
        if not real or p.logpdf(float(v)) == -math.inf:
            raise InvalidParameterError(
                f"The 'init' parameter of infer must give {name!r} a value inside the support "
                f"{p.support!r} of its prior. Got {v!r} instead."
            )
        u[i] = float(p.to_unconstrained(float(v)))
        if not math.isfinite(u[i]):  # on the edge of an interval
            u[i] = math.copysign(_U_BOUND / 20, u[i])
    return u


def _bounds(priors: list[Prior]) -> list[tuple[float | None, float | None]]:
    return [(None, None) if p.support == "real" else (-_U_BOUND, _U_BOUND) for p in priors]


def _starts(
    priors: list[Prior], n_starts: int, init_u: np.ndarray | None, rng: np.random.Generator
) -> list[np.ndarray]:
    """``init`` (if any), the prior medians, then draws from the priors."""
    median = np.array([float(p.to_unconstrained(p.median)) for p in priors])
    starts = [] if init_u is None else [init_u]
    starts.append(median)
    attempts = 0
    while len(starts) < n_starts:
        attempts += 1
        draw = np.array([float(p.to_unconstrained(p.sample(rng))) for p in priors])
        bad = ~np.isfinite(draw) | (np.abs(draw) > _U_BOUND)
        if bad.any():
            if attempts < 20 * n_starts:
                continue
            # Priors so vague that draws underflow: perturb the median instead.
            draw = np.where(bad, median + rng.standard_normal(len(priors)), draw)
        starts.append(draw)
    return starts[:n_starts]


def _maximise(
    target: _Target, starts: list[np.ndarray], bounds: list[tuple[float | None, float | None]]
) -> tuple[np.ndarray, float]:
    def neg(u: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = target.logp_grad(u)
        if not math.isfinite(f):
            return _PENALTY, np.zeros_like(u)
        return -f, -g

    best_u, best_f = None, -math.inf
    for u0 in starts:
        if not math.isfinite(target.logp(u0)):
            continue
        u, f = _polish(neg, u0, bounds)
        if u is not None and f > best_f:
            best_u, best_f = u, f
    if best_u is not None and target.has_grad:
        best_u, best_f = _newton_polish(target, best_u, bounds, best_f)
    if best_u is None:
        raise InferenceError(
            f"infer could not evaluate a finite objective ({target.kind!r}) from any of "
            f"{len(starts)} starting points drawn from the priors. Check that log_evidence "
            "returns finite values inside the priors' supports, or pass init=."
        )
    return best_u, best_f


def _polish(
    neg: Callable[[np.ndarray], tuple[float, np.ndarray]],
    u0: np.ndarray,
    bounds: list[tuple[float | None, float | None]],
    rounds: int = 6,
) -> tuple[np.ndarray | None, float]:
    """L-BFGS-B from ``u0``, restarted (fresh curvature memory) while it still gains.

    A start far out on a vague prior can leave L-BFGS-B with a wild first step and a
    stale curvature model that stops it on "no relative reduction"; a restart from
    where it stopped recovers.
    """
    u, f = None, -math.inf
    x = u0
    for _ in range(rounds):
        try:
            res = minimize(neg, x, jac=True, method="L-BFGS-B", bounds=bounds, options=_LBFGS)
        except (FloatingPointError, np.linalg.LinAlgError, ValueError):
            break
        f_new = -float(res.fun)
        if not (math.isfinite(f_new) and f_new > -_PENALTY / 2):
            break
        gained = f_new - f
        if f_new > f:
            u, f = np.asarray(res.x, dtype=float), f_new
        if not gained > 1e-9 * (1.0 + abs(f_new)):
            break
        x = np.asarray(res.x, dtype=float)
    return u, f


def _newton_polish(
    target: _Target,
    u: np.ndarray,
    bounds: list[tuple[float | None, float | None]],
    f: float,
    steps: int = 4,
) -> tuple[np.ndarray, float]:
    """Newton steps on the analytic gradient, accepted while its norm falls.

    Near the optimum the objective changes by less than its rounding error, so a
    line search on values stops early; the gradient still carries the information
    (and the optimum is its root). Hessian by central differences of the gradient.
    """
    lo = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
    hi = np.array([np.inf if b[1] is None else b[1] for b in bounds])
    _, g = target.logp_grad(u)
    d = u.size
    for _ in range(steps):
        gnorm = float(np.max(np.abs(g)))
        if not gnorm > 0:
            break
        h = 1e-5 * np.maximum(1.0, np.abs(u))
        H = np.empty((d, d))
        for i in range(d):
            e = np.zeros(d)
            e[i] = h[i]
            _, gp = target.logp_grad(u + e)
            _, gm = target.logp_grad(u - e)
            H[:, i] = (gp - gm) / (2.0 * h[i])
        H = 0.5 * (H + H.T)
        try:
            np.linalg.cholesky(-H)  # a maximum: -H positive definite
            step = np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            break
        cand = np.clip(u - step, lo, hi)
        f_new, g_new = target.logp_grad(cand)
        if not (math.isfinite(f_new) and float(np.max(np.abs(g_new))) < gnorm):
            break
        if f_new < f - 1e-9 * (1.0 + abs(f)):  # never trade a real loss for a smaller gradient
            break
        u, f, g = cand, f_new, g_new
    return u, f


def _curvature_scale(target: _Target, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior standard deviations and a covariance factor from a numerical Hessian at ``u``.

    Returns ``(sd, chol)``; falls back to unit scales where the Hessian is not negative
    definite.
    """
    d = u.size
    h = 1e-4 * np.maximum(1.0, np.abs(u))
    f0 = target.logp(u)
    H = np.zeros((d, d))
    for i in range(d):
        ei = np.zeros(d)
        ei[i] = h[i]
        H[i, i] = (target.logp(u + 2 * ei) - 2 * f0 + target.logp(u - 2 * ei)) / (4 * h[i] ** 2)
        for j in range(i):
            ej = np.zeros(d)
            ej[j] = h[j]
            H[i, j] = H[j, i] = (
                target.logp(u + ei + ej)
                - target.logp(u + ei - ej)
                - target.logp(u - ei + ej)
                + target.logp(u - ei - ej)
            ) / (4 * h[i] * h[j])
    try:
        if not np.all(np.isfinite(H)):
            raise np.linalg.LinAlgError
        cov = np.linalg.inv(-H)
        chol = np.linalg.cholesky(cov)
        sd = np.sqrt(np.diag(cov))
    except np.linalg.LinAlgError:
        diag = np.diag(H)
        sd = np.where(np.isfinite(diag) & (diag < 0), 1.0 / np.sqrt(np.abs(diag)), 1.0)
        chol = np.diag(sd)
    return sd, chol


def infer(
    log_evidence: LogEvidence,
    priors: Mapping[str, Prior],
    *,
    method: str = "map",
    seed: int | np.random.Generator | None = None,
    n_starts: int = 5,
    n_chains: int = 4,
    n_draws: int = 1000,
    n_burn: int = 500,
    init: Mapping[str, float] | None = None,
) -> InferenceResult:
    """Fit hyperparameters by their evidence: type-II ML, MAP, or MCMC over hyperpriors.

    Parameters
    ----------
    log_evidence : callable
        ``log_evidence(h) -> float`` or ``-> (float, dict)``, where ``h`` is a dict of
        the hyperparameters on their natural scale (one float per key of ``priors``).
        The float is ``log p(D | h)``; the optional dict holds its partial derivatives
        ``d log p(D | h) / d h[k]`` on the natural scale, used by the optimiser
        (otherwise central finite differences are taken). It may return ``-inf`` (or
        NaN) where the evidence is zero or cannot be computed.
    priors : dict of str to Prior
        One hyperprior per hyperparameter. Their supports bound every method; "ml"
        ignores their densities but draws its starting points from them.
    method : {"map", "ml", "mcmc", "nuts"}, default "map"
        "ml": maximise the log evidence (type-II maximum likelihood). "map": maximise
        log evidence + log prior density, the mode of ``p(h | D)`` on the natural scale
        (not the mode of the density of log h; a boundary mode, such as a group-level
        scale of 0, is approached as closely as the optimiser's tolerance allows).
        "mcmc": slice-sample ``p(h | D)`` in unconstrained coordinates. "nuts": the
        no-U-turn sampler of NumPyro (extra ``nuts``: ``pip install "twiddle[nuts]"``)
        for larger hierarchical models; ``log_evidence`` must then be written with
        ``jax.numpy`` (JAX traces and differentiates it; no gradient dict), and the
        priors must be Normal, Gamma, InverseGamma, LogNormal, HalfCauchy, Uniform or
        LogUniform. Diagnostics are computed as for "mcmc"; ``objective_`` is NaN and
        ``n_evaluations_`` counts leapfrog steps after warm-up.
    seed : int, numpy.random.Generator or None
        Randomness of the starting points and the chains; same seed, same result.
    n_starts : int, default 5
        Optimisation starts ("ml", "map"; "mcmc" uses them to find the mode around
        which its chains start): ``init`` if given, the prior medians, then draws
        from the priors.
    n_chains : int, default 4
        MCMC chains, started at over-dispersed points around the posterior mode (two
        posterior standard deviations, from a numerical Hessian, in every direction).
    n_draws : int, default 1000
        Draws kept per chain ("mcmc").
    n_burn : int, default 500
        Sweeps discarded per chain before the kept draws ("mcmc").
    init : dict of str to float, optional
        A starting point on the natural scale, tried first.

    Returns
    -------
    InferenceResult
        ``params_`` (the estimate: the maximiser, or for "mcmc" the posterior mean),
        ``samples_``, ``log_evidence_``, ``ess_``, ``rhat_``, ``n_evaluations_``.

    Warns
    -----
    ConvergenceWarning
        For "mcmc", when a split R-hat exceeds 1.05 or an effective sample size is
        below 100 per chain.

    Examples
    --------
    A hierarchical normal model: J groups with estimates ``y_j`` of known standard
    errors ``sigma_j``, group effects ``theta_j ~ N(mu, tau^2)``. Integrating the
    group effects out gives the evidence in closed form,
    ``y_j ~ N(mu, sigma_j^2 + tau^2)`` (the eight-schools data of Rubin, 1981):

    >>> import numpy as np
    >>> from twiddle import evidence
    >>> y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    >>> sigma = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    >>> def log_evidence(h):
    ...     v = sigma**2 + h["tau"] ** 2
    ...     return -0.5 * float(np.sum(np.log(2 * np.pi * v) + (y - h["mu"]) ** 2 / v))
    >>> priors = {"mu": evidence.Normal(0.0, 5.0), "tau": evidence.HalfCauchy(5.0)}
    >>> post = evidence.infer(log_evidence, priors, method="mcmc", seed=0)
    >>> round(post.params_["mu"]), round(post.params_["tau"])  # posterior means
    (4, 4)
    >>> ml = evidence.infer(log_evidence, priors, method="ml", seed=0)
    >>> ml.params_["tau"] < 0.1  # type-II ML: the schools look alike
    True
    """
    if not callable(log_evidence):
        raise InvalidParameterError(
            "The 'log_evidence' parameter of infer must be a callable h -> float. "
            f"Got {log_evidence!r} instead."
        )
    names, prior_list = _validate_priors(priors)
    method = check_choice(method, "method", _WHERE, ("ml", "map", "mcmc", "nuts"))
    n_starts = int(check_int(n_starts, "n_starts", _WHERE, minimum=1) or 1)
    n_chains = int(check_int(n_chains, "n_chains", _WHERE, minimum=1) or 1)
    n_draws = int(check_int(n_draws, "n_draws", _WHERE, minimum=4) or 4)
    n_burn = int(check_int(n_burn, "n_burn", _WHERE, minimum=0) or 0)
    init_u = _validate_init(init, names, prior_list)
    rng = as_generator(seed, "seed", _WHERE)
    if method == "nuts":
        return _infer_nuts(log_evidence, names, prior_list, rng, n_chains, n_draws, n_burn)

    with single_thread():
        return _infer(
            log_evidence,
            names,
            prior_list,
            method,
            rng,
            n_starts,
            n_chains,
            n_draws,
            n_burn,
            init_u,
        )


def _infer(
    log_evidence: LogEvidence,
    names: list[str],
    prior_list: list[Prior],
    method: str,
    rng: np.random.Generator,
    n_starts: int,
    n_chains: int,
    n_draws: int,
    n_burn: int,
    init_u: np.ndarray | None,
) -> InferenceResult:
    target = _Target(log_evidence, names, prior_list, method)
    bounds = _bounds(prior_list)
    starts = _starts(prior_list, n_starts, init_u, rng)
    u_best, f_best = _maximise(target, starts, bounds)

    if method != "mcmc":
        x = target.to_natural(u_best)
        le, _ = target.evidence(x)
        params = {k: float(v) for k, v in zip(names, x, strict=True)}
        return InferenceResult(
            method=method,
            params_=params,
            samples_={k: np.array([v]) for k, v in params.items()},
            log_evidence_=le,
            objective_=f_best,
            ess_=None,
            rhat_=None,
            n_evaluations_=target.n_eval,
        )

    chains_u = _run_chains(target, u_best, rng, n_chains, n_draws, n_burn)
    chains = np.empty_like(chains_u)
    for i, p in enumerate(prior_list):
        chains[:, :, i] = p.from_unconstrained(chains_u[:, :, i])
    ess = effective_sample_size(chains)
    rhat = split_rhat(chains)
    _warn_convergence(names, ess, rhat, n_chains, stacklevel=4)
    mean = chains.reshape(-1, len(names)).mean(axis=0)
    le, _ = target.evidence(mean)
    return InferenceResult(
        method="mcmc",
        params_={k: float(v) for k, v in zip(names, mean, strict=True)},
        samples_={k: chains[:, :, i].reshape(-1).copy() for i, k in enumerate(names)},
        log_evidence_=le,
        objective_=f_best,
        ess_={k: float(v) for k, v in zip(names, ess, strict=True)},
        rhat_={k: float(v) for k, v in zip(names, rhat, strict=True)},
        n_evaluations_=target.n_eval,
        n_chains=n_chains,
    )


def _infer_nuts(
    log_evidence: LogEvidence,
    names: list[str],
    prior_list: list[Prior],
    rng: np.random.Generator,
    n_chains: int,
    n_draws: int,
    n_burn: int,
) -> InferenceResult:
    from twiddle.evidence._nuts import check_priors, run_nuts

    try:
        check_priors(prior_list)
    except TypeError as err:
        raise InvalidParameterError(str(err)) from err
    chains, ess, rhat, n_steps, evidence_at = run_nuts(
        log_evidence,
        names,
        prior_list,
        seed=int(rng.integers(2**31)),
        n_chains=n_chains,
        n_draws=n_draws,
        n_burn=n_burn,
    )
    _warn_convergence(names, ess, rhat, n_chains, stacklevel=4)
    mean = chains.reshape(-1, len(names)).mean(axis=0)
    params = {k: float(v) for k, v in zip(names, mean, strict=True)}
    return InferenceResult(
        method="nuts",
        params_=params,
        samples_={k: chains[:, :, i].reshape(-1).copy() for i, k in enumerate(names)},
        log_evidence_=evidence_at(params),
        objective_=math.nan,
        ess_={k: float(v) for k, v in zip(names, ess, strict=True)},
        rhat_={k: float(v) for k, v in zip(names, rhat, strict=True)},
        n_evaluations_=n_steps,
        n_chains=n_chains,
    )


def _run_chains(
    target: _Target,
    mode: np.ndarray,
    rng: np.random.Generator,
    n_chains: int,
    n_draws: int,
    n_burn: int,
) -> np.ndarray:
    """Slice-sampling chains around ``mode``; array of shape (n_chains, n_draws, d)."""
    sd, chol = _curvature_scale(target, mode)
    width = 2.0 * sd
    lower = np.array([-_U_BOUND if b[0] is not None else -np.inf for b in _bounds(target.priors)])
    upper = -lower
    out = np.empty((n_chains, n_draws, mode.size))
    for c, chain_rng in enumerate(rng.spawn(n_chains)):
        z = chain_rng.standard_normal(mode.size)
        start = mode
        for spread in (2.0, 1.0, 0.5, 0.25, 0.0):
            cand = np.clip(mode + spread * (chol @ z), lower, upper)
            if math.isfinite(target.logp(cand)):
                start = cand
                break
        out[c] = slice_sample(
            target.logp,
            start,
            n_draws,
            chain_rng,
            burn=n_burn,
            width=width,
            lower=lower,
            upper=upper,
        )
    return out


def _warn_convergence(
    names: list[str], ess: np.ndarray, rhat: np.ndarray, n_chains: int, stacklevel: int
) -> None:
    problems = []
    high = [(k, r) for k, r in zip(names, rhat, strict=True) if not r <= RHAT_WARN]
    if high:
        listed = ", ".join(f"{k!r} ({r:.3f})" for k, r in high)
        problems.append(f"split R-hat above {RHAT_WARN} for {listed}")
    low_at = ESS_WARN_PER_CHAIN * n_chains
    low = [(k, e) for k, e in zip(names, ess, strict=True) if not e >= low_at]
    if low:
        listed = ", ".join(f"{k!r} ({e:.0f})" for k, e in low)
        problems.append(f"effective sample size below {low_at} for {listed}")
    if problems:
        warnings.warn(
            "The MCMC chains of infer may not have converged: "
            + "; ".join(problems)
            + ". Run longer chains (n_draws, n_burn) or check the model; the diagnostics "
            "are in result.rhat_ and result.ess_.",
            ConvergenceWarning,
            stacklevel=stacklevel,
        )
