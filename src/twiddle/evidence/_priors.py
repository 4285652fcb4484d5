"""Hyperpriors: immutable, validated univariate densities with an unconstrained coordinate.

Notation
--------
x            a hyperparameter on its natural scale (a precision, a length scale, a mean)
p(x)         its prior density on the natural scale
u            its unconstrained coordinate, a real number: x = T(u)
T            the bijection from R onto the support of p:
             identity for "real", exp for "positive", a scaled logistic for an interval
             (and a logistic in log x for a log-uniform prior)
log |T'(u)|  the log-Jacobian; the density of u is p(T(u)) |T'(u)|

Optimisation and slice sampling happen in ``u`` (Neal 2003 recommends sampling
positive scale parameters on the log scale); a MAP estimate maximises the density of
``x`` (no Jacobian) and MCMC samples the density of ``u`` (with the Jacobian), so both
describe the same posterior of ``x``.

Every prior has ``logpdf`` and ``grad_logpdf`` (the derivative in ``x``), both
vectorised over arrays and returning ``-inf`` / ``0`` outside the support, and
``sample(rng, size)``.

References
----------
R. M. Neal, "Slice sampling", Annals of Statistics 31(3), 2003.
A. Gelman, "Prior distributions for variance parameters in hierarchical models",
Bayesian Analysis 1(3), 2006 (the half-Cauchy prior on a group-level scale).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np
from scipy.special import expit, gammaincinv, log_expit

from twiddle._errors import InvalidParameterError
from twiddle._validation import as_generator, check_float

_LOG2PI = math.log(2.0 * math.pi)
_LOG_PI = math.log(math.pi)
_LOG2 = math.log(2.0)

ArrayOrFloat = Any  # float for a scalar input, numpy array for an array input
Support = str | tuple[float, float]


def _softplus(t: float) -> float:
    return max(t, 0.0) + math.log1p(math.exp(-abs(t)))


def _out(value: np.ndarray) -> ArrayOrFloat:
    return float(value) if value.ndim == 0 else value


def _positive(value: Any, name: str, where: str) -> float:
    out = check_float(value, name, where, minimum=0, exclusive=True)
    assert out is not None  # allow_none is False
    return out


def _finite(value: Any, name: str, where: str) -> float:
    out = check_float(value, name, where)
    assert out is not None
    return out


class Prior:
    """Base class of the hyperpriors (immutable; validated on construction).

    Subclasses define the density on the natural scale; this class adds the
    transform to an unconstrained coordinate, determined by :attr:`support`.
    """

    _kind: ClassVar[str] = "real"

    @property
    def support(self) -> Support:
        """``"real"``, ``"positive"`` or the closed interval ``(low, high)``."""
        return self._kind

    # ---- density ---------------------------------------------------------------------
    def logpdf(self, x: ArrayOrFloat) -> ArrayOrFloat:
        """Log density on the natural scale.

        Parameters
        ----------
        x : float or array of shape (...)

        Returns
        -------
        float or array of shape (...)
            ``-inf`` outside the support.
        """
        if isinstance(x, (float, int, np.floating, np.integer)):
            xf = float(x)
            return float(self._logpdf(xf)) if self._inside_scalar(xf) else -math.inf
        xa = np.asarray(x, dtype=float)
        inside = self._inside(xa)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            val = np.where(inside, self._logpdf(np.where(inside, xa, self._safe_point())), -np.inf)
        return _out(np.asarray(val, dtype=float))

    def grad_logpdf(self, x: ArrayOrFloat) -> ArrayOrFloat:
        """Derivative of :meth:`logpdf` in ``x`` (0 outside the support).

        Parameters
        ----------
        x : float or array of shape (...)

        Returns
        -------
        float or array of shape (...)
        """
        if isinstance(x, (float, int, np.floating, np.integer)):
            xf = float(x)
            return float(self._grad(xf)) if self._inside_scalar(xf) else 0.0
        xa = np.asarray(x, dtype=float)
        inside = self._inside(xa)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            val = np.where(inside, self._grad(np.where(inside, xa, self._safe_point())), 0.0)
        return _out(np.asarray(val, dtype=float))

    def sample(
        self,
        rng: np.random.Generator | int | None = None,
        size: int | tuple[int, ...] | None = None,
    ) -> ArrayOrFloat:
        """Draw from the prior.

        Parameters
        ----------
        rng : numpy.random.Generator, int or None
            Source of randomness (an int seeds a new generator).
        size : int, tuple of int or None
            Output shape; None draws one float.

        Returns
        -------
        float or array of shape ``size``
        """
        gen = as_generator(rng, "rng", f"{type(self).__name__}.sample")
        return _out(np.asarray(self._sample(gen, size), dtype=float))

    @property
    def median(self) -> float:
        """The prior median (a natural starting point for optimisation)."""
        return float(self._median())

    # ---- unconstrained coordinate ------------------------------------------------------
    def to_unconstrained(self, x: ArrayOrFloat) -> ArrayOrFloat:
        """``u = T^{-1}(x)``: log for a positive support, logit for an interval."""
        xa = np.asarray(x, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return _out(np.asarray(self._to_u(xa), dtype=float))

    def from_unconstrained(self, u: ArrayOrFloat) -> ArrayOrFloat:
        """``x = T(u)``, a point of the support."""
        ua = np.asarray(u, dtype=float)
        with np.errstate(over="ignore"):
            return _out(np.asarray(self._from_u(ua), dtype=float))

    def log_jacobian(self, u: ArrayOrFloat) -> ArrayOrFloat:
        """``log |dx/du|`` at ``u``.

        The log density of ``u`` is ``logpdf(from_unconstrained(u)) + log_jacobian(u)``.
        """
        ua = np.asarray(u, dtype=float)
        return _out(np.asarray(self._log_jac(ua), dtype=float))

    # ---- transform internals (shared by support) ---------------------------------------
    def _to_u(self, x: np.ndarray) -> np.ndarray:
        s = self.support
        if s == "real":
            return x
        if s == "positive":
            return np.log(x)
        lo, hi = self._interval()
        t = (x - lo) / (hi - lo)
        return np.log(t) - np.log1p(-t)

    def _from_u(self, u: np.ndarray) -> np.ndarray:
        s = self.support
        if s == "real":
            return u
        if s == "positive":
            return np.exp(u)
        lo, hi = self._interval()
        return np.clip(lo + (hi - lo) * expit(u), lo, hi)

    def _log_jac(self, u: np.ndarray) -> np.ndarray:
        s = self.support
        if s == "real":
            return np.zeros_like(u)
        if s == "positive":
            return u
        lo, hi = self._interval()
        return math.log(hi - lo) + log_expit(u) + log_expit(-u)

    def _dx_du(self, u: Any, x: Any) -> Any:
        """``dx/du`` given ``u`` and ``x = T(u)``."""
        s = self.support
        if s == "real":
            return np.ones_like(u)
        if s == "positive":
            return x
        lo, hi = self._interval()
        sig = expit(u)
        return (hi - lo) * sig * (1.0 - sig)

    def _dlog_jac(self, u: Any) -> Any:
        """Derivative of :meth:`log_jacobian` in ``u``."""
        s = self.support
        if s == "real":
            return np.zeros_like(u)
        if s == "positive":
            return np.ones_like(u)
        return 1.0 - 2.0 * expit(u)

    def _interval(self) -> tuple[float, float]:
        s = self.support
        assert isinstance(s, tuple)
        return s

    def _x_logjac(self, u: float) -> tuple[float, float]:
        """Scalar fast path: ``(T(u), log |T'(u)|)`` with ``math`` (the MCMC inner loop)."""
        kind = self._kind
        if kind == "real":
            return u, 0.0
        if kind == "positive":
            return (math.exp(u) if u < 709.0 else math.inf), u
        lo, hi = self._interval()
        sig = 1.0 / (1.0 + math.exp(-u)) if u >= 0 else math.exp(u) / (1.0 + math.exp(u))
        logjac = math.log(hi - lo) - _softplus(u) - _softplus(-u)
        return min(max(lo + (hi - lo) * sig, lo), hi), logjac

    def _safe_point(self) -> float:
        """A point of the support, substituted outside it before masking."""
        s = self.support
        if isinstance(s, tuple):
            return 0.5 * (s[0] + s[1])
        return 1.0

    def _inside_scalar(self, x: float) -> bool:
        s = self.support
        if s == "real":
            return math.isfinite(x)
        if s == "positive":
            return 0.0 < x < math.inf
        lo, hi = self._interval()
        return lo <= x <= hi

    def _inside(self, x: np.ndarray) -> np.ndarray:
        s = self.support
        if s == "real":
            return np.isfinite(x)
        if s == "positive":
            return (x > 0) & np.isfinite(x)
        lo, hi = self._interval()
        return (x >= lo) & (x <= hi)

    # ---- to implement ------------------------------------------------------------------
    def _logpdf(self, x: Any) -> Any:
        raise NotImplementedError

    def _grad(self, x: Any) -> Any:
        raise NotImplementedError

    def _sample(self, rng: np.random.Generator, size: int | tuple[int, ...] | None) -> Any:
        raise NotImplementedError

    def _median(self) -> float:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Normal(Prior):
    """Normal prior on the real line, ``N(loc, scale^2)``.

    Parameters
    ----------
    loc : float
        Mean.
    scale : float
        Standard deviation, > 0.
    """

    loc: float = 0.0
    scale: float = 1.0
    _kind: ClassVar[str] = "real"

    def __post_init__(self) -> None:
        object.__setattr__(self, "loc", _finite(self.loc, "loc", "Normal"))
        object.__setattr__(self, "scale", _positive(self.scale, "scale", "Normal"))

    def _logpdf(self, x: Any) -> Any:
        z = (x - self.loc) / self.scale
        return -0.5 * z * z - math.log(self.scale) - 0.5 * _LOG2PI

    def _grad(self, x: Any) -> Any:
        return -(x - self.loc) / (self.scale * self.scale)

    def _sample(self, rng: np.random.Generator, size: int | tuple[int, ...] | None) -> Any:
        return rng.normal(self.loc, self.scale, size)

    def _median(self) -> float:
        return self.loc


@dataclasses.dataclass(frozen=True)
class Gamma(Prior):
    """Gamma prior on ``(0, inf)`` with shape ``a`` and rate ``b``.

    ``p(x) = b^a x^(a-1) exp(-b x) / Gamma(a)``; mean ``a / b``; mode ``(a - 1) / b``
    for ``a >= 1``. scikit-learn's ``BayesianRidge(alpha_1=a1, alpha_2=a2)`` maximises
    the evidence times this density at ``shape = a1 + 1, rate = a2`` (its updates place
    the Gamma(a1, a2) density on ``log alpha``).

    Parameters
    ----------
    shape : float
        > 0.
    rate : float
        > 0 (the inverse of scipy's ``scale``).
    """

    shape: float = 1.0
    rate: float = 1.0
    _kind: ClassVar[str] = "positive"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _positive(self.shape, "shape", "Gamma"))
        object.__setattr__(self, "rate", _positive(self.rate, "rate", "Gamma"))

    def _logpdf(self, x: Any) -> Any:
        a, b = self.shape, self.rate
        return a * math.log(b) - math.lgamma(a) + (a - 1.0) * np.log(x) - b * x

    def _grad(self, x: Any) -> Any:
        return (self.shape - 1.0) / x - self.rate

    def _sample(self, rng: np.random.Generator, size: int | tuple[int, ...] | None) -> Any:
        return rng.gamma(self.shape, 1.0 / self.rate, size)

    def _median(self) -> float:
        return float(gammaincinv(self.shape, 0.5)) / self.rate


