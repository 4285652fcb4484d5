"""The study's incremental views of its trials agree with a scan of all trials.

The driver keeps, alongside the list of trials, the WAITING and RUNNING numbers, the
count of finished trials and the define-by-run space, so that one step of the loop
does not scan the whole study. These tests check them against the scan they replace.
"""

from __future__ import annotations

import dataclasses

import pytest

import twiddle
from twiddle import Space, Study, TrialState
from twiddle._space import dimension_from_json
from twiddle._storage._fields import copy_trial
from twiddle._study import _space_from_json, _TrialsView
from twiddle._trial import FrozenTrial


def _scan_space(trials):
    common = None
    for t in trials:
        if t.state is not TrialState.COMPLETE or not t.distributions:
            continue
        if common is None:
            common = dict(t.distributions)
        else:
            common = {k: v for k, v in common.items() if t.distributions.get(k) == v}
        if not common:
            return None
    if not common:
        return None
    return Space({k: dimension_from_json(v) for k, v in sorted(common.items())})


def _check_views(study):
    trials = study.trials
    history = study._history()
    finished = [t for t in trials if t.state.is_finished]
    pending = [t for t in trials if not t.state.is_finished]
    assert len(history.trials) == len(finished)
    assert len(history.pending) == len(pending)
    assert history.n_seen == len(trials)
    assert history.trials == finished
    assert history.pending == pending
    assert study._waiting == {t.number for t in trials if t.state is TrialState.WAITING}
    assert study._running == {t.number for t in trials if t.state is TrialState.RUNNING}
    assert study._define_by_run_space() == _scan_space(trials)


def varying(trial):
    x = trial.suggest_float("x", -5.0, 5.0)
    high = 10 if trial.number % 3 else 20  # some trials use another range for "k"
    k = trial.suggest_int("k", 1, high)
    if trial.number % 4 == 1:
        raise ValueError("a failing trial")
    if trial.number % 7 == 2:
        raise twiddle.TrialPruned()
    trial.suggest_categorical("c", ["a", "b"])
    return x * x + k


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_views_follow_every_change(kind, tmp_path):
    storage = "memory" if kind == "memory" else f"sqlite:///{tmp_path / 'v.db'}"
    study = Study(name="v", storage=storage, seed=0, sampler="random")
    _check_views(study)
    study.enqueue({"x": 1.0, "k": 2, "c": "b"})
    study.enqueue({"x": 2.0, "k": 3, "c": "a"})
    _check_views(study)
    study.optimize(varying, n_trials=30)
    _check_views(study)
    asked = study.ask()
    asked.suggest_float("x", -5.0, 5.0)
    _check_views(study)
    study.tell(asked, 1.0)
    _check_views(study)
    left = study.ask()  # left RUNNING, then found stale on the next run
    # as if another host's driver ran it and its lease ran out
    attrs = {**study.trials[left.number].system_attrs, "driver": "elsewhere:1"}
    study.storage.update_trial(study._study_id, left.number, lease_until=1.0, system_attrs=attrs)
    study._trials[left.number] = study.storage.get_trial(study._study_id, left.number)
    assert study._recover_stale() == [left.number]
    _check_views(study)
    study.optimize(varying, n_trials=5)
    _check_views(study)
    if kind == "sqlite":
        study.storage.close()
        resumed = Study(name="v", storage=storage)
        _check_views(resumed)
        resumed.optimize(varying, n_trials=3)
        _check_views(resumed)


def test_define_by_run_space_is_cached_until_it_changes():
    study = Study(seed=0, sampler="random")
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("k", 1, 3), n_trials=5)
    first = study._define_by_run_space()
    assert first is study._define_by_run_space()
    assert list(first) == ["k", "x"]
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert list(study._define_by_run_space()) == ["x"]
    study.optimize(lambda t: t.suggest_float("y", 0, 1), n_trials=1)
    assert study._define_by_run_space() is None  # nothing in common any more: final
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert study._define_by_run_space() is None


def test_trials_view_behaves_like_a_list():
    trials = [FrozenTrial(number=i, state=s, params={}) for i, s in enumerate(TrialState)]
    view = _TrialsView(trials, True, 3)
    assert len(view) == 3  # known before the list is made
    finished = [t for t in trials if t.state.is_finished]
    assert view == finished and finished == view
    assert view[0] is finished[0] and view[-1] is finished[-1]
    assert view[1:] == finished[1:]
    assert list(view) == finished
    assert view == _TrialsView(trials, True, 3)
    assert view != _TrialsView(trials, False, 2)
    assert repr(view) == repr(finished)
    with pytest.raises(TypeError):
        hash(view)


def test_frozen_trial_replace_matches_dataclasses_replace():
    t = FrozenTrial(number=3, state=TrialState.RUNNING, params={"x": 1.0}, attempt=2)
    new = t.replace(state=TrialState.COMPLETE, value=0.5, lease_until=None)
    assert new == dataclasses.replace(t, state=TrialState.COMPLETE, value=0.5, lease_until=None)
    assert t.state is TrialState.RUNNING and t.value is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        new.value = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        t.replace(not_a_field=1)


def test_copy_trial_copies_every_dict():
    t = FrozenTrial(
        number=0,
        state=TrialState.COMPLETE,
        params={"x": [1, 2]},
        value=1.0,
        intermediate={0: 1.0},
        metrics={"m": 1.0},
        distributions={"x": {"type": "float", "low": 0.0, "high": 1.0}},
        user_attrs={"u": {"v": 1}},
        system_attrs={"s": [1]},
    )
    c = copy_trial(t)
    assert c == t and c is not t
    dicts = ("params", "intermediate", "metrics", "distributions", "user_attrs", "system_attrs")
    for name in dicts:
        assert getattr(c, name) is not getattr(t, name)
    c.params["x"].append(3)
    c.distributions["x"]["low"] = -1.0
    c.user_attrs["u"]["v"] = 2
    assert t.params == {"x": [1, 2]}
    assert t.distributions["x"]["low"] == 0.0
    assert t.user_attrs == {"u": {"v": 1}}


def test_fixed_space_is_rebuilt_only_for_new_json():
    space = Space({"x": twiddle.Float(0, 1), "c": twiddle.Categorical([1, 2])})
    data = space.to_json()
    first = _space_from_json(data)
    assert first == space
    assert _space_from_json(data) is first
    other = Space({"x": twiddle.Float(0, 1), "c": twiddle.Categorical([1.0, 2.0])}).to_json()
    assert other == data  # equal dicts, yet other choices: must not share the space
    rebuilt = _space_from_json(other)
    assert rebuilt is not first
    assert rebuilt["c"].choices == (1.0, 2.0)
