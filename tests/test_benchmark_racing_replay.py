"""The racing replay makes the decisions of a live racing run, from recorded fold scores."""

from __future__ import annotations

import warnings

import pytest
from benchmarks.bo.ml import MLTask, task_data
from benchmarks.racing_replay import collect_one, replay_one

import twiddle


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.05, 0.3])
def test_replay_agrees_with_a_live_run(alpha: float) -> None:
    name, k, seed, n_trials = "dt-wine", 5, 3, 25
    record = collect_one(name, k, seed, n_trials)
    racing = twiddle.FoldRacing(alpha=alpha)
    replayed = replay_one(record, racing)

    task = MLTask(name)
    est, space, prefix = task.addressed()
    X, _, y, _ = task_data(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        live = twiddle.tune(
            est,
            space,
            X,
            y,
            cv=task.folds(k),
            scoring=task.scoring,
            n_trials=n_trials,
            sampler="random",
            seed=seed,
            refit=False,
            scheduler=racing,
        )
    trials = live.study_.trials
    pruned = [t.n_folds_done for t in trials if t.state is twiddle.TrialState.PRUNED]
    assert pruned, "the run should stop some trials for the comparison to mean something"
    assert replayed["pruned_at"] == pruned
    assert replayed["fits"] == sum(t.n_folds_done for t in trials)
    assert replayed["best_number"] == live.study_.best_trial.number
    config = {key[len(prefix) :]: v for key, v in live.best_params_.items()}
    assert replayed["best_config"] == dict(sorted(config.items()))
