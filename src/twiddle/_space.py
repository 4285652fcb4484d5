"""Typed search spaces: the hyperparameters of a model and their ranges.

A :class:`Space` maps names to dimensions (:class:`Float`, :class:`Int`,
:class:`Categorical`). A dimension may be *conditional* (``when=``): active only
while other dimensions take given values, e.g. ``momentum`` only when
``optimizer == "sgd"``. An inactive dimension is absent from a configuration.

Every space has one coordinate per dimension in the unit cube ``[0, 1]^d``.
Model-based samplers work there: :meth:`Space.encode` maps configurations to
an array of shape ``(n, d)`` with ``NaN`` in the coordinates of inactive
dimensions (never dropped, never imputed), and :meth:`Space.decode` maps points
back. Integers and categoricals occupy equal-width cells of their coordinate
and encode to the cell centre, so ``decode(encode(c)) == c`` exactly.
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from twiddle._errors import InvalidSpaceError

Config = dict[str, Any]

_MAX_GRID = 1_000_000


def _json_key(value: Any) -> str:
    """Canonical JSON text of a value: tells ``1``, ``1.0`` and ``True`` apart."""
    return json.dumps(value, sort_keys=True, allow_nan=True)


def _is_real(x: Any) -> bool:
    kind = type(x)
    if kind is float or kind is int:  # the common case, without the slower ABC check
        return True
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
    if type(x) is int:
        return True
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _normalise_when(when: Mapping[str, Any] | None) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if when is None:
        return ()
    if not isinstance(when, Mapping) or not when:
        raise InvalidSpaceError(
            "A condition ('when=') must be a non-empty mapping from a dimension name to the "
            f"value or list of values that activate this one. Got {when!r} instead."
        )
    out = []
    for parent, values in when.items():
        if not isinstance(parent, str):
            raise InvalidSpaceError(f"Condition keys must be dimension names. Got {parent!r}.")
        vals = tuple(values) if isinstance(values, (list, tuple, set, frozenset)) else (values,)
        if not vals:
            raise InvalidSpaceError(
                f"The condition on {parent!r} lists no values; give at least one value."
            )
        out.append((parent, vals))
    return tuple(sorted(out, key=lambda kv: kv[0]))


class Dimension:
    """Base class of a search-space dimension (immutable, validated on construction)."""

    kind: str = ""
    when: tuple[tuple[str, tuple[Any, ...]], ...]

    # -- interface ---------------------------------------------------------------
    def decode(self, u: float) -> Any:
        """Value at unit-cube coordinate ``u`` in [0, 1]."""
        raise NotImplementedError

    def encode(self, value: Any) -> float:
        """Unit-cube coordinate of ``value``."""
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a valid value of this dimension."""
        raise NotImplementedError

    def cast(self, value: Any) -> Any:
        """``value`` in this dimension's own Python type (int, float, the choice object)."""
        raise NotImplementedError

    def grid(self) -> list[Any]:
        """All values of a finite dimension, in order."""
        raise NotImplementedError

    @property
    def cardinality(self) -> float:
        """Number of distinct values (``math.inf`` for a continuous range)."""
        raise NotImplementedError

    def _json_body(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        body = {"type": self.kind, **self._json_body()}
        if self.when:
            body["when"] = {k: list(v) for k, v in self.when}
        return body

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dimension) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(_json_key(self.to_json()))

    def __repr__(self) -> str:
        body = self._json_body()
        args = ", ".join(f"{k}={v!r}" for k, v in body.items() if v is not None and v is not False)
        if self.when:
            args += f", when={ {k: list(v) for k, v in self.when}!r}"
        return f"{type(self).__name__}({args})"


