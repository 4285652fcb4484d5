"""Studies on worker processes: same results as inline, a dying worker fails only its trial."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.svm import SVC

import twiddle
from twiddle import Float, Space, Study, TrialState


def test_process_workers_give_the_same_trials_as_inline():
    # random/Sobol proposals depend only on the seed and the trial number, so a parallel
    # run of a deterministic objective gives the same records as an inline one
    space = Space({"x": Float(-3.0, 3.0), "y": Float(-3.0, 3.0)})
    offset = 0.5  # captured by the lambda: objectives travel by cloudpickle

    def run(n_jobs):
        s = Study(name="p", space=space, seed=4)
        s.optimize(lambda c: (c["x"] - offset) ** 2 + c["y"] ** 2, n_trials=8, n_jobs=n_jobs)
        return sorted((t.number, t.params["x"], t.value) for t in s.trials)

    assert run(2) == run(1)


def test_sigkilled_worker_fails_only_its_own_trial():
    space = Space({"x": Float(0.0, 1.0)})
    study = Study(name="kill", space=space, sampler="random", seed=0)
    study.enqueue({"x": 0.999})  # trial 0 kills its worker

    def objective(config):
        if config["x"] == 0.999:
            os.kill(os.getpid(), signal.SIGKILL)
        return config["x"]

    study.optimize(objective, n_trials=5, n_jobs=2)
    states = [t.state for t in study.trials]
    assert states[0] is TrialState.FAIL
    assert "SIGKILL" in study.trials[0].fail_reason
    assert states[1:] == [TrialState.COMPLETE] * 4
    workers = {t.worker for t in study.trials[1:]}
    assert all(w and ":" in w for w in workers)


@pytest.mark.slow
def test_tune_with_two_workers_matches_inline():
    X, y = load_iris(return_X_y=True)
    space = Space({"C": Float(1e-2, 1e2, log=True)})
    a = twiddle.tune(SVC(), space, X, y, cv=3, n_trials=4, seed=2, n_jobs=2, refit=False)
    b = twiddle.tune(SVC(), space, X, y, cv=3, n_trials=4, seed=2, n_jobs=1, refit=False)
    assert [t.fold_scores for t in a.study_.trials] == [t.fold_scores for t in b.study_.trials]
    assert a.best_params_ == b.best_params_


def test_any_executor_is_used_as_is():
    space = Space({"x": Float(0.0, 1.0)})
    study = Study(name="ex", space=space, seed=0)
    with cf.ThreadPoolExecutor(2) as pool:
        study.optimize(lambda c: c["x"], n_trials=6, executor=pool)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6


def test_unpicklable_result_fails_trial_not_study():
    space = Space({"x": Float(0.0, 1.0)})
    study = Study(name="np", space=space, seed=0)

    def objective(config):
        return np.float64(config["x"])

    study.optimize(objective, n_trials=2, n_jobs=2)
    assert all(t.state is TrialState.COMPLETE for t in study.trials)


@pytest.mark.slow
def test_keyboard_interrupt_with_workers_leaves_storage_consistent(tmp_path):
    url = f"sqlite:///{tmp_path / 'ki.db'}"
    space = Space({"x": Float(0.0, 1.0)})
    study = Study(name="ki", storage=url, space=space, seed=0)

    def cb(study, trial):
        if trial.number == 1:
            raise KeyboardInterrupt

    import time

    def objective(config):
        time.sleep(0.2)
        return config["x"]

    with pytest.raises(KeyboardInterrupt):
        study.optimize(objective, n_trials=6, n_jobs=2, callbacks=[cb])
    again = Study(name="ki", storage=url)
    assert TrialState.RUNNING not in {t.state for t in again.trials}
    again.optimize(lambda c: c["x"], n_trials=6)
    assert TrialState.WAITING not in {t.state for t in again.trials}


def test_a_broken_executor_interrupts_the_run_and_requeues_healthy_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'broken.db'}"
    space = Space({"x": Float(0.0, 1.0)})
    study = Study(name="b", storage=url, space=space, sampler="random", seed=0)

    def objective(config):
        return config["x"]

    with cf.ProcessPoolExecutor(1) as pool:
        pool.submit(os._exit, 1)  # a worker dies: the standard pool breaks as a whole
        with pytest.raises(cf.process.BrokenProcessPool):
            study.optimize(objective, n_trials=3, executor=pool)
    again = Study(name="b", storage=url)
    states = {t.state for t in again.trials}
    assert TrialState.FAIL not in states and TrialState.RUNNING not in states
    again.optimize(objective, n_trials=3)
    assert sum(t.state is TrialState.COMPLETE for t in again.trials) >= 3
