"""Successive halving: steps (epochs) saved and the held-out loss of the chosen configuration.

Each problem runs :meth:`twiddle.Study.optimize` several times per seed with the
random sampler (so every run of a seed is offered the same configurations in the
same order, and only the scheduler differs): once running every trial to the end
(``none``), then with each scheduler. The schedulers are asynchronous successive
halving (:class:`twiddle.SuccessiveHalving`, Li et al., 2020) with reduction factor
eta and first rung m, written ``halving-e<eta>-m<m>`` (``-s3``: values at a rung
averaged over the last 3 steps, ``smoothing=3``), and, for reference, Hyperband
(first rung 1, eta 3) and median stopping (5 startup trials). The first rungs are
given as fractions of the last step R: m = R/9 and 2R/9 with eta 3, m = 4R/27 and
5R/27 with eta 2 (for R = 27: 3, 6, 4, 5).

Reported per setting, over the seeds:

* **steps ratio**: the values the trials reported (for the MLP, the epochs trained),
  summed over the trials, divided by those of the ``none`` run of the same seed;
  target: a mean of at most 0.5;
* **held-out diff**: the held-out loss of the configuration the run chooses (the
  study's best trial: the COMPLETE trial with the lowest final validation loss, so
  always one that ran to the end) minus that of the ``none`` run of the same seed;
  its mean over the seeds, the standard error of that mean (sample standard
  deviation / sqrt(seeds)) and the one-sided 95 % upper bound of the mean
  (mean + t(0.95, seeds - 1) SE);
* **same choice**: the seeds on which both runs chose the same configuration.

The target is **met** when the mean steps ratio is at most 0.5 and the mean
held-out diff is at most one standard error above 0 (the scheduler's choice is not
measurably worse than a full run's). For scale, the results also give the
seed-to-seed standard deviation of the held-out loss of the ``none`` run's choice.

Problems:

``synthetic``
    Two hyperparameters (``lr`` on a log scale, ``reg``); the validation loss after
    step t is ``v(t) = L(lr, reg) + 0.3 exp(-t / tau(lr)) + noise`` with
    ``L = 0.1 + 0.05 (log10 lr + 2)^2 + 0.2 (reg - 0.3)^2``,
    ``tau = 10 (lr / 0.01)^(-0.15)`` (larger learning rates learn faster, so curves
    cross: early on a too-large rate looks best) and Gaussian noise of sd
    0.005 fixed by (configuration, step). R = 81 steps, 60 trials, 20 seeds. The
    held-out loss is the noise-free ``v(R)``.
``mlp-digits`` (only when ``twiddle.torch`` imports)
    ``twiddle.torch.MLPClassifier`` (one thread) on scikit-learn's digits, 80 % /
    20 % split; the trial trains on the 80 % (reporting the loss on its 20 %
    validation part after each epoch), R = 27 epochs, 20 trials over learning rate,
    width and weight decay, 20 seeds; the held-out loss is the log loss on the 20 %
    test part of the trained network.

The settings were chosen on seeds 100 to 129, separate from the seeds reported
here (0 to 19).

Usage::

    python benchmarks/halving.py            # both problems (about 20 minutes on 2 cores)
    python benchmarks/halving.py --quick    # synthetic only, 2 seeds
    python benchmarks/halving.py --jobs 2   # trials in 2 worker processes (see below)

Results go to ``benchmarks/results/halving.json`` and ``halving.md`` (``--out-dir``).

In worker processes (``--jobs N``)
----------------------------------
With N > 1 the study runs N trials at a time, and what a trial sees of the trials
running beside it matters. Each seed runs ``none`` and one halving setting per
problem (eta 2, first rung 4R/27: ``halving-e2-m4`` on the MLP, ``-m12`` on the
synthetic problem) twice: ``@live`` with ``n_jobs=N`` (twiddle's worker pool, whose
trials read the other trials' curves, running ones included, from the driver each
time they reach a rung), and ``@snapshot`` on a standard-library
``ProcessPoolExecutor(N)`` with the driver's call server switched off
(``TWIDDLE_DRIVER_HOST=off``), so that its workers cannot reach the driver and each
trial sees only the trials finished when it was dispatched (as on an executor whose
workers cannot connect back to the driver). ``--dask`` adds ``@dask``: the same
setting on a local Dask cluster of N worker processes, whose trials reach the driver
through its call server.
The studies are given their space up front, so every run of a seed is offered the
same configurations whatever the timing (checked: the script stops if not). Results
go to ``halving-parallel.json`` and ``halving-parallel.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import twiddle  # noqa: E402

SYNTH_R = 81
MLP_R = 27


# ----------------------------------------------------------------------------------
# Problems
# ----------------------------------------------------------------------------------
def _synth_final(lr: float, reg: float) -> float:
    return 0.1 + 0.05 * (math.log10(lr) + 2.0) ** 2 + 0.2 * (reg - 0.3) ** 2


def _synth_tau(lr: float) -> float:
    return 10.0 * (lr / 0.01) ** -0.15


def synthetic(trial: twiddle.Trial) -> float:
    """A synthetic training run of SYNTH_R steps (see the module notes)."""
    lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
    reg = trial.suggest_float("reg", 0.0, 1.0)
    final, tau = _synth_final(lr, reg), _synth_tau(lr)
    key = int(abs(hash((round(lr, 12), round(reg, 12)))) % 2**32)
    noise = np.random.default_rng(key).normal(0.0, 0.005, SYNTH_R + 1)
    loss = math.inf
    for t in range(1, SYNTH_R + 1):
        loss = final + 0.3 * math.exp(-t / tau) + float(noise[t])
        trial.report(loss, t)
        if trial.should_prune():
            raise twiddle.TrialPruned()
    trial.set_user_attr("heldout", final + 0.3 * math.exp(-SYNTH_R / tau))
    return loss


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    return X_tr, X_te, y_tr, y_te


def mlp_digits(trial: twiddle.Trial) -> float:
    """An MLP on digits trained for up to MLP_R epochs (see the module notes)."""
    from sklearn.metrics import log_loss

    from twiddle.torch import MLPClassifier  # type: ignore[import-not-found,unused-ignore]

    X_tr, X_te, y_tr, y_te = _digits()
    clf = MLPClassifier(
        learning_rate=trial.suggest_float("learning_rate", 1e-4, 0.3, log=True),
        width=trial.suggest_int("width", 8, 128, log=True),
        weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True),
        n_layers=1,
        batch_size=64,
        epochs=MLP_R,
        validation_fraction=0.2,
        seed=0,
    )
    clf.fit(X_tr, y_tr, trial=trial)
    proba = np.asarray(clf.predict_proba(X_te), dtype=np.float64)
    proba /= proba.sum(axis=1, keepdims=True)  # float32 rows may miss 1 by rounding
    trial.set_user_attr("heldout", float(log_loss(y_te, proba, labels=clf.classes_)))
    return float(clf.history_[-1]["val_loss"])


def spaces() -> dict[str, twiddle.Space]:
    """The problems' spaces, as their objectives suggest them (for --jobs runs)."""
    return {
        "synthetic": twiddle.Space(
            {"lr": twiddle.Float(1e-4, 1.0, log=True), "reg": twiddle.Float(0.0, 1.0)}
        ),
        "mlp-digits": twiddle.Space(
            {
                "learning_rate": twiddle.Float(1e-4, 0.3, log=True),
                "width": twiddle.Int(8, 128, log=True),
                "weight_decay": twiddle.Float(1e-6, 1e-1, log=True),
            }
        ),
    }


