"""Random, grid and scrambled-Sobol samplers."""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np

from twiddle._errors import InvalidSpaceError
from twiddle._samplers._base import History, Sampler
from twiddle._space import Config, Space


def _key(config: Config) -> str:
    return json.dumps(config, sort_keys=True)


class RandomSampler(Sampler):
    """Independent uniform draws (log-uniform on log dimensions)."""

    name = "random"

    def suggest(
        self, space: Space, history: History, rng: np.random.Generator, n: int = 1
    ) -> list[Config]:
        return [space.sample(rng) for _ in range(n)]


class GridSampler(Sampler):
    """Every configuration of a finite space exactly once; then the study stops.

    Parameters
    ----------
    shuffle : bool, default True
        Visit the grid in an order fixed by the study seed (so a budget smaller than
        the grid still spreads over it); ``False`` visits it in lexicographic order.
    """

    name = "grid"

    def __init__(self, *, shuffle: bool = True) -> None:
        self.shuffle = bool(shuffle)
        self._cache: tuple[str, int, list[Config]] | None = None

    def _grid(self, space: Space, seed: int) -> list[Config]:
        tag = _key(space.to_json())
        if self._cache is not None and self._cache[0] == tag and self._cache[1] == seed:
            return self._cache[2]
        try:
            grid = space.grid()
        except InvalidSpaceError as err:
            raise InvalidSpaceError(f"GridSampler needs a finite space: {err}") from None
        if self.shuffle:
            order = np.random.default_rng(seed).permutation(len(grid))
            grid = [grid[i] for i in order]
        self._cache = (tag, seed, grid)
        return grid

    def suggest(
        self, space: Space, history: History, rng: np.random.Generator, n: int = 1
    ) -> list[Config]:
        grid = self._grid(space, history.seed)
        seen = {_key(t.params) for t in history.trials}
        seen.update(_key(t.params) for t in history.pending)
        out: list[Config] = []
        for c in grid:
            if _key(c) not in seen:
                out.append(dict(c))
                if len(out) == n:
                    break
        return out

    def __repr__(self) -> str:
        return f"GridSampler(shuffle={self.shuffle})"


class SobolSampler(Sampler):
    """Scrambled Sobol points: even coverage of the unit cube for the first trials.

    The k-th trial of a study takes the k-th point of one scrambled sequence seeded by
    the study, so the design stays low-discrepancy across resumed runs.
    """

    name = "sobol"

    def __init__(self) -> None:
        self._engine: tuple[int, int, Any] | None = None

    def suggest(
        self, space: Space, history: History, rng: np.random.Generator, n: int = 1
    ) -> list[Config]:
        from scipy.stats import qmc  # scipy.stats is slow to import

        d = len(space)
        start = history.n_seen
        key = (d, history.seed)
        if self._engine is None or self._engine[:2] != key or self._engine[2].num_generated > start:
            self._engine = (*key, qmc.Sobol(d, scramble=True, seed=history.seed))
        engine = self._engine[2]
        if engine.num_generated < start:
            engine.fast_forward(start - engine.num_generated)
        with warnings.catch_warnings():
            # balance properties need powers of two; in a sequential study that is moot
            warnings.simplefilter("ignore", UserWarning)
            u = engine.random(n)
        return space.decode_many(u)
