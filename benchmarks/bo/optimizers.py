"""Optimisers under test, behind one ask/tell interface that times the optimiser alone.

Names:

* ``twiddle-<sampler>``: ``twiddle.Study(storage="memory", space=..., sampler=<sampler>,
  seed=s)`` driven by ``study.ask()`` / ``study.tell()``. Any name that
  ``twiddle._samplers.make_sampler`` knows works ("random", "sobol", "tpe", "gp", ...);
  an unknown one is reported as unavailable and skipped. On a cross-validated task
  the trial is told its per-fold losses too (``study.tell(trial, loss,
  fold_scores=...)``, as :func:`twiddle.tune` records them), so a sampler sees what it
  would see inside ``tune`` (the GP's default uses them only for trials stopped early,
  which the harness never does; ``GPSampler(fold_noise="se")`` uses them for every
  trial); ``twiddle-<sampler>@mean`` is told the mean loss only.
  ``twiddle-<sampler>:<key>=<value>:...`` sets options of the sampler, for measuring a
  variant beside the default under its own name (see :func:`twiddle_sampler`).
* ``optuna-tpe``, ``optuna-gp``, ``optuna-random``: Optuna's ``TPESampler(seed=s)``,
  ``GPSampler(seed=s)`` and ``RandomSampler(seed=s)``, all with their defaults, on an
  in-memory study driven by ``study.ask()`` and the ``trial.suggest_*`` calls that
  map the twiddle space onto Optuna distributions faithfully (log, int, step,
  categorical, conditions).

Timing: ``ask_s`` is the wall time of everything the library does to produce the next
configuration (twiddle: ``study.ask()``, which calls the sampler and stores the trial;
Optuna: ``study.ask()`` plus the ``suggest_*`` calls, where Optuna's samplers do their
work); ``tell_s`` the time of ``study.tell``; for twiddle ``suggest_s`` is the time
inside the sampler's own ``suggest`` (without storage). The objective is never timed
here.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
import warnings
from collections.abc import Mapping
from typing import Any

from twiddle import Categorical, Float, Int, Space

#: Every optimiser the harness knows, in report order.
ALL_OPTIMIZERS = (
    "twiddle-gp",
    "twiddle-tpe",
    "twiddle-sobol",
    "twiddle-random",
    "optuna-gp",
    "optuna-tpe",
    "optuna-random",
)
OPTUNA_SAMPLERS = ("tpe", "gp", "random")
#: suffix of a twiddle optimiser told only the mean loss of a cross-validated task,
#: not its per-fold losses (``twiddle-gp@mean``)
MEAN_ONLY = "@mean"
_counter = itertools.count()


def resolve_optimizers(spec: str) -> list[str]:
    """Optimiser names from a comma list; "all", "twiddle" and "optuna" are groups."""
    out: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part == "all":
            names = list(ALL_OPTIMIZERS)
        elif part in ("twiddle", "optuna"):
            names = [n for n in ALL_OPTIMIZERS if n.startswith(part + "-")]
        elif part.startswith(("twiddle-", "optuna-")):
            names = [part]
        else:
            raise ValueError(
                f"Unknown optimiser {part!r}: use twiddle-<sampler> (e.g. twiddle-gp), "
                f"optuna-<{'|'.join(OPTUNA_SAMPLERS)}>, 'twiddle', 'optuna' or 'all'."
            )
        out.extend(n for n in names if n not in out)
    return out


def _option_value(text: str) -> Any:
    """``"8"`` -> 8, ``"-6.5"`` -> -6.5, ``"true"``/``"False"`` -> a bool, ``"none"`` ->
    None; anything else stays a string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def twiddle_sampler(spec: str, space: Space) -> Any:
    """A twiddle sampler from ``<name>[:<key>=<value>]...`` (no ``twiddle-`` prefix).

    Each key is, in this order of lookup:

    * a field of :class:`twiddle._gp.Hyperprior` (``nu2_loc``, ``ell_scale``, ...;
      GP only): that field of the default hyperprior for the space's dimension;
    * a parameter of the sampler's ``__init__`` (``fit``, ``n_startup``, ...);
    * a tuning attribute the sampler sets in ``__init__`` (``acq_maxiter``, ...), given
      a value of the type it has (an int for an int).

    ``gp:fit=mcmc:nu2_loc=-8:nu2_scale=2`` is the GP with slice-sampled
    hyperparameters and a noise-variance prior LogNormal(-8, 2). In an optimiser name
    the ``@mean`` suffix goes last: ``twiddle-gp:fit=mcmc@mean``.

    Raises
    ------
    ValueError
        An option not of the form key=value, a key given twice, a key the sampler does
        not have, or a value of the wrong type.
    """
    import dataclasses
    import inspect

    from twiddle._gp import Hyperprior
    from twiddle._samplers import make_sampler

    name, *parts = spec.split(":")
    sampler = make_sampler(name)
    if not parts:
        return sampler
    prior_fields = {f.name for f in dataclasses.fields(Hyperprior)}
    accepted = set(inspect.signature(type(sampler).__init__).parameters) - {"self"}
    kwargs: dict[str, Any] = {}
    prior: dict[str, Any] = {}
    attrs: dict[str, Any] = {}
    seen: set[str] = set()
    for part in parts:
        key, eq, text = part.partition("=")
        if not eq or not key:
            raise ValueError(f"Sampler option {part!r} of {spec!r} is not of the form key=value.")
        if key in seen:
            raise ValueError(f"Sampler option {key!r} is given twice in {spec!r}.")
        seen.add(key)
        if key == "hyperprior":
            raise ValueError(
                f"Sampler option 'hyperprior' of {spec!r} cannot be given as text: set its "
                "fields instead (nu2_loc=-8:nu2_scale=2)."
            )
        value = _option_value(text)
        current = getattr(sampler, key, None)
        if name == "gp" and key in prior_fields:
            if not _number(value) or not math.isfinite(value):
                raise ValueError(
                    f"Sampler option {key!r} of {spec!r} needs a finite number, not {text!r}."
                )
            prior[key] = float(value)
        elif key in accepted:
            kwargs[key] = value
        elif not key.startswith("_") and hasattr(sampler, key) and not callable(current):
            if _number(current) and not (
                _number(value) and (isinstance(current, float) or isinstance(value, int))
            ):
                kind = type(current).__name__
                raise ValueError(
                    f"Sampler option {key!r} of {spec!r} needs {'an' if kind == 'int' else 'a'} "
                    f"{kind}, not {text!r}."
                )
            attrs[key] = type(current)(value) if _number(current) else value
        else:
            kinds = [f"a parameter of {type(sampler).__name__}", "one of its tuning attributes"]
            if name == "gp":
                kinds.append("a Hyperprior field")
            raise ValueError(
                f"Sampler {name!r} has no option {key!r}: use "
                + ", ".join(kinds[:-1])
                + f" or {kinds[-1]}."
            )
    if prior:
        kwargs["hyperprior"] = dataclasses.replace(Hyperprior.default(len(space)), **prior)
    sampler = type(sampler)(**kwargs)
    for key, value in attrs.items():
        setattr(sampler, key, value)
    return sampler


