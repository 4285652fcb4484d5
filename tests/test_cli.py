"""The ``twiddle`` command line: run, resume, bad input, show/best/export, crash safety."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import twiddle
from twiddle import Study, TrialState
from twiddle._cli import _ProgressReporter, main
from twiddle._trial import FrozenTrial

TINY = """
[study]
seed = 0

[data]
loader = "load_iris"

[estimator]
class = "sklearn.tree.DecisionTreeClassifier"
params = { random_state = 0 }

[space.max_depth]
type = "int"
low = 1
high = 6

[space.criterion]
type = "categorical"
choices = ["gini", "entropy"]

[cv]
folds = 3
scoring = "accuracy"

[run]
n_trials = 4
"""

# A classifier that sleeps in fit (so a run can be killed mid-way) or fails on demand.
HELPERS = """
import time

from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.tree import DecisionTreeClassifier


class SleepyTree(ClassifierMixin, BaseEstimator):
    def __init__(self, max_depth=None, sleep=0.0, fail=False):
        self.max_depth = max_depth
        self.sleep = sleep
        self.fail = fail

    def fit(self, X, y):
        if self.fail:
            raise RuntimeError("broken on purpose")
        time.sleep(self.sleep)
        self.tree_ = DecisionTreeClassifier(max_depth=self.max_depth, random_state=0).fit(X, y)
        self.classes_ = self.tree_.classes_
        return self

    def predict(self, X):
        return self.tree_.predict(X)
"""

SRC = str(Path(twiddle.__file__).resolve().parents[1])


def write(directory: Path, text: str, name: str = "tiny.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def helper_spec(directory: Path, module: str, params: str, n_trials: int = 4) -> Path:
    """A spec whose estimator is SleepyTree from a module written next to the spec."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{module}.py").write_text(HELPERS)
    text = f"""
    [study]
    seed = 0

    [data]
    loader = "load_iris"

    [estimator]
    class = "{module}:SleepyTree"
    params = {params}

    [space.max_depth]
    type = "int"
    low = 1
    high = 6

    [cv]
    folds = 3
    scoring = "accuracy"

    [run]
    n_trials = {n_trials}
    """
    return write(directory, text)


@pytest.fixture(autouse=True)
def restore_imports() -> Iterator[None]:
    """Undo what loading a spec does to sys.path (its directory) and sys.modules."""
    path = list(sys.path)
    yield
    added = [Path(p).resolve() for p in sys.path if p and p not in path]
    sys.path[:] = path
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and any(Path(file).resolve().is_relative_to(a) for a in added):
            del sys.modules[name]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def stored(db: Path, name: str = "tiny") -> list[FrozenTrial]:
    study = Study.load(name, f"sqlite:///{db}")
    try:
        return study.trials
    finally:
        study.storage.close()


def states_read_only(db: Path) -> list[str]:
    """Trial states, read with sqlite3 in read-only mode (safe while a run writes)."""
    if not db.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return [r[0] for r in conn.execute("SELECT state FROM trials ORDER BY number")]
        finally:
            conn.close()
    except sqlite3.OperationalError:  # schema not written yet
        return []


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    return env


# -- run and resume ------------------------------------------------------------------------
def test_run_creates_the_database_and_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write(tmp_path, TINY)
    code, out, err = run(capsys, "run", str(spec), "--no-progress")
    assert code == 0, err
    db = tmp_path / "tiny.db"
    assert db.is_file()
    trials = stored(db)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state is TrialState.COMPLETE and len(t.fold_scores) == 3 for t in trials)
    assert "Top 4 of 4 finished trials by accuracy" in out
    for column in ("trial", "state", "accuracy ± se", "max_depth", "criterion"):
        assert column in out
    best = max(trials, key=lambda t: (t.value, -t.number))
    assert f"{best.value:.4f} ± {best.value_se:.4f}" in out
    assert f"Best: trial {best.number}" in out
    assert str(db) in out
    assert "Traceback" not in err


