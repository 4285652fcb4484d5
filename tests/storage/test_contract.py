"""Contract every storage fulfils (run once per implementation)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from twiddle._errors import StorageError
from twiddle._storage import Storage, StudyRecord
from twiddle._storage._base import ALLOWED_TRANSITIONS, UPDATABLE_FIELDS
from twiddle._trial import FrozenTrial, TrialState

from ._helpers import INF, NAN, assert_same, every_field

# -- studies -------------------------------------------------------------------


def test_create_get_and_list_studies(storage: Storage) -> None:
    space = {"x": {"type": "float", "low": 0.0, "high": 1.0}, "c": ["a", "ß"]}
    first = storage.create_study("first", "minimize", space, system_attrs={"v": 1})
    second = storage.create_study("second", "maximize", None)

    assert isinstance(first, StudyRecord)
    assert first.study_id != second.study_id
    assert (first.name, first.direction, first.space) == ("first", "minimize", space)
    assert first.system_attrs == {"v": 1}
    assert first.user_attrs == {}
    assert second.space is None and second.system_attrs == {}
    assert storage.get_study("first") == first
    assert storage.get_study("second") == second
    assert storage.get_study("missing") is None
    assert storage.list_studies() == [first, second]


def test_duplicate_study_name_is_an_error(storage: Storage) -> None:
    storage.create_study("same", "minimize", None)
    with pytest.raises(StorageError, match="'same' already exists"):
        storage.create_study("same", "maximize", None)
    assert len(storage.list_studies()) == 1


def test_study_user_attrs(storage: Storage) -> None:
    study = storage.create_study("s", "minimize", None)
    storage.set_study_user_attr(study.study_id, "note", {"a": [1, 2]})
    storage.set_study_user_attr(study.study_id, "n", np.int64(3))
    storage.set_study_user_attr(study.study_id, "note", "replaced")
    loaded = storage.get_study("s")
    assert loaded is not None
    assert loaded.user_attrs == {"note": "replaced", "n": 3}
    assert type(loaded.user_attrs["n"]) is int
    with pytest.raises(KeyError):
        storage.set_study_user_attr(study.study_id + 100, "x", 1)
    with pytest.raises(StorageError, match="cannot be stored as JSON"):
        storage.set_study_user_attr(study.study_id, "bad", object())


# -- trial numbers -------------------------------------------------------------


def test_trial_numbers_count_from_zero_per_study(storage: Storage) -> None:
    a = storage.create_study("a", "minimize", None).study_id
    b = storage.create_study("b", "minimize", None).study_id
    numbers_a = [storage.create_trial(a, {"i": i}).number for i in range(5)]
    numbers_b = [storage.create_trial(b, {"i": i}).number for i in range(3)]
    numbers_a.append(storage.create_trial(a, {"i": 5}).number)
    assert numbers_a == [0, 1, 2, 3, 4, 5]
    assert numbers_b == [0, 1, 2]
    assert [t.params["i"] for t in storage.get_trials(a)] == list(range(6))
    assert [t.params["i"] for t in storage.get_trials(b)] == list(range(3))


def test_unknown_study_or_trial_is_a_key_error(storage: Storage) -> None:
    sid = storage.create_study("s", "minimize", None).study_id
    storage.create_trial(sid, {})
    with pytest.raises(KeyError):
        storage.create_trial(sid + 100, {})
    with pytest.raises(KeyError):
        storage.get_trial(sid, 1)
    with pytest.raises(KeyError):
        storage.get_trial(sid + 100, 0)
    with pytest.raises(KeyError):
        storage.update_trial(sid, 5, value=1.0)
    with pytest.raises(KeyError):
        storage.get_trials(sid + 100)


# -- round trips ---------------------------------------------------------------


@pytest.mark.parametrize("state", list(TrialState))
def test_every_field_round_trips_on_create(storage: Storage, state: TrialState) -> None:
    sid = storage.create_study("s", "minimize", None).study_id
    fields = every_field()
    params = fields.pop("params")
    created = storage.create_trial(sid, params, state=state, **fields)
    expected = FrozenTrial(number=0, state=state, params=params, **fields)
    assert_same(created, expected)
    assert_same(storage.get_trial(sid, 0), expected)
    assert_same(storage.get_trials(sid)[0], expected)


def test_every_field_round_trips_on_update(storage: Storage) -> None:
    sid = storage.create_study("s", "minimize", None).study_id
    storage.create_trial(sid, {"old": 1}, value=1.0, user_attrs={"old": True})
    fields = every_field()
    updated = storage.update_trial(sid, 0, state=TrialState.COMPLETE, **fields)
    expected = FrozenTrial(number=0, state=TrialState.COMPLETE, **fields)
    assert_same(updated, expected)
    assert_same(storage.get_trial(sid, 0), expected)


def test_update_changes_only_the_given_fields(storage: Storage) -> None:
    sid = storage.create_study("s", "minimize", None).study_id
    storage.create_trial(sid, {"x": 1.0}, worker="w:1", fold_scores=(1.0, None))
    updated = storage.update_trial(sid, 0, fold_scores=(1.0, 2.0), value=1.5)
    assert updated.worker == "w:1" and updated.params == {"x": 1.0}
    assert updated.fold_scores == (1.0, 2.0) and updated.value == 1.5
    assert_same(storage.get_trial(sid, 0), updated)
    assert_same(storage.update_trial(sid, 0), updated)  # no fields: nothing changes


def test_special_floats_keep_their_exact_value(storage: Storage) -> None:
    sid = storage.create_study("s", "minimize", None).study_id
    for value in (NAN, INF, -INF, -0.0, 5e-324, 1.7976931348623157e308, None):
        number = storage.create_trial(sid, {}, value=value).number
        got = storage.get_trial(sid, number).value
        assert repr(got) == repr(value)
    assert math.isnan(storage.get_trial(sid, 0).value or 0.0)


def test_intermediate_keys_stay_ints(storage: Storage) -> None:
    sid = storage.create_study("s", "minimize", None).study_id
    storage.create_trial(sid, {}, intermediate={np.int64(2): np.float32(0.5), 10: 1})
    trial = storage.get_trial(sid, 0)
    assert trial.intermediate == {2: 0.5, 10: 1.0}
    assert all(type(k) is int and type(v) is float for k, v in trial.intermediate.items())
    with pytest.raises(StorageError, match="steps must be ints"):
        storage.update_trial(sid, 0, intermediate={"epoch_1": 0.5})


def test_values_are_normalised_the_same_way(storage: Storage) -> None:
    """Both storages hand back JSON types: tuples become lists, numpy becomes Python."""
    sid = storage.create_study("s", "minimize", None).study_id
    trial = storage.create_trial(
        sid,
        {"layers": (64, 32), "n": np.int64(4), "f": np.float32(0.5), "a": np.arange(2)},
        value=np.float64(0.25),
        fold_scores=np.array([0.1, 0.2]),
        attempt=np.int64(2),
    )
    for got in (trial, storage.get_trial(sid, 0)):
        assert got.params == {"layers": [64, 32], "n": 4, "f": 0.5, "a": [0, 1]}
        assert type(got.params["n"]) is int and type(got.params["f"]) is float
        assert type(got.value) is float and got.fold_scores == (0.1, 0.2)
        assert type(got.attempt) is int and got.attempt == 2


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("user_attrs", {"obj": object()}, "cannot be stored as JSON"),
        ("user_attrs", {1: "int key"}, "need str keys"),
        ("params", [1, 2], "must be a dict"),
        ("value", "0.5", "must be a float"),
        ("fold_scores", 0.5, "sequence of floats"),
        ("attempt", 0, "int >= 1"),
        ("worker", 42, "str or None"),
        ("state", "DONE", "must be a TrialState"),
    ],
)
def test_bad_values_are_refused_and_nothing_is_written(
    storage: Storage, field: str, value: Any, match: str
) -> None:
    sid = storage.create_study("s", "minimize", None).study_id
    before = storage.create_trial(sid, {"x": 1})
    with pytest.raises(StorageError, match=match):
        storage.update_trial(sid, 0, **{field: value})
    assert_same(storage.get_trial(sid, 0), before)
    if field not in ("params", "state"):
        with pytest.raises(StorageError, match=match):
            extra: dict[str, Any] = {field: value}
            storage.create_trial(sid, {"x": 2}, **extra)
        assert len(storage.get_trials(sid)) == 1


def test_unknown_fields_are_refused(storage: Storage) -> None:
    sid = storage.create_study("s", "minimize", None).study_id
    before = storage.create_trial(sid, {"x": 1})
    with pytest.raises(StorageError, match=r"Unknown trial field.*valeu") as info:
        storage.update_trial(sid, 0, value=1.0, valeu=2.0)
    assert "fold_scores" in str(info.value)  # the message lists the valid names
    with pytest.raises(StorageError, match=r"Unknown trial field.*number"):
        storage.create_trial(sid, {}, number=7)
    with pytest.raises(StorageError, match="Unknown trial field"):
        storage.create_trial(sid, {}, colour="red")
    assert_same(storage.get_trial(sid, 0), before)
    assert len(storage.get_trials(sid)) == 1


# -- queries ---------------------------------------------------------------------


def test_get_trials_filters_by_state_in_number_order(storage: Storage) -> None:
    sid = storage.create_study("s", "minimize", None).study_id
    other = storage.create_study("other", "minimize", None).study_id
    states = [
        TrialState.COMPLETE,
        TrialState.RUNNING,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.WAITING,
        TrialState.PRUNED,
        TrialState.COMPLETE,
    ]
    for i, state in enumerate(states):
        storage.create_trial(sid, {"i": i}, state=state)
        storage.create_trial(other, {"i": i}, state=TrialState.COMPLETE)
    storage.update_trial(sid, 1, state=TrialState.COMPLETE)  # order is by number, not by time

    def numbers(*wanted: TrialState) -> list[int]:
        return [t.number for t in storage.get_trials(sid, wanted)]

    assert [t.number for t in storage.get_trials(sid)] == list(range(7))
    assert numbers(TrialState.COMPLETE) == [0, 1, 3, 6]
    assert numbers(TrialState.PRUNED, TrialState.COMPLETE) == [0, 1, 3, 5, 6]
    assert numbers(TrialState.RUNNING) == []
    assert numbers() == []
    assert [t.number for t in storage.get_trials(sid, iter([TrialState.FAIL]))] == [2]


def test_renew_leases_touches_only_running_trials(storage: Storage) -> None:
    sid = storage.create_study("s", "minimize", None).study_id
    for state in (TrialState.RUNNING, TrialState.RUNNING, TrialState.COMPLETE):
        storage.create_trial(sid, {}, state=state, lease_until=1.0)
    storage.create_trial(sid, {}, state=TrialState.RUNNING, lease_until=1.0)
    storage.renew_leases(sid, [0, 1, 2, 99], 50.0)
    assert [t.lease_until for t in storage.get_trials(sid)] == [50.0, 50.0, 1.0, 1.0]
    storage.renew_leases(sid, [], 60.0)
    with pytest.raises(KeyError):
        storage.renew_leases(sid + 100, [0], 60.0)


# -- state transitions -----------------------------------------------------------

_PAIRS = [(old, new) for old in TrialState for new in TrialState]


@pytest.mark.parametrize(("old", "new"), _PAIRS, ids=[f"{a.name}-{b.name}" for a, b in _PAIRS])
def test_state_transitions_follow_the_table(
    storage: Storage, old: TrialState, new: TrialState
) -> None:
    sid = storage.create_study("s", "minimize", None).study_id
    before = storage.create_trial(sid, {"x": 1}, state=old)
    if new in ALLOWED_TRANSITIONS[old]:
        assert storage.update_trial(sid, 0, state=new).state is new
        assert storage.get_trial(sid, 0).state is new
    else:
        with pytest.raises(StorageError, match=f"{old.value}"):
            storage.update_trial(sid, 0, state=new, value=3.0)
        assert_same(storage.get_trial(sid, 0), before)


@pytest.mark.parametrize("final", [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL])
def test_finished_trials_only_change_user_attrs(storage: Storage, final: TrialState) -> None:
    sid = storage.create_study("s", "minimize", None).study_id
    storage.create_trial(sid, {"x": 1})
    done = storage.update_trial(sid, 0, state=final, value=1.0)
    for field in sorted(UPDATABLE_FIELDS - {"user_attrs"}):
        value = getattr(done, field)
        with pytest.raises(StorageError, match="final; only its user_attrs may change"):
            storage.update_trial(sid, 0, **{field: value})
    with pytest.raises(StorageError, match="final"):
        storage.update_trial(sid, 0, user_attrs={"a": 1}, value=2.0)
    assert_same(storage.get_trial(sid, 0), done)
    changed = storage.update_trial(sid, 0, user_attrs={"note": "checked"})
    assert changed.user_attrs == {"note": "checked"}
    assert_same(storage.get_trial(sid, 0), done.replace(user_attrs={"note": "checked"}))


# -- isolation of stored state -----------------------------------------------------


def _mutate(trial: FrozenTrial) -> None:
    trial.params["x"] = "mutated"
    trial.intermediate[99] = 9.0
    trial.metrics["m"] = 9.0
    assert trial.distributions is not None
    trial.distributions["x"]["low"] = -1
    trial.user_attrs["nested"]["list"].append("mutated")
    trial.system_attrs.clear()


def test_records_cannot_change_stored_state(storage: Storage) -> None:
    sid = storage.create_study("s", "minimize", None).study_id
    params: dict[str, Any] = {"x": 1.0}
    user_attrs: dict[str, Any] = {"nested": {"list": [1]}}
    fields: dict[str, Any] = {
        "intermediate": {0: 0.5},
        "metrics": {"m": 1.0},
        "distributions": {"x": {"low": 0.0}},
        "user_attrs": user_attrs,
        "system_attrs": {"s": 1},
    }
    created = storage.create_trial(sid, params, **fields)
    reference = storage.get_trial(sid, 0)
    # The caller's own dicts, then every kind of returned record.
    params["x"] = "mutated"
    user_attrs["nested"]["list"].append("mutated")
    _mutate(created)
    _mutate(storage.get_trial(sid, 0))
    _mutate(storage.get_trials(sid)[0])
    _mutate(storage.get_trials(sid, [TrialState.RUNNING])[0])
    _mutate(storage.update_trial(sid, 0, value=1.0))
    assert_same(storage.get_trial(sid, 0), reference.replace(value=1.0))


def test_study_records_cannot_change_stored_state(storage: Storage) -> None:
    space = {"x": {"low": 0.0}}
    study = storage.create_study("s", "minimize", space, system_attrs={"k": [1]})
    space["x"]["low"] = -1.0
    for record in (study, storage.get_study("s"), storage.list_studies()[0]):
        assert record is not None and record.space is not None
        record.space["x"]["low"] = -2.0
        record.system_attrs["k"].append(2)
        record.user_attrs["new"] = 1
    loaded = storage.get_study("s")
    assert loaded is not None
    assert loaded.space == {"x": {"low": 0.0}}
    assert loaded.system_attrs == {"k": [1]} and loaded.user_attrs == {}
