from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from twiddle._storage import MemoryStorage, SQLiteStorage, Storage


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """Each storage implementation, fresh and empty."""
    store: Storage = (
        MemoryStorage() if request.param == "memory" else SQLiteStorage(tmp_path / "study.db")
    )
    try:
        yield store
    finally:
        store.close()
