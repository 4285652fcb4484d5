"""Trial records: the unit a study stores.

A *trial* is one evaluation of one configuration of hyperparameters. Its record
(:class:`FrozenTrial`) keeps the state, the hyperparameters, the value, every
fold score, the learning curve (intermediate values), timings, the attempt
counter, the worker that ran it and the failure text.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class TrialState(enum.Enum):
    """Life cycle of a trial.

    WAITING trials are queued (enqueued by the user, or re-queued after the process
    running them died); RUNNING trials are being evaluated; the last three are final.
    """

    WAITING = "WAITING"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"

    @property
    def is_finished(self) -> bool:
        return self in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclasses.dataclass(frozen=True)
class FrozenTrial:
    """Immutable record of one trial.

    Attributes
    ----------
    number : int
        Position of the trial in its study, from 0.
    state : TrialState
    params : dict
        Hyperparameters of the trial (name -> value). Inactive conditional
        dimensions are absent.
    value : float or None
        The objective value (for cross-validation, the mean over folds).
    fold_scores : tuple of (float or None)
        Score of each fold of a cross-validated trial, in fold order; ``None``
        for a fold that was not run. Empty for plain objectives.
    intermediate : dict of int -> float
        Learning curve: value reported at each step (epoch, fold, resource).
    metrics : dict of str -> float
        Secondary results (other scorers' means, standard error, timings).
    distributions : dict or None
        For define-by-run trials, the JSON form of each dimension the
        objective suggested; ``None`` when the study has a fixed space.
    datetime_start, datetime_complete : float or None
        Unix timestamps.
    attempt : int
        1 for a first run; increased each time the trial is re-queued.
    worker : str or None
        Which process ran the trial ("host:pid").
    lease_until : float or None
        Unix time until which the running trial's driver is known alive.
    fail_reason : str or None
        Traceback or message of a failure; also notes of interrupted attempts.
    user_attrs, system_attrs : dict
        JSON-serialisable annotations by the user and by twiddle.
    """

    number: int
    state: TrialState
    params: dict[str, Any]
    value: float | None = None
    fold_scores: tuple[float | None, ...] = ()
    intermediate: dict[int, float] = dataclasses.field(default_factory=dict)
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    distributions: dict[str, Any] | None = None
    datetime_start: float | None = None
    datetime_complete: float | None = None
    attempt: int = 1
    worker: str | None = None
    lease_until: float | None = None
    fail_reason: str | None = None
    user_attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    system_attrs: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        """Seconds between start and completion, or None while unfinished."""
        if self.datetime_start is None or self.datetime_complete is None:
            return None
        return self.datetime_complete - self.datetime_start

    @property
    def n_folds_done(self) -> int:
        return sum(1 for s in self.fold_scores if s is not None)

    @property
    def value_se(self) -> float | None:
        """Standard error of the fold mean, or None without at least two fold scores."""
        scores = [s for s in self.fold_scores if s is not None and math.isfinite(s)]
        if len(scores) < 2:
            return None
        mean = sum(scores) / len(scores)
        var = sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)
        return math.sqrt(var / len(scores))

    def replace(self, **changes: Any) -> FrozenTrial:
        """A copy with ``changes`` applied (as :func:`dataclasses.replace`, but faster)."""
        if not changes.keys() <= _FIELD_NAMES:
            return dataclasses.replace(self, **changes)  # raises the usual TypeError
        new = object.__new__(FrozenTrial)
        state = new.__dict__
        state.update(self.__dict__)
        state.update(changes)
        return new

    def to_record(self) -> dict[str, Any]:
        """Flat, JSON-friendly dict (for tables and export)."""
        row: dict[str, Any] = {
            "number": self.number,
            "state": self.state.value,
            "value": self.value,
            "value_se": self.value_se,
            "n_folds": len(self.fold_scores),
            "duration": self.duration,
            "attempt": self.attempt,
            "worker": self.worker,
            "fail_reason": self.fail_reason,
        }
        for k, v in self.params.items():
            row[f"params_{k}"] = v
        for i, s in enumerate(self.fold_scores):
            row[f"fold_{i}"] = s
        for k, v in self.metrics.items():
            row[f"metrics_{k}"] = v
        for k, v in self.user_attrs.items():
            row[f"user_attrs_{k}"] = v
        return row


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(FrozenTrial))


def json_safe_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Convert numpy scalars to Python ones so params are JSON-clean."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if hasattr(v, "item") and not isinstance(v, (list, tuple, dict, str)):
            v = v.item()
        out[k] = v
    return out


def fold_matrix(trials: Sequence[FrozenTrial], n_folds: int | None = None) -> np.ndarray:
    """The trials' fold scores as an array of shape (len(trials), n_folds).

    Fold ``k`` of trial ``i`` is ``trials[i].fold_scores[k]``, NaN where that fold has
    no score (not run, or beyond the trial's scores). ``n_folds`` defaults to the most
    fold scores any trial has; scores beyond it are left out.
    """
    if n_folds is None:
        n_folds = max((len(t.fold_scores) for t in trials), default=0)
    out = np.full((len(trials), n_folds), np.nan)
    for i, t in enumerate(trials):
        for k, s in enumerate(t.fold_scores[:n_folds]):
            if s is not None:
                out[i, k] = s
    return out
