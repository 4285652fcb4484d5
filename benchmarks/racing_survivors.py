"""Fold racing's false-stop rate when the history is made of racing's own survivors.

``benchmarks/racing_rates.py`` gives the prior a history of COMPLETE trials drawn
independently of racing. In a study the COMPLETE trials are the configurations that
racing did *not* stop: a distant configuration survives more often when its fold
differences happen to spread widely, so the survivors' spread grows with their
distance from the incumbent more than that of the configurations proposed. The prior
reads its centre from that trend (see ``twiddle._schedulers``), so selection can pull
the centre down. This script measures the effect: for each simulated study, M
configurations worse than the incumbent by a gap drawn uniformly in [0, 0.05] (spread
0.01, or drawn from the model's prior with 4 degrees of freedom) are raced in turn
(the first three always complete), the survivors form the history, and null
challengers (E[d] = 0, spread drawn the same way) are raced against it; the same
challengers are also raced against the history of *all* M configurations.

Usage::

    python benchmarks/racing_survivors.py            # 300 studies x 10 challengers per cell
    python benchmarks/racing_survivors.py --studies 100

Results go to ``benchmarks/results/racing-survivors.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
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
from test_racing import _race  # noqa: E402


def _spread(rng: np.random.Generator, scenario: str) -> float:
    return 0.01 if scenario == "equal" else 0.01 * math.sqrt(4.0 / rng.chisquare(4.0))


def cell(
    n_folds: int, scenario: str, candidates: int, studies: int, per: int, seed: int
) -> dict[str, Any]:
    racing = twiddle.FoldRacing(alpha=0.05)
    rng = np.random.default_rng(seed)
    stops_survivors = stops_all = races = 0
    sizes, slopes = [], []
    for _ in range(studies):
        inc = 0.9 + rng.normal(0.0, 0.03, n_folds)
        survivors: list[list[float]] = []
        everyone: list[list[float]] = []
        for _ in range(candidates):
            gap = rng.uniform(0.0, 0.05)
            trial = list(inc - gap - _spread(rng, scenario) * rng.normal(size=n_folds))
            everyone.append(trial)
            if len(survivors) < 3 or _race(racing, np.array(trial), inc, history=survivors) == 0:
                survivors.append(trial)
        sizes.append(len(survivors))
        slopes.append(racing.prior(list(inc), survivors)["slope"] or 0.0)
        for _ in range(per):
            chal = inc + _spread(rng, scenario) * rng.normal(size=n_folds)
            stops_survivors += _race(racing, chal, inc, history=survivors) > 0
            stops_all += _race(racing, chal, inc, history=everyone) > 0
            races += 1
    return {
        "folds": n_folds,
        "scenario": scenario,
        "candidates": candidates,
        "survivors": float(np.mean(sizes)),
        "rate_survivors": stops_survivors / races,
        "rate_all": stops_all / races,
        "trend_used": float(np.mean(np.array(slopes) != 0.0)),
        "races": races,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=300)
    parser.add_argument("--per", type=int, default=10, help="null challengers per study")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = []
    for n_folds in (5, 10):
        for scenario in ("equal", "mixed"):
            for candidates in (40, 80):
                row = cell(n_folds, scenario, candidates, args.studies, args.per, seed=17)
                rows.append(row)
                print(row, flush=True)
    meta = run_meta("racing_survivors.py", argv, started)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "racing-survivors.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n"
    )
    lines = [
        "# Fold racing: false-stop rate with a history of racing's own survivors",
        "",
        f"Run {meta['date']} with `{meta['command'].strip()}`; Python {meta['python']}; "
        f"{meta['seconds']:.0f} s. `FoldRacing(alpha=0.05)`; {args.studies} simulated "
        f"studies per cell, {args.per} null challengers each (challengers of one study "
        "share its history, so the Monte Carlo error is larger than for independent "
        "races). *Survivors*: mean size of the history; *trend used*: share of the "
        "studies whose prior read its centre from the trend.",
        "",
        "| K | spreads | configurations raced | survivors | trend used "
        "| rate, survivors' history | rate, every configuration's |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['folds']} | {r['scenario']} | {r['candidates']} | {r['survivors']:.1f} "
            f"| {r['trend_used']:.0%} | {r['rate_survivors']:.4f} | {r['rate_all']:.4f} |"
        )
    (args.out_dir / "racing-survivors.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
