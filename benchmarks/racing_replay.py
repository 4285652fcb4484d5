"""Replay fold racing on recorded fold scores: compare racing's settings without refitting.

With the random sampler a study's proposals do not depend on its history, and the
driver of ``benchmarks/racing.py`` runs one fold at a time, trial after trial, folds
in order. A racing run is then a function of the fold scores every proposed
configuration *would* get: trial ``i`` is stopped after fold ``k`` exactly when
``FoldRacing.decide`` says so on its first ``k`` scores, the incumbent (best COMPLETE
trial before it, earlier number on ties) and the COMPLETE trials before it. This
script records those fold scores once per task and K (``collect``, the cost of one
run without a scheduler) and then replays any ``FoldRacing`` on them in seconds
(``replay``), reporting fold fits saved and the held-out score of the chosen
configuration as ``benchmarks/racing.py`` does. ``check`` replays the settings of a
``racing.py`` results file and compares fold fits and choices run by run: the
replay must agree with the live runs exactly.

Usage::

    python benchmarks/racing_replay.py collect --tasks svm-breast knn-wine --folds 5 10
    python benchmarks/racing_replay.py replay --alpha 0.05 0.1 --levels calibrated bonferroni
    python benchmarks/racing_replay.py check benchmarks/results/racing-calibrated/racing.json
    python benchmarks/racing_replay.py replay --seeds 2 3   # only some seeds
    python benchmarks/racing_replay.py trend --out benchmarks/results/racing-replay/racing-trend
    python benchmarks/racing_replay.py repeats --out benchmarks/results/racing-replay/racing-repeats

Fold scores go to ``benchmarks/results/racing-folds.json.gz`` (``--folds-file``, gzipped
when the name ends in ``.gz``; replay
and check read several); ``replay --out FILE`` writes the runs of every setting to
``FILE.json`` and a table to ``FILE.md``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import twiddle  # noqa: E402
from benchmarks.bo.ml import MLTask, task_names  # noqa: E402
from benchmarks.racing import tune_task  # noqa: E402
from benchmarks.runmeta import run_meta  # noqa: E402

FOLDS_FILE = ROOT / "benchmarks" / "results" / "racing-folds.json.gz"


def _read(path: Path) -> Any:
    """JSON from ``path``, gzip-compressed when its name ends in ``.gz``."""
    raw = path.read_bytes()
    return json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw)


def _write(path: Path, data: Any) -> None:
    """Write ``data`` as JSON, compressed when the name ends in ``.gz`` (no timestamp)."""
    text = (json.dumps(data, default=str) + "\n").encode()
    path.write_bytes(gzip.compress(text, mtime=0) if path.suffix == ".gz" else text)


def _config_key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def collect_one(name: str, k: int, seed: int, n_trials: int) -> dict[str, Any]:
    """Every proposed configuration's K fold scores (random sampler, no scheduler)."""
    res, prefix, seconds = tune_task(name, k, "random", seed, n_trials)
    trials = []
    for t in res.study_.trials:
        config = {key[len(prefix) :]: v for key, v in t.params.items()}
        trials.append({"config": config, "fold_scores": list(t.fold_scores)})
    best = {key[len(prefix) :]: v for key, v in res.best_params_.items()}
    return {
        "task": name,
        "folds": k,
        "seed": seed,
        "trials": trials,
        "seconds": seconds,
        "holdout": {_config_key(best): MLTask(name).holdout(best)},
    }