def unavailable(name: str) -> str | None:
    """Why optimiser ``name`` cannot run here, or None if it can."""
    lib, _, sampler = name.partition("-")
    if lib == "twiddle":
        spec = sampler.removesuffix(MEAN_ONLY)
        try:
            twiddle_sampler(spec, Space({"x": Float(0.0, 1.0)}))
        except Exception as err:
            if ":" in spec and isinstance(err, ValueError):
                return str(err)
            return f"twiddle has no sampler {spec!r} yet ({type(err).__name__})"
        return None
    if lib == "optuna":
        if sampler not in OPTUNA_SAMPLERS:
            return f"the harness has no Optuna sampler {sampler!r}"
        try:
            import optuna  # noqa: F401
        except ImportError:
            return "Optuna is not installed (pip install -e '.[bench]')"
        if sampler == "gp":
            try:
                import torch  # noqa: F401
            except ImportError:
                return "Optuna's GPSampler needs torch (pip install -e '.[bench]')"
        return None
    return f"unknown library {lib!r}"


def limit_threads(n: int = 1, torch_too: bool = False) -> None:
    """Keep BLAS/OpenMP, and torch if it is loaded (or ``torch_too``), to ``n`` threads."""
    import sys

    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    if not torch_too and "torch" not in sys.modules:
        return
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(n)
    # fails if already set, or once torch has run parallel work in this process
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(n)