# ----------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------
def run_one(
    objective: Callable[[twiddle.Trial], float],
    scheduler: Any,
    seed: int,
    n_trials: int,
    *,
    space: twiddle.Space | None = None,
    jobs: int = 1,
    pool: Any = None,
) -> dict[str, Any]:
    study = twiddle.Study(direction="minimize", sampler="random", seed=seed, space=space)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, scheduler=scheduler, n_jobs=jobs, executor=pool)
    best = study.best_trial
    states = [t.state.value for t in study.trials]
    return {
        "steps": sum(len(t.intermediate) for t in study.trials),
        "heldout": float(best.user_attrs["heldout"]),
        "best_number": best.number,
        "best_params": best.params,
        "proposals": [sorted(t.params.items()) for t in study.trials],
        "n_complete": states.count("COMPLETE"),
        "n_pruned": states.count("PRUNED"),
        "n_fail": states.count("FAIL"),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def schedulers(max_resource: int) -> dict[str, Any]:
    """The settings compared on a problem whose trials end at step ``max_resource``."""
    r = max_resource
    out: dict[str, Any] = {"none": None}
    for eta, m, smoothing in (
        (3, r // 9, 1),
        (3, 2 * r // 9, 1),
        (2, 4 * r // 27, 1),
        (2, 5 * r // 27, 1),
        (2, 5 * r // 27, 3),
    ):
        label = f"halving-e{eta}-m{m}" + ("" if smoothing == 1 else f"-s{smoothing}")
        out[label] = twiddle.SuccessiveHalving(m, eta, r, smoothing=smoothing)
    return {
        **out,
        "hyperband": twiddle.Hyperband(1, r, 3),
        "median": twiddle.MedianStopping(n_startup_trials=5),
    }


def run_problem(
    name: str, objective: Callable[[twiddle.Trial], float], r: int, seeds: list[int], n: int
) -> list[dict[str, Any]]:
    rows = []
    for seed in seeds:
        for label, sched in schedulers(r).items():
            row = {"problem": name, "seed": seed, "scheduler": label, "n_trials": n}
            row.update(run_one(objective, sched, seed, n))
            row.pop("proposals")
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


@contextlib.contextmanager
def _no_call_server() -> Iterator[None]:
    """Switch the driver's call server off, so that foreign workers see snapshots only."""
    before = os.environ.get("TWIDDLE_DRIVER_HOST")
    os.environ["TWIDDLE_DRIVER_HOST"] = "off"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TWIDDLE_DRIVER_HOST"]
        else:
            os.environ["TWIDDLE_DRIVER_HOST"] = before


def run_problem_parallel(
    name: str,
    objective: Callable[[twiddle.Trial], float],
    r: int,
    seeds: list[int],
    n: int,
    jobs: int,
    dask: bool = False,
) -> list[dict[str, Any]]:
    """``none``, and one halving setting with live curves and with snapshots, in workers.

    With ``dask``, also the same setting on a local Dask cluster of ``jobs`` worker
    processes (``@dask``), whose trials read live curves through the driver's call
    server.
    """

    label = f"halving-e2-m{4 * r // 27}"
    scheduler = schedulers(r)[label]
    space = spaces()[name]
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        client = None
        if dask:
            from distributed import Client, LocalCluster

            cluster = stack.enter_context(
                LocalCluster(n_workers=jobs, threads_per_worker=1, dashboard_address=None)
            )
            client = stack.enter_context(Client(cluster))
        for seed in seeds:
            rows += _parallel_seed(name, objective, label, scheduler, space, seed, n, jobs, client)
    return rows


def _parallel_seed(
    name: str,
    objective: Callable[[twiddle.Trial], float],
    label: str,
    scheduler: Any,
    space: twiddle.Space,
    seed: int,
    n: int,
    jobs: int,
    client: Any,
) -> list[dict[str, Any]]:
    import concurrent.futures
    import multiprocessing

    rows: list[dict[str, Any]] = []
    runs: list[tuple[str, Any, Any]] = [
        ("none", None, None),
        (f"{label}@live", scheduler, None),
        (f"{label}@snapshot", scheduler, "stdlib"),
    ]
    if client is not None:
        runs.append((f"{label}@dask", scheduler, "dask"))
    first: list[Any] | None = None
    for run_label, sched, pool_kind in runs:
        row = {"problem": name, "seed": seed, "scheduler": run_label, "n_trials": n}
        if pool_kind is None:
            row.update(run_one(objective, sched, seed, n, space=space, jobs=jobs))
        elif pool_kind == "dask":
            pool = client.get_executor(pure=False)
            row.update(run_one(objective, sched, seed, n, space=space, jobs=jobs, pool=pool))
        else:
            ctx = multiprocessing.get_context("spawn")
            with (
                concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool,
                _no_call_server(),
            ):
                row.update(run_one(objective, sched, seed, n, space=space, jobs=jobs, pool=pool))
        proposals = row.pop("proposals")
        if first is None:
            first = proposals
        elif proposals != first:
            raise RuntimeError(f"{name} seed {seed}: {run_label} was offered other trials")
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _paired(diffs: list[float]) -> tuple[float, float, float]:
    """Mean, standard error and one-sided 95 % upper bound of the mean of paired diffs."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    mean = float(d.mean())
    if len(d) < 2:
        return mean, math.nan, math.nan
    se = float(d.std(ddof=1) / math.sqrt(len(d)))
    return mean, se, mean + float(stats.t.ppf(0.95, len(d) - 1)) * se


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for problem in sorted({r["problem"] for r in rows}):
        base = {r["seed"]: r for r in rows if r["problem"] == problem and r["scheduler"] == "none"}
        base_sd = float(np.std([r["heldout"] for r in base.values()], ddof=1))
        labels = list(dict.fromkeys(r["scheduler"] for r in rows if r["problem"] == problem))
        for label in labels:
            mine = [r for r in rows if r["problem"] == problem and r["scheduler"] == label]
            ratio = [r["steps"] / base[r["seed"]]["steps"] for r in mine]
            dloss = [r["heldout"] - base[r["seed"]]["heldout"] for r in mine]
            same = [r["best_number"] == base[r["seed"]]["best_number"] for r in mine]
            mean, se, upper = _paired(dloss)
            ratio_mean = float(np.mean(ratio))
            out.append(
                {
                    "problem": problem,
                    "scheduler": label,
                    "runs": len(mine),
                    "mean_steps": float(np.mean([r["steps"] for r in mine])),
                    "steps_ratio_mean": ratio_mean,
                    "steps_ratio_max": float(np.max(ratio)),
                    "heldout_mean": float(np.mean([r["heldout"] for r in mine])),
                    "heldout_diff_mean": mean,
                    "heldout_diff_se": se,
                    "heldout_diff_upper95": upper,
                    "heldout_diff_max": float(np.max(dloss)),
                    "heldout_sd_none": base_sd,
                    "same_choice": int(sum(same)),
                    "met": bool(ratio_mean <= 0.5 and (mean <= 0.0 or mean <= se)),
                }
            )
    return out


def _markdown(meta: dict[str, Any], summary: list[dict[str, Any]]) -> str:
    jobs = meta.get("jobs", 1)
    title = "" if jobs == 1 else f" with {jobs} worker processes"
    lines = [
        f"# Successive halving{title}: steps saved and held-out loss",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} (Python "
        f"{meta['python']}, twiddle {meta['twiddle']}, {meta['seconds']:.0f} s); random "
        "sampler, the same proposals in every run of a seed. `steps ratio` is the steps "
        "(epochs) used / the steps of the same seed's run without a scheduler (`none`); "
        "`held-out diff` is the held-out loss of the chosen configuration minus that of the "
        "`none` run of the same seed (lower is better; 0 = as good): its mean over the "
        "seeds ± the standard error of the mean, the one-sided 95 % upper bound of the mean, "
        "and the largest diff of a seed; `same choice` counts the seeds where both runs "
        "chose the same configuration. Target (**met**): mean steps ratio <= 0.5 and mean "
        "held-out diff at most one standard error above 0. Settings and criterion are "
        "described in the script's docstring.",
        "",
        "| problem | scheduler | seeds | steps ratio (mean / max) | held-out loss (mean) "
        "| held-out diff (mean ± SE) | upper 95 % | max diff | same choice | met |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        none = s["scheduler"] == "none"
        lines.append(
            f"| {s['problem']} | {s['scheduler']} | {s['runs']} "
            f"| {s['steps_ratio_mean']:.3f} / {s['steps_ratio_max']:.3f} "
            f"| {s['heldout_mean']:.4f} "
            f"| {s['heldout_diff_mean']:+.4f} ± {s['heldout_diff_se']:.4f} "
            f"| {s['heldout_diff_upper95']:+.4f} | {s['heldout_diff_max']:+.4f} "
            f"| {s['same_choice']}/{s['runs']} | {'—' if none else ('yes' if s['met'] else 'no')} |"
        )
    sds = {s["problem"]: s["heldout_sd_none"] for s in summary}
    lines += [
        "",
        "Seed-to-seed standard deviation of the held-out loss of the `none` run's choice: "
        + ", ".join(f"{p} {v:.4f}" for p, v in sds.items())
        + ".",
        "",
        f"Problems run: {', '.join(meta['problems'])}. {meta['note']}".rstrip(),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic problem, 2 seeds")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per problem (default 20)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--jobs", type=int, default=1, help="trials at a time, in worker processes (default 1)"
    )
    parser.add_argument(
        "--dask",
        action="store_true",
        help="with --jobs N > 1, also run on a local Dask cluster of N worker processes "
        "(needs the dask extra)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1; got {args.jobs}")
    if args.dask and args.jobs < 2:
        parser.error("--dask needs --jobs 2 or more")

    def run(name: str, objective: Any, r: int, n: int) -> list[dict[str, Any]]:
        if args.jobs == 1:
            return run_problem(name, objective, r, seeds, n)
        return run_problem_parallel(name, objective, r, seeds, n, args.jobs, dask=args.dask)

    t0 = time.perf_counter()
    seeds = [0, 1] if args.quick else list(range(args.seeds))
    rows = run("synthetic", synthetic, SYNTH_R, 60)
    problems = ["synthetic"]
    note = ""
    if not args.quick:
        try:
            importlib.import_module("twiddle.torch")
        except ImportError as err:
            note = f"mlp-digits skipped: twiddle.torch did not import ({err})."
        else:
            rows += run("mlp-digits", mlp_digits, MLP_R, 20)
            problems.append("mlp-digits")
    summary = summarise(rows)
    command = "python benchmarks/halving.py" + (f" --jobs {args.jobs}" if args.jobs > 1 else "")
    command += " --dask" if args.dask else ""
    meta = {
        "command": command,
        "jobs": args.jobs,
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "twiddle": twiddle.__version__,
        "problems": problems,
        "seeds": seeds,
        "seconds": round(time.perf_counter() - t0, 1),
        "note": note,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = {"meta": meta, "summary": summary, "runs": rows}
    stem = "halving" if args.jobs == 1 else "halving-parallel"
    (args.out_dir / f"{stem}.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    (args.out_dir / f"{stem}.md").write_text(_markdown(meta, summary))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
