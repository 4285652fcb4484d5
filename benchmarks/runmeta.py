"""The record of one benchmark command: when, how it was called, on what, how long.

Every results file of the racing benchmarks starts with this record, so that a table
can say which command made it and on which versions.
"""

from __future__ import annotations

import datetime
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

import twiddle


def run_meta(
    script: str,
    argv: Sequence[str] | None = None,
    started: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """``date``, ``command``, ``python``, ``twiddle``, then ``extra``, then ``seconds``.

    ``argv`` defaults to the process's own arguments; ``started`` is a
    ``time.perf_counter()`` reading, and ``seconds`` is left out without it.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": f"python benchmarks/{script} " + " ".join(args),
        "python": platform.python_version(),
        "twiddle": twiddle.__version__,
        **extra,
    }
    if started is not None:
        meta["seconds"] = time.perf_counter() - started
    return meta
