"""The ``twiddle`` command line: run, resume and inspect studies described by TOML specs.

Commands
--------
``twiddle run SPEC.toml``
    Run or resume the study a spec describes (see :mod:`twiddle._spec` for the
    format). ``n_trials`` is the study's total: a resumed run only runs the trials
    still missing. Shows a progress bar on stderr (when it is a terminal) and
    prints a table of the best configurations at the end.
``twiddle show [SPEC.toml] [--storage URL] [--study NAME]``
    Counts by state, the best trial and a table of the best configurations.
``twiddle best [SPEC.toml] [--storage URL] [--study NAME]``
    The best configuration as JSON on stdout.
``twiddle export [SPEC.toml] [--storage URL] [--study NAME] [--format csv|json] [-o FILE]``
    Every trial, one record each.

``show``, ``best`` and ``export`` find the study from the spec (its storage and
name) or from ``--storage`` and ``--study``; without ``--study``, a storage holding
one study opens that one. ``--storage`` paths are read from the working directory;
paths inside a spec from the spec's directory.

Exit status: 0 on success; 2 for bad input (usage, spec, data, storage, an unknown
study: a message on stderr, no traceback); 1 when every trial of a run failed;
130 when interrupted (finished trials are kept; run again to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from twiddle._errors import (
    AllTrialsFailedError,
    InvalidParameterError,
    StorageError,
    TwiddleError,
)
from twiddle._spec import RunSpec, load_spec, resolve_storage, sqlite_path
from twiddle._trial import FrozenTrial, TrialState

__all__ = ["main"]

_PROG = "twiddle"
_EVIDENCE = "log evidence"  # metric name of evidence studies ([run] method = "evidence")
_STATE_ORDER = (
    TrialState.COMPLETE,
    TrialState.PRUNED,
    TrialState.FAIL,
    TrialState.RUNNING,
    TrialState.WAITING,
)


class UsageError(TwiddleError, ValueError):
    """The command line does not say which study to use (exit status 2)."""


# ----------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run the ``twiddle`` command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; None reads ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 success, 1 every trial failed, 2 bad input, 130 interrupted.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse reports usage errors (status 2) and --help (0)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status: int = args.handler(args)
    except AllTrialsFailedError as exc:
        _error(str(exc))
        return 1
    except TwiddleError as exc:
        _error(str(exc))
        return 2
    except FileNotFoundError as exc:
        _error(f"{exc.strerror or 'No such file or directory'}: {exc.filename or exc}")
        return 2
    except KeyboardInterrupt:
        _error("interrupted. Finished trials are stored; run the same command again to resume.")
        return 130
    return status


def _error(message: str) -> None:
    sys.stderr.write(f"{_PROG}: error: {message.rstrip()}\n")
    sys.stderr.flush()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _n_jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value == -1:
        return max(1, os.cpu_count() or 1)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or -1, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    from twiddle import __version__

    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Tune the hyperparameters of scikit-learn estimators by k-fold "
        "cross-validation, from a TOML spec; studies are kept in a SQLite file.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run or resume the study a spec describes",
        description="Run or resume the study described by a TOML spec. n_trials is the "
        "study's total: a resumed run only runs the missing trials.",
    )
    run.add_argument("spec", metavar="SPEC.toml", help="the study spec")
    run.add_argument(
        "--n-trials", type=_positive_int, metavar="N", help="total number of trials of the study"
    )
    run.add_argument(
        "--n-jobs", type=_n_jobs, metavar="N", help="worker processes (-1: one per CPU)"
    )
    run.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run the fold fits on a Dask cluster: the scheduler's address "
        "(tcp://host:8786), or 'local' for a local cluster of --n-jobs worker processes "
        "(needs the dask extra)",
    )
    run.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="start no new trial after this many seconds",
    )
    run.add_argument(
        "--storage",
        metavar="URL",
        help="'sqlite:///path.db' or a .db path (relative to the working directory)",
    )
    run.add_argument(
        "--seed", type=_non_negative_int, metavar="N", help="seed of the sampler and the folds"
    )
    run.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    run.add_argument(
        "--top", type=_positive_int, default=10, metavar="N", help="rows of the final table"
    )
    run.set_defaults(handler=_cmd_run)

    def where(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "spec", nargs="?", metavar="SPEC.toml", help="a spec (gives storage and name)"
        )
        p.add_argument("--storage", metavar="URL", help="'sqlite:///path.db' or a .db path")
        p.add_argument(
            "--study",
            metavar="NAME",
            help="study name (default: the spec's, or the only stored one)",
        )

    show = sub.add_parser("show", help="summarise a stored study")
    where(show)
    show.add_argument(
        "--top", type=_positive_int, default=10, metavar="N", help="rows of the table"
    )
    show.set_defaults(handler=_cmd_show)

    best = sub.add_parser("best", help="print the best configuration as JSON")
    where(best)
    best.set_defaults(handler=_cmd_best)

    export = sub.add_parser("export", help="write every trial as CSV or JSON")
    where(export)
    export.add_argument(
        "--format",
        choices=("csv", "json"),
        help="output format (default: from the -o suffix, else csv)",
    )
    export.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    export.set_defaults(handler=_cmd_export)
    return parser


# ----------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------
def _stdout_console() -> Console:
    console = Console(soft_wrap=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(soft_wrap=False, width=160)
    return console


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple, dict)) or value is None or isinstance(value, bool):
        return json.dumps(value)
    return str(value)


def _fmt_score(value: float | None, se: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if se is None or not math.isfinite(se):
        return f"{value:.4f}"
    return f"{value:.4f} ± {se:.4f}"


def _fmt_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _ranked(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Finished trials, best first: COMPLETE by value (higher is better), then the others."""
    complete = [t for t in trials if t.state is TrialState.COMPLETE and t.value is not None]
    complete.sort(key=lambda t: (-float(t.value), t.number))  # type: ignore[arg-type]
    others = [t for t in trials if t.state.is_finished and t not in complete]
    return complete + others


