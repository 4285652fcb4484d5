"""Cross-validation against scikit-learn, and tune() end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold
from sklearn.model_selection import cross_validate as sk_cross_validate
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

import twiddle
from twiddle import Categorical, Float, Int, InvalidParameterError, Repeat, Space, TrialState

IRIS = load_iris(return_X_y=True)
DIABETES = load_diabetes(return_X_y=True)


def test_cross_validate_equals_sklearn_classifier():
    X, y = IRIS
    est = LogisticRegression(C=0.3, max_iter=1000)
    ours = twiddle.cross_validate(est, X, y, cv=5, scoring=["accuracy", "f1_macro"])
    ref = sk_cross_validate(est, X, y, cv=5, scoring=["accuracy", "f1_macro"])
    np.testing.assert_array_equal(ours.scores["accuracy"], ref["test_accuracy"])
    np.testing.assert_array_equal(ours.scores["f1_macro"], ref["test_f1_macro"])
    assert ours.metric == "accuracy"
    assert ours.mean == pytest.approx(ref["test_accuracy"].mean())
    assert ours.std == pytest.approx(ref["test_accuracy"].std(ddof=1))
    assert ours.se == pytest.approx(ref["test_accuracy"].std(ddof=1) / math.sqrt(5))


def test_cross_validate_equals_sklearn_regressor_default_score_and_params():
    X, y = DIABETES
    ours = twiddle.cross_validate(Ridge(), X, y, cv=4, params={"alpha": 0.1})
    ref = sk_cross_validate(Ridge(alpha=0.1), X, y, cv=4)
    np.testing.assert_allclose(ours.fold_scores, ref["test_score"], rtol=0, atol=1e-12)


def test_stratified_by_default_for_classifiers():
    X, y = IRIS  # iris is sorted by class: unstratified KFold would put one class per test fold
    ours = twiddle.cross_validate(DecisionTreeClassifier(random_state=0), X, y, cv=3)
    ref = sk_cross_validate(DecisionTreeClassifier(random_state=0), X, y, cv=StratifiedKFold(3))
    np.testing.assert_array_equal(ours.fold_scores, ref["test_score"])
    assert ours.mean > 0.9


def test_groups_are_honoured_with_int_cv():
    X, y = DIABETES
    groups = np.arange(len(y)) % 7
    ours = twiddle.cross_validate(Ridge(), X, y, cv=3, groups=groups)
    ref = sk_cross_validate(Ridge(), X, y, cv=GroupKFold(3), groups=groups)
    np.testing.assert_allclose(ours.fold_scores, ref["test_score"], atol=1e-12)


def test_splitter_object_and_explicit_splits():
    X, y = DIABETES
    kf = KFold(4, shuffle=True, random_state=0)
    a = twiddle.cross_validate(Ridge(), X, y, cv=kf)
    b = twiddle.cross_validate(Ridge(), X, y, cv=list(kf.split(X)))
    np.testing.assert_array_equal(a.fold_scores, b.fold_scores)


class Flaky(Ridge):
    """Fails to fit when alpha is negative-ish marker."""

    def fit(self, X, y, sample_weight=None):
        if self.alpha > 5:
            raise ValueError("alpha too large for this test")
        return super().fit(X, y)


def test_error_score_numeric_and_raise():
    X, y = DIABETES
    with pytest.warns(RuntimeWarning, match="error_score=-1"):
        res = twiddle.cross_validate(Flaky(alpha=10.0), X, y, cv=3, error_score=-1.0)
    np.testing.assert_array_equal(res.fold_scores, [-1.0, -1.0, -1.0])
    assert "alpha too large" in res.errors[0]
    with pytest.raises(RuntimeError, match="alpha too large"):
        twiddle.cross_validate(Flaky(alpha=10.0), X, y, cv=3, error_score="raise")
    with pytest.raises(InvalidParameterError, match="'error_score'"):
        twiddle.cross_validate(Ridge(), X, y, error_score="ignore")


def test_bad_scoring_and_cv():
    X, y = IRIS
    with pytest.raises(InvalidParameterError, match="'scoring' parameter"):
        twiddle.cross_validate(SVC(), X, y, scoring="acuracy")
    with pytest.raises(InvalidParameterError, match="'cv' parameter"):
        twiddle.cross_validate(SVC(), X, y, cv=1)
    with pytest.raises(InvalidParameterError, match="'metric' parameter"):
        twiddle.cross_validate(SVC(), X, y, scoring=["accuracy"], metric="f1")


def test_tune_records_every_fold_and_matches_sklearn_per_config():
    X, y = IRIS
    space = Space({"C": Float(1e-3, 1e2, log=True), "kernel": Categorical(["rbf", "linear"])})
    res = twiddle.tune(SVC(), space, X, y, cv=5, n_trials=6, seed=0)
    assert len(res.study_.trials) == 6
    for t in res.study_.trials:
        assert t.state is TrialState.COMPLETE
        ref = sk_cross_validate(SVC(**t.params), X, y, cv=5)["test_score"]
        np.testing.assert_array_equal(np.array(t.fold_scores), ref)
        assert t.value == pytest.approx(ref.mean())
        assert t.value_se == pytest.approx(ref.std(ddof=1) / math.sqrt(5))
    best = max(res.study_.trials, key=lambda t: (t.value, -t.number))
    assert res.best_params_ == best.params
    assert res.best_score_ == best.value
    assert res.best_score_se_ == pytest.approx(best.value_se)
    assert res.best_estimator_.get_params()["C"] == best.params["C"]
    assert hasattr(res.best_estimator_, "support_vectors_")
    assert list(res.cv_results_["rank_test_score"]).count(1) >= 1
    assert res.cv_results_["split4_test_score"].shape == (6,)


def test_tune_nested_params_in_pipeline():
    X, y = load_breast_cancer(return_X_y=True)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=500))])
    space = Space({"clf__C": Float(1e-3, 1e1, log=True)})
    res = twiddle.tune(pipe, space, X, y, cv=3, n_trials=4, seed=1)
    assert res.best_params_["clf__C"] == res.best_estimator_.named_steps["clf"].C
    assert res.best_score_ > 0.9


def test_tune_derived_hidden_layer_sizes():
    X, y = IRIS
    space = Space(
        {"n_layers": Int(1, 3), "width": Int(4, 8)},
        derived={"hidden_layer_sizes": Repeat("width", "n_layers")},
    )
    est = MLPClassifier(max_iter=30, random_state=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = twiddle.tune(est, space, X, y, cv=3, n_trials=3, seed=0)
    p = res.best_params_
    assert res.best_estimator_.hidden_layer_sizes == (p["width"],) * p["n_layers"]
    # convergence warnings are captured on the trial, not lost and not spammed
    assert any("ConvergenceWarning" in w for w in res.study_.trials[0].system_attrs["warnings"])


def test_tune_unknown_parameter_is_an_error():
    X, y = IRIS
    with pytest.raises(InvalidParameterError, match="does not have"):
        twiddle.tune(SVC(), Space({"Cee": Float(0.1, 1)}), X, y, n_trials=1)


def test_tune_failing_fold_fails_trial_with_traceback():
    X, y = DIABETES
    space = Space({"alpha": Float(0.1, 100.0, log=True)})
    res = twiddle.tune(Flaky(), space, X, y, cv=3, n_trials=12, seed=0, scoring="r2")
    failed = res.study_.get_trials([TrialState.FAIL])
    assert failed and all(t.params["alpha"] > 5 for t in failed)
    assert all("alpha too large" in t.fail_reason for t in failed)
    assert all(t.params["alpha"] <= 5 for t in res.study_.get_trials([TrialState.COMPLETE]))


def test_tune_error_score_raise_stops_the_search():
    X, y = DIABETES
    space = Space({"alpha": Float(10.0, 100.0)})
    with pytest.raises(RuntimeError, match="error_score='raise'"):
        twiddle.tune(Flaky(), space, X, y, cv=3, n_trials=3, error_score="raise")


def test_all_configurations_see_the_same_folds_and_resume_checks_them(tmp_path):
    X, y = DIABETES
    url = f"sqlite:///{tmp_path / 'cv.db'}"
    space = Space({"alpha": Float(1e-3, 1e3, log=True)})
    twiddle.tune(
        Ridge(),
        space,
        X,
        y,
        cv=KFold(4, shuffle=True, random_state=0),
        n_trials=2,
        storage=url,
        study_name="r",
        seed=0,
    )
    res = twiddle.tune(
        Ridge(),
        space,
        X,
        y,
        cv=KFold(4, shuffle=True, random_state=0),
        n_trials=2,
        storage=url,
        study_name="r",
    )
    assert len(res.study_.trials) == 4
    with pytest.raises(InvalidParameterError, match="other folds"):
        twiddle.tune(
            Ridge(),
            space,
            X,
            y,
            cv=KFold(4, shuffle=True, random_state=1),
            n_trials=1,
            storage=url,
            study_name="r",
        )


def test_tune_multi_metric_records_secondary_means():
    X, y = IRIS
    space = Space({"C": Float(0.1, 10.0, log=True)})
    res = twiddle.tune(
        SVC(),
        space,
        X,
        y,
        cv=3,
        n_trials=2,
        seed=0,
        scoring={"acc": "accuracy", "f1": "f1_macro"},
        metric="f1",
    )
    t = res.best_trial_
    ref = sk_cross_validate(SVC(**t.params), X, y, cv=3, scoring=["accuracy", "f1_macro"])
    assert t.value == pytest.approx(ref["test_f1_macro"].mean())
    assert t.metrics["acc_mean"] == pytest.approx(ref["test_accuracy"].mean())


# -- fold copies: a trial's later folds copy its first fold's configured estimator ------
def _counting_clone(monkeypatch):
    import sklearn.base

    calls = []
    real = sklearn.base.clone

    def clone(est, *args, **kwargs):
        calls.append(type(est).__name__)
        return real(est, *args, **kwargs)

    monkeypatch.setattr(sklearn.base, "clone", clone)
    return calls


def test_fold_copies_give_sklearns_fold_scores_with_random_state_objects(monkeypatch):
    # A RandomState *instance* as a parameter: clone deep-copies it for every fold, so
    # each fold starts from the same state; a copy taken after a fit would not.
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_breast_cancer(return_X_y=True)
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            ("rf", RandomForestClassifier(n_estimators=5, random_state=np.random.RandomState(3))),
        ]
    )
    space = Space({"rf__max_depth": Int(1, 6)})
    calls = _counting_clone(monkeypatch)
    res = twiddle.tune(pipe, space, X, y, cv=5, n_trials=3, seed=0)
    # one clone of the pipeline per configuration (sklearn's clone recurses into its
    # steps; a trial that repeats the one before it clones nothing), plus the refit's:
    # the other four folds of each trial were copies
    params = [t.params for t in res.study_.trials]
    changes = sum(p != q for p, q in zip(params, [None, *params[:-1]], strict=True))
    assert calls.count("Pipeline") == changes + 1
    monkeypatch.undo()
    for t in res.study_.trials:
        ref = sk_cross_validate(pipe.set_params(**t.params), X, y, cv=StratifiedKFold(5))[
            "test_score"
        ]
        np.testing.assert_array_equal(np.array(t.fold_scores), ref)


def test_fold_copies_part_an_estimator_shared_between_steps(monkeypatch):
    # clone parts the two steps; a pickled copy of the caller's pipeline would keep them
    # one object, and the second step's fit would then refit the first step's scaler.
    X, y = load_diabetes(return_X_y=True)
    shared = StandardScaler()
    pipe = Pipeline([("a", shared), ("b", shared), ("ridge", Ridge())])
    space = Space({"ridge__alpha": Float(1e-3, 1e3, log=True)})
    calls = _counting_clone(monkeypatch)
    res = twiddle.tune(pipe, space, X, y, cv=4, n_trials=2, seed=0)
    assert calls.count("Pipeline") == 2 + 1
    monkeypatch.undo()
    for t in res.study_.trials:
        ref = sk_cross_validate(pipe.set_params(**t.params), X, y, cv=4)["test_score"]
        np.testing.assert_allclose(np.array(t.fold_scores), ref, rtol=1e-12)


def test_an_unpicklable_estimator_is_cloned_for_every_fold(monkeypatch):
    from sklearn.preprocessing import FunctionTransformer

    X, y = load_diabetes(return_X_y=True)
    pipe = Pipeline([("f", FunctionTransformer(lambda a: a * 2.0)), ("ridge", Ridge())])
    space = Space({"ridge__alpha": Float(1e-3, 1e3, log=True)})
    calls = _counting_clone(monkeypatch)
    res = twiddle.tune(pipe, space, X, y, cv=3, n_trials=2, seed=0)
    assert calls.count("Pipeline") == 2 * 3 + 1
    monkeypatch.undo()
    for t in res.study_.trials:
        ref = sk_cross_validate(pipe.set_params(**t.params), X, y, cv=3)["test_score"]
        np.testing.assert_allclose(np.array(t.fold_scores), ref, rtol=1e-12)


def test_cross_validate_clones_estimator_valued_params():
    # scikit-learn's searches clone parameter values that are estimators; so does
    # twiddle: the caller's object is never fitted and every fold gets its own copy.
    from sklearn.preprocessing import MinMaxScaler

    X, y = load_diabetes(return_X_y=True)
    pipe = Pipeline([("scale", "passthrough"), ("ridge", Ridge(alpha=0.1))])
    scaler = MinMaxScaler()
    res = twiddle.cross_validate(pipe, X, y, cv=4, params={"scale": scaler})
    assert not hasattr(scaler, "scale_")
    ref = sk_cross_validate(pipe.set_params(scale=MinMaxScaler()), X, y, cv=4)["test_score"]
    np.testing.assert_allclose(res.scores["score"], ref, rtol=1e-12)


class _CountedClone(Ridge):
    """A Ridge with its own cloning, which must run for every fold."""

    clones = 0

    def __sklearn_clone__(self):
        type(self).clones += 1
        return super().__sklearn_clone__()


def test_estimators_with_their_own_cloning_are_cloned_for_every_fold():
    X, y = load_diabetes(return_X_y=True)
    pipe = Pipeline([("scale", StandardScaler()), ("ridge", _CountedClone())])
    space = Space({"ridge__alpha": Float(1e-3, 1e3, log=True)})
    _CountedClone.clones = 0
    twiddle.tune(pipe, space, X, y, cv=3, n_trials=2, seed=0)
    assert _CountedClone.clones == 2 * 3 + 1  # every fold, and the refit


def test_the_template_goes_with_its_context_and_is_not_shipped():
    import pickle

    from twiddle._cv import CVContext, fit_and_score

    X, y = load_diabetes(return_X_y=True)
    ctx = CVContext(
        Ridge(), X, y, list(KFold(3).split(X)), {"r2": _r2_scorer()}, "r2", np.nan, None
    )
    fit_and_score(ctx, {"alpha": 2.0}, 0)
    assert ctx.templates.blob is not None
    shipped = pickle.loads(pickle.dumps(ctx))
    assert not hasattr(shipped.templates, "blob")
    # a copy made from the template is a fresh estimator with the configuration's values
    r1 = fit_and_score(shipped, {"alpha": 2.0}, 1)
    r2 = fit_and_score(ctx, {"alpha": 2.0}, 1)
    assert r1.scores == r2.scores


def _r2_scorer():
    from sklearn.metrics import get_scorer

    return get_scorer("r2")


def test_a_parameter_with_its_own_cloning_is_cloned_for_every_fold():
    X, y = load_diabetes(return_X_y=True)
    pipe = Pipeline([("scale", StandardScaler()), ("ridge", Ridge())])
    _CountedClone.clones = 0
    twiddle.cross_validate(pipe, X, y, cv=3, params={"ridge": _CountedClone(alpha=2.0)})
    assert _CountedClone.clones == 3
