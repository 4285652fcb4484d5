"""Studies: a named, persisted sequence of trials, and the driver loop that runs it.

The driver (this process) asks the sampler, dispatches tasks to an executor,
tells results back and is the only writer to storage. Workers compute and return.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import inspect
import json
import os
import pickle
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, overload

import numpy as np

from twiddle._errors import (
    AllTrialsFailedError,
    InvalidParameterError,
    InvalidSpaceError,
    StudyMismatchError,
    WorkerCrashedError,
)
from twiddle._samplers import GridSampler, History, Sampler, make_sampler
from twiddle._schedulers import (
    CurveScheduler,
    LearningCurve,
    StandingDecisions,
    make_curve_scheduler,
)
from twiddle._space import Categorical, Config, Dimension, Float, Int, Space, dimension_from_json
from twiddle._storage import Storage, get_storage
from twiddle._tasks import ObjectiveTask, Shipment, TaskResult, check_value, format_exception
from twiddle._trial import FrozenTrial, TrialState, json_safe_params
from twiddle._validation import check_choice, check_float, check_int, seed_entropy

if TYPE_CHECKING:
    from twiddle._board import CurveBoard

DIRECTIONS = ("minimize", "maximize")
#: A trial re-queued after an interruption is tried at most this many times in all.
MAX_ATTEMPTS = 3
#: Seconds a RUNNING trial's lease lasts; the driver renews it while it is alive.
LEASE_SECONDS = 300.0
_RENEW_EVERY = 60.0


def _driver_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _dims_json(space: Space | None) -> dict[str, Any] | None:
    """The space's dimensions as JSON, for a trial: derived parameters (which may be
    Python functions, not rebuildable from JSON) are the estimator's business, not the
    objective's."""
    return None if space is None else {"dims": space.to_json()["dims"]}


def _foreign(executor: cf.Executor | None) -> bool:
    """Whether ``executor`` runs tasks in processes that cannot call back on a pipe.

    twiddle's process pool gives its workers a pipe to the driver and the others run
    tasks in the driver's process; any other executor (a Dask client's, a
    standard-library process pool) may run them elsewhere, where calls to the driver
    go through its call server (:func:`twiddle._execution.register_handler`).
    """
    from twiddle._execution import InlineExecutor, ProcessExecutor

    local = (ProcessExecutor, InlineExecutor, cf.ThreadPoolExecutor)
    return executor is not None and not isinstance(executor, local)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_last_space: tuple[Mapping[str, Any], Space] | None = None


def _space_from_json(data: Mapping[str, Any]) -> Space:
    """``Space.from_json(data)``, reusing the Space of the previous call on the same object.

    The tasks of a study with a fixed space share one JSON description (which nothing
    changes), so in the driver's process each trial would rebuild the same space from
    it; a space is immutable, so one object serves them all.
    """
    global _last_space
    last = _last_space
    if last is not None and last[0] is data:
        return last[1]
    space = Space.from_json(data)
    _last_space = (data, space)
    return space


