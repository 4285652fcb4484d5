"""The results file (JSON lines, one record per run) and the random-baseline cache."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
DEFAULT_RESULTS = RESULTS_DIR / "bo.jsonl"
QUICK_RESULTS = RESULTS_DIR / "bo-quick.jsonl"
BASELINE_CACHE = RESULTS_DIR / "bo-baseline.json"


def markdown_path(results: Path) -> Path:
    """``bo.jsonl`` -> ``bo.md`` next to it."""
    return results.with_suffix(".md")


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file; a torn last line (killed run) is skipped."""
    if not path.exists():
        return []
    out = []
    with path.open() as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one record as one line and flush it to disk (so a killed run loses one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, separators=(",", ":"), allow_nan=False)
    with path.open("a") as fh:
        fh.write(text + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def run_key(rec: dict[str, Any]) -> tuple[str, str, int]:
    return (rec["problem"], rec["optimizer"], int(rec["seed"]))


def latest_runs(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The run record per (problem, optimizer, seed) with the most trials (latest on ties)."""
    out: dict[tuple[str, str, int], dict[str, Any]] = {}
    for rec in records:
        if rec.get("type") != "run":
            continue
        key = run_key(rec)
        if key not in out or rec["n_trials"] >= out[key]["n_trials"]:
            out[key] = rec
    return out


def latest_scaling(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The last scaling record per (problem, optimizer)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in records:
        if rec.get("type") == "scaling":
            out[(rec["problem"], rec["optimizer"])] = rec
    return out


def read_baselines(path: Path = BASELINE_CACHE) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def write_baselines(baselines: dict[str, dict[str, Any]], path: Path = BASELINE_CACHE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(baselines, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