def test_resume_runs_only_the_missing_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write(tmp_path, TINY)
    db = tmp_path / "tiny.db"
    assert run(capsys, "run", str(spec), "--no-progress")[0] == 0
    first = stored(db)

    code, out, _ = run(capsys, "run", str(spec), "--no-progress")
    assert code == 0
    assert "nothing to run" in out
    assert "Top 4 of 4" in out
    assert stored(db) == first

    code, out, _ = run(capsys, "run", str(spec), "--no-progress", "--n-trials", "6")
    assert code == 0
    assert "Ran 2 trial(s)" in out
    trials = stored(db)
    assert [t.number for t in trials] == [0, 1, 2, 3, 4, 5]
    assert trials[:4] == first
    assert all(t.state is TrialState.COMPLETE for t in trials)


def test_changed_space_on_resume_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write(tmp_path, TINY)
    assert run(capsys, "run", str(spec), "--no-progress")[0] == 0
    write(tmp_path, TINY.replace("high = 6", "high = 7").replace("n_trials = 4", "n_trials = 5"))
    code, _, err = run(capsys, "run", str(spec), "--no-progress")
    assert code == 2
    assert "another search space" in err
    assert "Traceback" not in err
    assert len(stored(tmp_path / "tiny.db")) == 4


def test_overrides_and_relative_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "iris.csv").write_text(
        "a,b,c,d,label\n"
        + "".join(f"{i % 7},{i % 5},{i % 3},{(i * 7) % 11},{i % 2}\n" for i in range(30))
    )
    text = TINY.replace('loader = "load_iris"', 'csv = "iris.csv"\ntarget = "label"')
    spec = write(tmp_path / "specs", text)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, _, err = run(capsys, "run", "../specs/tiny.toml", "--no-progress", "--n-trials", "2")
    assert code == 0, err
    assert (tmp_path / "specs" / "tiny.db").is_file()  # next to the spec, not in the cwd
    assert not (work / "tiny.db").exists()
    assert len(stored(tmp_path / "specs" / "tiny.db")) == 2
    # --storage is read from the working directory
    code, _, err = run(
        capsys, "run", str(spec), "--no-progress", "--storage", "here.db", "--n-trials", "1",
        "--seed", "5", "--timeout", "30", "--n-jobs", "1",
    )  # fmt: skip
    assert code == 0, err
    assert len(stored(work / "here.db")) == 1


# -- bad input: exit status 2, a message, no traceback, nothing trained ----------------------
BAD_SPECS = [
    ("unknown key", ("n_trials = 4", "n_trial = 4"), ["[run]", "'n_trial'", "'n_trials'"]),
    ("wrong type", ("n_trials = 4", 'n_trials = "4"'), ["[run] n_trials", "integer"]),
    ("bad bounds", ("high = 6", "high = 0"), ["[space.max_depth]", "low < high"]),
    ("unknown loader", ("load_iris", "load_irises"), ["'load_irises'", "load_iris"]),
    (
        "unknown estimator",
        ("sklearn.tree.DecisionTreeClassifier", "sklearn.tree.DecisionTree"),
        ["sklearn.tree.DecisionTree", "cannot be imported"],
    ),
    ("unknown module", ("sklearn.tree.", "sklearn.trees."), ["No module named 'sklearn.trees'"]),
    ("unknown scorer", ('"accuracy"', '"acc"'), ["[cv] scoring 'acc'"]),
    ("unknown param", ("max_depth]", "max_dpth]"), ["'max_dpth'", "'max_depth'"]),
    (
        "missing csv",
        ('loader = "load_iris"', 'csv = "nope.csv"\ntarget = "y"'),
        ["nope.csv", "does not exist"],
    ),
]