class Optimizer:
    """An optimiser on one space with one seed: ask a configuration, tell its loss."""

    name: str
    #: whether ``tell`` makes use of the per-fold losses of a cross-validated loss
    uses_folds: bool = False

    def ask(self) -> tuple[Any, dict[str, Any], float, float | None]:
        """``(handle, config, ask_s, suggest_s)``."""
        raise NotImplementedError

    def tell(self, handle: Any, loss: float | None, folds: list[float] | None = None) -> float:
        """Report ``loss`` (None: the evaluation failed), and the per-fold losses whose
        mean it is when the problem has them. Returns ``tell_s``."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------
# twiddle
# ---------------------------------------------------------------------------------
class TwiddleOptimizer(Optimizer):
    def __init__(self, sampler: str, space: Space, seed: int, folds: bool = True) -> None:
        import twiddle

        self.name = f"twiddle-{sampler}" + ("" if folds else MEAN_ONLY)
        self.uses_folds = folds
        inner = twiddle_sampler(sampler, space)
        self._suggest_s = 0.0
        original = inner.suggest

        def timed_suggest(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._suggest_s += time.perf_counter() - t0

        # an instance attribute: the sampler keeps its class (the study may look at it)
        inner.suggest = timed_suggest  # type: ignore[method-assign]
        self.study = twiddle.Study(
            name=f"bench-{next(_counter)}",
            storage="memory",
            direction="minimize",
            space=space,
            sampler=inner,
            seed=seed,
        )

    def ask(self) -> tuple[Any, dict[str, Any], float, float | None]:
        self._suggest_s = 0.0
        t0 = time.perf_counter()
        trial = self.study.ask()
        ask_s = time.perf_counter() - t0
        return trial, trial.params, ask_s, self._suggest_s

    def tell(self, handle: Any, loss: float | None, folds: list[float] | None = None) -> float:
        t0 = time.perf_counter()
        if loss is None:
            self.study.tell(handle, state="FAIL", fail_reason="evaluation failed")
        else:
            self.study.tell(handle, loss, fold_scores=folds if self.uses_folds else None)
        return time.perf_counter() - t0


# ---------------------------------------------------------------------------------
# Optuna
# ---------------------------------------------------------------------------------
def _primitive(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def optuna_distribution(dim: Any) -> Any:
    """The Optuna distribution of a twiddle dimension (same values, same scale).

    Categorical choices that Optuna cannot hold (tuples, lists) become their JSON
    text; :func:`from_optuna_value` maps them back.
    """
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(dim, Float):
        if dim.step is not None:
            n = int(dim.cardinality)
            high = dim.cast(dim.low + (n - 1) * dim.step)
            return FloatDistribution(dim.low, high, step=dim.step)
        return FloatDistribution(dim.low, dim.high, log=dim.log)
    if isinstance(dim, Int):
        return IntDistribution(dim.low, dim.high, log=dim.log, step=dim.step)
    if isinstance(dim, Categorical):
        choices = list(dim.choices)
        if all(_primitive(c) for c in choices):
            return CategoricalDistribution(choices)
        return CategoricalDistribution([json.dumps(c) for c in choices])
    raise TypeError(f"No Optuna distribution for {dim!r}.")


def from_optuna_value(dim: Any, value: Any) -> Any:
    if isinstance(dim, Categorical) and not all(_primitive(c) for c in dim.choices):
        return next(c for c in dim.choices if json.dumps(c) == value)
    return dim.cast(value)


def space_to_optuna(space: Space) -> dict[str, Any]:
    """``{name: optuna distribution}`` for every dimension of ``space``."""
    return {name: optuna_distribution(space[name]) for name in space}


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


class OptunaOptimizer(Optimizer):
    def __init__(self, sampler: str, space: Space, seed: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        optuna.logging.disable_default_handler()
        self.name = f"optuna-{sampler}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning and friends
            if sampler == "tpe":
                s: Any = optuna.samplers.TPESampler(seed=seed)
            elif sampler == "gp":
                s = optuna.samplers.GPSampler(seed=seed)
            elif sampler == "random":
                s = optuna.samplers.RandomSampler(seed=seed)
            else:
                raise ValueError(f"No Optuna sampler {sampler!r} in the harness.")
        self.space = space
        self.distributions = space_to_optuna(space)
        self.study = optuna.create_study(direction="minimize", sampler=s)

    def ask(self) -> tuple[Any, dict[str, Any], float, float | None]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            trial = self.study.ask()
            # define-by-run, parents before children, so conditional spaces map too
            config: dict[str, Any] = {}
            pending = list(self.space)
            progress = True
            while pending and progress:
                progress = False
                for name in list(pending):
                    if self.space.is_active(name, config):
                        value = _suggest(trial, name, self.distributions[name])
                        config[name] = from_optuna_value(self.space[name], value)
                        pending.remove(name)
                        progress = True
            ask_s = time.perf_counter() - t0
        ordered = {n: config[n] for n in self.space if n in config}
        return trial, ordered, ask_s, None

    def tell(self, handle: Any, loss: float | None, folds: list[float] | None = None) -> float:
        # Optuna's samplers have no use for per-fold losses: only the mean is told
        from optuna.trial import TrialState

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            if loss is None:
                self.study.tell(handle, state=TrialState.FAIL)
            else:
                self.study.tell(handle, loss)
            return time.perf_counter() - t0


def make_optimizer(name: str, space: Space, seed: int) -> Optimizer:
    """The optimiser called ``name`` on ``space`` with ``seed``."""
    lib, _, sampler = name.partition("-")
    if lib == "twiddle":
        folds = not sampler.endswith(MEAN_ONLY)
        return TwiddleOptimizer(sampler.removesuffix(MEAN_ONLY), space, seed, folds=folds)
    if lib == "optuna":
        return OptunaOptimizer(sampler, space, seed)
    raise ValueError(f"Unknown optimiser {name!r}.")


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def json_safe(config: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration with tuples as lists (JSON round trip)."""
    return json.loads(json.dumps(dict(config)))
