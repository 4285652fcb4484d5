"""Summarise a results file into a Markdown report and check the targets.

``python -m benchmarks.bo.report [--results benchmarks/results/bo.jsonl] [--out FILE]``
rebuilds the Markdown file next to the results (``bo.md``) and prints the targets.

Figures (per problem and optimiser, over seeds):

* best loss after n trials (best-so-far of the first n trials of each run): mean and
  standard deviation over seeds, and for synthetic problems the regret to the optimum;
* normalised score ``100 * (1 - (best - opt) / (median_random - opt))``: 0 is the median
  uniformly random configuration, 100 the optimum (known for synthetic problems; for
  the scikit-learn tasks the best loss seen in the whole results file, any optimiser,
  any seed, and the random baseline, as Bayesmark does);
* held-out score (accuracy or R^2 on the 20 % split) of the configuration chosen after
  n trials (scikit-learn tasks);
* time per suggestion: mean ``ask_s`` (see ``optimizers.py``) over trials
  ``n - 10 .. n - 1`` of every run, and over whole runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.bo.harness import TIME_WINDOW
from benchmarks.bo.optimizers import ALL_OPTIMIZERS
from benchmarks.bo.problems import SYNTHETIC
from benchmarks.bo.results import (
    BASELINE_CACHE,
    DEFAULT_RESULTS,
    latest_runs,
    latest_scaling,
    markdown_path,
    read_baselines,
    read_records,
)
from benchmarks.paired import wilcoxon_p, wtl

H6_TARGET_MEAN = -3.27
H6_REGRET = 1e-3
H6_MIN_SEEDS = 8
GP_RATIO_TARGET = 0.2
TPE_RATIO_TARGET = 1.0
SCALING_AT = (100, 300, 1000)


# ---------------------------------------------------------------------------------
# small statistics
# ---------------------------------------------------------------------------------
def _mean(xs: Sequence[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def _std(xs: Sequence[float]) -> float | None:
    return statistics.stdev(xs) if len(xs) >= 2 else (0.0 if xs else None)


def _quantile(xs: Sequence[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def best_at(losses: Sequence[float | None], n: int) -> float | None:
    ok = [v for v in losses[:n] if v is not None]
    return min(ok) if ok else None


def window_mean(times: Sequence[float | None] | None, n: int) -> float | None:
    """Mean of ``times[n - TIME_WINDOW : n]`` (None if the run is shorter than n)."""
    if times is None or len(times) < n:
        return None
    xs = [t for t in times[max(0, n - TIME_WINDOW) : n] if t is not None]
    return _mean(xs)


def _order(names: Iterable[str], canonical: Sequence[str]) -> list[str]:
    names = set(names)
    head = [n for n in canonical if n in names]
    return head + sorted(names - set(head))


def problem_order() -> list[str]:
    try:
        from benchmarks.bo.ml import task_names

        ml = task_names()
    except Exception:
        ml = []
    return list(SYNTHETIC) + ml


# ---------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------
def summarise(
    records: list[dict[str, Any]], baselines: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Every figure of the report, as plain data."""
    runs = latest_runs(records)
    problems = _order({k[0] for k in runs}, problem_order())
    optimizers = _order({k[1] for k in runs}, ALL_OPTIMIZERS)
    checkpoints = sorted({int(c) for r in runs.values() for c in r.get("checkpoints", {})})

    optimum: dict[str, float | None] = {}
    for p in problems:
        if p in SYNTHETIC:
            optimum[p] = SYNTHETIC[p].optimum
            continue
        seen = [v for k, r in runs.items() if k[0] == p for v in r["losses"] if v is not None]
        if p in baselines:
            seen.append(baselines[p]["min"])
        optimum[p] = min(seen) if seen else None

    def score(p: str, best: float) -> float | None:
        opt, base = optimum.get(p), baselines.get(p, {}).get("median")
        if opt is None or base is None or base - opt <= 1e-12:
            return None
        return 100.0 * (1.0 - (best - opt) / (base - opt))

    cells: dict[tuple[str, str, int], dict[str, Any]] = {}
    for p in problems:
        for o in optimizers:
            recs = [r for k, r in sorted(runs.items()) if k[0] == p and k[1] == o]
            for n in checkpoints:
                recs_n = [r for r in recs if r["n_trials"] >= n]
                bests = [b for r in recs_n if (b := best_at(r["losses"], n)) is not None]
                if not bests:
                    continue
                scores = [s for b in bests if (s := score(p, b)) is not None]
                hold = [
                    h
                    for r in recs_n
                    if (h := r.get("checkpoints", {}).get(str(n), {}).get("holdout")) is not None
                ]
                opt = optimum.get(p)
                cells[(p, o, n)] = {
                    "n_seeds": len(bests),
                    "mean": _mean(bests),
                    "std": _std(bests),
                    "median": _quantile(bests, 0.5),
                    "q25": _quantile(bests, 0.25),
                    "q75": _quantile(bests, 0.75),
                    "regrets": None if opt is None else [b - opt for b in bests],
                    "score_mean": _mean(scores),
                    "score_std": _std(scores),
                    "scores": scores,
                    "holdout_mean": _mean(hold),
                    "holdout_std": _std(hold),
                    "ask_window": _mean(
                        [w for r in recs_n if (w := window_mean(r["ask_s"], n)) is not None]
                    ),
                    # CPU time of the asks, only when every run recorded it
                    "cpu_window": _mean(
                        [w for r in recs_n if (w := window_mean(r["ask_cpu_s"], n)) is not None]
                    )
                    if recs_n and all(r.get("ask_cpu_s") for r in recs_n)
                    else None,
                }

    timing: dict[str, dict[str, Any]] = {}
    for o in optimizers:
        recs = [r for k, r in runs.items() if k[1] == o]
        asks = [t for r in recs for t in r["ask_s"] if t is not None]
        tells = [t for r in recs for t in r["tell_s"] if t is not None]
        sugg = [t for r in recs for t in (r.get("suggest_s") or []) if t is not None]
        evals = [t for r in recs for t in r["eval_s"] if t is not None]
        timing[o] = {
            "n_runs": len(recs),
            "ask_mean": _mean(asks),
            "tell_mean": _mean(tells),
            "suggest_mean": _mean(sugg),
            "eval_mean": _mean(evals),
            "parallel": sorted({int(r.get("jobs", 1)) for r in recs}),
            "at": {
                n: _mean([w for r in recs if (w := window_mean(r["ask_s"], n)) is not None])
                for n in checkpoints
            },
        }

    scaling = {}
    for (p, o), rec in latest_scaling(records).items():
        scaling[(p, o)] = {
            "n_trials": rec["n_trials"],
            "capped": rec["capped"],
            "time_cap_s": rec["time_cap_s"],
            "optimizer_s": rec["optimizer_s"],
            "jobs": rec.get("jobs", 1),
            "at": {n: window_mean(rec["ask_s"], n) for n in SCALING_AT},
            "cpu_at": {n: window_mean(rec["ask_cpu_s"], n) for n in SCALING_AT}
            if rec.get("ask_cpu_s")
            else {},
            "last": _mean(rec["ask_s"][-TIME_WINDOW:]),
        }

    versions: dict[str, set[str]] = {}
    for r in [*runs.values(), *latest_scaling(records).values()]:
        for k, v in r.get("versions", {}).items():
            versions.setdefault(k, set()).add(v)

    return {
        "runs": runs,
        "problems": problems,
        "optimizers": optimizers,
        "checkpoints": checkpoints,
        "optimum": optimum,
        "baselines": baselines,
        "cells": cells,
        "timing": timing,
        "scaling": scaling,
        "versions": {k: sorted(v) for k, v in versions.items()},
    }


