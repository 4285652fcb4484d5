"""Multivariate tree-structured Parzen estimator (TPE): a density-ratio sampler.

TPE splits the finished trials into a few *good* ones and the *bad* rest, fits a
Parzen (kernel) density estimator to each group on the unit cube of the space,
draws candidates from the good density ``l`` and proposes the candidate with the
largest ratio ``l / g``, which maximises expected improvement under the model of
Bergstra et al. (2011). The estimators are *multivariate*: each kernel is a product
over dimensions centred on one observation, so the joint structure of good
configurations is kept (Falkner et al., 2018); and they live on *conditional*
spaces, where a configuration's inactive dimensions are absent.

Notation
--------
``d``
    Number of dimensions of the space, i.e. columns of the unit cube ``[0, 1]^d``
    (:meth:`Space.encode`); ``u`` is a point of it and ``u_j`` its ``j``-th
    coordinate, NaN when dimension ``j`` is inactive.
``A(u)``
    The dimensions active in ``u``.
``n``
    Number of complete trials with a finite value (the observations).
``y``
    Objective values signed so that lower is better ("maximize" studies negate).
``gamma(n)``
    Size of the good group, ``min(ceil(0.1 n), 25)`` by default: the ``gamma(n)``
    lowest ``y``.
``m``, ``b_k``
    Number of observations (kernels) of one estimator, and its ``k``-th observation.
``l(u)``, ``g(u)``
    Densities of the good and of the bad group (the bad group also holds failed,
    pruned and pending trials, see :class:`TPESampler`).
``w_p``
    Weight of the prior component (the uniform density); each observation weighs 1.
``h_kj``
    Bandwidth (standard deviation) of kernel ``k`` in numeric dimension ``j``, in
    unit-cube units.
``K_j``, ``lambda_j``
    Number of choices of categorical dimension ``j``, and its Aitchison--Aitken
    smoothing: a kernel puts ``1 - lambda_j`` on its own choice and
    ``lambda_j / (K_j - 1)`` on each other one.
``f_j``
    Branch estimator of conditional dimension ``j``: a one-dimensional Parzen
    estimator of the trials in which ``j`` is active (see below).
``N``
    Number of candidates drawn from ``l`` per proposal (``n_candidates``).
``Phi``
    The standard normal distribution function.

The estimator
-------------
An estimator with observations ``b_1..b_m`` is the mixture

    p(u) = (w_p * 1 + sum_k prod_{j in A(u)} K_kj(u_j)) / (w_p + m).

Its kernels are densities on the unit interval:

* continuous dimensions: a Gaussian ``N(b_kj, h_kj^2)`` truncated to ``[0, 1]``;
* integers and stepped floats, whose values own cells ``[e_i, e_i+1)`` of the
  coordinate: the same truncated Gaussian integrated over each cell and spread
  evenly over it (so a draw of the Gaussian, rounded to its cell, has exactly the
  cell masses);
* categoricals (``K_j`` equal cells): the Aitchison--Aitken kernel, spread evenly
  over each cell (density ``K_j`` times the mass).

**Bandwidths** follow the neighbour rule of Bergstra et al. (2011) ("magic clip",
as in Optuna): ``h_kj`` is the larger distance from ``b_kj`` to its neighbours among
the estimator's active coordinates of dimension ``j`` (a lone observation measures to
the cube's edges), clipped to ``[1 / min(100, m_j + 2), 1]`` and to at least half a
cell on discrete dimensions. Kernels are wide where observations are sparse and
narrow where they crowd, and shrink like ``1 / m``. **Categorical smoothing** adds a
pseudo-count ``w_p / (m_j + 1)`` to every choice of each kernel, i.e.
``lambda_j = (K_j - 1) w_p / (m_j + 1 + K_j w_p)``, which fades at the same rate.

**Conditional dimensions.** A kernel whose observation lacks a dimension ``j`` that
a point has active cannot say where ``u_j`` should be. Instead of the uniform
density it uses the *branch estimator* ``f_j``: the same construction in one
dimension, fitted to the trials in which ``j`` is active, split into good and bad
by ranking those trials only (the tree-structured split of Bergstra et al., 2011);
``l`` uses the good part, ``g`` the bad part, and ``f_j`` is uniform while its
branch has no observation. This lets TPE refine a branch (``momentum`` under
``optimizer == "sgd"``) as soon as it is visited, before the branch holds any of
the globally best trials. So

    K_kj(u_j) = f_j(u_j)  when b_k has j inactive,

and ``p`` still integrates to 1 over the tree of active dimensions: sampling a
component, then each dimension from its kernel (or ``f_j``, or the uniform for the
prior component) and dropping the dimensions that the sampled parents make
inactive, draws exactly from ``p``.

References
----------
.. [1] J. Bergstra, R. Bardenet, Y. Bengio and B. Kegl, "Algorithms for
   hyper-parameter optimization", NeurIPS 2011.
.. [2] S. Falkner, A. Klein and F. Hutter, "BOHB: Robust and efficient
   hyperparameter optimization at scale", ICML 2018.
.. [3] S. Watanabe, "Tree-structured Parzen estimator: understanding its algorithm
   components and their roles for better empirical performance", arXiv:2304.11127,
   2023.
.. [4] J. Aitchison and C. G. G. Aitken, "Multivariate binary discrimination by the
   kernel method", Biometrika 63(3), 1976.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from twiddle._errors import InvalidSpaceError
from twiddle._samplers._base import History, Sampler
from twiddle._samplers._simple import SobolSampler
from twiddle._space import (
    Categorical,
    Config,
    Float,
    Int,
    Space,
    _json_key,
    dimension_from_json,
)
from twiddle._trial import FrozenTrial, TrialState
from twiddle._validation import check_float, check_in, check_int

_CONT, _GRID, _LOGINT, _CAT = 0, 1, 2, 3  # kinds of unit-cube coordinate
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SAME = 1e-9  # coordinates closer than this belong to the same configuration
_MAX_CLIP = 100.0  # the bandwidth floor is 1 / min(_MAX_CLIP, m + 2)
_ROUNDS = 8  # candidate batches drawn before settling for a configuration already seen


def _log_normal_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``log(Phi(b) - Phi(a))`` for ``a < b`` (arrays of one shape).

    Both tails are accurate: an interval above 0 is mirrored below it, where ``Phi``
    keeps its relative precision. Masses below 1e-300 are floored there, far below
    anything that can matter next to the prior component.
    """
    from scipy.special import ndtr

    flip = a > 0
    lo = np.where(flip, -b, a)
    hi = np.where(flip, -a, b)
    out: np.ndarray = np.log(np.maximum(ndtr(hi) - ndtr(lo), 1e-300))
    return out


