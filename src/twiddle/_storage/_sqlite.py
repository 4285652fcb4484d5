"""Storage in a SQLite file (standard library ``sqlite3`` only).

The database runs in WAL mode with ``synchronous=NORMAL``: a commit costs a write
to the WAL file and no flush to disk, and a crash of the process (even SIGKILL)
loses nothing that was committed. Every write is one explicit ``BEGIN IMMEDIATE``
transaction, so it takes the write lock up front and either happens completely or
not at all. Values are stored as JSON text, never pickled, so any program can read
the file and opening a file cannot run code.

Opening never changes a file that is not a twiddle database: the file is checked
(its header, then its tables) before anything is written to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from twiddle._errors import StorageError
from twiddle._storage._base import Storage, StudyRecord
from twiddle._storage._fields import (
    as_state,
    check_study_args,
    check_update,
    json_value,
    normalise_fields,
)
from twiddle._trial import FrozenTrial, TrialState

#: Version of the table layout below; a file with another version is refused.
SCHEMA_VERSION = 1
APPLICATION = "twiddle"
_SQLITE_HEADER = b"SQLite format 3\x00"

# ``value`` has no declared type (so no column affinity): finite and infinite values
# are stored as REAL exactly, -0.0 included, and NaN (which SQLite would turn into
# NULL) as the text 'NaN'. The other float columns never hold NaN.
_SCHEMA = (
    """CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE studies (
        study_id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        direction TEXT NOT NULL,
        space TEXT,
        created REAL NOT NULL,
        user_attrs TEXT NOT NULL,
        system_attrs TEXT NOT NULL
    )""",
    """CREATE TABLE trials (
        study_id INTEGER NOT NULL REFERENCES studies (study_id),
        number INTEGER NOT NULL,
        state TEXT NOT NULL,
        params TEXT NOT NULL,
        value,
        fold_scores TEXT NOT NULL,
        intermediate TEXT NOT NULL,
        metrics TEXT NOT NULL,
        distributions TEXT,
        datetime_start REAL,
        datetime_complete REAL,
        attempt INTEGER NOT NULL,
        worker TEXT,
        lease_until REAL,
        fail_reason TEXT,
        user_attrs TEXT NOT NULL,
        system_attrs TEXT NOT NULL,
        PRIMARY KEY (study_id, number)
    )""",
    "CREATE INDEX trials_by_state ON trials (study_id, state, number)",
)
_TABLES = frozenset({"meta", "studies", "trials"})

_TRIAL_COLUMNS = (
    "number",
    "state",
    "params",
    "value",
    "fold_scores",
    "intermediate",
    "metrics",
    "distributions",
    "datetime_start",
    "datetime_complete",
    "attempt",
    "worker",
    "lease_until",
    "fail_reason",
    "user_attrs",
    "system_attrs",
)
_SELECT_TRIAL = f"SELECT {', '.join(_TRIAL_COLUMNS)} FROM trials"
_INSERT_TRIAL = (
    f"INSERT INTO trials (study_id, {', '.join(_TRIAL_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(_TRIAL_COLUMNS) + 1))})"
)


def _trials_sql(n_states: int | None) -> str:
    """Query for the trials of a study, in all states or in ``n_states`` given ones."""
    if n_states is None:
        return f"{_SELECT_TRIAL} WHERE study_id = ? ORDER BY number"
    # Without statistics SQLite would walk the primary key; the state index finds
    # the few RUNNING or WAITING trials of a long study without reading the rest.
    return (
        f"{_SELECT_TRIAL} INDEXED BY trials_by_state WHERE study_id = ? "
        f"AND state IN ({', '.join('?' * n_states)}) ORDER BY number"
    )


_STUDY_COLUMNS = "study_id, name, direction, space, created, user_attrs, system_attrs"

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=True).encode
_loads = json.loads


def _loads_dict(text: str) -> dict[str, Any]:
    if text == "{}":
        return {}
    out: dict[str, Any] = _loads(text)
    return out


def _encode_value(value: float | None) -> float | str | None:
    if value is None or value == value:
        return value
    return "NaN"


_JSON_COLUMNS = frozenset(
    {
        "params",
        "fold_scores",
        "intermediate",
        "metrics",
        "distributions",
        "user_attrs",
        "system_attrs",
    }
)


def _encode(name: str, value: Any) -> Any:
    """SQL form of one normalised trial field."""
    if name in _JSON_COLUMNS:
        if not value:
            # None (distributions only), and the empty dicts and sequences most trials
            # have: their text without the cost of a call to the JSON encoder.
            if value is None:
                return None
            return "{}" if type(value) is dict else "[]"
        return _dumps(value)
    if name == "state":
        return value.value
    if name == "value":
        return _encode_value(value)
    return value


def _decode_trial(row: Sequence[Any]) -> FrozenTrial:
    (
        number,
        state,
        params,
        value,
        fold_scores,
        intermediate,
        metrics,
        distributions,
        datetime_start,
        datetime_complete,
        attempt,
        worker,
        lease_until,
        fail_reason,
        user_attrs,
        system_attrs,
    ) = row
    return FrozenTrial(
        number=number,
        state=TrialState(state),
        params=_loads_dict(params),
        value=float(value) if isinstance(value, str) else value,
        fold_scores=() if fold_scores == "[]" else tuple(_loads(fold_scores)),
        intermediate={int(k): v for k, v in _loads_dict(intermediate).items()},
        metrics=_loads_dict(metrics),
        distributions=None if distributions is None else _loads_dict(distributions),
        datetime_start=datetime_start,
        datetime_complete=datetime_complete,
        attempt=attempt,
        worker=worker,
        lease_until=lease_until,
        fail_reason=fail_reason,
        user_attrs=_loads_dict(user_attrs),
        system_attrs=_loads_dict(system_attrs),
    )


def _decode_study(row: Sequence[Any]) -> StudyRecord:
    study_id, name, direction, space, created, user_attrs, system_attrs = row
    return StudyRecord(
        study_id=study_id,
        name=name,
        direction=direction,
        space=None if space is None else _loads_dict(space),
        created=created,
        user_attrs=_loads_dict(user_attrs),
        system_attrs=_loads_dict(system_attrs),
    )


class SQLiteStorage(Storage):
    """Keep studies and trials in a SQLite database file.

    Parameters
    ----------
    path : str or os.PathLike
        The database file. A missing or empty file gets a new twiddle database;
        an existing file must be a twiddle database, otherwise
        :class:`~twiddle.StorageError` is raised and the file is left untouched.
    busy_timeout : float, default=60.0
        Seconds to wait for another connection's write lock before giving up.

    Raises
    ------
    StorageError
        If the directory does not exist, the file is not a twiddle database, its
        schema version is not one this twiddle reads, or SQLite cannot open it.

    Notes
    -----
    One connection serves the object; a lock makes each call atomic with respect
    to other threads of the process, so the object may be used from helper
    threads (e.g. one renewing leases).

    Examples
    --------
    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with SQLiteStorage(os.path.join(tmp, "study.db")) as storage:
    ...         study = storage.create_study("demo", "minimize", None)
    ...         storage.create_trial(study.study_id, {"x": 1.0}).number
    0
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 60.0) -> None:
        text = os.fspath(path)
        if text in ("", ":memory:") or text.startswith("file:"):
            raise StorageError(
                f"SQLiteStorage needs the path of a database file. Got {text!r} instead; "
                "use MemoryStorage() (storage='memory') for a study kept in memory."
            )
        self.path = Path(text).expanduser()
        self.url = f"sqlite:///{self.path.absolute()}"
        self._lock = threading.Lock()
        self._known_studies: set[int] = set()
        self._conn: sqlite3.Connection | None = self._open(float(busy_timeout))

    def __repr__(self) -> str:
        return f"SQLiteStorage({str(self.path)!r})"

    # -- opening ---------------------------------------------------------------
    def _not_twiddle(self, reason: str) -> StorageError:
        return StorageError(
            f"Cannot use {str(self.path)!r} as twiddle storage: {reason}, so it is not a "
            "twiddle database. Nothing was changed. Give the storage a new file name, or "
            "the path of an existing twiddle database."
        )

    def _open(self, busy_timeout: float) -> sqlite3.Connection:
        parent = self.path.parent
        if not parent.is_dir():
            raise StorageError(
                f"Cannot create the twiddle database {str(self.path)!r}: the directory "
                f"{str(parent)!r} does not exist. Create it first; nothing was created."
            )
        if self.path.is_dir():
            raise StorageError(
                f"Cannot use {str(self.path)!r} as twiddle storage: it is a directory. Give "
                "the path of a database file (e.g. ending in .db); nothing was changed."
            )
        try:
            with open(self.path, "rb") as file:
                header = file.read(len(_SQLITE_HEADER))
        except FileNotFoundError:
            header = b""
        except OSError as exc:
            raise StorageError(f"Cannot read {str(self.path)!r}: {exc}.") from exc
        if header and header != _SQLITE_HEADER:
            raise self._not_twiddle("the file is not a SQLite database")

        try:
            conn = sqlite3.connect(
                self.path,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite cannot open {str(self.path)!r}: {exc}.") from exc
        try:
            # Read-only inspection first: WAL mode and the schema are written only
            # once the file is known to be empty or a twiddle database.
            has_schema = self._check_tables(conn)
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if str(mode).lower() != "wal":
                raise StorageError(
                    f"SQLite could not put {str(self.path)!r} in WAL mode (it reports "
                    f"{mode!r}); twiddle needs WAL for crash safety. Put the database on "
                    "a local file system."
                )
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            if not has_schema:
                self._create_schema(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StorageError(f"SQLite cannot open {str(self.path)!r}: {exc}.") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_tables(self, conn: sqlite3.Connection) -> bool:
        """True for a twiddle database, False for an empty one; StorageError otherwise."""
        try:
            rows = conn.execute("SELECT type, name FROM sqlite_master").fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._not_twiddle(f"SQLite cannot read it ({exc})") from exc
        if not rows:
            return False
        tables = sorted(name for kind, name in rows if kind == "table")
        if "meta" not in tables:
            listed = ", ".join(tables[:8]) + (", ..." if len(tables) > 8 else "")
            raise self._not_twiddle(
                f"it is a SQLite database without twiddle's meta table (its tables: {listed})"
            )
        try:
            meta = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        except sqlite3.DatabaseError as exc:
            raise self._not_twiddle(f"its meta table is not twiddle's ({exc})") from exc
        if meta.get("application") != APPLICATION:
            raise self._not_twiddle(
                f"its meta table names the application {meta.get('application')!r}"
            )
        version = meta.get("schema_version")
        if version != str(SCHEMA_VERSION):
            raise StorageError(
                f"{str(self.path)!r} is a twiddle database with schema version {version}, but "
                f"this version of twiddle reads schema version {SCHEMA_VERSION} only. Open it "
                "with the twiddle release that wrote it (a newer one if that number is "
                "higher). Nothing was changed."
            )
        missing = _TABLES - set(tables)
        if missing:
            raise StorageError(
                f"{str(self.path)!r} is a damaged twiddle database: the table(s) "
                f"{', '.join(sorted(missing))} are missing. Nothing was changed."
            )
        return True

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have created the schema since the first look.
            if not self._check_tables(conn):
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION))],
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- plumbing --------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(
                f"The storage {self.url} is closed; create a new SQLiteStorage to use it again."
            )
        return self._conn

    @contextlib.contextmanager
    def _read(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise StorageError(f"Could not {what} from {self.url}: {exc}.") from exc

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, else rolled back."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, UnicodeError) as exc:
                raise StorageError(
                    f"Could not {what} in {self.url}: {exc}. Nothing was changed."
                ) from exc

    def _require_study(self, conn: sqlite3.Connection, study_id: int) -> None:
        if study_id in self._known_studies:
            return
        if conn.execute("SELECT 1 FROM studies WHERE study_id = ?", (study_id,)).fetchone():
            self._known_studies.add(study_id)
            return
        raise KeyError(f"There is no study with id {study_id} in {self.url}.")

    # -- studies ---------------------------------------------------------------
    def create_study(
        self,
        name: str,
        direction: str,
        space: dict[str, Any] | None,
        system_attrs: dict[str, Any] | None = None,
    ) -> StudyRecord:
        name, direction, space, attrs = check_study_args(name, direction, space, system_attrs)
        created = time.time()
        with self._write(f"create the study {name!r}") as conn:
            if conn.execute("SELECT 1 FROM studies WHERE name = ?", (name,)).fetchone():
                raise StorageError(
                    f"A study named {name!r} already exists in {self.url}; load it instead "
                    "of creating it, or choose another name."
                )
            cursor = conn.execute(
                "INSERT INTO studies (name, direction, space, created, user_attrs, "
                "system_attrs) VALUES (?, ?, ?, ?, '{}', ?)",
                (name, direction, None if space is None else _dumps(space), created, _dumps(attrs)),
            )
            study_id = cursor.lastrowid
        assert study_id is not None
        return StudyRecord(study_id, name, direction, space, created, {}, attrs)

    def get_study(self, name: str) -> StudyRecord | None:
        with self._read("read a study") as conn:
            row = conn.execute(
                f"SELECT {_STUDY_COLUMNS} FROM studies WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else _decode_study(row)

    def list_studies(self) -> list[StudyRecord]:
        with self._read("list the studies") as conn:
            rows = conn.execute(f"SELECT {_STUDY_COLUMNS} FROM studies ORDER BY study_id")
            return [_decode_study(row) for row in rows]

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise StorageError(f"A user attribute key must be a str. Got {key!r} instead.")
        value = json_value(value, f"user attribute {key!r} of study {study_id}")
        with self._write(f"set a user attribute of study {study_id}") as conn:
            row = conn.execute(
                "SELECT user_attrs FROM studies WHERE study_id = ?", (study_id,)
            ).fetchone()
            if row is None:
                raise KeyError(f"There is no study with id {study_id} in {self.url}.")
            attrs = _loads_dict(row[0])
            attrs[key] = value
            conn.execute(
                "UPDATE studies SET user_attrs = ? WHERE study_id = ?", (_dumps(attrs), study_id)
            )

    # -- trials ----------------------------------------------------------------
    def create_trial(
        self,
        study_id: int,
        params: dict[str, Any],
        state: TrialState = TrialState.RUNNING,
        **fields: Any,
    ) -> FrozenTrial:
        values = normalise_fields({"params": params, **fields}, study_id, "new")
        values["state"] = as_state(state, f"new trial of study {study_id}")
        trial = FrozenTrial(number=-1, **values)
        row = [_encode(name, getattr(trial, name)) for name in _TRIAL_COLUMNS[1:]]
        with self._write(f"create a trial of study {study_id}") as conn:
            self._require_study(conn, study_id)
            (number,) = conn.execute(
                "SELECT COALESCE(MAX(number) + 1, 0) FROM trials WHERE study_id = ?",
                (study_id,),
            ).fetchone()
            conn.execute(_INSERT_TRIAL, (study_id, number, *row))
        return trial.replace(number=number)

    def update_trial(self, study_id: int, number: int, **fields: Any) -> FrozenTrial:
        changes = normalise_fields(fields, study_id, number)
        assignments = ", ".join(f"{name} = ?" for name in changes)
        encoded = [_encode(name, value) for name, value in changes.items()]
        with self._write(f"update trial {number} of study {study_id}") as conn:
            row = conn.execute(
                f"{_SELECT_TRIAL} WHERE study_id = ? AND number = ?", (study_id, number)
            ).fetchone()
            if row is None:
                self._require_study(conn, study_id)
                raise KeyError(f"Study {study_id} has no trial number {number!r}.")
            old = _decode_trial(row)
            check_update(old, study_id, changes)
            if not changes:
                return old
            conn.execute(
                f"UPDATE trials SET {assignments} WHERE study_id = ? AND number = ?",
                (*encoded, study_id, number),
            )
        return old.replace(**changes)

    def get_trial(self, study_id: int, number: int) -> FrozenTrial:
        with self._read(f"read trial {number} of study {study_id}") as conn:
            row = conn.execute(
                f"{_SELECT_TRIAL} WHERE study_id = ? AND number = ?", (study_id, number)
            ).fetchone()
            if row is None:
                self._require_study(conn, study_id)
                raise KeyError(f"Study {study_id} has no trial number {number!r}.")
        return _decode_trial(row)

    def get_trials(
        self, study_id: int, states: Iterable[TrialState] | None = None
    ) -> list[FrozenTrial]:
        wanted = (
            None
            if states is None
            else sorted({as_state(s, "a state filter").value for s in states})
        )
        with self._read(f"read the trials of study {study_id}") as conn:
            self._require_study(conn, study_id)
            if wanted == []:
                return []
            sql = _trials_sql(None if wanted is None else len(wanted))
            rows = conn.execute(sql, (study_id, *(wanted or ()))).fetchall()
        return [_decode_trial(row) for row in rows]

    def renew_leases(self, study_id: int, numbers: Sequence[int], lease_until: float) -> None:
        """Set ``lease_until`` of several trials; those not RUNNING (or absent) are skipped."""
        lease = normalise_fields({"lease_until": lease_until}, study_id, "leases")["lease_until"]
        with self._write(f"renew leases of study {study_id}") as conn:
            self._require_study(conn, study_id)
            conn.executemany(
                "UPDATE trials SET lease_until = ? "
                "WHERE study_id = ? AND number = ? AND state = 'RUNNING'",
                [(lease, study_id, number) for number in numbers],
            )

    def close(self) -> None:
        """Close the connection (idempotent); later calls raise StorageError."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
