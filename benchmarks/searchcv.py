"""TuneSearchCV against RandomizedSearchCV and HalvingRandomSearchCV at equal budget.

For each Bayesmark-style task of :mod:`benchmarks.bo.ml` (a scikit-learn model on a
data set shipped with scikit-learn, 80 % / 20 % split fixed per task) and each seed,
every search runs on the 80 % with the same 5 folds (``StratifiedKFold`` or ``KFold``,
shuffled with the task's fixed seed), the same scorer (accuracy or R^2), ``n_jobs=1``
and ``refit=True``; the refitted best estimator is then scored on the 20 %.

Searches (the *method* column):

* ``random``: :class:`~sklearn.model_selection.RandomizedSearchCV`, ``n_iter=T``;
* ``halving``: :class:`~sklearn.model_selection.HalvingRandomSearchCV` with
  ``factor=3``, ``resource="n_samples"``, ``min_resources="exhaust"``,
  ``return_train_score=False`` (its default, True, scores every fold's training part
  too, which is not counted as scoring time in ``cv_results_``) and the number of
  first-round candidates chosen per task so that its total number of fold fits is the
  closest to ``T * k`` (see *Budget*);
* ``tune``: :class:`twiddle.sklearn.TuneSearchCV` with its default sampler ("auto":
  Sobol start, then the GP), ``n_trials=T``;
* ``tune-tpe`` and ``tune-random``: the same with ``sampler="tpe"`` and
  ``sampler="random"`` (the latter separates the tuner's own cost from the sampler's);
* ``tune-racing``: the default sampler with ``scheduler="racing"`` (fewer fits than
  the budget: it stops losing configurations from the first fold on (`FoldRacing()` defaults)).

Budget. The unit is one fold fit (fit on k-1 folds and score the held-out fold).
``random`` and the ``tune`` rows (but racing) make exactly ``T * k`` fits. Halving
makes ``k * sum_i n_i`` fits, where ``n_i`` is the number of candidates in round ``i``
(``n_{i+1} = ceil(n_i / 3)``); its fits in early rounds use fewer samples, so at equal
fits it spends less fitting time. The fits each search made are reported.

Spaces. The twiddle space of the task is converted for scikit-learn: a log-scale Float
to ``scipy.stats.loguniform``, a Float to ``scipy.stats.uniform``, an Int to
``scipy.stats.randint``, a log-scale Int to a log-uniform draw on
``[low - 0.5, high + 0.5]`` rounded to the nearest integer (as twiddle decodes it), and
a Categorical (or a stepped dimension) to the list of its values.

Overhead. ``overhead = (wall - refit - F) / F`` where ``wall`` is the time of ``fit``,
``refit`` is ``refit_time_`` and ``F`` is the sum of the fold fit and score times, read
from ``cv_results_``: ``sum(mean_fit_time + mean_score_time) * folds`` over the rows
(for TuneSearchCV the folds of each row are its trial's ``n_folds_done``, which is
``k`` but for stopped trials). It is measured the same way for the scikit-learn
searches. For the ``tune`` rows, the time of the sampler's ``suggest`` calls is also
measured (the sampler is wrapped in a timer), and the time spent in
:func:`twiddle.tune` itself, so that the overhead splits into sampler, driver (the
study loop and the per-fold cloning, parameter setting and bookkeeping) and the
TuneSearchCV layer (scorer resolution, the results table).

Usage::

    python benchmarks/searchcv.py             # 7 tasks, 5 seeds, 30 configurations
    python benchmarks/searchcv.py --quick     # two tasks, one seed, 10 configurations
    python benchmarks/searchcv.py --methods halving --update   # redo one method's runs

Results go to ``benchmarks/results/searchcv.json`` and ``searchcv.md`` (``--out-dir``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import sklearn  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import twiddle  # noqa: E402
import twiddle.sklearn as twiddle_sklearn  # noqa: E402
from benchmarks.bo.ml import MLTask, task_data  # noqa: E402
from benchmarks.paired import wilcoxon_p, wtl  # noqa: E402

DEFAULT_TASKS = (
    "svm-breast",
    "lr-breast",
    "knn-wine",
    "dt-digits",
    "svm-digits",
    "svm-diabetes",
    "dt-diabetes",
)
QUICK_TASKS = ("svm-breast", "dt-diabetes")
METHODS = ("random", "halving", "tune", "tune-tpe", "tune-random", "tune-racing")
BASELINES = ("random", "halving")
#: TuneSearchCV's own time must stay under this fraction of the fold fitting time.
TARGET_OVERHEAD = 0.05
HALVING_FACTOR = 3
#: Paired held-out differences smaller than this count as ties.


# ----------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------
# The twiddle space as scikit-learn distributions
# ----------------------------------------------------------------------------------
class LogInt:
    """Integers drawn log-uniformly on ``[low - 0.5, high + 0.5]`` and rounded."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = int(low), int(high)

    def rvs(self, size: Any = None, random_state: Any = None) -> Any:
        from scipy.stats import loguniform

        u = loguniform(self.low - 0.5, self.high + 0.5).rvs(size=size, random_state=random_state)
        v = np.clip(np.round(u), self.low, self.high).astype(int)
        return int(v) if np.ndim(v) == 0 else v

    def __repr__(self) -> str:
        return f"LogInt({self.low}, {self.high})"


