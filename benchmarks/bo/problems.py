"""Benchmark problems: synthetic test functions with known optima, and the registry.

Every problem is a loss to *minimise* over a twiddle :class:`~twiddle.Space`.

Synthetic functions (definitions and domains as in the standard test-function
literature, e.g. Dixon & Szegő 1978 for Branin and Hartmann, Ackley 1987, Levy &
Montalvo 1985, Rosenbrock 1960, Styblinski & Tang 1990; the optimum values are the
function at its known minimiser, to the digits given):

============  ===  ======================  =======================================
name          d    domain                  minimum (at)
============  ===  ======================  =======================================
branin        2    [-5, 10] x [0, 15]      5 / (4 pi) = 0.397887 (three minimisers)
hartmann3     3    [0, 1]^3                -3.86278 (0.114589, 0.555649, 0.852547)
hartmann6     6    [0, 1]^6                -3.32237 (0.201690, 0.150011, ...)
ackley5       5    [-32.768, 32.768]^5     0 (origin)
levy5         5    [-10, 10]^5             0 (1, ..., 1)
rosenbrock4   4    [-5, 10]^4              0 (1, ..., 1)
styblinski5   5    [-5, 5]^5               -39.16617 x 5 (-2.903534, ...)
============  ===  ======================  =======================================

Dimensions are named ``x1, ..., xd``. The scikit-learn tasks live in
:mod:`benchmarks.bo.ml` and are registered here by name (``svm-wine``, ...).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from twiddle import Float, Space

Config = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Problem:
    """A loss to minimise over a space.

    Attributes
    ----------
    name : str
        Registry name (``"hartmann6"``, ``"svm-wine"``).
    space : twiddle.Space
        The hyperparameters (synthetic problems: Floats ``x1..xd``).
    kind : {"synthetic", "classification", "regression"}
    optimum : float or None
        Known minimum of the loss; None for the scikit-learn tasks, whose optimum is
        estimated as the best loss any optimiser ever found.
    minimiser : dict or None
        A configuration where the known minimum is attained.
    loss : callable
        ``loss(config) -> float``.
    holdout : callable or None
        ``holdout(config) -> float``: score of the configuration refitted on the
        training split and evaluated on the held-out split (higher is better).
    description : str
    fold_losses : callable or None
        ``fold_losses(config) -> list[float]``: the loss on each cross-validation fold,
        whose mean is ``loss(config)`` exactly (the scikit-learn tasks); None for a loss
        that is not a mean over folds.
    """

    name: str
    space: Space
    kind: str
    optimum: float | None
    minimiser: Config | None
    loss: Callable[[Mapping[str, Any]], float]
    holdout: Callable[[Mapping[str, Any]], float] | None = None
    description: str = ""
    fold_losses: Callable[[Mapping[str, Any]], list[float]] | None = None

    @property
    def is_synthetic(self) -> bool:
        return self.kind == "synthetic"


# ---------------------------------------------------------------------------------
# Synthetic functions on arrays: x of shape (n, d) -> values of shape (n,)
# ---------------------------------------------------------------------------------
def branin(x: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(x)
    x1, x2 = x[:, 0], x[:, 1]
    b = 5.1 / (4.0 * math.pi**2)
    c = 5.0 / math.pi
    t = 1.0 / (8.0 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6.0) ** 2 + 10.0 * (1.0 - t) * np.cos(x1) + 10.0


_H3_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H3_A = np.array(
    [[3.0, 10.0, 30.0], [0.1, 10.0, 35.0], [3.0, 10.0, 30.0], [0.1, 10.0, 35.0]],
)
_H3_P = 1e-4 * np.array(
    [[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]],
)
_H6_A = np.array(
    [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ]
)
_H6_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)


def _hartmann(x: np.ndarray, a: np.ndarray, p: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(x)
    inner = np.sum(a[None, :, :] * (x[:, None, :] - p[None, :, :]) ** 2, axis=2)
    return -np.sum(_H3_ALPHA[None, :] * np.exp(-inner), axis=1)


def hartmann3(x: np.ndarray) -> np.ndarray:
    return _hartmann(x, _H3_A, _H3_P)


def hartmann6(x: np.ndarray) -> np.ndarray:
    return _hartmann(x, _H6_A, _H6_P)


def ackley(x: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(x)
    a, b, c = 20.0, 0.2, 2.0 * math.pi
    r = np.sqrt(np.mean(x**2, axis=1))
    return -a * np.exp(-b * r) - np.exp(np.mean(np.cos(c * x), axis=1)) + a + math.e


def levy(x: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(x)
    w = 1.0 + (x - 1.0) / 4.0
    head = np.sin(math.pi * w[:, 0]) ** 2
    mid = np.sum((w[:, :-1] - 1.0) ** 2 * (1.0 + 10.0 * np.sin(math.pi * w[:, :-1] + 1.0) ** 2), 1)
    wd = w[:, -1]
    tail = (wd - 1.0) ** 2 * (1.0 + np.sin(2.0 * math.pi * wd) ** 2)
    return head + mid + tail


def rosenbrock(x: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(x)
    return np.sum(100.0 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (x[:, :-1] - 1.0) ** 2, axis=1)


def styblinski_tang(x: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(x)
    return 0.5 * np.sum(x**4 - 16.0 * x**2 + 5.0 * x, axis=1)


#: argmin of 0.5 (x^4 - 16 x^2 + 5 x), and its value (per dimension)
STYBLINSKI_X = -2.9035340286202334
STYBLINSKI_MIN_1D = -39.16616570377141


@dataclasses.dataclass(frozen=True)
class SyntheticFunction:
    """A vectorised test function on a box, with its known minimum."""

    name: str
    fn: Callable[[np.ndarray], np.ndarray]
    bounds: tuple[tuple[float, float], ...]
    optimum: float
    minimiser: tuple[float, ...]

    @property
    def dim(self) -> int:
        return len(self.bounds)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"x{i + 1}" for i in range(self.dim))

    def space(self) -> Space:
        return Space(
            {n: Float(lo, hi) for n, (lo, hi) in zip(self.names, self.bounds, strict=True)}
        )

    def to_array(self, configs: Mapping[str, Any] | list[Mapping[str, Any]]) -> np.ndarray:
        if isinstance(configs, Mapping):
            configs = [configs]
        return np.array([[float(c[n]) for n in self.names] for c in configs], dtype=float)

    def loss(self, config: Mapping[str, Any]) -> float:
        return float(self.fn(self.to_array(config))[0])

    def problem(self) -> Problem:
        return Problem(
            name=self.name,
            space=self.space(),
            kind="synthetic",
            optimum=self.optimum,
            minimiser=dict(zip(self.names, self.minimiser, strict=True)),
            loss=self.loss,
            description=f"{self.dim}-d synthetic function, minimum {self.optimum:.6g}",
        )


SYNTHETIC: dict[str, SyntheticFunction] = {
    f.name: f
    for f in [
        SyntheticFunction(
            "branin", branin, ((-5.0, 10.0), (0.0, 15.0)), 5.0 / (4.0 * math.pi), (math.pi, 2.275)
        ),
        SyntheticFunction(
            "hartmann3",
            hartmann3,
            ((0.0, 1.0),) * 3,
            -3.862779787332663,
            (0.11458887, 0.55564889, 0.85254699),
        ),
        SyntheticFunction(
            "hartmann6",
            hartmann6,
            ((0.0, 1.0),) * 6,
            -3.32236801141551,
            (0.20168952, 0.15001069, 0.47687398, 0.27533243, 0.31165162, 0.65730054),
        ),
        SyntheticFunction("ackley5", ackley, ((-32.768, 32.768),) * 5, 0.0, (0.0,) * 5),
        SyntheticFunction("levy5", levy, ((-10.0, 10.0),) * 5, 0.0, (1.0,) * 5),
        SyntheticFunction("rosenbrock4", rosenbrock, ((-5.0, 10.0),) * 4, 0.0, (1.0,) * 4),
        SyntheticFunction(
            "styblinski5",
            styblinski_tang,
            ((-5.0, 5.0),) * 5,
            5 * STYBLINSKI_MIN_1D,
            (STYBLINSKI_X,) * 5,
        ),
    ]
}


# ---------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------
def synthetic_names() -> list[str]:
    return list(SYNTHETIC)


def ml_names() -> list[str]:
    from benchmarks.bo.ml import task_names

    return task_names()


GROUPS: dict[str, Callable[[], list[str]]] = {
    "synthetic": synthetic_names,
    "ml": ml_names,
    "all": lambda: synthetic_names() + ml_names(),
}


def resolve_problems(spec: str) -> list[str]:
    """Problem names from a comma list of names and groups ("synthetic", "ml", "all").

    A group may also be a model ("svm" -> every svm-* task) or a data set ("wine").
    """
    known = synthetic_names() + ml_names()
    out: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in GROUPS:
            names = GROUPS[part]()
        elif part in known:
            names = [part]
        else:
            names = [n for n in ml_names() if part in n.split("-")]
            if not names:
                raise ValueError(
                    f"Unknown problem {part!r}. Known: {', '.join(known)}; groups: "
                    f"{', '.join(GROUPS)} (or a model or data-set name)."
                )
        out.extend(n for n in names if n not in out)
    return out


def get_problem(name: str) -> Problem:
    """The problem registered under ``name``."""
    if name in SYNTHETIC:
        return SYNTHETIC[name].problem()
    from benchmarks.bo.ml import make_task

    return make_task(name)
