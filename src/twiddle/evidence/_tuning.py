"""Evidence as a tuning objective: one fit per configuration, scored by ``log p(D | h)``.

Notation
--------
``h``
    The hyperparameters in the search space (a polynomial degree, ``ard``, a prior).
``theta``
    Inner hyperparameters fitted by the estimator itself inside ``fit`` (noise and
    weight precisions of :class:`~twiddle.evidence.BayesianLinearRegression`, kernel
    length scales of :class:`~twiddle.evidence.GPRegressor`).
``log_evidence_``
    The estimator's fitted ``log p(y | X, h, theta_hat)``: the study maximises it over
    ``h``, one fit on all the data per trial (MacKay, 1992, "Bayesian interpolation").
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twiddle._errors import InvalidParameterError
from twiddle._space import Space
from twiddle._trial import FrozenTrial
from twiddle._validation import check_int

__all__ = ["EvidenceTuneResult", "evidence_of", "tune_evidence"]

#: Name of the study user attribute that marks an evidence study (read by the CLI).
PLAN_KEY = "evidence_plan"
#: How the value of an evidence trial is called in tables.
METRIC = "log evidence"


def evidence_of(estimator: Any) -> float:
    """The fitted ``log_evidence_`` of ``estimator``, or of the last step of a Pipeline.

    Parameters
    ----------
    estimator : fitted estimator
        Exposes ``log_evidence_``, or is a (nested) scikit-learn ``Pipeline`` whose
        final step does.

    Returns
    -------
    float

    Raises
    ------
    InvalidParameterError
        If neither the estimator nor its final step has ``log_evidence_``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from twiddle import evidence
    >>> X = np.arange(20.0).reshape(10, 2)
    >>> y = X @ [1.0, -0.5] + np.sin(np.arange(10.0))
    >>> pipe = make_pipeline(StandardScaler(), evidence.BayesianLinearRegression()).fit(X, y)
    >>> evidence.evidence_of(pipe) == pipe[-1].log_evidence_
    True
    """
    final = estimator
    while not hasattr(final, "log_evidence_") and hasattr(final, "steps"):
        final = final.steps[-1][1]
    value = getattr(final, "log_evidence_", None)
    if value is None:
        raise InvalidParameterError(
            f"{type(estimator).__name__} has no 'log_evidence_' after fit (nor has the final "
            "step of a Pipeline). Evidence tuning needs an estimator that computes its log "
            "marginal likelihood, such as twiddle.evidence.BayesianLinearRegression or "
            "GPRegressor; tune others by cross-validation (twiddle.tune)."
        )
    return float(value)


class _EvidenceObjective:
    """Fit a clone with a trial's hyperparameters on all the data; return its evidence.

    The first argument is named ``trial`` so that :meth:`Study.optimize` hands over the
    trial (whose ``params`` are the configuration), on which the fit time and the
    warnings of the fit (at most five, e.g. a ConvergenceWarning) are recorded as
    ``user_attrs["fit_time"]`` and ``user_attrs["warnings"]``.
    """

    def __init__(self, estimator: Any, space: Space, X: Any, y: Any) -> None:
        self.estimator = estimator
        self.space = space
        self.X = X
        self.y = y

    def __call__(self, trial: Any) -> float:
        from twiddle._cv import configure

        est = configure(self.estimator, self.space, trial.params)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est.fit(self.X, self.y)
        trial.set_user_attr("fit_time", time.perf_counter() - t0)
        seen = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
        if seen:
            trial.set_user_attr("warnings", seen[:5])
        return evidence_of(est)


@dataclasses.dataclass
class EvidenceTuneResult:
    """Outcome of :func:`tune_evidence`.

    Attributes
    ----------
    best_params_ : dict
        Hyperparameters (space dimensions) of the configuration with the highest evidence.
    best_log_evidence_ : float
        Its log evidence.
    best_trial_ : FrozenTrial
    best_estimator_ : estimator or None
        A clone with the best configuration fitted on all the data (None if refit=False).
    study_ : Study
    n_fits_ : int
        Fits run by this call's trials (one per trial; the refit is not counted).
    fit_time_ : float
        Seconds spent in those fits (sum of the trials' ``user_attrs["fit_time"]``).
    """

    best_params_: dict[str, Any]
    best_log_evidence_: float
    best_trial_: FrozenTrial
    best_estimator_: Any
    study_: Any
    n_fits_: int
    fit_time_: float

    def __repr__(self) -> str:
        return (
            f"EvidenceTuneResult(best_params_={self.best_params_!r}, "
            f"best_log_evidence_={self.best_log_evidence_:.6g}, n_fits_={self.n_fits_})"
        )


def tune_evidence(
    estimator: Any,
    space: Space,
    X: Any,
    y: Any,
    *,
    n_trials: int | None = 20,
    timeout: float | None = None,
    sampler: Any = "auto",
    seed: Any = None,
    storage: Any = None,
    study_name: str | None = None,
    n_jobs: int = 1,
    refit: bool = True,
    callbacks: Sequence[Callable[..., None]] = (),
) -> EvidenceTuneResult:
    """Tune ``estimator``'s hyperparameters over ``space`` by maximising its log evidence.

    Each trial sets one configuration of ``space`` on a clone of ``estimator``, fits it
    **once on all the data** (the estimator fits its inner hyperparameters, such as
    noise and weight precisions, by evidence inside ``fit``) and takes its fitted
    ``log_evidence_`` as the trial value; the study maximises it. For a scikit-learn
    ``Pipeline`` the evidence is read from the final step: the features the earlier
    steps make are conditioned on, so ``PolynomialFeatures(degree)`` followed by
    :class:`~twiddle.evidence.BayesianLinearRegression` selects the degree by evidence
    (MacKay, 1992). Fit seconds are recorded on each trial as
    ``user_attrs["fit_time"]``, and warnings of the fit as ``user_attrs["warnings"]``
    (a config objective of :meth:`~twiddle.Study.optimize` cannot set a trial's
    ``metrics``, which only cross-validation fills). When evidence can mis-rank models,
    and when to prefer cross-validation, see :func:`twiddle.compare`.

    Parameters
    ----------
    estimator : scikit-learn estimator
        Exposes ``log_evidence_`` after ``fit`` (any estimator that does works), or is a
        Pipeline whose final step does. The space's names address its parameters
        (nested ones as ``"blr__ard"``).
    space : Space
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    n_trials : int or None, default 20
        Trials of this call (one fit each); None runs until ``timeout``.
    timeout : float, optional
        Seconds after which no new trial starts, as in :meth:`~twiddle.Study.optimize`.
    sampler, seed, storage
        As in :class:`~twiddle.Study`. ``study_name`` defaults to the estimator's class
        name; the same name in the same storage resumes the study.
    n_jobs : int, default 1
        Worker processes, as in :meth:`~twiddle.Study.optimize`.
    refit : bool, default True
        Fit the best configuration again on all the data (``best_estimator_``).
    callbacks : sequence of callable
        ``callback(study, trial)`` after each finished trial, as in
        :meth:`~twiddle.Study.optimize`.

    Returns
    -------
    EvidenceTuneResult

    Raises
    ------
    InvalidParameterError
        If an argument is invalid, the space sets parameters the estimator does not
        have, or the stored study of that name is not an evidence study of this data.
    AllTrialsFailedError
        If every trial failed (e.g. the estimator has no ``log_evidence_``).

    Examples
    --------
    Select the degree of a polynomial for noisy quadratic data:

    >>> import numpy as np
    >>> from sklearn.pipeline import Pipeline
    >>> from sklearn.preprocessing import PolynomialFeatures
    >>> import twiddle
    >>> from twiddle import evidence
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(-2, 2, size=(60, 1))
    >>> y = 0.5 + x[:, 0] - 2.0 * x[:, 0] ** 2 + rng.normal(0, 0.5, size=60)
    >>> pipe = Pipeline([("poly", PolynomialFeatures(include_bias=False)),
    ...                  ("blr", evidence.BayesianLinearRegression())])
    >>> space = twiddle.Space({"poly__degree": twiddle.Int(1, 6)})
    >>> res = evidence.tune_evidence(pipe, space, x, y, n_trials=6, sampler="grid")
    >>> res.best_params_
    {'poly__degree': 2}
    """
    from twiddle._cv import _check_space_addresses, _n_samples
    from twiddle._study import Study

    where = "twiddle.evidence.tune_evidence"
    if not isinstance(space, Space):
        raise InvalidParameterError(
            f"The 'space' parameter of {where} must be a twiddle.Space. Got {space!r} instead."
        )
    check_int(n_trials, "n_trials", where, minimum=1, allow_none=True)
    check_int(n_jobs, "n_jobs", where, minimum=1)
    if not isinstance(refit, bool):
        raise InvalidParameterError(
            f"The 'refit' parameter of {where} must be a bool. Got {refit!r} instead."
        )
    if not hasattr(estimator, "fit") or not hasattr(estimator, "get_params"):
        raise InvalidParameterError(
            f"The 'estimator' parameter of {where} must be a scikit-learn estimator (with fit "
            f"and get_params). Got {estimator!r} instead."
        )
    _check_space_addresses(estimator, space, where)
    study = Study(
        name=study_name or type(estimator).__name__,
        storage=storage,
        direction="maximize",
        space=space,
        sampler=sampler,
        seed=seed,
    )
    plan = {"metric": METRIC, "n_samples": _n_samples(X)}
    attrs: Mapping[str, Any] = study._record.user_attrs
    if "cv_plan" in attrs:
        raise InvalidParameterError(
            f"Study {study.name!r} holds cross-validation scores; its values cannot be mixed "
            "with log evidence. Use a new study_name."
        )
    stored = attrs.get(PLAN_KEY)
    if stored is None:
        study.storage.set_study_user_attr(study._study_id, PLAN_KEY, plan)
    elif stored != plan:
        raise InvalidParameterError(
            f"Study {study.name!r} was run on other data ({stored}); this call has {plan}. "
            "Evidences of different data sets are not comparable: use a new study_name."
        )
    before = len(study.trials)
    study.optimize(
        _EvidenceObjective(estimator, space, X, y),
        n_trials=n_trials,
        timeout=timeout,
        n_jobs=n_jobs,
        callbacks=callbacks,
    )
    ran = [t for t in study.trials[before:] if t.state.is_finished]
    fit_times = [float(t.user_attrs.get("fit_time", math.nan)) for t in ran]
    best = study.best_trial
    best_est = None
    if refit:
        from twiddle._cv import configure

        best_est = configure(estimator, space, study.best_params)
        best_est.fit(X, y)
    return EvidenceTuneResult(
        best_params_=study.best_params,
        best_log_evidence_=float(best.value),  # type: ignore[arg-type]
        best_trial_=best,
        best_estimator_=best_est,
        study_=study,
        n_fits_=len(ran),
        fit_time_=float(sum(f for f in fit_times if math.isfinite(f))),
    )
