"""Storage interface: where studies and trials live.

Only the driver process writes (see DESIGN.md section 3). Every implementation
passes the same contract suite (``tests/storage/test_contract.py``).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, Self

from twiddle._trial import FrozenTrial, TrialState

#: Fields of a trial that :meth:`Storage.update_trial` may change.
UPDATABLE_FIELDS = frozenset(
    {
        "state",
        "params",
        "value",
        "fold_scores",
        "intermediate",
        "metrics",
        "distributions",
        "datetime_start",
        "datetime_complete",
        "attempt",
        "worker",
        "lease_until",
        "fail_reason",
        "user_attrs",
        "system_attrs",
    }
)

#: Allowed state transitions. A finished trial is final: only its user_attrs may change.
ALLOWED_TRANSITIONS: dict[TrialState, frozenset[TrialState]] = {
    TrialState.WAITING: frozenset({TrialState.WAITING, TrialState.RUNNING, TrialState.FAIL}),
    TrialState.RUNNING: frozenset(
        {
            TrialState.RUNNING,
            TrialState.WAITING,
            TrialState.COMPLETE,
            TrialState.PRUNED,
            TrialState.FAIL,
        }
    ),
    TrialState.COMPLETE: frozenset(),
    TrialState.PRUNED: frozenset(),
    TrialState.FAIL: frozenset(),
}


@dataclasses.dataclass(frozen=True)
class StudyRecord:
    """A stored study: its identity, direction and (optional) search space as JSON."""

    study_id: int
    name: str
    direction: str
    space: dict[str, Any] | None
    created: float
    user_attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    system_attrs: dict[str, Any] = dataclasses.field(default_factory=dict)


class Storage(abc.ABC):
    """Abstract storage of studies and their trials.

    Trial numbers are assigned by the storage: 0, 1, 2, ... within a study, in
    creation order. Implementations must reject, with :class:`~twiddle.StorageError`,
    any change to a finished trial other than its ``user_attrs``, and any field
    name outside :data:`UPDATABLE_FIELDS`.
    """

    url: str

    # -- studies ---------------------------------------------------------------
    @abc.abstractmethod
    def create_study(
        self,
        name: str,
        direction: str,
        space: dict[str, Any] | None,
        system_attrs: dict[str, Any] | None = None,
    ) -> StudyRecord:
        """Create a study; raise StorageError if the name is taken."""

    @abc.abstractmethod
    def get_study(self, name: str) -> StudyRecord | None:
        """The study with that name, or None."""

    @abc.abstractmethod
    def list_studies(self) -> list[StudyRecord]:
        """All studies, oldest first."""

    @abc.abstractmethod
    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        """Set one JSON-serialisable user attribute of a study."""

    # -- trials ----------------------------------------------------------------
    @abc.abstractmethod
    def create_trial(
        self,
        study_id: int,
        params: dict[str, Any],
        state: TrialState = TrialState.RUNNING,
        **fields: Any,
    ) -> FrozenTrial:
        """Create a trial with the next number; ``fields`` are any of UPDATABLE_FIELDS."""

    @abc.abstractmethod
    def update_trial(self, study_id: int, number: int, **fields: Any) -> FrozenTrial:
        """Change fields of one trial atomically and return the new record."""

    @abc.abstractmethod
    def get_trial(self, study_id: int, number: int) -> FrozenTrial:
        """One trial; KeyError if it does not exist."""

    @abc.abstractmethod
    def get_trials(
        self, study_id: int, states: Iterable[TrialState] | None = None
    ) -> list[FrozenTrial]:
        """Trials of a study ordered by number, optionally only those in ``states``."""

    @abc.abstractmethod
    def renew_leases(self, study_id: int, numbers: Sequence[int], lease_until: float) -> None:
        """Set ``lease_until`` of several RUNNING trials in one write."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (connections)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
