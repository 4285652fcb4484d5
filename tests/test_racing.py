"""Fold racing: the decision rule (false-stop rate, power, safety) and tune(scheduler=...)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import twiddle
from twiddle import FoldRacing, InvalidParameterError, TrialState


# ----------------------------------------------------------------------------------
# The decision rule on synthetic fold scores
# ----------------------------------------------------------------------------------
def _race(racing: FoldRacing, chal: np.ndarray, inc: np.ndarray, maximize: bool = True) -> int:
    """Feed the challenger's folds one by one; the fold count at which it is stopped, or 0."""
    for k in range(1, len(chal)):
        if racing.decide(list(chal[:k]), list(inc), maximize=maximize)["stop"]:
            return k
    return 0


def _scores(
    rng: np.random.Generator, n_folds: int, gap: float, fold_sd: float = 0.03, noise: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """Correlated fold scores: a shared fold effect plus independent noise per configuration."""
    fold = rng.normal(0.0, fold_sd, n_folds)
    inc = 0.9 + fold + rng.normal(0.0, noise, n_folds)
    chal = 0.9 - gap + fold + rng.normal(0.0, noise, n_folds)
    return chal, inc


@pytest.mark.parametrize("n_folds", [5, 10])
def test_false_stop_rate_under_the_null_is_at_most_alpha(n_folds: int) -> None:
    racing = FoldRacing(alpha=0.05)
    rng = np.random.default_rng(12345 + n_folds)
    n = 5000
    stops = sum(_race(racing, *_scores(rng, n_folds, gap=0.0)) > 0 for _ in range(n))
    rate = stops / n
    tolerance = 3 * math.sqrt(racing.alpha * (1 - racing.alpha) / n)
    assert rate <= racing.alpha + tolerance, rate
    # the per-look test is not vacuous: some null races are stopped
    assert stops > 0


def test_false_stop_rate_for_minimisation_and_other_levels() -> None:
    racing = FoldRacing(alpha=0.2, min_folds=2)
    rng = np.random.default_rng(7)
    n = 1500
    stops = 0
    for _ in range(n):
        chal, inc = _scores(rng, 5, gap=0.0)
        stops += _race(racing, -chal, -inc, maximize=False) > 0
    rate = stops / n
    assert rate <= 0.2 + 3 * math.sqrt(0.2 * 0.8 / n), rate


@pytest.mark.parametrize("n_folds", [5, 10])
def test_clearly_worse_configuration_is_stopped_early(n_folds: int) -> None:
    racing = FoldRacing()
    rng = np.random.default_rng(99)
    n = 500
    folds = [_race(racing, *_scores(rng, n_folds, gap=0.05)) for _ in range(n)]
    stopped = [k for k in folds if k > 0]
    assert len(stopped) / n >= 0.95
    assert np.mean(stopped) <= racing.min_folds + 1


def test_never_stops_a_challenger_whose_running_mean_is_not_worse() -> None:
    racing = FoldRacing(alpha=0.5, min_folds=2)  # a lax level makes stopping easy
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(3000):
        n_folds = int(rng.integers(3, 11))
        k = int(rng.integers(2, n_folds))
        inc = rng.normal(0.8, 0.05, n_folds)
        # worse on most folds, but better on average over the folds done
        chal = inc[:k] - rng.exponential(0.01, k)
        chal[int(rng.integers(k))] += 0.5
        if np.mean(chal) < np.mean(inc[:k]):
            continue
        checked += 1
        decision = racing.decide(list(chal), list(inc))
        assert not decision["stop"], decision
        assert decision["mean"] >= decision["incumbent_mean"]
    assert checked > 1000
    # ties on every fold, and an identical copy of the incumbent, go on
    inc = [0.9, 0.8, 0.85, 0.95, 0.9]
    assert not racing.decide(inc[:3], inc)["stop"]
    assert not racing.decide([0.91, 0.81, 0.86], inc)["stop"]


def test_compares_on_the_same_folds_when_folds_arrive_out_of_order() -> None:
    racing = FoldRacing(min_folds=3)
    inc = [0.9, 0.5, 0.9, 0.9, 0.5]
    # done folds 1, 3, 4: compared with 0.5, 0.9, 0.5 (mean 0.633), not the first three folds
    chal: list[float | None] = [None, 0.51, None, 0.91, 0.52]
    decision = racing.decide(chal, inc)
    assert decision["folds"] == 3
    assert decision["incumbent_mean"] == pytest.approx((0.5 + 0.9 + 0.5) / 3)
    assert not decision["stop"]
    worse: list[float | None] = [None, 0.30, None, 0.71, 0.31]
    decision = racing.decide(worse, inc)
    assert decision["stop"] and decision["p_value"] < decision["threshold"]


def test_decision_record_and_edge_cases() -> None:
    racing = FoldRacing(alpha=0.05, min_folds=3)
    assert racing.level(5) == pytest.approx(0.025)
    assert racing.level(10) == pytest.approx(0.05 / 7)
    assert racing.level(3) == 0.0
    inc = [0.9, 0.91, 0.92, 0.9, 0.93]
    d = racing.decide([0.5, 0.52, 0.49], inc)
    assert d["stop"] and d["folds"] == 3 and d["n_folds"] == 5
    assert d["statistic"] > 0 and 0 <= d["p_value"] < d["threshold"]
    # too few folds, or all folds done: no look
    assert not racing.decide([0.1, 0.1], inc)["stop"]
    assert not racing.decide([0.1] * 5, inc)["stop"]
    # non-finite scores: no decision
    assert not racing.decide([0.1, math.nan, 0.1], inc)["stop"]
    assert not racing.decide([0.1, 0.1, 0.1], [0.9, math.nan, 0.9, 0.9, 0.9])["stop"]
    # the same deficit on every fold (no spread) is a stop
    assert racing.decide([0.8, 0.81, 0.82], inc)["stop"]


@pytest.mark.parametrize(
    "kwargs", [{"alpha": 0}, {"alpha": 1.0}, {"alpha": "0.05"}, {"min_folds": 1}]
)
def test_invalid_parameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameterError, match="parameter of FoldRacing must be"):
        FoldRacing(**kwargs)