def sklearn_distributions(space: twiddle.Space) -> dict[str, Any]:
    """``param_distributions`` for scikit-learn with the same marginals as ``space``."""
    from scipy import stats

    out: dict[str, Any] = {}
    for name in space:
        dim = space[name]
        if isinstance(dim, twiddle.Categorical):
            out[name] = list(dim.choices)
        elif isinstance(dim, twiddle.Float) and dim.step is None:
            out[name] = (
                stats.loguniform(dim.low, dim.high)
                if dim.log
                else stats.uniform(dim.low, dim.high - dim.low)
            )
        elif isinstance(dim, twiddle.Int) and dim.log:
            out[name] = LogInt(dim.low, dim.high)
        elif isinstance(dim, twiddle.Int) and dim.step == 1:
            out[name] = stats.randint(dim.low, dim.high + 1)
        elif isinstance(dim, (twiddle.Float, twiddle.Int)):
            out[name] = dim.grid()
        else:
            raise ValueError(f"No scikit-learn distribution for {name}: {dim!r}.")
    return out


# ----------------------------------------------------------------------------------
# Budget of the halving search
# ----------------------------------------------------------------------------------
def halving_rounds(
    n_candidates: int, n_samples: int, n_splits: int, n_classes: int | None, factor: int
) -> list[int]:
    """Candidates per round of HalvingRandomSearchCV with ``min_resources="exhaust"``.

    Follows ``BaseSuccessiveHalving._run_search`` of scikit-learn 1.x
    (``aggressive_elimination=False``, ``max_resources="auto"``).
    """
    min_res = n_splits * 2 * (n_classes or 1)
    n_required = 1 + math.floor(math.log(n_candidates, factor))
    min_res = max(min_res, n_samples // factor ** (n_required - 1))
    n_possible = 1 + math.floor(math.log(n_samples // min_res, factor))
    rounds, n = [], n_candidates
    for _ in range(min(n_possible, n_required)):
        rounds.append(n)
        n = math.ceil(n / factor)
    return rounds


def halving_candidates(
    budget: int, n_samples: int, n_splits: int, n_classes: int | None, factor: int
) -> int:
    """First-round candidates whose total fits are the closest to ``budget`` (ties: fewer)."""
    best, best_gap = 1, math.inf
    for n in range(1, budget + 1):
        gap = abs(
            n_splits * sum(halving_rounds(n, n_samples, n_splits, n_classes, factor)) - budget
        )
        if gap < best_gap:
            best, best_gap = n, gap
    return best


# ----------------------------------------------------------------------------------
# Timing hooks for TuneSearchCV
# ----------------------------------------------------------------------------------
class TimedSampler(twiddle.Sampler):
    """Delegates to a sampler and adds up the seconds of its ``suggest`` calls."""

    def __init__(self, inner: twiddle.Sampler) -> None:
        self.inner = inner
        self.name = inner.name
        self.seconds = 0.0

    @property
    def last_info(self) -> dict[str, Any]:
        return dict(getattr(self.inner, "last_info", {}) or {})

    def suggest(self, space: Any, history: Any, rng: Any, n: int = 1) -> list[Any]:
        t0 = time.perf_counter()
        try:
            out: list[Any] = self.inner.suggest(space, history, rng, n)
        finally:
            self.seconds += time.perf_counter() - t0
        return out


class TuneTimer:
    """Wraps ``twiddle.sklearn.tune`` to time the calls TuneSearchCV makes of it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._orig: Callable[..., Any] = twiddle_sklearn.tune

    def __enter__(self) -> TuneTimer:
        orig = self._orig

        @functools.wraps(orig)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return orig(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        twiddle_sklearn.tune = timed
        return self

    def __exit__(self, *exc: Any) -> None:
        twiddle_sklearn.tune = self._orig


# ----------------------------------------------------------------------------------
# One search
# ----------------------------------------------------------------------------------
def run_one(name: str, method: str, seed: int, n_trials: int, k: int) -> dict[str, Any]:
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.metrics import get_scorer
    from sklearn.model_selection import HalvingRandomSearchCV, RandomizedSearchCV

    task = MLTask(name)
    est, space, prefix = task.addressed()
    X_tr, X_te, y_tr, y_te = task_data(name)
    cv = task.folds(k)
    out: dict[str, Any] = {"task": name, "method": method, "seed": seed}
    sampler: TimedSampler | None = None
    search: Any
    if method == "random":
        search = RandomizedSearchCV(
            est,
            sklearn_distributions(space),
            n_iter=n_trials,
            cv=cv,
            scoring=task.scoring,
            random_state=seed,
        )
    elif method == "halving":
        n_classes = None if task.regression else len(np.unique(y_tr))
        n_cand = halving_candidates(n_trials * k, len(y_tr), k, n_classes, HALVING_FACTOR)
        out["halving_rounds"] = halving_rounds(n_cand, len(y_tr), k, n_classes, HALVING_FACTOR)
        search = HalvingRandomSearchCV(
            est,
            sklearn_distributions(space),
            n_candidates=n_cand,
            factor=HALVING_FACTOR,
            resource="n_samples",
            min_resources="exhaust",
            cv=cv,
            return_train_score=False,
            scoring=task.scoring,
            random_state=seed,
        )
    elif method.startswith("tune"):
        kind = {"tune": "auto", "tune-racing": "auto"}.get(method, method.removeprefix("tune-"))
        sampler = TimedSampler(twiddle.AutoSampler() if kind == "auto" else _named(kind))
        search = twiddle_sklearn.TuneSearchCV(
            est,
            space,
            cv=cv,
            scoring=task.scoring,
            n_trials=n_trials,
            sampler=sampler,
            scheduler="racing" if method == "tune-racing" else None,
            random_state=seed,
        )
    else:
        raise ValueError(f"Unknown method {method!r}; known: {', '.join(METHODS)}.")

    with warnings.catch_warnings(), TuneTimer() as tune_timer:
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        search.fit(X_tr, y_tr)
        wall = time.perf_counter() - t0
        holdout = float(get_scorer(task.scoring)(search.best_estimator_, X_te, y_te))

    res = search.cv_results_
    per_row = np.asarray(res["mean_fit_time"]) + np.asarray(res["mean_score_time"])
    if sampler is not None:
        done = {t.number: t.n_folds_done for t in search.study_.trials}
        folds = np.array([done[int(n)] for n in res["number"]], dtype=float)
    else:
        folds = np.full(per_row.shape, float(search.n_splits_))
    fit_score = float(np.sum(per_row * folds))
    out.update(
        {
            "fits": int(np.sum(folds)),
            "configurations": len(res["params"]),
            "best_cv": float(search.best_score_),
            "holdout": holdout,
            "best_params": {key[len(prefix) :]: v for key, v in search.best_params_.items()},
            "wall": wall,
            "refit": float(search.refit_time_),
            "fit_score": fit_score,
            "overhead": (wall - search.refit_time_ - fit_score) / fit_score,
        }
    )
    if sampler is not None:
        out["sampler_seconds"] = sampler.seconds
        out["tune_seconds"] = tune_timer.seconds
        out["layer_seconds"] = wall - search.refit_time_ - tune_timer.seconds
        out["driver_seconds"] = tune_timer.seconds - sampler.seconds - fit_score
    return out


def _named(kind: str) -> twiddle.Sampler:
    from twiddle._samplers import make_sampler

    return make_sampler(kind)


# ----------------------------------------------------------------------------------
# Summaries
# ----------------------------------------------------------------------------------
def _paired(rows: list[dict[str, Any]], method: str, base: str) -> list[tuple[str, int, float]]:
    """(task, seed, held-out of ``method`` - held-out of ``base``) for every pair."""
    by = {(r["task"], r["method"], r["seed"]): r["holdout"] for r in rows}
    return [
        (t, s, by[(t, method, s)] - by[(t, base, s)])
        for (t, m, s) in sorted(by)
        if m == method and (t, base, s) in by
    ]


def summarise(rows: list[dict[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    per_task: dict[str, Any] = {}
    for t in [*tasks, "all"]:
        per_task[t] = {}
        for m in methods:
            rs = [r for r in rows if r["method"] == m and (t == "all" or r["task"] == t)]
            if not rs:
                continue
            fs = sum(r["fit_score"] for r in rs)
            s: dict[str, Any] = {
                "runs": len(rs),
                "holdout": float(np.mean([r["holdout"] for r in rs])),
                "best_cv": float(np.mean([r["best_cv"] for r in rs])),
                "fits": float(np.mean([r["fits"] for r in rs])),
                "wall": float(np.mean([r["wall"] for r in rs])),
                "fit_score": float(np.mean([r["fit_score"] for r in rs])),
                "overhead": sum(r["wall"] - r["refit"] - r["fit_score"] for r in rs) / fs,
                "overhead_median": float(np.median([r["overhead"] for r in rs])),
            }
            if "sampler_seconds" in rs[0]:
                s["sampler_share"] = sum(r["sampler_seconds"] for r in rs) / fs
                s["driver_share"] = sum(r["driver_seconds"] for r in rs) / fs
                s["layer_share"] = sum(r["layer_seconds"] for r in rs) / fs
            per_task[t][m] = s
    comparisons: dict[str, Any] = {}
    for m in (m for m in methods if m.startswith("tune")):
        for base in (b for b in BASELINES if b in methods):
            pairs = _paired(rows, m, base)
            if not pairs:
                continue
            entry: dict[str, Any] = {}
            for t in [*tasks, "all"]:
                d = [x for (tt, _, x) in pairs if t == "all" or tt == t]
                w, tie, loss = wtl(d)
                entry[t] = {
                    "pairs": len(d),
                    "mean_diff": float(np.mean(d)),
                    "wins": w,
                    "ties": tie,
                    "losses": loss,
                    "wilcoxon_p": wilcoxon_p(d),
                }
            task_means = [entry[t]["mean_diff"] for t in tasks]
            entry["tasks"] = dict(zip(("wins", "ties", "losses"), wtl(task_means), strict=True))
            comparisons[f"{m} vs {base}"] = entry
    return {"per_task": per_task, "comparisons": comparisons}


# ----------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def markdown(meta: dict[str, Any], summary: dict[str, Any], methods: Sequence[str]) -> str:
    per_task, comps = summary["per_task"], summary["comparisons"]
    tasks = [t for t in per_task if t != "all"]
    a = per_task["all"]
    lines = [
        "# TuneSearchCV against RandomizedSearchCV and HalvingRandomSearchCV",
        "",
        f"Run {meta['date']} with `{meta['command'].strip()}`: {len(tasks)} tasks, "
        f"{meta['seeds']} seeds, {meta['trials']} configurations x {meta['folds']} folds "
        f"= {meta['trials'] * meta['folds']} fold fits per search; Python {meta['python']}, "
        f"scikit-learn {meta['sklearn']}, twiddle {meta['twiddle']}; BLAS threads 1, "
        f"n_jobs=1; load average {meta['load_start']:.1f} at the start and "
        f"{meta['load_end']:.1f} at the end; {meta['seconds'] / 60:.1f} min in all.",
        "",
    ]
    for u in meta.get("updates", []):
        added = set(u.get("added", ()))
        verb = "added" if added == set(u["methods"]) else "redone"
        if added and added != set(u["methods"]):
            verb = f"redone or added ({', '.join(f'`{m}`' for m in u['added'])} new)"
        lines += [
            f"The runs of {', '.join(f'`{m}`' for m in u['methods'])} were then {verb} "
            f"{u['date']} with `{u['command'].strip()}` ({u['seconds'] / 60:.1f} min; load "
            f"average {u['load_start']:.1f} at the start, {u['load_end']:.1f} at the end).",
            "",
        ]
    lines += [
        "Protocol (details in `benchmarks/searchcv.py`): each task is a scikit-learn model "
        "on a bundled data set with a fixed 80 % / 20 % split; every search runs on the 80 % "
        "with the same folds and scorer (accuracy or R^2), refits its chosen configuration "
        "on the 80 % and is scored on the 20 % (*held-out*). *Best CV* is the search's "
        "`best_score_`.",
        "",
        "**Budget.** Equal number of fold fits: `random` and the `tune` rows make "
        f"{meta['trials']} x {meta['folds']} fits. `halving` (`factor=3`, "
        '`resource="n_samples"`, `min_resources="exhaust"`, `return_train_score=False`) '
        "gets the number of first-round "
        "candidates whose total fits (folds x the sum of candidates over rounds) are "
        "closest to that; its early rounds fit on fewer samples, so it spends less fitting "
        "time for the same fits. `tune-racing` stops losing configurations from the "
        "first fold on (`FoldRacing()` defaults) "
        "and makes fewer fits (an extra row, not at equal budget). The *fits* column is "
        "what each search made.",
        "",
        "**Overhead** = (wall time of `fit` - `refit_time_` - F) / F, where F is the sum of "
        "the fold fit and score times from `cv_results_` (`mean_fit_time + "
        "mean_score_time`, times the folds of the row). Same definition for the "
        "scikit-learn searches. For the `tune` rows it splits into the *sampler* (time in "
        "the sampler's `suggest`), the *driver* (the rest of `twiddle.tune`: study loop, "
        "cloning the estimator and setting parameters for every fold, trial bookkeeping) "
        "and the *layer* (`TuneSearchCV.fit` outside `twiddle.tune`). twiddle's fold fit "
        "time includes `set_params`, scikit-learn's does not; both exclude the clone.",
        "",
        "## Overall (mean over all tasks and seeds)",
        "",
        "| method | held-out | best CV | fits | wall (s) | fit+score (s) | overhead | "
        "sampler / driver / layer |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in methods:
        if m in a:
            lines.append(_row(m, a[m]))
    lines += [
        "",
        "Overhead is pooled: total non-fitting time over total fitting time.",
        "",
        "## Held-out score: paired comparison across seeds",
        "",
        "Per task, *W/T/L* counts the seeds where the TuneSearchCV row's held-out score is "
        "higher / equal / lower than the baseline's with the same seed; *mean diff* is the "
        "mean paired difference. *Tasks* counts the tasks by the sign of their mean "
        "difference. *p* is the two-sided Wilcoxon signed-rank test over the non-tied "
        "pairs.",
        "",
        "| comparison | " + " | ".join(tasks) + " | all (W/T/L, mean diff, p) | tasks W/T/L |",
        "|---|" + "---|" * len(tasks) + "---|---|",
    ]
    for name, e in comps.items():
        cells = [
            f"{e[t]['wins']}/{e[t]['ties']}/{e[t]['losses']} ({e[t]['mean_diff']:+.4f})"
            for t in tasks
        ]
        al = e["all"]
        tk = e["tasks"]
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {al['wins']}/{al['ties']}/{al['losses']}, {al['mean_diff']:+.4f}, "
            f"p = {al['wilcoxon_p']:.2g} | {tk['wins']}/{tk['ties']}/{tk['losses']} |"
        )
    lines += ["", "## Targets", ""]
    lines += _targets(summary, methods)
    lines += ["", "## Per task (mean over seeds)", ""]
    for t in tasks:
        lines += [
            f"### {t}",
            "",
            "| method | held-out | best CV | fits | wall (s) | fit+score (s) | overhead | "
            "sampler / driver / layer |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for m in methods:
            if m in per_task[t]:
                lines.append(_row(m, per_task[t][m]))
        lines.append("")
    return "\n".join(lines)


def _row(m: str, s: dict[str, Any]) -> str:
    split = (
        f"{_pct(s['sampler_share'])} / {_pct(s['driver_share'])} / {_pct(s['layer_share'])}"
        if "sampler_share" in s
        else ""
    )
    return (
        f"| {m} | {s['holdout']:.4f} | {s['best_cv']:.4f} | {s['fits']:.0f} | {s['wall']:.2f} | "
        f"{s['fit_score']:.2f} | {_pct(s['overhead'])} | {split} |"
    )


def _targets(summary: dict[str, Any], methods: Sequence[str]) -> list[str]:
    """The targets' table.

    Held-out: PASS needs, against each baseline, a positive mean paired difference, more
    winning than losing (task, seed) pairs, more winning than losing tasks and a Wilcoxon
    p below 0.05; a positive mean that misses any of the others is NOT SHOWN. Overhead:
    two verdicts, pooled over every run (all non-fitting time over all fitting time) and
    on every task separately. The second is stricter than the target; on millisecond
    fits no search meets it, RandomizedSearchCV included (its row is the reference).
    """
    per_task, comps = summary["per_task"], summary["comparisons"]
    a = per_task["all"]
    tasks = [t for t in per_task if t != "all"]
    lines = [
        "| target | measured | verdict |",
        "|---|---|---|",
    ]
    for m in (m for m in ("tune", "tune-tpe") if m in a):
        verdicts, texts = [], []
        for base in BASELINES:
            key = f"{m} vs {base}"
            if key not in comps:
                continue
            e, tk = comps[key]["all"], comps[key]["tasks"]
            strong = (
                e["wins"] > e["losses"] and tk["wins"] > tk["losses"] and e["wilcoxon_p"] < 0.05
            )
            verdicts.append("FAIL" if e["mean_diff"] <= 0 else "PASS" if strong else "NOT SHOWN")
            texts.append(
                f"vs {base}: mean {e['mean_diff']:+.4f}, pairs {e['wins']}/{e['ties']}/"
                f"{e['losses']}, tasks {tk['wins']}/{tk['ties']}/{tk['losses']}, "
                f"p = {e['wilcoxon_p']:.2g}"
            )
        if verdicts:
            verdict = next((v for v in ("FAIL", "NOT SHOWN") if v in verdicts), "PASS")
            lines.append(
                f"| `{m}` has a better held-out score than both baselines | "
                + "; ".join(texts)
                + f" | **{verdict}** |"
            )
    for m in (m for m in ("tune", "tune-tpe", "tune-random") if m in a):
        ov = a[m]["overhead"]
        under = [
            t for t in tasks if m in per_task[t] and per_task[t][m]["overhead"] < TARGET_OVERHEAD
        ]
        pooled = "PASS" if ov < TARGET_OVERHEAD else "FAIL"
        every = "PASS" if len(under) == len(tasks) else "FAIL"
        lines.append(
            f"| `{m}` overhead < {_pct(TARGET_OVERHEAD)} of the fold fitting time | pooled "
            f"{_pct(ov)} (sampler {_pct(a[m]['sampler_share'])}, driver "
            f"{_pct(a[m]['driver_share'])}); under {_pct(TARGET_OVERHEAD)} on {len(under)} "
            f"of {len(tasks)} tasks"
            f"{' (' + ', '.join(under) + ')' if under else ''} | pooled **{pooled}**, "
            f"on every task **{every}** |"
        )
    if "random" in a:
        lines.append(
            f"| (reference) `random`, RandomizedSearchCV's overhead by the same measure | "
            f"pooled {_pct(a['random']['overhead'])}; per task "
            f"{_pct(min(per_task[t]['random']['overhead'] for t in tasks))} to "
            f"{_pct(max(per_task[t]['random']['overhead'] for t in tasks))} | |"
        )
    return lines


# ----------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=None)
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="two tasks, one seed, 10 trials")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--update",
        action="store_true",
        help="replace the runs of --methods in the existing results file, keep the others",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="rebuild the summary and the Markdown from the existing results file; run nothing",
    )
    args = parser.parse_args(argv)
    stem = "searchcv-quick" if args.quick else "searchcv"
    path = args.out_dir / f"{stem}.json"
    if args.report:
        saved = json.loads(path.read_text())
        return _write(path, saved["meta"], saved["runs"])
    tasks = args.tasks or list(QUICK_TASKS if args.quick else DEFAULT_TASKS)
    if args.quick:
        args.seeds, args.trials = 1, min(args.trials, 10)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with threadpool_limits(limits=1):
        for name in tasks:
            for seed in range(args.seeds):
                # rotate the order so that no method always runs first on a busy machine
                order = list(args.methods)
                shift = seed % len(order)
                for method in order[shift:] + order[:shift]:
                    r = run_one(name, method, seed, args.trials, args.folds)
                    rows.append(r)
                    print(
                        f"{name:12s} seed={seed} {method:11s} fits={r['fits']:3d} "
                        f"cv={r['best_cv']:.4f} held-out={r['holdout']:.4f} "
                        f"wall={r['wall']:.2f}s overhead={_pct(r['overhead'])} "
                        f"({time.perf_counter() - started:.0f} s)",
                        flush=True,
                    )
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/searchcv.py " + " ".join(argv or sys.argv[1:]),
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "twiddle": twiddle.__version__,
        "tasks": tasks,
        "methods": list(args.methods),
        "seeds": args.seeds,
        "trials": args.trials,
        "folds": args.folds,
        "halving_factor": HALVING_FACTOR,
        "load_start": load_start,
        "load_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan,
        "seconds": time.perf_counter() - started,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.update:
        meta, rows = _merge(json.loads(path.read_text()), meta, rows)
    return _write(path, meta, rows)


def _write(path: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> int:
    """Summarise ``rows``; write the JSON at ``path`` and the Markdown beside it."""
    order = meta["tasks"]
    rows.sort(key=lambda r: (order.index(r["task"]), r["seed"], METHODS.index(r["method"])))
    summary = summarise(rows, meta["methods"])
    out = {"meta": meta, "summary": summary, "runs": rows}
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    text = markdown(meta, summary, meta["methods"])
    path.with_suffix(".md").write_text(text)
    print(text)
    return 0


def _merge(
    old: dict[str, Any], new_meta: dict[str, Any], new_rows: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The old results with the runs of ``new_rows`` (same task, method, seed) replaced."""
    meta = dict(old["meta"])
    for key in ("trials", "folds", "halving_factor"):
        if meta[key] != new_meta[key]:
            raise SystemExit(f"--update: {key} differs ({meta[key]} before, {new_meta[key]} now).")
    fresh = {(r["task"], r["method"], r["seed"]) for r in new_rows}
    rows = [r for r in old["runs"] if (r["task"], r["method"], r["seed"]) not in fresh]
    rows += new_rows
    meta["tasks"] = list(dict.fromkeys([*meta["tasks"], *new_meta["tasks"]]))
    meta["methods"] = [m for m in METHODS if m in {*meta["methods"], *new_meta["methods"]}]
    keep = ("date", "command", "seconds", "load_start", "load_end", "methods")
    update = {k: new_meta[k] for k in keep}
    # a method is added when none of its new runs (task, seed) was in the old results
    before = {(r["task"], r["method"], r["seed"]) for r in old["runs"]}
    update["added"] = [
        m
        for m in new_meta["methods"]
        if not any((r["task"], m, r["seed"]) in before for r in new_rows if r["method"] == m)
    ]
    meta["updates"] = [*meta.get("updates", []), update]
    return meta, rows


if __name__ == "__main__":
    raise SystemExit(main())
