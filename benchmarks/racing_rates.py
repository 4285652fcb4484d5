"""Fold racing's false-stop rate and power by simulation, for both kinds of levels.

The rule itself (``FoldRacing.decide``) on synthetic fold scores, with the
simulation helpers of ``tests/test_racing.py``, so the figures quoted in the notes
of ``twiddle._schedulers`` are the ones the tests bound:

* **false-stop rate**: races of a challenger *equal* to the incumbent (E[d] = 0)
  with a history of 10 COMPLETE trials (other sizes for ``duplicates*``), in
  eight scenarios: every fold difference with the same spread (``equal``), spreads drawn
  from the model's prior with 4 degrees of freedom (``mixed``), a challenger whose
  spread is 1.5 or 2 times the history's (``larger1.5``, ``larger2``, outside the
  model), a history whose spread grows with its distance from the incumbent, with a
  challenger as noisy as the trend says at distance 0 (``trend``) or as a typical
  history trial (``trend-typical``, outside the model), and a history of 4 distinct
  trials seen 5 times each (``duplicates``, spreads as in ``mixed``) or of 12 seen 1
  to 6 times each (``duplicates-uneven``);
* **fits saved**: races of a challenger worse by ``delta`` spreads of a fold
  difference (same spread as the history), the fraction of its K fits not made.

Usage::

    python benchmarks/racing_rates.py            # 4000 null races, 2000 per power cell
    python benchmarks/racing_rates.py --races 500  # a quick look
    python benchmarks/racing_rates.py --alpha 0.1  # another alpha

Results go to ``benchmarks/results/racing-rates.json`` and ``.md`` (with another
alpha, ``racing-rates-alpha<alpha>``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "src", ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import twiddle  # noqa: E402
from benchmarks.runmeta import run_meta  # noqa: E402
from test_racing import _history, _null_race, _race  # noqa: E402

LEVELS = ("bonferroni", "calibrated")
SCENARIOS = (
    "equal",
    "mixed",
    "larger1.5",
    "larger2",
    "trend",
    "trend-typical",
    "duplicates",
    "duplicates-uneven",
)
DELTAS = (0.5, 1.0, 2.0, 3.0)


def null_rate(
    levels: str, n_folds: int, scenario: str, races: int, seed: int, alpha: float = 0.05
) -> float:
    racing = twiddle.FoldRacing(alpha=alpha, levels=levels)
    rng = np.random.default_rng(seed)
    return float(
        np.mean([_null_race(racing, rng, n_folds, scenario, 10) > 0 for _ in range(races)])
    )


def fits_saved(
    levels: str, n_folds: int, delta: float, races: int, seed: int, alpha: float = 0.05
) -> float:
    racing = twiddle.FoldRacing(alpha=alpha, levels=levels)
    rng = np.random.default_rng(seed)
    sd, saved = 0.01, 0.0
    for _ in range(races):
        inc = 0.9 + rng.normal(0.0, 0.03, n_folds)
        history = _history(rng, inc, np.full(10, sd))
        chal = inc - delta * sd + sd * rng.normal(size=n_folds)
        k = _race(racing, chal, inc, history=history)
        saved += (n_folds - k) / n_folds if k else 0.0
    return saved / races


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--races", type=int, default=4000, help="null races per cell")
    parser.add_argument("--power-races", type=int, default=2000, help="races per power cell")
    parser.add_argument("--alpha", type=float, default=0.05, help="FoldRacing's alpha")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rates: list[dict[str, Any]] = []
    power: list[dict[str, Any]] = []
    for n_folds in (5, 10):
        for scenario in SCENARIOS:
            row: dict[str, Any] = {"folds": n_folds, "scenario": scenario}
            for levels in LEVELS:  # the same seed: the same races for both
                row[levels] = null_rate(
                    levels, n_folds, scenario, args.races, seed=5, alpha=args.alpha
                )
            rates.append(row)
            print(row, flush=True)
        for delta in DELTAS:
            row = {"folds": n_folds, "delta": delta}
            for levels in LEVELS:
                row[levels] = fits_saved(
                    levels, n_folds, delta, args.power_races, seed=9, alpha=args.alpha
                )
            power.append(row)
            print(row, flush=True)
    meta = run_meta(
        "racing_rates.py",
        argv,
        started,
        races=args.races,
        power_races=args.power_races,
        alpha=args.alpha,
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = {"meta": meta, "rates": rates, "power": power}
    stem = "racing-rates" if args.alpha == 0.05 else f"racing-rates-alpha{args.alpha:g}"
    (args.out_dir / f"{stem}.json").write_text(json.dumps(out, indent=1) + "\n")
    (args.out_dir / f"{stem}.md").write_text(_markdown(meta, rates, power))
    return 0


def _markdown(
    meta: dict[str, Any], rates: list[dict[str, Any]], power: list[dict[str, Any]]
) -> str:
    alpha = meta.get("alpha", 0.05)
    se = (alpha * (1 - alpha) / meta["races"]) ** 0.5
    lines = [
        "# Fold racing: false-stop rate and fits saved, by simulation",
        "",
        f"Run {meta['date']} with `{meta['command'].strip()}`; Python {meta['python']}; "
        f"{meta['seconds']:.0f} s. `FoldRacing(alpha={alpha:g})` with each kind of levels, on "
        "the same simulated races (see `benchmarks/racing_rates.py`).",
        "",
        f"## False-stop rate (alpha = {alpha:g}; {meta['races']} null races per cell, "
        f"Monte Carlo standard error about {se:.4f})",
        "",
        "| K | scenario | bonferroni | calibrated |",
        "|---:|---|---:|---:|",
    ]
    for r in rates:
        lines.append(
            f"| {r['folds']} | {r['scenario']} | {r['bonferroni']:.4f} | {r['calibrated']:.4f} |"
        )
    lines += [
        "",
        "*equal*: every fold difference has the same spread; *mixed*: spreads drawn from "
        "the model's prior (4 degrees of freedom); *larger1.5*, *larger2*: the challenger's "
        "spread is 1.5 or 2 times the history's, which the model does not cover; *trend*: "
        "the history's spread grows with its distance from the incumbent (0.01 at 0, 0.026 "
        "at the farthest) and the challenger's is that at 0; *trend-typical*: the same "
        "history and a challenger as noisy as a typical history trial (0.019), which the "
        "model does not cover either; *duplicates*: as *mixed*, but the history is 4 "
        "distinct trials, each 5 times (configurations that score alike on every fold); "
        "*duplicates-uneven*: 12 distinct trials, each 1 to 6 times.",
        "",
        f"## Fits saved on a worse challenger ({meta['power_races']} races per cell)",
        "",
        "| K | worse by (spreads) | bonferroni | calibrated |",
        "|---:|---:|---:|---:|",
    ]
    for r in power:
        lines.append(
            f"| {r['folds']} | {r['delta']:g} | {r['bonferroni']:.1%} | {r['calibrated']:.1%} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
