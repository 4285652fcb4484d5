"""Bayesian linear regression: exact evidence, MacKay and Tipping-Faul evidence maximisation.

Notation
--------
X            (n, d) design matrix; with an intercept, centred on its column means
y            (n,) targets; with an intercept, centred on their mean
alpha        noise precision: y = X w + e, e ~ N(0, I / alpha)
lambda       weight precision: w ~ N(0, I / lambda); ARD: w_i ~ N(0, 1 / lambda_i)
A            posterior precision of w: diag(lambda) + alpha X^T X;  Sigma = A^-1
m            posterior mean of w: alpha Sigma X^T y
sse          |y - X m|^2
gamma        number of well-determined parameters: sum_i (1 - lambda_i Sigma_ii)
X = U S V^T  singular value decomposition; e_k = S_k^2 the eigenvalues of X^T X
             (computed as such when n >= d, from the SVD otherwise)

Evidence (the marginal likelihood of the targets; MacKay 1992, Bishop 2006 eq. 3.86):

    log p(y | alpha, lambda) = log N(y; 0, I / alpha + X diag(1 / lambda) X^T)
      = 1/2 [ sum_i log lambda_i + n log alpha - alpha sse - sum_i lambda_i m_i^2
              - log |A| - n log 2 pi ]

    d/d alpha    = 1/2 [ n / alpha - sse - tr(Sigma X^T X) ]
    d/d lambda_i = 1/2 [ 1 / lambda_i - m_i^2 - Sigma_ii ]

With one lambda, in the eigenbasis of X^T X everything costs O(d) per evaluation:
log |A| = sum_k log(lambda + alpha e_k), and MacKay's fixed point is

    gamma = sum_k alpha e_k / (lambda + alpha e_k),
    lambda <- gamma / |m|^2,   alpha <- (n - gamma) / sse.

ARD (one lambda_i per weight). Many lambda_i go to infinity at the maximum (their
weights are pruned), where gradient methods and the fixed point crawl. The sequential
algorithm of Tipping and Faul (2003) instead maximises the evidence in one lambda_i
at a time, exactly: with C_{-i} the covariance of y without weight i,

    s_i = x_i^T C_{-i}^-1 x_i,   q_i = x_i^T C_{-i}^-1 y,
    lambda_i = s_i^2 / (q_i^2 - s_i)  if q_i^2 > s_i,  else  infinity (pruned),

so adding, re-estimating and pruning weights are all exact one-dimensional moves.
s_i and q_i come from S_i = alpha x_i^T x_i - alpha^2 x_i^T X_A Sigma X_A^T x_i and
Q_i = alpha x_i^T (y - X_A m) over the active set A: s_i = lambda_i S_i / (lambda_i - S_i)
(same for q_i) if i is active, else S_i. Each iteration makes all these moves at once
(one Cholesky factorisation) together with alpha's fixed point; if that lowers the
evidence it is redone as a sequential sweep, one weight at a time, which is coordinate
ascent and cannot.

Intercept. As in scikit-learn, ``fit_intercept=True`` centres X and y on their means and
fits the centred data with n observations; the evidence reported is that of the centred
targets, ``log N(y - mean(y); 0, I / alpha + X_c diag(1 / lambda) X_c^T)``.

References
----------
D. J. C. MacKay, "Bayesian interpolation", Neural Computation 4(3), 1992.
M. E. Tipping, "Sparse Bayesian learning and the relevance vector machine", Journal of
Machine Learning Research 1, 2001.
M. E. Tipping and A. C. Faul, "Fast marginal likelihood maximisation for sparse Bayesian
models", AISTATS 2003.
C. M. Bishop, Pattern Recognition and Machine Learning, 2006, section 3.5.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve, eigh, svd
from sklearn.base import BaseEstimator, RegressorMixin

from twiddle._errors import InvalidParameterError
from twiddle._threads import single_thread
from twiddle._validation import check_choice, check_float, check_int
from twiddle.evidence._infer import ConvergenceWarning, InferenceResult, infer
from twiddle.evidence._priors import Prior

_LOG2PI = math.log(2.0 * math.pi)
_TINY = np.finfo(float).tiny
_WHERE = "BayesianLinearRegression"
#: The fixed points stop when alpha exceeds this multiple of its start, 1 / var(y):
#: a noise variance of 1e-10 var(y) means the targets are fitted exactly.
ALPHA_CAP = 1e10


def _centre(
    X: np.ndarray, y: np.ndarray, fit_intercept: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Centred copies (if ``fit_intercept``) and the offsets ``(x_mean, y_mean)``."""
    if fit_intercept:
        x_off = X.mean(axis=0)
        y_off = float(y.mean())
        return X - x_off, y - y_off, x_off, y_off
    return X, y, np.zeros(X.shape[1]), 0.0


