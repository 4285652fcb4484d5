"""``get_storage``: from the user's ``storage`` argument to a Storage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from twiddle._errors import InvalidParameterError
from twiddle._storage import MemoryStorage, SQLiteStorage, get_storage


@pytest.mark.parametrize("spec", [None, "memory", ":memory:"])
def test_memory_specs(spec: str | None) -> None:
    storage = get_storage(spec)
    assert isinstance(storage, MemoryStorage)
    assert storage.url == "memory"


def test_a_storage_is_returned_as_is() -> None:
    storage = MemoryStorage()
    assert get_storage(storage) is storage


def test_sqlite_url_with_absolute_path(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert url.startswith("sqlite:////")
    with get_storage(url) as storage:
        assert isinstance(storage, SQLiteStorage)
        assert storage.path == tmp_path / "a.db"
        storage.create_study("s", "minimize", None)
        assert storage.url == url
    with get_storage(storage.url) as again:  # the url reopens the same file
        assert [s.name for s in again.list_studies()] == ["s"]


def test_sqlite_url_and_plain_relative_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    for spec in ("sqlite:///sub/rel.db", "sub/plain.sqlite", "x.SQLITE3", Path("p.db")):
        with get_storage(spec) as storage:
            assert isinstance(storage, SQLiteStorage)
            assert storage.path.absolute() == tmp_path / os.fspath(spec).removeprefix("sqlite:///")
            assert storage.path.exists()


@pytest.mark.parametrize(
    "spec",
    [
        "results.txt",
        "sqlite://",
        "sqlite:///",
        "sqlite:///:memory:",
        "postgresql://h/db",
        3,
        b"x.db",
        Path("study.csv"),
        "mem",
    ],
)
def test_anything_else_is_an_invalid_parameter(spec: object) -> None:
    with pytest.raises(InvalidParameterError) as info:
        get_storage(spec)
    message = str(info.value)
    assert message.startswith("The 'storage' parameter of Study must be ")
    assert message.endswith(f"Got {spec!r} instead.")
    assert "sqlite:///" in message and "Storage instance" in message