# ----------------------------------------------------------------------------------
# Trial: the handle an objective receives
# ----------------------------------------------------------------------------------
class Trial:
    """Handle given to an objective: suggests hyperparameters and records a learning curve.

    Objectives receive it as their argument (define-by-run). ``suggest_*`` return the
    value the sampler proposed for that name when it fits the requested range, and
    otherwise draw one from the trial's own seeded generator, so a trial is
    reproducible wherever it runs.
    """

    def __init__(
        self,
        number: int,
        proposal: Mapping[str, Any],
        seed: int,
        space_json: Mapping[str, Any] | None,
    ) -> None:
        # Trials are made by Study.ask() and Study.optimize(), not by users.
        self.number = number
        self._proposal = dict(proposal)
        self._seed = seed
        self._rng: np.random.Generator | None = None
        self._space = _space_from_json(space_json) if space_json is not None else None
        self._params: dict[str, Any] = (
            self._space.validate(proposal) if self._space is not None else {}
        )
        self._distributions: dict[str, Any] = {}
        self._intermediate: dict[int, float] = {}
        self._user_attrs: dict[str, Any] = {}
        # Learning-curve scheduler, the other trials' curves it compares with, direction.
        self._scheduler: CurveScheduler | None = None
        self._others: Sequence[LearningCurve] = ()
        # an ask()-driven trial reads the study's curves when it asks, not a snapshot
        self._live_curves: Callable[[], Sequence[LearningCurve]] | None = None
        self._direction = "minimize"
        self._decisions: StandingDecisions | None = None  # where a "go on" was decided

    @classmethod
    def _for_task(
        cls,
        number: int,
        proposal: Mapping[str, Any],
        seed: int,
        space_json: Mapping[str, Any] | None,
        scheduler: CurveScheduler | None = None,
        others: Sequence[LearningCurve] = (),
        direction: str = "minimize",
    ) -> Trial:
        trial = cls(number, proposal, seed, space_json)
        trial._scheduler, trial._others, trial._direction = scheduler, others, direction
        return trial

    @property
    def params(self) -> dict[str, Any]:
        """Hyperparameters suggested so far (name -> value)."""
        return dict(self._params)

    @property
    def user_attrs(self) -> dict[str, Any]:
        return dict(self._user_attrs)

    def _suggest(self, name: str, dim: Dimension) -> Any:
        if not isinstance(name, str) or not name:
            raise InvalidParameterError(
                "The 'name' parameter of Trial.suggest must be a non-empty str. "
                f"Got {name!r} instead."
            )
        if self._space is not None:
            if name not in self._space:
                raise InvalidSpaceError(
                    f"{name!r} is not a dimension of this study's space {list(self._space)}; "
                    "add it to the space or create the study without one."
                )
            if name not in self._params:
                raise InvalidSpaceError(f"{name!r} is inactive in this configuration.")
            return self._params[name]
        spec = dim.to_json()
        if name in self._distributions:
            if self._distributions[name] != spec:
                raise InvalidSpaceError(
                    f"{name!r} was already suggested in this trial as {self._distributions[name]}; "
                    f"it cannot be suggested again as {spec}."
                )
            return self._params[name]
        if name in self._proposal and dim.contains(self._proposal[name]):
            value = dim.cast(self._proposal[name])
        else:
            if self._rng is None:
                self._rng = np.random.default_rng([self._seed, self.number, 1])
            value = dim.decode(float(self._rng.random()))
        self._params[name] = value
        self._distributions[name] = spec
        return value

    def suggest_float(
        self, name: str, low: float, high: float, *, log: bool = False, step: float | None = None
    ) -> float:
        """A float in ``[low, high]`` (log scale if ``log``; on a grid if ``step``)."""
        return float(self._suggest(name, Float(low, high, log=log, step=step)))

    def suggest_int(
        self, name: str, low: int, high: int, *, log: bool = False, step: int = 1
    ) -> int:
        """A Python int in ``[low, high]`` (log scale if ``log``)."""
        return int(self._suggest(name, Int(low, high, log=log, step=step)))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        """One of ``choices``, returned as the very object given."""
        return self._suggest(name, Categorical(choices))

    def report(self, value: float, step: int) -> None:
        """Record an intermediate value (e.g. validation loss after epoch ``step``)."""
        step = check_int(step, "step", "Trial.report", minimum=0)  # type: ignore[assignment]
        v, reason = check_value(value)
        if reason is not None:
            raise InvalidParameterError(
                f"The 'value' parameter of Trial.report must be a finite number. Got {value!r}."
            )
        assert v is not None and step is not None
        self._intermediate[step] = v

    def should_prune(self) -> bool:
        """Whether the study's scheduler asks this trial to stop now (False without one).

        The scheduler given to ``Study.optimize(scheduler=...)`` (or ``Study.ask``)
        applies its rule to this trial's reported values and to the other trials' curves
        as the driver knows them now, running trials' included (where the trial's
        worker cannot reach the driver, for instance with ``TWIDDLE_DRIVER_HOST=off``
        on a Dask cluster: as known when the trial was dispatched). A decision to go
        on stands until the rule's next decision point (for successive halving, the
        next rung). On True, raise
        :class:`twiddle.TrialPruned` (or, after ``ask``, tell the trial
        ``state="PRUNED"``): the trial is then PRUNED with the values it reported.
        """
        if self._scheduler is None:
            return False
        if self._decisions is None or self._decisions.scheduler is not self._scheduler:
            self._decisions = StandingDecisions(self._scheduler)
        live = self._live_curves
        decision = self._decisions.decide(
            self._intermediate,
            live if live is not None else lambda: self._others,
            self._direction,
            number=self.number,
        )
        return decision is not None and bool(decision["stop"])

    def set_user_attr(self, key: str, value: Any) -> None:
        """Attach a JSON-serialisable annotation to the trial."""
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise InvalidParameterError(
                f"The 'value' parameter of Trial.set_user_attr must be JSON-serialisable. "
                f"Got {value!r} instead."
            ) from None
        self._user_attrs[str(key)] = value

    def __repr__(self) -> str:
        return f"Trial(number={self.number}, params={self._params!r})"


# ----------------------------------------------------------------------------------
# Evaluators: how a trial becomes tasks and tasks become a result
# ----------------------------------------------------------------------------------
class Evaluator(Protocol):
    """How the driver turns a trial into tasks, and the tasks' results into a trial outcome.

    Two optional methods are called after each task result of a trial while some of
    its tasks are still to come: ``partial(trial, results) -> dict | None`` gives
    fields to store on the running trial (e.g. the fold scores so far), and the
    scheduler hook ``decide(trial, results, incumbent) -> dict | None`` may stop the
    trial. ``incumbent`` is the best COMPLETE trial so far (or None). When ``decide``
    returns fields (as :meth:`combine` does, typically ``state=PRUNED``), the driver
    drops the trial's tasks not yet submitted, cancels the submitted ones that have
    not started, ignores the results of those already running, and finishes the
    trial with those fields. An optional ``finished(trial)`` is called with each
    finished trial's stored record.
    """

    n_tasks: int

    def make_task(self, trial: FrozenTrial, index: int, seed: int) -> Callable[[], TaskResult]: ...

    def combine(self, trial: FrozenTrial, results: Sequence[TaskResult | None]) -> dict[str, Any]:
        """Fields to store on the finished trial (state, value, fold_scores, ...).

        A ``"reraise"`` entry holds an exception to raise once the trial is stored.
        """
        ...


def _call_style(objective: Callable[..., Any], has_space: bool) -> str:
    if not has_space:
        return "trial"
    try:
        params = list(inspect.signature(objective).parameters.values())
    except (TypeError, ValueError):
        return "config"
    if params and (params[0].name == "trial" or params[0].annotation in (Trial, "Trial")):
        return "trial"
    return "config"


