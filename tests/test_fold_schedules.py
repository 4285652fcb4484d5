"""Learning-curve schedulers inside cross-validation: folds as the resource.

The estimator here scores ``quality + offset of the fold``, so every trial's mean over
its first m folds is its quality plus the same number: the decisions of successive
halving can be worked out by hand (``_expected_folds``, written from the rule's
definition in Li et al., 2020, not from twiddle's code) and compared with what
``twiddle.tune`` did.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator
from sklearn.model_selection import KFold

import twiddle
from twiddle import TrialState
from twiddle._errors import InvalidParameterError
from twiddle._schedulers import fold_curve
from twiddle.sklearn import TuneSearchCV

X = (np.arange(100, dtype=float) / 100.0).reshape(-1, 1)
Y = np.zeros(100)
FOLDS = KFold(5)  # unshuffled: fold j tests rows 20j..20j+19
SPACE = twiddle.Space({"quality": twiddle.Float(0.0, 1.0)})


class Quality(BaseEstimator):  # type: ignore[misc]
    """Scores ``quality`` plus a small offset set by the test fold's rows."""

    def __init__(self, quality: float = 0.5) -> None:
        self.quality = quality

    def fit(self, X: Any, y: Any) -> Quality:
        self.fitted_ = True
        return self

    def score(self, X: Any, y: Any) -> float:
        return float(self.quality + 0.01 * np.mean(X))


def _expected_folds(qualities: list[float], rungs: tuple[int, ...], eta: int, k: int) -> list[int]:
    """Folds each trial runs under ASHA, trials one after another (higher is better)."""
    at_rung: dict[int, list[float]] = {r: [] for r in rungs}
    out = []
    for q in qualities:
        folds = k
        for r in rungs:
            values = [*at_rung[r], q]
            at_rung[r].append(q)
            keep = max(1, len(values) // eta)
            if q < sorted(values, reverse=True)[keep - 1]:
                folds = r
                break
        out.append(folds)
    return out


def _tune(scheduler: Any, n_trials: int, seed: int, **kwargs: Any) -> Any:
    """``twiddle.tune`` of the Quality estimator with the random sampler, no refit."""
    return twiddle.tune(
        Quality(),
        SPACE,
        X,
        Y,
        cv=FOLDS,
        n_trials=n_trials,
        sampler="random",
        seed=seed,
        refit=False,
        scheduler=scheduler,
        **kwargs,
    )


def test_fold_curve_is_the_running_mean_of_the_folds_done_in_order() -> None:
    assert fold_curve([0.5, 0.7, None, 0.9]) == {1: 0.5, 2: pytest.approx(0.6)}
    assert fold_curve([None, 0.7]) == {}
    assert fold_curve([0.5, math.nan, 0.9]) == {1: 0.5}
    assert fold_curve([0.2, 0.4, 0.6]) == {1: 0.2, 2: pytest.approx(0.3), 3: pytest.approx(0.4)}


def test_tune_with_successive_halving_over_folds_follows_the_rule() -> None:
    asha = twiddle.SuccessiveHalving(min_resource=1, reduction_factor=2, max_resource=5)
    res = _tune(asha, n_trials=25, seed=0)
    trials = res.study_.trials
    qualities = [t.params["quality"] for t in trials]
    expected = _expected_folds(qualities, (1, 2, 4), 2, 5)
    assert [t.n_folds_done for t in trials] == expected
    assert sum(expected) < 0.6 * 25 * 5  # the rule saves fits here
    for t, folds in zip(trials, expected, strict=True):
        assert t.state is (TrialState.COMPLETE if folds == 5 else TrialState.PRUNED)
        done = [s for s in t.fold_scores if s is not None]
        assert len(done) == folds and t.value == pytest.approx(np.mean(done))
        assert t.intermediate == pytest.approx(fold_curve(t.fold_scores))
        if t.state is TrialState.PRUNED:
            assert t.system_attrs["schedule"]["rung"] == folds
            assert t.system_attrs["schedule"]["rule"] == "SuccessiveHalving"
    # the best quality runs all its folds and is chosen
    assert res.best_params_["quality"] == max(qualities)
    table = res.cv_results_
    pruned = [i for i, s in enumerate(table["state"]) if s == "PRUNED"]
    assert pruned and all(math.isnan(table["split4_test_score"][i]) for i in pruned)


def test_a_resumed_study_keeps_comparing_with_its_earlier_trials(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'folds.db'}"
    asha = twiddle.SuccessiveHalving(min_resource=1, reduction_factor=2, max_resource=5)
    _tune(asha, n_trials=10, seed=0, storage=url, study_name="s")
    res = _tune(asha, n_trials=10, seed=0, storage=url, study_name="s")
    trials = res.study_.trials
    expected = _expected_folds([t.params["quality"] for t in trials], (1, 2, 4), 2, 5)
    assert [t.n_folds_done for t in trials] == expected


def test_median_rule_and_hyperband_over_folds() -> None:
    for scheduler in ("median", twiddle.Hyperband(min_resource=1, max_resource=5)):
        res = _tune(scheduler, n_trials=20, seed=1)
        trials = res.study_.trials
        assert any(t.state is TrialState.PRUNED for t in trials)
        best = max(trials, key=lambda t: t.params["quality"])
        assert best.state is TrialState.COMPLETE  # never stops the best
        assert res.best_params_ == best.params


@pytest.mark.slow
def test_halving_over_folds_with_two_workers() -> None:
    res = _tune("halving", n_trials=20, seed=2, n_jobs=2)
    trials = res.study_.trials
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert sum(t.n_folds_done for t in trials) < 20 * 5
    best = max(trials, key=lambda t: t.params["quality"])
    assert best.state is TrialState.COMPLETE and res.best_params_ == best.params


def test_tune_search_cv_takes_halving_and_median() -> None:
    for scheduler in ("halving", "median"):
        search = TuneSearchCV(
            Quality(), SPACE, cv=FOLDS, n_trials=15, random_state=0, scheduler=scheduler
        )
        search.set_params(sampler="random").fit(X, Y)
        res = search.cv_results_
        pruned = [i for i, s in enumerate(res["state"]) if s == "PRUNED"]
        assert pruned
        assert search.n_fold_fits_ == sum(
            int(np.isfinite(res[f"split{k}_test_score"][i]))
            for i in range(len(res["params"]))
            for k in range(5)
        )
        assert res["state"][search.best_index_] == "COMPLETE"


def test_unknown_fold_scheduler_names_the_choices() -> None:
    with pytest.raises(InvalidParameterError, match="'racing', 'halving', 'median'"):
        twiddle.tune(Quality(), SPACE, X, Y, cv=FOLDS, n_trials=2, scheduler="asha")
