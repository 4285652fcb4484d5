"""Exception hierarchy: one root, each error also a fitting builtin."""

from __future__ import annotations


class TwiddleError(Exception):
    """Root of every error twiddle raises on purpose."""


class InvalidParameterError(TwiddleError, ValueError):
    """A function or constructor argument is out of its allowed range or type."""


class InvalidSpaceError(TwiddleError, ValueError):
    """A search space or one of its dimensions is malformed."""


class StudyMismatchError(TwiddleError, ValueError):
    """A stored study does not match the one being opened (direction, space)."""


class StorageError(TwiddleError, RuntimeError):
    """The storage cannot be opened or used; nothing stored was changed."""


class AllTrialsFailedError(TwiddleError, RuntimeError):
    """Every trial of an optimisation failed, so there is no result to report."""


class SpecError(TwiddleError, ValueError):
    """A study spec file (TOML) is malformed."""


class WorkerCrashedError(TwiddleError, RuntimeError):
    """The process running a task died before returning (killed, segfault, out of memory)."""


class TrainingDivergedError(TwiddleError, ArithmeticError):
    """Training blew up (the loss became NaN, infinite or far larger than at first)."""


class TrialPruned(TwiddleError):  # named as an event, like StopIteration
    """Raise inside an objective to stop the trial early; it is recorded as PRUNED."""