def paired_holdout(summary: dict[str, Any], ref: str, other: str, n: int) -> dict[str, Any] | None:
    """Held-out scores of ``ref`` against ``other`` after n trials, paired by task and seed.

    ``better``/``equal``/``worse`` count the pairs where ``ref`` scored higher, the
    same or lower (within 1e-9: equal); ``p`` is the two-sided Wilcoxon signed-rank
    test over the pairs that differ (NaN with fewer than 2 of them).
    """
    runs = summary["runs"]

    def holdout(r: dict[str, Any]) -> float | None:
        h = r.get("checkpoints", {}).get(str(n), {}).get("holdout")
        return float(h) if h is not None else None

    diffs = []
    for (p, o, seed), r in runs.items():
        if o != ref or (p, other, seed) not in runs:
            continue
        a, b = holdout(r), holdout(runs[(p, other, seed)])
        if a is not None and b is not None:
            diffs.append(a - b)
    if not diffs:
        return None
    better, equal, worse = wtl(diffs)
    return {
        "pairs": len(diffs),
        "better": better,
        "equal": equal,
        "worse": worse,
        "mean_diff": statistics.fmean(diffs),
        "p": wilcoxon_p(diffs),
    }


def ratio_at(summary: dict[str, Any], num: str, den: str, n: int) -> dict[str, Any] | None:
    """Time per suggestion at n trials of ``num`` over ``den`` on the problems both ran.

    CPU time of the asks where both optimisers' runs recorded it on every common
    problem (other jobs' load does not inflate it), wall time otherwise.
    """
    cells = summary["cells"]
    common = [
        p
        for p in summary["problems"]
        if cells.get((p, num, n), {}).get("ask_window") is not None
        and cells.get((p, den, n), {}).get("ask_window") is not None
    ]
    if not common:
        return None
    key, unit = "ask_window", "wall"
    if all(cells[(p, o, n)].get("cpu_window") is not None for p in common for o in (num, den)):
        key, unit = "cpu_window", "CPU"
    a = _mean([cells[(p, num, n)][key] for p in common])
    b = _mean([cells[(p, den, n)][key] for p in common])
    if a is None or not b:
        return None
    return {"num": a, "den": b, "ratio": a / b, "problems": common, "unit": unit}