# ----------------------------------------------------------------------------------
# One lambda: the eigenbasis
# ----------------------------------------------------------------------------------
class _Eigen:
    """The evidence of ``y ~ N(0, I / alpha + X X^T / lambda)`` in the eigenbasis of X^T X."""

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        n, d = X.shape
        self.n, self.d = n, d
        if n >= d:
            # eigenvectors of the Gram matrix: cheaper than the SVD of X when n >> d
            e, V = eigh(X.T @ X, check_finite=False)
            self.e = np.maximum(e[::-1], 0.0)
            self.Vt = np.ascontiguousarray(V[:, ::-1].T)  # (d, d)
            self.sz = self.Vt @ (X.T @ y)  # S U^T y, without U
        else:
            U, s, Vt = svd(X, full_matrices=True, check_finite=False, lapack_driver="gesdd")
            self.e = s * s
            self.Vt = Vt  # (d, d)
            self.sz = s * (U.T @ y)
        self.r = self.e.size
        self.yy = float(y @ y)

    def stats(self, alpha: float, lam: float) -> dict[str, Any]:
        den = lam + alpha * self.e
        c = alpha * self.sz / den  # posterior mean in the eigenbasis
        # sse = |y|^2 - sum_k (S U^T y)_k^2 alpha (2 lambda + alpha e_k) / den_k^2
        sse = max(
            self.yy - float(np.sum(self.sz**2 * alpha * (2.0 * lam + alpha * self.e) / den**2)), 0.0
        )
        w2 = float(c @ c)
        gamma = float(np.sum(alpha * self.e / den))
        logdet = float(np.sum(np.log(den))) + (self.d - self.r) * math.log(lam)
        return {"den": den, "c": c, "sse": sse, "w2": w2, "gamma": gamma, "logdet": logdet}

    def log_evidence(self, alpha: float, lam: float) -> tuple[float, float, float]:
        """Log evidence and its derivatives in ``alpha`` and ``lambda``."""
        if not (alpha > 0 and lam > 0 and math.isfinite(alpha) and math.isfinite(lam)):
            return -math.inf, 0.0, 0.0
        n, d = self.n, self.d
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            st = self.stats(alpha, lam)
            le = 0.5 * (
                d * math.log(lam)
                + n * math.log(alpha)
                - alpha * st["sse"]
                - lam * st["w2"]
                - st["logdet"]
                - n * _LOG2PI
            )
            inv = 1.0 / st["den"]
            d_alpha = 0.5 * (n / alpha - st["sse"] - float(np.sum(self.e * inv)))
            d_lam = 0.5 * (self.r / lam - st["w2"] - float(np.sum(inv)))
        if not (math.isfinite(le) and math.isfinite(d_alpha) and math.isfinite(d_lam)):
            return -math.inf, 0.0, 0.0  # beyond floating point: far from any optimum
        return le, d_alpha, d_lam

    def coef(self, alpha: float, lam: float) -> np.ndarray:
        c = alpha * self.sz / (lam + alpha * self.e)
        out: np.ndarray = self.Vt[: self.r].T @ c
        return out

    def sigma_diag(self, alpha: float, lam: float) -> np.ndarray:
        """``1 / (lambda + alpha e)`` over all d eigen-directions."""
        e_full = np.zeros(self.d)
        e_full[: self.r] = self.e
        out: np.ndarray = 1.0 / (lam + alpha * e_full)
        return out

    def mackay(
        self, alpha: float, lam: float, max_iter: int, tol: float
    ) -> tuple[float, float, int, str]:
        """MacKay's fixed point from ``(alpha, lam)``.

        Returns ``(alpha, lam, n_iter, status)``, status "converged", "max_iter" or
        "unbounded" (alpha ran past ``ALPHA_CAP`` times its start: the targets are fitted
        exactly and the evidence grows without bound as the noise vanishes).
        """
        cap = ALPHA_CAP * alpha
        for it in range(1, max_iter + 1):
            st = self.stats(alpha, lam)
            gamma = st["gamma"]
            lam_new = gamma / max(st["w2"], _TINY)
            alpha_new = (self.n - gamma) / max(st["sse"], _TINY)
            if not 0.0 < alpha_new <= cap:
                return alpha, lam, it, "unbounded"
            done = abs(math.log(lam_new / lam)) < tol and abs(math.log(alpha_new / alpha)) < tol
            alpha, lam = alpha_new, lam_new
            if done:
                return alpha, lam, it, "converged"
        return alpha, lam, max_iter, "max_iter"


