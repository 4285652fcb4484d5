"""The racing replay makes the decisions of a live racing run, from recorded fold scores."""

from __future__ import annotations

import pytest
from benchmarks.racing import tune_task
from benchmarks.racing_replay import collect_one, repeated_rows, replay_one

import twiddle


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.05, 0.3])
def test_replay_agrees_with_a_live_run(alpha: float) -> None:
    name, k, seed, n_trials = "dt-wine", 5, 3, 25
    record = collect_one(name, k, seed, n_trials)
    racing = twiddle.FoldRacing(alpha=alpha)
    replayed = replay_one(record, racing)

    live, prefix, _ = tune_task(name, k, "random", seed, n_trials, racing)
    trials = live.study_.trials
    pruned = [t.n_folds_done for t in trials if t.state is twiddle.TrialState.PRUNED]
    assert pruned, "the run should stop some trials for the comparison to mean something"
    assert replayed["pruned_at"] == pruned
    assert replayed["fits"] == sum(t.n_folds_done for t in trials)
    assert replayed["best_number"] == live.study_.best_trial.number
    config = {key[len(prefix) :]: v for key, v in live.best_params_.items()}
    assert replayed["best_config"] == dict(sorted(config.items()))


def test_repeated_rows_counts_configurations_that_repeat_an_earlier_ones_fold_scores() -> None:
    scores = [[0.9, 0.8], [0.9, 0.8], [0.8, 0.9], [0.9, 0.8], [0.7, 0.7]]
    record = {"trials": [{"fold_scores": f} for f in scores]}
    assert repeated_rows(record) == pytest.approx(2 / 5)  # the 2nd and 4th repeat the 1st
    assert repeated_rows({"trials": [{"fold_scores": [0.5, 0.6]}]}) == 0.0
