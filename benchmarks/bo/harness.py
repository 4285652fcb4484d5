"""One benchmark run, the random baseline of a problem, and the time-scaling run.

Each function returns a JSON-serialisable record; the caller (``run.py``, the only
writer) appends it to the results file. They are top-level functions of plain
arguments so that ``--jobs N`` can send them to worker processes.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.bo.optimizers import finite, json_safe, limit_threads, make_optimizer
from benchmarks.bo.problems import SYNTHETIC, get_problem

#: Trials whose suggestion times make up "time per suggestion at n trials": [n - W, n).
TIME_WINDOW = 10


def versions() -> dict[str, str]:
    """Python's and the libraries' versions, read from the installed packages' metadata.

    Nothing is imported for it: a twiddle-only run would otherwise import Optuna and
    torch (seconds, and torch's threads) just to read their version strings. A library
    that is not installed is left out.
    """
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("twiddle", "numpy", "scikit-learn", "optuna", "torch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            if name in ("twiddle", "numpy", "scikit-learn"):
                raise
    return out


def _round(x: float | None, digits: int = 7) -> float | None:
    return None if x is None else round(float(x), digits)


def run_one(
    problem: str,
    optimizer: str,
    seed: int,
    budget: int,
    checkpoints: Sequence[int],
    threads: int = 1,
    jobs: int = 1,
) -> dict[str, Any]:
    """``budget`` trials of ``optimizer`` on ``problem`` with ``seed``.

    Returns a record with the loss and timings of every trial and, per checkpoint
    ``n`` (trials), the best configuration among the first ``n`` trials and, for the
    scikit-learn tasks, its held-out score.
    """
    import warnings

    warnings.simplefilter("ignore")
    limit_threads(threads, torch_too=optimizer.endswith("-gp"))
    prob = get_problem(problem)
    started = time.time()
    wall0 = time.perf_counter()
    opt = make_optimizer(optimizer, prob.space, seed)
    losses: list[float | None] = []
    ask_s: list[float | None] = []
    tell_s: list[float | None] = []
    suggest_s: list[float | None] = []
    eval_s: list[float | None] = []
    configs: list[dict[str, Any]] = []
    first_error: str | None = None
    ask_cpu_s: list[float] = []
    for _ in range(budget):
        c0 = time.process_time()  # CPU of the whole process: load from others is excluded
        handle, config, t_ask, t_sugg = opt.ask()
        ask_cpu_s.append(round(time.process_time() - c0, 7))
        t0 = time.perf_counter()
        loss: float | None
        folds: list[float] | None = None
        try:
            if prob.fold_losses is not None and opt.uses_folds:
                folds = [float(v) for v in prob.fold_losses(config)]
                loss = float(np.mean(folds))
            else:
                loss = float(prob.loss(config))
            if not math.isfinite(loss):
                raise ValueError(f"loss is {loss}")
        except Exception as err:
            loss = None
            if first_error is None:
                first_error = f"{type(err).__name__}: {err}"[:500]
        t_eval = time.perf_counter() - t0
        t_tell = opt.tell(handle, loss, folds if loss is not None else None)
        losses.append(loss)
        ask_s.append(_round(t_ask))
        tell_s.append(_round(t_tell))
        suggest_s.append(_round(t_sugg))
        eval_s.append(_round(t_eval, 5))
        configs.append(config)
    cps: dict[str, Any] = {}
    holdout_cache: dict[int, float | None] = {}
    for n in sorted({*[c for c in checkpoints if c <= budget], budget}):
        ok = [(v, i) for i, v in enumerate(losses[:n]) if v is not None]
        if not ok:
            cps[str(n)] = {"best": None}
            continue
        best, idx = min(ok)
        entry: dict[str, Any] = {"best": best, "trial": idx, "config": json_safe(configs[idx])}
        if prob.holdout is not None:
            if idx not in holdout_cache:
                try:
                    holdout_cache[idx] = float(prob.holdout(configs[idx]))
                except Exception:
                    holdout_cache[idx] = None
            entry["holdout"] = holdout_cache[idx]
        cps[str(n)] = entry
    return {
        "type": "run",
        "problem": problem,
        "optimizer": optimizer,
        "seed": seed,
        "budget": budget,
        "n_trials": len(losses),
        "n_failed": sum(v is None for v in losses),
        "first_error": first_error,
        "losses": losses,
        "ask_s": ask_s,
        "ask_cpu_s": ask_cpu_s,
        "tell_s": tell_s,
        "suggest_s": None if all(s is None for s in suggest_s) else suggest_s,
        "eval_s": eval_s,
        "checkpoints": cps,
        "wall_s": round(time.perf_counter() - wall0, 3),
        "started": started,
        "jobs": jobs,
        "threads": threads,
        "cpus": os.cpu_count(),
        "versions": versions(),
    }


def random_baseline(problem: str, n: int, seed: int = 20240601, threads: int = 1) -> dict[str, Any]:
    """Losses of ``n`` configurations drawn uniformly from the space (log-uniformly on
    log dimensions): their median is the normalised score's zero."""
    import warnings

    warnings.simplefilter("ignore")
    limit_threads(threads)
    t0 = time.perf_counter()
    prob = get_problem(problem)
    rng = np.random.default_rng(seed)
    configs = [prob.space.sample(rng) for _ in range(n)]
    if problem in SYNTHETIC:
        f = SYNTHETIC[problem]
        values = [float(v) for v in f.fn(f.to_array(configs))]
    else:
        values = []
        for c in configs:
            try:
                v = float(prob.loss(c))
            except Exception:
                continue
            if math.isfinite(v):
                values.append(v)
    arr = np.asarray(values, dtype=float)
    return {
        "type": "baseline",
        "problem": problem,
        "n": n,
        "n_ok": len(values),
        "seed": seed,
        "median": float(np.median(arr)),
        "q25": float(np.quantile(arr, 0.25)),
        "q75": float(np.quantile(arr, 0.75)),
        "min": float(np.min(arr)),
        "mean": float(np.mean(arr)),
        "wall_s": round(time.perf_counter() - t0, 3),
    }


def scaling_run(
    optimizer: str,
    problem: str,
    max_trials: int,
    time_cap: float,
    seed: int = 0,
    threads: int = 1,
    jobs: int = 1,
) -> dict[str, Any]:
    """Suggestion times of one long run on a cheap problem, stopped after ``max_trials``
    trials or once the optimiser itself has used ``time_cap`` seconds."""
    import warnings

    warnings.simplefilter("ignore")
    limit_threads(threads, torch_too=optimizer.endswith("-gp"))
    prob = get_problem(problem)
    started = time.time()
    opt = make_optimizer(optimizer, prob.space, seed)
    ask_s: list[float] = []
    ask_cpu_s: list[float] = []
    suggest_s: list[float | None] = []
    spent = 0.0
    capped = False
    best = math.inf
    t_wall = time.perf_counter()
    for i in range(max_trials):
        c0 = time.process_time()  # CPU of the whole process: load from others is excluded
        handle, config, t_ask, t_sugg = opt.ask()
        ask_cpu_s.append(round(time.process_time() - c0, 7))
        loss = float(prob.loss(config))
        t_tell = opt.tell(handle, loss if finite(loss) else None)
        best = min(best, loss)
        ask_s.append(round(t_ask, 7))
        suggest_s.append(_round(t_sugg))
        spent += t_ask + t_tell
        if spent > time_cap and i + 1 < max_trials:
            capped = True
            break
    return {
        "type": "scaling",
        "problem": problem,
        "optimizer": optimizer,
        "seed": seed,
        "max_trials": max_trials,
        "time_cap_s": time_cap,
        "n_trials": len(ask_s),
        "capped": capped,
        "optimizer_s": round(spent, 3),
        "wall_s": round(time.perf_counter() - t_wall, 3),
        "best": best,
        "ask_s": ask_s,
        "ask_cpu_s": ask_cpu_s,
        "suggest_s": None if all(s is None for s in suggest_s) else suggest_s,
        "started": started,
        "jobs": jobs,
        "threads": threads,
        "versions": versions(),
    }