def _trials_table(
    console: Console,
    trials: Sequence[FrozenTrial],
    metric: str,
    top: int,
    names: Sequence[str] | None,
) -> Table:
    """The ``top`` best finished trials: number, state, mean ± se and hyperparameters.

    One column per hyperparameter when that fits the console; otherwise one column
    listing ``name=value`` pairs, which wraps.
    """
    ranked = _ranked(trials)
    shown = ranked[:top]
    if names is None:
        seen: dict[str, None] = {}
        for t in shown:
            seen.update(dict.fromkeys(t.params))
        names = list(seen)
    cells = [[_fmt(t.params[n]) if n in t.params else "" for n in names] for t in shown]

    def frame() -> Table:
        table = Table(
            title=f"Top {len(shown)} of {len(ranked)} finished trials by {metric}",
            title_justify="left",
        )
        table.add_column("trial", justify="right", no_wrap=True)
        table.add_column("state", no_wrap=True)
        # log evidence comes from one fit, with no standard error
        header = metric if metric == _EVIDENCE else f"{metric} ± se"
        table.add_column(header, justify="right", no_wrap=True)
        return table

    def fixed(t: FrozenTrial) -> list[str]:
        complete = t.state is TrialState.COMPLETE
        return [str(t.number), t.state.value, _fmt_score(t.value, t.value_se) if complete else "-"]

    wide = frame()
    for name in names:
        wide.add_column(name, justify="right", no_wrap=True)
    for t, row in zip(shown, cells, strict=True):
        wide.add_row(*fixed(t), *row)
    natural = Measurement.get(console, console.options.update(max_width=100_000), wide)
    if natural.maximum <= console.width:
        return wide
    narrow = frame()
    narrow.add_column("hyperparameters", overflow="fold")
    for t, row in zip(shown, cells, strict=True):
        pairs = ", ".join(f"{n}={v}" for n, v in zip(names, row, strict=True) if v != "")
        narrow.add_row(*fixed(t), pairs)
    return narrow