class ObjectiveEvaluator:
    """A plain Python objective: one task per trial."""

    n_tasks = 1

    def __init__(
        self,
        objective: Callable[..., Any],
        space: Space | None,
        ship: bool,
        scheduler: CurveScheduler | None = None,
        direction: str = "minimize",
        board: CurveBoard | None = None,
    ) -> None:
        self.style = _call_style(objective, space is not None)
        self.space_json = _dims_json(space)
        self.objective: Any = Shipment(objective) if ship else objective
        self.scheduler = scheduler
        self.direction = direction
        # with a scheduler, the run's learning curves, read by the running trials
        self.board = board

    def make_task(self, trial: FrozenTrial, index: int, seed: int) -> Callable[[], TaskResult]:
        proposal = dict(trial.params) or dict(trial.system_attrs.get("proposal", {}))
        task = ObjectiveTask(
            self.objective, trial.number, proposal, seed, self.space_json, self.style
        )
        if self.scheduler is not None and self.board is not None:
            task.scheduler = self.scheduler
            task.direction = self.direction
            task.board = self.board.key
            task.board_version, others = self.board.snapshot(trial.number)
            task.others = tuple(others)
        return task

    def finished(self, trial: FrozenTrial) -> None:
        """Put a finished trial's final curve on the board."""
        if self.board is not None:
            self.board.finish(trial.number, trial.intermediate, trial.state)

    def combine(self, trial: FrozenTrial, results: Sequence[TaskResult | None]) -> dict[str, Any]:
        r = results[0]
        assert r is not None
        fields: dict[str, Any] = {
            "state": r.state,
            "value": r.value,
            "intermediate": r.intermediate,
            "fail_reason": r.fail_reason,
        }
        if self.space_json is None and r.params is not None:
            fields["params"] = json_safe_params(r.params)
            fields["distributions"] = r.distributions or {}
        if r.user_attrs:
            fields["user_attrs"] = {**trial.user_attrs, **r.user_attrs}
        if r.worker:
            fields["worker"] = r.worker
        return fields


# ----------------------------------------------------------------------------------
# Study
# ----------------------------------------------------------------------------------
class _TrialsView(Sequence[FrozenTrial]):
    """The finished (or the unfinished) trials of a study, by number, listed on first use.

    The study hands one of each to the sampler in a :class:`History` before every
    proposal. Samplers that do not read the trials (random; Sobol needs only their
    number) then cost nothing per trial, instead of a scan of the whole study. The
    list is taken when the sampler first reads it, during ``suggest``.
    """

    __slots__ = ("_finished", "_items", "_n", "_source")

    def __init__(self, source: list[FrozenTrial], finished: bool, n: int) -> None:
        self._source: list[FrozenTrial] | None = source
        self._finished = finished
        self._n = n
        self._items: list[FrozenTrial] | None = None

    def _list(self) -> list[FrozenTrial]:
        if self._items is None:
            assert self._source is not None
            finished = self._finished
            self._items = [t for t in self._source if t.state.is_finished is finished]
            self._source = None
        return self._items

    def __len__(self) -> int:
        return self._n if self._items is None else len(self._items)

    @overload
    def __getitem__(self, index: int) -> FrozenTrial: ...

    @overload
    def __getitem__(self, index: slice) -> list[FrozenTrial]: ...

    def __getitem__(self, index: int | slice) -> FrozenTrial | list[FrozenTrial]:
        return self._list()[index]

    def __iter__(self) -> Iterator[FrozenTrial]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _TrialsView):
            other = other._list()
        return self._list() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._list())


class _Job:
    __slots__ = ("done", "results", "stopped", "trial")

    def __init__(self, trial: FrozenTrial, n_tasks: int) -> None:
        self.trial = trial
        self.results: list[TaskResult | None] = [None] * n_tasks
        self.done = 0
        self.stopped = False  # finished early by the evaluator's scheduler hook


