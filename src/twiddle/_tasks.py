"""Units of work sent to executors, and what they send back.

A task is a picklable callable taking no arguments. Heavy objects (the user's
objective, an estimator with its data) travel inside a :class:`Shipment`, which
is pickled once by the driver and unpickled once per worker process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import numbers
import os
import socket
import threading
import time
import traceback
from collections import OrderedDict
from typing import Any

import cloudpickle

from twiddle._errors import TrialPruned
from twiddle._trial import TrialState

_WORKER_CACHE: OrderedDict[str, Any] = OrderedDict()
_CACHE_SIZE = 4
_CACHE_LOCK = threading.Lock()
_TOKENS = itertools.count()


def worker_id() -> str:
    """Identity of this process as recorded on trials: "host:pid"."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _unship(token: str, payload: bytes) -> Any:
    with _CACHE_LOCK:
        if token in _WORKER_CACHE:
            _WORKER_CACHE.move_to_end(token)
            return _WORKER_CACHE[token]
    obj = cloudpickle.loads(payload)
    with _CACHE_LOCK:
        _WORKER_CACHE[token] = obj
        while len(_WORKER_CACHE) > _CACHE_SIZE:
            _WORKER_CACHE.popitem(last=False)
    return obj


class Shipment:
    """Wraps an object that many tasks share; pickles it once, unpickles it once per process."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self.token = f"{worker_id()}:{id(self)}:{next(_TOKENS)}:{time.time_ns()}"
        self._payload: bytes | None = None

    def __reduce__(self) -> tuple[Any, tuple[str, bytes]]:
        if self._payload is None:
            self._payload = cloudpickle.dumps(self.obj)
        return (_unship, (self.token, self._payload))


@dataclasses.dataclass
class TaskResult:
    """What a task returns to the driver (small and picklable)."""

    state: TrialState
    value: float | None = None
    params: dict[str, Any] | None = None
    distributions: dict[str, Any] | None = None
    intermediate: dict[int, float] = dataclasses.field(default_factory=dict)
    user_attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    fail_reason: str | None = None
    fold: int | None = None
    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    fit_time: float = 0.0
    score_time: float = 0.0
    warnings: list[str] = dataclasses.field(default_factory=list)
    worker: str = ""


def check_value(value: Any) -> tuple[float | None, str | None]:
    """An objective's return value as a float, or the reason it is unusable."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if hasattr(value, "item") and getattr(value, "size", 1) == 1:
            with contextlib.suppress(TypeError, ValueError):
                value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None, (
                f"The objective returned {value!r} of type {type(value).__name__}; it must "
                "return one real number (the value to optimise)."
            )
    v = float(value)
    if not math.isfinite(v):
        return None, (
            f"The objective returned {v}; a trial needs a finite value. Return a large finite "
            "penalty or raise twiddle.TrialPruned if this configuration should be skipped."
        )
    return v, None


def format_exception(err: BaseException) -> str:
    return "".join(traceback.format_exception(type(err), err, err.__traceback__)).rstrip()


@dataclasses.dataclass
class ObjectiveTask:
    """Run a user objective for one trial (define-by-run or config style)."""

    objective: Any  # Shipment or the callable itself
    number: int
    proposal: dict[str, Any]
    seed: int
    space_json: dict[str, Any] | None
    call_style: str  # "trial" or "config"
    # A learning-curve scheduler, and the snapshot of the other trials' curves taken by
    # the driver at dispatch, for Trial.should_prune() to decide here; with a board key,
    # the trial asks the driver for the curves as they are when it decides.
    scheduler: Any = None
    others: tuple[Any, ...] = ()
    direction: str = "minimize"
    board: str | None = None
    board_version: int = 0

    def __call__(self) -> TaskResult:
        from twiddle._study import Trial  # avoid an import cycle

        fn = self.objective.obj if isinstance(self.objective, Shipment) else self.objective
        trial = Trial._for_task(
            self.number,
            self.proposal,
            self.seed,
            self.space_json,
            scheduler=self.scheduler,
            others=self.others,
            direction=self.direction,
        )
        if self.scheduler is not None and self.board is not None:
            from twiddle._board import BoardView

            view = BoardView(self.board, self.number, self.board_version, self.others)
            trial._live_curves = lambda: view.others(trial._intermediate)
        result = TaskResult(state=TrialState.FAIL, worker=worker_id())
        try:
            arg: Any = trial if self.call_style == "trial" else dict(trial.params)
            raw = fn(arg)
        except TrialPruned as err:
            result.state = TrialState.PRUNED
            result.fail_reason = str(err) or None
            last = max(trial._intermediate) if trial._intermediate else None
            result.value = None if last is None else trial._intermediate[last]
        except Exception as err:
            result.fail_reason = format_exception(err)
        else:
            value, reason = check_value(raw)
            if reason is None:
                result.state = TrialState.COMPLETE
                result.value = value
            else:
                result.fail_reason = reason
        result.params = dict(trial.params)
        result.distributions = dict(trial._distributions) or None
        result.intermediate = dict(trial._intermediate)
        result.user_attrs = dict(trial._user_attrs)
        return result
