"""Gaussian-process regression with a Matern-5/2 ARD kernel fitted by its evidence.

Notation
--------
n, d         training points, input dimensions
x, y         inputs (n, d) and targets (n,) in their own units
u            inputs scaled to the unit cube by the training range: u_j = (x_j - min_j) / range_j
t            standardised targets: t = (y - mean(y)) / sd(y)  (sd with ddof 0, as scikit-learn)
ell_j        length scale of dimension j in unit-cube units (ell_j * range_j in x units)
s2, nu2      signal and noise variance in standardised units (s2 sd^2, nu2 sd^2 in y units)
theta        [log ell_1..ell_d, log s2, log nu2], the coordinates of the optimisation
k(r)         s2 (1 + sqrt5 r + 5 r^2 / 3) exp(-sqrt5 r),  r^2 = sum_j (u_j - u'_j)^2 / ell_j^2

The model is y = mean(y) + sd(y) (f(u) + e), f ~ GP(0, k), e ~ N(0, nu2); the kernel,
its evidence and the evidence gradient are those of ``twiddle._gp`` (Rasmussen and
Williams 2006, eqs. 2.30 and 5.9). Scaling x is only a change of units of the length
scales, so it moves no optimum; it lets one set of bounds and hyperpriors serve every
data set. The reported evidence is that of y in its own units,

    log p(y) = log p(t | theta) - n log sd(y),

the targets' mean being a fixed plug-in. scikit-learn's
``GaussianProcessRegressor(normalize_y=True).log_marginal_likelihood_value_`` is
``log p(t | theta)``, without the ``- n log sd(y)``.

Evidence maximisation is multi-start L-BFGS-B in theta within bounds (ell in [1e-3, 1e5],
s2 in [1e-4, 1e5], nu2 in [1e-6, 10], standardised units; an irrelevant input's length
scale runs to the upper bound): the first start is the
initial values given, the others are drawn from the hyperprior (Rasmussen and Williams
2006, section 5.4.1: the evidence of a GP often has several local optima, e.g. a short
length scale with little noise against a long one that explains the data as noise).

References
----------
C. E. Rasmussen and C. K. I. Williams, Gaussian Processes for Machine Learning, 2006.
C. Hvarfner, E. O. Hellsten, L. Nardi, Vanilla Bayesian optimization performs great in
high dimensions, ICML 2024 (the default length-scale hyperprior).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, RegressorMixin

from twiddle import _gp
from twiddle._errors import InvalidParameterError
from twiddle._threads import single_thread
from twiddle._validation import as_generator, check_choice, check_float, check_int
from twiddle.evidence._infer import InferenceError
from twiddle.evidence._priors import Prior

_WHERE = "GPRegressor"
_KEYS = ("length_scale", "signal_variance", "noise_variance")
LOG_ELL_BOUNDS = (math.log(1e-3), math.log(1e5))
LOG_S2_BOUNDS = (math.log(1e-4), math.log(1e5))
LOG_NU2_BOUNDS = (math.log(1e-6), math.log(10.0))
_PENALTY = 1e25


class GPRegressor(RegressorMixin, BaseEstimator):
    """Gaussian-process regression with evidence-fitted Matern-5/2 ARD hyperparameters.

    Kernel: ``signal_variance * Matern52(x, x'; length_scale_1..d) + noise_variance * I``.
    Inputs are scaled to the unit cube and targets standardised internally (see
    Notes); every fitted quantity is reported in the units of ``X`` and ``y``.

    Parameters
    ----------
    method : {"ml", "map", "mcmc"}, default "ml"
        "ml": maximise the evidence. "map": maximise evidence x hyperprior density on
        the natural scale. "mcmc": find the MAP as "map" does, then slice-sample the
        hyperparameter posterior (4 chains started there) in log coordinates, and
        average predictions over the draws (Snoek et al. 2012).
    prior : None, "default" or dict of str to Prior
        Hyperpriors for "map" and "mcmc" (must be None with "ml"). "default" (also what None means
        with "map"): twiddle's GP hyperprior, log-normal on each hyperparameter in the
        internal units (the dimension-scaled length-scale prior of Hvarfner et al. 2024;
        signal variance around 1 and noise variance around exp(-5) of the target
        variance). A dict gives ``"length_scale"`` (shared by every dimension, in X
        units), ``"signal_variance"`` and ``"noise_variance"`` (in y units, squared)
        priors with positive support.
    n_restarts : int, default 5
        Random starts in addition to the initial values, drawn from the hyperprior
        (with "ml", from the default one).
    length_scale : float, array of shape (n_features,) or None
        Initial length scale(s) in X units; None: half the range of each feature.
    signal_variance : float or None
        Initial signal variance in y units squared; None: the variance of y.
    noise_variance : float or None
        Initial noise variance in y units squared; None: a tenth of the variance of y.
    seed : int, numpy.random.Generator or None
        Randomness of the restarts and of the chains.
    n_draws : int, default 400
        "mcmc" only: draws kept, over 4 chains (each first discards as many sweeps as
        it keeps).

    Attributes
    ----------
    theta_ : array of shape (n_features + 2,)
        ``[log ell_1..ell_d, log s2, log nu2]`` in the internal units (unit-cube
        inputs, standardised targets).
    length_scale_ : array of shape (n_features,)
        In X units.
    signal_variance_, noise_variance_ : float
        In y units squared.
    log_evidence_ : float
        ``log p(y | hyperparameters)`` of the targets in their own units (see Notes).
    n_evaluations_ : int
        Evidence evaluations made (optimiser and chains).
    n_features_in_ : int
    theta_samples_ : array of shape (n_draws, n_features + 2)
        "mcmc" only: the posterior draws of ``theta``; ``theta_`` is then their mean
        (so ``length_scale_`` and the variances are posterior geometric means) and
        ``log_evidence_`` is taken there.
    ess_, rhat_ : array of shape (n_features + 2,)
        "mcmc" only: effective sample size and split R-hat of each coordinate of
        ``theta`` over the chains.

    Notes
    -----
    The model is ``y = mean(y) + sd(y) (f(u) + e)`` with ``u`` the inputs scaled to
    ``[0, 1]`` by their training range, ``f ~ GP(0, k)`` and ``e ~ N(0, nu2)``. It equals
    scikit-learn's ``GaussianProcessRegressor(kernel=ConstantKernel() *
    Matern(nu=2.5, length_scale=[...]) + WhiteKernel(), normalize_y=True)``, whose
    ``log_marginal_likelihood_value_`` equals ``log_evidence_ + n log sd(y)``.
    Bounds (internal units): length scales in [1e-3, 1e5], signal variance in
    [1e-4, 1e5], noise variance in [1e-6, 10].

    Examples
    --------
    >>> import numpy as np
    >>> from twiddle.evidence import GPRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(0, 5, size=(40, 1))
    >>> y = np.sin(3 * X[:, 0]) + 0.1 * rng.standard_normal(40)
    >>> gp = GPRegressor(seed=0).fit(X, y)
    >>> mean, std = gp.predict(X[:3], return_std=True)
    >>> bool(np.all(np.abs(mean - y[:3]) < 3 * std))
    True
    """

    def __init__(
        self,
        *,
        method: str = "ml",
        prior: str | Mapping[str, Prior] | None = None,
        n_restarts: int = 5,
        length_scale: float | np.ndarray | None = None,
        signal_variance: float | None = None,
        noise_variance: float | None = None,
        seed: int | np.random.Generator | None = None,
        n_draws: int = 400,
    ) -> None:
        self.method = method
        self.prior = prior
        self.n_restarts = n_restarts
        self.length_scale = length_scale
        self.signal_variance = signal_variance
        self.noise_variance = noise_variance
        self.seed = seed
        self.n_draws = n_draws

    # ---- validation --------------------------------------------------------------------
    def _check_params(self, d: int) -> tuple[str, Any, int]:
        method = check_choice(self.method, "method", _WHERE, ("ml", "map", "mcmc"))
        check_int(self.n_draws, "n_draws", _WHERE, minimum=8)
        prior = self.prior
        if method == "ml":
            if prior is not None:
                raise InvalidParameterError(
                    f"The 'prior' parameter of {_WHERE} must be None with method='ml' "
                    f"(type-II maximum likelihood uses no hyperprior). Got {prior!r} instead; "
                    "use method='map' or 'mcmc' to use it."
                )
        elif prior is None or prior == "default":
            prior = "default"
        else:
            ok = isinstance(prior, Mapping) and set(prior) == set(_KEYS)
            if ok:
                assert isinstance(prior, Mapping)
                ok = all(
                    isinstance(p, Prior)
                    and p.support != "real"
                    and not (isinstance(p.support, tuple) and p.support[0] < 0)
                    for p in prior.values()
                )
            if not ok:
                raise InvalidParameterError(
                    f"The 'prior' parameter of {_WHERE} must be None, 'default' or a dict of "
                    f"Prior with positive support over {list(_KEYS)!r}. Got {prior!r} instead."
                )
        n_restarts = int(check_int(self.n_restarts, "n_restarts", _WHERE, minimum=0) or 0)
        for name in ("signal_variance", "noise_variance"):
            check_float(
                getattr(self, name), name, _WHERE, minimum=0, exclusive=True, allow_none=True
            )
        if self.length_scale is not None:
            ls = np.asarray(self.length_scale, dtype=float)
            if not (
                ls.ndim in (0, 1)
                and (ls.ndim == 0 or ls.size == d)
                and np.all(np.isfinite(ls))
                and np.all(ls > 0)
            ):
                raise InvalidParameterError(
                    f"The 'length_scale' parameter of {_WHERE} must be None, a float > 0 or an "
                    f"array of {d} floats > 0. Got {self.length_scale!r} instead."
                )
        return method, prior, n_restarts

    # ---- fit ---------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> GPRegressor:
        """Maximise the evidence (or posterior density) of the kernel hyperparameters.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        from sklearn.utils.validation import check_X_y

        Xa, ya = check_X_y(X, y, dtype=np.float64, y_numeric=True, ensure_min_samples=2)
        ya = np.asarray(ya, dtype=float)
        n, d = Xa.shape
        self.n_features_in_ = d
        method, prior, n_restarts = self._check_params(d)
        rng = as_generator(self.seed, "seed", _WHERE)

        self._x_min = Xa.min(axis=0)
        rng_x = Xa.max(axis=0) - self._x_min
        self._x_range = np.where(rng_x > 0, rng_x, 1.0)
        self._y_mean = float(ya.mean())
        sd = float(ya.std())
        self._y_sd = sd if sd > 0 else 1.0
        U = (Xa - self._x_min) / self._x_range
        t = (ya - self._y_mean) / self._y_sd
        groups = np.arange(d)
        S = _gp.group_sq_dists(U, U, groups, d)
        bounds = np.array([LOG_ELL_BOUNDS] * d + [LOG_S2_BOUNDS, LOG_NU2_BOUNDS])
        log_prior = self._log_prior(method, prior, d)

        self._n_eval = 0

        def neg(theta: np.ndarray) -> tuple[float, np.ndarray]:
            self._n_eval += 1
            lml, g = _gp.log_evidence(theta, S, t)
            if log_prior is not None and math.isfinite(lml):
                lp, gp = log_prior(theta)
                lml, g = lml + lp, g + gp
            if not math.isfinite(lml):
                return _PENALTY, np.zeros_like(theta)
            return -lml, -g

        starts = [np.clip(self._initial_theta(Xa, ya, d), bounds[:, 0], bounds[:, 1])]
        for _ in range(n_restarts):
            starts.append(np.clip(self._draw_theta(prior, d, rng), bounds[:, 0], bounds[:, 1]))
        best_theta, best_f = None, math.inf
        with single_thread():
            for theta0 in starts:
                try:
                    res = minimize(neg, theta0, jac=True, method="L-BFGS-B", bounds=bounds)
                except (ValueError, FloatingPointError, np.linalg.LinAlgError):
                    continue
                if math.isfinite(res.fun) and res.fun < min(best_f, _PENALTY / 2):
                    best_theta, best_f = np.asarray(res.x, dtype=float), float(res.fun)
            if best_theta is None:
                raise InferenceError(
                    f"{_WHERE} could not evaluate the evidence from any start; check X and y "
                    "for duplicated rows with different targets or extreme values."
                )
            if method == "mcmc":
                best_theta = self._sample(best_theta, S, t, prior, bounds, rng)
                draws = self.theta_samples_
                keep = draws[np.linspace(0, len(draws) - 1, min(len(draws), 64)).astype(int)]
                self._posteriors = [_gp.GPPosterior(th, U, t, groups) for th in keep]
            else:
                self._posteriors = [_gp.GPPosterior(best_theta, U, t, groups)]
            lml, _ = _gp.log_evidence(best_theta, S, t, grad=False)
        self.theta_ = best_theta
        self.length_scale_ = np.exp(best_theta[:d]) * self._x_range
        self.signal_variance_ = float(math.exp(best_theta[d])) * self._y_sd**2
        self.noise_variance_ = float(math.exp(best_theta[d + 1])) * self._y_sd**2
        self.log_evidence_ = float(lml) - n * math.log(self._y_sd)
        self.n_evaluations_ = self._n_eval
        return self

    def _sample(
        self,
        mode: np.ndarray,
        S: np.ndarray,
        t: np.ndarray,
        prior: Any,
        bounds: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Slice-sample theta from the MAP ``mode``; sets the draws and diagnostics and
        returns their mean."""
        from twiddle._mcmc import effective_sample_size, slice_sample, split_rhat

        d = mode.size - 2
        log_prior = self._log_prior("mcmc", prior, d)
        assert log_prior is not None

        def logp(theta: np.ndarray) -> float:
            self._n_eval += 1
            lml, _ = _gp.log_evidence(theta, S, t, grad=False)
            if not math.isfinite(lml):
                return -math.inf
            return float(lml) + log_prior(theta)[0]

        n_chains = 4
        per_chain = -(-int(self.n_draws) // n_chains)
        chains = np.empty((n_chains, per_chain, mode.size))
        for c, chain_rng in enumerate(rng.spawn(n_chains)):
            start = np.clip(mode + 0.1 * chain_rng.standard_normal(mode.size), *bounds.T)
            if not math.isfinite(logp(start)):
                start = mode
            chains[c] = slice_sample(
                logp,
                start,
                per_chain,
                chain_rng,
                burn=per_chain,
                width=1.0,
                lower=bounds[:, 0],
                upper=bounds[:, 1],
            )
        self.ess_ = effective_sample_size(chains)
        self.rhat_ = split_rhat(chains)
        self.theta_samples_ = chains.reshape(-1, mode.size)[: int(self.n_draws)]
        mean: np.ndarray = self.theta_samples_.mean(axis=0)
        return mean

    def _initial_theta(self, X: np.ndarray, y: np.ndarray, d: int) -> np.ndarray:
        ell = (
            np.full(d, 0.5)
            if self.length_scale is None
            else np.broadcast_to(np.asarray(self.length_scale, dtype=float), (d,)) / self._x_range
        )
        var = self._y_sd**2
        s2 = 1.0 if self.signal_variance is None else float(self.signal_variance) / var
        nu2 = 0.1 if self.noise_variance is None else float(self.noise_variance) / var
        return np.concatenate([np.log(ell), [math.log(s2), math.log(nu2)]])

    def _draw_theta(self, prior: Any, d: int, rng: np.random.Generator) -> np.ndarray:
        if isinstance(prior, Mapping):
            ell = np.array([prior["length_scale"].sample(rng) for _ in range(d)]) / self._x_range
            s2 = prior["signal_variance"].sample(rng) / self._y_sd**2
            nu2 = prior["noise_variance"].sample(rng) / self._y_sd**2
            with np.errstate(divide="ignore"):
                theta = np.log(np.concatenate([ell, [s2, nu2]]))
            return np.nan_to_num(theta, nan=0.0, neginf=-50.0, posinf=50.0)
        hp = _gp.Hyperprior.default(d)
        draw: np.ndarray = hp.locs(d) + hp.scales(d) * rng.standard_normal(d + 2)
        return draw

    def _log_prior(self, method: str, prior: Any, d: int) -> Any:
        """Log hyperprior density and its gradient in theta: of the natural-scale
        hyperparameters for "map", of theta itself (the Jacobian added) for "mcmc"."""
        if method == "ml":
            return None
        jacobian = method == "mcmc"
        if prior == "default":
            hp = _gp.Hyperprior.default(d)
            return lambda theta: hp.logpdf(theta, log_scale=jacobian)
        scale = np.concatenate([self._x_range, [self._y_sd**2, self._y_sd**2]])
        parts = [prior["length_scale"]] * d + [prior["signal_variance"], prior["noise_variance"]]

        def log_prior(theta: np.ndarray) -> tuple[float, np.ndarray]:
            h = np.exp(theta) * scale  # natural-scale hyperparameters in X and y units
            lp = 0.0
            g = np.zeros_like(theta)
            for i, p in enumerate(parts):
                v = p.logpdf(float(h[i]))
                if v == -math.inf:
                    return -math.inf, g
                lp += v
                g[i] = p.grad_logpdf(float(h[i])) * h[i]  # d/dtheta_i
            if jacobian:  # density of theta: times |dh/dtheta| = prod h
                lp += float(np.sum(theta))
                g = g + 1.0
            return lp, g

        return log_prior

    # ---- predict -----------------------------------------------------------------------
    def predict(self, X: Any, return_std: bool = False) -> Any:
        """Posterior predictive mean (and standard deviation) at new inputs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        return_std : bool, default False
            Also return the standard deviation of a new noisy target (latent variance
            plus ``noise_variance_``), as scikit-learn's GP with a ``WhiteKernel`` does.

        Returns
        -------
        y_mean : array of shape (n_samples,)
        y_std : array of shape (n_samples,)
            Only with ``return_std=True``.
        """
        from sklearn.utils.validation import check_array, check_is_fitted

        check_is_fitted(self, "theta_")
        Xa = check_array(X, dtype=np.float64)
        if Xa.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {Xa.shape[1]} features, but {_WHERE} is expecting "
                f"{self.n_features_in_} features as input."
            )
        U = (Xa - self._x_min) / self._x_range
        means, variances = [], []
        with single_thread():
            for post in self._posteriors:  # one (MAP) or draws of theta (MCMC)
                m, v = post.predict(U)
                means.append(m)
                variances.append(v + math.exp(post.theta[-1]))
        M, V = np.array(means), np.array(variances)
        mean = M.mean(axis=0)
        y_mean = self._y_mean + self._y_sd * mean
        if not return_std:
            return y_mean
        var = (V + M**2).mean(axis=0) - mean**2  # variance of the equal-weight mixture
        return y_mean, self._y_sd * np.sqrt(np.maximum(var, 0.0))