def replay_one(
    record: dict[str, Any], racing: twiddle.FoldRacing, maximize: bool = True
) -> dict[str, Any]:
    """Fold fits, stops and choice of a racing run on the recorded fold scores."""
    n_folds = int(record["folds"])
    complete: list[tuple[int, list[float]]] = []  # (number, fold scores), in order
    incumbent: tuple[int, list[float]] | None = None
    fits = 0
    pruned_at: list[int] = []
    not_worse = stopped_not_worse = 0
    sign = 1.0 if maximize else -1.0
    for number, trial in enumerate(record["trials"]):
        scores = [float(s) for s in trial["fold_scores"]]
        if len(scores) != n_folds or not all(np.isfinite(scores)):
            raise SystemExit(f"{record['task']} K={n_folds}: trial {number} is not complete")
        stopped = 0
        if incumbent is not None:
            history = [s for _, s in complete]
            for done in range(1, n_folds):
                partial: list[float | None] = [*scores[:done], *([None] * (n_folds - done))]
                decision = racing.decide(partial, incumbent[1], maximize=maximize, history=history)
                if decision["stop"]:
                    stopped = done
                    break
            # on all K folds, not worse than the incumbent it was raced against
            if sign * float(np.mean(scores)) >= sign * float(np.mean(incumbent[1])):
                not_worse += 1
                stopped_not_worse += bool(stopped)
        if stopped:
            fits += stopped
            pruned_at.append(stopped)
            continue
        fits += n_folds
        complete.append((number, scores))
        mean = float(np.mean(scores))
        if incumbent is None or sign * mean > sign * float(np.mean(incumbent[1])):
            incumbent = (number, scores)
    assert incumbent is not None
    best_config = record["trials"][incumbent[0]]["config"]
    return {
        "fits": fits,
        "pruned": len(pruned_at),
        "pruned_at": pruned_at,
        "not_worse": not_worse,
        "stopped_not_worse": stopped_not_worse,
        "best_number": incumbent[0],
        "best_cv": float(np.mean(incumbent[1])),
        "best_config": dict(sorted(best_config.items())),
    }


def _holdout(record: dict[str, Any], config: dict[str, Any]) -> float:
    """The held-out score of ``config`` (fitted once and kept in the record)."""
    key = _config_key(config)
    if key not in record["holdout"]:
        record["holdout"][key] = MLTask(record["task"]).holdout(config)
    return float(record["holdout"][key])


def _load(paths: Sequence[Path]) -> dict[str, Any]:
    """The records of one or more fold-score files (for instance one per K)."""
    data: dict[str, Any] = {"meta": [], "records": []}
    for path in paths:
        if not path.exists():
            raise SystemExit(f"{path} does not exist; record fold scores first with `collect`")
        part = _read(path)
        data["meta"] += part["meta"]
        data["records"] += [
            {**r, "file": path, "holdouts_read": len(r["holdout"])} for r in part["records"]
        ]
    keys = [(r["task"], r["folds"], r["seed"]) for r in data["records"]]
    if len(set(keys)) != len(keys):
        raise SystemExit("the fold-score files hold a task, K and seed twice; give each once")
    return data


def _save_holdouts(data: dict[str, Any]) -> None:
    """Write the held-out scores the replay had to compute back to their files.

    Only the files whose records gained scores are rewritten.
    """
    grown = {r["file"] for r in data["records"] if len(r["holdout"]) > r["holdouts_read"]}
    for path in grown:
        part = _read(path)
        mine = {(r["task"], r["folds"], r["seed"]): r for r in data["records"] if r["file"] == path}
        for r in part["records"]:
            r["holdout"].update(mine[(r["task"], r["folds"], r["seed"])]["holdout"])
        _write(path, part)


def cmd_collect(args: argparse.Namespace) -> int:
    path: Path = args.folds_file[0]
    data = _read(path) if path.exists() else {"meta": [], "records": []}
    have = {(r["task"], r["folds"], r["seed"]) for r in data["records"]}
    started = time.perf_counter()
    made = 0
    for name in args.tasks or task_names():
        for k in args.folds:
            for seed in range(args.seeds):
                if (name, k, seed) in have:
                    continue
                rec = collect_one(name, k, seed, args.trials)
                data["records"].append(rec)
                made += 1
                print(f"{name:12s} K={k:2d} seed={seed} {rec['seconds']:.0f} s", flush=True)
                _write(path, data)  # keep what is done
    data["meta"].append(run_meta("racing_replay.py", None, started, records=made))
    _write(path, data)
    return 0