class Float(Dimension):
    """A real-valued hyperparameter in ``[low, high]``.

    Parameters
    ----------
    low, high : float
        Bounds, ``low < high``, both included.
    log : bool, default False
        Search on a log scale (both bounds must be > 0). Use for learning rates and
        regularisation strengths.
    step : float, optional
        Restrict to ``low, low + step, ...`` (not with ``log``).
    when : mapping, optional
        Condition: ``{"optimizer": "sgd"}`` makes the dimension active only when
        dimension ``optimizer`` takes the value ``"sgd"`` (a list allows several).
    """

    kind = "float"

    def __init__(
        self,
        low: float,
        high: float,
        *,
        log: bool = False,
        step: float | None = None,
        when: Mapping[str, Any] | None = None,
    ) -> None:
        if not (_is_real(low) and _is_real(high) and math.isfinite(low) and math.isfinite(high)):
            raise InvalidSpaceError(
                f"Float bounds must be finite numbers. Got low={low!r}, high={high!r}."
            )
        if not low < high:
            raise InvalidSpaceError(
                f"Float needs low < high. Got low={low!r}, high={high!r}; swap them or widen "
                "the range (a fixed value belongs in the estimator, not the space)."
            )
        if log and low <= 0:
            raise InvalidSpaceError(
                f"A log-scale Float needs low > 0. Got low={low!r}; use a positive lower bound "
                "(e.g. 1e-6) or log=False."
            )
        if step is not None:
            if log:
                raise InvalidSpaceError("Float cannot combine log=True with a step; pick one.")
            if not (_is_real(step) and math.isfinite(step) and step > 0):
                raise InvalidSpaceError(f"Float step must be a number > 0. Got {step!r}.")
            if step > high - low:
                raise InvalidSpaceError(
                    f"Float step {step!r} is larger than the range [{low!r}, {high!r}]."
                )
        self.low = float(low)
        self.high = float(high)
        self.log = bool(log)
        self.step = None if step is None else float(step)
        self.when = _normalise_when(when)
        self._n = (
            None if self.step is None else math.floor((self.high - self.low) / self.step + 1e-9) + 1
        )

    @property
    def cardinality(self) -> float:
        return math.inf if self._n is None else float(self._n)

    def decode(self, u: float) -> float:
        u = min(max(float(u), 0.0), 1.0)
        if self._n is not None:
            assert self.step is not None
            i = min(int(u * self._n), self._n - 1)
            return self.cast(self.low + i * self.step)
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            v = math.exp(lo + u * (hi - lo))
        else:
            v = self.low + u * (self.high - self.low)
        return min(max(v, self.low), self.high)

    def encode(self, value: Any) -> float:
        v = float(value)
        if self._n is not None:
            assert self.step is not None
            i = round((v - self.low) / self.step)
            return (min(max(i, 0), self._n - 1) + 0.5) / self._n
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            return min(max((math.log(v) - lo) / (hi - lo), 0.0), 1.0)
        return min(max((v - self.low) / (self.high - self.low), 0.0), 1.0)

    def cast(self, value: Any) -> float:
        v = float(value)
        if self.step is not None:
            v = self.low + round((v - self.low) / self.step) * self.step
            v = float(round(v, 12))
        return v

    def contains(self, value: Any) -> bool:
        if not _is_real(value) or not math.isfinite(value):
            return False
        v = float(value)
        tol = 1e-12 * max(1.0, abs(self.low), abs(self.high))
        if not self.low - tol <= v <= self.high + tol:
            return False
        if self.step is not None:
            k = (v - self.low) / self.step
            return abs(k - round(k)) < 1e-6
        return True

    def grid(self) -> list[Any]:
        if self._n is None:
            raise InvalidSpaceError(
                f"A continuous {self!r} has no grid: give it a step=, or use Categorical "
                "with the values to try."
            )
        assert self.step is not None
        return [self.cast(self.low + i * self.step) for i in range(self._n)]

    def _json_body(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step}


