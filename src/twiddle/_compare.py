"""Cross-validation against evidence: the same space, tuned both ways, scored on held-out data."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable
from typing import Any

from twiddle._cv import Scoring, TuneResult, resolve_scorers, tune
from twiddle._errors import InvalidParameterError
from twiddle._space import Space
from twiddle._validation import check_int

__all__ = ["CompareResult", "compare"]


@dataclasses.dataclass(frozen=True)
class MethodReport:
    """What one tuning method chose and what it cost.

    Attributes
    ----------
    method : {"cv", "evidence"}
    best_params : dict
        The chosen hyperparameters.
    objective : float
        The tuning objective of that choice: mean CV score, or log evidence.
    test_score : float
        Held-out score of the choice refit on the whole training part.
    n_fits : int
        Model fits of the search (n_trials x k for CV, n_trials for evidence; the
        final refit is not counted).
    fit_seconds : float
        Seconds spent in those fits.
    search_seconds : float
        Wall-clock seconds of the whole search (fits, scoring, sampler, bookkeeping).
    """

    method: str
    best_params: dict[str, Any]
    objective: float
    test_score: float
    n_fits: int
    fit_seconds: float
    search_seconds: float


@dataclasses.dataclass
class CompareResult:
    """Outcome of :func:`compare`: both choices side by side.

    Attributes
    ----------
    cv : MethodReport
    evidence : MethodReport
    metric : str
        Name of the held-out (and CV) score.
    n_train, n_test : int
        Sizes of the training part and of the held-out test set.
    cv_result_ : TuneResult
        The full result of :func:`twiddle.tune` (study, refit estimator, table).
    evidence_result_ : EvidenceTuneResult
        The full result of :func:`twiddle.evidence.tune_evidence`.
    """

    cv: MethodReport
    evidence: MethodReport
    metric: str
    n_train: int
    n_test: int
    cv_result_: TuneResult
    evidence_result_: Any

    def summary(self) -> str:
        """A plain-text table: one column per method, one row per quantity."""
        names = sorted(set(self.cv.best_params) | set(self.evidence.best_params))
        rows: list[tuple[str, str, str]] = []
        for name in names:
            rows.append(
                (
                    name,
                    _cell(self.cv.best_params.get(name, "-")),
                    _cell(self.evidence.best_params.get(name, "-")),
                )
            )
        rows += [
            ("tuning objective", "mean CV score", "log evidence"),
            ("objective value", _cell(self.cv.objective), _cell(self.evidence.objective)),
            (f"held-out {self.metric}", _cell(self.cv.test_score), _cell(self.evidence.test_score)),
            ("fits", str(self.cv.n_fits), str(self.evidence.n_fits)),
            ("fit seconds", f"{self.cv.fit_seconds:.3f}", f"{self.evidence.fit_seconds:.3f}"),
            (
                "search seconds",
                f"{self.cv.search_seconds:.3f}",
                f"{self.evidence.search_seconds:.3f}",
            ),
        ]
        head = ("", "cross-validation", "evidence")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]

        def line(r: tuple[str, str, str]) -> str:
            cells = zip(r, widths, strict=True)
            text = "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells))
            return text.rstrip()

        rule = "  ".join("-" * w for w in widths)
        title = (
            f"Tuning by cross-validation vs by evidence ({self.n_train} training, "
            f"{self.n_test} held-out samples)"
        )
        return "\n".join([title, line(head), rule, *(line(r) for r in rows)])

    def __repr__(self) -> str:
        return self.summary()


def _fit_seconds(times: Iterable[float | None]) -> float:
    return float(sum(t for t in times if t is not None and math.isfinite(t)))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def compare(
    estimator: Any,
    space: Space,
    X: Any,
    y: Any,
    *,
    cv: Any = 5,
    n_trials: int = 20,
    test_size: float = 0.25,
    seed: int = 0,
    scoring: Scoring = None,
    sampler: Any = "auto",
) -> CompareResult:
    """Tune the same space by cross-validation and by evidence; score both on held-out data.

    A random ``test_size`` share of the samples is held out. On the rest,
    :func:`twiddle.tune` chooses hyperparameters by k-fold cross-validation and
    :func:`twiddle.evidence.tune_evidence` chooses them by the log evidence of one fit
    on all of it, each with ``n_trials`` trials from the same sampler and seed. Each
    choice is refit on the whole training part and scored on the held-out part.

    **When evidence shines.** It is cheap (one fit per configuration instead of k), it
    uses all the data for every fit, and for a well-specified Bayesian model, such as
    the degree of a polynomial under Bayesian linear regression, it ranks models well
    and has an automatic Occam's razor.

    **When evidence can mis-rank models** (Lotfi et al., 2022, "Bayesian model
    selection, the marginal likelihood, and generalization"). The evidence
    ``log p(D | h) = sum_i log p(y_i | y_<i, h)`` measures how well the *prior*
    predicts the data from scratch, starting with no data at all. It therefore
    penalises a model whose prior learns slowly, even when its posterior, after
    seeing all the data, generalises better; it answers "which prior explains the
    data" rather than "which fitted model predicts new data". It is sensitive to
    misspecified priors (a vague weight prior lowers the evidence without changing
    predictions much), it depends on how the inner hyperparameters are treated
    (maximised, or integrated over their hyperprior), and approximations such as
    Laplace's add their own error.

    **Prefer cross-validation** when the prior may be misspecified, with small data
    and flexible models, and whenever the goal is predictive performance under a
    given scoring (cross-validation estimates exactly that, at k times the cost).

    Parameters
    ----------
    estimator : scikit-learn regressor
        Exposes ``log_evidence_`` after ``fit`` (or its Pipeline's final step does).
    space : Space
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    cv : int, splitter or iterable, default 5
        Folds of the cross-validation, as in :func:`twiddle.tune`.
    n_trials : int, default 20
        Trials of each method.
    test_size : float, default 0.25
        Share of the samples held out, in (0, 1).
    seed : int, default 0
        Seed of the split, of both studies and of shuffled folds.
    scoring : str or callable, optional
        One scikit-learn scorer used for both cross-validation and the held-out score;
        None uses the estimator's ``score`` (R^2 for regressors).
    sampler : str or Sampler, default "auto"
        Sampler of both studies, as in :class:`~twiddle.Study` (``"grid"`` tries every
        configuration of a small discrete space).

    Returns
    -------
    CompareResult
        ``print(result)`` shows the table; ``result.cv`` and ``result.evidence`` hold
        the numbers.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import Pipeline
    >>> from sklearn.preprocessing import PolynomialFeatures
    >>> import twiddle
    >>> from twiddle import evidence
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(-2, 2, size=(100, 1))
    >>> y = 0.5 + x[:, 0] - 2.0 * x[:, 0] ** 2 + rng.normal(0, 0.5, size=100)
    >>> pipe = Pipeline([("poly", PolynomialFeatures(include_bias=False)),
    ...                  ("blr", evidence.BayesianLinearRegression())])
    >>> space = twiddle.Space({"poly__degree": twiddle.Int(1, 5)})
    >>> res = twiddle.compare(pipe, space, x, y, cv=5, n_trials=5, sampler="grid")
    >>> res.evidence.best_params, res.cv.n_fits, res.evidence.n_fits
    ({'poly__degree': 2}, 25, 5)
    >>> print(res)  # doctest: +SKIP
    Tuning by cross-validation vs by evidence (75 training, 25 held-out samples)
                      cross-validation      evidence
    ----------------  ----------------  ------------
    poly__degree                     4             2
    tuning objective     mean CV score  log evidence
    objective value           0.951413      -64.2647
    held-out score            0.983389      0.985423
    fits                            25             5
    fit seconds                  0.042         0.003
    search seconds               0.123         0.022
    """
    from sklearn.model_selection import train_test_split

    from twiddle.evidence._tuning import tune_evidence  # keep `import twiddle` light

    where = "twiddle.compare"
    check_int(n_trials, "n_trials", where, minimum=1)
    check_int(seed, "seed", where, minimum=0)
    if (
        isinstance(test_size, bool)
        or not isinstance(test_size, (int, float))
        or not 0.0 < test_size < 1.0
    ):
        raise InvalidParameterError(
            f"The 'test_size' parameter of {where} must be a float in (0, 1). Got "
            f"{test_size!r} instead."
        )
    if scoring is not None and not (isinstance(scoring, str) or callable(scoring)):
        raise InvalidParameterError(
            f"The 'scoring' parameter of {where} must be None, a scorer name or a callable "
            f"scorer(estimator, X, y). Got {scoring!r} instead."
        )
    scorers, metric = resolve_scorers(estimator, scoring, None, where)
    scorer = scorers[metric]
    if isinstance(cv, int) and not isinstance(cv, bool):
        from sklearn.model_selection import KFold

        check_int(cv, "cv", where, minimum=2)
        cv = KFold(cv, shuffle=True, random_state=seed)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, random_state=seed)

    t0 = time.perf_counter()
    by_cv = tune(
        estimator,
        space,
        X_tr,
        y_tr,
        cv=cv,
        scoring=scoring,
        n_trials=n_trials,
        sampler=sampler,
        seed=seed,
        study_name="compare-cv",
    )
    cv_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    by_ev = tune_evidence(
        estimator,
        space,
        X_tr,
        y_tr,
        n_trials=n_trials,
        sampler=sampler,
        seed=seed,
        study_name="compare-evidence",
    )
    ev_seconds = time.perf_counter() - t0

    cv_trials = [t for t in by_cv.study_.trials if t.state.is_finished]
    cv_report = MethodReport(
        method="cv",
        best_params=dict(by_cv.best_params_),
        objective=by_cv.best_score_,
        test_score=float(scorer(by_cv.best_estimator_, X_te, y_te)),
        n_fits=sum(t.n_folds_done for t in cv_trials),
        fit_seconds=_fit_seconds(t.metrics.get("fit_time") for t in cv_trials),
        search_seconds=cv_seconds,
    )
    ev_report = MethodReport(
        method="evidence",
        best_params=dict(by_ev.best_params_),
        objective=by_ev.best_log_evidence_,
        test_score=float(scorer(by_ev.best_estimator_, X_te, y_te)),
        n_fits=by_ev.n_fits_,
        fit_seconds=by_ev.fit_time_,
        search_seconds=ev_seconds,
    )
    return CompareResult(
        cv=cv_report,
        evidence=ev_report,
        metric=metric,
        n_train=len(y_tr),
        n_test=len(y_te),
        cv_result_=by_cv,
        evidence_result_=by_ev,
    )