def replay_all(
    data: dict[str, Any],
    racing: twiddle.FoldRacing,
    tasks: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    rows = []
    for rec in data["records"]:
        if (tasks and rec["task"] not in tasks) or (seeds and rec["seed"] not in seeds):
            continue
        raced = replay_one(rec, racing)
        plain_fits = rec["folds"] * len(rec["trials"])
        plain_best = max(
            range(len(rec["trials"])),
            key=lambda i: (float(np.mean(rec["trials"][i]["fold_scores"])), -i),
        )
        plain_config = dict(sorted(rec["trials"][plain_best]["config"].items()))
        rows.append(
            {
                "task": rec["task"],
                "folds": rec["folds"],
                "seed": rec["seed"],
                "saved": 1.0 - raced["fits"] / plain_fits,
                "fits": raced["fits"],
                "plain_fits": plain_fits,
                "pruned_at": raced["pruned_at"],
                "not_worse": raced["not_worse"],
                "stopped_not_worse": raced["stopped_not_worse"],
                "same_choice": raced["best_config"] == plain_config,
                "holdout_diff": _holdout(rec, raced["best_config"]) - _holdout(rec, plain_config),
            }
        )
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {"all": rows}
    for r in rows:
        groups.setdefault(f"K={r['folds']}", []).append(r)
    out = {}
    for key, rs in groups.items():
        diffs = np.array([r["holdout_diff"] for r in rs])
        out[key] = {
            "runs": len(rs),
            "saved_pooled": 1.0 - sum(r["fits"] for r in rs) / sum(r["plain_fits"] for r in rs),
            "same_choice": sum(r["same_choice"] for r in rs),
            "holdout_diff_mean": float(np.mean(diffs)),
            "holdout_diff_worst": float(np.min(diffs)),
            "not_worse": sum(r["not_worse"] for r in rs),
            "stopped_not_worse": sum(r["stopped_not_worse"] for r in rs),
        }
    return out


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay every combination of the given alphas and levels; print (and write) a table."""
    data = _load(args.folds_file)
    t0 = time.perf_counter()
    settings = []
    for levels in args.levels:
        for alpha in args.alpha:
            racing = twiddle.FoldRacing(alpha=alpha, min_folds=args.min_folds, levels=levels)
            rows = replay_all(data, racing, args.tasks, args.seeds)
            settings.append({"racing": repr(racing), "summary": summarise(rows), "runs": rows})
            for key, s in settings[-1]["summary"].items():
                print(
                    f"{racing!r} {key:5s} runs={s['runs']:3d} saved={s['saved_pooled']:.1%} "
                    f"same={s['same_choice']}/{s['runs']} "
                    f"held-out {s['holdout_diff_mean']:+.4f} "
                    f"(worst {s['holdout_diff_worst']:+.4f}) "
                    f"stopped not worse {s['stopped_not_worse']}/{s['not_worse']}",
                    flush=True,
                )
    _save_holdouts(data)
    meta = run_meta(
        "racing_replay.py",
        None,
        t0,
        folds_files=[p.as_posix() for p in args.folds_file],
        collected=data["meta"],
    )
    if args.out is not None:
        out = {"meta": meta, "settings": settings}
        args.out.with_suffix(".json").write_text(json.dumps(out, default=str) + "\n")
        args.out.with_suffix(".md").write_text(_markdown(meta, settings))
    return 0


def _markdown(meta: dict[str, Any], settings: list[dict[str, Any]]) -> str:
    collected = "; ".join(
        f"`{m['command'].strip()}` ({m['date']}, {m['records']} records, {m['seconds']:.0f} s)"
        for m in meta["collected"]
    )
    lines = [
        "# Fold racing replayed on recorded fold scores",
        "",
        f"Run {meta['date']} with `{meta['command'].strip()}` ({meta['seconds']:.0f} s). "
        f"Fold scores recorded by {collected}: every configuration the random sampler "
        "proposed, on all K folds, for each task, K and seed.",
        "",
        "The replay makes the decisions a live run of `benchmarks/racing.py` with the "
        "random sampler makes (`racing_replay.py check` compares them with live runs), "
        "without refitting. *Saved* is the pooled fraction of fold fits avoided (target "
        ">= 40 %); *same choice* counts the runs that chose the configuration running "
        "every fold chooses; *held-out* is the mean (and worst) difference of the held-out "
        "score of the chosen configuration against running every fold; *stopped, not "
        "worse* counts the stopped configurations whose mean over all K folds is not worse "
        "than that of the incumbent they were raced against, out of all such raced "
        "configurations. That count is conditional and biased low: a configuration is "
        "stopped on unfavourable early folds, so its K-fold mean usually ends up worse "
        "and the stop is not counted even when its expected score is not worse. It is "
        "not a check of alpha; the simulations of `racing_rates.py` and "
        "`racing_survivors.py` are.",
        "",
        "| racing | group | runs | saved | same choice | held-out (mean / worst) "
        "| stopped, not worse |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for setting in settings:
        for key, s in setting["summary"].items():
            lines.append(
                f"| `{setting['racing']}` | {key} | {s['runs']} | {s['saved_pooled']:.1%} | "
                f"{s['same_choice']}/{s['runs']} | {s['holdout_diff_mean']:+.4f} / "
                f"{s['holdout_diff_worst']:+.4f} | {s['stopped_not_worse']}/{s['not_worse']} |"
            )
    return "\n".join(lines) + "\n"


def spread_trend(record: dict[str, Any], n_trials: int) -> dict[str, float] | None:
    """How the spread of the paired fold differences depends on the distance from the best.

    Among the first ``n_trials`` configurations, against the best of them (by mean
    over all K folds): m_i, the mean difference of configuration i from the best, and
    s_i, the standard deviation of its K differences. The *typical* spread is the
    geometric mean of the s_i; a configuration is *near* when m_i is below it (within
    one typical fold-difference spread of the best). Returns the median of s_i over the
    typical spread for near and far configurations, and Spearman's correlation of m_i
    and s_i (None when there are fewer than 5 configurations with a spread).
    """
    from scipy.stats import spearmanr

    scores = np.asarray([t["fold_scores"] for t in record["trials"][:n_trials]], dtype=float)
    best = scores[int(np.argmax(scores.mean(axis=1)))]
    diff = best - scores
    m, s = diff.mean(axis=1), diff.std(axis=1, ddof=1)
    keep = s > 1e-12
    m, s = m[keep], s[keep]
    if s.size < 5:
        return None
    typical = float(np.exp(np.mean(np.log(s))))
    near = m < typical
    return {
        "near": float(np.median(s[near]) / typical) if near.any() else math.nan,
        "far": float(np.median(s[~near]) / typical) if (~near).any() else math.nan,
        "near_count": int(near.sum()),
        "rho": float(spearmanr(m, s)[0]),
    }


def cmd_trend(args: argparse.Namespace) -> int:
    """Summarise :func:`spread_trend` over the recorded runs, by K and number of trials."""
    data = _load(args.folds_file)
    rows = []
    for k in sorted({r["folds"] for r in data["records"]}):
        for n in (20, 50, 100):
            found = [spread_trend(r, n) for r in data["records"] if r["folds"] == k]
            got = [f for f in found if f is not None]
            row: dict[str, Any] = {"folds": k, "trials": n, "runs": len(got)}
            for key in ("near", "far", "rho"):
                values = np.array([f[key] for f in got], dtype=float)
                q = np.nanquantile(values, [0.1, 0.5, 0.9])
                row[key] = {"q10": float(q[0]), "median": float(q[1]), "q90": float(q[2])}
            row["positive_rho"] = int(sum(f["rho"] > 0 for f in got))
            rows.append(row)
            print(row, flush=True)
    meta = run_meta("racing_replay.py", folds_files=[p.as_posix() for p in args.folds_file])
    if args.out is not None:
        args.out.with_suffix(".json").write_text(
            json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n"
        )
        lines = [
            "# The spread of paired fold differences against the distance from the best",
            "",
            f"Run {meta['date']} with `{meta['command'].strip()}`, on the recorded fold "
            "scores of every configuration the random sampler proposed (one run per task, "
            "K and seed). Among the first n configurations of a run, against the best of "
            "them: m_i, configuration i's mean fold difference from the best, and s_i, the "
            "spread (standard deviation) of its K differences. *Near*: m_i below the typical "
            "spread (geometric mean of the s_i); the columns give the median s_i of the near "
            "and of the far configurations over the typical spread (median over runs, with "
            "the 10th and 90th percentiles), and Spearman's correlation of m_i and s_i.",
            "",
            "| K | n | runs | near / typical | far / typical | Spearman rho | rho > 0 |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            cells = [
                f"{r[key]['median']:.2f} ({r[key]['q10']:.2f} to {r[key]['q90']:.2f})"
                for key in ("near", "far", "rho")
            ]
            lines.append(
                f"| {r['folds']} | {r['trials']} | {r['runs']} | {' | '.join(cells)} | "
                f"{r['positive_rho']}/{r['runs']} |"
            )
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


def repeated_rows(record: dict[str, Any]) -> float:
    """Fraction of a run's configurations whose K fold scores repeat an earlier one's."""
    rows = [tuple(t["fold_scores"]) for t in record["trials"]]
    return 1.0 - len(set(rows)) / len(rows) if rows else math.nan


def cmd_repeats(args: argparse.Namespace) -> int:
    """Per task and K: how often configurations score exactly alike on every fold."""
    data = _load(args.folds_file)
    by: dict[tuple[str, int], list[float]] = {}
    for r in data["records"]:
        by.setdefault((r["task"], r["folds"]), []).append(repeated_rows(r))
    rows = [
        {"task": task, "folds": k, "runs": len(v), "repeated": float(np.mean(v))}
        for (task, k), v in by.items()
    ]
    rows.sort(key=lambda r: (r["folds"], -r["repeated"], r["task"]))
    meta = run_meta("racing_replay.py", folds_files=[p.as_posix() for p in args.folds_file])
    lines = [
        "# Configurations with the same fold scores",
        "",
        f"Run {meta['date']} with `{meta['command'].strip()}`, on the recorded fold scores "
        "of every configuration the random sampler proposed (100 per run). *Repeated*: the "
        "fraction of a run's configurations whose scores on all K folds equal those of an "
        "earlier configuration of the run, averaged over the runs (seeds).",
        "",
    ]
    for k in sorted({r["folds"] for r in rows}):
        mine = [r for r in rows if r["folds"] == k]
        half = sum(r["repeated"] >= 0.5 for r in mine)
        lines += [
            f"## K = {k}: at least half repeated on {half} of {len(mine)} tasks",
            "",
            "| task | runs | repeated |",
            "|---|---:|---:|",
            *(f"| {r['task']} | {r['runs']} | {r['repeated']:.0%} |" for r in mine),
            "",
        ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.with_suffix(".json").write_text(
            json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n"
        )
        args.out.with_suffix(".md").write_text(text)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Replay a racing.py results file's settings; fold fits and choices must agree."""
    data = _load(args.folds_file)
    live = json.loads(args.results.read_text())
    described = live["meta"]["scheduler"]
    if "levels=" not in described:  # written before calibrated levels existed
        described = described.replace(")", ", levels='bonferroni')")
    racing = eval(described, {"FoldRacing": twiddle.FoldRacing})
    records = {(r["task"], r["folds"], r["seed"]): r for r in data["records"]}
    checked = mismatched = 0
    for run in live["runs"]:
        key = (run["task"], run["folds"], run["seed"])
        if run["sampler"] != "random" or key not in records:
            continue
        rec = records[key]
        if len(rec["trials"]) != run["trials"]:
            continue
        raced = replay_one(rec, racing)
        checked += 1
        same = (
            raced["fits"] == run["racing"]["fits"]
            and raced["best_config"] == run["racing"]["best_config"]
        )
        if not same:
            mismatched += 1
            agrees = raced["best_config"] == run["racing"]["best_config"]
            print(
                f"{key}: replay {raced['fits']} fits, live {run['racing']['fits']}; "
                f"choice {'agrees' if agrees else 'differs'}"
            )
    print(f"{checked} runs checked, {mismatched} differ")
    return 1 if mismatched or not checked else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    files = argparse.ArgumentParser(add_help=False)
    files.add_argument(
        "--folds-file",
        type=Path,
        nargs="+",
        default=[FOLDS_FILE],
        help="fold-score files: collect writes to the first, replay and check read all",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", parents=[files], help="record every configuration's fold scores")
    c.add_argument("--tasks", nargs="*", default=None)
    c.add_argument("--folds", nargs="*", type=int, default=[5, 10])
    c.add_argument("--seeds", type=int, default=1)
    c.add_argument("--trials", type=int, default=100)
    r = sub.add_parser(
        "replay", parents=[files], help="replay a FoldRacing on the recorded fold scores"
    )
    r.add_argument("--tasks", nargs="*", default=None)
    r.add_argument("--seeds", nargs="*", type=int, default=None, help="only these seeds")
    r.add_argument("--alpha", type=float, nargs="+", default=[0.05])
    r.add_argument("--min-folds", type=int, default=1)
    r.add_argument(
        "--levels", choices=("calibrated", "bonferroni"), nargs="+", default=["calibrated"]
    )
    r.add_argument("--out", type=Path, default=None, help="write FILE.json and FILE.md (the table)")
    t = sub.add_parser(
        "trend",
        parents=[files],
        help="how the spread of fold differences grows with the distance from the best",
    )
    t.add_argument("--out", type=Path, default=None, help="write FILE.json and FILE.md")
    q = sub.add_parser(
        "repeats", parents=[files], help="how often configurations score alike on every fold"
    )
    q.add_argument("--out", type=Path, default=None, help="write FILE.json and FILE.md")
    k = sub.add_parser(
        "check", parents=[files], help="compare the replay with a racing.py results file"
    )
    k.add_argument("results", type=Path)
    args = parser.parse_args(argv)
    commands = {
        "collect": cmd_collect,
        "replay": cmd_replay,
        "trend": cmd_trend,
        "repeats": cmd_repeats,
        "check": cmd_check,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