class Int(Dimension):
    """An integer hyperparameter in ``[low, high]`` (both included); values are Python ints.

    Parameters
    ----------
    low, high : int
        Bounds, ``low < high``.
    log : bool, default False
        Log scale (``low >= 1``); good for widths and batch sizes.
    step : int, default 1
        Restrict to ``low, low + step, ...`` (``step > 1`` not with ``log``).
    when : mapping, optional
        Condition, as for :class:`Float`.
    """

    kind = "int"

    def __init__(
        self,
        low: int,
        high: int,
        *,
        log: bool = False,
        step: int = 1,
        when: Mapping[str, Any] | None = None,
    ) -> None:
        if not (_is_int(low) and _is_int(high)):
            raise InvalidSpaceError(
                f"Int bounds must be integers. Got low={low!r}, high={high!r}; use Float for "
                "real values."
            )
        if not low < high:
            raise InvalidSpaceError(
                f"Int needs low < high. Got low={low!r}, high={high!r}; swap them or widen the "
                "range."
            )
        if not (_is_int(step) and step >= 1):
            raise InvalidSpaceError(f"Int step must be an int >= 1. Got {step!r}.")
        if log and low < 1:
            raise InvalidSpaceError(
                f"A log-scale Int needs low >= 1. Got low={low!r}; use log=False or raise low."
            )
        if log and step != 1:
            raise InvalidSpaceError("Int cannot combine log=True with step > 1; pick one.")
        if step > high - low:
            raise InvalidSpaceError(f"Int step {step!r} is larger than the range [{low}, {high}].")
        self.low = int(low)
        self.high = int(high)
        self.log = bool(log)
        self.step = int(step)
        self.when = _normalise_when(when)
        self._n = (self.high - self.low) // self.step + 1
        self.high = self.low + (self._n - 1) * self.step

    @property
    def cardinality(self) -> float:
        return float(self._n)

    def decode(self, u: float) -> int:
        u = min(max(float(u), 0.0), 1.0)
        if self.log:
            a, b = math.log(self.low - 0.5), math.log(self.high + 0.5)
            v = round(math.exp(a + u * (b - a)))
            return min(max(v, self.low), self.high)
        i = min(int(u * self._n), self._n - 1)
        return self.low + i * self.step

    def encode(self, value: Any) -> float:
        v = int(value)
        if self.log:
            a, b = math.log(self.low - 0.5), math.log(self.high + 0.5)
            mid = 0.5 * (math.log(v - 0.5) + math.log(v + 0.5))
            return min(max((mid - a) / (b - a), 0.0), 1.0)
        i = (v - self.low) // self.step
        return (min(max(i, 0), self._n - 1) + 0.5) / self._n

    def cast(self, value: Any) -> int:
        return int(value)

    def contains(self, value: Any) -> bool:
        if _is_int(value) or (_is_real(value) and float(value).is_integer()):
            v = int(value)
        else:
            return False
        return self.low <= v <= self.high and (v - self.low) % self.step == 0

    def grid(self) -> list[Any]:
        return list(range(self.low, self.high + 1, self.step))

    def _json_body(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step}


class Categorical(Dimension):
    """A choice among values of any JSON-serialisable type (kept as given).

    Parameters
    ----------
    choices : sequence
        Distinct values (strings, numbers, booleans, None, lists or tuples of those).
        ``1``, ``1.0`` and ``True`` are different choices.
    when : mapping, optional
        Condition, as for :class:`Float`.
    """

    kind = "categorical"

    def __init__(self, choices: Sequence[Any], *, when: Mapping[str, Any] | None = None) -> None:
        if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence):
            raise InvalidSpaceError(
                f"Categorical choices must be a list or tuple of values. Got {choices!r}."
            )
        if len(choices) == 0:
            raise InvalidSpaceError(
                "Categorical needs at least one choice. Got an empty list; list the values to try."
            )
        keys = []
        for c in choices:
            try:
                keys.append(json.dumps(c, sort_keys=True, allow_nan=False))
            except (TypeError, ValueError) as err:
                raise InvalidSpaceError(
                    f"Categorical choice {c!r} is not JSON-serialisable ({err}); use strings, "
                    "numbers, booleans, None, or lists of those, and map them to objects in "
                    "the objective."
                ) from None
        if len(set(keys)) != len(keys):
            dup = next(c for c, k in zip(choices, keys, strict=True) if keys.count(k) > 1)
            raise InvalidSpaceError(f"Categorical choices must be distinct; {dup!r} repeats.")
        self.choices: tuple[Any, ...] = tuple(choices)
        self._index = {k: i for i, k in enumerate(keys)}
        self.when = _normalise_when(when)

    @property
    def cardinality(self) -> float:
        return float(len(self.choices))

    def index(self, value: Any) -> int:
        """Position of ``value`` among the choices (JSON-equal match); ValueError if absent."""
        try:
            return self._index[_json_key(value)]
        except (TypeError, ValueError, KeyError):
            raise ValueError(f"{value!r} is not one of {list(self.choices)!r}") from None

    def decode(self, u: float) -> Any:
        n = len(self.choices)
        i = min(int(min(max(float(u), 0.0), 1.0) * n), n - 1)
        return self.choices[i]

    def encode(self, value: Any) -> float:
        return (self.index(value) + 0.5) / len(self.choices)

    def cast(self, value: Any) -> Any:
        return self.choices[self.index(value)]

    def contains(self, value: Any) -> bool:
        try:
            self.index(value)
        except ValueError:
            return False
        return True

    def grid(self) -> list[Any]:
        return list(self.choices)

    def _json_body(self) -> dict[str, Any]:
        return {"choices": list(self.choices)}


