"""twiddle.compare: cross-validation and evidence side by side, on held-out data."""

from __future__ import annotations

import doctest
import sys

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import get_scorer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import PolynomialFeatures

import twiddle
from twiddle import _compare, evidence


def data(n: int = 80) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.uniform(-2.0, 2.0, size=(n, 1))
    return x, 0.5 + x[:, 0] - 2.0 * x[:, 0] ** 2 + rng.normal(0.0, 0.5, size=n)


def pipe() -> Pipeline:
    return Pipeline(
        [
            ("poly", PolynomialFeatures(include_bias=False)),
            ("blr", evidence.BayesianLinearRegression()),
        ]
    )


SPACE = twiddle.Space(
    {"poly__degree": twiddle.Int(1, 4), "blr__ard": twiddle.Categorical([False, True])}
)


@pytest.mark.parametrize("scoring", [None, "neg_mean_squared_error"])
def test_compare_reports_both_choices_their_cost_and_real_held_out_scores(scoring):
    x, y = data()
    res = twiddle.compare(
        pipe(), SPACE, x, y, cv=4, n_trials=5, test_size=0.25, seed=3, scoring=scoring
    )
    assert set(res.cv.best_params) == set(res.evidence.best_params) == {"poly__degree", "blr__ard"}
    assert res.cv.best_params == res.cv_result_.best_params_
    assert res.evidence.best_params == res.evidence_result_.best_params_
    assert (res.n_train, res.n_test) == (60, 20)
    # compute: n_trials x k fits for cross-validation, n_trials for evidence
    assert res.cv.n_fits == 5 * 4
    assert res.evidence.n_fits == 5
    assert res.cv.fit_seconds > 0 and res.evidence.fit_seconds > 0
    assert res.cv.search_seconds >= res.cv.fit_seconds
    # the held-out scores are those of the choices refit by hand on the same split
    X_tr, X_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=3)
    scorer = get_scorer(scoring or "r2")
    for report in (res.cv, res.evidence):
        model = clone(pipe()).set_params(**report.best_params).fit(X_tr, y_tr)
        assert report.test_score == pytest.approx(scorer(model, X_te, y_te), rel=1e-10)
    assert res.metric == (scoring or "score")
    assert res.evidence.objective == res.evidence_result_.best_log_evidence_
    assert res.cv.objective == res.cv_result_.best_score_


def test_summary_is_a_plain_text_table():
    x, y = data()
    res = twiddle.compare(pipe(), SPACE, x, y, cv=3, n_trials=3)
    text = res.summary()
    assert repr(res) == text
    lines = text.splitlines()
    assert "cross-validation" in lines[1] and "evidence" in lines[1]
    assert "log evidence" in text and "mean CV score" in text
    labels = (
        "poly__degree",
        "blr__ard",
        "tuning objective",
        "held-out score",
        "fits",
        "fit seconds",
    )
    for label in labels:
        assert any(line.startswith(label) for line in lines), label
    fits = next(line for line in lines if line.startswith("fits"))
    assert fits.split()[1:] == ["9", "3"]


def test_bad_arguments():
    x, y = data()
    with pytest.raises(twiddle.InvalidParameterError, match="'test_size' parameter"):
        twiddle.compare(pipe(), SPACE, x, y, test_size=1.5)
    with pytest.raises(twiddle.InvalidParameterError, match="'n_trials' parameter"):
        twiddle.compare(pipe(), SPACE, x, y, n_trials=0)
    with pytest.raises(twiddle.InvalidParameterError, match="'scoring' parameter"):
        twiddle.compare(pipe(), SPACE, x, y, scoring=["r2", "max_error"])


def test_export_and_light_import():
    assert "compare" in twiddle.__all__ and twiddle.__all__ == sorted(twiddle.__all__)
    assert twiddle.compare is _compare.compare
    import subprocess

    code = "import sys, twiddle; assert 'twiddle.evidence' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_docstring_examples():
    result = doctest.testmod(_compare, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