@pytest.mark.parametrize(("label", "change", "needles"), BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    label: str,
    change: tuple[str, str],
    needles: list[str],
) -> None:
    assert change[0] in TINY
    spec = write(tmp_path, TINY.replace(*change))
    code, out, err = run(capsys, "run", str(spec), "--no-progress")
    assert code == 2
    assert err.startswith("twiddle: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "tiny.db").exists()  # validated before anything was stored
    assert out == ""


def test_unknown_target_column_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d.csv").write_text("x1,x2,label\n1,2,0\n2,3,1\n3,4,0\n4,5,1\n5,6,0\n6,7,1\n")
    text = TINY.replace('loader = "load_iris"', 'csv = "d.csv"\ntarget = "lable"')
    code, _, err = run(capsys, "run", str(write(tmp_path, text)), "--no-progress")
    assert code == 2
    assert "'lable' is not a column" in err
    assert "Did you mean 'label'?" in err


def test_missing_spec_and_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "run", str(tmp_path / "absent.toml"))
    assert code == 2
    assert "absent.toml" in err and "does not exist" in err
    code, _, err = run(capsys, "run", str(write(tmp_path, TINY)), "--n-trials", "0")
    assert code == 2
    assert "--n-trials" in err
    assert run(capsys)[0] == 2
    assert run(capsys, "frobnicate")[0] == 2
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert twiddle.__version__ in out


def test_every_trial_failing_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = helper_spec(tmp_path, "helpers_fail", "{ fail = true }", n_trials=2)
    code, _, err = run(capsys, "run", str(spec), "--no-progress")
    assert code == 1
    assert "All 2 trials" in err
    assert "broken on purpose" in err
    code, _, err = run(capsys, "best", str(spec))
    assert code == 2
    assert "no complete trial" in err


# -- show, best, export ---------------------------------------------------------------------
@pytest.fixture
def finished_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    spec = write(tmp_path, TINY)
    assert main(["run", str(spec), "--no-progress"]) == 0
    capsys.readouterr()
    return spec


