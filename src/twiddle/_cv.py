"""k-fold cross-validation: one configuration (``cross_validate``) or a whole search (``tune``).

The unit of work is one (configuration, fold) task. Every configuration of a study
sees the same folds, so comparisons between configurations are paired.

The reported standard error, ``std(fold scores, ddof=1) / sqrt(k)``, treats folds
as independent. They are not (training sets overlap), and no unbiased estimator
of the variance of k-fold CV exists (Bengio and Grandvalet, 2004): read it as a
yardstick for comparing configurations on the same folds, not as a confidence
interval for the generalisation error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import pickle
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from twiddle._errors import InvalidParameterError
from twiddle._schedulers import (
    CurveScheduler,
    LearningCurve,
    StandingDecisions,
    fold_curve,
    make_scheduler,
)
from twiddle._space import Space
from twiddle._tasks import Shipment, TaskResult, format_exception, worker_id
from twiddle._trial import FrozenTrial, TrialState, fold_matrix
from twiddle._validation import check_int

Scoring = str | Callable[..., Any] | Sequence[str] | Mapping[str, str | Callable[..., Any]] | None


# ----------------------------------------------------------------------------------
# The CV plan: folds and scorers, resolved once
# ----------------------------------------------------------------------------------
def resolve_scorers(
    estimator: Any, scoring: Scoring, metric: str | None, where: str
) -> tuple[dict[str, Callable[..., Any]], str]:
    """Scorers by name and the name of the one to optimise."""
    from sklearn.metrics import check_scoring, get_scorer  # keep import light

    scorers: dict[str, Callable[..., Any]]
    try:
        if scoring is None:
            scorers = {"score": check_scoring(estimator)}
        elif isinstance(scoring, str):
            scorers = {scoring: get_scorer(scoring)}
        elif callable(scoring):
            scorers = {"score": scoring}
        elif isinstance(scoring, Mapping):
            scorers = {
                str(k): get_scorer(v) if isinstance(v, str) else v for k, v in scoring.items()
            }
        elif isinstance(scoring, Sequence):
            scorers = {str(s): get_scorer(s) for s in scoring}
        else:
            raise TypeError
    except (ValueError, TypeError) as err:
        raise InvalidParameterError(
            f"The 'scoring' parameter of {where} must be None, a scorer name (see "
            "sklearn.metrics.get_scorer_names()), a callable scorer(estimator, X, y), or a list "
            f"or dict of those. Got {scoring!r} instead. ({err})"
        ) from None
    if not scorers:
        raise InvalidParameterError(f"The 'scoring' parameter of {where} names no metric.")
    if metric is None:
        metric = next(iter(scorers))
    elif metric not in scorers:
        raise InvalidParameterError(
            f"The 'metric' parameter of {where} must be one of {list(scorers)}. Got {metric!r} "
            "instead."
        )
    return scorers, metric


def resolve_splits(
    cv: Any, estimator: Any, X: Any, y: Any, groups: Any, where: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Concrete (train, test) index arrays.

    An int ``cv`` gives ``StratifiedKFold`` for classifiers and ``KFold`` otherwise (as
    scikit-learn does), except that with ``groups`` it gives ``StratifiedGroupKFold`` /
    ``GroupKFold`` so that no group is split across training and test sets.
    """
    from sklearn.base import is_classifier
    from sklearn.model_selection import (
        GroupKFold,
        StratifiedGroupKFold,
        check_cv,
    )

    classifier = is_classifier(estimator)
    if isinstance(cv, bool):
        cv = None
    if isinstance(cv, int) or cv is None:
        k = 5 if cv is None else check_int(cv, "cv", where, minimum=2)
        if groups is not None:
            splitter: Any = StratifiedGroupKFold(k) if classifier else GroupKFold(k)
        else:
            splitter = check_cv(k, y, classifier=classifier)
    else:
        try:
            splitter = check_cv(cv, y, classifier=classifier)
        except (ValueError, TypeError) as err:
            raise InvalidParameterError(
                f"The 'cv' parameter of {where} must be an int >= 2, a scikit-learn splitter or an "
                f"iterable of (train, test) index arrays. Got {cv!r} instead. ({err})"
            ) from None
    try:
        splits = [(np.asarray(tr), np.asarray(te)) for tr, te in splitter.split(X, y, groups)]
    except ValueError as err:
        raise InvalidParameterError(f"The folds cannot be made: {err}") from None
    if len(splits) < 1:
        raise InvalidParameterError(f"The 'cv' parameter of {where} gave no folds.")
    return splits


