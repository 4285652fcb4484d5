"""A scikit-learn search estimator backed by twiddle: :class:`TuneSearchCV`.

``TuneSearchCV`` is a drop-in for :class:`sklearn.model_selection.GridSearchCV` and
:class:`~sklearn.model_selection.RandomizedSearchCV`: it is a scikit-learn estimator
(``get_params``, ``set_params`` and ``clone`` work), its ``fit`` runs
:func:`twiddle.tune`, and it exposes the usual fitted attributes (``cv_results_``,
``best_params_``, ``best_estimator_`` ...) and delegates prediction to the refit best
estimator.

This module imports scikit-learn when it is imported; ``import twiddle`` does not
import it.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import get_tags
from sklearn.utils.metaestimators import available_if

from twiddle._cv import resolve_scorers, tune
from twiddle._errors import InvalidParameterError
from twiddle._space import Space
from twiddle._trial import FrozenTrial, TrialState, fold_matrix
from twiddle._validation import check_int

__all__ = ["TuneSearchCV"]

_WHERE = "TuneSearchCV"


def _tune_has_scheduler() -> bool:
    """Whether this version of :func:`twiddle.tune` takes a ``scheduler``."""
    return "scheduler" in inspect.signature(tune).parameters


def _estimator_has(attr: str) -> Callable[[Any], bool]:
    """Whether ``attr`` can be delegated: to ``best_estimator_`` if fitted, else ``estimator``."""

    def check(self: TuneSearchCV) -> bool:
        if not self.refit:
            raise AttributeError(
                f"This TuneSearchCV instance was created with refit=False; {attr} is available "
                "only after refitting on the best hyperparameters. Refit an estimator yourself "
                "with best_params_."
            )
        getattr(self.best_estimator_ if hasattr(self, "best_estimator_") else self.estimator, attr)
        return True

    return check


def _one_se_index(
    means: np.ndarray,
    folds: np.ndarray,
    params: Sequence[Mapping[str, Any]],
    key: Callable[[Mapping[str, Any]], Any],
) -> int:
    """Index chosen by the one-standard-error rule (higher scores are better).

    The threshold is ``best mean - SE(best)``, with ``SE = std(folds, ddof=1) / sqrt(k)``
    of the best configuration (Breiman et al., 1984; Hastie et al., 2009, section 7.10).
    Among configurations whose mean reaches it, the one with the smallest ``key`` wins;
    ties go to the higher mean, then to the earlier trial.
    """
    finite = np.isfinite(means)
    best = int(np.argmax(np.where(finite, means, -np.inf)))
    scores = folds[best][np.isfinite(folds[best])]
    se = float(np.std(scores, ddof=1) / math.sqrt(scores.size)) if scores.size > 1 else 0.0
    threshold = means[best] - (se if math.isfinite(se) else 0.0)
    candidates = [i for i in range(means.size) if finite[i] and means[i] >= threshold]
    try:
        keyed = [(key(dict(params[i])), -means[i], i) for i in candidates]
        return int(min(keyed)[2])
    except Exception as err:
        raise InvalidParameterError(
            "The complexity key of select=('one_se', key) of TuneSearchCV must map a "
            "configuration dict to a sortable value (smaller = simpler). It failed on the "
            f"configurations within one standard error of the best: {err!r}"
        ) from None


def _param_arrays(params: Sequence[Mapping[str, Any]]) -> dict[str, np.ma.MaskedArray]:
    """``param_<name>`` masked arrays, masked where a configuration lacks the name.

    Same dtypes as scikit-learn: the inferred numeric dtype, else ``object``.
    """
    names: dict[str, None] = {}
    for p in params:
        names.update(dict.fromkeys(p))
    out: dict[str, np.ma.MaskedArray] = {}
    for name in names:
        present = {i: p[name] for i, p in enumerate(params) if name in p}
        try:
            arr = np.array(list(present.values()))
        except ValueError:
            dtype = np.dtype(object)
        else:
            dtype = arr.dtype if arr.dtype.kind != "U" and arr.ndim == 1 else np.dtype(object)
        # Fill a plain array, then mask once: setting a masked array item by item costs
        # tens of microseconds per item (a visible share of a fast search's overhead).
        data = np.empty(len(params), dtype=dtype)
        mask = np.ones(len(params), dtype=bool)
        for i, v in present.items():
            data[i] = v
            mask[i] = False
        out[f"param_{name}"] = np.ma.MaskedArray(data, mask=mask)
    return out


def _rank(means: np.ndarray) -> np.ndarray:
    """scikit-learn's ranking: 1 is best, ties share the lowest rank, NaN ranks last."""
    from scipy.stats import rankdata

    if means.size == 0:
        return np.zeros(0, dtype=np.int32)
    if np.isnan(means).all():
        return np.ones(means.size, dtype=np.int32)
    lowest = np.nanmin(means)
    filled = np.where(np.isnan(means), lowest - 1.0, means)
    return np.asarray(rankdata(-filled, method="min"), dtype=np.int32)