def targets(summary: dict[str, Any]) -> list[str]:
    """The issue's targets, one line each."""
    cells, opts = summary["cells"], summary["optimizers"]
    cps = summary["checkpoints"]
    lines = []
    for o in opts:
        c = cells.get(("hartmann6", o, 50))
        if c:
            ok = c["mean"] <= H6_TARGET_MEAN
            lines.append(
                f"Hartmann6 mean best at 50 trials, {o}: {c['mean']:.4f} "
                f"(target <= {H6_TARGET_MEAN}; {'met' if ok else 'not met'}; {c['n_seeds']} seeds)"
            )
    for o in opts:
        c = cells.get(("hartmann6", o, 100))
        if c and c["regrets"] is not None:
            k = sum(r < H6_REGRET for r in c["regrets"])
            ok = k * 10 >= H6_MIN_SEEDS * c["n_seeds"]  # the same share with more seeds
            lines.append(
                f"Hartmann6 regret < {H6_REGRET:g} by 100 trials, {o}: {k} of {c['n_seeds']} "
                f"seeds (target >= {H6_MIN_SEEDS} of 10; {'met' if ok else 'not met'})"
            )
    for n in cps:
        for o in opts:
            sc = [
                cells[(p, o, n)]["score_mean"]
                for p in summary["problems"]
                if (p, o, n) in cells and cells[(p, o, n)]["score_mean"] is not None
            ]
            if sc:
                lines.append(
                    f"Mean normalised score at {n} trials, {o}: {statistics.fmean(sc):.1f} "
                    f"over {len(sc)} problems"
                )
    at = 100 if 100 in cps else (max(cps) if cps else None)
    for num, den, target in (
        ("twiddle-gp", "optuna-gp", GP_RATIO_TARGET),
        ("twiddle-tpe", "optuna-tpe", TPE_RATIO_TARGET),
    ):
        r = ratio_at(summary, num, den, at) if at else None
        sc = summary["scaling"]
        scaled = any((p, num) in sc and (p, den) in sc for p, _ in sc)
        if at is None:
            lines.append(
                f"Time per suggestion at 100 trials, {num} / {den}:"
                + ("" if scaled else " n/a (no runs or scaling runs of both)")
            )
        elif r is None:
            lines.append(f"Time per suggestion at {at} trials, {num} / {den}: n/a (no common runs)")
        else:
            ok = r["ratio"] <= target
            lines.append(
                f"Time per suggestion at {at} trials, {num} / {den}: "
                f"{r['num'] * 1e3:.3g} ms / {r['den'] * 1e3:.3g} ms of {r['unit']} time "
                f"= {r['ratio']:.3g} "
                f"(target <= {target:g}; {'met' if ok else 'not met'}; "
                f"{len(r['problems'])} problems)"
            )
        for p in sorted({k[0] for k in sc}):
            a, b = sc.get((p, num)), sc.get((p, den))
            if a and b and a["at"].get(100) and b["at"].get(100):
                ratio = a["at"][100] / b["at"][100]
                lines.append(
                    f"  scaling run on {p} at 100 trials: {num} / {den} = {ratio:.3g} "
                    f"(target <= {target:g}; {'met' if ratio <= target else 'not met'})"
                )
            if a and b and a["cpu_at"].get(100) and b["cpu_at"].get(100):
                cpu = a["cpu_at"][100] / b["cpu_at"][100]
                lines.append(
                    f"  same run, CPU time: {a['cpu_at'][100] * 1e3:.3g} ms / "
                    f"{b['cpu_at'][100] * 1e3:.3g} ms = {cpu:.3g} "
                    f"(target <= {target:g}; {'met' if cpu <= target else 'not met'})"
                )
    return lines


