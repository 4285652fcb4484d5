"""Checks and conversions shared by every storage.

Both storages pass trial fields through :func:`normalise_fields` on the way in, so
they accept and reject the same values and hand back the same types: JSON-shaped
data (``str``, ``int``, ``float``, ``bool``, ``None``, lists and dicts with string
keys), tuples turned into lists, numpy scalars and arrays turned into Python ones.
The normalised values are fresh copies, so a caller that keeps a reference to the
dict it passed in cannot change what was stored.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

from twiddle._errors import StorageError
from twiddle._storage._base import ALLOWED_TRANSITIONS, UPDATABLE_FIELDS
from twiddle._trial import FrozenTrial, TrialState

_SCALARS = frozenset({str, int, float, bool, type(None)})


def json_value(obj: Any, where: str) -> Any:
    """Return a fresh JSON-shaped copy of ``obj``; StorageError if it has no JSON form.

    Parameters
    ----------
    obj : object
        Value to store.
    where : str
        What the value is, for the error message (e.g. ``"user_attrs of trial 3"``).

    Returns
    -------
    object
        ``obj`` with dicts and lists copied, tuples turned into lists and numpy
        scalars and arrays turned into Python numbers and lists.
    """
    kind = type(obj)
    if kind in _SCALARS:
        return obj
    if kind is dict or isinstance(obj, Mapping):  # plain dicts skip the slower ABC check
        out: dict[str, Any] = {}
        for key, item in obj.items():
            if not isinstance(key, str):
                raise StorageError(
                    f"The {where} has the key {key!r} of type {type(key).__name__}; stored "
                    "dicts need str keys (JSON turns other keys into strings). Convert the "
                    "keys to str first."
                )
            out[str(key)] = item if type(item) in _SCALARS else json_value(item, where)
        return out
    if kind is list or kind is tuple or isinstance(obj, list | tuple):
        return [item if type(item) in _SCALARS else json_value(item, where) for item in obj]
    if isinstance(obj, bool | int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, bytes | bytearray):
        # numpy scalars (-> Python number) and arrays (-> nested lists).
        return json_value(obj.tolist(), where)
    raise StorageError(
        f"The {where} holds {obj!r} of type {type(obj).__name__}, which cannot be stored as "
        "JSON. Store only str, int, float, bool, None, lists and dicts; convert other "
        "objects (e.g. with str()) first."
    )


def copy_json(obj: Any) -> Any:
    """Copy the dicts and lists of already-normalised JSON data (cheap for flat dicts)."""
    if type(obj) is dict:
        return {k: v if type(v) in _SCALARS else copy_json(v) for k, v in obj.items()}
    if type(obj) is list:
        return [v if type(v) in _SCALARS else copy_json(v) for v in obj]
    return obj


def _float(value: Any, where: str, *, allow_none: bool = True) -> float | None:
    if type(value) is float:
        return value
    if value is None and allow_none:
        return None
    if not isinstance(value, str | bytes | bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    expected = "a float or None" if allow_none else "a float"
    raise StorageError(f"The {where} must be {expected}. Got {value!r} instead.")


def _str(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise StorageError(f"The {where} must be a str or None. Got {value!r} instead.")


def _dict(value: Any, where: str) -> dict[str, Any]:
    if type(value) is not dict and not isinstance(value, Mapping):
        raise StorageError(f"The {where} must be a dict. Got {value!r} instead.")
    out: dict[str, Any] = json_value(value, where)
    return out


def as_state(value: Any, where: str) -> TrialState:
    """``value`` as a TrialState (members and their string values are accepted)."""
    if type(value) is TrialState:
        return value
    try:
        return TrialState(value)
    except ValueError:
        names = ", ".join(s.value for s in TrialState)
        raise StorageError(
            f"The state of {where} must be a TrialState ({names}). Got {value!r} instead."
        ) from None


def _fold_scores(value: Any, where: str) -> tuple[float | None, ...]:
    if isinstance(value, str | bytes | Mapping):
        raise StorageError(f"The {where} must be a sequence of floats. Got {value!r} instead.")
    try:
        items = list(value)
    except TypeError:
        raise StorageError(
            f"The {where} must be a sequence of floats or None. Got {value!r} instead."
        ) from None
    return tuple(_float(s, where) for s in items)


def _intermediate(value: Any, where: str) -> dict[int, float]:
    if not isinstance(value, Mapping):
        raise StorageError(f"The {where} must be a dict of int -> float. Got {value!r} instead.")
    out: dict[int, float] = {}
    for step, val in value.items():
        try:
            key = operator.index(step)
        except TypeError:
            raise StorageError(
                f"The {where} has the step {step!r}; steps must be ints (epoch, fold or "
                "resource number)."
            ) from None
        number = _float(val, where, allow_none=False)
        assert number is not None
        out[key] = number
    return out


def _attempt(value: Any, where: str) -> int:
    try:
        attempt = operator.index(value)
    except TypeError:
        attempt = 0
    if attempt < 1 or isinstance(value, bool):
        raise StorageError(f"The {where} must be an int >= 1. Got {value!r} instead.")
    return attempt


def _distributions(value: Any, where: str) -> dict[str, Any] | None:
    return None if value is None else _dict(value, where)


_CONVERTERS: dict[str, Any] = {
    "params": _dict,
    "value": _float,
    "fold_scores": _fold_scores,
    "intermediate": _intermediate,
    "metrics": _dict,
    "distributions": _distributions,
    "datetime_start": _float,
    "datetime_complete": _float,
    "attempt": _attempt,
    "worker": _str,
    "lease_until": _float,
    "fail_reason": _str,
    "user_attrs": _dict,
    "system_attrs": _dict,
}
assert set(_CONVERTERS) | {"state"} == UPDATABLE_FIELDS


def normalise_fields(fields: Mapping[str, Any], study_id: int, number: int | str) -> dict[str, Any]:
    """Check names and values of trial fields and return normalised copies.

    Parameters
    ----------
    fields : mapping
        Field name -> new value; names must be in ``UPDATABLE_FIELDS``.
    study_id : int
        Study of the trial (for messages).
    number : int or str
        Number of the trial, or a description such as ``"new"`` (for messages).

    Returns
    -------
    dict
        The same keys with checked, copied values.

    Raises
    ------
    StorageError
        For an unknown field name or a value of the wrong type.
    """
    unknown = set(fields) - UPDATABLE_FIELDS
    if unknown:
        allowed = ", ".join(sorted(UPDATABLE_FIELDS))
        raise StorageError(
            f"Unknown trial field(s) {', '.join(sorted(unknown))} for trial {number} of "
            f"study {study_id}; nothing was changed. The fields that can be set are: "
            f"{allowed}."
        )
    out: dict[str, Any] = {}
    trial = f"trial {number} of study {study_id}"
    for name, value in fields.items():
        if name == "state":
            out[name] = as_state(value, trial)
        else:
            where = f"{name} of {trial}"
            out[name] = _CONVERTERS[name](value, where)
    return out


def check_update(old: FrozenTrial, study_id: int, changes: Mapping[str, Any]) -> None:
    """Raise StorageError if ``changes`` may not be applied to the stored trial ``old``.

    A finished trial may only have its ``user_attrs`` changed; a state change must be
    listed in ``ALLOWED_TRANSITIONS``. ``changes`` must already be normalised.
    """
    if old.state.is_finished:
        others = sorted(set(changes) - {"user_attrs"})
        if others:
            raise StorageError(
                f"Trial {old.number} of study {study_id} is {old.state.value}, which is "
                f"final; only its user_attrs may change, not {', '.join(others)}. Nothing "
                "was changed."
            )
        return
    new_state = changes.get("state")
    if new_state is not None and new_state not in ALLOWED_TRANSITIONS[old.state]:
        allowed = ", ".join(sorted(s.value for s in ALLOWED_TRANSITIONS[old.state]))
        raise StorageError(
            f"Trial {old.number} of study {study_id} cannot go from {old.state.value} to "
            f"{new_state.value}; from {old.state.value} it may only go to {allowed}. "
            "Nothing was changed."
        )


def copy_trial(trial: FrozenTrial) -> FrozenTrial:
    """A copy of a stored trial whose dicts the caller may change freely."""
    dists = trial.distributions
    # Copy the attributes directly: the frozen dataclass __init__ is slow.
    new = object.__new__(FrozenTrial)
    state = new.__dict__
    state.update(trial.__dict__)
    state["params"] = copy_json(trial.params)
    state["intermediate"] = dict(trial.intermediate)
    state["metrics"] = copy_json(trial.metrics)
    state["distributions"] = None if dists is None else copy_json(dists)
    state["user_attrs"] = copy_json(trial.user_attrs)
    state["system_attrs"] = copy_json(trial.system_attrs)
    return new


def check_study_args(
    name: Any, direction: Any, space: Any, system_attrs: Any
) -> tuple[str, str, dict[str, Any] | None, dict[str, Any]]:
    """Check and copy the arguments of ``create_study``."""
    if not isinstance(name, str) or not name:
        raise StorageError(f"A study name must be a non-empty str. Got {name!r} instead.")
    if not isinstance(direction, str):
        raise StorageError(f"A study direction must be a str. Got {direction!r} instead.")
    where = f"of study {name!r}"
    space_copy = None if space is None else _dict(space, f"space {where}")
    attrs = {} if system_attrs is None else _dict(system_attrs, f"system_attrs {where}")
    return name, direction, space_copy, attrs
