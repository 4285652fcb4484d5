"""Probabilistic tuning: maximise the evidence, or give hyperparameters hyperpriors and infer them.

For a model with a likelihood, the evidence (marginal likelihood) ``log p(D | h)`` of
its hyperparameters ``h`` scores them from one fit on all the data, without
cross-validation. This subpackage

- maximises it (type-II maximum likelihood, ``method="ml"``),
- maximises it times hyperpriors ``p(h)`` (``method="map"``), or
- samples the hyperparameter posterior ``p(h | D)`` by slice sampling (``method="mcmc"``),

for any model whose evidence you can write down (:func:`infer`), and ships two
scikit-learn-style estimators fitted this way: :class:`BayesianLinearRegression`
(MacKay's and Tipping's evidence maximisation, ARD) and :class:`GPRegressor`
(Matern-5/2 ARD Gaussian process).

Import it explicitly (``import twiddle.evidence`` or ``from twiddle import
evidence``); ``import twiddle`` does not load it, and the estimators (which need
scikit-learn) load on first use.

Example: the hierarchical normal model of eight schools, whose group effects
integrate out in closed form::

    import numpy as np
    from twiddle import evidence

    y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

    def log_evidence(h):  # y_j ~ N(mu, sigma_j^2 + tau^2)
        v = sigma**2 + h["tau"] ** 2
        return -0.5 * float(np.sum(np.log(2 * np.pi * v) + (y - h["mu"]) ** 2 / v))

    priors = {"mu": evidence.Normal(0.0, 5.0), "tau": evidence.HalfCauchy(5.0)}
    post = evidence.infer(log_evidence, priors, method="mcmc", seed=0)
    post.params_          # posterior means, about {"mu": 4.4, "tau": 3.6}
    post.samples_["tau"]  # 4 chains x 1000 draws
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twiddle.evidence._infer import ConvergenceWarning, InferenceError, InferenceResult, infer
from twiddle.evidence._priors import (
    Gamma,
    HalfCauchy,
    InverseGamma,
    LogNormal,
    LogUniform,
    Normal,
    Prior,
    Uniform,
)

if TYPE_CHECKING:
    from twiddle.evidence._gpr import GPRegressor
    from twiddle.evidence._laplace import LaplaceFit, fit_laplace_hyperparameters, laplace_evidence
    from twiddle.evidence._linear import BayesianLinearRegression, linear_evidence
    from twiddle.evidence._tuning import EvidenceTuneResult, evidence_of, tune_evidence

_LAZY = {
    "BayesianLinearRegression": "twiddle.evidence._linear",
    "linear_evidence": "twiddle.evidence._linear",
    "GPRegressor": "twiddle.evidence._gpr",
    "LaplaceFit": "twiddle.evidence._laplace",
    "fit_laplace_hyperparameters": "twiddle.evidence._laplace",
    "laplace_evidence": "twiddle.evidence._laplace",
    "EvidenceTuneResult": "twiddle.evidence._tuning",
    "evidence_of": "twiddle.evidence._tuning",
    "tune_evidence": "twiddle.evidence._tuning",
}


def __getattr__(name: str) -> Any:
    """Load the scikit-learn-based estimators on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'twiddle.evidence' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BayesianLinearRegression",
    "ConvergenceWarning",
    "EvidenceTuneResult",
    "GPRegressor",
    "Gamma",
    "HalfCauchy",
    "InferenceError",
    "InferenceResult",
    "InverseGamma",
    "LaplaceFit",
    "LogNormal",
    "LogUniform",
    "Normal",
    "Prior",
    "Uniform",
    "evidence_of",
    "fit_laplace_hyperparameters",
    "infer",
    "laplace_evidence",
    "linear_evidence",
    "tune_evidence",
]
