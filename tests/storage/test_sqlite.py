"""SQLite-only behaviour: persistence, pragmas, refusing foreign files, crash safety."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from twiddle import _storage
from twiddle._errors import StorageError
from twiddle._storage import SQLiteStorage
from twiddle._storage._sqlite import _trials_sql
from twiddle._trial import FrozenTrial, TrialState

from ._helpers import assert_same, every_field


def _sidecars(path: Path) -> list[Path]:
    return [p for p in (Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def _assert_refused(path: Path, match: str) -> None:
    """Opening ``path`` raises a clear StorageError and leaves the file as it was."""
    before = path.read_bytes()
    with pytest.raises(StorageError, match=match) as info:
        SQLiteStorage(path)
    message = str(info.value)
    assert str(path) in message
    assert "Nothing was changed" in message
    assert path.read_bytes() == before
    assert _sidecars(path) == []


# -- persistence and settings --------------------------------------------------------


def test_everything_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    fields = every_field()
    with SQLiteStorage(path) as storage:
        study = storage.create_study("s", "minimize", {"x": [1, 2]}, system_attrs={"a": 1})
        storage.set_study_user_attr(study.study_id, "note", "hello")
        storage.create_trial(study.study_id, {"x": 0})
        written = storage.update_trial(study.study_id, 0, state=TrialState.FAIL, **fields)
    with SQLiteStorage(path) as storage:
        loaded = storage.get_study("s")
        assert loaded == dataclasses.replace(study, user_attrs={"note": "hello"})
        assert_same(storage.get_trial(study.study_id, 0), written)
        assert storage.create_trial(study.study_id, {}).number == 1
    assert storage.url == f"sqlite:///{path}"  # path is absolute: four slashes


def test_pragmas_are_set(tmp_path: Path) -> None:
    with SQLiteStorage(tmp_path / "study.db") as storage:
        conn = storage._conn
        assert conn is not None
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 30_000
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.isolation_level is None


def test_schema_meta_columns_and_index(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    SQLiteStorage(path).close()
    conn = sqlite3.connect(path)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        assert meta == {"application": "twiddle", "schema_version": "1"}
        columns = {row[1] for row in conn.execute("PRAGMA table_info(trials)")}
        assert {f.name for f in dataclasses.fields(FrozenTrial)} | {"study_id"} == columns
        primary = [row[1] for row in sorted(conn.execute("PRAGMA table_info(trials)")) if row[5]]
        assert sorted(primary) == ["number", "study_id"]
        sql = _trials_sql(2)
        plan = " ".join(
            str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", (1, "A", "B"))
        )
        assert "trials_by_state" in plan
    finally:
        conn.close()


def test_values_are_json_text_and_nan_is_not_null(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    with SQLiteStorage(path) as storage:
        sid = storage.create_study("s", "minimize", None).study_id
        storage.create_trial(sid, {"x": 1}, value=float("nan"), fold_scores=(float("nan"), 1.0))
        storage.create_trial(sid, {"x": 2}, value=-0.5)
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT value, params, fold_scores FROM trials ORDER BY number")
        assert rows.fetchall() == [("NaN", '{"x":1}', "[NaN,1.0]"), (-0.5, '{"x":2}', "[]")]
    finally:
        conn.close()


# -- files that are not (this version's) twiddle databases --------------------------------


def test_random_bytes_are_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "random.db"
    path.write_bytes(bytes(range(256)) * 20)
    _assert_refused(path, "not a SQLite database.*not a twiddle database")


def test_text_file_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("results: 0.93\n")
    _assert_refused(path, "not a twiddle database")


def test_corrupt_sqlite_file_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    _assert_refused(path, "not a twiddle database")


def test_foreign_database_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.commit()
    conn.close()
    _assert_refused(path, "without twiddle's meta table .*users.*not a twiddle database")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_foreign_meta_table_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('application', 'something-else')")
    conn.commit()
    conn.close()
    _assert_refused(path, "'something-else'.*not a twiddle database")


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    SQLiteStorage(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StorageError, match=r"schema version 2.*reads schema version 1 only"):
        SQLiteStorage(path)
    assert path.read_bytes() == before


def test_empty_file_gets_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with SQLiteStorage(path) as storage:
        sid = storage.create_study("s", "minimize", None).study_id
        assert storage.create_trial(sid, {}).number == 0
    with SQLiteStorage(path) as storage:
        assert [s.name for s in storage.list_studies()] == ["s"]


def test_missing_directory_is_named_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "study.db"
    with pytest.raises(StorageError, match=r"directory .*such' does not exist"):
        SQLiteStorage(path)
    assert not (tmp_path / "no").exists()


def test_directory_and_memory_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="is a directory"):
        SQLiteStorage(tmp_path)
    with pytest.raises(StorageError, match="MemoryStorage"):
        SQLiteStorage(":memory:")


def test_closed_storage_raises(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "study.db")
    storage.close()
    storage.close()  # idempotent
    with pytest.raises(StorageError, match="is closed"):
        storage.list_studies()


# -- transactions ----------------------------------------------------------------


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    with SQLiteStorage(tmp_path / "study.db") as storage:
        sid = storage.create_study("s", "minimize", None).study_id
        before = storage.create_trial(sid, {"x": 1})
        # A lone surrogate cannot be written as UTF-8: SQLite fails mid-transaction.
        with pytest.raises(StorageError, match="Nothing was changed"):
            storage.update_trial(sid, 0, value=2.0, worker="bad\ud800")
        assert_same(storage.get_trial(sid, 0), before)
        with pytest.raises(StorageError, match="Nothing was changed"):
            storage.create_trial(sid, {}, fail_reason="bad\ud800")
        assert len(storage.get_trials(sid)) == 1
        assert storage._conn is not None and not storage._conn.in_transaction


def test_numbers_are_unique_across_connections_and_threads(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    first = SQLiteStorage(path)
    second = SQLiteStorage(path)
    sid = first.create_study("s", "minimize", None).study_id
    numbers: list[int] = []

    def work(storage: SQLiteStorage) -> None:
        for _ in range(40):
            trial = storage.create_trial(sid, {})
            numbers.append(storage.update_trial(sid, trial.number, value=1.0).number)

    threads = [threading.Thread(target=work, args=(s,)) for s in (first, first, second, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(numbers) == list(range(160))
    assert [t.number for t in second.get_trials(sid)] == list(range(160))
    first.close()
    second.close()


# The writer imports the storage layer alone (not the package's heavier modules) so
# that it starts in a fraction of a second.
_WRITER = """
import sys
import types