class TuneSearchCV(MetaEstimatorMixin, BaseEstimator):
    """Hyperparameter search by k-fold cross-validation, as a scikit-learn estimator.

    A drop-in for :class:`~sklearn.model_selection.GridSearchCV`: ``fit`` runs
    :func:`twiddle.tune` over ``space`` (Bayesian optimisation by default), then
    refits the chosen configuration on all the data. Higher scores are better, as for
    every scikit-learn scorer.

    Parameters
    ----------
    estimator : scikit-learn estimator
        Cloned for every fold. The space's names address its parameters (nested ones as
        ``"clf__C"`` for a Pipeline).
    space : twiddle.Space
        The hyperparameters to search.
    cv : int, splitter or iterable, default 5
        Folds, as in :func:`twiddle.cross_validate` (stratified for classifiers; grouped
        when ``fit`` gets ``groups``).
    scoring : str, callable or None, default None
        One scikit-learn scorer; None uses ``estimator.score``. Several metrics are not
        supported yet.
    n_trials : int, default 20
        Number of configurations to try (a finite grid stops earlier when exhausted).
    sampler : str or twiddle.Sampler, default "auto"
        As in :class:`twiddle.Study` ("auto", "gp", "tpe", "sobol", "random", "grid").
        The default's Gaussian process spends about 7 to 20 ms on a proposal; where a
        whole trial (all its folds) fits in well under a second, that is a visible
        share of the search's time, and ``"tpe"`` (about 1 to 3 ms) costs less; in the
        README's benchmarks its choices scored between random search's and the GP's.
    scheduler : None, "racing", "halving", "median" or a scheduler object, default None
        Stops configurations early, as in :func:`twiddle.tune`: ``"racing"`` by a paired
        test against the incumbent at a stated false-stop rate (``twiddle.FoldRacing``),
        ``"halving"`` and ``"median"`` by rank with folds as the resource
        (``twiddle.SuccessiveHalving``, ``twiddle.MedianStopping``; ``twiddle.Hyperband``
        as an object). Where that version of twiddle has no schedulers only None is
        accepted. Stopped trials are rows with ``state`` "PRUNED", a NaN mean and NaN for
        the folds they did not reach.
    n_jobs : int or None, default 1
        Worker processes; None means 1, -1 means one per CPU.
    refit : bool, default True
        Refit the chosen configuration on all the data (``best_estimator_``); needed for
        ``predict`` and the other delegated methods.
    random_state : int, numpy.random.Generator, numpy.random.RandomState or None
        Seed of the sampler. Same seed (and ``n_jobs=1``), same trials.
    error_score : float or "raise", default nan
        Score of a fold whose fit or scoring raises; "raise" re-raises.
    storage : str, twiddle.Storage or None, default None
        Where trials are kept; None keeps them in memory. Each ``fit`` starts a new study
        with a unique name (``study_.name``), so refitting never resumes an old search.
    select : "best", "one_se" or ("one_se", key), default "best"
        How the configuration to refit is chosen. "best" takes the highest mean score.
        The one-standard-error rule takes, among the configurations whose mean is within
        one standard error of the best mean (the SE of the best configuration's fold
        scores), the simplest one; ``key(params) -> sortable`` gives a configuration's
        complexity (smaller is simpler; ties go to the higher mean). Complexity cannot
        be read off a space in general (a larger ``C`` is more complex, a larger
        ``alpha`` simpler), so the key is required: plain "one_se" raises an error
        that says so.

    Attributes
    ----------
    cv_results_ : dict of str -> ndarray or list
        The keys of scikit-learn's search results for one metric: ``params``,
        ``param_<name>`` (masked arrays), ``split{k}_test_score``, ``mean_test_score``,
        ``std_test_score`` (ddof=0, as scikit-learn), ``rank_test_score``,
        ``mean_fit_time``, ``mean_score_time``, ``std_fit_time`` and ``std_score_time``
        (NaN: twiddle records each trial's total fit and score time, not every fold's).
        twiddle adds ``se_test_score`` (``std(ddof=1) / sqrt(k)``), ``state`` (trial
        state name) and ``number`` (trial number in ``study_``). One row per finished
        trial.
    best_index_ : int
        Row of ``cv_results_`` of the chosen configuration.
    best_params_ : dict
        Its estimator parameters.
    best_score_ : float
        Its mean CV score.
    best_estimator_ : estimator
        A clone with ``best_params_``, fitted on all the data (only with ``refit=True``).
    refit_time_ : float
        Seconds spent refitting (0.0 with ``refit=False``).
    n_splits_ : int
        Number of CV folds.
    n_fold_fits_ : int
        Number of fold fits performed (folds with a score, summed over trials).
    scorer_ : callable
        The scorer used in CV and by :meth:`score`.
    study_ : twiddle.Study
        The study with every trial and fold score.
    classes_ : ndarray
        ``best_estimator_.classes_`` (classifiers).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> import twiddle
    >>> from twiddle.sklearn import TuneSearchCV
    >>> X, y = load_iris(return_X_y=True)
    >>> space = twiddle.Space({"max_depth": twiddle.Int(1, 4)})
    >>> search = TuneSearchCV(DecisionTreeClassifier(random_state=0), space,
    ...                       sampler="grid", n_trials=4, random_state=0).fit(X, y)
    >>> sorted(search.cv_results_["param_max_depth"].tolist())
    [1, 2, 3, 4]
    >>> search.best_params_["max_depth"] >= 2, search.predict(X[:2]).shape
    (True, (2,))
    """

    def __init__(
        self,
        estimator: Any,
        space: Space,
        *,
        cv: Any = 5,
        scoring: str | Callable[..., Any] | None = None,
        n_trials: int = 20,
        sampler: Any = "auto",
        scheduler: Any = None,
        n_jobs: int | None = 1,
        refit: bool = True,
        random_state: Any = None,
        error_score: float | str = np.nan,
        storage: Any = None,
        select: str | tuple[str, Callable[[Mapping[str, Any]], Any]] = "best",
    ) -> None:
        self.estimator = estimator
        self.space = space
        self.cv = cv
        self.scoring = scoring
        self.n_trials = n_trials
        self.sampler = sampler
        self.scheduler = scheduler
        self.n_jobs = n_jobs
        self.refit = refit
        self.random_state = random_state
        self.error_score = error_score
        self.storage = storage
        self.select = select

    # -- validation ----------------------------------------------------------------------
    def _check_params(self) -> tuple[int, Any, Callable[[Mapping[str, Any]], Any] | None]:
        """Validated (n_jobs, seed, one_se key or None); raises InvalidParameterError."""
        if not isinstance(self.space, Space):
            raise InvalidParameterError(
                f"The 'space' parameter of {_WHERE} must be a twiddle.Space. Got "
                f"{self.space!r} instead."
            )
        if not (hasattr(self.estimator, "fit") and hasattr(self.estimator, "get_params")):
            raise InvalidParameterError(
                f"The 'estimator' parameter of {_WHERE} must be a scikit-learn estimator (with "
                f"fit and get_params). Got {self.estimator!r} instead."
            )
        check_int(self.n_trials, "n_trials", _WHERE, minimum=1)
        if self.scheduler is not None:
            if not _tune_has_scheduler():
                raise InvalidParameterError(
                    f"The 'scheduler' parameter of {_WHERE} must be None. Got "
                    f"{self.scheduler!r} instead. Schedulers arrive with fold racing; until then "
                    "every trial runs all its folds."
                )
            from twiddle._schedulers import make_scheduler  # type: ignore[import-not-found,unused-ignore]

            make_scheduler(self.scheduler, _WHERE)
        if self.n_jobs is None:
            n_jobs = 1
        elif isinstance(self.n_jobs, numbers.Integral) and self.n_jobs == -1:
            n_jobs = os.cpu_count() or 1
        else:
            ok = isinstance(self.n_jobs, numbers.Integral) and not isinstance(self.n_jobs, bool)
            if not ok or self.n_jobs < 1:
                raise InvalidParameterError(
                    f"The 'n_jobs' parameter of {_WHERE} must be an int >= 1, -1 or None. Got "
                    f"{self.n_jobs!r} instead."
                )
            n_jobs = int(self.n_jobs)
        if not isinstance(self.refit, (bool, np.bool_)):
            raise InvalidParameterError(
                f"The 'refit' parameter of {_WHERE} must be a bool. Got {self.refit!r} instead."
            )
        if isinstance(self.scoring, (Mapping, list, tuple, set)):
            raise InvalidParameterError(
                f"The 'scoring' parameter of {_WHERE} must be None, a scorer name or a callable "
                f"scorer. Got {self.scoring!r} instead. Several metrics are not supported yet; "
                "use twiddle.tune for them."
            )
        if not (isinstance(self.error_score, str) and self.error_score == "raise") and (
            not isinstance(self.error_score, numbers.Real) or isinstance(self.error_score, bool)
        ):
            raise InvalidParameterError(
                f"The 'error_score' parameter of {_WHERE} must be a number or 'raise'. Got "
                f"{self.error_score!r} instead."
            )
        seed: Any = self.random_state
        if isinstance(seed, np.random.RandomState):
            seed = int(seed.randint(0, 2**31 - 1))
        key: Callable[[Mapping[str, Any]], Any] | None = None
        select = self.select
        expected = "'best', 'one_se' or ('one_se', key) with key(params) -> sortable complexity"
        if isinstance(select, str) and select == "best":
            pass
        elif isinstance(select, str) and select == "one_se":
            raise InvalidParameterError(
                f"The 'select' parameter of {_WHERE} is 'one_se', but which configuration is "
                "simplest cannot be read off a space (a larger C is more complex, a larger "
                "alpha simpler). Give the complexity as select=('one_se', key), e.g. "
                "key=lambda p: p['max_depth'] (smaller = simpler)."
            )
        elif (
            isinstance(select, tuple)
            and len(select) == 2
            and isinstance(select[0], str)
            and select[0] == "one_se"
            and callable(select[1])
        ):
            key = select[1]
        else:
            raise InvalidParameterError(
                f"The 'select' parameter of {_WHERE} must be {expected}. Got {select!r} instead."
            )
        return n_jobs, seed, key

    # -- fitting -------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, *, groups: Any = None) -> TuneSearchCV:
        """Search the space by cross-validation on ``X, y``; refit the chosen configuration.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), optional
        groups : array-like of shape (n_samples,), optional
            Group labels: no group is split between training and test folds.

        Returns
        -------
        self : TuneSearchCV
        """
        n_jobs, seed, key = self._check_params()
        for stale in ("best_estimator_", "n_features_in_", "feature_names_in_"):
            if stale in self.__dict__:
                delattr(self, stale)
        scorers, metric = resolve_scorers(self.estimator, self.scoring, None, _WHERE)
        extra: dict[str, Any] = {}
        if self.scheduler is not None:
            extra["scheduler"] = self.scheduler
        name = f"TuneSearchCV-{type(self.estimator).__name__}-{uuid.uuid4().hex[:12]}"
        res = tune(
            self.estimator,
            self.space,
            X,
            y,
            cv=self.cv,
            scoring=self.scoring,
            groups=groups,
            n_trials=self.n_trials,
            sampler=self.sampler,
            seed=seed,
            n_jobs=n_jobs,
            storage="memory" if self.storage is None else self.storage,
            study_name=name,
            error_score=self.error_score,
            refit=False,
            **extra,
        )
        study = res.study_
        n_splits = sum(1 for k in res.cv_results_ if k.startswith("split"))
        trials = [t for t in study.trials if t.state.is_finished]
        results, folds = self._results_table(trials, n_splits)
        means = results["mean_test_score"]
        if key is None:
            best_index = int(np.argmax(np.where(np.isfinite(means), means, -np.inf)))
        else:
            best_index = _one_se_index(means, folds, results["params"], key)

        self.study_ = study
        self.scorer_ = scorers[metric]
        self.n_splits_ = n_splits
        self.n_fold_fits_ = int(sum(t.n_folds_done for t in study.trials))
        self.cv_results_ = results
        self.best_index_ = best_index
        self.best_params_ = dict(results["params"][best_index])
        self.best_score_ = float(means[best_index])
        self.multimetric_ = False
        self.refit_time_ = 0.0
        if self.refit:
            est = clone(self.estimator)
            if self.best_params_:
                est.set_params(**self.best_params_)
            t0 = time.perf_counter()
            est.fit(X, y)
            self.refit_time_ = time.perf_counter() - t0
            self.best_estimator_ = est
            if hasattr(est, "n_features_in_"):
                self.n_features_in_ = est.n_features_in_
            if hasattr(est, "feature_names_in_"):
                self.feature_names_in_ = est.feature_names_in_
        return self

    def _results_table(
        self, trials: Sequence[FrozenTrial], n_splits: int
    ) -> tuple[dict[str, Any], np.ndarray]:
        space = self.space
        params = [space.to_estimator_params(space.validate(t.params)) for t in trials]
        folds = fold_matrix(trials, n_splits)
        n_done = np.array([max(t.n_folds_done, 1) for t in trials], dtype=float)
        fit_time = np.array([t.metrics.get("fit_time", np.nan) for t in trials]) / n_done
        score_time = np.array([t.metrics.get("score_time", np.nan) for t in trials]) / n_done
        nan = np.full(len(trials), np.nan)
        out: dict[str, Any] = {
            "mean_fit_time": fit_time,
            "std_fit_time": nan.copy(),
            "mean_score_time": score_time,
            "std_score_time": nan.copy(),
        }
        out.update(_param_arrays(params))
        out["params"] = params
        for k in range(n_splits):
            out[f"split{k}_test_score"] = folds[:, k]
        complete = np.array([t.state is TrialState.COMPLETE for t in trials], dtype=bool)
        with np.errstate(invalid="ignore"):
            mean = np.where(complete, folds.mean(axis=1) if n_splits else nan, np.nan)
            std = np.where(complete, folds.std(axis=1) if n_splits else nan, np.nan)
            se = (
                np.where(complete, folds.std(axis=1, ddof=1) / math.sqrt(n_splits), np.nan)
                if n_splits > 1
                else nan.copy()
            )
        out["mean_test_score"] = mean
        out["std_test_score"] = std
        out["rank_test_score"] = _rank(mean)
        out["se_test_score"] = se
        out["state"] = [t.state.value for t in trials]
        out["number"] = np.array([t.number for t in trials], dtype=int)
        return out, folds

    # -- delegation ----------------------------------------------------------------------
    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "cv_results_")

    def _check_fitted(self) -> None:
        if not hasattr(self, "cv_results_"):
            raise NotFittedError(
                "This TuneSearchCV instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )

    def __sklearn_tags__(self) -> Any:
        from copy import deepcopy

        tags = super().__sklearn_tags__()
        sub = get_tags(self.estimator)
        tags.estimator_type = sub.estimator_type
        tags.classifier_tags = deepcopy(sub.classifier_tags)
        tags.regressor_tags = deepcopy(sub.regressor_tags)
        tags.input_tags.pairwise = sub.input_tags.pairwise
        tags.input_tags.sparse = sub.input_tags.sparse
        return tags

    @property
    def classes_(self) -> np.ndarray:
        """Class labels of ``best_estimator_``."""
        self._check_fitted()
        _estimator_has("classes_")(self)
        return np.asarray(self.best_estimator_.classes_)

    @available_if(_estimator_has("predict"))
    def predict(self, X: Any) -> np.ndarray:
        """``best_estimator_.predict(X)``."""
        self._check_fitted()
        return np.asarray(self.best_estimator_.predict(X))

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X: Any) -> np.ndarray:
        """``best_estimator_.predict_proba(X)``."""
        self._check_fitted()
        return np.asarray(self.best_estimator_.predict_proba(X))

    @available_if(_estimator_has("predict_log_proba"))
    def predict_log_proba(self, X: Any) -> np.ndarray:
        """``best_estimator_.predict_log_proba(X)``."""
        self._check_fitted()
        return np.asarray(self.best_estimator_.predict_log_proba(X))

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X: Any) -> np.ndarray:
        """``best_estimator_.decision_function(X)``."""
        self._check_fitted()
        return np.asarray(self.best_estimator_.decision_function(X))

    @available_if(_estimator_has("transform"))
    def transform(self, X: Any) -> Any:
        """``best_estimator_.transform(X)``."""
        self._check_fitted()
        return self.best_estimator_.transform(X)

    @available_if(_estimator_has("inverse_transform"))
    def inverse_transform(self, X: Any) -> Any:
        """``best_estimator_.inverse_transform(X)``."""
        self._check_fitted()
        return self.best_estimator_.inverse_transform(X)

    @available_if(_estimator_has("score"))
    def score(self, X: Any, y: Any = None) -> float:
        """Score of ``best_estimator_`` on ``X, y`` with the search's scorer (``scorer_``)."""
        self._check_fitted()
        return float(self.scorer_(self.best_estimator_, X, y))