def _state_counts(trials: Sequence[FrozenTrial]) -> str:
    counts = Counter(t.state for t in trials)
    parts = [f"{counts[s]} {s.value}" for s in _STATE_ORDER if counts[s]]
    return ", ".join(parts) if parts else "none"


def _metric_of(study: Any) -> str:
    record = study.storage.get_study(study.name)
    if record is not None and "evidence_plan" in record.user_attrs:
        return _EVIDENCE
    plan = record.user_attrs.get("cv_plan") if record is not None else None
    if isinstance(plan, dict) and isinstance(plan.get("metric"), str):
        return str(plan["metric"])
    return "value"


def _best_line(study: Any, metric: str) -> str | None:
    ranked = _ranked(study.trials)
    if not ranked or ranked[0].state is not TrialState.COMPLETE:
        return None
    best = ranked[0]
    folds = best.n_folds_done
    unit = f" (mean ± standard error over {folds} folds)" if folds >= 2 else ""
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())
    return (
        f"Best: trial {best.number}, {metric} {_fmt_score(best.value, best.value_se)}{unit}\n"
        f"      {params}"
    )


def _notes(study: Any) -> list[str]:
    """Short notes on failures and warnings recorded in the trials."""
    notes = []
    failed = [t for t in study.trials if t.state is TrialState.FAIL]
    if failed:
        first = failed[0]
        lines = [ln for ln in (first.fail_reason or "").splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else "(no reason recorded)"
        notes.append(
            f"{len(failed)} trial(s) failed; the first (trial {first.number}) ended with: "
            f"{last[:200]}"
        )
    stopped = [t for t in study.trials if t.state is TrialState.PRUNED and t.fold_scores]
    if stopped:
        scored = [t for t in study.trials if t.state.is_finished and t.fold_scores]
        made = sum(t.n_folds_done for t in scored)
        total = sum(len(t.fold_scores) for t in scored)
        rules = Counter(
            "fold racing"
            if "racing" in t.system_attrs
            else str(t.system_attrs.get("schedule", {}).get("rule", "a scheduler"))
            for t in stopped
        )
        if len(rules) == 1:
            by = f"by {next(iter(rules))}"
        else:
            by = "(" + ", ".join(f"{n} by {rule}" for rule, n in rules.most_common()) + ")"
        notes.append(
            f"{len(stopped)} trial(s) were stopped between folds {by}: {made} of {total} "
            f"fold fits were made ({1 - made / total:.0%} saved)."
        )
    warned = [t for t in study.trials if t.system_attrs.get("warnings")]
    if warned:
        example = str(warned[0].system_attrs["warnings"][0]).splitlines()[0]
        if len(example) > 160:
            example = example[:157] + "..."
        notes.append(f"{len(warned)} trial(s) recorded warnings, e.g. {example}")
    return notes


def _print_study(console: Console, study: Any, top: int) -> None:
    metric = _metric_of(study)
    if not any(t.state.is_finished for t in study.trials):
        console.print("No trial has finished yet.", highlight=False, markup=False)
        return
    names = list(study.space) if study.space is not None else None
    console.print(_trials_table(console, study.trials, metric, top, names))
    line = _best_line(study, metric)
    if line is not None:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    for note in _notes(study):
        console.print(f"Note: {note}", highlight=False, markup=False, soft_wrap=True)


def _where(study: Any) -> str:
    path = getattr(study.storage, "path", None)
    return str(path) if path is not None else str(study.storage.url)


def _stored_line(study: Any, spec_arg: str) -> str:
    """Where the study is kept, and how to see it again."""
    if getattr(study.storage, "path", None) is None:
        return (
            "The study was kept in memory only: nothing was saved. Set [study] storage "
            "(or --storage) to a .db file to keep it."
        )
    return (
        f"Stored in {_where(study)} (study {study.name!r}). See it again with "
        f"`twiddle show {spec_arg}`; `twiddle best {spec_arg}` prints the best "
        "configuration as JSON."
    )


# ----------------------------------------------------------------------------------
# twiddle run
# ----------------------------------------------------------------------------------
class _ProgressReporter:
    """A rich progress bar on stderr, advanced by a :func:`twiddle.tune` callback."""

    def __init__(
        self,
        *,
        enabled: bool,
        total: int | None,
        done: int,
        failed: int,
        best: float | None,
        pruned: int = 0,
    ) -> None:
        console = Console(stderr=True)
        self.best = best
        self.failed = failed
        self.pruned = pruned
        self.progress = Progress(
            TextColumn("trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("best {task.fields[best]}"),
            TextColumn("pruned {task.fields[pruned]}"),
            TextColumn("failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
            disable=not (enabled and console.is_terminal),
        )
        self.task = self.progress.add_task(
            "trials",
            total=total,
            completed=done,
            best=self._best_text(),
            failed=failed,
            pruned=pruned,
        )

    def _best_text(self) -> str:
        return "-" if self.best is None else f"{self.best:.4f}"

    def __enter__(self) -> _ProgressReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, study: Any, trial: FrozenTrial) -> None:
        if trial.state is TrialState.FAIL:
            self.failed += 1
        if trial.state is TrialState.PRUNED:
            self.pruned += 1
        if (
            trial.state is TrialState.COMPLETE
            and trial.value is not None
            and (self.best is None or trial.value > self.best)
        ):
            self.best = trial.value
        self.progress.update(
            self.task,
            advance=1,
            best=self._best_text(),
            failed=self.failed,
            pruned=self.pruned,
        )


def _cmd_run(args: argparse.Namespace) -> int:
    from twiddle._cv import tune
    from twiddle._storage import get_storage
    from twiddle._study import Study

    spec: RunSpec = load_spec(args.spec).with_overrides(
        n_trials=args.n_trials,
        n_jobs=args.n_jobs,
        timeout=args.timeout,
        storage=args.storage,
        seed=args.seed,
    )
    prepared = spec.prepare()  # every check of the spec happens before any training
    if args.dask is not None and spec.method == "evidence":
        raise InvalidParameterError(
            "--dask runs cross-validated studies (method = 'cv'); evidence studies fit one "
            "model per trial in this process or in --n-jobs worker processes."
        )
    out = _stdout_console()
    with contextlib.ExitStack() as stack:
        executor, n_jobs = None, spec.n_jobs
        if args.dask is not None:
            asked = args.n_jobs or (spec.n_jobs if spec.n_jobs > 1 else None)
            executor, n_jobs = _dask_executor(args.dask, asked, stack)
            out.print(
                f"Running on the Dask cluster at {args.dask} ({n_jobs} fold fits at a time).",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        storage = get_storage(spec.storage)
        try:
            study = Study(
                name=spec.name,
                storage=storage,
                direction="maximize",
                space=spec.space,
                sampler=spec.sampler,
                seed=spec.seed,
            )
            before = study.trials
            finished = sum(1 for t in before if t.state.is_finished)
            remaining = None if spec.n_trials is None else spec.n_trials - finished
            if remaining is not None and remaining <= 0:
                out.print(
                    f"Study {spec.name!r} already has {finished} finished trials (n_trials = "
                    f"{spec.n_trials}); nothing to run. Raise the budget with --n-trials to run "
                    "more.",
                    highlight=False,
                    markup=False,
                    soft_wrap=True,
                )
                _print_study(out, study, args.top)
                out.print(
                    _stored_line(study, args.spec), highlight=False, markup=False, soft_wrap=True
                )
                return 0
            complete = [
                t.value for t in before if t.state is TrialState.COMPLETE and t.value is not None
            ]
            reporter = _ProgressReporter(
                enabled=not args.no_progress,
                total=spec.n_trials,
                done=finished,
                failed=sum(1 for t in before if t.state is TrialState.FAIL),
                pruned=sum(1 for t in before if t.state is TrialState.PRUNED),
                best=max(complete) if complete else None,
            )
            started = time.monotonic()
            result: Any  # a TuneResult or an EvidenceTuneResult; both have study_
            # what both methods are given (n_jobs: the spec's, or --dask's fits at a time)
            common: dict[str, Any] = {
                "n_trials": remaining,
                "timeout": spec.timeout,
                "sampler": spec.sampler,
                "seed": spec.seed,
                "n_jobs": n_jobs,
                "storage": storage,
                "study_name": spec.name,
                "refit": False,
                "callbacks": [reporter],
            }
            data = (prepared.estimator, spec.space, prepared.X, prepared.y)
            with reporter:
                if spec.method == "evidence":
                    from twiddle.evidence._tuning import tune_evidence

                    result = tune_evidence(*data, **common)
                else:
                    result = tune(
                        *data,
                        cv=prepared.splits,
                        scoring=prepared.scoring,
                        metric=prepared.metric,
                        groups=prepared.groups,
                        executor=executor,
                        error_score=spec.cv.error_score,
                        scheduler=spec.make_scheduler(),
                        **common,
                    )
            elapsed = time.monotonic() - started
            study = result.study_
            total = sum(1 for t in study.trials if t.state.is_finished)
            ran = total - finished
            out.print(
                f"Ran {ran} trial(s) in {_fmt_duration(elapsed)}; study {spec.name!r} has {total} "
                f"finished trial(s) ({_state_counts(study.trials)}).",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
            _print_study(out, study, args.top)
            out.print(_stored_line(study, args.spec), highlight=False, markup=False, soft_wrap=True)
            return 0
        finally:
            storage.close()


def _dask_executor(
    address: str, n_jobs: int | None, stack: contextlib.ExitStack
) -> tuple[Any, int]:
    """A Dask client's executor for ``--dask`` and the number of fold fits at a time.

    ``address`` is a scheduler's address or ``"local"`` (a local cluster of ``n_jobs``
    worker processes, one thread each; 2 when ``n_jobs`` is not given). The fold fits
    at a time are ``n_jobs`` if given, else the cluster's worker threads. The client
    (and a local cluster) close with ``stack``.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise InvalidParameterError(
            f"--dask needs Dask's distributed package ({exc}); install it with "
            "pip install 'twiddle[dask]'."
        ) from exc
    if address == "local":
        workers = n_jobs or 2
        cluster = stack.enter_context(
            LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None)
        )
        client = stack.enter_context(Client(cluster))
    else:
        try:
            client = stack.enter_context(Client(address, timeout="10s"))
        except (OSError, TimeoutError, ValueError) as exc:
            raise InvalidParameterError(
                f"--dask {address}: cannot reach a Dask scheduler there ({exc}). Give the "
                "address the scheduler prints (tcp://host:8786), or 'local' to start a "
                "cluster on this machine."
            ) from exc
    if n_jobs is None and not client.nthreads():
        try:  # a cluster just started may have no worker yet
            client.wait_for_workers(1, timeout=60)
        except TimeoutError as exc:
            raise InvalidParameterError(
                f"--dask {address}: the scheduler has no worker after 60 s. Start workers "
                "(dask worker ADDRESS), or give --n-jobs to set the fold fits at a time."
            ) from exc
    threads = sum(client.nthreads().values())
    return client.get_executor(pure=False), n_jobs or max(1, threads)


# ----------------------------------------------------------------------------------
# twiddle show / best / export
# ----------------------------------------------------------------------------------
def _open_study(args: argparse.Namespace) -> Any:
    """The stored study named by a spec and/or ``--storage`` and ``--study``."""
    from twiddle._storage import get_storage
    from twiddle._study import Study

    url: str | None = None
    name: str | None = args.study
    if args.spec is not None:
        spec = load_spec(args.spec)
        url = spec.storage
        name = name or spec.name
    if args.storage is not None:
        url = resolve_storage(args.storage, Path.cwd())
    if url is None:
        raise UsageError(
            "say which study to use: give a spec file (twiddle show SPEC.toml) or "
            "--storage sqlite:///path.db [--study NAME]."
        )
    path = sqlite_path(url)
    if path is None:
        raise UsageError(
            "a 'memory' storage keeps nothing between runs; give a SQLite storage "
            "('sqlite:///path.db' or a .db path)."
        )
    if not path.is_file():
        raise StorageError(
            f"There is no twiddle database at {str(path)!r}. Run `twiddle run SPEC.toml` "
            "first, or check the spec's [study] storage / the --storage path."
        )
    storage = get_storage(url)
    stored = [s.name for s in storage.list_studies()]
    if name is None:
        if len(stored) == 1:
            name = stored[0]
        else:
            storage.close()
            listed = ", ".join(repr(s) for s in stored) if stored else "none"
            raise UsageError(
                f"{str(path)!r} holds {len(stored)} studies ({listed}); choose one with "
                "--study NAME."
            )
    if name not in stored:
        storage.close()
        listed = ", ".join(repr(s) for s in stored) if stored else "none"
        raise UsageError(
            f"There is no study named {name!r} in {str(path)!r}. Stored studies: {listed}. "
            "Choose one with --study NAME."
        )
    return Study.load(name, storage)


def _cmd_show(args: argparse.Namespace) -> int:
    study = _open_study(args)
    try:
        out = _stdout_console()
        trials = study.trials
        finished = sum(1 for t in trials if t.state.is_finished)
        out.print(
            f"Study {study.name!r} in {_where(study)}\n"
            f"Trials: {len(trials)} ({_state_counts(trials)}); {finished} finished.",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        _print_study(out, study, args.top)
    finally:
        study.storage.close()
    return 0


def _json_clean(value: Any) -> Any:
    """JSON-ready: non-finite floats become null, tuples lists, numpy scalars Python ones."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _json_clean(value.item())
    return value


def _cmd_best(args: argparse.Namespace) -> int:
    study = _open_study(args)
    try:
        best = study.best_trial  # InvalidParameterError (exit 2) if nothing is complete
        params = dict(best.params)
        est_params = study.space.to_estimator_params(params) if study.space is not None else params
        payload = {
            "study": study.name,
            "metric": _metric_of(study),
            "number": best.number,
            "value": best.value,
            "value_se": best.value_se,
            "params": params,
            "estimator_params": est_params,
        }
        sys.stdout.write(json.dumps(_json_clean(payload), indent=2) + "\n")
    finally:
        study.storage.close()
    return 0


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, list, tuple, dict)):
        return json.dumps(_json_clean(value))
    return str(value)


def _cmd_export(args: argparse.Namespace) -> int:
    fmt = args.format
    if fmt is None:
        suffix = Path(args.output).suffix.lower() if args.output else ""
        fmt = "json" if suffix == ".json" else "csv"
    study = _open_study(args)
    try:
        records = study.to_records()
    finally:
        study.storage.close()
    if fmt == "json":
        text = json.dumps(_json_clean(records), indent=2) + "\n"
    else:
        columns: dict[str, None] = {}
        for rec in records:
            columns.update(dict.fromkeys(rec))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(list(columns))
        for rec in records:
            writer.writerow([_csv_cell(rec.get(c)) for c in columns])
        text = buf.getvalue()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        sys.stderr.write(f"Wrote {len(records)} trials of study {study.name!r} to {args.output}\n")
    else:
        sys.stdout.write(text)
    return 0
