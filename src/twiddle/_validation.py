"""Argument checks with one message shape.

"The 'n_trials' parameter of Study.optimize must be an int >= 1. Got 0 instead."
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from twiddle._errors import InvalidParameterError


def _fail(name: str, where: str, expected: str, value: Any) -> InvalidParameterError:
    return InvalidParameterError(
        f"The {name!r} parameter of {where} must be {expected}. Got {value!r} instead."
    )


def check_int(
    value: Any,
    name: str,
    where: str,
    *,
    minimum: int | None = None,
    allow_none: bool = False,
) -> int | None:
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok and (minimum is None or value >= minimum):
        return int(value)
    expected = "an int" + (f" >= {minimum}" if minimum is not None else "")
    if allow_none:
        expected += " or None"
    raise _fail(name, where, expected, value)


def check_float(
    value: Any,
    name: str,
    where: str,
    *,
    minimum: float | None = None,
    exclusive: bool = False,
    allow_none: bool = False,
) -> float | None:
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if exclusive else value >= minimum
    if ok:
        return float(value)
    expected = "a finite number"
    if minimum is not None:
        expected += f" {'>' if exclusive else '>='} {minimum}"
    if allow_none:
        expected += " or None"
    raise _fail(name, where, expected, value)


def check_in(
    value: Any,
    name: str,
    where: str,
    interval: str,
) -> float:
    """A finite number in ``interval``, written as in the message: ``"[0, 1)"``,
    ``"(0, 1)"``, ``"(0, 1]"``; the brackets say which ends are included."""
    left, right = interval[0], interval[-1]
    low, high = (float(v) for v in interval[1:-1].split(","))
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value >= low if left == "[" else value > low) and (
            value <= high if right == "]" else value < high
        )
    if not ok:
        raise _fail(name, where, f"a number in {interval}", value)
    return float(value)


def check_choice(value: Any, name: str, where: str, choices: tuple[Any, ...]) -> Any:
    if value in choices:
        return value
    listed = ", ".join(repr(c) for c in choices)
    raise _fail(name, where, f"one of {listed}", value)


def as_generator(seed: Any, name: str = "seed", where: str = "twiddle") -> np.random.Generator:
    """Turn ``int | Generator | None`` into a Generator, once, at the API boundary."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and int(seed) >= 0:
        return np.random.default_rng(int(seed))
    raise _fail(name, where, "an int >= 0, a numpy.random.Generator or None", seed)


def seed_entropy(seed: Any, name: str = "seed", where: str = "twiddle") -> int:
    """Turn ``int | Generator | None`` into one integer from which all streams are derived."""
    gen = as_generator(seed, name, where)
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return int(seed)
    return int(gen.integers(0, 2**63 - 1))
