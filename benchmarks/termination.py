"""The termination rule: trials saved and what stopping early costs in score.

For each Bayesmark-style task of :mod:`benchmarks.bo.ml` (a scikit-learn model on a
data set shipped with scikit-learn, 80 % / 20 % split fixed per task) and each seed,
``twiddle.tune`` runs twice on the 80 % with 5-fold CV, the same sampler, seed, folds
and a budget of 60 trials: once as it is and once with
``callbacks=[twiddle.Terminator(seed=seed)]`` (defaults: ``min_trials=20``, threshold
= the corrected CV error of the incumbent). Reported per run: trials used, best mean
CV score, and the held-out score (accuracy on the 20 %, after refitting on the 80 %)
of the configuration each run chooses.

With ``n_jobs=1`` the same seed gives the same proposals whatever callbacks run, so
the run with the Terminator is the plain run cut short: the benchmark checks that the
trials it ran are the first trials of the plain run.

Usage::

    python benchmarks/termination.py            # the default run (about 10 min)
    python benchmarks/termination.py --quick    # one task, one seed, a smoke test

Results go to ``benchmarks/results/termination.json`` and ``termination.md``
(``--out-dir``). BLAS runs single-threaded.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import twiddle  # noqa: E402
from benchmarks.bo.ml import MLTask, task_data  # noqa: E402

DEFAULT_TASKS = ("svm-breast", "knn-wine", "lr-breast", "rf-wine")
QUICK_TASKS = ("knn-wine",)


def run_one(
    name: str, sampler: str, seed: int, n_trials: int, terminator: twiddle.Terminator | None
) -> dict[str, Any]:
    task = MLTask(name)
    est, space, prefix = task.addressed()
    X_tr, _, y_tr, _ = task_data(name)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = twiddle.tune(
            est,
            space,
            X_tr,
            y_tr,
            cv=task.folds(),
            scoring=task.scoring,
            n_trials=n_trials,
            sampler=sampler,
            seed=seed,
            refit=False,
            callbacks=() if terminator is None else (terminator,),
        )
    seconds = time.perf_counter() - t0
    config = {key[len(prefix) :]: v for key, v in res.best_params_.items()}
    out: dict[str, Any] = {
        "trials": len(res.study_.trials),
        "best_cv": res.best_score_,
        "best_cv_se": res.best_score_se_,
        "best_trial": res.best_trial_.number,
        "best_config": {key: v for key, v in sorted(config.items())},
        "holdout": task.holdout(config),
        "seconds": seconds,
        "params": [t.params for t in res.study_.trials],
    }
    if terminator is not None:
        out["stopped_at"] = terminator.stopped_at_
        out["reason"] = terminator.reason_
        out["decisions"] = [{"n": n, "bound": b, "threshold": e} for n, b, e in terminator.history_]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=None)
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    tasks = args.tasks or list(QUICK_TASKS if args.quick else DEFAULT_TASKS)
    seeds = 1 if args.quick else args.seeds
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with threadpool_limits(limits=1):
        for name in tasks:
            for seed in range(seeds):
                plain = run_one(name, args.sampler, seed, args.trials, None)
                term = twiddle.Terminator(seed=seed)
                stopped = run_one(name, args.sampler, seed, args.trials, term)
                n = stopped["trials"]
                row = {
                    "task": name,
                    "sampler": args.sampler,
                    "seed": seed,
                    "budget": args.trials,
                    "plain": plain,
                    "terminator": stopped,
                    "saved": 1.0 - n / plain["trials"],
                    "same_prefix": stopped["params"] == plain["params"][:n],
                    "cv_diff": stopped["best_cv"] - plain["best_cv"],
                    "holdout_diff": stopped["holdout"] - plain["holdout"],
                }
                rows.append(row)
                print(
                    f"{name:12s} seed={seed} trials {plain['trials']} -> {n} "
                    f"cv {plain['best_cv']:.4f} -> {stopped['best_cv']:.4f} holdout "
                    f"{plain['holdout']:.4f} -> {stopped['holdout']:.4f} "
                    f"({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
    for r in rows:
        del r["plain"]["params"], r["terminator"]["params"]
    summary = _summary(rows)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/termination.py " + " ".join(argv or sys.argv[1:]),
        "python": platform.python_version(),
        "twiddle": twiddle.__version__,
        "terminator": "Terminator(min_trials=20, threshold=None, seed=<seed>)",
        "seconds": time.perf_counter() - started,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = {"meta": meta, "summary": summary, "runs": rows}
    (args.out_dir / "termination.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    (args.out_dir / "termination.md").write_text(_markdown(meta, summary, rows))
    print(json.dumps(summary, indent=1))
    return 0


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    groups: dict[str, list[dict[str, Any]]] = {"all": rows}
    for r in rows:
        groups.setdefault(r["task"], []).append(r)
    for key, rs in groups.items():
        plain = sum(r["plain"]["trials"] for r in rs)
        used = sum(r["terminator"]["trials"] for r in rs)
        out[key] = {
            "runs": len(rs),
            "stopped": sum(r["terminator"]["stopped_at"] is not None for r in rs),
            "trials_plain": plain,
            "trials_terminator": used,
            "saved_pooled": 1.0 - used / plain,
            "cv_diff_mean": float(np.mean([r["cv_diff"] for r in rs])),
            "holdout_diff_mean": float(np.mean([r["holdout_diff"] for r in rs])),
            "holdout_worse": sum(r["holdout_diff"] < -1e-12 for r in rs),
            "holdout_better": sum(r["holdout_diff"] > 1e-12 for r in rs),
            "same_prefix": sum(r["same_prefix"] for r in rs),
            "time_ratio": sum(r["terminator"]["seconds"] for r in rs)
            / sum(r["plain"]["seconds"] for r in rs),
        }
    return out


def _markdown(meta: dict[str, Any], summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Termination rule benchmark",
        "",
        f"Run {meta['date']} with `{meta['command'].strip()}`; {meta['terminator']}; "
        f"Python {meta['python']}; {meta['seconds']:.0f} s in all.",
        "",
        "Same task, sampler, seed, folds (5-fold) and budget (60 trials) with and without "
        "`callbacks=[twiddle.Terminator(seed=seed)]`. *Saved* is the fraction of the "
        "budget's trials the rule did not run; *CV* is the best mean 5-fold CV accuracy "
        "on the 80 % training split; *held-out* is the accuracy on the 20 % test split of "
        "the configuration each run chose; *(se)* is the naive standard error of that "
        "run's best CV score, and the threshold the rule compares with is the "
        "Nadeau-Bengio corrected CV error, 1.5 times the naive one at 5 folds. *Same "
        "prefix*: the stopped run's trials are the first trials of the plain run. See "
        "`benchmarks/termination.py`.",
        "",
        "## Summary",
        "",
        "| group | runs | stopped | trials plain / with rule | saved | CV diff (mean) | "
        "held-out diff (mean) | worse / better | same prefix | time ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, s in summary.items():
        lines.append(
            f"| {key} | {s['runs']} | {s['stopped']} | {s['trials_plain']} / "
            f"{s['trials_terminator']} | {s['saved_pooled']:.0%} | {s['cv_diff_mean']:+.4f} | "
            f"{s['holdout_diff_mean']:+.4f} | {s['holdout_worse']} / {s['holdout_better']} | "
            f"{s['same_prefix']}/{s['runs']} | {s['time_ratio']:.2f} |"
        )
    lines += [
        "",
        "## Runs",
        "",
        "| task | seed | trials plain / with rule | best CV plain / with rule (se) | "
        "held-out plain / with rule | last bound / threshold |",
        "|---|---:|---:|---|---|---|",
    ]
    for r in rows:
        p, q = r["plain"], r["terminator"]
        last = q["decisions"][-1] if q["decisions"] else None
        bound = "-" if last is None else f"{last['bound']:.4f} / {last['threshold']:.4f}"
        lines.append(
            f"| {r['task']} | {r['seed']} | {p['trials']} / {q['trials']} | "
            f"{p['best_cv']:.4f} / {q['best_cv']:.4f} ({q['best_cv_se']:.4f}) | "
            f"{p['holdout']:.4f} / {q['holdout']:.4f} | {bound} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
