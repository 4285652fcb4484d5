"""One-thread BLAS for small linear algebra (the GP sampler, evidence optimisation).

The matrices there are small (a few hyperparameters; a kernel matrix of a few hundred
rows), where a multi-threaded BLAS spends more on waking its threads than it saves, and
on a busy machine far more. Fits run with BLAS limited to one thread; parallelise
across fits instead.
"""

from __future__ import annotations

from typing import Any

_CONTROLLER: Any = None


def single_thread() -> Any:
    """Context manager limiting BLAS and OpenMP to one thread (controller built once)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1)