def fingerprint(splits: Sequence[tuple[np.ndarray, np.ndarray]], n_samples: int) -> str:
    """Short hash of the folds, stored with a study so a resumed study keeps its folds."""
    h = hashlib.sha256(str(n_samples).encode())
    for _, te in splits:
        h.update(np.ascontiguousarray(te, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def _n_samples(X: Any) -> int:
    return int(X.shape[0]) if hasattr(X, "shape") else len(X)


def _take(data: Any, idx: np.ndarray) -> Any:
    if data is None:
        return None
    if hasattr(data, "iloc"):
        return data.iloc[idx]
    if hasattr(data, "shape"):
        return data[idx]
    return [data[i] for i in idx]


@dataclasses.dataclass
class CVContext:
    """Everything a fold task needs apart from the configuration (shipped once per worker)."""

    estimator: Any
    X: Any
    y: Any
    splits: list[tuple[np.ndarray, np.ndarray]]
    scorers: dict[str, Callable[..., Any]]
    metric: str
    error_score: Any
    space: Space | None
    # per thread, the configured estimator its folds copy (see fit_and_score); it is
    # not shipped, and goes with the context
    templates: threading.local = dataclasses.field(
        default_factory=threading.local, repr=False, compare=False
    )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("templates", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.templates = threading.local()


def configure(estimator: Any, space: Space, config: Mapping[str, Any]) -> Any:
    """A fresh clone of ``estimator`` with a configuration's estimator parameters set
    (derived parameters computed, nested ``step__param`` names honoured)."""
    from sklearn.base import clone

    est = clone(estimator)
    params = space.to_estimator_params(space.validate(config))
    if params:
        est.set_params(**params)
    return est


# A trial's folds usually run one after the other in the same worker. scikit-learn's
# ``clone`` rebuilds an estimator parameter by parameter (a quarter of a millisecond for
# a two-step pipeline), a large part of a search's own time on millisecond fits; so the
# first fold of a configuration clones and configures the estimator and keeps its
# pickle (the *template*, per thread, on the CVContext), and the next folds of the same
# configuration unpickle a copy (a twentieth of the cost). The copy is what a clone
# would be: the template is a fresh, unfitted clone whose parameters are clones too
# (``clone`` parts sub-estimators, so it holds none twice). Estimators that cannot be
# pickled, and those with their own cloning (``__sklearn_clone__``, e.g. a frozen
# fitted step, which ``clone`` shares instead of copying), are cloned for every fold.
def _params_key(params: Mapping[str, Any]) -> bytes | None:
    try:
        return pickle.dumps(sorted(params.items()), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an unpicklable or unorderable value: no template
        return None


def _clones_plainly(est: Any) -> bool:
    """Whether ``clone`` copies ``est`` and every estimator in it parameter by parameter."""
    from sklearn.base import BaseEstimator

    plain = BaseEstimator.__sklearn_clone__
    try:
        objects = [est, *est.get_params(deep=True).values()]
    except Exception:
        return False
    for obj in objects:
        own = getattr(type(obj), "__sklearn_clone__", None)
        if own is not None and own is not plain:
            return False
    return True


def _template_copy(ctx: CVContext, key: bytes | None) -> Any:
    """A copy of this thread's template for ``ctx`` if it was made for ``key``, or None."""
    t = ctx.templates
    if key is None or getattr(t, "key", None) != key:
        return None
    try:
        return pickle.loads(t.blob)
    except Exception:
        return None


def _keep_template(ctx: CVContext, key: bytes | None, est: Any, params: Mapping[str, Any]) -> None:
    """Keep ``est``, a clone of ``ctx.estimator`` configured with ``params`` and not yet
    fitted, as this thread's template for ``ctx``."""
    t = ctx.templates
    t.key, t.blob = None, None
    if key is None:
        return
    # a clone has the types of the original, so what holds for ctx.estimator (checked
    # once) holds for every clone, but for estimators among the parameters set
    plain = getattr(t, "plain", None)
    if plain is None:
        plain = t.plain = _clones_plainly(ctx.estimator)
    if not plain or not all(
        _clones_plainly(v)
        for v in params.values()
        if hasattr(v, "get_params") and not isinstance(v, type)
    ):
        return
    try:
        t.blob = pickle.dumps(est, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # cloned for every fold
        return
    t.key = key


def fit_and_score(ctx: CVContext, params: Mapping[str, Any], fold: int) -> TaskResult:
    """Fit a fresh copy of the configured estimator on the training part of ``fold``,
    score its test part."""
    from sklearn.base import clone

    train, test = ctx.splits[fold]
    result = TaskResult(state=TrialState.COMPLETE, fold=fold, worker=worker_id())
    key = _params_key(params)
    est = _template_copy(ctx, key)
    fresh = est is None
    est_params: dict[str, Any] = {}
    if fresh:
        est = clone(ctx.estimator)
        if ctx.space is not None:
            est_params = ctx.space.to_estimator_params(ctx.space.validate(params))
        else:
            est_params = dict(params)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if est_params:
                # parameters that are estimators are cloned, as scikit-learn's searches
                # do: the caller's objects are never fitted, and no fold shares them
                est.set_params(**clone(est_params, safe=False))
            if fresh:
                t_keep = time.perf_counter()
                _keep_template(ctx, key, est, est_params)
                t0 += time.perf_counter() - t_keep  # not part of the fit
            est.fit(_take(ctx.X, train), _take(ctx.y, train))
        except Exception as err:
            result.fit_time = time.perf_counter() - t0
            if isinstance(ctx.error_score, str) and ctx.error_score == "raise":
                result.state = TrialState.FAIL
            result.fail_reason = f"fold {fold}: fitting failed\n{format_exception(err)}"
            score = np.nan if isinstance(ctx.error_score, str) else float(ctx.error_score)
            result.scores = {name: score for name in ctx.scorers}
        else:
            result.fit_time = time.perf_counter() - t0
            t1 = time.perf_counter()
            X_test, y_test = _take(ctx.X, test), _take(ctx.y, test)
            for name, scorer in ctx.scorers.items():
                try:
                    result.scores[name] = float(scorer(est, X_test, y_test))
                except Exception as err:
                    if isinstance(ctx.error_score, str) and ctx.error_score == "raise":
                        result.state = TrialState.FAIL
                    result.fail_reason = f"fold {fold}: scoring {name!r} failed\n" + (
                        format_exception(err)
                    )
                    result.scores[name] = (
                        np.nan if isinstance(ctx.error_score, str) else float(ctx.error_score)
                    )
            result.score_time = time.perf_counter() - t1
    seen: list[str] = []
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in seen:
            seen.append(text)
    result.warnings = seen[:5]
    return result


@dataclasses.dataclass
class FoldTask:
    """One (configuration, fold) unit of work."""

    context: Any  # Shipment of a CVContext, or the CVContext itself
    params: dict[str, Any]
    fold: int

    def __call__(self) -> TaskResult:
        ctx = self.context.obj if isinstance(self.context, Shipment) else self.context
        return fit_and_score(ctx, self.params, self.fold)


def _summary(scores: np.ndarray) -> tuple[float, float, float]:
    finite = scores[np.isfinite(scores)]
    if finite.size != scores.size or scores.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.mean(scores))
    std = float(np.std(scores, ddof=1)) if scores.size > 1 else math.nan
    se = std / math.sqrt(scores.size) if scores.size > 1 else math.nan
    return mean, std, se


class CVEvaluator:
    """Turns a trial into k fold tasks and their scores into the trial's record.

    With a ``scheduler``, :meth:`decide` may stop a trial after some of its folds;
    scores are "higher is better" unless ``maximize=False``. ``others`` holds every
    trial's fold scores by number, with its state: a resumed study's finished trials
    are passed in, :meth:`partial` and :meth:`combine` keep it up to date. A
    :class:`~twiddle.FoldRacing` compares the trial with the incumbent and fits its
    variance prior to the COMPLETE trials' folds (:attr:`history`); a learning-curve
    scheduler (:class:`~twiddle.SuccessiveHalving`, :class:`~twiddle.MedianStopping`,
    :class:`~twiddle.Hyperband`) compares the trial's fold curve
    (:func:`~twiddle._schedulers.fold_curve`) with those of all the other trials,
    finished and running.
    """

    def __init__(
        self,
        ctx: CVContext,
        ship: bool,
        scheduler: Any = None,
        maximize: bool = True,
        others: Mapping[int, tuple[TrialState, Sequence[float | None]]] | None = None,
    ) -> None:
        self.ctx = ctx
        self.n_tasks = len(ctx.splits)
        self.context: Any = Shipment(ctx) if ship else ctx
        self.scheduler = scheduler
        self.maximize = maximize
        # every trial's fold scores so far, by number, with its state
        self.others: dict[int, tuple[TrialState, tuple[float | None, ...]]] = {
            n: (state, tuple(scores)) for n, (state, scores) in (others or {}).items()
        }
        self._decisions = (
            StandingDecisions(scheduler) if isinstance(scheduler, CurveScheduler) else None
        )

    @property
    def history(self) -> list[tuple[float | None, ...]]:
        """The fold scores of the COMPLETE trials (fold racing's variance prior)."""
        return [s for state, s in self.others.values() if state is TrialState.COMPLETE]

    def make_task(self, trial: FrozenTrial, index: int, seed: int) -> FoldTask:
        return FoldTask(self.context, dict(trial.params), index)

    def partial(self, trial: FrozenTrial, results: Sequence[TaskResult | None]) -> dict[str, Any]:
        """Store fold scores as they arrive (a crash keeps what was done)."""
        m = self.ctx.metric
        scores = tuple(None if r is None else r.scores.get(m, math.nan) for r in results)
        self.others[trial.number] = (TrialState.RUNNING, scores)
        return {"fold_scores": scores}

    def decide(
        self,
        trial: FrozenTrial,
        results: Sequence[TaskResult | None],
        incumbent: FrozenTrial | None,
    ) -> dict[str, Any] | None:
        """Scheduler hook: the fields of the trial stopped now (PRUNED), or None to go on.

        Folds that failed hard leave the decision to :meth:`combine`. A stopped trial
        keeps the scores of its done folds (None for the others), its value is their
        mean, and ``system_attrs["racing"]`` (fold racing) or ``system_attrs["schedule"]``
        (a learning-curve scheduler, whose trials also record their fold curve as
        ``intermediate``) holds the scheduler's decision.
        """
        if self.scheduler is None:
            return None
        if any(r is not None and r.state is TrialState.FAIL for r in results):
            return None
        m = self.ctx.metric
        scores = [None if r is None else r.scores.get(m, math.nan) for r in results]
        if isinstance(self.scheduler, CurveScheduler):
            return self._decide_by_curve(trial, results, scores)
        if incumbent is None or incumbent.number == trial.number:
            return None
        decision = self.scheduler.decide(
            scores, incumbent.fold_scores, maximize=self.maximize, history=self.history
        )
        if not decision["stop"]:
            return None
        racing = {k: v for k, v in decision.items() if k not in ("stop", "reason")}
        racing["incumbent"] = incumbent.number
        return self._stopped(trial, results, decision["mean"], "racing", racing)

    def _decide_by_curve(
        self,
        trial: FrozenTrial,
        results: Sequence[TaskResult | None],
        scores: Sequence[float | None],
    ) -> dict[str, Any] | None:
        """A learning-curve scheduler's decision on the trial's fold curve."""
        assert self._decisions is not None
        number = trial.number
        curve = fold_curve(scores)
        if not curve:
            return None  # the first fold has not come in yet

        def others() -> list[LearningCurve]:
            return [
                LearningCurve(fold_curve(s), state, n)
                for n, (state, s) in self.others.items()
                if n != number and s
            ]

        direction = "maximize" if self.maximize else "minimize"
        decision = self._decisions.decide(curve, others, direction, number=number)
        if decision is None or not decision["stop"]:
            return None
        info = {k: v for k, v in decision.items() if k != "stop"}
        info["rule"] = type(self.scheduler).__name__
        done = [s for s in scores if s is not None and math.isfinite(s)]
        fields = self._stopped(trial, results, float(np.mean(done)), "schedule", info)
        fields["intermediate"] = curve
        return fields

    def _stopped(
        self,
        trial: FrozenTrial,
        results: Sequence[TaskResult | None],
        value: float,
        key: str,
        decision: dict[str, Any],
    ) -> dict[str, Any]:
        """The fields of a trial stopped after the folds in ``results``."""
        fields = self.combine(trial, results)
        fields.pop("reraise", None)
        fields["state"] = TrialState.PRUNED
        fields["value"] = value
        fields["fail_reason"] = None
        fields["system_attrs"] = {**fields["system_attrs"], key: decision}
        self.others[trial.number] = (TrialState.PRUNED, fields["fold_scores"])
        return fields

    def combine(self, trial: FrozenTrial, results: Sequence[TaskResult | None]) -> dict[str, Any]:
        m = self.ctx.metric
        rs = [r for r in results if r is not None]
        fold_scores = tuple(
            (r.scores.get(m, math.nan) if r.scores else math.nan) if r is not None else None
            for r in results
        )
        metrics: dict[str, float] = {}
        for name in self.ctx.scorers:
            arr = np.array([r.scores.get(name, math.nan) for r in rs], dtype=float)
            mean, std, se = _summary(arr)
            if name != m:
                metrics[f"{name}_mean"] = mean
            metrics[f"{name}_std"] = std
            metrics[f"{name}_se"] = se
        metrics["fit_time"] = float(sum(r.fit_time for r in rs))
        metrics["score_time"] = float(sum(r.score_time for r in rs))
        fields: dict[str, Any] = {"fold_scores": fold_scores, "metrics": metrics}
        warn = sorted({w for r in rs for w in r.warnings})
        attrs = dict(trial.system_attrs)
        if warn:
            attrs["warnings"] = warn[:5]
        workers = sorted({r.worker for r in rs if r.worker})
        if workers:
            fields["worker"] = ",".join(workers)
        errors = [r.fail_reason for r in rs if r.fail_reason]
        hard = [r for r in rs if r.state is TrialState.FAIL]
        primary = np.array([s if s is not None else math.nan for s in fold_scores], dtype=float)
        mean, _, _ = _summary(primary)
        if hard:
            fields["state"] = TrialState.FAIL
            fields["fail_reason"] = "\n".join(e for e in errors if e)
            if isinstance(self.ctx.error_score, str) and self.ctx.error_score == "raise":
                fields["reraise"] = RuntimeError(
                    f"A fold of trial {trial.number} failed and error_score='raise':\n"
                    + fields["fail_reason"]
                )
        elif not math.isfinite(mean):
            fields["state"] = TrialState.FAIL
            fields["fail_reason"] = "\n".join(errors) or (
                f"The mean {m!r} score over folds is not finite ({mean}); check the scorer."
            )
        else:
            fields["state"] = TrialState.COMPLETE
            fields["value"] = mean
            self.others[trial.number] = (TrialState.COMPLETE, fold_scores)
            if self._decisions is not None:
                fields["intermediate"] = fold_curve(fold_scores)
                self._decisions.forget(trial.number)
            if errors:
                attrs["fold_errors"] = errors
                fields["fail_reason"] = None
        if fields["state"] is TrialState.FAIL:
            self.others.pop(trial.number, None)
        fields["system_attrs"] = attrs
        return fields


# ----------------------------------------------------------------------------------
# cross_validate: one configuration
# ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CVResult:
    """Scores of one configuration on every fold.

    Attributes
    ----------
    scores : dict of str -> ndarray of shape (n_splits,)
        Test score of each metric on each fold.
    metric : str
        The primary metric (``mean``, ``std`` and ``se`` refer to it).
    fit_time, score_time : ndarray of shape (n_splits,)
        Seconds spent fitting and scoring each fold.
    errors : tuple of (str or None)
        Traceback text of folds that failed (their score is ``error_score``).
    """

    scores: dict[str, np.ndarray]
    metric: str
    fit_time: np.ndarray
    score_time: np.ndarray
    errors: tuple[str | None, ...]

    @property
    def fold_scores(self) -> np.ndarray:
        return self.scores[self.metric]

    @property
    def mean(self) -> float:
        return _summary(self.fold_scores)[0]

    @property
    def std(self) -> float:
        """Sample standard deviation over folds (ddof=1)."""
        return _summary(self.fold_scores)[1]

    @property
    def se(self) -> float:
        """Standard error of the mean over folds, std / sqrt(k) (see the module notes)."""
        return _summary(self.fold_scores)[2]

    def __repr__(self) -> str:
        return (
            f"CVResult({self.metric}: {self.mean:.6g} ± {self.se:.2g} (se) over "
            f"{self.fold_scores.size} folds)"
        )


def cross_validate(
    estimator: Any,
    X: Any,
    y: Any = None,
    *,
    cv: Any = 5,
    scoring: Scoring = None,
    metric: str | None = None,
    groups: Any = None,
    params: Mapping[str, Any] | None = None,
    error_score: float | str = np.nan,
) -> CVResult:
    """Score one configuration of ``estimator`` by k-fold cross-validation.

    Parameters
    ----------
    estimator : scikit-learn estimator
        Cloned for every fold; never fitted in place.
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,), optional
    cv : int, splitter or iterable, default 5
        See :func:`resolve_splits` (stratified for classifiers, grouped with ``groups``).
    scoring : str, callable, list or dict, optional
        scikit-learn scorer(s); None uses ``estimator.score``.
    metric : str, optional
        With several scorers, the primary one (default: the first).
    groups : array-like of shape (n_samples,), optional
    params : dict, optional
        Hyperparameters set on the clone before fitting.
    error_score : float or "raise", default nan
        Score of a fold whose fit or scoring raises; "raise" re-raises.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> import twiddle
    >>> X, y = load_iris(return_X_y=True)
    >>> res = twiddle.cross_validate(LogisticRegression(max_iter=500), X, y, cv=5)
    >>> res.fold_scores.shape, 0.9 < res.mean <= 1.0
    ((5,), True)
    """
    where = "twiddle.cross_validate"
    if not (isinstance(error_score, str) and error_score == "raise") and not isinstance(
        error_score, (int, float)
    ):
        raise InvalidParameterError(
            f"The 'error_score' parameter of {where} must be a number or 'raise'. Got "
            f"{error_score!r} instead."
        )
    scorers, metric = resolve_scorers(estimator, scoring, metric, where)
    splits = resolve_splits(cv, estimator, X, y, groups, where)
    ctx = CVContext(estimator, X, y, splits, scorers, metric, error_score, None)
    results = []
    for k in range(len(splits)):
        r = fit_and_score(ctx, dict(params or {}), k)
        if r.state is TrialState.FAIL:
            raise RuntimeError(r.fail_reason)
        if r.fail_reason:
            warnings.warn(
                f"A fold failed; its score is set to error_score={error_score!r}.\n"
                + r.fail_reason,
                RuntimeWarning,
                stacklevel=2,
            )
        results.append(r)
    return CVResult(
        scores={n: np.array([r.scores[n] for r in results]) for n in scorers},
        metric=metric,
        fit_time=np.array([r.fit_time for r in results]),
        score_time=np.array([r.score_time for r in results]),
        errors=tuple(r.fail_reason for r in results),
    )


# ----------------------------------------------------------------------------------
# tune: a whole search
# ----------------------------------------------------------------------------------
@dataclasses.dataclass
class TuneResult:
    """Outcome of :func:`tune`.

    Attributes
    ----------
    best_params_ : dict
        Hyperparameters (space dimensions) of the best configuration.
    best_score_ : float
        Its mean CV score (of the primary metric).
    best_score_se_ : float
        Standard error of that mean over folds.
    best_trial_ : FrozenTrial
    best_estimator_ : estimator or None
        A clone with the best configuration, refit on all the data (None if refit=False).
    study_ : Study
    cv_results_ : dict
        scikit-learn-style table: ``params``, ``mean_test_score``, ``std_test_score``,
        ``se_test_score``, ``rank_test_score``, ``split{k}_test_score``, ``state``.
    """

    best_params_: dict[str, Any]
    best_score_: float
    best_score_se_: float
    best_trial_: FrozenTrial
    best_estimator_: Any
    study_: Any
    cv_results_: dict[str, Any]


def cv_results_table(
    trials: Sequence[FrozenTrial], n_splits: int, maximize: bool
) -> dict[str, Any]:
    """scikit-learn ``cv_results_``-style dict over finished trials (NaN for missing folds)."""
    rows = [t for t in trials if t.state.is_finished]
    out: dict[str, Any] = {"params": [dict(t.params) for t in rows]}
    folds = fold_matrix(rows, n_splits)
    for k in range(n_splits):
        out[f"split{k}_test_score"] = folds[:, k]
    value = np.array(
        [
            t.value if t.state is TrialState.COMPLETE and t.value is not None else np.nan
            for t in rows
        ]
    )
    out["mean_test_score"] = value
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        std = np.nanstd(folds, axis=1, ddof=1) if n_splits > 1 else np.full(len(rows), np.nan)
    out["std_test_score"] = std
    out["se_test_score"] = std / math.sqrt(n_splits)
    key = np.where(np.isnan(value), -np.inf if maximize else np.inf, value)
    order = np.argsort(-key if maximize else key, kind="stable")
    rank = np.empty(len(rows), dtype=int)
    rank[order] = np.arange(1, len(rows) + 1)
    out["rank_test_score"] = rank
    out["state"] = [t.state.value for t in rows]
    out["number"] = np.array([t.number for t in rows], dtype=int)
    return out


def tune(
    estimator: Any,
    space: Space,
    X: Any,
    y: Any = None,
    *,
    cv: Any = 5,
    scoring: Scoring = None,
    metric: str | None = None,
    groups: Any = None,
    n_trials: int | None = 20,
    timeout: float | None = None,
    sampler: Any = "auto",
    seed: Any = None,
    n_jobs: int = 1,
    executor: Any = None,
    storage: Any = None,
    study_name: str | None = None,
    error_score: float | str = np.nan,
    refit: bool = True,
    callbacks: Sequence[Callable[..., None]] = (),
    scheduler: Any = None,
) -> TuneResult:
    """Tune ``estimator``'s hyperparameters over ``space`` by k-fold cross-validation.

    Every configuration is scored on the same folds; each fold score is stored on
    its trial, and the trial value is the mean. Higher scores are better (scikit-learn
    scorers are "greater is better").

    Parameters
    ----------
    estimator : scikit-learn estimator
        Fixed hyperparameters are set on it; the space's names address its
        parameters (nested ones as ``"clf__C"``).
    space : Space
    X, y, groups : array-like
    cv, scoring, metric, error_score
        As in :func:`cross_validate`.
    n_trials, timeout, n_jobs, executor, callbacks
        As in :meth:`Study.optimize`. ``n_trials`` counts trials of this call.
    sampler, seed, storage
        As in :class:`Study`. ``study_name`` defaults to the estimator's class name;
        the same name in the same storage resumes the study.
    refit : bool, default True
        Refit the best configuration on all the data (``best_estimator_``).
    scheduler : None, "racing", "halving", "median" or a scheduler, default None
        Stop configurations early; a stopped one is recorded as PRUNED with the folds
        it reached. ``"racing"`` is ``FoldRacing()``: after each fold (from the first,
        once three other trials with distinct fold scores are complete), a
        configuration confidently worse than the best complete one on the same folds
        is stopped, at a stated false-stop
        rate (see :class:`~twiddle.FoldRacing`). ``"halving"`` and ``"median"``
        (``SuccessiveHalving()``, ``MedianStopping()``, or such an object, or a
        ``Hyperband``) use folds as the resource: a trial's value after m folds is
        its mean over the first m, compared with the other trials' at m (rank-based,
        with no error rate; racing is the cautious choice). None runs every fold of
        every trial.

    Returns
    -------
    TuneResult

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.svm import SVC
    >>> import twiddle
    >>> X, y = load_iris(return_X_y=True)
    >>> space = twiddle.Space({"C": twiddle.Float(1e-2, 1e2, log=True)})
    >>> res = twiddle.tune(SVC(), space, X, y, cv=5, n_trials=8, seed=0)
    >>> 0.9 < res.best_score_ <= 1.0
    True
    """
    from twiddle._study import Study  # the study module imports this one

    where = "twiddle.tune"
    schedule = make_scheduler(scheduler, where)
    if not isinstance(space, Space):
        raise InvalidParameterError(
            f"The 'space' parameter of {where} must be a twiddle.Space. Got {space!r} instead."
        )
    if not (isinstance(error_score, str) and error_score == "raise") and not isinstance(
        error_score, (int, float)
    ):
        raise InvalidParameterError(
            f"The 'error_score' parameter of {where} must be a number or 'raise'. Got "
            f"{error_score!r} instead."
        )
    _check_space_addresses(estimator, space, where)
    scorers, metric = resolve_scorers(estimator, scoring, metric, where)
    splits = resolve_splits(cv, estimator, X, y, groups, where)
    study = Study(
        name=study_name or type(estimator).__name__,
        storage=storage,
        direction="maximize",
        space=space,
        sampler=sampler,
        seed=seed,
    )
    plan = {"n_splits": len(splits), "folds": fingerprint(splits, _n_samples(X)), "metric": metric}
    stored = study._record.user_attrs.get("cv_plan")
    if stored is None:
        study.storage.set_study_user_attr(study._study_id, "cv_plan", plan)
    elif stored != plan:
        raise InvalidParameterError(
            f"Study {study.name!r} was run with other folds or another metric ({stored}); this "
            f"call has {plan}. The data, cv or scoring changed: use a new study_name so scores "
            "stay comparable."
        )
    ship = executor is not None or n_jobs > 1
    ctx = CVContext(estimator, X, y, splits, scorers, metric, error_score, space)
    others = {
        t.number: (t.state, t.fold_scores)
        for t in study.trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.fold_scores
    }
    study._run(
        CVEvaluator(ctx, ship, scheduler=schedule, others=others),
        n_trials=n_trials,
        timeout=timeout,
        n_jobs=n_jobs,
        executor=executor,
        callbacks=callbacks,
    )
    best = study.best_trial
    best_est = None
    if refit:
        best_est = configure(estimator, space, study.best_params)
        best_est.fit(X, y)
    se = best.value_se
    return TuneResult(
        best_params_=study.best_params,
        best_score_=float(best.value),  # type: ignore[arg-type]
        best_score_se_=math.nan if se is None else se,
        best_trial_=best,
        best_estimator_=best_est,
        study_=study,
        cv_results_=cv_results_table(study.trials, len(splits), maximize=True),
    )


def _check_space_addresses(estimator: Any, space: Space, where: str) -> None:
    """Every estimator parameter the space sets must exist (nested ``a__b`` included)."""
    valid = set(estimator.get_params(deep=True))
    consumed = {i for d in space.derived.values() for i in d.inputs}
    names = [n for n in space if n not in consumed] + list(space.derived)
    bad = [n for n in names if n not in valid]
    if bad:
        raise InvalidParameterError(
            f"The space of {where} sets {bad}, which {type(estimator).__name__} does not have. "
            f"Valid parameters include: {sorted(valid)[:20]}."
        )
