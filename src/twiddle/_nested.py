"""Nested cross-validation: an unbiased estimate of a whole tuning procedure.

The best mean CV score of a search (``best_score_``) is optimistically biased: it
is the maximum over many noisy estimates, and the configuration was chosen because
its estimate came out high (Cawley and Talbot, 2010; Varma and Simon, 2006). Nested
CV scores the *procedure* "tune by inner CV, refit the best" on data the procedure
never saw: for each outer fold, tune on the outer-training part, refit the chosen
configuration on it, and score it on the outer test fold.

Notation: ``k_outer`` outer folds; ``outer_scores_[i]`` is the test score of the model
tuned and refit without outer fold ``i``; ``inner_best_scores_[i]`` is that search's
``best_score_``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from twiddle._cv import _take, resolve_scorers, resolve_splits, tune
from twiddle._errors import InvalidParameterError
from twiddle._space import Space
from twiddle._validation import check_int, seed_entropy

_WHERE = "twiddle.nested_cv"


@dataclasses.dataclass(frozen=True)
class NestedCVResult:
    """Outcome of :func:`nested_cv`.

    Attributes
    ----------
    outer_scores_ : ndarray of shape (k_outer,)
        Test score, on each outer fold, of the configuration tuned and refit on the
        rest of the data.
    inner_best_scores_ : ndarray of shape (k_outer,)
        ``best_score_`` of each inner search (mean inner-CV score of its best configuration).
    best_params_per_fold_ : list of dict
        The configuration each inner search chose.
    metric : str
        Name of the scorer.
    """

    outer_scores_: np.ndarray
    inner_best_scores_: np.ndarray
    best_params_per_fold_: list[dict[str, Any]]
    metric: str

    @property
    def mean_(self) -> float:
        """Mean outer score: the estimate of the tuning procedure's performance."""
        return float(np.mean(self.outer_scores_))

    @property
    def std_(self) -> float:
        """Sample standard deviation of the outer scores (ddof=1; NaN with one fold)."""
        k = self.outer_scores_.size
        return float(np.std(self.outer_scores_, ddof=1)) if k > 1 else math.nan

    @property
    def se_(self) -> float:
        """``std_ / sqrt(k_outer)``; folds are not independent, so read it as a yardstick."""
        return self.std_ / math.sqrt(self.outer_scores_.size)

    @property
    def optimism_(self) -> float:
        """``mean(inner_best_scores_) - mean_``: how much ``best_score_`` overstates the score."""
        return float(np.mean(self.inner_best_scores_)) - self.mean_

    def summary(self) -> str:
        """A few lines: the estimate, the inner best scores, the optimism, fold by fold."""
        lines = [
            f"nested CV over {self.outer_scores_.size} outer folds ({self.metric})",
            f"  outer estimate : {self.mean_:.4g} ± {self.se_:.2g} (se), std {self.std_:.2g}",
            f"  inner best mean: {float(np.mean(self.inner_best_scores_)):.4g}",
            f"  optimism       : {self.optimism_:+.4g} (inner best - outer)",
        ]
        for i, (o, b, p) in enumerate(
            zip(
                self.outer_scores_, self.inner_best_scores_, self.best_params_per_fold_, strict=True
            )
        ):
            lines.append(f"  fold {i}: outer {o:.4g}, inner best {b:.4g}, {p}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"NestedCVResult({self.metric}: {self.mean_:.4g} ± {self.se_:.2g} (se) over "
            f"{self.outer_scores_.size} outer folds; optimism of best_score_ "
            f"{self.optimism_:+.3g})"
        )


def nested_cv(
    estimator: Any,
    space: Space,
    X: Any,
    y: Any = None,
    *,
    outer_cv: Any = 5,
    inner_cv: Any = 5,
    scoring: str | Callable[..., Any] | None = None,
    n_trials: int = 20,
    sampler: Any = "auto",
    seed: int | np.random.Generator | None = None,
    n_jobs: int = 1,
    groups: Any = None,
) -> NestedCVResult:
    """Estimate the performance of tuning ``estimator`` over ``space``, by nested CV.

    For each outer fold: :func:`twiddle.tune` on the outer-training part with
    ``inner_cv`` folds, refit the best configuration on the whole outer-training part,
    and score it on the outer test fold. The mean outer score estimates what the tuning
    procedure achieves on new data; a search's own ``best_score_`` overstates it, by
    ``optimism_`` on average.

    Parameters
    ----------
    estimator : scikit-learn estimator
    space : Space
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,), optional
    outer_cv : int, splitter or iterable, default 5
        Outer folds (stratified for classifiers; grouped with ``groups``).
    inner_cv : int or splitter, default 5
        Folds of each inner search, made on the outer-training part (an iterable of
        index arrays cannot be, since it indexes the whole data).
    scoring : str, callable or None
        One scikit-learn scorer, used inside and outside; None uses ``estimator.score``.
    n_trials, sampler, n_jobs
        As in :func:`twiddle.tune`, for each inner search.
    seed : int, numpy.random.Generator or None
        Seeds of the inner searches are derived from it (one per outer fold).
    groups : array-like of shape (n_samples,), optional
        Group labels, used by the outer and the inner folds.

    Returns
    -------
    NestedCVResult

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> import twiddle
    >>> X, y = load_iris(return_X_y=True)
    >>> space = twiddle.Space({"max_depth": twiddle.Int(1, 4)})
    >>> res = twiddle.nested_cv(DecisionTreeClassifier(random_state=0), space, X, y,
    ...                         outer_cv=3, inner_cv=3, n_trials=4, sampler="grid", seed=0)
    >>> res.outer_scores_.shape, 0.85 < res.mean_ <= 1.0
    ((3,), True)
    """
    if not isinstance(space, Space):
        raise InvalidParameterError(
            f"The 'space' parameter of {_WHERE} must be a twiddle.Space. Got {space!r} instead."
        )
    check_int(n_trials, "n_trials", _WHERE, minimum=1)
    check_int(n_jobs, "n_jobs", _WHERE, minimum=1)
    if isinstance(scoring, (Mapping, list, tuple, set)):
        raise InvalidParameterError(
            f"The 'scoring' parameter of {_WHERE} must be None, a scorer name or a callable "
            f"scorer. Got {scoring!r} instead."
        )
    if not (
        inner_cv is None
        or (isinstance(inner_cv, int) and not isinstance(inner_cv, bool))
        or hasattr(inner_cv, "split")
    ):
        raise InvalidParameterError(
            f"The 'inner_cv' parameter of {_WHERE} must be an int >= 2 or a scikit-learn "
            f"splitter. Got {inner_cv!r} instead."
        )
    if isinstance(inner_cv, int) and not isinstance(inner_cv, bool):
        check_int(inner_cv, "inner_cv", _WHERE, minimum=2)
    entropy = seed_entropy(seed, "seed", _WHERE)
    scorers, metric = resolve_scorers(estimator, scoring, None, _WHERE)
    scorer = scorers[metric]
    splits = resolve_splits(outer_cv, estimator, X, y, groups, _WHERE)
    fold_seeds = np.random.SeedSequence(entropy).generate_state(len(splits), dtype=np.uint64)

    outer = np.empty(len(splits))
    inner = np.empty(len(splits))
    chosen: list[dict[str, Any]] = []
    for i, (train, test) in enumerate(splits):
        res = tune(
            estimator,
            space,
            _take(X, train),
            _take(y, train),
            cv=inner_cv,
            scoring=scoring,
            groups=_take(groups, train),
            n_trials=n_trials,
            # a Sampler instance may keep state: each outer fold gets a fresh copy
            sampler=sampler if isinstance(sampler, str) else copy.deepcopy(sampler),
            seed=int(fold_seeds[i] % (2**63 - 1)),
            n_jobs=n_jobs,
            storage="memory",
            study_name=f"nested_cv-outer-{i}",
            refit=True,
        )
        outer[i] = float(scorer(res.best_estimator_, _take(X, test), _take(y, test)))
        inner[i] = res.best_score_
        chosen.append(dict(res.best_params_))
    return NestedCVResult(
        outer_scores_=outer,
        inner_best_scores_=inner,
        best_params_per_fold_=chosen,
        metric=metric,
    )


__all__ = ["NestedCVResult", "nested_cv"]
