"""Nested cross-validation: unbiased on noise, equal to cross-validating the search."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold, KFold
from sklearn.model_selection import cross_validate as sk_cross_validate
from sklearn.tree import DecisionTreeClassifier

import twiddle
from twiddle import Categorical, Int, InvalidParameterError, NestedCVResult, Space
from twiddle.sklearn import TuneSearchCV

DIABETES = load_diabetes(return_X_y=True)
IRIS = load_iris(return_X_y=True)
TREE_SPACE = Space({"max_depth": Int(1, 6)})


@pytest.mark.slow
def test_pure_noise_outer_estimate_is_chance_and_best_score_is_optimistic() -> None:
    """y independent of X: any procedure scores 0.5 on new data; best_score_ overstates it."""
    outer_means, optimism = [], []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(100, 5))
        y = rng.permutation(np.repeat([0, 1], 50))
        res = twiddle.nested_cv(
            DecisionTreeClassifier(random_state=0),
            TREE_SPACE,
            X,
            y,
            outer_cv=5,
            inner_cv=3,
            n_trials=6,
            sampler="grid",
            seed=seed,
        )
        assert abs(res.mean_ - 0.5) < 5 * res.se_ + 1e-9  # each run: a few outer-fold SEs
        outer_means.append(res.mean_)
        optimism.append(res.optimism_)
    m, se = np.mean(outer_means), np.std(outer_means, ddof=1) / math.sqrt(8)
    assert abs(m - 0.5) < 3 * se + 0.01
    o, o_se = np.mean(optimism), np.std(optimism, ddof=1) / math.sqrt(8)
    assert o > 2 * o_se > 0  # the inner best score is biased upwards


def test_learnable_task_equals_cross_validating_the_search() -> None:
    """Same folds, deterministic search: the outer scores are the search's CV scores."""
    X, y = DIABETES
    space = Space({"alpha": Categorical([0.01, 0.1, 1.0, 10.0])})
    res = twiddle.nested_cv(
        Ridge(), space, X, y, outer_cv=4, inner_cv=3, n_trials=4, sampler="grid", seed=0
    )
    search = TuneSearchCV(Ridge(), space, cv=3, n_trials=4, sampler="grid", random_state=0)
    ref = sk_cross_validate(search, X, y, cv=4, return_estimator=True)
    np.testing.assert_allclose(res.outer_scores_, ref["test_score"], rtol=1e-12)
    assert res.best_params_per_fold_ == [e.best_params_ for e in ref["estimator"]]
    np.testing.assert_allclose(res.inner_best_scores_, [e.best_score_ for e in ref["estimator"]])
    assert 0.3 < res.mean_ < 0.6  # diabetes R^2 of a linear model


def test_learnable_classifier_is_close_to_cross_validated_search() -> None:
    X, y = IRIS
    space = Space({"max_depth": Int(1, 4)})
    est = DecisionTreeClassifier(random_state=0)
    res = twiddle.nested_cv(est, space, X, y, outer_cv=3, inner_cv=3, n_trials=4, sampler="grid")
    search = TuneSearchCV(est, space, cv=3, n_trials=4, sampler="grid")
    ref = sk_cross_validate(search, X, y, cv=3)
    assert res.mean_ == pytest.approx(ref["test_score"].mean(), abs=0.04)
    assert res.mean_ > 0.9


def test_result_attributes_repr_and_summary() -> None:
    X, y = IRIS
    res = twiddle.nested_cv(
        DecisionTreeClassifier(random_state=0),
        Space({"max_depth": Int(1, 3)}),
        X,
        y,
        outer_cv=3,
        inner_cv=3,
        n_trials=3,
        sampler="grid",
        seed=1,
    )
    assert isinstance(res, NestedCVResult)
    assert res.outer_scores_.shape == res.inner_best_scores_.shape == (3,)
    assert len(res.best_params_per_fold_) == 3
    assert res.mean_ == pytest.approx(res.outer_scores_.mean())
    assert res.std_ == pytest.approx(res.outer_scores_.std(ddof=1))
    assert res.se_ == pytest.approx(res.std_ / math.sqrt(3))
    assert res.optimism_ == pytest.approx(res.inner_best_scores_.mean() - res.mean_)
    assert re.match(r"NestedCVResult\(score: 0\.\d+ ± .* over 3 outer folds; optimism", repr(res))
    text = res.summary()
    assert "outer estimate" in text and "optimism" in text
    assert text.count("\n  fold ") == 3


def test_same_seed_same_result_and_groups() -> None:
    X, y = DIABETES
    X, y = X[:120], y[:120]
    space = Space({"alpha": twiddle.Float(1e-3, 10.0, log=True)})
    kw: dict[str, Any] = {"outer_cv": 3, "inner_cv": 3, "n_trials": 3, "sampler": "random"}
    a = twiddle.nested_cv(Ridge(), space, X, y, seed=5, **kw)
    b = twiddle.nested_cv(Ridge(), space, X, y, seed=5, **kw)
    np.testing.assert_array_equal(a.outer_scores_, b.outer_scores_)
    assert a.best_params_per_fold_ == b.best_params_per_fold_
    groups = np.arange(120) // 10
    g = twiddle.nested_cv(Ridge(), space, X, y, seed=5, groups=groups, **kw)
    ref_scores = []
    for train, test in GroupKFold(3).split(X, y, groups):
        alpha = g.best_params_per_fold_[len(ref_scores)]["alpha"]
        ref_scores.append(Ridge(alpha=alpha).fit(X[train], y[train]).score(X[test], y[test]))
    np.testing.assert_allclose(g.outer_scores_, ref_scores)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_trials": 0}, "The 'n_trials' parameter of twiddle.nested_cv must be an int >= 1."),
        ({"inner_cv": 1}, "The 'inner_cv' parameter of twiddle.nested_cv must be an int >= 2."),
        ({"inner_cv": [([0], [1])]}, "The 'inner_cv' parameter of twiddle.nested_cv must be"),
        ({"scoring": ["r2"]}, "The 'scoring' parameter of twiddle.nested_cv must be"),
        ({"seed": -1}, "The 'seed' parameter of twiddle.nested_cv must be"),
        ({"outer_cv": KFold(200)}, "The folds cannot be made"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    X, y = DIABETES
    with pytest.raises(InvalidParameterError, match=re.escape(message)):
        twiddle.nested_cv(Ridge(), Space({"alpha": Categorical([1.0])}), X[:50], y[:50], **kwargs)
    with pytest.raises(InvalidParameterError, match=r"must be a twiddle\.Space"):
        twiddle.nested_cv(Ridge(), {"alpha": [1.0]}, X, y)  # type: ignore[arg-type]


@pytest.mark.slow
def test_docstring_examples() -> None:
    import doctest

    from twiddle import _nested

    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(_nested, optionflags=flags)
    assert result.attempted > 0 and result.failed == 0