package = types.ModuleType("twiddle")
package.__path__ = [sys.argv[2]]
sys.modules["twiddle"] = package

from twiddle._storage import SQLiteStorage
from twiddle._storage._sqlite import _trials_sql
from twiddle._trial import TrialState

storage = SQLiteStorage(sys.argv[1])
sid = storage.create_study("crash", "minimize", None).study_id
i = 0
while True:
    trial = storage.create_trial(sid, {"i": i}, worker="w", fold_scores=(i, float("nan")))
    storage.update_trial(sid, trial.number, state=TrialState.COMPLETE, value=i / 4)
    i += 1
    print(i, flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_sigkill_mid_write_loses_no_committed_trial(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    package_dir = str(Path(_storage.__file__).resolve().parents[1])
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), package_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(20.0, proc.kill)
    watchdog.start()
    committed = 0
    try:
        assert proc.stdout is not None
        while committed < 300:
            line = proc.stdout.readline()
            assert line, f"writer died early: {proc.stderr.read() if proc.stderr else ''}"
            committed = int(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL

    with SQLiteStorage(path) as storage:
        assert storage._conn is not None
        assert storage._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        study = storage.get_study("crash")
        assert study is not None
        trials = storage.get_trials(study.study_id)
        assert len(trials) >= committed
        assert [t.number for t in trials] == list(range(len(trials)))
        for trial in trials[:committed]:
            i = trial.number
            assert trial.state is TrialState.COMPLETE
            assert trial.value == i / 4 and trial.params == {"i": i}
            assert trial.fold_scores[0] == i and repr(trial.fold_scores[1]) == "nan"
