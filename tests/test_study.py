"""Studies: define-by-run and config objectives, ask/tell, failures, resume, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

import twiddle
from twiddle import (
    AllTrialsFailedError,
    Categorical,
    Float,
    GridSampler,
    Int,
    InvalidParameterError,
    Space,
    Study,
    StudyMismatchError,
    TrialPruned,
    TrialState,
)


@pytest.fixture(params=["memory", "sqlite"])
def storage(request, tmp_path):
    return "memory" if request.param == "memory" else f"sqlite:///{tmp_path / 't.db'}"


def quadratic(trial):
    x = trial.suggest_float("x", -5.0, 5.0)
    k = trial.suggest_int("k", 1, 3)
    return (x - 2.0) ** 2 + k


def test_define_by_run_finds_known_optimum(storage):
    study = Study(name="q", storage=storage, seed=0, sampler="random")
    study.optimize(quadratic, n_trials=200)
    assert len(study.trials) == 200
    assert all(t.state is TrialState.COMPLETE for t in study.trials)
    # true minimum is 1 at x=2, k=1; 200 uniform draws get close
    assert study.best_value < 1.05
    assert study.best_params["k"] == 1
    assert abs(study.best_params["x"] - 2.0) < 0.25
    assert type(study.best_params["k"]) is int
    t = study.best_trial
    assert t.distributions == {
        "x": {"type": "float", "low": -5.0, "high": 5.0, "log": False, "step": None},
        "k": {"type": "int", "low": 1, "high": 3, "log": False, "step": 1},
    }


def test_config_objective_with_space(storage):
    space = Space({"x": Float(-1.0, 1.0), "c": Categorical(["a", (1, 2)])})
    seen = []

    def objective(config):
        seen.append(config)
        assert isinstance(config, dict)
        return config["x"] ** 2 + (0.0 if config["c"] == (1, 2) else 1.0)

    study = Study(name="cfg", storage=storage, space=space, seed=1)
    study.optimize(objective, n_trials=16)
    assert {type(c["c"]) for c in seen} <= {str, tuple}
    assert study.best_params["c"] == [1, 2] or study.best_params["c"] == (1, 2)
    assert study.best_value == pytest.approx(min(c["x"] ** 2 for c in seen if c["c"] == (1, 2)))


def test_same_seed_same_trials():
    def run(seed):
        s = Study(name="d", seed=seed)
        s.optimize(quadratic, n_trials=15)
        return [(t.params, t.value) for t in s.trials]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_objective_raising_fails_trial_and_study_goes_on():
    calls = []

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        calls.append(x)
        if len(calls) % 2 == 0:
            raise ZeroDivisionError("boom in objective")
        return x

    study = Study(name="f", seed=0)
    study.optimize(objective, n_trials=6)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 3 and states.count(TrialState.COMPLETE) == 3
    failed = study.get_trials([TrialState.FAIL])[0]
    assert "ZeroDivisionError: boom in objective" in failed.fail_reason
    assert "Traceback" in failed.fail_reason


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (math.nan, "nan"),
        (math.inf, "inf"),
        ("0.5", "type str"),
        (None, "type NoneType"),
        (np.array([1.0, 2.0]), "ndarray"),
    ],
)
def test_bad_return_values_fail_with_reason(bad, needle):
    study = Study(name="bad", seed=0)

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        return bad if x < 2 else x

    with pytest.raises(AllTrialsFailedError):
        study.optimize(objective, n_trials=2)
    for t in study.trials:
        assert t.state is TrialState.FAIL
        assert needle in t.fail_reason


def test_numpy_scalar_return_is_accepted():
    study = Study(name="np", seed=0)
    study.optimize(lambda t: np.float32(t.suggest_float("x", 0, 1)), n_trials=3)
    assert all(t.state is TrialState.COMPLETE for t in study.trials)


def test_all_trials_failing_raises_with_hint():
    def objective(trial):
        trial.suggest_int("k", 0, 3)
        raise KeyError("missing column")

    study = Study(name="allfail", seed=0)
    with pytest.raises(AllTrialsFailedError, match="All 3 trials") as info:
        study.optimize(objective, n_trials=3)
    assert "KeyError" in str(info.value)
    assert "fail_reason" in str(info.value)
    assert isinstance(info.value, RuntimeError)


def test_pruned_trial():
    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        for step in range(3):
            trial.report(x + step, step)
        if x > 0.5:
            raise TrialPruned("stopped early")
        return x

    study = Study(name="p", seed=0)
    study.optimize(objective, n_trials=12)
    pruned = study.get_trials([TrialState.PRUNED])
    assert pruned
    for t in pruned:
        assert t.intermediate == {0: t.params["x"], 1: t.params["x"] + 1, 2: t.params["x"] + 2}
        assert t.value == t.params["x"] + 2


def test_ask_tell(storage):
    study = Study(name="at", storage=storage, direction="maximize", seed=0)
    for _ in range(5):
        trial = study.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, x)
    assert study.best_value == max(t.value for t in study.trials)
    t = study.ask()
    rec = study.tell(t, math.nan)
    assert rec.state is TrialState.FAIL and "nan" in rec.fail_reason
    with pytest.raises(InvalidParameterError, match="not RUNNING"):
        study.tell(t.number, 1.0)


def test_ask_tell_with_space_and_fold_scores():
    space = Space({"k": Int(1, 9)})
    study = Study(name="atf", space=space, seed=0)
    trial = study.ask()
    assert set(trial.params) == {"k"}
    assert trial.suggest_int("k", 1, 9) == trial.params["k"]
    rec = study.tell(trial, 0.5, fold_scores=[0.4, 0.6])
    assert rec.fold_scores == (0.4, 0.6)
    assert rec.value_se == pytest.approx(0.1)


def test_enqueue_runs_first():
    space = Space({"x": Float(0.0, 1.0)})
    study = Study(name="enq", space=space, seed=0)
    study.enqueue({"x": 0.123})
    study.optimize(lambda c: c["x"], n_trials=3)
    assert study.trials[0].params == {"x": 0.123}
    assert study.trials[0].state is TrialState.COMPLETE


def test_resume_continues_numbering(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    s1 = Study(name="r", storage=url, seed=3)
    s1.optimize(quadratic, n_trials=4)
    s1.storage.close()
    s2 = Study(name="r", storage=url)
    assert s2.seed == 3
    s2.optimize(quadratic, n_trials=3)
    assert [t.number for t in s2.trials] == list(range(7))
    # resuming gives the same trials as one uninterrupted run of the same seed
    s3 = Study(name="r", seed=3)
    s3.optimize(quadratic, n_trials=7)
    assert [t.params for t in s2.trials] == [t.params for t in s3.trials]


def test_direction_mismatch_is_an_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    Study(name="m", storage=url, direction="minimize")
    with pytest.raises(StudyMismatchError, match="direction 'minimize'"):
        Study(name="m", storage=url, direction="maximize")


def test_space_mismatch_is_an_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    Study(name="m", storage=url, space=Space({"x": Float(0, 1)}))
    with pytest.raises(StudyMismatchError, match="another search space"):
        Study(name="m", storage=url, space=Space({"x": Float(0, 2)}))
    # no space given: the stored one is used
    assert Study(name="m", storage=url).space == Space({"x": Float(0, 1)})


def test_grid_sampler_stops_when_exhausted():
    space = Space({"a": Int(0, 2), "b": Categorical(["x", "y"])})
    study = Study(name="g", space=space, sampler=GridSampler(), seed=0)
    study.optimize(lambda c: c["a"], n_trials=100)
    assert len(study.trials) == 6
    study.optimize(lambda c: c["a"])  # no budget needed for a finite grid; nothing left
    assert len(study.trials) == 6


def test_grid_needs_space():
    with pytest.raises(InvalidParameterError, match="GridSampler needs"):
        Study(name="g", sampler="grid").optimize(quadratic, n_trials=2)


def test_budget_required():
    with pytest.raises(InvalidParameterError, match="needs a budget"):
        Study(name="b").optimize(quadratic)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (
            {"n_trials": 0},
            "'n_trials' parameter of Study.optimize must be an int >= 1 or None. Got 0 instead",
        ),
        ({"n_trials": 2.5}, "'n_trials'"),
        ({"n_trials": 1, "n_jobs": 0}, "'n_jobs'"),
        ({"n_trials": 1, "timeout": -1}, "'timeout'"),
        ({"n_trials": 1, "executor": object()}, "'executor'"),
    ],
)
def test_optimize_argument_errors(kwargs, needle):
    with pytest.raises(InvalidParameterError, match=needle):
        Study(name="e").optimize(quadratic, **kwargs)


def test_constructor_errors():
    with pytest.raises(InvalidParameterError, match="'direction' parameter of Study"):
        Study(name="x", direction="up")
    with pytest.raises(InvalidParameterError, match="'name'"):
        Study(name="")
    with pytest.raises(InvalidParameterError, match="'seed'"):
        Study(name="x", seed=-1)
    with pytest.raises(InvalidParameterError, match="'space'"):
        Study(name="x", space={"x": Float(0, 1)})


def test_callbacks_and_stop():
    seen = []

    def cb(study, trial):
        seen.append(trial.number)
        if len(seen) == 3:
            study.stop()

    study = Study(name="cb", seed=0)
    study.optimize(quadratic, n_trials=50, callbacks=[cb])
    assert seen == [0, 1, 2]
    assert len(study.trials) == 3


def test_timeout_stops_starting_trials():
    import time

    study = Study(name="to", seed=0)

    def slow(trial):
        time.sleep(0.05)
        return trial.suggest_float("x", 0, 1)

    study.optimize(slow, timeout=0.3)
    assert 1 <= len(study.trials) <= 10


def test_keyboard_interrupt_requeues_running_trial_and_resume_runs_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    space = Space({"x": Float(0.0, 1.0)})
    study = Study(name="k", storage=url, space=space, seed=0)
    calls = []

    def objective(config):
        calls.append(config["x"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return config["x"]

    with pytest.raises(KeyboardInterrupt):
        study.optimize(objective, n_trials=5)
    again = Study(name="k", storage=url)
    states = [t.state for t in again.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.WAITING]
    interrupted = again.trials[2]
    assert interrupted.attempt == 2
    assert "KeyboardInterrupt" in interrupted.system_attrs["interruptions"][0]
    again.optimize(lambda c: c["x"], n_trials=1)
    assert again.trials[2].state is TrialState.COMPLETE
    assert again.trials[2].params == {"x": calls[2]}


def test_stale_running_trial_from_dead_process_is_requeued(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = Study(name="s", storage=url, space=Space({"x": Float(0, 1)}), seed=0)
    # a RUNNING trial left by a driver process that no longer exists
    study.storage.create_trial(
        study._study_id,
        {"x": 0.5},
        TrialState.RUNNING,
        system_attrs={"driver": "nohost-that-exists:1"},
        lease_until=1.0,
    )
    again = Study(name="s", storage=url)
    assert again.trials[0].state is TrialState.RUNNING  # opening a study writes nothing
    again.optimize(lambda c: c["x"], n_trials=1)  # running it recovers the trial first
    t = again.trials[0]
    assert t.state is TrialState.COMPLETE and t.attempt == 2 and t.params == {"x": 0.5}
    assert "stopped before it finished" in t.system_attrs["interruptions"][0]


def test_a_live_driver_on_this_host_keeps_its_trial_even_past_the_lease(tmp_path):
    # a long inline trial cannot renew its lease; its driver (this process) is alive
    url = f"sqlite:///{tmp_path / 'live.db'}"
    study = Study(name="s", storage=url, space=Space({"x": Float(0, 1)}), seed=0)
    import os
    import socket

    study.storage.create_trial(
        study._study_id,
        {"x": 0.5},
        TrialState.RUNNING,
        system_attrs={"driver": f"{socket.gethostname()}:{os.getppid()}"},
        lease_until=1.0,
    )
    other = Study(name="s", storage=url)
    other.ask()  # runs recovery: the parent process is alive, so trial 0 stays RUNNING
    assert other.trials[0].state is TrialState.RUNNING


def test_derived_python_function_in_the_space_works_with_optimize():
    space = Space(
        {"a": Int(1, 3), "b": Int(1, 3)}, derived={"c": twiddle.Derived(lambda a, b: a * b)}
    )
    study = Study(name="d", space=space, seed=0)
    study.optimize(lambda config: config["a"], n_trials=3)
    assert all(t.state is TrialState.COMPLETE for t in study.trials)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"value": 1.0, "state": "RUNNING"}, "'state' parameter of Study.tell"),
        ({"value": 1.0, "state": "WAITING"}, "'state' parameter of Study.tell"),
        ({"value": 1.0, "fail_reason": "oops"}, "'fail_reason'"),
    ],
)
def test_tell_rejects_unfinished_states_and_stray_fail_reason(kwargs, needle):
    study = Study(name="t", seed=0)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    with pytest.raises(InvalidParameterError, match=needle):
        study.tell(trial, **kwargs)
    assert study.trials[0].state is TrialState.RUNNING
    assert study.tell(trial, 1.0, state="pruned").state is TrialState.PRUNED


def test_trial_suggest_conflict_and_report_errors():
    study = Study(name="c", seed=0)

    def objective(trial):
        trial.suggest_float("x", 0, 1)
        trial.suggest_float("x", 0, 2)
        return 0.0

    with pytest.raises(AllTrialsFailedError, match="already suggested"):
        study.optimize(objective, n_trials=1)

    def objective2(trial):
        trial.report(math.nan, 0)
        return 0.0

    with pytest.raises(AllTrialsFailedError, match=r"Trial\.report must be a finite"):
        Study(name="c2").optimize(objective2, n_trials=1)


def test_to_records_and_dataframe():
    study = Study(name="t", seed=0)
    study.optimize(quadratic, n_trials=3)
    rows = study.to_records()
    assert [r["number"] for r in rows] == [0, 1, 2]
    assert {"params_x", "params_k", "value", "state"} <= set(rows[0])
    df = study.to_dataframe()
    assert list(df["number"]) == [0, 1, 2]


def test_load_unknown_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    Study(name="a", storage=url)
    with pytest.raises(InvalidParameterError, match="Stored studies: \\['a'\\]"):
        Study.load("b", url)


def test_define_by_run_sampler_uses_inferred_space():
    # after the first complete trials, proposals come from the sampler over the common space:
    # Sobol points of the first 8 trials spread over both halves of x's range
    study = Study(name="dbr", seed=0, sampler="sobol")
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=9)
    xs = [t.params["x"] for t in study.trials[1:]]
    assert sum(x < 0.5 for x in xs) == 4
    assert [t.system_attrs.get("proposal") for t in study.trials[1:]] != [None] * 8


def test_public_api_surface():
    for name in twiddle.__all__:
        assert hasattr(twiddle, name)