def _duplicated(U: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Which rows of ``U`` (shape (N, d)) equal a row of ``R`` (shape (r, d)); NaN == NaN.

    Returns
    -------
    array of bool, shape (N,)

    Notes
    -----
    Rows are first compared by a weighted sum of their coordinates; only the few
    pairs whose sums agree are compared coordinate by coordinate.
    """
    out = np.zeros(len(U), dtype=bool)
    if len(R) == 0 or len(U) == 0:
        return out
    a = np.where(np.isnan(U), -1.0, U)
    b = np.where(np.isnan(R), -1.0, R)
    w = 1.0 + (np.arange(U.shape[1]) * 0.6180339887498949) % 1.0
    i, k = np.nonzero(np.abs((a @ w)[:, None] - (b @ w)[None, :]) <= _SAME * w.sum())
    if len(i):
        out[i[(np.abs(a[i] - b[k]) <= _SAME).all(axis=1)]] = True
    return out


# -- the geometry of a space's unit cube -------------------------------------------------
class _Geometry:
    """Cells, centres and conditions of a space's unit-cube coordinates, vectorised.

    Parameters
    ----------
    space : Space
    """

    def __init__(self, space: Space) -> None:
        names = space.names
        d = self.d = len(names)
        self.space = space
        self.kind = np.zeros(d, dtype=np.int64)
        self.n_cells = np.ones(d, dtype=np.int64)  # K_j; 1 for continuous dimensions
        self._log_int: dict[int, tuple[int, int, float, float]] = {}
        for j, name in enumerate(names):
            dim = space[name]
            if isinstance(dim, Categorical):
                self.kind[j] = _CAT
                self.n_cells[j] = len(dim.choices)
            elif isinstance(dim, Int):
                self.n_cells[j] = int(dim.cardinality)
                self.kind[j] = _LOGINT if dim.log else _GRID
                if dim.log:
                    a, b = math.log(dim.low - 0.5), math.log(dim.high + 0.5)
                    self._log_int[j] = (dim.low, dim.high, a, b)
            elif isinstance(dim, Float):
                self.kind[j] = _CONT if dim.step is None else _GRID
                if dim.step is not None:
                    self.n_cells[j] = int(dim.cardinality)
            else:
                raise InvalidSpaceError(
                    f"TPESampler supports Float, Int and Categorical dimensions; {name!r} is "
                    f"{dim!r}."
                )
        self.numeric = self.kind != _CAT
        self.cont_idx = np.flatnonzero(self.kind == _CONT)
        self.cat_idx = np.flatnonzero(self.kind == _CAT)
        self.grid_idx = np.flatnonzero((self.kind == _GRID) | (self.kind == _LOGINT))
        self.cats = [int(j) for j in self.cat_idx]
        self.grids = [int(j) for j in self.grid_idx]
        self.filler = np.full((1, d), 0.5)  # a valid coordinate in every dimension
        self.snap(self.filler)
        # conditions in topological order: child -> [(parent, allowed cells or None, keys)]
        col = {n: i for i, n in enumerate(names)}
        self.rules: list[tuple[int, list[tuple[int, np.ndarray | None, set[str]]]]] = []
        self._dims = [space[n] for n in names]
        for name in space._order:
            dim = space[name]
            if not dim.when:
                continue
            checks: list[tuple[int, np.ndarray | None, set[str]]] = []
            for parent, values in dim.when:
                p = col[parent]
                pdim = space[parent]
                keys = {_json_key(pdim.cast(v)) for v in values}
                if self.kind[p] == _CONT:  # compared by value, row by row
                    checks.append((p, None, keys))
                else:
                    at = np.array([pdim.encode(v) for v in values], dtype=float)
                    checks.append((p, np.unique(self.cell(p, at)), keys))
            self.rules.append((col[name], checks))
        self.conditional = [j for j, _ in self.rules]
        self._subs: dict[int, _Geometry] = {}

    def sub(self, j: int) -> _Geometry:
        """Geometry of dimension ``j`` alone, without its condition."""
        if j not in self._subs:
            name = self.space.names[j]
            body = {k: v for k, v in self.space[name].to_json().items() if k != "when"}
            self._subs[j] = _Geometry(Space({name: dimension_from_json(body)}))
        return self._subs[j]

    # -- cells --------------------------------------------------------------------------
    def cell(self, j: int, u: np.ndarray) -> np.ndarray:
        """Cell index (the value's position) of coordinates ``u`` of discrete dimension ``j``.

        ``u`` and the result have shape (N,); the cells are those of :meth:`Space.decode`.
        """
        if self.kind[j] == _LOGINT:
            low, high, a, b = self._log_int[j]
            v = np.clip(np.rint(np.exp(a + np.clip(u, 0.0, 1.0) * (b - a))), low, high)
            return (v - low).astype(np.int64)
        k = int(self.n_cells[j])
        return np.minimum((np.clip(u, 0.0, 1.0) * k).astype(np.int64), k - 1)

    def edges(self, j: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper edges of cells ``idx`` (shape (N,)) of discrete dimension ``j``."""
        if self.kind[j] == _LOGINT:
            low, _, a, b = self._log_int[j]
            v = (idx + low).astype(float)
            lo = np.clip((np.log(v - 0.5) - a) / (b - a), 0.0, 1.0)
            hi = np.clip((np.log(v + 0.5) - a) / (b - a), 0.0, 1.0)
            return lo, hi
        k = float(self.n_cells[j])
        return idx / k, (idx + 1) / k

    def snap(self, U: np.ndarray) -> None:
        """Move the discrete coordinates of ``U`` (shape (N, d)) to their cells' centres.

        ``U`` is changed in place; the centres are the coordinates :meth:`Space.encode`
        gives to the cells' values.
        """
        for j in self.cats + self.grids:
            col = U[:, j]
            ok = ~np.isnan(col)
            idx = self.cell(j, col[ok])
            if self.kind[j] == _LOGINT:
                low, _, a, b = self._log_int[j]
                v = (idx + low).astype(float)
                mid = 0.5 * (np.log(v - 0.5) + np.log(v + 0.5))
                col[ok] = np.clip((mid - a) / (b - a), 0.0, 1.0)
            else:
                col[ok] = (idx + 0.5) / float(self.n_cells[j])

    def activate(self, U: np.ndarray) -> None:
        """Set to NaN the coordinates of dimensions that ``U``'s own values make inactive.

        ``U`` has shape (N, d) and is changed in place. Conditions are applied in
        topological order, so a dimension whose parent is inactive is inactive too.
        """
        for j, checks in self.rules:
            ok = ~np.isnan(U[:, j])
            for p, allowed, keys in checks:
                col = U[:, p]
                ok &= ~np.isnan(col)
                if allowed is not None:
                    ok[ok] = np.isin(self.cell(p, col[ok]), allowed)
                else:
                    pdim = self._dims[p]
                    rows = np.flatnonzero(ok)
                    ok[rows] = [_json_key(pdim.cast(pdim.decode(col[i]))) in keys for i in rows]
            U[~ok, j] = np.nan

    def uniform(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` points of the space drawn uniformly, shape (size, d), as encoded."""
        U = rng.random((size, self.d))
        self.activate(U)
        self.snap(U)
        return U


# -- kernels --------------------------------------------------------------------------------
def _bandwidths(x: np.ndarray, geo: _Geometry, j: int) -> np.ndarray:
    """Bandwidths of kernels centred at ``x`` (shape (m_j,)) in numeric dimension ``j``.

    The neighbour rule with the "magic clip" floor; see the module notes.

    Returns
    -------
    array of shape (m_j,)
    """
    mj = len(x)
    if mj == 0:
        return np.ones(0)
    order = np.argsort(x, kind="stable")
    gaps = np.diff(np.concatenate([[0.0], x[order], [1.0]]))  # (m_j + 1,)
    h = np.maximum(gaps[:-1], gaps[1:])
    if mj >= 2:  # the outermost kernels measure to their inner neighbour only
        h[0], h[-1] = gaps[1], gaps[-2]
    out = np.empty(mj)
    out[order] = h
    floor = 1.0 / min(_MAX_CLIP, mj + 2.0)
    if geo.kind[j] != _CONT:
        floor = max(floor, 0.5 / float(geo.n_cells[j]))
    return np.clip(out, floor, 1.0)


def _categorical_smoothing(mj: int, k: int, prior_weight: float) -> float:
    """Aitchison--Aitken ``lambda`` of a ``k``-choice dimension with ``mj`` kernels."""
    return (k - 1) * prior_weight / (mj + 1 + k * prior_weight) if k > 1 else 0.0


class _ParzenEstimator:
    """Mixture of the uniform prior and product kernels centred on observations.

    Parameters
    ----------
    geo : _Geometry
    X : array of shape (m, d)
        Unit-cube coordinates of the observations; NaN where inactive.
    prior_weight : float
        Weight ``w_p`` of the uniform component (each observation weighs 1).
    branches : dict of int -> _ParzenEstimator, optional
        Branch estimator ``f_j`` (over ``geo.sub(j)``) of conditional dimensions ``j``,
        used by the kernels whose observation has ``j`` inactive; uniform if absent.

    Notes
    -----
    The log kernel of observation ``k`` at a point ``u`` is a sum over dimensions.
    Over the continuous ones it is a quadratic form in ``u``, and over categoricals a
    count of matching choices, so both are evaluated for every (point, observation)
    pair at once as one product of an (N, P) and a (P, m) matrix, with the activity
    masks folded into the factors. Discrete numeric dimensions use a table of log
    cell densities per (point cell, kernel).
    """

    def __init__(
        self,
        geo: _Geometry,
        X: np.ndarray,
        prior_weight: float,
        branches: dict[int, _ParzenEstimator] | None = None,
    ) -> None:
        from scipy.special import ndtr

        self.geo = geo
        self.m = m = len(X)
        self.prior_weight = prior_weight
        self.branches = branches or {}
        self.log_norm = math.log(m + prior_weight)
        self.active = active = ~np.isnan(X)  # (m, d)
        self.X = np.where(active, X, geo.filler)  # any valid value in inactive slots
        d = geo.d
        n_active = active.sum(axis=0)
        self.H = np.ones((m, d))  # h_kj of numeric dimensions
        self.lam = np.zeros(d)  # lambda_j of categorical dimensions
        for j in range(d):
            if geo.kind[j] == _CAT:
                self.lam[j] = _categorical_smoothing(
                    int(n_active[j]), int(geo.n_cells[j]), prior_weight
                )
            else:
                on = active[:, j]
                self.H[on, j] = _bandwidths(self.X[on, j], geo, j)
        # log mass of each numeric kernel inside [0, 1]; never tiny, as -x/h <= 0 <= (1-x)/h
        num = geo.numeric
        Xn, Hn = self.X[:, num], self.H[:, num]
        self.log_z = np.zeros((m, d))
        self.log_z[:, num] = np.log(ndtr((1.0 - Xn) / Hn) - ndtr(-Xn / Hn))
        # Right factor (m, P) of the log kernels, each a sum over dimensions of
        # (point factor) * (kernel factor):
        #   continuous:  -u^2/2 * 1/h^2  +  u * x/h^2  +  1 * (-x^2/(2 h^2) - log(h sqrt(2 pi) z))
        #   categorical: [u's choice] * (hit - miss) [x's choice]  +  1 * miss
        c = geo.cont_idx
        on_c = active[:, c].astype(float)
        prec = on_c / self.H[:, c] ** 2
        xc = self.X[:, c]
        const = -0.5 * xc * xc * prec - on_c * (
            np.log(self.H[:, c]) + _LOG_SQRT_2PI + self.log_z[:, c]
        )
        blocks = [prec, prec * xc, const]
        self._gain = np.zeros(d)  # hit - miss
        self._miss = np.zeros(d)
        for j in geo.cats:
            k = int(geo.n_cells[j])
            lam = self.lam[j]
            hit = math.log(k * (1.0 - lam))
            miss = math.log(k * lam / (k - 1)) if k > 1 else hit
            self._gain[j], self._miss[j] = hit - miss, miss
            onehot = np.zeros((m, k))
            onehot[np.arange(m), geo.cell(j, self.X[:, j])] = active[:, j]
            blocks.append(onehot)
        blocks.append(active[:, geo.cat_idx].astype(float))
        self._right = np.hstack(blocks)
        # discrete numeric dimensions: the distinct (centre, bandwidth) pairs of the kernels
        self._pairs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for j in geo.grids:
            key = geo.cell(j, self.X[:, j]) + 0.5 * self.H[:, j]  # h <= 1: one key per pair
            _, first, inv = np.unique(key, return_index=True, return_inverse=True)
            self._pairs[j] = (self.X[first, j], self.H[first, j], inv.reshape(-1))

    # -- density --------------------------------------------------------------------------
    def log_pdf(self, U: np.ndarray) -> np.ndarray:
        """Log density at points ``U`` (array of shape (N, d), NaN where inactive).

        Returns
        -------
        array of shape (N,)
        """
        geo = self.geo
        N = len(U)
        if self.m == 0:
            return np.full(N, math.log(self.prior_weight) - self.log_norm)
        on = ~np.isnan(U)
        Uf = np.where(on, U, 0.5)
        c = geo.cont_idx
        on_c = on[:, c].astype(float)
        uc = Uf[:, c]
        blocks = [-0.5 * on_c * uc * uc, on_c * uc, on_c]
        for j in geo.cats:
            onehot = np.zeros((N, int(geo.n_cells[j])))
            onehot[np.arange(N), geo.cell(j, Uf[:, j])] = on[:, j] * self._gain[j]
            blocks.append(onehot)
        blocks.append(on[:, geo.cat_idx] * self._miss[geo.cat_idx])
        S: np.ndarray = np.hstack(blocks) @ self._right.T  # (N, m) sums of log kernels
        for j in geo.grids:
            rows = np.flatnonzero(on[:, j])
            if len(rows) == 0:
                continue
            centre, h, inv = self._pairs[j]
            cells, inv_c = np.unique(geo.cell(j, Uf[rows, j]), return_inverse=True)
            lo, hi = geo.edges(j, cells)
            table = (
                _log_normal_mass(
                    (lo[:, None] - centre[None, :]) / h, (hi[:, None] - centre[None, :]) / h
                )
                - np.log(hi - lo)[:, None]
            )
            L = table[inv_c.reshape(-1)][:, inv] - self.log_z[None, :, j]
            S[rows] += np.where(self.active[None, :, j], L, 0.0)
        for j, f in self.branches.items():
            rows = np.flatnonzero(on[:, j])
            if len(rows):
                S[rows] += f.log_pdf(Uf[rows][:, [j]])[:, None] * ~self.active[None, :, j]
        top = np.maximum(S.max(axis=1), math.log(self.prior_weight))
        total = np.exp(S - top[:, None]).sum(axis=1) + self.prior_weight * np.exp(-top)
        out: np.ndarray = top + np.log(total) - self.log_norm
        return out

    # -- sampling ---------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw ``size`` points from the estimator.

        Returns
        -------
        array of shape (size, d)
            Unit-cube points, inactive coordinates NaN, discrete ones at cell centres.
        """
        from scipy.special import ndtr, ndtri

        geo = self.geo
        m = self.m
        weights = np.append(np.ones(m), self.prior_weight)
        comp = rng.choice(m + 1, size=size, p=weights / weights.sum())
        U = rng.random((size, geo.d))  # uniform: the prior component's coordinates
        draw = rng.random((size, geo.d))
        from_kernel = comp < m
        kern = np.where(from_kernel, comp, 0)
        for j in range(geo.d):
            rows = from_kernel & self.active[kern, j]
            if not rows.any():
                continue
            x = self.X[kern[rows], j]
            r = draw[rows, j]
            if geo.kind[j] == _CAT:
                k = int(geo.n_cells[j])
                idx = own = geo.cell(j, x)
                lam = self.lam[j]
                if k > 1:  # with probability lam, one of the k - 1 other choices, evenly
                    step = np.minimum((r / lam * (k - 1)).astype(np.int64), k - 2)
                    idx = np.where(r < lam, (own + 1 + step) % k, own)
                U[rows, j] = (idx + U[rows, j]) / k  # anywhere in the cell
            else:  # truncated Gaussian by inversion; discrete cells are snapped below
                h = self.H[kern[rows], j]
                lo, hi = ndtr(-x / h), ndtr((1.0 - x) / h)
                U[rows, j] = np.clip(x + h * ndtri(lo + r * (hi - lo)), 0.0, 1.0)
        for j, f in self.branches.items():
            rows = from_kernel & ~self.active[kern, j]
            if rows.any():
                U[rows, j] = f.sample(rng, int(rows.sum()))[:, 0]
        geo.activate(U)
        geo.snap(U)
        return U


# -- the sampler -----------------------------------------------------------------------------
class TPESampler(Sampler):
    """Multivariate tree-structured Parzen estimator, for large budgets and conditional spaces.

    Until ``n_startup`` trials are complete, proposals follow the study's scrambled
    Sobol sequence (an even cover of the space). After that, each proposal fits a
    Parzen estimator ``l`` to the best trials and another, ``g``, to the rest, draws
    ``n_candidates`` configurations from ``l`` and keeps the one with the largest
    ``log l - log g``. Kernels are products over dimensions (multivariate), with
    neighbour-rule bandwidths, Aitchison--Aitken kernels for categoricals and a
    uniform prior component; see the notes of this module.

    Parameters
    ----------
    n_startup : int, default 10
        Number of complete trials (with a finite value) before the model is used.
    n_candidates : int, default 24
        Configurations drawn from ``l`` per proposal; more exploit harder.
    gamma : float, default 0.1
        Fraction of the complete trials in the good group,
        ``min(ceil(gamma * n), max_good)`` of them.
    max_good : int, default 25
        Cap on the good group, so that ``l`` keeps sharpening on large budgets.
    prior_weight : float, default 1.0
        Weight of the uniform prior component of each estimator (an observation
        weighs 1); larger values explore more.

    Notes
    -----
    * **Failed, pruned and pending trials.** Failed and pruned trials, complete trials
      with a non-finite value, and trials still running or queued all join the bad
      group ``g`` (never ``l``): a configuration that failed or was stopped early is
      evidence against its region, and one being evaluated should not be proposed
      again (the "constant liar" for parallel studies). Complete and pruned trials
      count towards ``n_startup`` (so a study whose scheduler stops most trials does
      not stay in the start-up design); only complete ones are ranked for the split,
      but the size of ``l`` is ``gamma`` of complete and pruned trials together (the
      pruned ones rank below the complete ones), so that a study whose scheduler
      stops most trials keeps a good group of more than one point.
    * **Batches.** A batch (``n > 1``) is built one proposal at a time, each added to
      ``g`` before the next, so the batch spreads out.
    * **Duplicates.** Proposals are distinct from each other and from pending trials
      and, while unseen configurations are in reach, from finished ones. In a small
      finite space that has been explored through, a finished configuration may be
      proposed again (worth it when the objective is noisy) rather than none.
    * **Defaults** are Optuna's (``gamma``, ``max_good``, ``n_candidates``,
      ``prior_weight``, the neighbour rule), which Watanabe (2023) found to be robust.

    Examples
    --------
    A study is usually driven by :class:`Study`; by hand, the loop is ask, evaluate, tell:

    >>> import numpy as np
    >>> from twiddle import Float, FrozenTrial, History, Space, TPESampler, TrialState
    >>> space = Space({"x": Float(-5.0, 5.0)})
    >>> sampler, trials = TPESampler(n_startup=5), []
    >>> for k in range(30):
    ...     seen = History(list(trials), [], "minimize", seed=0)
    ...     (config,) = sampler.suggest(space, seen, np.random.default_rng(k))
    ...     value = (config["x"] - 2.0) ** 2
    ...     trials.append(FrozenTrial(k, TrialState.COMPLETE, config, value))
    >>> best = min(trials, key=lambda t: t.value)
    >>> abs(best.params["x"] - 2.0) < 0.2
    True
    """

    name = "tpe"

    def __init__(
        self,
        *,
        n_startup: int = 10,
        n_candidates: int = 24,
        gamma: float = 0.1,
        max_good: int = 25,
        prior_weight: float = 1.0,
    ) -> None:
        where = "TPESampler"
        self.n_startup = _checked_int(n_startup, "n_startup", where, 0)
        self.n_candidates = _checked_int(n_candidates, "n_candidates", where, 1)
        self.gamma = check_in(gamma, "gamma", where, "(0, 1]")
        self.max_good = _checked_int(max_good, "max_good", where, 1)
        self.prior_weight = float(
            check_float(prior_weight, "prior_weight", where, minimum=0.0, exclusive=True) or 0
        )
        self._sobol = SobolSampler()
        self._geo: _Geometry | None = None
        self._rows: dict[int, tuple[dict[str, Any], int]] = {}  # trial number -> (params, row)
        self._buffer = np.empty((0, 0))
        self._n_rows = 0

    def __repr__(self) -> str:
        return (
            f"TPESampler(n_startup={self.n_startup}, n_candidates={self.n_candidates}, "
            f"gamma={self.gamma}, max_good={self.max_good}, prior_weight={self.prior_weight})"
        )

    def _n_good(self, n: int) -> int:
        """Size of the good group among ``n`` ranked trials."""
        return min(math.ceil(self.gamma * n), self.max_good) if n > 0 else 0

    # -- encoding, with a cache ------------------------------------------------------------
    def _geometry(self, space: Space) -> _Geometry:
        if self._geo is None or not (self._geo.space is space or self._geo.space == space):
            self._geo = _Geometry(space)
            self._rows = {}
            self._buffer = np.empty((64, len(space)))
            self._n_rows = 0
        return self._geo

    def _encode(self, space: Space, trials: Sequence[FrozenTrial]) -> np.ndarray:
        """Unit-cube rows of the trials' configurations, array of shape (len(trials), d).

        A trial's hyperparameters never change, so their rows are kept between calls.
        """
        cache = self._rows
        idx: list[int] = []
        for t in trials:
            hit = cache.get(t.number)
            if hit is None or not (hit[0] is t.params or hit[0] == t.params):
                if self._n_rows == len(self._buffer):
                    self._buffer = np.concatenate([self._buffer, np.empty_like(self._buffer)])
                self._buffer[self._n_rows] = _encode_one(space, t.params)
                hit = cache[t.number] = (t.params, self._n_rows)
                self._n_rows += 1
            idx.append(hit[1])
        return self._buffer[idx].reshape(len(idx), len(space))

    # -- proposals ----------------------------------------------------------------------------
    def suggest(
        self, space: Space, history: History, rng: np.random.Generator, n: int = 1
    ) -> list[Config]:
        geo = self._geometry(space)
        finished = history.trials
        done = self._encode(space, finished)
        pending = self._encode(space, history.pending)
        pending = pending[~np.isnan(pending).all(axis=1)]  # drop those not yet suggested
        complete = TrialState.COMPLETE
        y = np.array(
            [t.value if t.state is complete and t.value is not None else np.nan for t in finished],
            dtype=float,
        )
        if history.direction == "maximize":
            y = -y
        ok = np.isfinite(y)
        # a trial stopped early (e.g. by fold racing) was evaluated too: it ends the
        # start-up like a complete one, and joins the bad group below
        n_pruned = sum(1 for t in finished if t.state is TrialState.PRUNED)
        if int(ok.sum()) + n_pruned < self.n_startup or not ok.any():
            start = space.encode(self._sobol.suggest(space, history, rng, n)) if n > 0 else done[:0]
            return self._startup(space, geo, start, done, pending, rng)

        ranked = np.flatnonzero(ok)[np.argsort(y[ok], kind="stable")]
        # the good group's size counts the stopped trials too (they rank below every
        # complete one): when a scheduler stops most trials, sizing it by the complete
        # ones alone shrinks it to one point and the search stalls around it
        n_good = min(self._n_good(len(ranked) + n_pruned), len(ranked))
        is_good = np.zeros(len(finished), dtype=bool)
        is_good[ranked[:n_good]] = True
        is_bad = ~is_good & ~np.isnan(done).all(axis=1)  # a trial with no parameters says nothing
        # branch estimators f_j: the trials with j active, ranked among themselves
        branch_good: dict[int, np.ndarray] = {}
        for j in geo.conditional:
            on = ranked[~np.isnan(done[ranked, j])]
            branch_good[j] = np.zeros(len(finished), dtype=bool)
            branch_good[j][on[: self._n_good(len(on))]] = True
        below = _ParzenEstimator(
            geo,
            done[is_good],
            self.prior_weight,
            {j: self._branch(geo, j, done[bj]) for j, bj in branch_good.items()},
        )
        out: list[Config] = []
        lies = pending  # pending and already proposed configurations, all counted as bad
        for _ in range(n):
            bad = np.concatenate([done[is_bad], lies])
            above = _ParzenEstimator(
                geo,
                bad,
                self.prior_weight,
                {
                    j: self._branch(geo, j, np.concatenate([done[~bj], lies]))
                    for j, bj in branch_good.items()
                },
            )
            u = self._best(geo, below, above, done, lies, rng)
            if u is None:
                break
            out.append(space.decode(np.where(np.isnan(u), 0.5, u)))
            lies = np.vstack([lies, u[None, :]])
        return out

    def _branch(self, geo: _Geometry, j: int, rows: np.ndarray) -> _ParzenEstimator:
        """Branch estimator of dimension ``j`` from the rows (shape (r, d)) having ``j`` active."""
        x = rows[:, [j]]
        return _ParzenEstimator(geo.sub(j), x[~np.isnan(x[:, 0])], self.prior_weight)

    def _best(
        self,
        geo: _Geometry,
        below: _ParzenEstimator,
        above: _ParzenEstimator,
        seen: np.ndarray,
        taboo: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray | None:
        """The candidate of largest ``log l - log g`` that is new, shape (d,); None if none.

        Candidates equal to a row of ``taboo`` are never taken; one equal to a row of
        ``seen`` only when no unseen candidate turns up in ``_ROUNDS`` batches (the later
        ones drawn uniformly, in case ``l`` is stuck on seen configurations).
        """
        fallback: tuple[float, np.ndarray] | None = None
        for attempt in range(_ROUNDS):
            if attempt < _ROUNDS // 2:
                U = below.sample(rng, self.n_candidates)
            else:
                U = geo.uniform(rng, self.n_candidates)
            score = below.log_pdf(U) - above.log_pdf(U)
            score[_duplicated(U, taboo)] = -np.inf
            fresh = np.where(_duplicated(U, seen), -np.inf, score)
            i = int(np.argmax(fresh))
            if np.isfinite(fresh[i]):
                return U[i]
            i = int(np.argmax(score))
            if np.isfinite(score[i]) and (fallback is None or score[i] > fallback[0]):
                fallback = (float(score[i]), U[i])
        return None if fallback is None else fallback[1]

    def _startup(
        self,
        space: Space,
        geo: _Geometry,
        start: np.ndarray,
        seen: np.ndarray,
        taboo: np.ndarray,
        rng: np.random.Generator,
    ) -> list[Config]:
        """Configurations at the rows of ``start`` (shape (n, d)), made distinct.

        A row equal to another proposal or a pending trial (or, while avoidable, a
        finished one) is replaced by a uniform draw.
        """
        out: list[Config] = []
        for u in start:
            row: np.ndarray = u[None, :]
            fallback = None
            for _ in range(_ROUNDS * self.n_candidates):
                if not _duplicated(row, taboo)[0]:
                    if not _duplicated(row, seen)[0]:
                        break
                    fallback = row if fallback is None else fallback
                row = geo.uniform(rng, 1)
            else:
                if fallback is None:
                    continue
                row = fallback
            out.append(space.decode(np.where(np.isnan(row[0]), 0.5, row[0])))
            taboo = np.vstack([taboo, row])
        return out


def _checked_int(value: Any, name: str, where: str, minimum: int) -> int:
    checked = check_int(value, name, where, minimum=minimum)
    assert checked is not None
    return checked


def _encode_one(space: Space, params: dict[str, Any]) -> np.ndarray:
    """Unit-cube row (shape (d,)) of one configuration; values the space cannot place are NaN."""
    try:
        row: np.ndarray = space.encode(params)[0]
        return row
    except (ValueError, TypeError, KeyError, OverflowError):
        row = np.full(len(space), np.nan)
        for j, name in enumerate(space.names):
            if name in params:
                with contextlib.suppress(ValueError, TypeError, KeyError, OverflowError):
                    row[j] = space[name].encode(params[name])
        return row
