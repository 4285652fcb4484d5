"""Samplers: what configuration to try next."""

from __future__ import annotations

from typing import Any

from twiddle._errors import InvalidParameterError
from twiddle._samplers._auto import AutoSampler
from twiddle._samplers._base import History, Sampler
from twiddle._samplers._simple import GridSampler, RandomSampler, SobolSampler
from twiddle._samplers._tpe import TPESampler

__all__ = [
    "AutoSampler",
    "GPSampler",
    "GridSampler",
    "History",
    "RandomSampler",
    "Sampler",
    "SobolSampler",
    "TPESampler",
    "make_sampler",
]

_NAMED: dict[str, type[Sampler]] = {
    "auto": AutoSampler,
    "random": RandomSampler,
    "grid": GridSampler,
    "sobol": SobolSampler,
    "tpe": TPESampler,
}


#: Every name make_sampler accepts.
SAMPLER_NAMES: tuple[str, ...] = ("auto", "gp", "tpe", "sobol", "random", "grid")


def make_sampler(spec: str | Sampler) -> Sampler:
    """A sampler from a name or a Sampler instance.

    Names: "auto" (:class:`AutoSampler`: Sobol, then GP, then TPE), "gp", "tpe",
    "sobol", "random", "grid".
    """
    if isinstance(spec, Sampler):
        return spec
    if isinstance(spec, str):
        if spec == "gp":
            from twiddle._samplers._gp import GPSampler

            return GPSampler()
        if spec in _NAMED:
            return _NAMED[spec]()
    raise InvalidParameterError(
        "The 'sampler' parameter of Study must be one of 'auto', 'gp', 'tpe', 'sobol', "
        f"'random', 'grid' or a twiddle Sampler instance. Got {spec!r} instead."
    )


def __getattr__(name: str) -> Any:
    # GPSampler pulls in scipy.optimize; import it only when asked for
    if name == "GPSampler":
        from twiddle._samplers._gp import GPSampler

        return GPSampler
    raise AttributeError(name)