# ----------------------------------------------------------------------------------
# tune(..., scheduler="racing") end to end
# ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return X, y


def _estimator() -> Any:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(StandardScaler(), SVC())


SPACE = twiddle.Space(
    {
        "svc__C": twiddle.Float(1e-3, 1e3, log=True),
        "svc__gamma": twiddle.Float(1e-4, 1e1, log=True),
    }
)


def _check_records(study: twiddle.Study, n_folds: int) -> None:
    for t in study.trials:
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED), t
        assert t.lease_until is None and t.datetime_complete is not None
        assert len(t.fold_scores) == n_folds
        done = [s for s in t.fold_scores if s is not None]
        if t.state is TrialState.COMPLETE:
            assert len(done) == n_folds and "racing" not in t.system_attrs
        else:
            racing = t.system_attrs["racing"]
            assert 3 <= len(done) < n_folds == racing["n_folds"]
            assert racing["folds"] == len(done)
            assert racing["p_value"] < racing["threshold"]
            assert t.value == pytest.approx(np.mean(done))
            inc = study.trials[racing["incumbent"]]
            assert inc.state is TrialState.COMPLETE
            same = [inc.fold_scores[j] for j, s in enumerate(t.fold_scores) if s is not None]
            assert t.value < np.mean(same)  # worse than the incumbent on the same folds


def test_tune_with_racing_prunes_and_keeps_the_best(data: Any, tmp_path: Any) -> None:
    X, y = data
    from sklearn.metrics import accuracy_score

    fits = {"n": 0}

    def counting_accuracy(est: Any, X_: Any, y_: Any) -> float:
        fits["n"] += 1
        return float(accuracy_score(y_, est.predict(X_)))

    common: dict[str, Any] = {"cv": 5, "n_trials": 15, "seed": 0, "sampler": "random"}
    common.update(refit=False, scoring=counting_accuracy)
    plain = twiddle.tune(_estimator(), SPACE, X, y, **common)
    assert fits["n"] == 15 * 5
    fits["n"] = 0
    url = f"sqlite:///{tmp_path / 'racing.db'}"
    raced = twiddle.tune(
        _estimator(), SPACE, X, y, scheduler="racing", storage=url, study_name="r", **common
    )
    study = raced.study_
    pruned = study.get_trials([TrialState.PRUNED])
    assert len(pruned) >= 3
    n_fits = sum(t.n_folds_done for t in study.trials)
    assert fits["n"] == n_fits < 15 * 5  # queued folds of stopped trials never ran
    assert raced.best_params_ == plain.best_params_
    assert raced.best_score_ == pytest.approx(plain.best_score_)
    _check_records(study, 5)
    # storage agrees with the driver's view
    reloaded = twiddle.Study.load("r", url)
    assert reloaded.trials == study.trials
    table = raced.cv_results_
    assert table["state"].count("PRUNED") == len(pruned)


@pytest.mark.slow
def test_tune_with_racing_on_two_workers(data: Any) -> None:
    X, y = data
    res = twiddle.tune(
        _estimator(),
        SPACE,
        X,
        y,
        cv=5,
        n_trials=15,
        seed=0,
        sampler="random",
        refit=False,
        n_jobs=2,
        scheduler=twiddle.FoldRacing(alpha=0.05),
    )
    study = res.study_
    assert not study.get_trials([TrialState.RUNNING, TrialState.WAITING])
    assert study.get_trials([TrialState.PRUNED])
    assert sum(t.n_folds_done for t in study.trials) < 15 * 5
    _check_records(study, 5)


def test_tune_rejects_an_unknown_scheduler(data: Any) -> None:
    X, y = data
    with pytest.raises(InvalidParameterError, match=r"'scheduler' parameter of twiddle\.tune"):
        twiddle.tune(_estimator(), SPACE, X, y, scheduler="median", n_trials=2)