@dataclasses.dataclass(frozen=True)
class InverseGamma(Prior):
    """Inverse-gamma prior on ``(0, inf)``: ``1 / x ~ Gamma(shape, rate=scale)``.

    ``p(x) = s^a x^(-a-1) exp(-s / x) / Gamma(a)``; the conjugate prior of a variance.

    Parameters
    ----------
    shape : float
        > 0.
    scale : float
        > 0.
    """

    shape: float = 1.0
    scale: float = 1.0
    _kind: ClassVar[str] = "positive"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _positive(self.shape, "shape", "InverseGamma"))
        object.__setattr__(self, "scale", _positive(self.scale, "scale", "InverseGamma"))

    def _logpdf(self, x: Any) -> Any:
        a, s = self.shape, self.scale
        return a * math.log(s) - math.lgamma(a) - (a + 1.0) * np.log(x) - s / x

    def _grad(self, x: Any) -> Any:
        return -(self.shape + 1.0) / x + self.scale / (x * x)

    def _sample(self, rng: np.random.Generator, size: int | tuple[int, ...] | None) -> Any:
        return self.scale / rng.gamma(self.shape, 1.0, size)

    def _median(self) -> float:
        return self.scale / float(gammaincinv(self.shape, 0.5))


@dataclasses.dataclass(frozen=True)
class LogNormal(Prior):
    """Log-normal prior on ``(0, inf)``: ``log x ~ N(loc, scale^2)``.

    Median ``exp(loc)``, mode ``exp(loc - scale^2)``.

    Parameters
    ----------
    loc : float
        Mean of ``log x``.
    scale : float
        Standard deviation of ``log x``, > 0.
    """

    loc: float = 0.0
    scale: float = 1.0
    _kind: ClassVar[str] = "positive"

    def __post_init__(self) -> None:
        object.__setattr__(self, "loc", _finite(self.loc, "loc", "LogNormal"))
        object.__setattr__(self, "scale", _positive(self.scale, "scale", "LogNormal"))

    def _logpdf(self, x: Any) -> Any:
        lx = np.log(x)
        z = (lx - self.loc) / self.scale
        return -0.5 * z * z - lx - math.log(self.scale) - 0.5 * _LOG2PI

    def _grad(self, x: Any) -> Any:
        return -(1.0 + (np.log(x) - self.loc) / (self.scale * self.scale)) / x

    def _sample(self, rng: np.random.Generator, size: int | tuple[int, ...] | None) -> Any:
        return rng.lognormal(self.loc, self.scale, size)

    def _median(self) -> float:
        return math.exp(self.loc)


