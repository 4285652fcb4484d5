"""Successive halving: steps (epochs) saved and the held-out loss of the chosen configuration.

Each problem runs :meth:`twiddle.Study.optimize` twice per seed with the random
sampler (so both runs propose the same configurations, and only the scheduler
differs): once running every trial to the end, once with
``scheduler=SuccessiveHalving(min_resource=m, reduction_factor=3, max_resource=R)``
(asynchronous successive halving, Li et al., 2020) for m = 1, R/27 and R/9 (halving
from the first step keeps about 1/81 of the trials to the end when R = 81). Median
stopping and Hyperband are run too, for reference. Reported per run:

* **steps**: the intermediate values the trials recorded, summed over the trials (for
  the MLP, the epochs trained); target: at most half those of the plain run;
* **held-out loss** of the configuration the run chooses (the best COMPLETE trial by
  its final validation loss); target: equal to the plain run's.

Problems:

``synthetic``
    Two hyperparameters (``lr`` on a log scale, ``reg``); the validation loss after
    step t is ``v(t) = L(lr, reg) + 0.3 exp(-t / tau(lr)) + noise`` with
    ``L = 0.1 + 0.05 (log10 lr + 2)^2 + 0.2 (reg - 0.3)^2``,
    ``tau = 10 (lr / 0.01)^(-0.15)`` (larger learning rates learn faster, so curves
    cross: early on a too-large rate looks best) and Gaussian noise of sd
    0.005 fixed by (configuration, step). R = 81 steps, 60 trials. The held-out loss
    is the noise-free ``v(R)``.
``mlp-digits`` (only when ``twiddle.torch`` imports)
    ``twiddle.torch.MLPClassifier`` on scikit-learn's digits, 80 % / 20 % split; the
    trial trains on the 80 % (reporting the loss on its 20 % validation part after
    each epoch), R = 27 epochs, 20 trials (4 seeds) over learning rate, width and
    weight decay; the held-out loss is the log loss on the 20 % test part of the
    trained network.

Usage::

    python benchmarks/halving.py            # both problems (a few minutes)
    python benchmarks/halving.py --quick    # synthetic only, fewer seeds

Results go to ``benchmarks/results/halving.json`` and ``halving.md`` (``--out-dir``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import platform
import sys
import time
from collections.abc import Callable
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


# ----------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------
def run_one(
    objective: Callable[[twiddle.Trial], float],
    scheduler: Any,
    seed: int,
    n_trials: int,
) -> dict[str, Any]:
    study = twiddle.Study(direction="minimize", sampler="random", seed=seed)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, scheduler=scheduler)
    best = study.best_trial
    states = [t.state.value for t in study.trials]
    return {
        "steps": sum(len(t.intermediate) for t in study.trials),
        "heldout": float(best.user_attrs["heldout"]),
        "best_number": best.number,
        "best_params": best.params,
        "n_complete": states.count("COMPLETE"),
        "n_pruned": states.count("PRUNED"),
        "n_fail": states.count("FAIL"),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def schedulers(max_resource: int) -> dict[str, Any]:
    out: dict[str, Any] = {"none": None}
    for m in sorted({1, max(1, max_resource // 27), max(1, max_resource // 9)}):
        out[f"halving-m{m}"] = twiddle.SuccessiveHalving(m, 3, max_resource)
    return {
        **out,
        "hyperband": twiddle.Hyperband(1, max_resource, 3),
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
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for problem in sorted({r["problem"] for r in rows}):
        base = {r["seed"]: r for r in rows if r["problem"] == problem and r["scheduler"] == "none"}
        labels = list(dict.fromkeys(r["scheduler"] for r in rows if r["problem"] == problem))
        for label in labels:
            mine = [r for r in rows if r["problem"] == problem and r["scheduler"] == label]
            ratio = [r["steps"] / base[r["seed"]]["steps"] for r in mine]
            dloss = [r["heldout"] - base[r["seed"]]["heldout"] for r in mine]
            same = [r["best_params"] == base[r["seed"]]["best_params"] for r in mine]
            out.append(
                {
                    "problem": problem,
                    "scheduler": label,
                    "runs": len(mine),
                    "mean_steps": float(np.mean([r["steps"] for r in mine])),
                    "steps_ratio_mean": float(np.mean(ratio)),
                    "steps_ratio_max": float(np.max(ratio)),
                    "heldout_mean": float(np.mean([r["heldout"] for r in mine])),
                    "heldout_diff_mean": float(np.mean(dloss)),
                    "heldout_diff_max": float(np.max(dloss)),
                    "same_choice": int(sum(same)),
                }
            )
    return out


def _markdown(meta: dict[str, Any], summary: list[dict[str, Any]]) -> str:
    lines = [
        "# Successive halving: steps saved and held-out loss",
        "",
        f"Generated by `benchmarks/halving.py` on {meta['date']} (Python {meta['python']}, "
        f"twiddle {meta['twiddle']}); random sampler, same proposals in every run of a seed. "
        "`steps ratio` is steps (epochs) used / steps of the run without a scheduler; "
        "`held-out diff` is the held-out loss of the chosen configuration minus that of the "
        "run without a scheduler (lower is better; 0 = as good); `same choice` counts the "
        "seeds where both runs chose the same configuration.",
        "",
        "| problem | scheduler | runs | mean steps | steps ratio (mean / max) "
        "| held-out loss (mean) | held-out diff (mean / max) | same choice |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['problem']} | {s['scheduler']} | {s['runs']} | {s['mean_steps']:.0f} "
            f"| {s['steps_ratio_mean']:.3f} / {s['steps_ratio_max']:.3f} "
            f"| {s['heldout_mean']:.4f} | {s['heldout_diff_mean']:+.4f} / "
            f"{s['heldout_diff_max']:+.4f} | {s['same_choice']}/{s['runs']} |"
        )
    lines += ["", f"Problems run: {', '.join(meta['problems'])}. {meta['note']}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic problem, 2 seeds")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    seeds = [0, 1] if args.quick else list(range(10))
    rows = run_problem("synthetic", synthetic, SYNTH_R, seeds, 60)
    problems = ["synthetic"]
    note = ""
    if not args.quick:
        try:
            importlib.import_module("twiddle.torch")
        except ImportError as err:
            note = f"mlp-digits skipped: twiddle.torch did not import ({err})."
        else:
            rows += run_problem("mlp-digits", mlp_digits, MLP_R, [0, 1, 2, 3], 20)
            problems.append("mlp-digits")
    summary = summarise(rows)
    meta = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "twiddle": twiddle.__version__,
        "problems": problems,
        "note": note,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = {"meta": meta, "summary": summary, "runs": rows}
    (args.out_dir / "halving.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    (args.out_dir / "halving.md").write_text(_markdown(meta, summary))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