def dimension_from_json(data: Mapping[str, Any]) -> Dimension:
    """Rebuild a dimension from :meth:`Dimension.to_json` output."""
    if not isinstance(data, Mapping) or "type" not in data:
        raise InvalidSpaceError(f"A dimension must be a table with a 'type'. Got {data!r}.")
    body = dict(data)
    kind = body.pop("type")
    when = body.pop("when", None)
    allowed = {
        "float": ("low", "high", "log", "step"),
        "int": ("low", "high", "log", "step"),
        "categorical": ("choices",),
    }
    if kind not in allowed:
        raise InvalidSpaceError(
            f"Unknown dimension type {kind!r}; use 'float', 'int' or 'categorical'."
        )
    unknown = sorted(set(body) - set(allowed[kind]))
    if unknown:
        raise InvalidSpaceError(
            f"Unknown key(s) {unknown} in a {kind!r} dimension; allowed: "
            f"{', '.join([*allowed[kind], 'when'])}."
        )
    required = ("choices",) if kind == "categorical" else ("low", "high")
    missing = [k for k in required if k not in body]
    if missing:
        raise InvalidSpaceError(f"A {kind!r} dimension needs {missing[0]!r}.")
    if kind == "categorical":
        return Categorical(body["choices"], when=when)
    if kind == "float":
        return Float(
            body["low"],
            body["high"],
            log=body.get("log", False),
            step=body.get("step"),
            when=when,
        )
    return Int(
        body["low"],
        body["high"],
        log=body.get("log", False),
        step=body.get("step", 1),
        when=when,
    )


# -- derived estimator parameters -------------------------------------------------
class Derived:
    """An estimator parameter computed from dimensions of the space.

    ``Derived(fn)`` takes the inputs from the names of ``fn``'s arguments:
    ``Derived(lambda n_layers, width: (width,) * n_layers)`` turns the dimensions
    ``n_layers`` and ``width`` into one ``hidden_layer_sizes``. The input
    dimensions are consumed (not passed to the estimator themselves). An input that
    is inactive (conditional) is left out of the call, so give that argument a default.
    """

    def __init__(self, fn: Callable[..., Any], inputs: Sequence[str] | None = None) -> None:
        if not callable(fn):
            raise InvalidSpaceError(f"Derived needs a callable. Got {fn!r}.")
        if inputs is None:
            try:
                sig = inspect.signature(fn)
            except (TypeError, ValueError):
                raise InvalidSpaceError(
                    f"Cannot read the arguments of {fn!r}; pass inputs=[...] explicitly."
                ) from None
            inputs = [
                p.name
                for p in sig.parameters.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            ]
        self.fn = fn
        self.inputs: tuple[str, ...] = tuple(inputs)

    def __call__(self, config: Mapping[str, Any]) -> Any:
        return self.fn(**{k: config[k] for k in self.inputs if k in config})

    def to_json(self) -> dict[str, Any]:
        name = getattr(self.fn, "__module__", "?") + ":" + getattr(self.fn, "__qualname__", "?")
        return {"type": "function", "function": name, "inputs": list(self.inputs)}


class Repeat(Derived):
    """``(value,) * times``: e.g. ``hidden_layer_sizes`` from ``width`` and ``n_layers``.

    Parameters
    ----------
    value : str
        Name of the dimension whose value is repeated (e.g. ``"width"``).
    times : str
        Name of the integer dimension giving the count (e.g. ``"n_layers"``).
    """

    def __init__(self, value: str, times: str) -> None:
        if not (isinstance(value, str) and isinstance(times, str)):
            raise InvalidSpaceError(
                f"Repeat takes two dimension names. Got value={value!r}, times={times!r}."
            )
        self.value = value
        self.times = times
        super().__init__(self._make, inputs=(value, times))

    def _make(self, **kw: Any) -> tuple[Any, ...]:
        return (kw[self.value],) * int(kw[self.times])

    def to_json(self) -> dict[str, Any]:
        return {"type": "repeat", "value": self.value, "times": self.times}