@dataclasses.dataclass(frozen=True)
class HalfCauchy(Prior):
    """Half-Cauchy prior on ``(0, inf)``: ``|C|`` with ``C`` Cauchy of the given scale.

    ``p(x) = 2 / (pi s (1 + (x / s)^2))``; Gelman's (2006) weakly informative prior for
    a group-level standard deviation.

    Parameters
    ----------
    scale : float
        > 0; also the median.
    """

    scale: float = 1.0
    _kind: ClassVar[str] = "positive"

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", _positive(self.scale, "scale", "HalfCauchy"))

    def _logpdf(self, x: Any) -> Any:
        z = x / self.scale
        return _LOG2 - _LOG_PI - math.log(self.scale) - np.log1p(z * z)

    def _grad(self, x: Any) -> Any:
        return -2.0 * x / (self.scale * self.scale + x * x)

    def _sample(self, rng: np.random.Generator, size: int | tuple[int, ...] | None) -> Any:
        return self.scale * np.abs(rng.standard_cauchy(size))

    def _median(self) -> float:
        return self.scale


def _check_interval(low: Any, high: Any, where: str, positive: bool) -> tuple[float, float]:
    lo = _positive(low, "low", where) if positive else _finite(low, "low", where)
    hi = _finite(high, "high", where)
    if not hi > lo:
        raise InvalidParameterError(
            f"The 'high' parameter of {where} must be a finite number > low={lo!r}. "
            f"Got {high!r} instead."
        )
    return lo, hi


