"""The learning curves of a run's trials, shared live with the trials still running.

A learning-curve scheduler (:class:`~twiddle.SuccessiveHalving`, Hyperband, the median
rule) decides whether a trial goes on by comparing its curve with the other trials'
curves. Without this module a trial sees only the snapshot handed to its task at
dispatch, so with several workers the trials that run side by side never see each
other: the first trials of a run all go on, and asynchronous successive halving loses
the comparisons it was designed to make (Li et al., 2020).

:class:`CurveBoard`, kept by the driver, holds every curve of the run: the finished
trials' final curves, put there by the driver loop, and the running trials' curves so
far, sent by the trials themselves each time ``should_prune()`` needs a decision (for
successive halving, when the trial reaches a rung). Each change gets a version
number. :class:`BoardView`, on the task's side, starts from the snapshot and its
version and, at each question, sends its own curve and receives only the curves
changed since the version it holds, through :func:`twiddle._execution.call_driver`:
directly in the driver's process, on the worker's pipe in a worker of twiddle's
process pool, and over TCP to the driver's call server from any other executor's
workers (a Dask cluster, a standard-library pool). Where the task cannot reach the
driver even so (a firewall, a driver address the workers cannot route to) the view
keeps the snapshot it was given.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from twiddle._execution import call_driver, register_handler, unregister_handler
from twiddle._schedulers import LearningCurve
from twiddle._trial import TrialState

__all__ = ["BoardView", "CurveBoard"]

# An answer of the board: (version, {number: curve or None}); None means "forget it".
_Changes = tuple[int, dict[int, LearningCurve | None]]


class CurveBoard:
    """The driver's record of a run's learning curves (thread-safe).

    Parameters
    ----------
    curves : sequence of LearningCurve
        The curves known when the run starts (the study's finished trials); each must
        carry its trial's number.
    remote : bool, default False
        Also answer trials running in processes the driver did not start (a Dask
        worker, a standard-library pool), through the driver's call server.
    """

    def __init__(self, curves: Sequence[LearningCurve] = (), *, remote: bool = False) -> None:
        self._lock = threading.Lock()
        self._version = 0
        # number -> (version of its last change, curve or None once forgotten)
        self._entries: dict[int, tuple[int, LearningCurve | None]] = {}
        for curve in curves:
            if curve.number is not None:
                self._put(curve.number, curve)
        self.key: str | None = register_handler(self._answer, remote=remote)

    def close(self) -> None:
        """Stop answering running trials (they keep what they last received)."""
        if self.key is not None:
            unregister_handler(self.key)
            self.key = None

    def _put(self, number: int, curve: LearningCurve | None) -> None:
        self._version += 1
        self._entries[number] = (self._version, curve)

    def finish(self, number: int, values: Mapping[int, float], state: TrialState) -> None:
        """Record a finished trial's final curve (an empty one removes its running curve)."""
        curve = LearningCurve(dict(values), state, number) if values else None
        with self._lock:
            if curve is not None or number in self._entries:
                self._put(number, curve)

    def snapshot(self, number: int) -> tuple[int, list[LearningCurve]]:
        """The version and the curves of the trials other than ``number``."""
        with self._lock:
            curves = [c for n, (_, c) in self._entries.items() if c is not None and n != number]
            return self._version, curves

    def _answer(self, request: tuple[int, Mapping[int, float], int]) -> _Changes:
        number, values, since = request
        with self._lock:
            previous = self._entries.get(number)
            running = previous is None or (
                previous[1] is not None and previous[1].state is TrialState.RUNNING
            )
            if values and running:  # never overwrite a final curve with a running one
                self._put(number, LearningCurve(dict(values), TrialState.RUNNING, number))
            changed = {n: c for n, (v, c) in self._entries.items() if v > since and n != number}
            return self._version, changed


class BoardView:
    """A running trial's view of the board: the snapshot, kept up to date when possible.

    Parameters
    ----------
    key : str
        The board's handler key (:attr:`CurveBoard.key`).
    number : int
        The trial's number.
    version : int
        The board's version when ``others`` was taken.
    others : sequence of LearningCurve
        The snapshot of the other trials' curves taken at dispatch (from
        :meth:`CurveBoard.snapshot`, so each carries its trial's number).
    """

    def __init__(
        self, key: str, number: int, version: int, others: Sequence[LearningCurve]
    ) -> None:
        self.key, self.number, self.version = key, number, version
        self._curves: dict[int | None, LearningCurve] = {c.number: c for c in others}
        self.live = True  # False once the driver could not be reached

    def others(self, values: Mapping[int, float]) -> list[LearningCurve]:
        """Send this trial's curve so far; the other trials' curves as now known."""
        if self.live:
            # plain ints and floats: the driver's call server accepts plain data only
            curve = {int(step): float(v) for step, v in values.items()}
            found, answer = call_driver(self.key, (int(self.number), curve, int(self.version)))
            if found:
                self.version, changed = answer
                for n, curve in changed.items():
                    if curve is None:
                        self._curves.pop(n, None)
                    else:
                        self._curves[n] = curve
            else:
                self.live = False
        return list(self._curves.values())
