"""Gaussian-process regression for Bayesian optimisation: kernel, evidence, hyperpriors.

Pure maths on arrays (numpy/scipy, float64). No study, storage or sampler code.

Notation
--------
n            number of observations
d            number of search-space dimensions (one length scale each)
U            (n, d) unit-cube encoding of configurations, NaN where inactive
Z            (n, m) Euclidean features of U (see :class:`FeatureMap`)
g(c)         length-scale group of feature column c (a dimension index in 0..d-1)
ell_j        length scale of dimension j
s2           signal variance (sigma_f^2)
nu2          learned homoscedastic noise variance
e_i          known extra noise variance of observation i (e.g. CV standard error^2)
r            scaled distance, r^2 = sum_c (z_c - z'_c)^2 / ell_{g(c)}^2
k(r)         Matern-5/2: s2 (1 + sqrt5 r + 5 r^2 / 3) exp(-sqrt5 r)
K            k(Z, Z) + diag(nu2 + e)
theta        log hyperparameters [log ell_1..ell_d, log s2, log nu2]
L            Cholesky factor of K; alpha = K^-1 y

Log evidence (Rasmussen and Williams 2006, eq. 2.30 and 5.9):

    log p(y | theta) = -1/2 y^T alpha - sum_i log L_ii - n/2 log 2 pi
    d/dtheta_j       =  1/2 tr((alpha alpha^T - K^-1) dK/dtheta_j)

with dK/dlog ell_j = s2 (5/3)(1 + sqrt5 r) exp(-sqrt5 r) S_j / ell_j^2, where S_j is
the squared distance in the columns of dimension j.

Features. A numeric dimension (float, int) is one column, its unit-cube coordinate.
A categorical dimension with q choices is q one-hot columns scaled by 1/sqrt 2, so
two different choices are at distance exactly 1 and the kernel stays positive
definite: a true categorical kernel, with no rounding of a continuous relaxation.
A conditional dimension gets one more column, an "inactive" indicator, in the same
length-scale group; its value columns are set to the middle of their range when it is
inactive. Two configurations where it is inactive do not differ in it; an inactive and
an active one differ by a fixed amount plus how far the active value is from the middle.
Nothing is dropped and the imputed middle value is only ever seen together with the
indicator, so the GP always knows the dimension was inactive.

Hyperpriors (weakly informative, on the log scale, for outputs standardised to zero
mean and unit variance and inputs in the unit cube):

- ell_j ~ LogNormal(sqrt2 + log(d) / 2, sqrt3): the dimension-scaled prior of
  Hvarfner, Hellsten and Nardi (2024), which lets length scales grow with d so the GP
  does not become a needle-in-a-haystack model in higher dimensions (mode
  exp(sqrt2 - 3) * sqrt(d), about 0.24 sqrt(d)).
- s2 ~ LogNormal(1, 1): mode 1, the variance of standardised outputs.
- nu2 ~ LogNormal(-4, 1): mode exp(-5), about 0.007: little noise, free to grow.

MAP maximises evidence x the priors' densities on the natural scale (the mode of a
log-normal is exp(loc - scale^2)); MCMC samples theta = log(hyperparameters), whose
prior density includes the Jacobian.

References
----------
C. E. Rasmussen and C. K. I. Williams, Gaussian Processes for Machine Learning, 2006.
J. Snoek, H. Larochelle, R. P. Adams, Practical Bayesian optimization of machine
learning algorithms, NeurIPS 2012 (MCMC over kernel hyperparameters).
C. Hvarfner, E. O. Hellsten, L. Nardi, Vanilla Bayesian optimization performs great in
high dimensions, ICML 2024.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy.linalg import cho_solve, solve_triangular
from scipy.linalg.lapack import dpotrf as _potrf
from scipy.linalg.lapack import dpotri as _potri
from scipy.linalg.lapack import dpotrs as _potrs
from scipy.linalg.lapack import dtrtri as _trtri
from scipy.optimize import minimize
from scipy.special import erfcx, log_ndtr, ndtr

from twiddle._mcmc import slice_sample

SQRT5 = math.sqrt(5.0)
LOG2PI = math.log(2.0 * math.pi)
JITTER = 1e-8

#: Bounds of the log hyperparameters: length scale, signal variance, noise variance.
LOG_ELL_BOUNDS = (math.log(5e-3), math.log(2e1))
LOG_S2_BOUNDS = (math.log(5e-2), math.log(2e1))
LOG_NU2_BOUNDS = (math.log(1e-6), math.log(2.0))


# ----------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FeatureMap:
    """Maps unit-cube encodings (NaN for inactive) to Euclidean features.

    Attributes
    ----------
    kinds : tuple of str
        Per dimension: "numeric" or "categorical".
    n_choices : tuple of int
        Per dimension: number of choices (0 for numeric).
    conditional : tuple of bool
        Per dimension: whether it can be inactive.
    groups : array of shape (m,)
        Length-scale group (dimension index) of each feature column.
    """

    kinds: tuple[str, ...]
    n_choices: tuple[int, ...]
    conditional: tuple[bool, ...]
    groups: np.ndarray

    @classmethod
    def build(
        cls,
        kinds: Sequence[str],
        n_choices: Sequence[int],
        conditional: Sequence[bool],
    ) -> FeatureMap:
        groups: list[int] = []
        for j, (kind, q, cond) in enumerate(zip(kinds, n_choices, conditional, strict=True)):
            groups.extend([j] * (q if kind == "categorical" else 1))
            if cond:
                groups.append(j)
        return cls(tuple(kinds), tuple(n_choices), tuple(conditional), np.array(groups, dtype=int))

    @property
    def d(self) -> int:
        return len(self.kinds)

    def transform(self, U: np.ndarray) -> np.ndarray:
        """Features of shape (n, m) of unit-cube points ``U`` of shape (n, d)."""
        U = np.atleast_2d(np.asarray(U, dtype=float))
        cols: list[np.ndarray] = []
        half = 1.0 / math.sqrt(2.0)
        for j, kind in enumerate(self.kinds):
            u = U[:, j]
            inactive = np.isnan(u)
            if kind == "categorical":
                q = self.n_choices[j]
                idx = np.minimum((np.nan_to_num(u, nan=0.0) * q).astype(int), q - 1)
                onehot = np.zeros((U.shape[0], q))
                onehot[np.arange(U.shape[0]), idx] = half
                onehot[inactive] = 0.0
                cols.append(onehot)
            else:
                cols.append(np.where(inactive, 0.5, u)[:, None])
            if self.conditional[j]:
                cols.append((inactive * half)[:, None])
        return np.hstack(cols)


# ----------------------------------------------------------------------------------
# Kernel and evidence
# ----------------------------------------------------------------------------------
def group_sq_dists(Z1: np.ndarray, Z2: np.ndarray, groups: np.ndarray, d: int) -> np.ndarray:
    """Squared distances per length-scale group, array of shape (d, n1, n2)."""
    if Z1.shape[1] == d and np.array_equal(groups, np.arange(d)):
        # one column per group: the squared differences themselves, dimension first
        diff = Z1.T[:, :, None] - Z2.T[:, None, :]
        return diff * diff
    diff = Z1[:, None, :] - Z2[None, :, :]  # (n1, n2, m)
    onehot = np.zeros((Z1.shape[1], d))
    onehot[np.arange(Z1.shape[1]), groups] = 1.0
    out: np.ndarray = np.moveaxis((diff * diff) @ onehot, 2, 0)
    return np.ascontiguousarray(out)


def log_evidence(
    theta: np.ndarray,
    S: np.ndarray,
    y: np.ndarray,
    extra_noise: np.ndarray | None = None,
    grad: bool = True,
) -> tuple[float, np.ndarray]:
    """Log marginal likelihood and its gradient in ``theta``.

    Parameters
    ----------
    theta : array of shape (d + 2,)
        ``[log ell_1..ell_d, log s2, log nu2]``.
    S : array of shape (d, n, n)
        Squared distances per group between the training features.
    y : array of shape (n,)
    extra_noise : array of shape (n,), optional
        Known per-observation noise variances (heteroscedastic), added to ``nu2``.
    grad : bool
        Whether to compute the gradient (otherwise zeros).

    Returns
    -------
    lml : float
        ``-inf`` if K is not positive definite.
    grad : array of shape (d + 2,)

    Notes
    -----
    All d length-scale derivatives come from one matrix-vector product: with
    ``W = alpha alpha^T - K^-1`` and the groups' distances flattened to ``S`` of shape
    (d, n^2), ``d/dlog ell_j = 1/2 (S @ vec(W * G))_j / ell_j^2``. ``K^-1`` is formed
    from the Cholesky factor by LAPACK's ``potri``; it is never symmetrised, since only
    its contractions with symmetric matrices are needed.
    """
    d = S.shape[0]
    n = y.size
    inv_ell2 = np.exp(-2.0 * theta[:d])
    s2 = math.exp(theta[d])
    nu2 = math.exp(theta[d + 1])
    Sf = S.reshape(d, n * n)
    r2 = (inv_ell2 @ Sf).reshape(n, n)
    sr = np.sqrt(np.maximum(r2, 0.0))
    sr *= SQRT5  # sqrt5 r, computed once
    e = np.exp(-sr)
    one_sr = 1.0 + sr
    Kf = s2 * (one_sr + (5.0 / 3.0) * r2) * e
    K = Kf.copy()
    K.flat[:: n + 1] += nu2 + JITTER + (0.0 if extra_noise is None else extra_noise)
    L, info = _potrf(K, lower=1, clean=1, overwrite_a=1)
    if info != 0:
        return -math.inf, np.zeros(d + 2)
    alpha, _ = _potrs(L, y, lower=1)
    lml = -0.5 * float(y @ alpha) - float(np.log(L.flat[:: n + 1]).sum()) - 0.5 * n * LOG2PI
    g = np.zeros(d + 2)
    if grad:
        # potri leaves K^-1 in the lower triangle (the upper one stays zero). Every
        # matrix W is contracted with below is symmetric, so twice the strict lower
        # triangle plus the diagonal stands in for the full K^-1.
        Kinv_low, info = _potri(L, lower=1, overwrite_c=1)
        if info != 0:
            return -math.inf, np.zeros(d + 2)
        Kinv_low *= 2.0
        Kinv_low.flat[:: n + 1] *= 0.5
        W = np.outer(alpha, alpha)
        W -= Kinv_low
        G = (s2 * 5.0 / 3.0) * one_sr * e
        G *= W
        g[:d] = 0.5 * (Sf @ G.ravel()) * inv_ell2
        g[d] = 0.5 * float(np.vdot(W, Kf))
        g[d + 1] = 0.5 * nu2 * float(np.trace(W))
    return lml, g


@dataclasses.dataclass(frozen=True)
class Hyperprior:
    """Independent log-normal priors on length scales, signal and noise variance.

    ``X ~ LogNormal(loc, scale)`` means ``log X ~ Normal(loc, scale)``. The mode of such a
    prior is ``exp(loc - scale^2)``: with the defaults, length scale 0.5 * ... (see the module
    notes), signal variance 1 and noise variance ``exp(-5)``.
    """

    ell_loc: float
    ell_scale: float = math.sqrt(3.0)
    s2_loc: float = 1.0
    s2_scale: float = 1.0
    nu2_loc: float = -4.0
    nu2_scale: float = 1.0

    @classmethod
    def default(cls, d: int) -> Hyperprior:
        """The dimension-scaled length-scale prior of Hvarfner et al. (2024)."""
        return cls(ell_loc=math.sqrt(2.0) + 0.5 * math.log(max(d, 1)))

    def locs(self, d: int) -> np.ndarray:
        return np.array([self.ell_loc] * d + [self.s2_loc, self.nu2_loc])

    def scales(self, d: int) -> np.ndarray:
        return np.array([self.ell_scale] * d + [self.s2_scale, self.nu2_scale])

    def modes(self, d: int) -> np.ndarray:
        """Log of the prior modes (on the natural scale), array of shape (d + 2,)."""
        return self.locs(d) - self.scales(d) ** 2

    def logpdf(self, theta: np.ndarray, log_scale: bool = False) -> tuple[float, np.ndarray]:
        """Log prior density (up to a constant) and its gradient in ``theta``.

        Parameters
        ----------
        theta : array of shape (d + 2,)
            Log hyperparameters.
        log_scale : bool
            False: density of the hyperparameters themselves, evaluated at ``exp(theta)``
            (the MAP objective, as in the usual practice of fitting on the natural
            scale). True: density of ``theta`` (adds the Jacobian; for MCMC in ``theta``).
        """
        d = theta.size - 2
        m, s = self.locs(d), self.scales(d)
        zz = (theta - m) / s
        lp = -0.5 * float(zz @ zz)
        g = -zz / s
        if not log_scale:
            lp -= float(np.sum(theta))
            g = g - 1.0
        return lp, g


def theta_bounds(d: int) -> np.ndarray:
    """Array of shape (d + 2, 2) of bounds on the log hyperparameters."""
    b = [LOG_ELL_BOUNDS] * d + [LOG_S2_BOUNDS]
    b.append(LOG_NU2_BOUNDS)
    return np.array(b, dtype=float)


def fit_map(
    S: np.ndarray,
    y: np.ndarray,
    prior: Hyperprior | None,
    rng: np.random.Generator,
    *,
    extra_noise: np.ndarray | None = None,
    warm_start: np.ndarray | None = None,
    n_restarts: int = 2,
    maxiter: int = 200,
) -> tuple[np.ndarray, float, bool]:
    """Maximise log evidence + log hyperprior with multi-start L-BFGS-B in log space.

    Parameters
    ----------
    S, y, extra_noise
        As in :func:`log_evidence`.
    prior : Hyperprior or None
        None maximises the evidence alone (type-II maximum likelihood).
    rng : numpy.random.Generator
        Draws the random restarts (from the prior, or uniformly within bounds).
    warm_start : array of shape (d + 2,), optional
        Previous optimum; always one of the starts.
    n_restarts : int
        Random starts (drawn from the prior) in addition to the warm start, or, without
        a warm start, in addition to the prior mode.
    maxiter : int
        L-BFGS-B iterations per start. A few suffice to follow a warm start from one
        trial to the next; a full fit converges.

    Returns
    -------
    theta : array of shape (d + 2,)
    value : float
        The maximised objective.
    ok : bool
        False when every start failed; ``theta`` is then the prior mean (or warm start).
    """
    d = S.shape[0]
    bounds = theta_bounds(d)

    def neg(theta: np.ndarray) -> tuple[float, np.ndarray]:
        lml, g = log_evidence(theta, S, y, extra_noise)
        if not math.isfinite(lml):
            return 1e25, np.zeros_like(theta)
        if prior is not None:
            lp, gp = prior.logpdf(theta)
            lml += lp
            g = g + gp
        return -lml, -g

    base = Hyperprior.default(d) if prior is None else prior
    starts = []
    warm = warm_start is not None and warm_start.shape == (d + 2,)
    if warm:
        assert warm_start is not None
        starts.append(np.clip(warm_start, bounds[:, 0], bounds[:, 1]))
    else:
        starts.append(np.clip(base.modes(d), bounds[:, 0], bounds[:, 1]))
    for _ in range(n_restarts):
        draw = base.locs(d) + base.scales(d) * rng.standard_normal(d + 2)
        starts.append(np.clip(draw, bounds[:, 0], bounds[:, 1]))
    best_x, best_f = starts[0], math.inf
    for x0 in starts:
        try:
            res = minimize(
                neg, x0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": maxiter}
            )
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        if np.isfinite(res.fun) and res.fun < best_f:
            best_x, best_f = np.asarray(res.x), float(res.fun)
    if not math.isfinite(best_f) or best_f >= 1e24:
        return starts[0], -math.inf, False
    return best_x, -best_f, True


def sample_mcmc(
    S: np.ndarray,
    y: np.ndarray,
    prior: Hyperprior,
    rng: np.random.Generator,
    *,
    n_samples: int = 8,
    burn: int = 10,
    thin: int = 2,
    start: np.ndarray | None = None,
    extra_noise: np.ndarray | None = None,
) -> np.ndarray:
    """Slice-sample the log hyperparameters from evidence x hyperprior.

    Returns
    -------
    samples : array of shape (n_samples, d + 2)
    """
    d = S.shape[0]
    bounds = theta_bounds(d)

    def logp(theta: np.ndarray) -> float:
        if np.any(theta < bounds[:, 0]) or np.any(theta > bounds[:, 1]):
            return -math.inf
        lml, _ = log_evidence(theta, S, y, extra_noise, grad=False)
        lp, _ = prior.logpdf(theta, log_scale=True)
        return lml + lp

    x0 = prior.modes(d) if start is None else start
    x0 = np.clip(x0, bounds[:, 0], bounds[:, 1])
    if not math.isfinite(logp(x0)):
        x0 = np.clip(prior.modes(d), bounds[:, 0], bounds[:, 1])
    return slice_sample(
        logp,
        x0,
        n_samples,
        rng,
        burn=burn,
        thin=thin,
        width=1.0,
        lower=bounds[:, 0],
        upper=bounds[:, 1],
    )


# ----------------------------------------------------------------------------------
# Posterior
# ----------------------------------------------------------------------------------
class GPPosterior:
    """A GP conditioned on data, for one hyperparameter sample.

    Parameters
    ----------
    theta : array of shape (d + 2,)
    Z : array of shape (n, m)
        Training features.
    y : array of shape (n,)
    groups : array of shape (m,)
    extra_noise : array of shape (n,), optional
    """

    def __init__(
        self,
        theta: np.ndarray,
        Z: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray,
        extra_noise: np.ndarray | None = None,
    ) -> None:
        d = theta.size - 2
        self.theta = theta
        self.ell = np.exp(theta[:d])
        self.s2 = math.exp(theta[d])
        self.nu2 = math.exp(theta[d + 1])
        self.Z = Z
        self.y = y
        self.groups = groups
        self.d = d
        # scaled features: squared distance is plain Euclidean in these
        self._scale = 1.0 / self.ell[groups]
        self.Zs = Z * self._scale
        self._zs2 = np.sum(self.Zs * self.Zs, axis=1)
        K = self._k(self.Zs, self._zs2)
        K.flat[:: len(y) + 1] += self.nu2 + JITTER + (0.0 if extra_noise is None else extra_noise)
        self.L = np.linalg.cholesky(K)
        self.alpha = cho_solve((self.L, True), y, check_finite=False)
        # L^-1, so that predictions are matrix products: v = L^-1 k, K^-1 k = L^-T v
        self._Linv, info = _trtri(self.L, lower=1)
        if info != 0:  # pragma: no cover - L has a positive diagonal
            self._Linv = solve_triangular(self.L, np.eye(len(y)), lower=True)
        self._cols: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def _k(self, A: np.ndarray, a2: np.ndarray) -> np.ndarray:
        """Kernel between scaled points ``A`` (squared norms ``a2``) and the training set."""
        r2 = np.maximum(a2[:, None] + self._zs2[None, :] - 2.0 * (A @ self.Zs.T), 0.0)
        sr = np.sqrt(r2)
        sr *= SQRT5
        k: np.ndarray = self.s2 * (1.0 + sr + (5.0 / 3.0) * r2) * np.exp(-sr)
        return k

    def predict(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Latent mean and variance at features ``Z`` of shape (q, m); arrays of shape (q,)."""
        Zs = Z * self._scale
        Ks = self._k(Zs, np.sum(Zs * Zs, axis=1))
        mean = Ks @ self.alpha
        v = Ks @ self._Linv.T  # rows are (L^-1 k)^T
        var = np.maximum(self.s2 - np.einsum("qn,qn->q", v, v), 1e-12)
        return mean, var

    def predict_grad(
        self, Z: np.ndarray, cols: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Mean, variance and their gradients in the feature columns ``cols``.

        Returns
        -------
        mean, var : arrays of shape (q,)
        dmean, dvar : arrays of shape (q, len(cols))

        Notes
        -----
        With ``k`` the kernel vector of a point and ``D_c = dk/dz_c``:
        ``dmean_c = D_c . alpha`` and ``dvar_c = -2 D_c . (K^-1 k)``, and
        ``dk_i/dz_c = -s2 (5/3)(1 + sqrt5 r_i) exp(-sqrt5 r_i) (z_c - z_ic) / ell_c^2``.
        Both are contractions of the differences ``z_c - z_ic`` with the weights
        ``G alpha`` and ``-2 G K^-1 k`` (``G`` the radial factor above), computed as
        ``sum_i w_i z_c - sum_i w_i z_ic``, so no (q, n, m) tensor is formed.
        """
        Zs = Z * self._scale
        q = Zs.shape[0]
        r2 = np.sum(Zs * Zs, axis=1)[:, None] + self._zs2 - 2.0 * (Zs @ self.Zs.T)
        np.maximum(r2, 0.0, out=r2)
        sr = SQRT5 * np.sqrt(r2)
        se = self.s2 * np.exp(-sr)
        Ks = se * (1.0 + sr + (5.0 / 3.0) * r2)
        mean = Ks @ self.alpha
        v = Ks @ self._Linv.T  # (q, n): rows are (L^-1 k)^T
        var = np.maximum(self.s2 - np.sum(v * v, axis=1), 1e-12)
        # dk_i/dzs_c = G_i (zs_c - zs_ic) with G = -s2 (5/3)(1 + sqrt5 r) exp(-sqrt5 r);
        # weighted by alpha it gives the mean's gradient, by -2 K^-1 k the variance's
        Gm = (-5.0 / 3.0) * (1.0 + sr) * se
        W = np.empty((2, q, Gm.shape[1]))
        np.multiply(Gm, self.alpha, out=W[0])
        np.multiply(Gm, v @ self._Linv, out=W[1])
        W[1] *= -2.0
        key = cols.tobytes()
        if key not in self._cols:
            self._cols[key] = (self.Zs[:, cols], self._scale[cols])
        Xc, sc = self._cols[key]
        D = (W.sum(axis=2)[:, :, None] * Zs[None, :, cols] - W @ Xc) * sc
        dmean, dvar = D[0], D[1]
        return mean, var, dmean, dvar


# ----------------------------------------------------------------------------------
# Acquisition: log expected improvement
# ----------------------------------------------------------------------------------
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_LOG_SQRT2PI = 0.5 * math.log(2.0 * math.pi)
_C1 = math.log(math.pi / 2.0) / 2.0


def log_h(z: np.ndarray) -> np.ndarray:
    """``log(phi(z) + z Phi(z))``, stable for very negative ``z``.

    Uses ``phi(z) + z Phi(z) = phi(z) (1 - sqrt(pi/2) |z| erfcx(|z|/sqrt2))`` for ``z < -1``
    (Ament et al., "Unexpected improvements to expected improvement", NeurIPS 2023),
    with a ``log1p`` form that keeps relative accuracy where the bracket is tiny.
    """
    z = np.asarray(z, dtype=float)
    hi = z > -1.0
    if hi.all():  # the common case needs no masking
        out_hi: np.ndarray = np.log(np.exp(-0.5 * z * z - _LOG_SQRT2PI) + z * ndtr(z))
        return out_hi
    out = np.empty_like(z)
    far = z < -1e6
    any_far = bool(far.any())
    mid = ~hi
    if any_far:
        mid &= ~far
    if hi.any():
        zh = z[hi]
        out[hi] = np.log(np.exp(-0.5 * zh * zh - _LOG_SQRT2PI) + zh * ndtr(zh))
    zl = z[mid]
    # log phi(z) + log(1 - sqrt(pi/2) |z| erfcx(|z|/sqrt2)), the bracket via expm1
    t = np.log(erfcx(-zl * _INV_SQRT2) * np.abs(zl)) + _C1
    out[mid] = -0.5 * zl * zl - _LOG_SQRT2PI + np.log(-np.expm1(t))
    if any_far:
        # far tail: log h(z) = log phi(z) - 2 log|z| + O(z^-2)
        zf = z[far]
        out[far] = -0.5 * zf * zf - _LOG_SQRT2PI - 2.0 * np.log(-zf)
    return out


def log_ei(mean: np.ndarray, var: np.ndarray, best: float) -> np.ndarray:
    """Log expected improvement below ``best`` (minimisation), array of shape (q,)."""
    sd = np.sqrt(var)
    z = (best - mean) / sd
    return log_h(z) + np.log(sd)


def log_ei_grad(
    mean: np.ndarray, var: np.ndarray, dmean: np.ndarray, dvar: np.ndarray, best: float
) -> tuple[np.ndarray, np.ndarray]:
    """Log EI and its gradient given mean/variance gradients (shapes (q,), (q, c))."""
    sd = np.sqrt(var)
    z = (best - mean) / sd
    lh = log_h(z)
    # d log h / dz = Phi(z) / h(z) = exp(log Phi(z) - log h(z))
    dlh = np.exp(log_ndtr(z) - lh)
    # with dsd = dvar / (2 sd) and dz = -(dmean + z dsd) / sd:
    # d log EI = dlh dz + dsd / sd = -(dlh / sd) dmean + (1 - dlh z) / (2 var) dvar
    grad = (-dlh / sd)[:, None] * dmean + ((1.0 - dlh * z) / (2.0 * var))[:, None] * dvar
    return lh + np.log(sd), grad
