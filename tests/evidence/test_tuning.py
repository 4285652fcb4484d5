"""Evidence as a tuning objective: polynomial-degree selection, Pipelines, failures, resuming."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import PolynomialFeatures

import twiddle
from twiddle import evidence

DEGREES = range(1, 7)


def quadratic(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """y = 0.5 + x - 2 x^2 + N(0, 0.5^2), x ~ U(-2, 2): a known degree-2 polynomial."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, size=(n, 1))
    y = 0.5 + x[:, 0] - 2.0 * x[:, 0] ** 2 + rng.normal(0.0, 0.5, size=n)
    return x, y


def poly_blr() -> Pipeline:
    return Pipeline(
        [
            ("poly", PolynomialFeatures(include_bias=False)),
            ("blr", evidence.BayesianLinearRegression()),
        ]
    )


def exact_evidence(x: np.ndarray, y: np.ndarray, degree: int) -> float:
    """log p(y | degree): BLR's evidence-fitted precisions, the evidence in closed form."""
    F = PolynomialFeatures(degree, include_bias=False).fit_transform(x)
    blr = evidence.BayesianLinearRegression().fit(F, y)
    value, _ = evidence.linear_evidence(F, y)({"alpha": blr.alpha_, "lambda": blr.lambda_})
    # and once more from the Gaussian density of the centred targets
    Fc, yc = F - F.mean(axis=0), y - y.mean()
    cov = np.eye(len(y)) / blr.alpha_ + Fc @ Fc.T / blr.lambda_
    dense = multivariate_normal(mean=np.zeros(len(y)), cov=cov).logpdf(yc)
    assert value == pytest.approx(dense, rel=1e-8, abs=1e-8)
    return float(value)


@pytest.mark.parametrize("seed", range(3))
def test_polynomial_degree_recovers_the_true_degree(seed):
    x, y = quadratic(seed)
    space = twiddle.Space({"poly__degree": twiddle.Int(1, 6)})
    res = evidence.tune_evidence(poly_blr(), space, x, y, n_trials=6, sampler="grid", seed=0)
    assert res.best_params_ == {"poly__degree": 2}
    by_degree = {t.params["poly__degree"]: t.value for t in res.study_.trials}
    assert sorted(by_degree) == list(DEGREES)
    for degree in DEGREES:  # every trial value is the exact evidence of its degree
        assert by_degree[degree] == pytest.approx(exact_evidence(x, y, degree), abs=1e-8)
    assert max(by_degree, key=by_degree.__getitem__) == 2  # the evidence peaks at the truth
    assert res.best_log_evidence_ == by_degree[2]
    # the refit best estimator is the degree-2 pipeline, with the same evidence
    assert res.best_estimator_.named_steps["poly"].degree == 2
    assert res.best_estimator_[-1].log_evidence_ == pytest.approx(by_degree[2], abs=1e-8)


def test_trials_record_their_fit_time_and_one_fit_each():
    x, y = quadratic(0)
    space = twiddle.Space(
        {"poly__degree": twiddle.Int(1, 3), "blr__ard": twiddle.Categorical([False, True])}
    )
    res = evidence.tune_evidence(poly_blr(), space, x, y, n_trials=4, seed=1)
    assert res.n_fits_ == 4
    times = [t.user_attrs["fit_time"] for t in res.study_.trials]
    assert len(times) == 4 and all(0.0 <= t < 10.0 for t in times)
    assert res.fit_time_ == pytest.approx(sum(times))
    assert res.study_.direction == "maximize"
    assert "EvidenceTuneResult(" in repr(res)


def test_a_plain_evidence_estimator_and_a_user_estimator():
    x, y = quadratic(0)
    F = PolynomialFeatures(2, include_bias=False).fit_transform(x)
    space = twiddle.Space({"fit_intercept": twiddle.Categorical([True, False])})
    res = evidence.tune_evidence(
        evidence.BayesianLinearRegression(), space, F, y, n_trials=2, sampler="grid"
    )
    assert res.best_params_ == {"fit_intercept": True}  # y has a non-zero mean

    class Scored(RegressorMixin, BaseEstimator):
        def __init__(self, c: float = 0.0) -> None:
            self.c = c

        def fit(self, X, y):
            self.log_evidence_ = -((self.c - 0.3) ** 2)
            return self

    res = evidence.tune_evidence(
        Scored(), twiddle.Space({"c": twiddle.Float(0.0, 1.0)}), F, y, n_trials=12, seed=0
    )
    assert abs(res.best_params_["c"] - 0.3) < 0.15


def test_without_log_evidence_every_trial_fails_with_a_clear_reason():
    x, y = quadratic(0)
    space = twiddle.Space({"alpha": twiddle.Float(0.1, 10.0, log=True)})
    with pytest.raises(twiddle.AllTrialsFailedError):
        evidence.tune_evidence(Ridge(), space, x, y, n_trials=2, seed=0)
    with pytest.raises(twiddle.InvalidParameterError, match="log_evidence_"):
        evidence.evidence_of(Ridge().fit(x, y))


def test_bad_arguments():
    x, y = quadratic(0)
    space = twiddle.Space({"poly__degree": twiddle.Int(1, 3)})
    with pytest.raises(twiddle.InvalidParameterError, match="'n_trials' parameter"):
        evidence.tune_evidence(poly_blr(), space, x, y, n_trials=0)
    with pytest.raises(twiddle.InvalidParameterError, match="'space' parameter"):
        evidence.tune_evidence(poly_blr(), {"poly__degree": [1, 2]}, x, y)
    with pytest.raises(twiddle.InvalidParameterError, match="does not have"):
        evidence.tune_evidence(poly_blr(), twiddle.Space({"degree": twiddle.Int(1, 3)}), x, y)


def test_resuming_needs_the_same_data_and_no_cv_scores(tmp_path):
    x, y = quadratic(0)
    space = twiddle.Space({"poly__degree": twiddle.Int(1, 3)})
    url = f"sqlite:///{tmp_path / 'ev.db'}"
    evidence.tune_evidence(poly_blr(), space, x, y, n_trials=2, storage=url, study_name="s")
    res = evidence.tune_evidence(poly_blr(), space, x, y, n_trials=1, storage=url, study_name="s")
    assert len(res.study_.trials) == 3 and res.n_fits_ == 1
    with pytest.raises(twiddle.InvalidParameterError, match="other data"):
        evidence.tune_evidence(
            poly_blr(), space, x[:30], y[:30], n_trials=1, storage=url, study_name="s"
        )
    twiddle.tune(poly_blr(), space, x, y, cv=3, n_trials=1, storage=url, study_name="cv")
    with pytest.raises(twiddle.InvalidParameterError, match="cross-validation"):
        evidence.tune_evidence(poly_blr(), space, x, y, n_trials=1, storage=url, study_name="cv")
    assert math.isfinite(res.best_log_evidence_)


def test_docstring_examples():
    import doctest

    from twiddle.evidence import _tuning

    result = doctest.testmod(_tuning, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