# ----------------------------------------------------------------------------------
# ARD: the Gram matrix and the active set
# ----------------------------------------------------------------------------------
class _Gram:
    """The evidence with one precision per weight; ``lambda_i = inf`` prunes weight i."""

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        self.X = X
        self.y = y
        self.n, self.d = X.shape
        self.G = X.T @ X
        self.b = X.T @ y
        self.yy = float(y @ y)

    def posterior(
        self, alpha: float, lam: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
        """``(active, Sigma, m, sse, logdet A)`` over the active (finite-lambda) weights."""
        active = np.flatnonzero(np.isfinite(lam))
        if active.size == 0:
            return active, np.zeros((0, 0)), np.zeros(0), self.yy, 0.0
        A = alpha * self.G[np.ix_(active, active)]
        A[np.diag_indices_from(A)] += lam[active]
        cf = cho_factor(A, lower=True, check_finite=False)
        Sigma = cho_solve(cf, np.eye(active.size), check_finite=False)
        m = alpha * (Sigma @ self.b[active])
        r = self.y - self.X[:, active] @ m
        logdet = 2.0 * float(np.sum(np.log(np.diag(cf[0]))))
        return active, Sigma, m, float(r @ r), logdet

    def log_evidence(self, alpha: float, lam: np.ndarray) -> tuple[float, float, np.ndarray]:
        """Log evidence and its derivatives in ``alpha`` and each ``lambda_i`` (0 if pruned)."""
        grad = np.zeros(self.d)
        if not (alpha > 0 and math.isfinite(alpha) and np.all(lam > 0)):
            return -math.inf, 0.0, grad
        n = self.n
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                active, Sigma, m, sse, logdet = self.posterior(alpha, lam)
            except (np.linalg.LinAlgError, ValueError):
                return -math.inf, 0.0, grad
            la = lam[active]
            le = 0.5 * (
                float(np.sum(np.log(la)))
                + n * math.log(alpha)
                - alpha * sse
                - float(la @ (m * m))
                - logdet
                - n * _LOG2PI
            )
            diag = np.diag(Sigma)
            grad[active] = 0.5 * (1.0 / la - m * m - diag)
            # tr(Sigma X^T X) = (|A| - sum_i lambda_i Sigma_ii) / alpha
            d_alpha = 0.5 * (n / alpha - sse - (active.size - float(la @ diag)) / alpha)
        if not (math.isfinite(le) and math.isfinite(d_alpha) and np.all(np.isfinite(grad))):
            return -math.inf, 0.0, np.zeros(self.d)
        return le, d_alpha, grad

    def _value(self, alpha: float, lam: np.ndarray, st: _State) -> float:
        la = lam[st.active]
        return 0.5 * (
            float(np.sum(np.log(la)))
            + self.n * math.log(alpha)
            - alpha * st.sse
            - float(la @ (st.m * st.m))
            - st.logdet
            - self.n * _LOG2PI
        )

    def _state(self, alpha: float, lam: np.ndarray) -> _State:
        active, Sigma, m, sse, logdet = self.posterior(alpha, lam)
        st = _State(active, Sigma, m, sse, logdet, 0.0)
        st.value = self._value(alpha, lam, st)
        return st

    def _optimal_lambdas(self, alpha: float, lam: np.ndarray, st: _State) -> np.ndarray:
        """Every lambda_i set to its one-dimensional optimum given the others (s_i, q_i)."""
        G, a = self.G, st.active
        GA = G[:, a]
        S = alpha * np.diag(G) - alpha * alpha * np.sum((GA @ st.Sigma) * GA, axis=1)
        Q = alpha * (self.b - GA @ st.m)
        s, q = S.copy(), Q.copy()
        la = lam[a]
        s[a] = la * S[a] / (la - S[a])
        q[a] = la * Q[a] / (la - S[a])
        theta = q * q - s
        out = np.full(self.d, np.inf)
        grow = (theta > 0) & (np.diag(G) > 0)
        out[grow] = s[grow] ** 2 / theta[grow]
        return out

    def _sweep(self, alpha: float, lam: np.ndarray) -> np.ndarray:
        """One sequential sweep: each lambda_i in turn to its exact optimum (coordinate ascent)."""
        lam = lam.copy()
        G, b = self.G, self.b
        gdiag = np.diag(G)
        active, Sigma, m, _, _ = self.posterior(alpha, lam)
        for i in range(self.d):
            if gdiag[i] <= 0:
                continue
            GiA = G[i, active]
            S = alpha * gdiag[i] - alpha * alpha * float(GiA @ (Sigma @ GiA))
            Q = alpha * b[i] - alpha * float(GiA @ m)
            if np.isfinite(lam[i]):
                s, q = lam[i] * S / (lam[i] - S), lam[i] * Q / (lam[i] - S)
            else:
                s, q = S, Q
            theta = q * q - s
            new = s * s / theta if theta > 0 else math.inf
            if new != lam[i]:
                lam[i] = new
                active, Sigma, m, _, _ = self.posterior(alpha, lam)
        return lam

    def sequential(
        self, alpha: float, max_iter: int, tol: float
    ) -> tuple[float, np.ndarray, int, str]:
        """Evidence maximisation over one precision per weight (Tipping and Faul 2003).

        Each iteration moves every lambda_i to its one-dimensional optimum given the
        others (their sparsity and quality factors), all at once, and alpha to its fixed
        point; should that lower the evidence (the joint move is not guaranteed to
        climb), the iteration is redone as a sequential sweep, one lambda_i at a time,
        which is exact coordinate ascent. Starts from the single best feature.

        Returns ``(alpha, lambda, n_iter, status)`` with ``lambda_i = inf`` for pruned
        weights and status as in :meth:`_Eigen.mackay`.
        """
        cap = ALPHA_CAP * alpha
        lam = np.full(self.d, np.inf)
        gdiag = np.diag(self.G)
        with np.errstate(divide="ignore", invalid="ignore"):
            proj = np.where(gdiag > 0, self.b * self.b / gdiag, 0.0)
        first = int(np.argmax(proj))
        if proj[first] > 1.0 / alpha:
            lam[first] = gdiag[first] / (proj[first] - 1.0 / alpha)
        it = 0
        try:
            st = self._state(alpha, lam)
            for it in range(1, max_iter + 1):
                gamma = float(np.sum(1.0 - lam[st.active] * np.diag(st.Sigma)))
                alpha_new = (self.n - gamma) / max(st.sse, _TINY)
                if not 0.0 < alpha_new <= cap:  # <= 0 only from rounding once y is interpolated
                    raise _Unbounded
                new_lam = self._optimal_lambdas(alpha, lam, st)
                try:
                    cand: _State | None = self._state(alpha_new, new_lam)
                except np.linalg.LinAlgError:
                    cand = None
                if cand is None or cand.value < st.value - 1e-12 * abs(st.value):
                    new_lam = self._sweep(alpha, lam)
                    cand = self._state(alpha_new, new_lam)
                same = np.isinf(new_lam) == np.isinf(lam)
                finite = np.isfinite(new_lam) & np.isfinite(lam)
                step = np.max(np.abs(np.log(new_lam[finite] / lam[finite])), initial=0.0)
                a_step = abs(math.log(alpha_new / alpha))
                alpha, lam, st = alpha_new, new_lam, cand
                if same.all() and step < tol and a_step < tol:
                    return alpha, lam, it, "converged"
        except (_Unbounded, np.linalg.LinAlgError):
            return alpha, lam, it, "unbounded"
        return alpha, lam, max_iter, "max_iter"


@dataclasses.dataclass
class _State:
    """The weight posterior at some (alpha, lambda), over the active weights."""

    active: np.ndarray
    Sigma: np.ndarray
    m: np.ndarray
    sse: float
    logdet: float
    value: float  # the log evidence


class _Unbounded(Exception):  # internal control flow, never escapes
    """The noise precision diverges: the evidence keeps growing as the noise vanishes."""


# ----------------------------------------------------------------------------------
# Public evidence function
# ----------------------------------------------------------------------------------
class _LinearEvidence:
    """``h -> (log evidence, gradient)`` of Bayesian linear regression (:func:`linear_evidence`)."""

    def __init__(self, model: _Eigen | _Gram) -> None:
        self._eig = model if isinstance(model, _Eigen) else None
        self._gram = model if isinstance(model, _Gram) else None
        self.d = model.d
        self.keys = ["alpha"] + (
            [f"lambda_{i}" for i in range(self.d)] if self._gram is not None else ["lambda"]
        )

    def __call__(self, h: Mapping[str, float]) -> tuple[float, dict[str, float]]:
        alpha = float(h["alpha"])
        if self._eig is not None:
            le, da, dl = self._eig.log_evidence(alpha, float(h["lambda"]))
            return le, {"alpha": da, "lambda": dl}
        assert self._gram is not None
        lam = np.array([float(h[k]) for k in self.keys[1:]])
        le, da, dlam = self._gram.log_evidence(alpha, lam)
        out = {"alpha": da}
        out.update({k: float(g) for k, g in zip(self.keys[1:], dlam, strict=True)})
        return le, out


def linear_evidence(X: Any, y: Any, *, fit_intercept: bool = True, ard: bool = False) -> Any:
    """The exact log evidence of Bayesian linear regression, as a function of its hyperparameters.

    Model: ``y = X w + b + e`` with noise ``e ~ N(0, I / alpha)`` and weights
    ``w ~ N(0, I / lambda)`` (or ``w_i ~ N(0, 1 / lambda_i)`` with ``ard=True``). The
    returned function is ready for :func:`twiddle.evidence.infer`.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    fit_intercept : bool, default True
        Centre X and y on their means first (scikit-learn's convention); the evidence
        is then that of the centred targets, ``n_samples``-dimensional.
    ard : bool, default False
        One weight precision per feature (keys ``"lambda_0"``, ``"lambda_1"``, ...).

    Returns
    -------
    callable
        ``f(h) -> (log_evidence, gradient)`` with ``h`` a dict with keys ``"alpha"`` and
        ``"lambda"`` (or ``"lambda_0"``...), positive floats; the gradient is a dict of
        the partial derivatives in the same keys. Each call costs O(n_features) (after
        one eigendecomposition up front) or, with ``ard``, a Cholesky factorisation.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from twiddle import evidence
    >>> X, y = load_diabetes(return_X_y=True)
    >>> f = evidence.linear_evidence(X, y)
    >>> value, grad = f({"alpha": 3.4102e-4, "lambda": 1.1462e-5})
    >>> round(value, 2)
    -2405.77
    """
    Xa = np.asarray(X, dtype=float)
    ya = np.asarray(y, dtype=float)
    if Xa.ndim != 2 or ya.ndim != 1 or Xa.shape[0] != ya.shape[0] or Xa.shape[0] < 1:
        raise InvalidParameterError(
            "The 'X' and 'y' parameters of linear_evidence must be arrays of shapes "
            f"(n_samples, n_features) and (n_samples,). Got {Xa.shape} and {ya.shape} instead."
        )
    Xc, yc, _, _ = _centre(Xa, ya, bool(fit_intercept))
    return _LinearEvidence(_Gram(Xc, yc) if ard else _Eigen(Xc, yc))


# ----------------------------------------------------------------------------------
# Estimator
# ----------------------------------------------------------------------------------
class BayesianLinearRegression(RegressorMixin, BaseEstimator):
    """Bayesian linear regression with evidence-fitted or inferred hyperparameters.

    Model: ``y = X w + intercept + e``, noise ``e ~ N(0, I / alpha)``, weights
    ``w ~ N(0, I / lambda)`` (or ``w_i ~ N(0, 1 / lambda_i)`` with ``ard=True``, automatic
    relevance determination). The hyperparameters ``alpha`` (noise precision) and
    ``lambda`` (weight precision) are chosen by ``method``:

    - ``"ml"``: maximise the evidence (type-II maximum likelihood) by MacKay's (1992)
      fixed point, or with ``ard=True`` by Tipping and Faul's (2003) sequential
      algorithm, which prunes weights whose precision goes to infinity (``lambda_i =
      inf``, ``coef_[i] = 0``).
    - ``"map"``: maximise evidence x hyperprior density, on the natural scale
      (:func:`twiddle.evidence.infer` with ``method="map"``).
    - ``"mcmc"``: slice-sample the hyperparameter posterior and average the weight
      posterior (and predictions) over it (not with ``ard=True``).

    With default settings this reproduces scikit-learn's ``BayesianRidge`` (whose
    Gamma(1e-6, 1e-6) hyperpriors move the optimum by a few 1e-7, relatively). To
    reproduce ``BayesianRidge(alpha_1=a1, alpha_2=a2, lambda_1=l1, lambda_2=l2)``
    exactly, use ``method="map"`` with ``alpha_prior=Gamma(a1 + 1, a2)`` and
    ``lambda_prior=Gamma(l1 + 1, l2)``: scikit-learn's updates maximise the evidence
    times the Gamma(a1, a2) density of ``log alpha``, which is the natural-scale
    Gamma(a1 + 1, a2) density.

    Parameters
    ----------
    method : {"ml", "map", "mcmc"}, default "ml"
    alpha_prior, lambda_prior : Prior or None
        Hyperpriors of ``alpha`` and of ``lambda`` (each ``lambda_i`` with ARD), with
        positive support, e.g. :class:`twiddle.evidence.Gamma`. Required by "map" and
        "mcmc"; must be None with "ml" (which uses none).
    ard : bool, default False
        One weight precision per feature.
    fit_intercept : bool, default True
        Centre X and y on their means (scikit-learn's convention) and fit an intercept.
    max_iter : int, default 300
        "ml": the most fixed-point iterations (ARD: sweeps over the features).
    tol : float, default 1e-8
        "ml": stop when no hyperparameter changes by more than a factor ``exp(tol)``
        (relative change ``tol``) in an iteration (ARD: and the pruned set is stable).
    seed : int, numpy.random.Generator or None
        Randomness of "map" (optimiser starts) and "mcmc" (the chains).

    Attributes
    ----------
    coef_ : array of shape (n_features,)
        Posterior mean of the weights ("mcmc": averaged over the hyperparameter posterior).
    intercept_ : float
    alpha_ : float
        Noise precision ("mcmc": posterior mean).
    lambda_ : float, or array of shape (n_features,) with ARD
        Weight precision(s) (``inf`` for pruned weights; "mcmc": posterior mean).
    sigma_ : array of shape (n_features, n_features)
        Posterior covariance of the weights ("mcmc": of the mixture over hyperparameters;
        ARD: zero rows and columns for pruned weights).
    log_evidence_ : float
        The exact log marginal likelihood ``log p(y | alpha_, lambda_)`` of the
        (centred, with an intercept) targets, including the ``-n/2 log 2 pi`` term and
        without any hyperprior term; equal to the log density of the centred targets
        under ``N(0, I / alpha_ + X_c diag(1 / lambda_) X_c^T)``. (scikit-learn's
        ``BayesianRidge.scores_`` add the Gamma hyperprior terms; ``ARDRegression.scores_``
        also omit the ``-n/2 log 2 pi``.)
    n_iter_ : int
        "ml": fixed-point iterations (ARD: sweeps); "map" and "mcmc": evidence evaluations.
    inference_ : InferenceResult or None
        The result of :func:`twiddle.evidence.infer` ("map", "mcmc"): samples,
        effective sample sizes, R-hat.
    X_offset_ : array of shape (n_features,)
        Column means subtracted from X (zeros without an intercept).
    n_features_in_ : int

    Notes
    -----
    With ``fit_intercept=True``, X and y are centred and the centred targets are treated
    as n observations (scikit-learn's convention), although centring leaves them n - 1
    degrees of freedom. Once ``n_features >= n_samples - 1`` the model can fit them
    exactly and the evidence keeps growing as ``alpha`` goes to infinity: "ml" then
    stops and warns (:class:`ConvergenceWarning`); a hyperprior on ``alpha`` ("map",
    "mcmc") restores a maximum. With ARD and many more features than samples, type-II
    ML can also prefer interpolating the targets; the same warning is given.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from twiddle.evidence import BayesianLinearRegression
    >>> X, y = load_diabetes(return_X_y=True)
    >>> model = BayesianLinearRegression().fit(X, y)
    >>> print(f"{model.alpha_:.4e} {model.lambda_:.4e} {model.log_evidence_:.4f}")
    3.4102e-04 1.1462e-05 -2405.7713
    """

    def __init__(
        self,
        *,
        method: str = "ml",
        alpha_prior: Prior | None = None,
        lambda_prior: Prior | None = None,
        ard: bool = False,
        fit_intercept: bool = True,
        max_iter: int = 300,
        tol: float = 1e-8,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        self.method = method
        self.alpha_prior = alpha_prior
        self.lambda_prior = lambda_prior
        self.ard = ard
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed

    # ---- validation --------------------------------------------------------------------
    def _check_params(self) -> tuple[str, int, float]:
        method = check_choice(self.method, "method", _WHERE, ("ml", "map", "mcmc"))
        for name in ("ard", "fit_intercept"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {_WHERE} must be a bool. "
                    f"Got {getattr(self, name)!r} instead."
                )
        if self.ard and method == "mcmc":
            check_choice(method, "method", f"{_WHERE} with ard=True", ("ml", "map"))
        for name in ("alpha_prior", "lambda_prior"):
            prior = getattr(self, name)
            if method == "ml":
                if prior is not None:
                    raise InvalidParameterError(
                        f"The {name!r} parameter of {_WHERE} must be None with method='ml' "
                        f"(type-II maximum likelihood uses no hyperprior). Got {prior!r} "
                        "instead; use method='map' or 'mcmc' to use it."
                    )
            elif not (isinstance(prior, Prior) and prior.support != "real"):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {_WHERE} must be a Prior with positive "
                    f"support (e.g. Gamma(1.0, 1e-3)) with method={method!r}. "
                    f"Got {prior!r} instead."
                )
            elif isinstance(prior.support, tuple) and prior.support[0] < 0:
                raise InvalidParameterError(
                    f"The {name!r} parameter of {_WHERE} must have a support inside "
                    f"(0, inf). Got {prior!r} instead."
                )
        max_iter = int(check_int(self.max_iter, "max_iter", _WHERE, minimum=1) or 1)
        tol = float(check_float(self.tol, "tol", _WHERE, minimum=0, exclusive=True) or 0.0)
        return method, max_iter, tol

    def _validate_X(self, X: Any, reset: bool, y: Any = None) -> Any:
        from sklearn.utils.validation import check_array, check_X_y

        if reset:
            Xa, ya = check_X_y(X, y, dtype=np.float64, y_numeric=True, ensure_min_samples=2)
            self.n_features_in_ = Xa.shape[1]
            return Xa, np.asarray(ya, dtype=float)
        Xa = check_array(X, dtype=np.float64)
        if Xa.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {Xa.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        return Xa

    # ---- fit ---------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> BayesianLinearRegression:
        """Fit the hyperparameters and the weight posterior.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        method, max_iter, tol = self._check_params()
        Xa, ya = self._validate_X(X, reset=True, y=y)
        Xc, yc, x_off, y_off = _centre(Xa, ya, self.fit_intercept)
        self.X_offset_ = x_off
        self.inference_: InferenceResult | None = None
        alpha0 = 1.0 / (float(np.var(ya)) + np.finfo(float).eps)  # scikit-learn's start
        with single_thread():
            if self.ard:
                self._fit_ard(Xc, yc, method, alpha0, max_iter, tol)
            else:
                self._fit_shared(Xc, yc, method, alpha0, max_iter, tol)
        self.intercept_ = y_off - float(x_off @ self.coef_) if self.fit_intercept else 0.0
        return self

    def _fit_shared(
        self, Xc: np.ndarray, yc: np.ndarray, method: str, alpha0: float, max_iter: int, tol: float
    ) -> None:
        eig = _Eigen(Xc, yc)
        if method == "ml":
            alpha, lam, n_iter, status = eig.mackay(alpha0, 1.0, max_iter, tol)
            _warn_status(status, max_iter)
            self._set_point(eig, alpha, lam, n_iter)
            return
        # Start from the evidence maximum (cheap here): the posterior mode is near it
        # unless the hyperpriors are strong, and vague priors give poor random starts.
        a_ml, l_ml, _, _ = eig.mackay(alpha0, 1.0, max_iter, tol)
        f = _LinearEvidence(eig)
        priors = self._priors(["lambda"])
        res = infer(
            f,
            priors,
            method=method,
            seed=self.seed,
            n_starts=3,
            init=_init({"alpha": a_ml, "lambda": l_ml}, priors),
        )
        self.inference_ = res
        if method == "map":
            self._set_point(eig, res.params_["alpha"], res.params_["lambda"], res.n_evaluations_)
            return
        # mcmc: average the weight posterior over the hyperparameter draws
        a_s, l_s = res.samples_["alpha"], res.samples_["lambda"]
        cs = (a_s[:, None] * eig.sz) / (l_s[:, None] + a_s[:, None] * eig.e)  # (S, r)
        V = eig.Vt.T
        c_mean = cs.mean(axis=0)
        self.coef_ = V[:, : eig.r] @ c_mean
        e_full = np.zeros(eig.d)
        e_full[: eig.r] = eig.e
        mean_inv_den = np.mean(1.0 / (l_s[:, None] + a_s[:, None] * e_full), axis=0)
        cov_c = np.cov(cs, rowvar=False, bias=True).reshape(eig.r, eig.r)
        Vr = V[:, : eig.r]
        self.sigma_ = (V * mean_inv_den) @ V.T + Vr @ cov_c @ Vr.T
        self.alpha_ = res.params_["alpha"]
        self.lambda_: float | np.ndarray = res.params_["lambda"]
        self._noise_var = float(np.mean(1.0 / a_s))
        self.log_evidence_ = eig.log_evidence(self.alpha_, self.lambda_)[0]
        self.n_iter_ = res.n_evaluations_

    def _priors(self, lambda_keys: list[str]) -> dict[str, Prior]:
        """The hyperpriors by key (validated to be Prior instances for "map" and "mcmc")."""
        a, lam = self.alpha_prior, self.lambda_prior
        if not (isinstance(a, Prior) and isinstance(lam, Prior)):  # guarded by _check_params
            raise InvalidParameterError(f"{_WHERE} needs alpha_prior and lambda_prior here.")
        priors = {"alpha": a}
        priors.update({k: lam for k in lambda_keys})
        return priors

    def _set_point(self, eig: _Eigen, alpha: float, lam: float, n_iter: int) -> None:
        self.alpha_ = float(alpha)
        self.lambda_ = float(lam)
        self.coef_ = eig.coef(alpha, lam)
        V = eig.Vt.T
        self.sigma_ = (V * eig.sigma_diag(alpha, lam)) @ V.T
        self._noise_var = 1.0 / alpha
        self.log_evidence_ = eig.log_evidence(alpha, lam)[0]
        self.n_iter_ = int(n_iter)

    def _fit_ard(
        self, Xc: np.ndarray, yc: np.ndarray, method: str, alpha0: float, max_iter: int, tol: float
    ) -> None:
        gram = _Gram(Xc, yc)
        d = gram.d
        if method == "ml":
            alpha, lam, n_iter, status = gram.sequential(alpha0, max_iter, tol)
            _warn_status(status, max_iter)
        else:
            a_ml, l_ml, _, _ = _Eigen(Xc, yc).mackay(alpha0, 1.0, max_iter, tol)
            f = _LinearEvidence(gram)
            priors = self._priors(f.keys[1:])
            start = {"alpha": a_ml}
            start.update({k: l_ml for k in f.keys[1:]})
            res = infer(
                f, priors, method="map", seed=self.seed, n_starts=3, init=_init(start, priors)
            )
            self.inference_ = res
            alpha = res.params_["alpha"]
            lam = np.array([res.params_[k] for k in f.keys[1:]])
            n_iter = res.n_evaluations_
        active, Sigma, m, _, _ = gram.posterior(alpha, lam)
        self.alpha_ = float(alpha)
        self.lambda_ = lam
        self.coef_ = np.zeros(d)
        self.coef_[active] = m
        self.sigma_ = np.zeros((d, d))
        self.sigma_[np.ix_(active, active)] = Sigma
        self._noise_var = 1.0 / alpha
        self.log_evidence_ = gram.log_evidence(alpha, lam)[0]
        self.n_iter_ = int(n_iter)

    # ---- predict -----------------------------------------------------------------------
    def predict(self, X: Any, return_std: bool = False) -> Any:
        """Posterior predictive mean (and standard deviation) of new targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        return_std : bool, default False
            Also return the standard deviation of the predictive distribution of a new
            noisy target: ``sqrt(x_c^T sigma_ x_c + 1 / alpha_)`` with ``x_c = x -
            X_offset_`` ("mcmc": the exact standard deviation of the mixture over the
            hyperparameter draws, with ``E[1 / alpha]`` for the noise).

        Returns
        -------
        y_mean : array of shape (n_samples,)
        y_std : array of shape (n_samples,)
            Only with ``return_std=True``.
        """
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "coef_")
        Xa = self._validate_X(X, reset=False)
        mean = Xa @ self.coef_ + self.intercept_
        if not return_std:
            return mean
        Xc = Xa - self.X_offset_
        var = np.sum((Xc @ self.sigma_) * Xc, axis=1) + self._noise_var
        return mean, np.sqrt(np.maximum(var, 0.0))


def _init(start: dict[str, float], priors: Mapping[str, Prior | None]) -> dict[str, float] | None:
    """``start`` if it lies inside every prior's support, else None."""
    for k, v in start.items():
        p = priors[k]
        if p is None or p.logpdf(v) == -math.inf:
            return None
    return start


def _warn_status(status: str, max_iter: int) -> None:
    if status == "max_iter":
        message = (
            f"BayesianLinearRegression did not converge in max_iter={max_iter} iterations; "
            "increase max_iter or tol."
        )
    elif status == "unbounded":
        message = (
            "The evidence of BayesianLinearRegression keeps growing as the noise precision "
            "alpha goes to infinity: the model fits the targets exactly (with "
            "fit_intercept=True this happens once n_features >= n_samples - 1, since "
            "centring removes one dimension of the data). Type-II maximum likelihood has no "
            "answer here; use method='map' with an alpha_prior (scikit-learn's BayesianRidge "
            "is held finite by its Gamma hyperprior in the same way)."
        )
    else:
        return
    warnings.warn(message, ConvergenceWarning, stacklevel=4)
