"""TuneSearchCV against scikit-learn's search classes and the estimator contract."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.datasets import load_diabetes, load_iris
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.model_selection import cross_validate as sk_cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

import twiddle
from twiddle import Categorical, Int, InvalidParameterError, Space
from twiddle.sklearn import TuneSearchCV

IRIS = load_iris(return_X_y=True)
DIABETES = load_diabetes(return_X_y=True)
#: Keys twiddle adds to scikit-learn's cv_results_ (documented on TuneSearchCV).
EXTRAS = {"se_test_score", "state", "number"}

TREE_SPACE = Space({"max_depth": Int(1, 4), "criterion": Categorical(["gini", "entropy"])})
TREE_GRID = {"max_depth": [1, 2, 3, 4], "criterion": ["gini", "entropy"]}


def _grid_pair(scoring: Any = None) -> tuple[TuneSearchCV, GridSearchCV]:
    X, y = IRIS
    est = DecisionTreeClassifier(random_state=0)
    ours = TuneSearchCV(est, TREE_SPACE, sampler="grid", n_trials=8, scoring=scoring, cv=4)
    ref = GridSearchCV(est, TREE_GRID, scoring=scoring, cv=4)
    return ours.fit(X, y), ref.fit(X, y)


@pytest.mark.parametrize("scoring", [None, "balanced_accuracy"])
def test_cv_results_keys_are_gridsearch_keys_plus_documented_extras(scoring: Any) -> None:
    ours, ref = _grid_pair(scoring)
    assert set(ref.cv_results_) <= set(ours.cv_results_)
    assert set(ours.cv_results_) - set(ref.cv_results_) == EXTRAS
    for key in ("param_max_depth", "param_criterion"):
        assert isinstance(ours.cv_results_[key], np.ma.MaskedArray)
        assert ours.cv_results_[key].dtype == ref.cv_results_[key].dtype
    assert np.all(ours.cv_results_["mean_fit_time"] > 0)
    assert ours.cv_results_["rank_test_score"].dtype == ref.cv_results_["rank_test_score"].dtype


def test_param_columns_of_conditional_dimensions_are_masked_where_inactive() -> None:
    X, y = IRIS
    space = Space(
        {
            "criterion": Categorical(["gini", "entropy"]),
            "max_depth": Int(1, 4, when={"criterion": "gini"}),
        }
    )
    search = TuneSearchCV(
        DecisionTreeClassifier(random_state=0), space, sampler="grid", n_trials=10, cv=3
    ).fit(X, y)
    res = search.cv_results_
    active = np.array(["max_depth" in p for p in res["params"]])
    assert active.any() and not active.all()
    depth = res["param_max_depth"]
    assert isinstance(depth, np.ma.MaskedArray) and depth.dtype.kind == "i"
    assert np.array_equal(np.ma.getmaskarray(depth), ~active)
    assert depth.compressed().tolist() == [
        p["max_depth"] for p in res["params"] if "max_depth" in p
    ]
    assert not np.ma.getmaskarray(res["param_criterion"]).any()
    assert res["param_criterion"].dtype == object


def test_fold_scores_equal_gridsearch_per_configuration() -> None:
    ours, ref = _grid_pair("balanced_accuracy")
    assert ours.n_splits_ == ref.n_splits_ == 4
    assert len(ours.cv_results_["params"]) == 8
    ref_rows = {tuple(sorted(p.items())): i for i, p in enumerate(ref.cv_results_["params"])}
    for i, p in enumerate(ours.cv_results_["params"]):
        j = ref_rows[tuple(sorted(p.items()))]
        for k in range(4):
            key = f"split{k}_test_score"
            assert ours.cv_results_[key][i] == ref.cv_results_[key][j]
        for key in ("mean_test_score", "std_test_score", "rank_test_score"):
            assert ours.cv_results_[key][i] == pytest.approx(ref.cv_results_[key][j])
        assert ours.cv_results_["param_max_depth"][i] == p["max_depth"]
    assert ours.best_score_ == pytest.approx(ref.best_score_)
    # ties among the best are broken by trial order, which differs from the grid's order
    assert ours.cv_results_["rank_test_score"][ours.best_index_] == 1
    assert ours.cv_results_["params"][ours.best_index_] == ours.best_params_
    assert ours.n_fold_fits_ == 8 * 4
    se = ours.cv_results_["se_test_score"]
    std1 = np.std([ours.cv_results_[f"split{k}_test_score"] for k in range(4)], axis=0, ddof=1)
    np.testing.assert_allclose(se, std1 / 2.0)


def test_clone_get_params_set_params() -> None:
    search = TuneSearchCV(
        LogisticRegression(max_iter=200),
        Space({"C": twiddle.Float(1e-2, 1e2, log=True)}),
        n_trials=3,
        random_state=0,
        select=("one_se", len),
    )
    twin = clone(search)
    a, b = search.get_params(deep=False), twin.get_params(deep=False)
    assert a.keys() == b.keys()
    for name in a:
        if name == "estimator":
            assert a[name].get_params() == b[name].get_params()
        elif name == "error_score":
            assert math.isnan(a[name]) and math.isnan(b[name])
        else:
            assert a[name] == b[name], name
    twin.set_params(n_trials=2, estimator__C=0.5)
    assert twin.n_trials == 2 and twin.estimator.C == 0.5
    assert search.n_trials == 3 and search.estimator.C == 1.0


def test_works_as_a_pipeline_step_and_over_a_pipeline() -> None:
    X, y = IRIS
    inner = TuneSearchCV(
        RidgeClassifier(),
        Space({"alpha": Categorical([1e4, 1.0])}),
        sampler="grid",
        n_trials=2,
        cv=3,
    )
    pipe = Pipeline([("scale", StandardScaler()), ("search", inner)]).fit(X, y)
    assert pipe.predict(X[:5]).shape == (5,)
    assert pipe.named_steps["search"].best_params_ == {"alpha": 1.0}

    over = TuneSearchCV(
        Pipeline([("scale", StandardScaler()), ("clf", RidgeClassifier())]),
        Space({"clf__alpha": Categorical([1e4, 1.0])}),
        sampler="grid",
        n_trials=2,
        cv=3,
    ).fit(X, y)
    assert over.best_params_ == {"clf__alpha": 1.0}
    assert over.best_estimator_.named_steps["clf"].alpha == 1.0
    assert "param_clf__alpha" in over.cv_results_


def test_inside_sklearn_cross_validate() -> None:
    X, y = IRIS
    search = TuneSearchCV(
        DecisionTreeClassifier(random_state=0),
        Space({"max_depth": Int(1, 3)}),
        sampler="grid",
        n_trials=3,
        cv=3,
    )
    assert is_classifier(search)
    out = sk_cross_validate(search, X, y, cv=3, return_estimator=True)
    assert out["test_score"].shape == (3,)
    assert np.all(out["test_score"] > 0.8)
    assert all(hasattr(e, "best_estimator_") for e in out["estimator"])
    assert not hasattr(search, "cv_results_")  # cross_validate fitted clones


def test_not_fitted_before_fit_and_delegation_after() -> None:
    X, y = IRIS
    search = TuneSearchCV(
        LinearDiscriminantAnalysis(),
        Space({"solver": Categorical(["svd", "lsqr"])}),
        sampler="grid",
        n_trials=2,
        cv=3,
        scoring="balanced_accuracy",
    )
    assert hasattr(search, "predict")  # the estimator has it: available before fit
    for call in (
        lambda: search.predict(X),
        lambda: search.predict_proba(X),
        lambda: search.decision_function(X),
        lambda: search.score(X, y),
        lambda: search.classes_,
    ):
        with pytest.raises(NotFittedError):
            call()
    assert not hasattr(search, "classes_")
    search.fit(X, y)
    best = search.best_estimator_
    np.testing.assert_array_equal(search.predict(X), best.predict(X))
    np.testing.assert_allclose(search.predict_proba(X), best.predict_proba(X))
    np.testing.assert_allclose(search.decision_function(X), best.decision_function(X))
    np.testing.assert_array_equal(search.classes_, [0, 1, 2])
    assert search.score(X, y) == pytest.approx(balanced_accuracy_score(y, best.predict(X)))
    assert search.n_features_in_ == 4
    assert search.refit_time_ > 0
    assert search.study_.name.startswith("TuneSearchCV-LinearDiscriminantAnalysis-")


def test_transform_delegation_and_missing_methods() -> None:
    X, _ = IRIS
    search = TuneSearchCV(PCA(), Space({"n_components": Int(1, 3)}), sampler="grid", n_trials=3)
    assert not hasattr(search, "predict")
    search.fit(X)
    k = search.best_params_["n_components"]
    assert search.transform(X).shape == (150, k)
    assert not hasattr(Ridge(), "predict_proba")
    assert not hasattr(TuneSearchCV(Ridge(), Space({"alpha": Int(1, 2)})), "predict_proba")


def test_refit_false() -> None:
    X, y = DIABETES
    search = TuneSearchCV(
        Ridge(), Space({"alpha": Categorical([0.1, 1.0])}), sampler="grid", n_trials=2, refit=False
    )
    search.set_params(refit=True).fit(X, y)
    search.set_params(refit=False).fit(X, y)  # a refit of the earlier fit does not linger
    assert not hasattr(search, "best_estimator_")
    assert not hasattr(search, "predict")
    assert search.refit_time_ == 0.0
    assert search.best_params_["alpha"] in (0.1, 1.0)


def test_each_fit_is_a_new_study_in_given_storage(tmp_path: Any) -> None:
    X, y = DIABETES
    url = f"sqlite:///{tmp_path / 'search.db'}"
    search = TuneSearchCV(
        Ridge(), Space({"alpha": Categorical([0.1, 1.0])}), sampler="grid", n_trials=2, storage=url
    )
    first = search.fit(X, y).study_.name
    second = search.fit(X, y).study_.name
    assert first != second
    assert len(search.cv_results_["params"]) == 2
    assert len(twiddle.Study.load(first, url).trials) == 2


def test_same_random_state_same_trials() -> None:
    X, y = DIABETES
    space = Space({"alpha": twiddle.Float(1e-3, 1e2, log=True)})

    def run(seed: Any) -> list[Any]:
        s = TuneSearchCV(Ridge(), space, sampler="random", n_trials=4, cv=3, random_state=seed)
        return s.fit(X, y).cv_results_["params"]

    assert run(3) == run(3)
    assert run(np.random.RandomState(1)) == run(np.random.RandomState(1))


# -- the one-standard-error rule ------------------------------------------------------------
#: Fold scores of a made-up estimator, by complexity c (5 folds of 10 samples each).
_TABLE = {
    0: [0.60, 0.62, 0.58, 0.61, 0.59],  # mean 0.600: far below
    1: [0.80, 0.84, 0.82, 0.86, 0.78],  # mean 0.820: below best - SE
    2: [0.84, 0.88, 0.80, 0.90, 0.84],  # mean 0.852: within one SE of the best
    3: [0.86, 0.87, 0.84, 0.88, 0.85],  # mean 0.860: within
    4: [0.95, 0.80, 0.90, 0.86, 0.84],  # mean 0.870: best, SE ~0.025
}


class _Knob(BaseEstimator):  # type: ignore[misc]
    def __init__(self, c: int = 0) -> None:
        self.c = c

    def fit(self, X: Any, y: Any = None) -> _Knob:
        return self

    def predict(self, X: Any) -> Any:
        return np.zeros(len(X))

    def score(self, X: Any, y: Any = None) -> float:
        return _TABLE[self.c][int(X[0, 0]) // 10]


def test_one_se_picks_simplest_within_one_standard_error() -> None:
    X = np.arange(50.0).reshape(-1, 1)
    best = np.array(_TABLE[4])
    se = best.std(ddof=1) / math.sqrt(5)
    threshold = best.mean() - se
    means = {c: np.mean(v) for c, v in _TABLE.items()}
    assert means[1] < threshold <= means[2] < means[4]  # the example is what it claims

    space = Space({"c": Int(0, 4)})
    kw: dict[str, Any] = {"cv": KFold(5), "sampler": "grid", "n_trials": 5}
    plain = TuneSearchCV(_Knob(), space, **kw).fit(X)
    assert plain.best_params_ == {"c": 4}
    assert plain.best_score_ == pytest.approx(0.87)

    chosen = TuneSearchCV(_Knob(), space, select=("one_se", lambda p: p["c"]), **kw).fit(X)
    assert chosen.best_params_ == {"c": 2}
    assert chosen.best_estimator_.c == 2
    assert chosen.best_score_ == pytest.approx(means[2])
    assert chosen.cv_results_["params"][chosen.best_index_] == {"c": 2}
    # the key decides what simple means: here, larger c is "simpler"
    rev = TuneSearchCV(_Knob(), space, select=("one_se", lambda p: -p["c"]), **kw).fit(X)
    assert rev.best_params_ == {"c": 4}


def test_one_se_without_key_and_bad_keys_raise_clearly() -> None:
    X = np.arange(50.0).reshape(-1, 1)
    space = Space({"c": Int(0, 4)})
    with pytest.raises(InvalidParameterError, match=r"select=\('one_se', key\)"):
        TuneSearchCV(_Knob(), space, select="one_se").fit(X)
    with pytest.raises(InvalidParameterError, match="complexity key"):
        TuneSearchCV(
            _Knob(),
            space,
            cv=KFold(5),
            sampler="grid",
            n_trials=5,
            select=("one_se", lambda p: p["C"]),
        ).fit(X)


# -- argument checks ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"n_trials": 0},
            "The 'n_trials' parameter of TuneSearchCV must be an int >= 1. Got 0 instead.",
        ),
        ({"n_jobs": 0}, "The 'n_jobs' parameter of TuneSearchCV must be an int >= 1, -1 or None"),
        ({"refit": "yes"}, "The 'refit' parameter of TuneSearchCV must be a bool. Got 'yes'"),
        ({"select": "worst"}, "The 'select' parameter of TuneSearchCV must be 'best', 'one_se'"),
        ({"scheduler": "hyperband"}, "Hyperband needs its max_resource"),
        ({"scheduler": "asha"}, "The 'scheduler' parameter of TuneSearchCV must be None, 'racing'"),
        ({"scoring": ["accuracy", "f1"]}, "Several metrics are not supported yet"),
        ({"error_score": "ignore"}, "The 'error_score' parameter of TuneSearchCV must be"),
        ({"space": {"C": [1, 2]}}, "The 'space' parameter of TuneSearchCV must be a twiddle.Space"),
    ],
)
def test_bad_arguments_are_reported_on_fit(kwargs: dict[str, Any], message: str) -> None:
    X, y = IRIS
    params: dict[str, Any] = {"space": Space({"C": Categorical([1.0])}), "n_trials": 1, **kwargs}
    search = TuneSearchCV(LogisticRegression(), **params)  # stored unchanged, checked in fit
    assert search.get_params()[next(iter(kwargs))] is kwargs[next(iter(kwargs))]
    with pytest.raises(InvalidParameterError, match=re.escape(message)):
        search.fit(X, y)


def test_racing_scheduler_when_available() -> None:
    pytest.importorskip("twiddle._schedulers")
    from twiddle.sklearn import _tune_has_scheduler

    if not _tune_has_scheduler():
        pytest.skip("this twiddle.tune takes no scheduler")
    X, y = IRIS
    search = TuneSearchCV(
        DecisionTreeClassifier(random_state=0),
        TREE_SPACE,
        sampler="grid",
        n_trials=8,
        cv=5,
        scheduler="racing",
    ).fit(X, y)
    res = search.cv_results_
    assert search.n_fold_fits_ <= 8 * 5
    pruned = [i for i, s in enumerate(res["state"]) if s == "PRUNED"]
    for i in pruned:
        assert math.isnan(res["mean_test_score"][i])
    assert search.n_fold_fits_ == sum(
        int(np.isfinite(res[f"split{k}_test_score"][i]))
        for i in range(len(res["params"]))
        for k in range(5)
    )
    assert res["state"][search.best_index_] == "COMPLETE"


@pytest.mark.slow
def test_docstring_examples() -> None:
    import doctest

    import twiddle.sklearn

    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(twiddle.sklearn, optionflags=flags)
    assert result.attempted > 0 and result.failed == 0
