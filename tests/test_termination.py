"""The termination rule (Makarova et al., 2022): bound, threshold, stopping a study."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

import twiddle
from twiddle import InvalidParameterError, Study, Terminator
from twiddle import _termination as termination
from twiddle._termination import beta, cv_error, regret_bound

SQUARE = twiddle.Space({"a": twiddle.Float(0, 1), "b": twiddle.Float(0, 1)})


def run_with_folds(study, terminator, fold_scores_of, n_trials, seed):
    """Ask/tell loop with fold scores; returns the number of trials run."""
    rng = np.random.default_rng(seed)
    for i in range(n_trials):
        trial = study.ask()
        folds = fold_scores_of(trial.params, rng)
        rec = study.tell(trial, float(np.mean(folds)), fold_scores=folds)
        terminator(study, rec)
        if terminator.stopped_at_ is not None:
            return i + 1
    return n_trials


def test_cv_error_is_the_corrected_standard_deviation():
    folds = (0.9, 0.8, 0.85, 0.95, 0.7)
    s2 = float(np.var(folds, ddof=1))
    assert cv_error(folds) == pytest.approx(math.sqrt((1 / 5 + 1 / 4) * s2))
    # K folds: the naive standard error times sqrt(1 + K / (K - 1))
    trial = twiddle.FrozenTrial(0, twiddle.TrialState.COMPLETE, {}, 0.84, fold_scores=folds)
    assert cv_error(folds) == pytest.approx(trial.value_se * math.sqrt(1 + 5 / 4))
    assert cv_error((0.9, None, math.nan)) is None
    assert cv_error(()) is None


def test_beta_grows_slowly_with_trials_and_dimension():
    assert beta(20, 2) == pytest.approx(0.4 * math.log(2 * 400 * math.pi**2 / 0.6))
    assert beta(40, 2) > beta(20, 2)
    assert beta(20, 5) > beta(20, 2)


def test_stops_on_a_flat_problem_within_fold_noise():
    # every configuration scores 0.8 up to 0.002: far below the fold noise (sd 0.03)
    def folds(params, rng):
        return list(0.8 - 0.002 * (params["a"] - 0.5) ** 2 + 0.03 * rng.standard_normal(5))

    study = Study(name="flat", direction="maximize", space=SQUARE, sampler="random", seed=0)
    stop = Terminator(min_trials=10, seed=0)
    n = run_with_folds(study, stop, folds, 60, seed=1)
    assert n < 30
    assert stop.stopped_at_ == n - 1
    n_complete, bound, limit = stop.history_[-1]
    assert n_complete == n and bound < limit
    assert "below the CV error of the best trial" in stop.reason_


def test_does_not_stop_with_clear_improvement_left():
    # a quadratic seen at a few random points: the optimum is far better than any of
    # them, and the fold noise (sd 0.01) is small against the values' spread
    space = twiddle.Space({"a": twiddle.Float(-3, 3), "b": twiddle.Float(-3, 3)})

    def folds(params, rng):
        f = (params["a"] - 0.7) ** 2 + (params["b"] + 0.4) ** 2
        return list(f + 0.01 * rng.standard_normal(5))

    for seed in range(3):
        study = Study(name="bowl", space=space, sampler="random", seed=seed)
        stop = Terminator(min_trials=5, seed=seed)
        assert run_with_folds(study, stop, folds, 10, seed=seed) == 10
        assert stop.stopped_at_ is None and stop.reason_ is None
        assert len(stop.history_) == 6
        best = study.best_value
        for _, bound, limit in stop.history_:
            assert bound > 10 * limit
        assert stop.history_[-1][1] > 0.5 * best  # the bound sees most of the true gap


def test_bound_covers_the_true_regret_in_most_seeds():
    # A smooth 2-d function with a known optimum, seen without noise at n random
    # points. With beta scaled down by 5 (as in the paper) the bound is a heuristic,
    # not a guarantee: over 20 seeds it must hold in at least 16 (measured: 20 of 20
    # at n = 10, 20 and 40). It must also be informative: far from vacuous, and
    # shrinking as points are added.
    def f(U):
        return np.sum((U - 0.3) ** 2, axis=1) + 0.3 * np.sin(6 * U[:, 0])

    grid = np.stack(np.meshgrid(np.linspace(0, 1, 401), np.linspace(0, 1, 401)), -1)
    f_star = float(f(grid.reshape(-1, 2)).min())
    medians = []
    for n in (10, 30):
        covered, ratios = 0, []
        for seed in range(20):
            U = np.random.default_rng(seed).random((n, 2))
            y = f(U)
            bound, _ = regret_bound(U, y, SQUARE, np.random.default_rng(100 + seed))
            regret = float(y.min()) - f_star
            covered += bound >= regret
            ratios.append(bound / np.ptp(y))
        assert covered >= 16, (n, covered)
        medians.append(float(np.median(ratios)))
    assert medians[1] < medians[0] < 1.0


def test_bound_is_zero_for_constant_values():
    U = np.random.default_rng(0).random((5, 2))
    bound, theta = regret_bound(U, np.ones(5), SQUARE, np.random.default_rng(0))
    assert bound == 0.0 and theta is None


def test_maximize_mirrors_minimize():
    configs = [{"a": a, "b": b} for a, b in np.random.default_rng(3).random((12, 2))]

    def folds(params, rng):
        return list(np.sin(3 * params["a"]) + params["b"] + 0.05 * rng.standard_normal(5))

    histories = []
    for direction, sign in (("minimize", 1.0), ("maximize", -1.0)):
        study = Study(name=direction, direction=direction, space=SQUARE, seed=0)
        for c in configs:
            study.enqueue(c)
        stop = Terminator(min_trials=10, threshold=1e-9, seed=0)
        run_with_folds(study, stop, lambda p, r, s=sign: [s * v for v in folds(p, r)], 12, 5)
        histories.append(stop.history_)
    np.testing.assert_allclose(np.array(histories[0]), np.array(histories[1]), rtol=1e-6)


def test_stops_optimize_with_a_threshold_and_define_by_run():
    def objective(trial):
        return 0.01 * (trial.suggest_float("x", -1, 1) - 0.2) ** 2

    study = Study(name="dbr", seed=0)
    stop = Terminator(min_trials=8, threshold=0.05, seed=0)
    study.optimize(objective, n_trials=40, callbacks=[stop])
    assert len(study.trials) == 8 == stop.stopped_at_ + 1
    assert "below the given threshold, 0.05" in stop.reason_


def test_never_stops_without_fold_scores_or_threshold():
    study = Study(name="plain", space=SQUARE, sampler="random", seed=0)
    stop = Terminator(min_trials=3, seed=0)
    study.optimize(lambda c: 0.0 * c["a"], n_trials=6, callbacks=[stop])
    assert len(study.trials) == 6
    assert stop.history_ == [] and stop.stopped_at_ is None


def test_same_seed_same_decisions():
    def folds(params, rng):
        return list(params["a"] + 0.1 * rng.standard_normal(5))

    histories = []
    for _ in range(2):
        study = Study(name="again", space=SQUARE, sampler="random", seed=4)
        stop = Terminator(min_trials=6, threshold=1e-9, seed=7)
        run_with_folds(study, stop, folds, 9, seed=2)
        histories.append(stop.history_)
    assert histories[0] == histories[1]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"min_trials": 1}, "'min_trials' parameter of Terminator must be an int >= 2"),
        ({"min_trials": 2.5}, "'min_trials'"),
        ({"min_trials": True}, "'min_trials'"),
        ({"threshold": 0.0}, "'threshold' parameter of Terminator must be a finite number > 0"),
        ({"threshold": -1}, "'threshold'"),
        ({"threshold": math.nan}, "'threshold'"),
        ({"threshold": "0.1"}, "'threshold'"),
        ({"seed": -1}, "'seed' parameter of Terminator"),
    ],
)
def test_invalid_arguments(kwargs, needle):
    with pytest.raises(InvalidParameterError, match=needle):
        Terminator(**kwargs)


def test_arguments_are_keyword_only_and_stored_unchanged():
    with pytest.raises(TypeError):
        Terminator(20)  # type: ignore[misc]
    stop = Terminator(min_trials=5, threshold=0.1, seed=3)
    assert (stop.min_trials, stop.threshold, stop.seed) == (5, 0.1, 3)
    assert repr(stop) == "Terminator(min_trials=5, threshold=0.1)"


def test_stops_tune_before_the_budget():
    from sklearn.datasets import load_iris
    from sklearn.neighbors import KNeighborsClassifier

    X, y = load_iris(return_X_y=True)
    space = twiddle.Space({"n_neighbors": twiddle.Int(3, 30)})
    stop = Terminator(min_trials=10, seed=0)
    res = twiddle.tune(
        KNeighborsClassifier(),
        space,
        X,
        y,
        cv=5,
        n_trials=40,
        sampler="random",
        seed=0,
        callbacks=[stop],
        refit=False,
    )
    n = len(res.study_.trials)
    assert 10 <= n < 40
    assert stop.stopped_at_ == n - 1
    _, bound, limit = stop.history_[-1]
    assert bound < limit == pytest.approx(cv_error(res.best_trial_.fold_scores))


def test_docstring_example():
    result = doctest.testmod(termination, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
