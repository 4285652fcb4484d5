"""Storage in the memory of the driver process (lost when the process ends)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from twiddle._errors import StorageError
from twiddle._storage._base import Storage, StudyRecord
from twiddle._storage._fields import (
    as_state,
    check_study_args,
    check_update,
    copy_json,
    copy_trial,
    json_value,
    normalise_fields,
)
from twiddle._trial import FrozenTrial, TrialState


def _copy_study(study: StudyRecord) -> StudyRecord:
    return StudyRecord(
        study_id=study.study_id,
        name=study.name,
        direction=study.direction,
        space=None if study.space is None else copy_json(study.space),
        created=study.created,
        user_attrs=copy_json(study.user_attrs),
        system_attrs=copy_json(study.system_attrs),
    )


class MemoryStorage(Storage):
    """Keep studies and trials in memory.

    Fast and private to one process: every call costs the same however many
    trials the study holds (except :meth:`get_trials`, which returns them all).
    Records go in and come out as copies, so changing a returned record's
    dicts never changes what is stored.

    Examples
    --------
    >>> storage = MemoryStorage()
    >>> study = storage.create_study("demo", "minimize", None)
    >>> storage.create_trial(study.study_id, {"x": 1.0}).number
    0
    """

    url = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._studies: dict[int, StudyRecord] = {}
        self._ids_by_name: dict[str, int] = {}
        self._trials: dict[int, list[FrozenTrial]] = {}

    def __repr__(self) -> str:
        return f"MemoryStorage(n_studies={len(self._studies)})"

    # -- studies ---------------------------------------------------------------
    def create_study(
        self,
        name: str,
        direction: str,
        space: dict[str, Any] | None,
        system_attrs: dict[str, Any] | None = None,
    ) -> StudyRecord:
        name, direction, space, attrs = check_study_args(name, direction, space, system_attrs)
        with self._lock:
            if name in self._ids_by_name:
                raise StorageError(
                    f"A study named {name!r} already exists in this memory storage; load it "
                    "instead of creating it, or choose another name."
                )
            study_id = len(self._studies) + 1
            study = StudyRecord(
                study_id=study_id,
                name=name,
                direction=direction,
                space=space,
                created=time.time(),
                user_attrs={},
                system_attrs=attrs,
            )
            self._studies[study_id] = study
            self._ids_by_name[name] = study_id
            self._trials[study_id] = []
            return _copy_study(study)

    def get_study(self, name: str) -> StudyRecord | None:
        with self._lock:
            study_id = self._ids_by_name.get(name)
            return None if study_id is None else _copy_study(self._studies[study_id])

    def list_studies(self) -> list[StudyRecord]:
        with self._lock:
            return [_copy_study(s) for s in self._studies.values()]

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise StorageError(f"A user attribute key must be a str. Got {key!r} instead.")
        value = json_value(value, f"user attribute {key!r} of study {study_id}")
        with self._lock:
            study = self._study(study_id)
            attrs = dict(study.user_attrs)
            attrs[key] = value
            self._studies[study_id] = dataclasses.replace(study, user_attrs=attrs)

    # -- trials ----------------------------------------------------------------
    def create_trial(
        self,
        study_id: int,
        params: dict[str, Any],
        state: TrialState = TrialState.RUNNING,
        **fields: Any,
    ) -> FrozenTrial:
        values = normalise_fields({"params": params, **fields}, study_id, "new")
        values["state"] = as_state(state, f"new trial of study {study_id}")
        with self._lock:
            self._study(study_id)
            trials = self._trials[study_id]
            trial = FrozenTrial(number=len(trials), **values)
            trials.append(trial)
            return copy_trial(trial)

    def update_trial(self, study_id: int, number: int, **fields: Any) -> FrozenTrial:
        changes = normalise_fields(fields, study_id, number)
        with self._lock:
            old = self._trial(study_id, number)
            check_update(old, study_id, changes)
            if not changes:
                return copy_trial(old)
            new = old.replace(**changes)
            self._trials[study_id][number] = new
            return copy_trial(new)

    def get_trial(self, study_id: int, number: int) -> FrozenTrial:
        with self._lock:
            return copy_trial(self._trial(study_id, number))

    def get_trials(
        self, study_id: int, states: Iterable[TrialState] | None = None
    ) -> list[FrozenTrial]:
        wanted = None if states is None else {as_state(s, "a state filter") for s in states}
        with self._lock:
            self._study(study_id)
            trials = self._trials[study_id]
            if wanted is None:
                return [copy_trial(t) for t in trials]
            return [copy_trial(t) for t in trials if t.state in wanted]

    def renew_leases(self, study_id: int, numbers: Sequence[int], lease_until: float) -> None:
        """Set ``lease_until`` of several trials; those not RUNNING (or absent) are skipped."""
        lease = normalise_fields({"lease_until": lease_until}, study_id, "leases")["lease_until"]
        with self._lock:
            self._study(study_id)
            trials = self._trials[study_id]
            for number in numbers:
                if 0 <= number < len(trials) and trials[number].state is TrialState.RUNNING:
                    trials[number] = trials[number].replace(lease_until=lease)

    # -- helpers (call with the lock held) -------------------------------------
    def _study(self, study_id: int) -> StudyRecord:
        try:
            return self._studies[study_id]
        except KeyError:
            raise KeyError(f"There is no study with id {study_id} in this storage.") from None

    def _trial(self, study_id: int, number: int) -> FrozenTrial:
        self._study(study_id)
        trials = self._trials[study_id]
        if isinstance(number, int) and 0 <= number < len(trials):
            return trials[number]
        raise KeyError(f"Study {study_id} has no trial number {number!r}.")
