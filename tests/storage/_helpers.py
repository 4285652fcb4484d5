"""Shared values and checks for the storage tests."""

from __future__ import annotations

import dataclasses
from typing import Any

from twiddle._trial import FrozenTrial

NAN = float("nan")
INF = float("inf")


def every_field() -> dict[str, Any]:
    """A value for every settable trial field (except state), with awkward cases."""
    return {
        "params": {"lr": 1e-3, "depth": 7, "kernel": "rbf", "on": True, "none": None},
        "value": -0.0,
        "fold_scores": (0.5, NAN, None, INF, -INF, 0.1 + 0.2),
        "intermediate": {0: 1.5, 3: NAN, 10: -INF},
        "metrics": {"se": 0.01, "fit_time": 1e-300, "bad": NAN},
        "distributions": {"lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True}},
        "datetime_start": 1_700_000_000.123456,
        "datetime_complete": 1_700_000_001.5,
        "attempt": 3,
        "worker": "hôte-ñ:4242",
        "lease_until": 1_700_000_030.25,
        "fail_reason": "Traceback: ValueError('ünïcödé ✓ 中文')\n  line 2",
        "user_attrs": {"nested": {"list": [1, 2.5, [None, "x"]], "deep": {"k": NAN}}, "é": "ß"},
        "system_attrs": {"seed": 12345678901234567890, "flags": [True, False]},
    }


def assert_same(got: FrozenTrial, expected: FrozenTrial) -> None:
    """Field-by-field equality that tells -0.0 from 0.0 and int from float, and NaN == NaN."""
    for field in dataclasses.fields(FrozenTrial):
        a, b = getattr(got, field.name), getattr(expected, field.name)
        assert repr(a) == repr(b), f"{field.name}: {a!r} != {b!r}"
