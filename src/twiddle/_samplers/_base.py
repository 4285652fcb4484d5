"""Sampler protocol: *what* to try next.

A sampler is pure: it sees the space, a read-only :class:`History` and an
explicit random generator, and returns configurations. It never touches the
study, the storage or the executor.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from twiddle._space import Config, Space
from twiddle._trial import FrozenTrial, TrialState


@dataclasses.dataclass(frozen=True)
class History:
    """Read-only view of a study for a sampler.

    Attributes
    ----------
    trials : sequence of FrozenTrial
        Finished trials (COMPLETE, PRUNED, FAIL), by number.
    pending : sequence of FrozenTrial
        Trials being evaluated or queued (RUNNING, WAITING): a sampler should not
        propose them again, and a model-based sampler treats them as pending
        observations (fantasies).
    direction : str
        "minimize" or "maximize".
    seed : int
        Study-level entropy, fixed for the life of the study, for samplers that
        keep one sequence across calls (Sobol scrambling, grid order).

    Notes
    -----
    A study passes ``trials`` and ``pending`` as sequences that list the trials only
    when first read (their ``len`` is known without it), so a sampler that does not
    read them costs nothing per trial. Read them during ``suggest``; do not keep the
    History for later, and use ``list(...)`` where a list is needed.
    """

    trials: Sequence[FrozenTrial]
    pending: Sequence[FrozenTrial]
    direction: str
    seed: int

    @property
    def n_seen(self) -> int:
        """Finished plus pending trials."""
        return len(self.trials) + len(self.pending)

    def complete(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state is TrialState.COMPLETE and t.value is not None]

    def observations(self, space: Space) -> tuple[np.ndarray, np.ndarray]:
        """Encoded complete trials and their values, signed so that lower is better.

        Returns
        -------
        X : array of shape (n, d)
            Unit-cube coordinates (NaN for inactive dimensions).
        y : array of shape (n,)
            Objective values; negated for "maximize" studies.
        """
        done = [t for t in self.complete() if t.value is not None and math.isfinite(t.value)]
        if not done:
            return np.empty((0, len(space))), np.empty(0)
        X = space.encode([t.params for t in done])
        sign = -1.0 if self.direction == "maximize" else 1.0
        y = sign * np.array([t.value for t in done], dtype=float)
        return X, y


class Sampler(abc.ABC):
    """Base class of samplers.

    Subclasses implement :meth:`suggest`. A sampler may return fewer than ``n``
    configurations; an empty list means the space is exhausted and the study stops.
    """

    #: Short name recorded on each trial ("random", "grid", "sobol", ...).
    name: str = "sampler"

    @abc.abstractmethod
    def suggest(
        self, space: Space, history: History, rng: np.random.Generator, n: int = 1
    ) -> list[Config]:
        """Propose up to ``n`` configurations of ``space``.

        Parameters
        ----------
        space : Space
        history : History
            Finished and pending trials of the study.
        rng : numpy.random.Generator
            The only source of randomness the sampler may use.
        n : int
            How many configurations to propose at once (distinct from each other).
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