@dataclasses.dataclass(frozen=True)
class Uniform(Prior):
    """Uniform prior on ``[low, high]``; unconstrained coordinate: logit of the position.

    Parameters
    ----------
    low, high : float
        ``low < high``.
    """

    low: float = 0.0
    high: float = 1.0
    _kind: ClassVar[str] = "interval"

    def __post_init__(self) -> None:
        lo, hi = _check_interval(self.low, self.high, "Uniform", positive=False)
        object.__setattr__(self, "low", lo)
        object.__setattr__(self, "high", hi)

    @property
    def support(self) -> Support:
        """The closed interval ``(low, high)``."""
        return (self.low, self.high)

    def _logpdf(self, x: Any) -> Any:
        return -math.log(self.high - self.low) + 0.0 * x

    def _grad(self, x: Any) -> Any:
        return 0.0 * x

    def _sample(self, rng: np.random.Generator, size: int | tuple[int, ...] | None) -> Any:
        return rng.uniform(self.low, self.high, size)

    def _median(self) -> float:
        return 0.5 * (self.low + self.high)


@dataclasses.dataclass(frozen=True)
class LogUniform(Prior):
    """Log-uniform (reciprocal) prior on ``[low, high]``, ``0 < low < high``.

    ``p(x) = 1 / (x log(high / low))``: uniform in ``log x``. The unconstrained
    coordinate is the logit of the position of ``log x`` in ``[log low, log high]``.

    Parameters
    ----------
    low, high : float
        ``0 < low < high``.
    """

    low: float = 1e-3
    high: float = 1e3
    _kind: ClassVar[str] = "interval"

    def __post_init__(self) -> None:
        lo, hi = _check_interval(self.low, self.high, "LogUniform", positive=True)
        object.__setattr__(self, "low", lo)
        object.__setattr__(self, "high", hi)

    @property
    def support(self) -> Support:
        """The closed interval ``(low, high)``."""
        return (self.low, self.high)

    def _logpdf(self, x: Any) -> Any:
        return -np.log(x) - math.log(math.log(self.high / self.low))

    def _grad(self, x: Any) -> Any:
        return -1.0 / x

    def _sample(self, rng: np.random.Generator, size: int | tuple[int, ...] | None) -> Any:
        return np.exp(rng.uniform(math.log(self.low), math.log(self.high), size))

    def _median(self) -> float:
        return math.sqrt(self.low * self.high)

    # The transform is a logistic in log x rather than in x.
    def _x_logjac(self, u: float) -> tuple[float, float]:
        la, lb = math.log(self.low), math.log(self.high)
        sig = 1.0 / (1.0 + math.exp(-u)) if u >= 0 else math.exp(u) / (1.0 + math.exp(u))
        lx = la + (lb - la) * sig
        logjac = lx + math.log(lb - la) - _softplus(u) - _softplus(-u)
        return min(max(math.exp(lx), self.low), self.high), logjac

    def _to_u(self, x: np.ndarray) -> np.ndarray:
        la, lb = math.log(self.low), math.log(self.high)
        t = (np.log(x) - la) / (lb - la)
        return np.log(t) - np.log1p(-t)

    def _from_u(self, u: np.ndarray) -> np.ndarray:
        la, lb = math.log(self.low), math.log(self.high)
        return np.clip(np.exp(la + (lb - la) * expit(u)), self.low, self.high)

    def _log_jac(self, u: np.ndarray) -> np.ndarray:
        la, lb = math.log(self.low), math.log(self.high)
        return la + (lb - la) * expit(u) + math.log(lb - la) + log_expit(u) + log_expit(-u)

    def _dx_du(self, u: Any, x: Any) -> Any:
        la, lb = math.log(self.low), math.log(self.high)
        sig = expit(u)
        return x * (lb - la) * sig * (1.0 - sig)

    def _dlog_jac(self, u: Any) -> Any:
        la, lb = math.log(self.low), math.log(self.high)
        sig = expit(u)
        return (lb - la) * sig * (1.0 - sig) + 1.0 - 2.0 * sig


__all__ = [
    "Gamma",
    "HalfCauchy",
    "InverseGamma",
    "LogNormal",
    "LogUniform",
    "Normal",
    "Prior",
    "Uniform",
]
