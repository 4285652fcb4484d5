"""Online Laplace in twiddle's PyTorch MLPs against 5-fold CV over weight-decay candidates.

For each data set and each of a few random train/test splits:

- **online evidence**: one fit of ``MLPRegressor`` / ``MLPClassifier`` with
  ``weight_decay="evidence"`` on the training set: the prior (and noise) precision
  move to the Laplace evidence's maximum at the current weights during training
  (K-FAC curvature), so the weight decay is chosen in the same run that trains the
  network;
- **5-fold CV**: ``twiddle.tune`` with the grid sampler over the weight-decay
  candidates (the estimator's L2 coefficient, on a log grid that brackets what the
  evidence picks), then a refit of the best on the training set;
- **no decay**, for reference: one fit with ``weight_decay=0``.

Every fit is the same network, optimiser (Adam), epochs, batch size and seed.
Reported: the held-out loss of each choice on the test set (mean squared error of the
targets standardised by the training set's spread; log loss for digits, with accuracy),
the standard error of the CV choice's held-out loss over test samples, and compute as
training epochs and wall time (the online method's Laplace updates included).

Target (issue): the evidence choice within one standard error of the CV choice's
held-out score, at >= 5x less training compute.

Usage::

    python benchmarks/laplace_online.py            # 3 splits per data set
    python benchmarks/laplace_online.py --quick    # 1 split, 5 candidates

Results go to ``benchmarks/results/laplace-online.json`` and ``.md`` (``--out-dir``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
if (_ROOT / "src" / "twiddle").is_dir():
    sys.path.insert(0, str(_ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_diabetes, load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import twiddle  # noqa: E402
from twiddle.torch import MLPClassifier, MLPRegressor  # noqa: E402

TARGET_COMPUTE_RATIO = 5.0
CONFIG: dict[str, dict[str, Any]] = {
    "diabetes": {"n_layers": 1, "width": 32, "epochs": 60, "learning_rate": 3e-3},
    "digits": {"n_layers": 1, "width": 64, "epochs": 30, "learning_rate": 3e-3},
}


def make(name: str, weight_decay: Any, seed: int) -> Any:
    cls = MLPRegressor if name == "diabetes" else MLPClassifier
    return cls(
        weight_decay=weight_decay,
        batch_size=32,
        validation_fraction=0.0,
        seed=seed,
        **CONFIG[name],
    )


def held_out(name: str, est: Any, X: np.ndarray, y: np.ndarray, y_sd: float) -> dict[str, Any]:
    if name == "diabetes":
        losses = ((est.predict(X) - y) / y_sd) ** 2
        extra: dict[str, Any] = {}
    else:
        p = np.clip(est.predict_proba(X)[np.arange(len(y)), y], 1e-12, 1.0)
        losses = -np.log(p)
        extra = {"accuracy": float((est.predict(X) == y).mean())}
    return {
        "loss": float(losses.mean()),
        "loss_se": float(losses.std(ddof=1) / math.sqrt(losses.size)),
        **extra,
    }


def run_split(name: str, split: int, grid: list[float]) -> dict[str, Any]:
    X, y = load_diabetes(return_X_y=True) if name == "diabetes" else load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=split)
    y_sd = float(np.std(ytr)) if name == "diabetes" else 1.0
    epochs = CONFIG[name]["epochs"]
    out: dict[str, Any] = {"dataset": name, "split": split, "grid": grid}

    t0 = time.perf_counter()
    online = make(name, "evidence", split).fit(Xtr, ytr)
    out["online"] = {
        "choice": float(np.mean(online.weight_decay_)),
        "prior_precision": online.prior_precision_.tolist(),
        "noise_precision": online.noise_precision_,
        "log_evidence": online.log_evidence_,
        "updates": len(online.evidence_history_),
        "epochs": epochs,
        "seconds": time.perf_counter() - t0,
        **held_out(name, online, Xte, yte, y_sd),
    }

    t0 = time.perf_counter()
    plain = make(name, 0.0, split).fit(Xtr, ytr)
    out["no_decay"] = {
        "choice": 0.0,
        "epochs": epochs,
        "seconds": time.perf_counter() - t0,
        **held_out(name, plain, Xte, yte, y_sd),
    }

    t0 = time.perf_counter()
    space = twiddle.Space({"weight_decay": twiddle.Categorical(grid)})
    res = twiddle.tune(
        make(name, 0.0, split),
        space,
        Xtr,
        ytr,
        cv=5,
        sampler="grid",
        n_trials=len(grid),
        seed=split,
        scoring="neg_mean_squared_error" if name == "diabetes" else "neg_log_loss",
    )
    n_fits = 5 * len(grid) + 1
    out["cv"] = {
        "choice": res.best_params_["weight_decay"],
        "epochs": n_fits * epochs,
        "fits": n_fits,
        "seconds": time.perf_counter() - t0,
        **held_out(name, res.best_estimator_, Xte, yte, y_sd),
    }
    cv, on = out["cv"], out["online"]
    on["loss_diff"] = on["loss"] - cv["loss"]  # positive: evidence worse
    on["within_se"] = bool(on["loss_diff"] <= cv["loss_se"])
    on["epoch_ratio"] = cv["epochs"] / on["epochs"]
    on["time_ratio"] = cv["seconds"] / on["seconds"]
    return out


def markdown(results: list[dict[str, Any]], facts: dict[str, Any]) -> str:
    lines = [
        '# Online Laplace (`weight_decay="evidence"`) vs 5-fold CV over weight decay',
        "",
        f"Built {facts['date']} by `benchmarks/laplace_online.py`. Versions: python "
        f"{facts['python']}, twiddle {facts['twiddle']}, torch {facts['torch']}; one torch "
        "thread per fit.",
        "",
        "Same network (one hidden ReLU layer), Adam, batch 32, epochs and seed for every "
        "fit: "
        + "; ".join(
            f"{k}: width {v['width']}, {v['epochs']} epochs, lr {v['learning_rate']:g}"
            for k, v in CONFIG.items()
        )
        + '. Online: one fit with `weight_decay="evidence"`. CV: `twiddle.tune`, grid '
        "over the weight-decay candidates, 5 folds, plus a refit. Held-out loss: mean "
        "squared error of targets scaled by the training spread (diabetes), log loss "
        "(digits); SE: standard error of the CV choice's held-out loss over test samples. "
        "Decay = the L2 coefficient on the mean training loss (online: the fitted "
        "per-layer coefficients, averaged over layers). "
        "Wall times are indicative only on a shared machine.",
        "",
        "| data | split | method | decay | held-out loss | within CV's SE | epochs | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cv = r["cv"]
        for key, label in (
            ("online", "online evidence"),
            ("cv", "5-fold CV"),
            ("no_decay", "no decay"),
        ):
            m = r[key]
            acc = f" (acc {m['accuracy']:.3f})" if "accuracy" in m else ""
            se = f" +- {m['loss_se']:.4f}" if key == "cv" else ""
            within = ("yes" if m["within_se"] else "no") if key == "online" else ""
            ratio = f" ({m['epoch_ratio']:.0f}x)" if key == "online" else ""
            tratio = f" ({m['time_ratio']:.1f}x)" if key == "online" else ""
            lines.append(
                f"| {r['dataset']} | {r['split']} | {label} | {m['choice']:.3g} | "
                f"{m['loss']:.4f}{se}{acc} | {within} | {m['epochs']}{ratio} | "
                f"{m['seconds']:.1f}{tratio} |"
            )
        del cv
    lines.append("")
    n_ok = sum(r["online"]["within_se"] for r in results)
    min_ep = min(r["online"]["epoch_ratio"] for r in results)
    min_t = min(r["online"]["time_ratio"] for r in results)
    met = n_ok == len(results) and min_ep >= TARGET_COMPUTE_RATIO
    lines.append(
        f"- Online evidence: within one SE of the CV choice in {n_ok} of {len(results)} "
        f"splits; {min_ep:.0f}x fewer training epochs, smallest wall-time ratio "
        f"{min_t:.1f}x (Laplace updates included). Target {'met' if met else 'not met'}."
    )
    better = sum(r["online"]["loss"] < r["no_decay"]["loss"] for r in results)
    lines.append(
        f"- Against no weight decay: the online choice has the lower held-out loss in "
        f"{better} of {len(results)} splits."
    )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 split, 5 candidates")
    parser.add_argument("--out-dir", type=Path, default=_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    splits = [0] if args.quick else [0, 1, 2]
    grid = [float(v) for v in np.logspace(-4, 0, 5 if args.quick else 9)]
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    results = []
    for name in ("diabetes", "digits"):
        for split in splits:
            r = run_split(name, split, grid)
            print(
                f"{name} split {split}: online {r['online']['choice']:.3g} loss "
                f"{r['online']['loss']:.4f}, cv {r['cv']['choice']:.3g} loss "
                f"{r['cv']['loss']:.4f} +- {r['cv']['loss_se']:.4f}, no decay "
                f"{r['no_decay']['loss']:.4f}",
                flush=True,
            )
            results.append(r)
    facts = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "twiddle": twiddle.__version__,
        "torch": torch.__version__,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "laplace-online.json").write_text(
        json.dumps({"machine": facts, "config": CONFIG, "results": results}, indent=2) + "\n"
    )
    md = markdown(results, facts)
    (args.out_dir / "laplace-online.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