# ---------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------
def _fmt(x: float | None, spec: str = ".4g") -> str:
    return "-" if x is None else format(x, spec)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.3g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def render(summary: dict[str, Any], source: str) -> str:
    cells, opts, probs = summary["cells"], summary["optimizers"], summary["problems"]
    cps = summary["checkpoints"]
    runs = summary["runs"]
    md: list[str] = []
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    md += [
        "# Bayesian-optimisation benchmark",
        "",
        f"Built {now} from `{source}`: {len(runs)} runs, {len(probs)} problems, "
        f"{len(opts)} optimisers"
        + (f", {len(summary['scaling'])} scaling runs" if summary["scaling"] else "")
        + ". Versions: "
        + ", ".join(f"{k} {'/'.join(v)}" for k, v in summary["versions"].items())
        + ".",
        "",
        "All losses are minimised. Cells are mean ± standard deviation over seeds "
        "(the number of seeds follows in brackets when it is not the same everywhere). "
        "See `benchmarks/bo/README.md` for the protocol.",
        "",
        "## Targets",
        "",
    ]
    md += [f"- {line}" for line in targets(summary)] or ["- (no data)"]
    seeds = {c["n_seeds"] for c in cells.values()}
    one_n = len(seeds) == 1

    for n in cps:
        md += ["", f"## Best loss after {n} trials", ""]
        rows = []
        for p in probs:
            opt = summary["optimum"].get(p)
            row = [p, _fmt(opt)]
            for o in opts:
                c = cells.get((p, o, n))
                if c is None:
                    row.append("")
                    continue
                txt = f"{c['mean']:.4g} ± {c['std']:.2g}"
                if not one_n:
                    txt += f" ({c['n_seeds']})"
                row.append(txt)
            rows.append(row)
        md += _table(["problem", "optimum", *opts], rows)

    ml = [p for p in probs if p not in SYNTHETIC]
    for n in cps:
        md += ["", f"## Normalised score after {n} trials (0 = median random, 100 = optimum)", ""]
        rows = []
        means: dict[str, list[float]] = {o: [] for o in opts}
        for p in probs:
            base = summary["baselines"].get(p, {}).get("median")
            row = [p, _fmt(base)]
            for o in opts:
                c = cells.get((p, o, n))
                if c is None or c["score_mean"] is None:
                    row.append("")
                    continue
                means[o].append(c["score_mean"])
                row.append(f"{c['score_mean']:.1f} ± {c['score_std']:.1f}")
            rows.append(row)
        synth = [p for p in probs if p in SYNTHETIC]
        groups = [("**mean, synthetic**", synth), ("**mean, scikit-learn**", ml)]
        if synth and ml:
            groups.append(("**mean, all**", probs))
        for label, subset in groups:
            row = [label, ""]
            any_value = False
            for o in opts:
                xs = [
                    cells[(p, o, n)]["score_mean"]
                    for p in subset
                    if (p, o, n) in cells and cells[(p, o, n)]["score_mean"] is not None
                ]
                any_value = any_value or bool(xs)
                row.append(f"**{statistics.fmean(xs):.1f}** ({len(xs)})" if xs else "")
            if any_value:
                rows.append(row)
        md += _table(["problem", "median random", *opts], rows)

    if ml:
        for n in cps:
            md += ["", f"## Held-out score of the configuration chosen after {n} trials", ""]
            md += [
                "Accuracy (classification) or R² (regression) on the 20 % split, after "
                "refitting the best-by-CV configuration on the 80 %.",
                "",
            ]
            rows = []
            for p in ml:
                row = [p]
                for o in opts:
                    c = cells.get((p, o, n))
                    if c is None or c["holdout_mean"] is None:
                        row.append("")
                    else:
                        row.append(f"{c['holdout_mean']:.4f} ± {c['holdout_std']:.3f}")
                rows.append(row)
            md += _table(["task", *opts], rows)

    ref = "twiddle-gp"
    if ml and ref in opts:
        md += ["", f"## Held-out score, paired with {ref}", ""]
        md += [
            f"For each other optimiser, the runs of the same task and seed as {ref}'s: "
            f"*better / equal / worse* counts the pairs where {ref}'s chosen configuration "
            "scored higher, the same or lower on the 20 % split; *p* is the two-sided "
            "Wilcoxon signed-rank test over the pairs that differ.",
            "",
        ]
        rows = []
        for o in opts:
            if o == ref:
                continue
            for n in cps:
                c = paired_holdout(summary, ref, o, n)
                if c is None:
                    continue
                p_text = "" if math.isnan(c["p"]) else f"{c['p']:.2g}"
                rows.append(
                    [
                        o,
                        str(n),
                        str(c["pairs"]),
                        f"{c['better']} / {c['equal']} / {c['worse']}",
                        f"{c['mean_diff']:+.4f}",
                        p_text,
                    ]
                )
        md += _table(
            ["against", "trials", "pairs", "better / equal / worse", "mean diff", "p"], rows
        )

    if opts:
        md += ["", "## Time per suggestion (ms, optimiser only, objective excluded)", ""]
        md += [
            f"`at n` is the mean over trials n-{TIME_WINDOW}..n-1 of every run; `whole run` "
            "the mean over all trials; `sampler` twiddle's time inside `Sampler.suggest` "
            "alone. Runs made with `--jobs` > 1 shared the CPU with another run: their "
            "times are noisier.",
            "",
        ]
        rows = []
        for o in opts:
            t = summary["timing"][o]
            rows.append(
                [
                    o,
                    str(t["n_runs"]),
                    *[_ms(t["at"].get(n)) for n in cps],
                    _ms(t["ask_mean"]),
                    _ms(t["suggest_mean"]),
                    _ms(t["tell_mean"]),
                    _ms(t["eval_mean"]),
                    ",".join(map(str, t["parallel"])),
                ]
            )
        md += _table(
            [
                "optimiser",
                "runs",
                *[f"at {n}" for n in cps],
                "whole run",
                "sampler",
                "tell",
                "objective",
                "jobs",
            ],
            rows,
        )

    if cps:
        n = max(cps)
        md += ["", f"### Time per suggestion at {n} trials, per problem (ms)", ""]
        rows = [
            [p, *[_ms(cells.get((p, o, n), {}).get("ask_window")) for o in opts]] for p in probs
        ]
        md += _table(["problem", *opts], rows)

    if summary["scaling"]:
        md += ["", "## Time per suggestion against the number of trials (ms)", ""]
        md += [
            "One seed, one long run per optimiser on a cheap function; a run stops early "
            "once the optimiser has used its time cap (then the last column gives the "
            "mean of its last trials). `at n` is wall time, `CPU at n` the CPU time of "
            "the process over the same asks (other processes' load does not inflate it).",
            "",
        ]
        rows = []
        for (p, o), s in sorted(summary["scaling"].items(), key=lambda kv: (kv[0][0], kv[0][1])):
            note = (
                f"capped at {s['n_trials']} trials ({s['time_cap_s']:g} s cap)"
                if s["capped"]
                else f"{s['n_trials']} trials"
            )
            rows.append(
                [
                    p,
                    o,
                    *[_ms(s["at"].get(n)) for n in SCALING_AT],
                    *[_ms(s["cpu_at"].get(n)) for n in SCALING_AT],
                    _ms(s["last"]),
                    f"{s['optimizer_s']:.1f}",
                    note,
                ]
            )
        md += _table(
            [
                "problem",
                "optimiser",
                *[f"at {n}" for n in SCALING_AT],
                *[f"CPU at {n}" for n in SCALING_AT],
                "last 10",
                "optimiser s",
                "run",
            ],
            rows,
        )

    failed = [(k, r["n_failed"], r.get("first_error")) for k, r in runs.items() if r["n_failed"]]
    if failed:
        md += ["", "## Failed evaluations", ""]
        for (p, o, s), k, err in sorted(failed)[:50]:
            md.append(f"- {p} / {o} / seed {s}: {k} failed ({err})")
    return "\n".join(md) + "\n"


def merged_baselines(
    records: Iterable[dict[str, Any]], cache: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Baselines stored in the results file, else those of the cache."""
    out = dict(cache)
    for rec in records:
        if rec.get("type") == "baseline":
            out[rec["problem"]] = rec
    return out


def build(results: Path, out: Path | None = None, baseline: Path = BASELINE_CACHE) -> list[str]:
    """Write the Markdown report of ``results``; return the target lines."""
    records = read_records(results)
    summary = summarise(records, merged_baselines(records, read_baselines(baseline)))
    text = render(summary, results.name)
    dest = out or markdown_path(results)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    return targets(summary)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.bo.report", description="Rebuild the benchmark report."
    )
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="JSON-lines results")
    ap.add_argument("--out", type=Path, default=None, help="Markdown file (default: beside)")
    ap.add_argument("--baseline", type=Path, default=BASELINE_CACHE, help="random-baseline cache")
    args = ap.parse_args(argv)
    if not args.results.exists():
        ap.error(f"no results file {args.results}")
    lines = build(args.results, args.out, args.baseline)
    print(f"wrote {args.out or markdown_path(args.results)}")
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
