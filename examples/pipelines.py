"""Estimator factories for the example specs.

A spec's ``[estimator] class`` may name a function instead of a class; twiddle
calls it with the spec's fixed ``params`` and tunes the estimator it returns.
This module sits next to the specs, whose directory twiddle makes importable,
so ``class = "pipelines:scaled_svc"`` finds it.
"""

from __future__ import annotations

from typing import Any

from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC


def scaled_svc(**svc_params: Any) -> Pipeline:
    """Standardise the features, then a support-vector classifier.

    Parameters
    ----------
    **svc_params
        Fixed hyperparameters of the :class:`~sklearn.svm.SVC` step.

    Returns
    -------
    sklearn.pipeline.Pipeline
        Steps ``"scale"`` and ``"clf"``; tune the SVC as ``clf__C``, ``clf__gamma``, ...
    """
    return Pipeline([("scale", StandardScaler()), ("clf", SVC(**svc_params))])


def polynomial_blr(**blr_params: Any) -> Pipeline:
    """Polynomial features, then Bayesian linear regression fitted by evidence.

    The classic case of model selection by evidence: the polynomial degree (and
    whether each weight gets its own prior precision, ``ard``) is chosen by the log
    evidence of the final step, whose noise and weight precisions are fitted inside.

    Parameters
    ----------
    **blr_params
        Fixed hyperparameters of the
        :class:`~twiddle.evidence.BayesianLinearRegression` step.

    Returns
    -------
    sklearn.pipeline.Pipeline
        Steps ``"poly"`` and ``"blr"``; tune them as ``poly__degree``, ``blr__ard``, ...
    """
    from sklearn.preprocessing import PolynomialFeatures

    from twiddle.evidence import BayesianLinearRegression

    return Pipeline(
        [
            ("poly", PolynomialFeatures(include_bias=False)),
            ("blr", BayesianLinearRegression(**blr_params)),
        ]
    )
