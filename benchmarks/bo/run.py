"""Run the benchmark: every (problem, optimiser, seed), resumably, then write the report.

Examples::

    python -m benchmarks.bo.run --quick
    python -m benchmarks.bo.run --problems all --optimizers all --seeds 10 --budget 100
    python -m benchmarks.bo.run --problems branin,hartmann6 --optimizers twiddle-gp,optuna-gp
    python -m benchmarks.bo.run --problems synthetic --scaling --jobs 1

Runs already in the results file (same problem, optimiser and seed, at least as many
trials) are skipped, so an interrupted command picks up where it stopped.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.bo.harness import random_baseline, run_one, scaling_run
from benchmarks.bo.optimizers import resolve_optimizers, unavailable
from benchmarks.bo.problems import SYNTHETIC, resolve_problems
from benchmarks.bo.report import build
from benchmarks.bo.results import (
    BASELINE_CACHE,
    DEFAULT_RESULTS,
    QUICK_RESULTS,
    append_record,
    latest_runs,
    latest_scaling,
    markdown_path,
    read_baselines,
    read_records,
    write_baselines,
)

QUICK = {
    "problems": "branin,hartmann3",
    "optimizers": "twiddle-random,twiddle-sobol,optuna-tpe,optuna-random",
    "seeds": 2,
    "budget": 20,
    "checkpoints": "10,20",
}
REPORT_EVERY = 10


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.bo.run",
        description="Benchmark twiddle's and Optuna's samplers on synthetic functions and "
        "scikit-learn tuning tasks.",
    )
    ap.add_argument(
        "--problems",
        default=None,
        help="comma list of problems or groups: synthetic, ml, all, a model (svm) or a data "
        "set (wine) (default: all)",
    )
    ap.add_argument(
        "--optimizers",
        default=None,
        help="comma list: twiddle-<sampler>, optuna-tpe, optuna-gp, optuna-random, or the "
        "groups twiddle, optuna, all (default: all)",
    )
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (default 10)")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds are first..first+n-1")
    ap.add_argument("--budget", type=int, default=None, help="trials per run (default 100)")
    ap.add_argument(
        "--checkpoints",
        default=None,
        help="trial counts to report, from each run's prefix (default 50,100)",
    )
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/torch threads per run")
    ap.add_argument("--results", type=Path, default=None, help="JSON-lines results file")
    ap.add_argument("--baseline", type=Path, default=BASELINE_CACHE, help="baseline cache")
    ap.add_argument(
        "--baseline-samples",
        type=int,
        default=2000,
        help="random configurations per synthetic problem for the median (default 2000)",
    )
    ap.add_argument(
        "--baseline-samples-ml",
        type=int,
        default=100,
        help="random configurations per scikit-learn task (default 100)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 2 problems x twiddle-random, twiddle-sobol, optuna-tpe, "
        "optuna-random x 2 seeds x 20 trials, into bo-quick.jsonl",
    )
    ap.add_argument(
        "--scaling",
        action="store_true",
        help="also measure time per suggestion at 100, 300 and 1000 trials (one seed)",
    )
    ap.add_argument("--scaling-only", action="store_true", help="only the scaling measurement")
    ap.add_argument("--scaling-problem", default="hartmann6", help="cheap problem for --scaling")
    ap.add_argument("--scaling-trials", type=int, default=1000, help="longest scaling run")
    ap.add_argument(
        "--scaling-cap",
        type=float,
        default=600.0,
        help="seconds of optimiser time after which a scaling run stops (default 600)",
    )
    ap.add_argument("--no-report", action="store_true", help="do not rebuild the Markdown")
    args = ap.parse_args(argv)
    quick = QUICK if args.quick else {}
    args.problems = args.problems or quick.get("problems", "all")
    args.optimizers = args.optimizers or quick.get("optimizers", "all")
    args.seeds = args.seeds if args.seeds is not None else quick.get("seeds", 10)
    args.budget = args.budget if args.budget is not None else quick.get("budget", 100)
    args.checkpoints = _ints(args.checkpoints or str(quick.get("checkpoints", "50,100")))
    if args.results is None:
        args.results = QUICK_RESULTS if args.quick else DEFAULT_RESULTS
    if args.jobs < 1 or args.seeds < 1 or args.budget < 1:
        ap.error("--jobs, --seeds and --budget must be >= 1")
    return args


def _execute(
    tasks: list[tuple[Callable[..., dict[str, Any]], tuple[Any, ...], str]],
    jobs: int,
    on_done: Callable[[dict[str, Any] | None, str, float], None],
) -> None:
    """Run ``(function, args, label)`` tasks inline (jobs=1) or in a process pool."""
    if jobs == 1:
        for fn, fargs, label in tasks:
            t0 = time.perf_counter()
            try:
                rec = fn(*fargs)
            except Exception as err:
                print(f"  FAILED {label}: {type(err).__name__}: {err}", flush=True)
                rec = None
            on_done(rec, label, time.perf_counter() - t0)
        return
    with cf.ProcessPoolExecutor(max_workers=jobs) as pool:
        started = {
            pool.submit(fn, *fargs): (label, time.perf_counter()) for fn, fargs, label in tasks
        }
        for fut in cf.as_completed(started):
            label, t0 = started[fut]
            try:
                rec = fut.result()
            except Exception as err:
                print(f"  FAILED {label}: {type(err).__name__}: {err}", flush=True)
                rec = None
            on_done(rec, label, time.perf_counter() - t0)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        problems = resolve_problems(args.problems)
        optimizers = resolve_optimizers(args.optimizers)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    skipped = {o: why for o in optimizers if (why := unavailable(o)) is not None}
    for o, why in skipped.items():
        print(f"skipping {o}: {why}", flush=True)
    optimizers = [o for o in optimizers if o not in skipped]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    results: Path = args.results

    # 1. random baselines (cached across runs and results files); the scaling runs
    # are not scored, so --scaling-only needs none
    scored = [] if args.scaling_only else problems
    baselines = read_baselines(args.baseline)
    need = []
    for p in scored:
        n = args.baseline_samples if p in SYNTHETIC else args.baseline_samples_ml
        if baselines.get(p, {}).get("n", 0) < n:
            need.append((random_baseline, (p, n, 20240601, args.threads), f"baseline {p} n={n}"))

    def baseline_done(rec: dict[str, Any] | None, label: str, secs: float) -> None:
        if rec is not None:
            baselines[rec["problem"]] = rec
            write_baselines(baselines, args.baseline)
            print(f"  {label}: median {rec['median']:.5g} ({rec['wall_s']:.1f} s)", flush=True)

    if need:
        print(f"random baselines: {len(need)} to compute", flush=True)
        _execute(need, args.jobs, baseline_done)
    # the results file carries the baselines it is scored against
    stored = {r["problem"]: r for r in read_records(results) if r.get("type") == "baseline"}
    for p in scored:
        rec = baselines.get(p)
        if rec is not None and stored.get(p, {}).get("n") != rec["n"]:
            append_record(results, rec)

    # 2. the runs, skipping those already in the results file
    done = latest_runs(read_records(results))
    tasks = []
    if not args.scaling_only:
        for p in problems:
            for o in optimizers:
                for s in seeds:
                    rec = done.get((p, o, s))
                    if rec is not None and rec["n_trials"] >= args.budget:
                        continue
                    tasks.append(
                        (
                            run_one,
                            (p, o, s, args.budget, args.checkpoints, args.threads, args.jobs),
                            f"{p} / {o} / seed {s}",
                        )
                    )
    if args.scaling or args.scaling_only:
        have = latest_scaling(read_records(results))
        for o in optimizers:
            rec = have.get((args.scaling_problem, o))
            if rec is not None and (rec["n_trials"] >= args.scaling_trials or rec["capped"]):
                continue
            tasks.append(
                (
                    scaling_run,
                    (
                        o,
                        args.scaling_problem,
                        args.scaling_trials,
                        args.scaling_cap,
                        0,
                        args.threads,
                        args.jobs,
                    ),
                    f"scaling {args.scaling_problem} / {o}",
                )
            )
    total = len(tasks)
    if args.scaling_only:
        what = (
            f"scaling runs to do on {args.scaling_problem} ({len(optimizers)} optimisers, "
            f"up to {args.scaling_trials} trials each"
        )
    else:
        what = (
            f"runs to do ({len(problems)} problems x {len(optimizers)} optimisers x "
            f"{len(seeds)} seeds, budget {args.budget}"
            + (", and the scaling runs" if args.scaling else "")
        )
    print(
        f"{total} {what}; the rest are in {results.name}); jobs={args.jobs}",
        flush=True,
    )
    count = 0
    t_start = time.perf_counter()

    def run_done(rec: dict[str, Any] | None, label: str, secs: float) -> None:
        nonlocal count
        count += 1
        if rec is None:
            return
        append_record(results, rec)
        if rec["type"] == "run":
            best = rec["checkpoints"][str(rec["budget"])].get("best")
            extra = f"best {best:.6g}" if best is not None else "no complete trial"
        else:
            extra = f"{rec['n_trials']} trials{' (capped)' if rec['capped'] else ''}"
        elapsed = time.perf_counter() - t_start
        print(
            f"[{count}/{total}] {label}: {extra} ({rec['wall_s']:.1f} s; {elapsed:.0f} s in all)",
            flush=True,
        )
        if not args.no_report and count % REPORT_EVERY == 0:
            build(results, markdown_path(results), args.baseline)

    _execute(tasks, args.jobs, run_done)

    if not args.no_report and results.exists():
        lines = build(results, markdown_path(results), args.baseline)
        print(f"wrote {results.name} and {markdown_path(results).name}")
        for line in lines:
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
