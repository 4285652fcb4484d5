"""Samplers: what configuration to try next."""

from __future__ import annotations

from twiddle._errors import InvalidParameterError
from twiddle._samplers._base import History, Sampler
from twiddle._samplers._simple import GridSampler, RandomSampler, SobolSampler
from twiddle._samplers._tpe import TPESampler

__all__ = [
    "GridSampler",
    "History",
    "RandomSampler",
    "Sampler",
    "SobolSampler",
    "TPESampler",
    "make_sampler",
]

_NAMED: dict[str, type[Sampler]] = {
    "random": RandomSampler,
    "grid": GridSampler,
    "sobol": SobolSampler,
    "tpe": TPESampler,
}


def make_sampler(spec: str | Sampler) -> Sampler:
    """A sampler from a name ("auto", "random", "grid", "sobol", "tpe") or a Sampler instance.

    "auto" is Sobol for now; the model-based samplers will take over after the
    initial design once they exist.
    """
    if isinstance(spec, Sampler):
        return spec
    if isinstance(spec, str):
        if spec == "auto":
            return SobolSampler()
        if spec in _NAMED:
            return _NAMED[spec]()
    raise InvalidParameterError(
        "The 'sampler' parameter of Study must be one of 'auto', 'random', 'grid', 'sobol', "
        f"'tpe' or a twiddle Sampler instance. Got {spec!r} instead."
    )
