"""Fold racing: fold fits saved and the held-out score of the chosen configuration.

For each Bayesmark-style task of :mod:`benchmarks.bo.ml` (a scikit-learn model on a
data set shipped with scikit-learn, 80 % / 20 % split fixed per task), each number
of folds K and each sampler and seed, ``twiddle.tune`` runs twice on the 80 % with
the same sampler, seed, folds and number of trials: once without a scheduler and
once with ``scheduler="racing"`` (``FoldRacing()``: ``alpha=0.05``, ``min_folds=1``,
calibrated levels; ``--alpha``, ``--min-folds`` and ``--levels`` change them).
Reported per run:

* **fold fits saved**: ``1 - fits(racing) / fits(plain)``, where fits counts the
  folds whose result the trial records (the driver runs one task at a time here, so
  no fold is fitted and then ignored); target: at least 40 %;
* **held-out score** (accuracy or R^2 on the 20 %, after refitting on the 80 %) of
  the configuration each run chooses (best mean CV score), and whether both runs
  chose the same configuration; target: equal scores.

With the random sampler both runs propose the same configurations (proposals do not
depend on the history), so the comparison isolates racing: a different choice can
only come from stopping the eventual best. With TPE the proposals diverge after the
first stopped trial (TPE puts PRUNED trials in its "bad" group, the GP models them
at their partial mean), so the held-out score there also reflects the different
search path.

Usage::

    python benchmarks/racing.py --seeds 2       # the recorded run (about 10 min)
    python benchmarks/racing.py --quick         # two tasks, a smoke test
    python benchmarks/racing.py --scheduler halving  # successive halving over folds

``--scheduler halving`` (or ``median``) measures ``scheduler="halving"``
(``"median"``) instead, which uses folds as the resource; its results go to
``folds-halving.json`` and ``.md``.

``--plain-from FILE`` takes the runs without a scheduler from an earlier results
file (they do not depend on the scheduler), so only the scheduled runs are made;
``--update`` adds the runs to the results file of ``--out-dir`` instead of replacing
it (for instance to add tasks), and refuses one made with another scheduler.

Results go to ``benchmarks/results/racing.json`` and ``racing.md`` (``--out-dir``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import twiddle  # noqa: E402
from benchmarks.bo.ml import MLTask, task_data  # noqa: E402

DEFAULT_TASKS = ("svm-breast", "lr-breast", "knn-wine", "dt-digits", "rf-wine", "svm-digits")
QUICK_TASKS = ("svm-breast", "knn-wine")


def tune_task(
    name: str, k: int, sampler: str, seed: int, n_trials: int, scheduler: Any = None
) -> tuple[Any, str, float]:
    """``twiddle.tune`` on a harness task's 80 % with its K folds, sequentially.

    Returns the result, the prefix of the space's names (the pipeline step's) and the
    seconds it took.
    """
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
            cv=task.folds(k),
            scoring=task.scoring,
            n_trials=n_trials,
            sampler=sampler,
            seed=seed,
            refit=False,
            scheduler=scheduler,
        )
    return res, prefix, time.perf_counter() - t0


def run_one(
    name: str,
    k: int,
    sampler: str,
    seed: int,
    n_trials: int,
    racing: twiddle.FoldRacing | None,
) -> dict[str, Any]:
    task = MLTask(name)
    res, prefix, seconds = tune_task(name, k, sampler, seed, n_trials, racing)
    trials = res.study_.trials
    config = {key[len(prefix) :]: v for key, v in res.best_params_.items()}
    return {
        "fits": sum(t.n_folds_done for t in trials),
        "pruned": sum(t.state is twiddle.TrialState.PRUNED for t in trials),
        "pruned_at": [t.n_folds_done for t in trials if t.state is twiddle.TrialState.PRUNED],
        "best_cv": res.best_score_,
        "best_config": {key: v for key, v in sorted(config.items())},
        "holdout": task.holdout(config),
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=None)
    parser.add_argument("--folds", nargs="*", type=int, default=[5, 10])
    parser.add_argument("--samplers", nargs="*", default=["random", "tpe"])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--min-folds", type=int, default=1)
    parser.add_argument(
        "--levels",
        choices=("calibrated", "bonferroni"),
        default="calibrated",
        help="FoldRacing's levels (default: calibrated, the default of FoldRacing)",
    )
    parser.add_argument(
        "--plain-from",
        type=Path,
        default=None,
        help="take the runs without a scheduler from this results file where it has the "
        "same task, K, sampler, seed and trials (they do not depend on the scheduler), "
        "and run only the scheduled ones there",
    )
    parser.add_argument(
        "--scheduler",
        choices=("racing", "halving", "median"),
        default="racing",
        help="racing (FoldRacing with --alpha, --min-folds), or halving / median over folds",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--update",
        action="store_true",
        help="add these runs to the results file of --out-dir (same scheduler and trials), "
        "replacing the runs of the same task, K, sampler and seed",
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    tasks = args.tasks or list(QUICK_TASKS if args.quick else DEFAULT_TASKS)
    if args.quick:
        args.trials = min(args.trials, 15)
    scheduler: Any = args.scheduler
    if args.scheduler == "racing":
        scheduler = twiddle.FoldRacing(
            alpha=args.alpha, min_folds=args.min_folds, levels=args.levels
        )
    described = repr(scheduler) if args.scheduler == "racing" else f"{scheduler!r} over folds"
    default = args.alpha == 0.05 and args.min_folds == 1 and args.levels == "calibrated"
    stem = "racing" if default else f"racing-alpha{args.alpha}-min{args.min_folds}"
    stem += "" if default or args.levels == "calibrated" else "-bonferroni"
    if args.scheduler != "racing":
        stem = f"folds-{args.scheduler}"
    results = args.out_dir / f"{stem}.json"
    earlier = _earlier(results, described, args.trials) if args.update else None
    reused: dict[tuple[str, int, str, int], dict[str, Any]] = {}
    if args.plain_from is not None:
        source = json.loads(args.plain_from.read_text())
        reused = {_key(r): r["plain"] for r in source["runs"] if r["trials"] == args.trials}
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name in tasks:
        for k in args.folds:
            for sampler in args.samplers:
                for seed in range(args.seeds):
                    plain = reused.get((name, k, sampler, seed)) or run_one(
                        name, k, sampler, seed, args.trials, racing=None
                    )
                    raced = run_one(name, k, sampler, seed, args.trials, racing=scheduler)
                    row = {
                        "task": name,
                        "folds": k,
                        "sampler": sampler,
                        "seed": seed,
                        "trials": args.trials,
                        "plain": plain,
                        "racing": raced,
                        "saved": 1.0 - raced["fits"] / plain["fits"],
                        "same_choice": plain["best_config"] == raced["best_config"],
                        "holdout_diff": raced["holdout"] - plain["holdout"],
                    }
                    rows.append(row)
                    print(
                        f"{name:12s} K={k:2d} {sampler:6s} seed={seed} saved={row['saved']:.0%} "
                        f"same={row['same_choice']} holdout {plain['holdout']:.4f} -> "
                        f"{raced['holdout']:.4f} ({time.perf_counter() - started:.0f} s)",
                        flush=True,
                    )
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/racing.py " + " ".join(argv or sys.argv[1:]),
        "python": platform.python_version(),
        "twiddle": twiddle.__version__,
        "kind": args.scheduler,
        "scheduler": described,
        "seconds": time.perf_counter() - started,
    }
    if reused:
        meta["plain_from"] = {
            "file": args.plain_from.as_posix() if args.plain_from else None,
            "date": source["meta"]["date"],
            "command": source["meta"]["command"],
            "runs": sum(_key(r) in reused for r in rows),
        }
    if earlier is not None:
        redone = {_key(r) for r in rows}
        rows = [r for r in earlier["runs"] if _key(r) not in redone] + rows
        before = earlier["meta"]
        meta["earlier"] = [*before.pop("earlier", []), before]
    summary = _summary(rows)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = {"meta": meta, "summary": summary, "runs": rows}
    results.write_text(json.dumps(out, indent=1, default=str) + "\n")
    (args.out_dir / f"{stem}.md").write_text(_markdown(meta, summary, rows))
    print(json.dumps(summary, indent=1))
    return 0


def _key(row: dict[str, Any]) -> tuple[str, int, str, int]:
    return (row["task"], row["folds"], row["sampler"], row["seed"])


def _earlier(path: Path, scheduler: str, trials: int) -> dict[str, Any] | None:
    """The results already in ``path`` for ``--update``, if they were made the same way.

    Raises SystemExit when they used another scheduler or number of trials: mixed,
    their pooled figures would mean nothing.
    """
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    if old["meta"]["scheduler"] != scheduler:
        raise SystemExit(
            f"--update: {path} holds runs of {old['meta']['scheduler']}, not {scheduler}; "
            "choose another --out-dir"
        )
    other = sorted({r["trials"] for r in old["runs"]} - {trials})
    if other:
        raise SystemExit(
            f"--update: {path} holds runs of {other[0]} trials, not {trials}; "
            f"pass --trials {other[0]} or choose another --out-dir"
        )
    return dict(old)


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    groups: dict[str, list[dict[str, Any]]] = {"all": rows}
    for r in rows:
        groups.setdefault(f"K={r['folds']}", []).append(r)
        groups.setdefault(f"sampler={r['sampler']}", []).append(r)
    for key, rs in groups.items():
        fits_plain = sum(r["plain"]["fits"] for r in rs)
        fits_raced = sum(r["racing"]["fits"] for r in rs)
        diffs = np.array([r["holdout_diff"] for r in rs])
        out[key] = {
            "runs": len(rs),
            "saved_pooled": 1.0 - fits_raced / fits_plain,
            "saved_min": min(r["saved"] for r in rs),
            "saved_median": float(np.median([r["saved"] for r in rs])),
            "same_choice": sum(r["same_choice"] for r in rs),
            "holdout_diff_mean": float(np.mean(diffs)),
            "holdout_diff_worst": float(np.min(diffs)),
            "holdout_worse": int(np.sum(diffs < -1e-12)),
            "holdout_better": int(np.sum(diffs > 1e-12)),
            "time_ratio": sum(r["racing"]["seconds"] for r in rs)
            / sum(r["plain"]["seconds"] for r in rs),
        }
    return out


def _markdown(meta: dict[str, Any], summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    kind = meta.get("kind", "racing")
    title = "Fold racing" if kind == "racing" else f"Fold {kind} (folds as the resource)"
    lines = [
        f"# {title} benchmark",
        "",
        f"Run {meta['date']} with `{meta['command'].strip()}`; {meta['scheduler']}; "
        f"Python {meta['python']}; {meta['seconds']:.0f} s in all.",
        "",
    ]
    if meta.get("plain_from"):
        source = meta["plain_from"]
        lines += [
            f"The {source['runs']} runs without a scheduler of the tasks it had were taken "
            f"from `{source['file']}` (made {source['date']} by `{source['command'].strip()}`): "
            "they do not depend on the scheduler, and with the random sampler they are the "
            "same runs. Their times come from that run.",
            "",
        ]
    for before in meta.get("earlier", [])[::-1]:
        lines += [
            f"Added to the runs of {before['date']} with `{before['command'].strip()}` "
            f"({before['seconds']:.0f} s), which the later command did not redo.",
            "",
        ]
    lines += [
        "Same tasks, folds, sampler, seed and number of trials with and without "
        f'`scheduler="{kind}"`. *Saved* is the fraction of fold fits the scheduler avoided '
        "(target >= 40 %); *held-out* is the score on the 20 % test split of the "
        "configuration each run chose (target: equal). See `benchmarks/racing.py`.",
        "",
        "## Summary",
        "",
        "| group | runs | saved (pooled) | saved (min / median) | same choice | "
        "held-out diff (mean / worst) | worse / better | time ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, s in summary.items():
        lines.append(
            f"| {key} | {s['runs']} | {s['saved_pooled']:.1%} | {s['saved_min']:.0%} / "
            f"{s['saved_median']:.0%} | {s['same_choice']}/{s['runs']} | "
            f"{s['holdout_diff_mean']:+.4f} / {s['holdout_diff_worst']:+.4f} | "
            f"{s['holdout_worse']} / {s['holdout_better']} | "
            f"{s['time_ratio']:.2f} |"
        )
    reading = [
        "",
        "Reading the figures: racing can only save fits where some configurations are "
        "confidently worse than the incumbent; a stop after the first fold saves K - 1 of "
        "K fits, and the first-fold look needs a variance prior fitted to at least three "
        "other COMPLETE trials with distinct fold scores. Where every configuration is "
        "within fold noise of the "
        "best (knn-wine) nothing can be stopped at the stated false-stop "
        "rate, whatever the rule. With the random sampler both runs see the same "
        "configurations, and the same choice in every run means racing never stopped "
        "the eventual best. With TPE the runs diverge after the first stop, so a "
        "different choice there is a different search path, not a false stop.",
    ]
    lines += reading if kind == "racing" else []
    lines += [
        "",
        "## Runs",
        "",
        f"| task | K | sampler | seed | fits plain | fits {kind} | saved | pruned | "
        f"best CV plain / {kind} | held-out plain / {kind} | same choice |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        p, q = r["plain"], r["racing"]
        lines.append(
            f"| {r['task']} | {r['folds']} | {r['sampler']} | {r['seed']} | {p['fits']} | "
            f"{q['fits']} | {r['saved']:.0%} | {q['pruned']} | {p['best_cv']:.4f} / "
            f"{q['best_cv']:.4f} | {p['holdout']:.4f} / {q['holdout']:.4f} | "
            f"{'yes' if r['same_choice'] else 'no'} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