def test_show(finished_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", str(finished_spec), "--top", "2")
    assert code == 0
    assert "Study 'tiny'" in out
    assert "Trials: 4 (4 COMPLETE)" in out
    assert "Top 2 of 4 finished trials" in out
    assert "Best: trial" in out
    db = finished_spec.parent / "tiny.db"
    # --storage alone: the only stored study is used
    code, out2, _ = run(capsys, "show", "--storage", str(db), "--top", "2")
    assert code == 0
    assert out2 == out


def test_best_prints_json(finished_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "best", str(finished_spec))
    assert code == 0
    data = json.loads(out)
    trials = stored(finished_spec.parent / "tiny.db")
    best = max(trials, key=lambda t: (t.value, -t.number))
    assert data["number"] == best.number
    assert data["value"] == pytest.approx(best.value)
    assert data["value_se"] == pytest.approx(best.value_se)
    assert data["params"] == best.params
    assert data["metric"] == "accuracy"
    assert data["study"] == "tiny"


def test_export_json_and_csv(
    finished_spec: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "export", str(finished_spec), "--format", "json")
    assert code == 0
    records = json.loads(out)
    assert [r["number"] for r in records] == [0, 1, 2, 3]
    assert {"params_max_depth", "params_criterion", "fold_0", "value_se"} <= set(records[0])

    code, out, _ = run(capsys, "export", str(finished_spec), "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 4
    header = out.splitlines()[0].split(",")
    assert "params_max_depth" in header and "params_criterion" in header
    assert float(rows[0]["value"]) == pytest.approx(records[0]["value"])

    target = tmp_path / "trials.json"
    code, out, err = run(capsys, "export", str(finished_spec), "-o", str(target))
    assert code == 0
    assert out == ""
    assert "Wrote 4 trials" in err
    assert json.loads(target.read_text()) == records  # format taken from the suffix


def test_finding_the_study(
    finished_spec: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "tiny.db"
    code, _, err = run(capsys, "show", "--storage", str(db), "--study", "nope")
    assert code == 2
    assert "no study named 'nope'" in err and "'tiny'" in err
    other = write(
        tmp_path, TINY.replace("seed = 0", 'seed = 0\nname = "other"\nstorage = "tiny.db"')
    )
    assert main(["run", str(other), "--no-progress", "--n-trials", "1"]) == 0
    capsys.readouterr()
    code, _, err = run(capsys, "best", "--storage", str(db))
    assert code == 2
    assert "'tiny', 'other'" in err and "--study" in err
    code, out, _ = run(capsys, "best", "--storage", str(db), "--study", "other")
    assert code == 0
    assert json.loads(out)["study"] == "other"
    code, _, err = run(capsys, "show")
    assert code == 2 and "spec file" in err
    code, _, err = run(capsys, "show", "--storage", str(tmp_path / "none.db"))
    assert code == 2 and "no twiddle database" in err
    assert not (tmp_path / "none.db").exists()


# -- progress -------------------------------------------------------------------------------
def test_progress_reporter_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    reporter = _ProgressReporter(enabled=True, total=5, done=2, failed=1, best=0.5)
    with reporter:
        reporter(None, FrozenTrial(number=2, state=TrialState.COMPLETE, params={}, value=0.75))
        reporter(None, FrozenTrial(number=3, state=TrialState.FAIL, params={}))
        reporter(None, FrozenTrial(number=4, state=TrialState.COMPLETE, params={}, value=0.6))
        reporter(None, FrozenTrial(number=5, state=TrialState.PRUNED, params={}, value=0.9))
    task = reporter.progress.tasks[0]
    assert task.completed == 6
    assert task.total == 5
    assert task.fields == {"best": "0.7500", "failed": 2, "pruned": 1}


# -- real processes -------------------------------------------------------------------------
def test_python_dash_m_twiddle_runs(tmp_path: Path) -> None:
    spec = write(tmp_path, TINY)
    result = subprocess.run(
        [sys.executable, "-m", "twiddle", "run", str(spec)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Top 4 of 4 finished trials" in result.stdout
    assert result.stderr == ""  # no progress bar when stderr is not a terminal; no warnings
    assert states_read_only(tmp_path / "tiny.db") == ["COMPLETE"] * 4


@pytest.mark.slow
def test_local_module_estimator_in_worker_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = helper_spec(tmp_path, "helpers_workers", "{ sleep = 0.0 }", n_trials=4)
    code, _, err = run(capsys, "run", str(spec), "--no-progress", "--n-jobs", "2")
    assert code == 0, err
    trials = stored(tmp_path / "tiny.db")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert all(t.worker and str(os.getpid()) not in t.worker for t in trials)


@pytest.mark.slow
def test_sigkill_loses_no_complete_trial(tmp_path: Path) -> None:
    n_trials = 10
    spec = helper_spec(tmp_path, "helpers_sleepy", "{ sleep = 0.1 }", n_trials=n_trials)
    db = tmp_path / "tiny.db"
    command = [sys.executable, "-m", "twiddle", "run", str(spec), "--no-progress"]
    proc = subprocess.Popen(
        command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        seen: list[str] = []
        while seen.count("COMPLETE") < 2:
            assert proc.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "no trial completed in time"
            time.sleep(0.02)
            seen = states_read_only(db)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    after_kill = states_read_only(db)
    assert after_kill.count("COMPLETE") >= seen.count("COMPLETE")
    assert len(after_kill) < n_trials

    result = subprocess.run(
        command, env=subprocess_env(), capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    final = stored(db)
    assert len(final) == n_trials
    assert all(t.state.is_finished for t in final)
    assert sum(t.state is TrialState.COMPLETE for t in final) == n_trials
    for number, state in enumerate(after_kill):
        if state == "COMPLETE":  # finished trials are final
            assert final[number].state is TrialState.COMPLETE
            assert final[number].attempt == 1
        elif state == "RUNNING":  # the killed run's trial was run again
            assert final[number].attempt == 2
            assert final[number].system_attrs["interruptions"]


def test_memory_storage_keeps_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write(tmp_path, TINY)
    code, out, err = run(capsys, "run", str(spec), "--no-progress", "--storage", "memory")
    assert code == 0, err
    assert "kept in memory only" in out
    assert not (tmp_path / "tiny.db").exists()


def test_racing_from_the_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # depth-1 trees are clearly worse on iris than deeper ones: racing stops some of them
    text = TINY.replace("n_trials = 4", 'n_trials = 12\nscheduler = "racing"')
    text = text.replace("folds = 3", "folds = 10\nshuffle = true")
    spec = write(tmp_path, text)
    code, out, err = run(capsys, "run", str(spec), "--no-progress")
    assert code == 0, err
    trials = stored(tmp_path / "tiny.db")
    assert len(trials) == 12
    pruned = [t for t in trials if t.state is TrialState.PRUNED]
    assert pruned  # a seeded run: depth-1 trees are raced out
    for t in pruned:
        assert None in t.fold_scores and "racing" in t.system_attrs
    made = sum(t.n_folds_done for t in trials)
    assert made < 12 * 10
    # the summary counts the stopped trials and the fold fits made
    expected = f"{len(pruned)} trial(s) were stopped between folds by fold racing"
    assert expected in out and f"{made} of 120 fold fits were made" in out
    code, shown, _ = run(capsys, "show", str(spec))
    assert code == 0 and f"{made} of 120 fold fits were made" in shown


def test_racing_parameters_from_the_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = TINY.replace("n_trials = 4", 'n_trials = 12\nscheduler = "racing"')
    text = text.replace("folds = 3", "folds = 10\nshuffle = true")
    text += '\n[scheduler]\nalpha = 0.2\nlevels = "bonferroni"\n'
    code, _, err = run(capsys, "run", str(write(tmp_path, text)), "--no-progress")
    assert code == 0, err
    pruned = [t for t in stored(tmp_path / "tiny.db") if t.state is TrialState.PRUNED]
    assert pruned
    for t in pruned:
        record = t.system_attrs["racing"]
        assert record["alpha"] == 0.2 and record["levels"] == "bonferroni"


def test_halving_over_folds_from_the_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = TINY.replace("n_trials = 4", 'n_trials = 12\nscheduler = "halving"')
    text = text.replace("folds = 3", "folds = 5\nshuffle = true")
    code, out, err = run(capsys, "run", str(write(tmp_path, text)), "--no-progress")
    assert code == 0, err
    trials = stored(tmp_path / "tiny.db")
    pruned = [t for t in trials if t.state is TrialState.PRUNED]
    assert pruned and all(t.system_attrs["schedule"]["rule"] == "SuccessiveHalving" for t in pruned)
    assert f"{len(pruned)} trial(s) were stopped between folds by SuccessiveHalving" in out
    assert sum(t.n_folds_done for t in trials) < 12 * 5


def test_an_unknown_scheduler_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = TINY.replace("n_trials = 4", 'n_trials = 4\nscheduler = "asha"')
    code, _, err = run(capsys, "run", str(write(tmp_path, text)), "--no-progress")
    assert code == 2 and "scheduler" in err and "halving" in err


@pytest.mark.slow
def test_run_on_a_local_dask_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    spec = write(tmp_path, TINY)
    code, out, err = run(capsys, "run", str(spec), "--no-progress", "--dask", "local")
    assert code == 0, err
    assert "Running on the Dask cluster at local (2 fold fits at a time)" in out
    trials = stored(tmp_path / "tiny.db")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    # the fold fits ran in the cluster's worker processes, not in this one
    workers = {t.worker for t in trials}
    assert workers and not any(w and w.endswith(f":{os.getpid()}") for w in workers)


@pytest.mark.slow
def test_dask_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    spec = write(tmp_path, TINY)
    # nothing listens on this port: a clear error, nothing run or stored
    code, _, err = run(capsys, "run", str(spec), "--no-progress", "--dask", "tcp://127.0.0.1:9")
    assert code == 2
    assert "--dask tcp://127.0.0.1:9: cannot reach a Dask scheduler" in err
    assert "'local'" in err and "Traceback" not in err
    assert not (tmp_path / "tiny.db").exists()  # the error came before any storage
