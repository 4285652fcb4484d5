"""Where studies and trials live: in memory or in a SQLite file."""

from __future__ import annotations

import os
from typing import Any

from twiddle._errors import InvalidParameterError
from twiddle._storage._base import Storage, StudyRecord
from twiddle._storage._memory import MemoryStorage
from twiddle._storage._sqlite import SQLiteStorage

__all__ = ["MemoryStorage", "SQLiteStorage", "Storage", "StudyRecord", "get_storage"]

_SQLITE_PREFIX = "sqlite:///"
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_EXPECTED = (
    "None, 'memory', a 'sqlite:///path.db' URL, a path ending in .db, .sqlite or .sqlite3, "
    "or a Storage instance"
)


def _invalid(spec: Any) -> InvalidParameterError:
    return InvalidParameterError(
        f"The 'storage' parameter of Study must be {_EXPECTED}. Got {spec!r} instead."
    )


def get_storage(spec: Any) -> Storage:
    """Turn the ``storage`` argument of a study into a :class:`Storage`.

    Parameters
    ----------
    spec : None, str, os.PathLike or Storage
        ``None``, ``"memory"`` or ``":memory:"`` for a :class:`MemoryStorage`;
        ``"sqlite:///relative/path.db"`` or ``"sqlite:////absolute/path.db"``
        (three slashes, then the path) or a path ending in ``.db``, ``.sqlite`` or
        ``.sqlite3`` for a :class:`SQLiteStorage`; a Storage is returned as it is.

    Returns
    -------
    Storage

    Raises
    ------
    InvalidParameterError
        If ``spec`` is none of the above.
    StorageError
        If the SQLite file cannot be used (see :class:`SQLiteStorage`).

    Examples
    --------
    >>> get_storage(None).url
    'memory'
    """
    if isinstance(spec, Storage):
        return spec
    if spec is None or (isinstance(spec, str) and spec in ("memory", ":memory:")):
        return MemoryStorage()
    if isinstance(spec, str) and spec.startswith(_SQLITE_PREFIX):
        path = spec[len(_SQLITE_PREFIX) :]
        if path in ("", ":memory:"):
            raise _invalid(spec)
        return SQLiteStorage(path)
    if isinstance(spec, str | os.PathLike) and not isinstance(spec, bytes):
        path = os.fspath(spec)
        if isinstance(path, str) and "://" not in path and path.lower().endswith(_SQLITE_SUFFIXES):
            return SQLiteStorage(path)
    raise _invalid(spec)