class Study:
    """A named, persisted sequence of trials for one objective, space and direction.

    Creating a Study with the name of a stored one resumes it.

    Parameters
    ----------
    name : str
        Name of the study in its storage.
    storage : str, Storage or None
        ``"sqlite:///path.db"`` (kept on disk), ``"memory"``/None, or a Storage.
    direction : {"minimize", "maximize"} or None
        Whether lower or higher values are better. None takes the stored direction
        when resuming and "minimize" for a new study.
    space : Space or None
        A fixed search space: the objective then receives a config dict (or the
        Trial, if its first argument is named ``trial``). None means define-by-run:
        the objective calls ``trial.suggest_*``.
    sampler : str or Sampler, default "auto"
        "auto" (Sobol start, then a GP, then TPE for large studies; see
        :class:`AutoSampler`), "gp", "tpe", "sobol", "random", "grid", or a Sampler.
    seed : int, numpy.random.Generator or None
        Same seed (and ``n_jobs=1``), same trials.

    Examples
    --------
    >>> import twiddle
    >>> study = twiddle.Study(name="demo", direction="minimize", seed=0)
    >>> study.optimize(lambda t: (t.suggest_float("x", -5, 5) - 2) ** 2, n_trials=20)
    >>> round(study.best_value, 3) < 1.0
    True
    """

    def __init__(
        self,
        name: str = "study",
        storage: str | os.PathLike[str] | Storage | None = None,
        direction: str | None = None,
        space: Space | None = None,
        sampler: str | Sampler = "auto",
        seed: int | np.random.Generator | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise InvalidParameterError(
                f"The 'name' parameter of Study must be a non-empty str. Got {name!r} instead."
            )
        if direction is not None:
            check_choice(direction, "direction", "Study", DIRECTIONS)
        if space is not None and not isinstance(space, Space):
            raise InvalidParameterError(
                "The 'space' parameter of Study must be a twiddle.Space or None. "
                f"Got {space!r} instead."
            )
        self.name = name
        self.storage = get_storage(storage)
        self.sampler = make_sampler(sampler)
        record = self.storage.get_study(name)
        if record is None:
            self.direction = direction or "minimize"
            self.space = space
            self._seed = seed_entropy(seed, "seed", "Study")
            record = self.storage.create_study(
                name,
                self.direction,
                None if space is None else space.to_json(),
                system_attrs={"seed": self._seed},
            )
            self._trials: list[FrozenTrial] = []
        else:
            if direction is not None and direction != record.direction:
                raise StudyMismatchError(
                    f"Study {name!r} in {self.storage.url} is stored with direction "
                    f"{record.direction!r}, not {direction!r}. Use another name for a new study, "
                    "or open this one with the stored direction."
                )
            self.direction = record.direction
            if space is not None and record.space is not None and space.to_json() != record.space:
                raise StudyMismatchError(
                    f"Study {name!r} in {self.storage.url} was created with another search space.\n"
                    f"stored: {json.dumps(record.space, sort_keys=True)}\n"
                    f"given:  {json.dumps(space.to_json(), sort_keys=True)}\n"
                    "Use a new study name for the new space, or pass the stored one."
                )
            if space is not None and record.space is None:
                raise StudyMismatchError(
                    f"Study {name!r} was created define-by-run (no space); it cannot be resumed "
                    "with a fixed space. Use a new study name."
                )
            if space is None and record.space is not None:
                try:
                    space = Space.from_json(record.space)
                except InvalidSpaceError:
                    space = None  # derived Python functions cannot be rebuilt; read-only use
            self.space = space
            stored_seed = record.system_attrs.get("seed")
            self._seed = (
                int(stored_seed)
                if seed is None and stored_seed is not None
                else (seed_entropy(seed, "seed", "Study"))
            )
            self._trials = self.storage.get_trials(record.study_id)
        self._reindex()
        self._record = record
        self._study_id = record.study_id
        self._stop = False
        # Opening a study never writes: trials left RUNNING by a dead process are
        # recovered when this study next runs (optimize, tune, ask).

    # -- reading ---------------------------------------------------------------------
    @classmethod
    def load(cls, name: str, storage: str | os.PathLike[str] | Storage) -> Study:
        """Open a stored study for reading (and resuming), whatever its direction."""
        st = get_storage(storage)
        if st.get_study(name) is None:
            names = [s.name for s in st.list_studies()]
            raise InvalidParameterError(
                f"No study named {name!r} in {st.url}. Stored studies: {names or 'none'}."
            )
        return cls(name=name, storage=st)

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def trials(self) -> list[FrozenTrial]:
        """All trials, by number."""
        return list(self._trials)

    def get_trials(self, states: Iterable[TrialState] | None = None) -> list[FrozenTrial]:
        if states is None:
            return list(self._trials)
        wanted = set(states)
        return [t for t in self._trials if t.state in wanted]

    @property
    def best_trial(self) -> FrozenTrial:
        """The COMPLETE trial with the best value (lowest number among ties)."""
        done = [t for t in self._trials if t.state is TrialState.COMPLETE and t.value is not None]
        if not done:
            raise InvalidParameterError(
                f"Study {self.name!r} has no complete trial yet; run study.optimize(...) first."
            )
        sign = -1.0 if self.direction == "maximize" else 1.0
        return min(done, key=lambda t: (sign * float(t.value), t.number))  # type: ignore[arg-type]

    @property
    def best_params(self) -> dict[str, Any]:
        """Hyperparameters of the best trial, each in its dimension's type (tuples stay tuples)."""
        return self._cast(self.best_trial.params)

    def _cast(self, params: Mapping[str, Any]) -> dict[str, Any]:
        if self.space is None:
            return dict(params)
        try:
            return self.space.validate(params)
        except InvalidSpaceError:
            return dict(params)

    @property
    def best_value(self) -> float:
        v = self.best_trial.value
        assert v is not None
        return v

    def to_records(self) -> list[dict[str, Any]]:
        """One flat dict per trial (params_*, fold_*, metrics_* columns)."""
        return [t.to_record() for t in self._trials]

    def to_dataframe(self) -> Any:
        """The trials as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "Study.to_dataframe needs pandas: pip install pandas (or use to_records())."
            ) from None
        return pd.DataFrame.from_records(self.to_records())

    def __repr__(self) -> str:
        return (
            f"Study(name={self.name!r}, storage={self.storage.url!r}, "
            f"direction={self.direction!r}, n_trials={len(self._trials)})"
        )

    # -- bookkeeping -----------------------------------------------------------------------
    def _set(self, trial: FrozenTrial, **fields: Any) -> FrozenTrial:
        new = self.storage.update_trial(self._study_id, trial.number, **fields)
        old = self._trials[trial.number]
        self._trials[trial.number] = new
        self._track(old, new)
        return new

    def _append(self, trial: FrozenTrial) -> None:
        self._trials.append(trial)
        self._track(None, trial)

    # Every change to ``self._trials`` goes through _set or _append, which keep these
    # views of it up to date, so that one step of the driver loop costs the same
    # however many trials the study holds (no scan of all trials per trial).
    def _reindex(self) -> None:
        """Build the views of ``self._trials`` from scratch (after loading the trials)."""
        self._waiting: set[int] = set()  # numbers of WAITING trials
        self._best: FrozenTrial | None = None  # best COMPLETE trial (see _incumbent)
        self._best_stale = False
        self._running: set[int] = set()  # numbers of RUNNING trials
        self._n_finished = 0
        # Define-by-run space: the distributions every COMPLETE trial shares (None
        # before the first; {} once they share none, which is final) and its Space.
        self._common: dict[str, Any] | None = None
        self._common_space: Space | None = None
        for t in self._trials:
            self._track(None, t)

    def _track(self, old: FrozenTrial | None, new: FrozenTrial) -> None:
        """Update the views for ``new`` taking the place of ``old`` (None: a new trial)."""
        number, state = new.number, new.state
        self._waiting.discard(number)
        self._running.discard(number)
        if state is TrialState.WAITING:
            self._waiting.add(number)
        elif state is TrialState.RUNNING:
            self._running.add(number)
        elif old is None or not old.state.is_finished:
            self._n_finished += 1
            if state is TrialState.COMPLETE and new.distributions:
                self._intersect(new.distributions)
        best = self._best
        if best is not None and best.number == number:
            self._best = new
            self._best_stale = True  # its value or state may have changed: rescan on use
        elif (
            state is TrialState.COMPLETE
            and new.value is not None
            and not self._best_stale
            and (best is None or self._better(new, best))
        ):
            self._best = new

    def _better(self, a: FrozenTrial, b: FrozenTrial) -> bool:
        """Whether COMPLETE trial ``a`` ranks before ``b`` (better value, then lower number)."""
        sign = -1.0 if self.direction == "maximize" else 1.0
        return (sign * float(a.value), a.number) < (sign * float(b.value), b.number)  # type: ignore[arg-type]

    def _incumbent(self) -> FrozenTrial | None:
        """The best COMPLETE trial so far (as :attr:`best_trial`), or None; kept by _track."""
        if self._best_stale:
            self._best, self._best_stale = None, False
            for t in self._trials:
                complete = t.state is TrialState.COMPLETE and t.value is not None
                if complete and (self._best is None or self._better(t, self._best)):
                    self._best = t
        return self._best

    def _intersect(self, distributions: Mapping[str, Any]) -> None:
        common = self._common
        if common is None:
            self._common = dict(distributions)
        elif common:
            kept = {k: v for k, v in common.items() if distributions.get(k) == v}
            if len(kept) == len(common):
                return  # unchanged: the cached Space stays valid
            self._common = kept
        self._common_space = None

    def _recover_stale(self) -> list[int]:
        """Re-queue (or fail) RUNNING trials whose driver is gone. Returns their numbers."""
        now = time.time()
        host = socket.gethostname()
        fixed = []
        for number in sorted(self._running):
            t = self._trials[number]
            driver = str(t.system_attrs.get("driver", ""))
            dhost, _, dpid = driver.rpartition(":")
            if dhost == host and dpid.isdigit():
                # on this host the driver's process is the truth: a long inline trial
                # cannot renew its lease, yet its driver is alive
                dead = int(dpid) != os.getpid() and not _pid_alive(int(dpid))
            else:
                dead = t.lease_until is not None and t.lease_until < now
            if dead:
                self._requeue(t, "the process running it stopped before it finished")
                fixed.append(t.number)
        return fixed

    def _requeue(self, t: FrozenTrial, why: str) -> None:
        """Queue an interrupted trial again, noting why in ``system_attrs["interruptions"]``.

        The note stays out of ``fail_reason``, which only ever describes a final failure.
        """
        notes = [*t.system_attrs.get("interruptions", []), f"attempt {t.attempt}: {why}"]
        attrs = {**t.system_attrs, "interruptions": notes}
        if t.attempt >= MAX_ATTEMPTS:
            self._set(
                t,
                state=TrialState.FAIL,
                fail_reason="\n".join(notes) + f"\ngiven up after {t.attempt} attempts",
                system_attrs=attrs,
                datetime_complete=time.time(),
                lease_until=None,
            )
        else:
            self._set(
                t,
                state=TrialState.WAITING,
                attempt=t.attempt + 1,
                system_attrs=attrs,
                fold_scores=(),
                intermediate={},
                lease_until=None,
            )

    def _history(self) -> History:
        n_finished = self._n_finished
        return History(
            _TrialsView(self._trials, True, n_finished),
            _TrialsView(self._trials, False, len(self._trials) - n_finished),
            self.direction,
            self._seed,
        )

    def _define_by_run_space(self) -> Space | None:
        """Dimensions every complete trial suggested with the same range (the intersection)."""
        common = self._common
        if not common:
            return None
        if self._common_space is None:
            self._common_space = Space(
                {k: dimension_from_json(v) for k, v in sorted(common.items())}
            )
        return self._common_space

    def _propose(self, number: int) -> tuple[Config, dict[str, Any]] | None:
        """Ask the sampler for the next configuration. None when the space is exhausted."""
        rng = np.random.default_rng([self._seed, number])
        space = self.space
        if space is None:
            space = self._define_by_run_space()
            if space is None:
                return {}, {"sampler": self.sampler.name}
            configs = self.sampler.suggest(space, self._history(), rng, 1)
            if not configs:
                return None
            return {}, {**self._sampler_attrs(), "proposal": json_safe_params(configs[0])}
        configs = self.sampler.suggest(space, self._history(), rng, 1)
        if not configs:
            return None
        return json_safe_params(space.validate(configs[0])), self._sampler_attrs()

    def _sampler_attrs(self) -> dict[str, Any]:
        """Which sampler proposed a trial, with what it reports of itself (e.g. GP fit state)."""
        attrs: dict[str, Any] = {"sampler": self.sampler.name}
        info = getattr(self.sampler, "last_info", None)
        if info:
            attrs["sampler_info"] = dict(info)
        return attrs

    def _start_next(self) -> FrozenTrial | None:
        """Take the oldest WAITING trial, or create one from the sampler, and mark it RUNNING."""
        now = time.time()
        common = {
            "datetime_start": now,
            "lease_until": now + LEASE_SECONDS,
        }
        if self._waiting:
            t = self._trials[min(self._waiting)]
            attrs = {**t.system_attrs, "driver": _driver_id()}
            return self._set(t, state=TrialState.RUNNING, system_attrs=attrs, **common)
        proposed = self._propose(len(self._trials))
        if proposed is None:
            return None
        params, attrs = proposed
        attrs["driver"] = _driver_id()
        t = self.storage.create_trial(
            self._study_id, params, TrialState.RUNNING, system_attrs=attrs, **common
        )
        self._append(t)
        return t

    # -- ask / tell / enqueue -----------------------------------------------------------------
    def enqueue(self, params: Mapping[str, Any]) -> FrozenTrial:
        """Queue a configuration to be evaluated before the sampler's own proposals."""
        if self.space is not None:
            clean = json_safe_params(self.space.validate(params))
            t = self.storage.create_trial(self._study_id, clean, TrialState.WAITING)
        else:
            proposal = json_safe_params(dict(params))
            t = self.storage.create_trial(
                self._study_id, {}, TrialState.WAITING, system_attrs={"proposal": proposal}
            )
        self._append(t)
        return t

    def ask(self, *, scheduler: str | CurveScheduler | None = None) -> Trial:
        """Start a trial for an external loop; finish it with :meth:`tell`.

        Parameters
        ----------
        scheduler : None, "median", "halving" or a learning-curve scheduler
            As in :meth:`optimize`: ``trial.should_prune()`` then applies its rule to
            the values the trial reports and to the learning curves of the study's
            other trials as they stand when it is called (those already told; a
            trial still between ask and tell has not handed its curve to the study).
            After True, tell the trial ``state="PRUNED"``.

        Examples
        --------
        >>> import twiddle
        >>> study = twiddle.Study(space=twiddle.Space({"lr": twiddle.Float(0.0, 1.0)}), seed=0)
        >>> for _ in range(4):
        ...     trial = study.ask(scheduler=twiddle.MedianStopping(n_startup_trials=2))
        ...     state = "COMPLETE"
        ...     for step in range(1, 6):
        ...         trial.report(trial.params["lr"] / step, step)
        ...         if trial.should_prune():
        ...             state = "PRUNED"
        ...             break
        ...     _ = study.tell(trial, trial.params["lr"] / step, state=state)
        """
        sched = make_curve_scheduler(scheduler, "Study.ask")
        self._recover_stale()
        t = self._start_next()
        if t is None:
            raise InvalidParameterError(
                f"The sampler {self.sampler!r} has no configuration left to propose."
            )
        proposal = dict(t.params) or dict(t.system_attrs.get("proposal", {}))
        trial = Trial._for_task(
            t.number,
            proposal,
            self._seed,
            _dims_json(self.space),
            scheduler=sched,
            direction=self.direction,
        )
        if sched is not None:
            trial._live_curves = lambda: self._curves(t.number)
        return trial

    def tell(
        self,
        trial: Trial | int,
        value: float | None = None,
        *,
        state: TrialState | str = TrialState.COMPLETE,
        fold_scores: Sequence[float | None] | None = None,
        fail_reason: str | None = None,
    ) -> FrozenTrial:
        """Finish a trial started by :meth:`ask`.

        A COMPLETE trial needs a finite value (otherwise it is recorded as FAIL with the
        reason); PRUNED and FAIL trials may omit it.
        """
        number = trial.number if isinstance(trial, Trial) else trial
        number = check_int(number, "trial", "Study.tell", minimum=0)  # type: ignore[assignment]
        assert number is not None
        if number >= len(self._trials):
            raise InvalidParameterError(f"Study {self.name!r} has no trial number {number}.")
        rec = self._trials[number]
        if rec.state is not TrialState.RUNNING:
            raise InvalidParameterError(
                f"Trial {number} is {rec.state.value}, not RUNNING; only a trial started by ask() "
                "can be told."
            )
        finals = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        st = state
        if isinstance(state, str):
            st = next((s for s in finals if s.value == state.upper()), None)  # type: ignore[assignment]
        if st not in finals:
            raise InvalidParameterError(
                "The 'state' parameter of Study.tell must be one of 'COMPLETE', 'PRUNED', "
                f"'FAIL'. Got {state!r} instead."
            )
        assert isinstance(st, TrialState)
        if fail_reason is not None and st is TrialState.COMPLETE:
            raise InvalidParameterError(
                "The 'fail_reason' parameter of Study.tell describes a FAIL or PRUNED trial; "
                "leave it out for a COMPLETE one."
            )
        fields: dict[str, Any] = {"datetime_complete": time.time(), "lease_until": None}
        if isinstance(trial, Trial):
            if self.space is None:
                fields["params"] = json_safe_params(trial.params)
                fields["distributions"] = dict(trial._distributions)
            if trial._intermediate:
                fields["intermediate"] = dict(trial._intermediate)
            if trial._user_attrs:
                fields["user_attrs"] = {**rec.user_attrs, **trial._user_attrs}
        if fold_scores is not None:
            fields["fold_scores"] = tuple(None if s is None else float(s) for s in fold_scores)
        if st is TrialState.COMPLETE:
            v, reason = check_value(value)
            if reason is not None:
                st, fail_reason = TrialState.FAIL, reason
            fields["value"] = v
        elif value is not None:
            fields["value"] = float(value)
        fields["state"] = st
        fields["fail_reason"] = fail_reason
        return self._set(rec, **fields)

    def stop(self) -> None:
        """Ask a running :meth:`optimize` to start no new trial (running ones finish)."""
        self._stop = True

    # -- the driver loop ------------------------------------------------------------------
    def optimize(
        self,
        objective: Callable[..., Any],
        n_trials: int | None = None,
        timeout: float | None = None,
        n_jobs: int = 1,
        executor: cf.Executor | None = None,
        callbacks: Sequence[Callable[[Study, FrozenTrial], None]] = (),
        scheduler: str | CurveScheduler | None = None,
    ) -> None:
        """Run trials of ``objective``.

        Parameters
        ----------
        objective : callable
            ``objective(trial)`` (define-by-run) or, when the study has a space,
            ``objective(config)``; returns one finite number. Raise
            :class:`twiddle.TrialPruned` to stop a trial early.
        n_trials : int, optional
            How many trials to run in this call (queued WAITING trials first).
        timeout : float, optional
            Seconds after which no new trial starts (running ones finish).
        n_jobs : int, default 1
            1 runs trials in this process; more runs them in that many worker
            processes, where a crashing worker fails only its own trial.
        executor : concurrent.futures.Executor, optional
            Run tasks on this executor instead (e.g. a Dask ``Client.get_executor()``);
            ``n_jobs`` then caps the tasks in flight.
        callbacks : sequence of callable
            ``callback(study, trial)`` after each finished trial, in this process.
        scheduler : None, "median", "halving" or a learning-curve scheduler
            :class:`twiddle.MedianStopping`, :class:`twiddle.SuccessiveHalving` or
            :class:`twiddle.Hyperband`: ``trial.should_prune()`` then answers with
            its rule, applied where the objective runs to the trial's reported
            values and to the other trials' curves: the finished trials' and, with
            worker processes, the running trials' curves so far. Workers of another
            executor (Dask's, a standard-library pool's) ask the driver over TCP
            (the environment variable ``TWIDDLE_DRIVER_HOST``: the address the driver
            listens on, default 127.0.0.1; ``off``: no port, and such trials see the
            trials finished when they were dispatched). None: it is always False.

        Raises
        ------
        AllTrialsFailedError
            If every trial of this call failed and the study has no complete trial.
        """
        if not callable(objective):
            raise InvalidParameterError(
                f"The 'objective' parameter of Study.optimize must be callable. Got {objective!r}."
            )
        sched = make_curve_scheduler(scheduler, "Study.optimize")
        ship = executor is not None or n_jobs > 1
        board = None
        if sched is not None:
            from twiddle._board import CurveBoard

            board = CurveBoard(self._curves(-1), remote=_foreign(executor))
        evaluator = ObjectiveEvaluator(objective, self.space, ship, sched, self.direction, board)
        try:
            self._run(
                evaluator,
                n_trials=n_trials,
                timeout=timeout,
                n_jobs=n_jobs,
                executor=executor,
                callbacks=callbacks,
            )
        finally:
            if board is not None:
                board.close()

    def _curves(self, number: int) -> list[LearningCurve]:
        """The learning curves of the trials other than ``number`` that reported one."""
        return [
            LearningCurve(t.intermediate, t.state, t.number)
            for t in self._trials
            if t.intermediate and t.number != number
        ]

    def _run(
        self,
        evaluator: Evaluator,
        *,
        n_trials: int | None,
        timeout: float | None,
        n_jobs: int,
        executor: cf.Executor | None,
        callbacks: Sequence[Callable[[Study, FrozenTrial], None]] = (),
    ) -> list[FrozenTrial]:
        where = "Study.optimize"
        n_trials = check_int(n_trials, "n_trials", where, minimum=1, allow_none=True)
        timeout = check_float(timeout, "timeout", where, minimum=0, exclusive=True, allow_none=True)
        n_jobs = check_int(n_jobs, "n_jobs", where, minimum=1)  # type: ignore[assignment]
        if executor is not None and not isinstance(executor, cf.Executor):
            raise InvalidParameterError(
                "The 'executor' parameter of Study.optimize must be a concurrent.futures.Executor "
                f"or None. Got {executor!r} instead."
            )
        if self.space is None and isinstance(self.sampler, GridSampler):
            raise InvalidParameterError(
                "GridSampler needs the study's search space up front: pass space=Space({...}) "
                "to Study, or choose another sampler for define-by-run objectives."
            )
        if n_trials is None and timeout is None and not isinstance(self.sampler, GridSampler):
            raise InvalidParameterError(
                "Study.optimize needs a budget: give n_trials, timeout, or both."
            )
        for cb in callbacks:
            if not callable(cb):
                raise InvalidParameterError(f"Callback {cb!r} is not callable.")
        self._recover_stale()
        self._stop = False

        from twiddle._execution import InlineExecutor, ProcessExecutor

        own = executor is None
        pool: cf.Executor
        if executor is not None:
            pool = executor
            slots = (
                n_jobs
                if n_jobs > 1
                else int(getattr(executor, "_max_workers", 0) or os.cpu_count() or 1)
            )
        elif n_jobs == 1:
            pool, slots = InlineExecutor(), 1
        else:
            pool, slots = ProcessExecutor(n_jobs), n_jobs

        deadline = None if timeout is None else time.monotonic() + timeout
        started = 0
        exhausted = False
        jobs: dict[int, _Job] = {}
        ready: deque[tuple[_Job, int]] = deque()
        inflight: dict[cf.Future[TaskResult], tuple[_Job, int]] = {}
        finished: list[FrozenTrial] = []
        last_renew = time.monotonic()

        def can_start() -> bool:
            if self._stop or exhausted:
                return False
            if n_trials is not None and started >= n_trials:
                return False
            return deadline is None or time.monotonic() < deadline

        try:
            while True:
                while len(inflight) < slots:
                    if ready:
                        job, idx = ready.popleft()
                        task = evaluator.make_task(job.trial, idx, self._seed)
                        inflight[pool.submit(task)] = (job, idx)
                    elif can_start():
                        t = self._start_next()
                        if t is None:
                            exhausted = True
                            continue
                        started += 1
                        jobs[t.number] = _Job(t, evaluator.n_tasks)
                        ready.extend((jobs[t.number], i) for i in range(evaluator.n_tasks))
                    else:
                        break
                if not inflight:
                    break
                wait_for = _RENEW_EVERY
                if deadline is not None:
                    wait_for = max(0.01, min(wait_for, deadline - time.monotonic()))
                only = next(iter(inflight)) if len(inflight) == 1 else None
                if only is not None and only.done() and not only.cancelled():
                    done = {only}  # finished already (inline executor): no need to wait
                else:
                    done, _ = cf.wait(
                        list(inflight), timeout=wait_for, return_when=cf.FIRST_COMPLETED
                    )
                if time.monotonic() - last_renew > _RENEW_EVERY / 2 and jobs:
                    self.storage.renew_leases(
                        self._study_id, sorted(jobs), time.time() + LEASE_SECONDS
                    )
                    last_renew = time.monotonic()
                for fut in done:
                    job, idx = inflight.pop(fut)
                    if job.stopped:
                        continue  # a task of a trial its scheduler stopped: result ignored
                    job.results[idx] = self._task_result(fut, job, idx)
                    job.done += 1
                    if job.done < evaluator.n_tasks:
                        fields = self._on_partial(job, evaluator)
                        if fields is None:
                            continue
                        self._stop_job(job, ready, inflight)
                    else:
                        fields = evaluator.combine(self._trials[job.trial.number], job.results)
                    del jobs[job.trial.number]
                    fields.setdefault("datetime_complete", time.time())
                    fields["lease_until"] = None
                    reraise = fields.pop("reraise", None)
                    rec = self._set(self._trials[job.trial.number], **fields)
                    finished.append(rec)
                    on_finished = getattr(evaluator, "finished", None)
                    if on_finished is not None:
                        on_finished(rec)
                    if reraise is not None:
                        raise reraise
                    for cb in callbacks:
                        cb(self, rec)
        except BaseException as err:
            self._abandon(jobs, inflight, pool, own, err)
            raise
        finally:
            if own:
                pool.shutdown(wait=True, cancel_futures=True)

        failed = [t for t in finished if t.state is TrialState.FAIL]
        if (
            finished
            and len(failed) == len(finished)
            and not any(t.state is TrialState.COMPLETE for t in self._trials)
        ):
            first = failed[0].fail_reason or "(no reason recorded)"
            raise AllTrialsFailedError(
                f"All {len(failed)} trials of study {self.name!r} failed, so there is no result. "
                f"The first failure (trial {failed[0].number}) was:\n{first}\n"
                "To debug, run the objective on one configuration by hand (study.ask() gives a "
                "trial), or read study.trials[i].fail_reason."
            )
        return finished

    def _task_result(self, fut: cf.Future[TaskResult], job: _Job, idx: int) -> TaskResult:
        try:
            return fut.result()
        except WorkerCrashedError as err:
            return TaskResult(state=TrialState.FAIL, fail_reason=str(err), fold=idx)
        except cf.CancelledError:
            return TaskResult(state=TrialState.FAIL, fail_reason="task cancelled", fold=idx)
        except cf.BrokenExecutor:
            # the executor itself is broken: the running trials are interrupted, not
            # failed; the caller re-queues them and the error reaches the user
            raise
        except Exception as err:
            hint = (
                " (is the objective picklable?)"
                if isinstance(err, (pickle.PicklingError, TypeError, AttributeError))
                else ""
            )
            return TaskResult(
                state=TrialState.FAIL,
                fail_reason=f"The task could not run on the executor{hint}:\n"
                + format_exception(err),
                fold=idx,
            )

    def _on_partial(self, job: _Job, evaluator: Evaluator) -> dict[str, Any] | None:
        """Store a running trial's partial results; the fields to stop it with, or None."""
        hook = getattr(evaluator, "partial", None)
        if hook is not None:
            fields = hook(self._trials[job.trial.number], job.results)
            if fields:
                self._set(self._trials[job.trial.number], **fields)
        decide = getattr(evaluator, "decide", None)
        if decide is None:
            return None
        stop: dict[str, Any] | None = decide(
            self._trials[job.trial.number], job.results, self._incumbent()
        )
        return stop

    @staticmethod
    def _stop_job(
        job: _Job,
        ready: deque[tuple[_Job, int]],
        inflight: dict[cf.Future[TaskResult], tuple[_Job, int]],
    ) -> None:
        """Drop a stopped trial's queued tasks and cancel those submitted but not started.

        Tasks already running are left to finish (killing a worker process costs a new
        process and re-sending the data, usually more than the rest of one task); their
        futures stay in ``inflight``, so they keep occupying their slots, and their
        results are ignored.
        """
        job.stopped = True
        kept = [item for item in ready if item[0] is not job]
        ready.clear()
        ready.extend(kept)
        for fut, (owner, _) in list(inflight.items()):
            if owner is job and fut.cancel():
                del inflight[fut]

    def _abandon(
        self,
        jobs: dict[int, _Job],
        inflight: dict[cf.Future[TaskResult], tuple[_Job, int]],
        pool: cf.Executor,
        own: bool,
        err: BaseException,
    ) -> None:
        """Leave storage consistent after an interruption: running trials are re-queued."""
        kill = getattr(pool, "kill_running", None) if own else None
        for fut in inflight:
            if not fut.cancel() and kill is not None:
                with contextlib.suppress(Exception):
                    kill(fut)
        why = type(err).__name__
        for number in sorted(jobs):
            t = self._trials[number]
            if t.state is TrialState.RUNNING:
                with contextlib.suppress(Exception):
                    self._requeue(t, f"the run was stopped by {why}")