def derived_from_json(data: Mapping[str, Any]) -> Derived:
    if isinstance(data, Mapping) and data.get("type") == "repeat":
        extra = set(data) - {"type", "value", "times"}
        if extra or "value" not in data or "times" not in data:
            raise InvalidSpaceError(
                "A 'repeat' derived parameter takes exactly 'value' and 'times'. "
                f"Got {dict(data)!r}."
            )
        return Repeat(data["value"], data["times"])
    if isinstance(data, Mapping) and data.get("type") == "function":
        raise InvalidSpaceError(
            f"Derived parameter from Python function {data.get('function')!r} cannot be rebuilt "
            "from JSON; pass the Space object itself."
        )
    raise InvalidSpaceError(
        f"Unknown derived parameter {data!r}; use {{type = 'repeat', value = ..., times = ...}}."
    )


# -- the space ----------------------------------------------------------------------
class Space(Mapping[str, Dimension]):
    """A typed, validated set of hyperparameter dimensions.

    Parameters
    ----------
    dims : mapping of str -> Dimension
        The hyperparameters, in column order. Names may address nested estimator
        parameters (``"clf__C"``).
    derived : mapping of str -> Derived or callable, optional
        Estimator parameters computed from dimensions (see :class:`Derived`).

    Examples
    --------
    >>> import numpy as np
    >>> from twiddle import Space, Float, Int, Categorical
    >>> space = Space({
    ...     "optimizer": Categorical(["sgd", "adam"]),
    ...     "lr": Float(1e-4, 1e-1, log=True),
    ...     "momentum": Float(0.0, 0.99, when={"optimizer": "sgd"}),
    ...     "layers": Int(1, 4),
    ... })
    >>> config = space.sample(np.random.default_rng(0))
    >>> sorted(config) == sorted(k for k in space if space.is_active(k, config))
    True
    """

    def __init__(
        self,
        dims: Mapping[str, Dimension],
        derived: Mapping[str, Derived | Callable[..., Any]] | None = None,
    ) -> None:
        if not isinstance(dims, Mapping) or not dims:
            raise InvalidSpaceError(
                "A Space needs a non-empty mapping from names to dimensions, e.g. "
                "Space({'lr': Float(1e-4, 1e-1, log=True)})."
            )
        for name, dim in dims.items():
            if not isinstance(name, str) or not name:
                raise InvalidSpaceError(f"Dimension names must be non-empty strings. Got {name!r}.")
            if not isinstance(dim, Dimension):
                raise InvalidSpaceError(
                    f"Dimension {name!r} must be a Float, Int or Categorical. Got {dim!r}."
                )
        self._dims: dict[str, Dimension] = dict(dims)
        self._names: tuple[str, ...] = tuple(self._dims)
        self._check_conditions()
        self._order = self._topological_order()
        self._col = {n: i for i, n in enumerate(self._names)}
        self._derived: dict[str, Derived] = {}
        for key, d in (derived or {}).items():
            dd = d if isinstance(d, Derived) else Derived(d)
            missing = [i for i in dd.inputs if i not in self._dims]
            if missing:
                raise InvalidSpaceError(
                    f"Derived parameter {key!r} uses unknown dimension(s) {missing}; the space "
                    f"has {list(self._names)}."
                )
            if key in self._dims and key not in dd.inputs:
                raise InvalidSpaceError(
                    f"Derived parameter {key!r} has the name of a dimension; rename one of them."
                )
            self._derived[key] = dd

    # -- validation ---------------------------------------------------------------
    def _check_conditions(self) -> None:
        for name, dim in self._dims.items():
            for parent, values in dim.when:
                if parent not in self._dims:
                    raise InvalidSpaceError(
                        f"Dimension {name!r} has a condition on unknown dimension {parent!r}; "
                        f"the space has {list(self._names)}."
                    )
                if parent == name:
                    raise InvalidSpaceError(f"Dimension {name!r} has a condition on itself.")
                pdim = self._dims[parent]
                for v in values:
                    if not pdim.contains(v):
                        raise InvalidSpaceError(
                            f"The condition of {name!r} asks {parent!r} == {v!r}, which "
                            f"{parent!r} ({pdim!r}) can never take."
                        )

    def _topological_order(self) -> tuple[str, ...]:
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(n: str, path: list[str]) -> None:
            s = state.get(n, 0)
            if s == 2:
                return
            if s == 1:
                cycle = " -> ".join([*path[path.index(n) :], n])
                raise InvalidSpaceError(f"Conditions form a cycle: {cycle}; break one condition.")
            state[n] = 1
            for parent, _ in self._dims[n].when:
                visit(parent, [*path, n])
            state[n] = 2
            order.append(n)

        for n in self._names:
            visit(n, [])
        return tuple(order)

    # -- mapping protocol ------------------------------------------------------------
    def __getitem__(self, name: str) -> Dimension:
        return self._dims[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n!r}: {d!r}" for n, d in self._dims.items())
        return f"Space({{{inner}}})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(_json_key(self.to_json()))

    # -- structure ----------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        """Dimension names in column order."""
        return self._names

    @property
    def derived(self) -> Mapping[str, Derived]:
        return dict(self._derived)

    @property
    def is_conditional(self) -> bool:
        return any(d.when for d in self._dims.values())

    @property
    def cardinality(self) -> float:
        """Number of distinct configurations (``math.inf`` if any active range is continuous)."""
        if any(math.isinf(d.cardinality) for d in self._dims.values()):
            return math.inf
        if not self.is_conditional:
            return float(np.prod([d.cardinality for d in self._dims.values()]))
        return float(len(self.grid()))

    def is_active(self, name: str, config: Mapping[str, Any]) -> bool:
        """Whether dimension ``name`` is active given the (partial) configuration."""
        for parent, values in self._dims[name].when:
            if parent not in config:
                return False
            pdim = self._dims[parent]
            key = _json_key(pdim.cast(config[parent]))
            if key not in {_json_key(pdim.cast(v)) for v in values}:
                return False
        return True

    # -- sampling and the unit cube ------------------------------------------------------
    def decode(self, u: Sequence[float] | np.ndarray) -> Config:
        """Configuration at unit-cube point ``u`` (array of shape ``(d,)``).

        Coordinates of dimensions that turn out inactive are ignored.
        """
        arr = np.asarray(u, dtype=float)
        if arr.shape != (len(self._names),):
            raise InvalidSpaceError(
                f"decode expects an array of shape ({len(self._names)},). Got {arr.shape}."
            )
        values = arr.tolist()
        dims, col = self._dims, self._col
        config: Config = {}
        for name in self._order:
            dim = dims[name]
            if not dim.when or self.is_active(name, config):
                config[name] = dim.decode(values[col[name]])
        if len(config) == len(self._names) and self._order == self._names:
            return config  # already in column order
        return {n: config[n] for n in self._names if n in config}

    def decode_many(self, u: np.ndarray) -> list[Config]:
        """Configurations at the rows of ``u``, an array of shape ``(n, d)``."""
        return [self.decode(row) for row in np.asarray(u, dtype=float)]

    def snap(self, U: np.ndarray) -> np.ndarray:
        """Valid encodings nearest to arbitrary unit-cube points, vectorised.

        Row ``i`` of the result equals ``encode(decode(U[i]))``: discrete coordinates move
        to their cell centres, and coordinates of dimensions that are inactive given the
        snapped values of their parents become NaN. NaN inputs for dimensions that turn
        out active are read as 0.5.

        Parameters
        ----------
        U : array of shape (n, d)

        Returns
        -------
        array of shape (n, d)
        """
        U = np.atleast_2d(np.asarray(U, dtype=float))
        out = np.clip(np.nan_to_num(U, nan=0.5), 0.0, 1.0)
        for name in self._order:
            j = self._col[name]
            dim = self._dims[name]
            u = out[:, j]
            if isinstance(dim, Categorical):
                q = len(dim.choices)
                out[:, j] = (np.minimum(np.floor(u * q), q - 1) + 0.5) / q
            elif isinstance(dim, Int) and dim.log:
                a, b = math.log(dim.low - 0.5), math.log(dim.high + 0.5)
                v = np.clip(np.round(np.exp(a + u * (b - a))), dim.low, dim.high)
                mid = 0.5 * (np.log(v - 0.5) + np.log(v + 0.5))
                out[:, j] = np.clip((mid - a) / (b - a), 0.0, 1.0)
            elif isinstance(dim, (Int, Float)) and dim._n is not None:
                m = dim._n
                out[:, j] = (np.minimum(np.floor(u * m), m - 1) + 0.5) / m
            if dim.when:
                active = np.ones(out.shape[0], dtype=bool)
                for parent, values in dim.when:
                    pcol = out[:, self._col[parent]]
                    pdim = self._dims[parent]
                    allowed = np.array([pdim.encode(pdim.cast(v)) for v in values])
                    match = np.any(np.abs(pcol[:, None] - allowed[None, :]) < 1e-9, axis=1)
                    active &= match & ~np.isnan(pcol)
                out[~active, j] = np.nan
        return out

    def encode(self, configs: Config | Sequence[Config]) -> np.ndarray:
        """Unit-cube coordinates, array of shape ``(n, d)``; NaN where a dimension is inactive."""
        if isinstance(configs, Mapping):
            configs = [configs]
        out = np.full((len(configs), len(self._names)), np.nan)
        for i, c in enumerate(configs):
            for name, value in c.items():
                j = self._col.get(name)
                if j is not None:
                    out[i, j] = self._dims[name].encode(value)
        return out

    def sample(self, rng: np.random.Generator) -> Config:
        """One configuration drawn uniformly (log-uniformly on log dimensions)."""
        return self.decode(rng.random(len(self._names)))

    def grid(self) -> list[Config]:
        """Every configuration of a finite space (conditional dimensions only where active)."""
        partial: list[Config] = [{}]
        for name in self._order:
            dim = self._dims[name]
            values = dim.grid()
            nxt: list[Config] = []
            for c in partial:
                if self.is_active(name, c):
                    nxt.extend({**c, name: v} for v in values)
                else:
                    nxt.append(c)
                if len(nxt) > _MAX_GRID:
                    raise InvalidSpaceError(
                        f"The grid has more than {_MAX_GRID:,} configurations; coarsen the "
                        "steps or use a random, Sobol or model-based sampler."
                    )
            partial = nxt
        return [{n: c[n] for n in self._names if n in c} for c in partial]

    # -- checking and converting configurations ---------------------------------------------
    def validate(self, config: Mapping[str, Any]) -> Config:
        """Check a configuration and return it with every value in its dimension's type.

        Raises
        ------
        InvalidSpaceError
            On an unknown name, a missing active dimension, a value given for an inactive
            dimension, or a value out of range.
        """
        unknown = [k for k in config if k not in self._dims]
        if unknown:
            raise InvalidSpaceError(
                f"Unknown hyperparameter(s) {unknown}; the space has {list(self._names)}."
            )
        out: Config = {}
        for name in self._order:
            active = self.is_active(name, out)
            if not active:
                if name in config:
                    raise InvalidSpaceError(
                        f"{name!r} is given but inactive: its condition "
                        f"{dict((k, list(v)) for k, v in self._dims[name].when)} does not hold."
                    )
                continue
            if name not in config:
                raise InvalidSpaceError(
                    f"Hyperparameter {name!r} is missing from {dict(config)!r}."
                )
            dim = self._dims[name]
            if not dim.contains(config[name]):
                raise InvalidSpaceError(
                    f"Value {config[name]!r} of {name!r} is outside its dimension {dim!r}."
                )
            out[name] = dim.cast(config[name])
        return {n: out[n] for n in self._names if n in out}

    def to_estimator_params(self, config: Mapping[str, Any]) -> Config:
        """Estimator parameters of a configuration: derived ones computed, their inputs consumed."""
        if not self._derived:
            return dict(config)
        consumed = {i for d in self._derived.values() for i in d.inputs}
        params = {k: v for k, v in config.items() if k not in consumed}
        for key, d in self._derived.items():
            params[key] = d(config)
        return params

    # -- JSON ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable description; :meth:`from_json` rebuilds the space."""
        out: dict[str, Any] = {"dims": {n: d.to_json() for n, d in self._dims.items()}}
        if self._derived:
            out["derived"] = {k: d.to_json() for k, d in self._derived.items()}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Space:
        if not isinstance(data, Mapping) or "dims" not in data:
            raise InvalidSpaceError(f"A space description needs a 'dims' table. Got {data!r}.")
        dims = {n: dimension_from_json(d) for n, d in data["dims"].items()}
        derived = {k: derived_from_json(d) for k, d in data.get("derived", {}).items()}
        return cls(dims, derived=derived or None)
