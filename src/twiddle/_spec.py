"""Study specs: a TOML file describing a tuning job for ``twiddle run``.

A spec names the data, the estimator, the search space, the cross-validation
plan and the budget. :func:`load_spec` reads the file and checks its structure
(every table, every key, every type, the search space) and returns a
:class:`RunSpec`; :meth:`RunSpec.prepare` then imports the estimator, loads the
data and makes the folds. Together they report every mistake in a spec before
the first model is trained, each as a :class:`~twiddle.SpecError` that names the
table and key at fault.

Layout of a spec (only ``[data]``, ``[estimator]`` and ``[space.*]`` are required)::

    [study]          name, storage, sampler, seed, direction
    [data]           loader  |  csv, target, features, delimiter
    [estimator]      class, params
    [space.NAME]     type ("float" | "int" | "categorical"), low, high, log, step,
                     choices, when
    [derived.NAME]   type = "repeat", value, times
    [cv]             folds, shuffle, groups, scoring, metric, error_score
    [run]            method ("cv" | "evidence"), scheduler ("racing" | "halving" |
                     "median"), n_trials, timeout, n_jobs
    [scheduler]      parameters of the scheduler [run] names (see SCHEDULER_KEYS)

Rules
-----
- **Relative paths** in a spec (``[data] csv``, ``[study] storage``) are read from
  the directory of the spec file, so a spec runs the same from any working
  directory. The default storage is ``<spec stem>.db`` next to the spec, and the
  default study name is the spec's file stem.
- **Local modules.** The spec's directory is put at the front of ``sys.path``
  (as Python does for the directory of a script) before the estimator is
  imported, so ``class = "pipelines:make_svc"`` finds ``pipelines.py`` next to
  the spec. Worker processes (``n_jobs > 1``) start with the same search path.
- **Direction.** Scores are scikit-learn scorers, where greater is better, and
  :func:`twiddle.tune` maximises them; ``direction`` may be omitted or
  ``"maximize"``. To minimise an error, use its negated scorer
  (``"neg_mean_squared_error"``).
- **Budget.** ``n_trials`` is the total for the study: a resumed run counts the
  finished trials (COMPLETE, PRUNED or FAIL) and runs only the missing ones.
  ``timeout`` (seconds) applies to one invocation. ``n_jobs = -1`` uses one worker
  process per CPU.
- **CSV files** have a header row; features must be numeric (empty, ``NA`` and
  ``nan`` cells become NaN); the target is read as integers, else floats, else
  strings; ``[cv] groups`` names a column of group labels that no fold splits.
- **Method.** ``[run] method = "cv"`` (the default) scores each configuration by
  k-fold cross-validation. ``method = "evidence"`` scores it by the log evidence
  (``log_evidence_``) of one fit on all the data, for estimators that compute it,
  such as :class:`twiddle.evidence.BayesianLinearRegression` (or a Pipeline ending
  in one); the study maximises it (:func:`twiddle.evidence.tune_evidence`). With
  ``method = "evidence"`` a ``[cv]`` table is an error, since it would be ignored.
- **Shuffled folds** use ``seed`` as their random state (0 when the spec has no
  seed), so a resumed study keeps the same folds.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import importlib
import inspect
import math
import numbers
import os
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from twiddle._errors import InvalidParameterError, InvalidSpaceError, SpecError
from twiddle._samplers import SAMPLER_NAMES
from twiddle._space import Derived, Dimension, Space, derived_from_json, dimension_from_json

__all__ = ["BUNDLED_LOADERS", "Prepared", "RunSpec", "load_spec", "resolve_storage"]

#: scikit-learn loaders whose data ship with scikit-learn (no download).
BUNDLED_LOADERS = (
    "load_breast_cancer",
    "load_diabetes",
    "load_digits",
    "load_iris",
    "load_linnerud",
    "load_wine",
)

#: Allowed keys of each top-level table (``space`` and ``derived`` hold sub-tables).
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "study": ("name", "storage", "sampler", "seed", "direction"),
    "data": ("loader", "csv", "target", "features", "delimiter"),
    "estimator": ("class", "params"),
    "space": (),
    "derived": (),
    "cv": ("folds", "shuffle", "groups", "scoring", "metric", "error_score"),
    "run": ("method", "scheduler", "n_trials", "timeout", "n_jobs"),
    "scheduler": (),
}

#: Keys of the ``[scheduler]`` table for each ``[run] scheduler``: the parameters of
#: :class:`~twiddle.FoldRacing`, :class:`~twiddle.SuccessiveHalving` and
#: :class:`~twiddle.MedianStopping` that apply with folds as the resource (the
#: number of folds is the maximum resource, so halving's ``max_resource`` is not one).
SCHEDULER_KEYS: dict[str, tuple[str, ...]] = {
    "racing": ("alpha", "min_folds", "levels"),
    "halving": ("min_resource", "reduction_factor", "smoothing"),
    "median": ("n_startup_trials", "n_warmup_steps", "min_steps"),
}


def build_scheduler(name: str | None, params: Mapping[str, Any]) -> Any:
    """The scheduler object for ``[run] scheduler = name`` and the ``[scheduler]`` table.

    None for no scheduler; raises :class:`~twiddle.InvalidParameterError` for a bad value.
    """
    if name is None:
        return None
    from twiddle._schedulers import SCHEDULERS_BY_NAME

    return SCHEDULERS_BY_NAME[name](**params)


_DIMENSION_KEYS = {
    "float": ("type", "low", "high", "log", "step", "when"),
    "int": ("type", "low", "high", "log", "step", "when"),
    "categorical": ("type", "choices", "when"),
}
_DERIVED_KEYS = ("type", "value", "times")
#: How ``twiddle run`` scores a configuration (``[run] method``).
METHODS = ("cv", "evidence")
#: Sampler names a spec may give (those :func:`twiddle._samplers.make_sampler` knows).
SAMPLERS: tuple[str, ...] = SAMPLER_NAMES
_SQLITE_PREFIX = "sqlite:///"
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_MISSING_CELLS = frozenset({"", "na", "nan", "n/a", "null", "none"})


# ----------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------
def _type_name(value: Any) -> str:
    """How a TOML value's type reads in an error message."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    """`` Did you mean 'x'?`` for the closest option, or an empty string."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def resolve_storage(text: str, base: Path) -> str:
    """Turn a storage given in a spec or on the command line into an absolute storage URL.

    Parameters
    ----------
    text : str
        ``"sqlite:///path.db"``, a path ending in ``.db``, ``.sqlite`` or ``.sqlite3``,
        or ``"memory"``.
    base : pathlib.Path
        Directory that a relative path is read from (the spec's directory for a
        spec, the working directory for ``--storage``).

    Returns
    -------
    str
        ``"memory"`` or ``"sqlite:///<absolute path>"``.

    Raises
    ------
    SpecError
        If ``text`` is none of the forms above.
    """
    if text in ("memory", ":memory:"):
        return "memory"
    if text.startswith(_SQLITE_PREFIX):
        raw = text[len(_SQLITE_PREFIX) :]
    elif "://" not in text and text.lower().endswith(_SQLITE_SUFFIXES):
        raw = text
    else:
        raw = ""
    if not raw or raw == ":memory:":
        raise SpecError(
            f"The storage must be 'sqlite:///path.db', a path ending in .db, .sqlite or "
            f".sqlite3, or 'memory'. Got {text!r} instead."
        )
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = base / path
    return _SQLITE_PREFIX + os.path.abspath(path)


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL made by :func:`resolve_storage`, else None."""
    if url.startswith(_SQLITE_PREFIX):
        return Path(url[len(_SQLITE_PREFIX) :])
    return None


# ----------------------------------------------------------------------------------
# The spec
# ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where the data come from: a bundled scikit-learn loader or a CSV file.

    Attributes
    ----------
    loader : str or None
        Name of a function in :data:`BUNDLED_LOADERS`.
    csv : pathlib.Path or None
        Absolute path of a CSV file with a header row.
    target : str or None
        CSV column holding the target.
    features : tuple of str or None
        CSV columns used as features; None means every column other than the
        target and the groups column.
    delimiter : str
        CSV field separator.
    """

    loader: str | None = None
    csv: Path | None = None
    target: str | None = None
    features: tuple[str, ...] | None = None
    delimiter: str = ","


@dataclasses.dataclass(frozen=True)
class EstimatorSpec:
    """The estimator: an import path and the fixed hyperparameters passed to it.

    Attributes
    ----------
    path : str
        ``"package.module.Name"`` or ``"package.module:Name"``. A class is called
        with ``params``; so is a function (a factory, e.g. returning a Pipeline).
    params : dict
        Fixed hyperparameters (keyword arguments of the class or factory).
    """

    path: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class CVSpec:
    """The cross-validation plan.

    Attributes
    ----------
    folds : int
        Number of folds k (stratified for classifiers, as in scikit-learn).
    shuffle : bool
        Shuffle before splitting (random state: the study seed, or 0).
    groups : str or None
        CSV column of group labels: no group is split across training and test sets.
    scoring : str, tuple of str or None
        scikit-learn scorer name(s); None uses the estimator's ``score`` method.
    metric : str or None
        With several scorers, the one to optimise (default: the first).
    error_score : float or "raise"
        Score of a fold whose fit fails; "raise" stops the run at the first failure.
    """

    folds: int = 5
    shuffle: bool = False
    groups: str | None = None
    scoring: str | tuple[str, ...] | None = None
    metric: str | None = None
    error_score: float | str = math.nan


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """A checked study spec: everything ``twiddle run`` needs to run or resume a study.

    Build it with :func:`load_spec`; :meth:`prepare` loads what it names.

    Attributes
    ----------
    path : pathlib.Path
        Absolute path of the spec file.
    display : str
        The spec's path as the user wrote it (used in messages).
    name : str
        Study name (default: the spec's file stem).
    storage : str
        ``"memory"`` or an absolute ``"sqlite:///..."`` URL.
    sampler : str
        One of :data:`SAMPLERS` ("auto", "random", "sobol", "grid", ...).
    seed : int or None
    data : DataSpec
    estimator : EstimatorSpec
    space : Space
    cv : CVSpec
    n_trials : int or None
        Total number of finished trials the study should have.
    timeout : float or None
        Seconds after which this invocation starts no new trial.
    n_jobs : int
        Worker processes (1 runs trials in this process).
    method : {"cv", "evidence"}
        Score configurations by cross-validation, or by the log evidence of one fit.
    scheduler : {"racing", "halving", "median"} or None
        Stop configurations between folds (method "cv" only): fold racing (once
        confidently worse than the best so far on the same folds), or successive
        halving or the median rule with folds as the resource (see
        :func:`twiddle.tune`).
    scheduler_params : dict
        The ``[scheduler]`` table: keyword arguments of that scheduler's class
        (empty for its defaults); :meth:`make_scheduler` builds the object.
    """

    path: Path
    display: str
    name: str
    storage: str
    sampler: str
    seed: int | None
    data: DataSpec
    estimator: EstimatorSpec
    space: Space
    cv: CVSpec
    n_trials: int | None
    timeout: float | None
    n_jobs: int
    method: str = "cv"
    scheduler: str | None = None
    scheduler_params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def make_scheduler(self) -> Any:
        """The scheduler for :func:`twiddle.tune`: None, or an object built from the spec."""
        return build_scheduler(self.scheduler, self.scheduler_params)

    @property
    def directory(self) -> Path:
        """Directory of the spec file: base of its relative paths."""
        return self.path.parent

    def with_overrides(
        self,
        *,
        n_trials: int | None = None,
        n_jobs: int | None = None,
        timeout: float | None = None,
        storage: str | None = None,
        seed: int | None = None,
    ) -> RunSpec:
        """A copy with command-line overrides applied (None keeps the spec's value).

        ``storage`` is read relative to the current working directory.
        """
        changes: dict[str, Any] = {}
        if n_trials is not None:
            changes["n_trials"] = n_trials
        if n_jobs is not None:
            changes["n_jobs"] = n_jobs
        if timeout is not None:
            changes["timeout"] = timeout
        if storage is not None:
            changes["storage"] = resolve_storage(storage, Path.cwd())
        if seed is not None:
            changes["seed"] = seed
        return dataclasses.replace(self, **changes)

    def prepare(self) -> Prepared:
        """Import the estimator, load the data and make the folds; check they fit together.

        Returns
        -------
        Prepared

        Raises
        ------
        SpecError
            If the estimator cannot be imported or built, the space sets parameters the
            estimator does not have, the data cannot be read, a column or scorer is
            unknown, or the folds cannot be made.
        """
        from sklearn.base import is_classifier

        from twiddle._cv import resolve_scorers, resolve_splits

        err = _Errors(self.display)
        estimator = _build_estimator(self.estimator, self.directory, err)
        _check_addresses(estimator, self.space, self.estimator, err)
        _check_configurations(estimator, self.space, err)
        X, y, groups = _load_data(self.data, self.cv.groups, err)
        if self.method == "evidence":  # one fit on all the data: no folds, no scorer
            return Prepared(
                estimator=estimator,
                X=X,
                y=y,
                groups=None,
                splits=[],
                scoring=None,
                metric="log evidence",
                classifier=bool(is_classifier(estimator)),
            )
        scoring: str | list[str] | None = (
            list(self.cv.scoring) if isinstance(self.cv.scoring, tuple) else self.cv.scoring
        )
        _check_scoring(scoring, err)
        try:
            _, metric = resolve_scorers(estimator, scoring, self.cv.metric, "the [cv] table")
        except InvalidParameterError as exc:
            raise err(f"[cv] scoring: {exc}") from None
        cv = _make_splitter(self.cv, is_classifier(estimator), groups is not None, self.seed, err)
        try:
            splits = resolve_splits(cv, estimator, X, y, groups, "the [cv] table")
        except InvalidParameterError as exc:
            raise err(f"[cv]: {exc}") from None
        return Prepared(
            estimator=estimator,
            X=X,
            y=y,
            groups=groups,
            splits=splits,
            scoring=scoring,
            metric=metric,
            classifier=bool(is_classifier(estimator)),
        )


@dataclasses.dataclass
class Prepared:
    """What a spec names, loaded and checked: ready for :func:`twiddle.tune`.

    Attributes
    ----------
    estimator : scikit-learn estimator
        Built with the fixed hyperparameters.
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
    groups : ndarray of shape (n_samples,) or None
    splits : list of (ndarray, ndarray)
        The (train, test) indices of each fold (empty with ``method = "evidence"``).
    scoring : str, list of str or None
    metric : str
        Name of the optimised score ("score" when the spec gives no scoring).
    classifier : bool
    """

    estimator: Any
    X: Any
    y: Any
    groups: Any
    splits: list[tuple[np.ndarray, np.ndarray]]
    scoring: str | list[str] | None
    metric: str
    classifier: bool


class _Errors:
    """Makes :class:`SpecError` messages that start with the spec file."""

    def __init__(self, display: str) -> None:
        self.display = display

    def __call__(self, text: str) -> SpecError:
        return SpecError(f"In {self.display}, {text}")


# ----------------------------------------------------------------------------------
# Reading the TOML document
# ----------------------------------------------------------------------------------
def load_spec(path: str | os.PathLike[str]) -> RunSpec:
    """Read and check a TOML study spec.

    Parameters
    ----------
    path : str or os.PathLike
        The spec file.

    Returns
    -------
    RunSpec

    Raises
    ------
    SpecError
        If the file is missing, is not valid TOML, or has an unknown table or key, a
        value of the wrong type, or an invalid search space.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> text = '''
    ... [data]
    ... loader = "load_iris"
    ... [estimator]
    ... class = "sklearn.tree.DecisionTreeClassifier"
    ... [space.max_depth]
    ... type = "int"
    ... low = 1
    ... high = 8
    ... [run]
    ... n_trials = 10
    ... '''
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = pathlib.Path(tmp, "iris_tree.toml")
    ...     _ = p.write_text(text)
    ...     spec = load_spec(p)
    >>> spec.name, spec.n_trials, list(spec.space)
    ('iris_tree', 10, ['max_depth'])
    """
    display = os.fspath(path)
    file = Path(display).expanduser()
    if not file.is_file():
        where = "is a directory" if file.is_dir() else "does not exist"
        raise SpecError(f"The spec file {display!r} {where}; give the path of a TOML file.")
    try:
        with open(file, "rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{display} is not valid TOML: {exc}.") from None
    except OSError as exc:
        raise SpecError(f"Cannot read the spec file {display!r}: {exc.strerror}.") from None
    return _Reader(display, Path(os.path.abspath(file))).read(doc)


class _Reader:
    """Checks one parsed TOML document and turns it into a :class:`RunSpec`."""

    def __init__(self, display: str, path: Path) -> None:
        self.path = path
        self.err = _Errors(display)
        self.display = display

    # -- generic checks ---------------------------------------------------------------
    def keys(self, table: Mapping[str, Any], where: str, allowed: Sequence[str]) -> None:
        for key in table:
            if key not in allowed:
                raise self.err(
                    f"{where} has an unknown key {key!r}.{_did_you_mean(key, allowed)} "
                    f"Allowed keys: {', '.join(allowed)}."
                )

    def table(self, doc: Mapping[str, Any], name: str) -> dict[str, Any]:
        value = doc.get(name, {})
        if not isinstance(value, dict):
            raise self.err(
                f"{name!r} must be a table ([{name}] followed by its keys). Got {value!r} "
                f"({_type_name(value)}) instead."
            )
        return value

    def fail(self, where: str, expected: str, value: Any) -> SpecError:
        return self.err(f"{where} must be {expected}. Got {value!r} ({_type_name(value)}) instead.")

    def string(
        self,
        table: Mapping[str, Any],
        key: str,
        where: str,
        choices: Sequence[str] | None = None,
    ) -> str | None:
        if key not in table:
            return None
        value = table[key]
        if not isinstance(value, str) or not value:
            raise self.fail(f"{where} {key}", "a non-empty string", value)
        if choices is not None and value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise self.err(
                f"{where} {key} must be one of {listed}. Got {value!r} instead."
                + _did_you_mean(value, choices)
            )
        return value

    def integer(self, table: Mapping[str, Any], key: str, where: str, minimum: int) -> int | None:
        if key not in table:
            return None
        value = table[key]
        if not _is_int(value) or value < minimum:
            raise self.fail(f"{where} {key}", f"an integer >= {minimum}", value)
        return int(value)

    def boolean(self, table: Mapping[str, Any], key: str, where: str) -> bool | None:
        if key not in table:
            return None
        value = table[key]
        if not isinstance(value, bool):
            raise self.fail(f"{where} {key}", "true or false", value)
        return value

    # -- the document -------------------------------------------------------------------
    def read(self, doc: Mapping[str, Any]) -> RunSpec:
        for key, value in doc.items():
            if key in TABLE_KEYS:
                continue
            home = [t for t, keys in TABLE_KEYS.items() if key in keys]
            if home and not isinstance(value, dict):
                raise self.err(
                    f"the key {key!r} is at the top level; it belongs in the [{home[0]}] table."
                )
            what = "table" if isinstance(value, dict) else "top-level key"
            raise self.err(
                f"the spec has an unknown {what} {key!r}.{_did_you_mean(key, list(TABLE_KEYS))} "
                f"Allowed tables: {', '.join(f'[{t}]' for t in TABLE_KEYS)}."
            )
        study = self.table(doc, "study")
        self.keys(study, "[study]", TABLE_KEYS["study"])
        name = self.string(study, "name", "[study]") or self.path.stem
        storage_text = self.string(study, "storage", "[study]") or f"{self.path.stem}.db"
        try:
            storage = resolve_storage(storage_text, self.path.parent)
        except SpecError as exc:
            raise self.err(f"[study] storage: {exc}") from None
        sampler = self.string(study, "sampler", "[study]", SAMPLERS) or "auto"
        seed = self.integer(study, "seed", "[study]", 0)
        direction = self.string(study, "direction", "[study]", ("maximize", "minimize"))
        if direction == "minimize":
            raise self.err(
                "[study] direction = 'minimize' is not supported: twiddle run scores "
                "configurations with scikit-learn scorers, where greater is better, and "
                "maximises them. To minimise an error, use its negated scorer (e.g. "
                "scoring = 'neg_mean_squared_error') and omit direction or set it to "
                "'maximize'."
            )
        data = self.read_data(self.table(doc, "data"), "data" in doc)
        estimator = self.read_estimator(self.table(doc, "estimator"), "estimator" in doc)
        space = self.read_space(doc)
        consumed = {i for d in space.derived.values() for i in d.inputs}
        for key in [*(n for n in space if n not in consumed), *space.derived]:
            if key in estimator.params:
                table = "derived" if key in space.derived else "space"
                raise self.err(
                    f"{key!r} is both fixed in [estimator] params and tuned in "
                    f"[{table}.{key}]; remove one of them."
                )
        cv = self.read_cv(self.table(doc, "cv"))
        if cv.groups is not None and data.csv is None:
            raise self.err(
                "[cv] groups names a column, which needs a CSV data set ([data] csv = ...); "
                "the bundled loaders have no group column."
            )
        run = self.table(doc, "run")
        self.keys(run, "[run]", TABLE_KEYS["run"])
        method = self.string(run, "method", "[run]", METHODS) or "cv"
        if method == "evidence" and "cv" in doc:
            raise self.err(
                "[run] method = 'evidence' scores each configuration by the log evidence of "
                "one fit on all the data, so the [cv] table would be ignored; remove it, or "
                "set method = 'cv'."
            )
        scheduler = self.string(run, "scheduler", "[run]", tuple(SCHEDULER_KEYS))
        if scheduler is not None and method == "evidence":
            raise self.err(
                f"[run] scheduler = {scheduler!r} stops configurations between folds, and "
                "method = 'evidence' has no folds; remove one of them."
            )
        scheduler_params = self.read_scheduler(doc, scheduler)
        n_trials = self.integer(run, "n_trials", "[run]", 1)
        timeout: float | None = None
        if "timeout" in run:
            value = run["timeout"]
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise self.fail("[run] timeout", "a number of seconds > 0", value)
            timeout = float(value)
        n_jobs = 1
        if "n_jobs" in run:
            value = run["n_jobs"]
            if not _is_int(value) or not (value >= 1 or value == -1):
                raise self.fail("[run] n_jobs", "an integer >= 1, or -1 for every CPU", value)
            n_jobs = int(value) if value >= 1 else max(1, os.cpu_count() or 1)
        if n_trials is None and timeout is None and sampler != "grid":
            raise self.err(
                "[run] needs a budget: give n_trials (the total number of trials of the "
                "study), timeout (seconds), or both."
            )
        return RunSpec(
            path=self.path,
            display=self.display,
            name=name,
            storage=storage,
            sampler=sampler,
            seed=seed,
            data=data,
            estimator=estimator,
            space=space,
            cv=cv,
            n_trials=n_trials,
            timeout=timeout,
            n_jobs=n_jobs,
            method=method,
            scheduler=scheduler,
            scheduler_params=scheduler_params,
        )

    def read_scheduler(self, doc: Mapping[str, Any], name: str | None) -> dict[str, Any]:
        """The ``[scheduler]`` table, checked against the scheduler ``[run]`` names."""
        if "scheduler" not in doc:
            return {}
        if not isinstance(doc["scheduler"], dict):
            raise self.err(
                f"the key 'scheduler' is at the top level (= {doc['scheduler']!r}); it belongs "
                "in the [run] table, and a [scheduler] table, if any, holds its parameters."
            )
        table = self.table(doc, "scheduler")
        if name is None:
            raise self.err(
                "[scheduler] sets the parameters of the scheduler named by [run] scheduler, "
                "and [run] names none; add scheduler = 'racing' (or 'halving', 'median') to "
                "[run], or remove [scheduler]."
            )
        self.keys(table, f"[scheduler] (for scheduler = {name!r})", SCHEDULER_KEYS[name])
        try:
            build_scheduler(name, table)
        except InvalidParameterError as exc:
            raise self.err(f"in [scheduler]: {exc}") from None
        return dict(table)

    def read_data(self, table: Mapping[str, Any], present: bool) -> DataSpec:
        if not present:
            raise self.err(
                "the [data] table is missing; give loader = 'load_digits' (a scikit-learn "
                "bundled data set) or csv = 'file.csv' with target = 'column'."
            )
        self.keys(table, "[data]", TABLE_KEYS["data"])
        loader = self.string(table, "loader", "[data]")
        csv_text = self.string(table, "csv", "[data]")
        if (loader is None) == (csv_text is None):
            raise self.err(
                "[data] needs exactly one of loader (a scikit-learn bundled data set, e.g. "
                "'load_digits') and csv (a file with a header row)."
            )
        if loader is not None:
            for key in ("target", "features", "delimiter"):
                if key in table:
                    raise self.err(
                        f"[data] {key} applies to CSV files only; a loader provides its "
                        "own features and target."
                    )
            if loader not in BUNDLED_LOADERS:
                hint = _did_you_mean(loader, BUNDLED_LOADERS)
                if loader.startswith("fetch_"):
                    hint = " fetch_* functions download their data, which a spec does not do."
                raise self.err(
                    f"[data] loader {loader!r} is not a scikit-learn bundled data set.{hint} "
                    f"Choose one of {', '.join(BUNDLED_LOADERS)}, or use csv = 'file.csv'."
                )
            return DataSpec(loader=loader)
        assert csv_text is not None
        target = self.string(table, "target", "[data]")
        if target is None:
            raise self.err("[data] csv needs target = 'column' (the column to predict).")
        features: tuple[str, ...] | None = None
        if "features" in table:
            value = table["features"]
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(v, str) and v for v in value)
            ):
                raise self.fail("[data] features", "a non-empty array of column names", value)
            features = tuple(value)
            if target in features:
                raise self.err(f"[data] features lists the target column {target!r}; remove it.")
        delimiter = self.string(table, "delimiter", "[data]") or ","
        if len(delimiter) != 1:
            raise self.fail("[data] delimiter", "one character", delimiter)
        path = Path(csv_text).expanduser()
        if not path.is_absolute():
            path = Path(os.path.abspath(self.path.parent / path))
        return DataSpec(csv=path, target=target, features=features, delimiter=delimiter)

    def read_estimator(self, table: Mapping[str, Any], present: bool) -> EstimatorSpec:
        if not present:
            raise self.err(
                "the [estimator] table is missing; give class = 'package.module.Name', e.g. "
                "class = 'sklearn.neural_network.MLPClassifier'."
            )
        self.keys(table, "[estimator]", TABLE_KEYS["estimator"])
        path = self.string(table, "class", "[estimator]")
        if path is None:
            raise self.err(
                "[estimator] needs class = 'package.module.Name' (or 'module:Name'), the "
                "import path of an estimator class or of a function that returns one."
            )
        params = table.get("params", {})
        if not isinstance(params, dict):
            raise self.fail("[estimator] params", "a table of fixed hyperparameters", params)
        return EstimatorSpec(path=path, params=dict(params))

    def read_space(self, doc: Mapping[str, Any]) -> Space:
        raw = doc.get("space")
        if not isinstance(raw, dict) or not raw:
            raise self.err(
                "the spec has no search space; add at least one [space.NAME] table, e.g.\n"
                "  [space.alpha]\n  type = 'float'\n  low = 1e-6\n  high = 1e-1\n  log = true"
            )
        dims: dict[str, Dimension] = {}
        for name, body in raw.items():
            where = f"[space.{name}]"
            if not isinstance(body, dict):
                raise self.err(
                    f"{where} must be a table with type, low and high (or choices). Got "
                    f"{body!r} ({_type_name(body)}) instead."
                )
            kind = body.get("type")
            if kind not in _DIMENSION_KEYS:
                if "type" not in body:
                    hint = "it has no type"
                else:
                    hint = f"its type is {kind!r}" + (
                        _did_you_mean(kind, list(_DIMENSION_KEYS)) if isinstance(kind, str) else ""
                    )
                raise self.err(f"{where} needs type = 'float', 'int' or 'categorical'; {hint}.")
            self.keys(body, where, _DIMENSION_KEYS[kind])
            self.boolean(body, "log", where)
            for key in ("low", "high", "step"):
                if key in body and not _is_number(body[key]):
                    raise self.fail(f"{where} {key}", "a number", body[key])
            if "choices" in body and not isinstance(body["choices"], list):
                raise self.fail(f"{where} choices", "an array of values", body["choices"])
            if "when" in body and (not isinstance(body["when"], dict) or not body["when"]):
                raise self.fail(
                    f"{where} when",
                    "a table from dimension names to the value(s) that activate this one, "
                    "e.g. when = { kernel = 'poly' }",
                    body["when"],
                )
            try:
                dims[name] = dimension_from_json(body)
            except InvalidSpaceError as exc:
                raise self.err(f"{where}: {exc}") from None
        derived: dict[str, Derived] = {}
        raw_derived = self.table(doc, "derived")
        for key, body in raw_derived.items():
            where = f"[derived.{key}]"
            if not isinstance(body, dict):
                raise self.err(
                    f"{where} must be a table: type = 'repeat', value = 'DIM', times = 'DIM'. "
                    f"Got {body!r} ({_type_name(body)}) instead."
                )
            self.keys(body, where, _DERIVED_KEYS)
            if body.get("type") != "repeat":
                raise self.err(
                    f"{where} type must be 'repeat' (the only derived parameter a spec can "
                    f"describe). Got {body.get('type')!r} instead."
                )
            for part in ("value", "times"):
                if part not in body:
                    raise self.err(f"{where} needs {part} = 'DIMENSION NAME'.")
                if not isinstance(body[part], str):
                    raise self.fail(f"{where} {part}", "a dimension name (a string)", body[part])
                if body[part] not in dims:
                    raise self.err(
                        f"{where} {part} = {body[part]!r} is not a dimension of [space]."
                        f"{_did_you_mean(body[part], list(dims))} Dimensions: {', '.join(dims)}."
                    )
            try:
                derived[key] = derived_from_json(body)
            except InvalidSpaceError as exc:
                raise self.err(f"{where}: {exc}") from None
        try:
            return Space(dims, derived=derived or None)
        except InvalidSpaceError as exc:
            raise self.err(
                f"the search space ([space.*] / [derived.*]) is invalid: {exc}"
            ) from None

    def read_cv(self, table: Mapping[str, Any]) -> CVSpec:
        self.keys(table, "[cv]", TABLE_KEYS["cv"])
        folds = self.integer(table, "folds", "[cv]", 2)
        shuffle = self.boolean(table, "shuffle", "[cv]")
        groups = self.string(table, "groups", "[cv]")
        scoring: str | tuple[str, ...] | None = None
        if "scoring" in table:
            value = table["scoring"]
            if isinstance(value, str) and value:
                scoring = value
            elif (
                isinstance(value, list)
                and value
                and all(isinstance(v, str) and v for v in value)
                and len(set(value)) == len(value)
            ):
                scoring = tuple(value)
            else:
                raise self.fail(
                    "[cv] scoring", "a scorer name or an array of distinct scorer names", value
                )
        metric = self.string(table, "metric", "[cv]")
        if metric is not None:
            names = (scoring,) if isinstance(scoring, str) else scoring or ()
            if metric not in names:
                raise self.err(
                    f"[cv] metric {metric!r} must be one of the scorers in [cv] scoring "
                    f"({', '.join(repr(n) for n in names) or 'none given'})."
                    + _did_you_mean(metric, list(names))
                )
        error_score: float | str = math.nan
        if "error_score" in table:
            value = table["error_score"]
            if value == "raise":
                error_score = "raise"
            elif _is_number(value):
                error_score = float(value)
            else:
                raise self.fail("[cv] error_score", "a number (nan allowed) or 'raise'", value)
        return CVSpec(
            folds=5 if folds is None else folds,
            shuffle=bool(shuffle),
            groups=groups,
            scoring=scoring,
            metric=metric,
            error_score=error_score,
        )


# ----------------------------------------------------------------------------------
# Preparing: estimator, data, scorers, folds
# ----------------------------------------------------------------------------------
def _import_object(path: str, directory: Path, err: _Errors) -> Any:
    """The object at ``"pkg.mod.Name"`` or ``"pkg.mod:Name"`` (``Name`` may be dotted)."""
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    where = f"[estimator] class = {path!r}"
    if not module_name or not attr:
        raise err(
            f"{where} is not an import path; write 'package.module.Name' or 'package.module:Name'."
        )
    spec_dir = str(directory)
    if spec_dir not in sys.path:
        sys.path.insert(0, spec_dir)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise err(
            f"{where} cannot be imported: {exc}. Check the spelling, install the package, or "
            "put the module next to the spec file (its directory is importable)."
        ) from None
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            owner = ".".join([module_name, *attr.split(".")[:i]])
            public = [n for n in dir(obj) if not n.startswith("_")]
            raise err(
                f"{where} cannot be imported: {owner!r} has no attribute {part!r}."
                + _did_you_mean(part, public)
            )
        obj = getattr(obj, part)
    return obj


def _build_estimator(spec: EstimatorSpec, directory: Path, err: _Errors) -> Any:
    obj = _import_object(spec.path, directory, err)
    where = f"[estimator] class = {spec.path!r}"
    if not callable(obj):
        raise err(
            f"{where} is {obj!r}, neither a class nor a function; it cannot build an estimator."
        )
    try:
        sig: inspect.Signature | None = inspect.signature(obj)
    except (TypeError, ValueError):
        sig = None
    if sig is not None and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        accepted = [
            n
            for n, p in sig.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        for key in spec.params:
            if key not in accepted:
                raise err(
                    f"[estimator] params has {key!r}, which {spec.path} does not accept."
                    f"{_did_you_mean(key, accepted)} Accepted: {', '.join(accepted) or 'none'}."
                )
    try:
        estimator = obj(**spec.params)
    except (TypeError, ValueError) as exc:
        raise err(f"{where} cannot be built with params {spec.params!r}: {exc}") from None
    missing = [
        m for m in ("fit", "get_params", "set_params") if not callable(getattr(estimator, m, None))
    ]
    if missing:
        raise err(
            f"{where} gives {type(estimator).__name__!s}, which is not a scikit-learn estimator "
            f"(it has no {', '.join(missing)}). Point class at an estimator class or at a "
            "function that returns one."
        )
    return estimator


def _check_addresses(estimator: Any, space: Space, spec: EstimatorSpec, err: _Errors) -> None:
    """Every parameter the space sets exists on the estimator (nested ``a__b`` included)."""
    valid = sorted(estimator.get_params(deep=True))
    consumed = {i for d in space.derived.values() for i in d.inputs}
    label = type(estimator).__name__
    for name in space:
        if name not in consumed and name not in valid:
            raise err(
                f"[space.{name}] tunes {name!r}, which {label} (from {spec.path}) does not "
                f"have.{_did_you_mean(name, valid)} Its parameters: {', '.join(valid)}."
            )
    for name in space.derived:
        if name not in valid:
            raise err(
                f"[derived.{name}] sets {name!r}, which {label} (from {spec.path}) does not "
                f"have.{_did_you_mean(name, valid)} Its parameters: {', '.join(valid)}."
            )


def _probe_configurations(space: Space) -> list[dict[str, Any]]:
    """A few configurations that reach both ends of every range and every choice."""
    d = len(space)
    points = [np.zeros(d), np.ones(d), np.full(d, 0.5)]
    for j, name in enumerate(space):
        n = space[name].cardinality
        if math.isfinite(n) and n <= 64 and space[name].kind == "categorical":
            for i in range(int(n)):
                u = np.full(d, 0.5)
                u[j] = (i + 0.5) / n
                points.append(u)
    return [space.decode(u) for u in points]


def _validator(estimator: Any) -> Callable[[], Any] | None:
    """scikit-learn's own parameter check of ``estimator``, if it declares constraints."""
    if not isinstance(getattr(estimator, "_parameter_constraints", None), dict):
        return None
    check = getattr(estimator, "_validate_params", None)
    return check if callable(check) else None


def _check_configurations(estimator: Any, space: Space, err: _Errors) -> None:
    """Check the fixed parameters, then a few configurations set on clones.

    scikit-learn estimators declare the types and ranges of their parameters and
    check them in ``fit``; running that check now reports a bad fixed value or a
    bad choice in the space before any training. Other estimators are only checked
    by ``set_params``.
    """
    from sklearn.base import clone

    check = _validator(estimator)
    if check is not None:
        try:
            check()
        except (TypeError, ValueError) as exc:
            raise err(f"[estimator] params: {exc}") from None
    for config in _probe_configurations(space):
        params = space.to_estimator_params(config)
        try:
            est = clone(estimator)
            est.set_params(**params)
            validate = _validator(est)
            if validate is not None:
                validate()
        except (TypeError, ValueError) as exc:
            raise err(
                f"the search space reaches an invalid estimator: {type(estimator).__name__} "
                f"rejects {params!r}: {exc}"
            ) from None


def _load_data(data: DataSpec, groups: str | None, err: _Errors) -> tuple[Any, Any, Any]:
    if data.loader is not None:
        import sklearn.datasets

        loader = getattr(sklearn.datasets, data.loader)
        X, y = loader(return_X_y=True)
        return np.asarray(X, dtype=float), np.asarray(y), None
    assert data.csv is not None and data.target is not None
    return _read_csv(data, groups, err)


def _read_csv(data: DataSpec, groups: str | None, err: _Errors) -> tuple[Any, Any, Any]:
    assert data.csv is not None and data.target is not None
    path = data.csv
    if not path.is_file():
        raise err(
            f"[data] csv: the file {str(path)!r} does not exist (relative paths are read from "
            "the spec file's directory)."
        )
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [row for row in csv.reader(fh, delimiter=data.delimiter) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise err(f"[data] csv: cannot read {str(path)!r}: {exc}") from None
    if len(rows) < 2:
        raise err(f"[data] csv: {str(path)!r} needs a header row and at least one data row.")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    for lineno, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise err(
                f"[data] csv: row {lineno} of {str(path)!r} has {len(row)} fields; the header "
                f"has {len(header)}."
            )
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise err(f"[data] csv: {str(path)!r} repeats column name(s) {dupes}.")

    def column(name: str, what: str) -> int:
        if name not in header:
            raise err(
                f"{what} {name!r} is not a column of {str(path)!r}.{_did_you_mean(name, header)} "
                f"Columns: {', '.join(header)}."
            )
        return header.index(name)

    t = column(data.target, "[data] target")
    g = None if groups is None else column(groups, "[cv] groups")
    if data.features is not None:
        cols = [column(f, "[data] features lists") for f in data.features]
    else:
        cols = [i for i in range(len(header)) if i != t and i != g]
    if not cols:
        raise err(f"[data] csv: {str(path)!r} has no feature column besides the target.")
    X = np.empty((len(body), len(cols)))
    for j, c in enumerate(cols):
        for i, row in enumerate(body):
            cell = row[c].strip()
            if cell.lower() in _MISSING_CELLS:
                X[i, j] = np.nan
                continue
            try:
                X[i, j] = float(cell)
            except ValueError:
                raise err(
                    f"[data] csv: column {header[c]!r} has the non-numeric value {cell!r} on "
                    f"line {i + 2} of {str(path)!r}. Features must be numbers: encode the "
                    "column, or leave it out with [data] features = [...]."
                ) from None
    y = _target_array([row[t].strip() for row in body])
    group_array = None if g is None else np.array([row[g].strip() for row in body])
    return X, y, group_array


def _target_array(cells: list[str]) -> np.ndarray:
    """Integers, floats or strings: the narrowest type every cell parses as."""
    for kind in (int, float):
        try:
            return np.array([kind(c) for c in cells])
        except ValueError:
            continue
    return np.array(cells)


def _check_scoring(scoring: str | list[str] | None, err: _Errors) -> None:
    """Every scorer name is one scikit-learn knows."""
    from sklearn.metrics import get_scorer_names

    if scoring is None:
        return
    known = list(get_scorer_names())
    for name in [scoring] if isinstance(scoring, str) else scoring:
        if name not in known:
            raise err(
                f"[cv] scoring {name!r} is not a scikit-learn scorer.{_did_you_mean(name, known)} "
                "See sklearn.metrics.get_scorer_names() for the names (e.g. 'accuracy', "
                "'f1_macro', 'roc_auc', 'neg_mean_squared_error', 'r2')."
            )


def _make_splitter(
    cv: CVSpec, classifier: bool, grouped: bool, seed: int | None, err: _Errors
) -> Any:
    """``cv.folds`` itself without shuffling; a shuffling scikit-learn splitter otherwise."""
    if not cv.shuffle:
        return cv.folds
    from sklearn.model_selection import (
        GroupKFold,
        KFold,
        StratifiedGroupKFold,
        StratifiedKFold,
    )

    state = 0 if seed is None else seed
    if not grouped:
        kind = StratifiedKFold if classifier else KFold
        return kind(cv.folds, shuffle=True, random_state=state)
    if classifier:
        return StratifiedGroupKFold(cv.folds, shuffle=True, random_state=state)
    if "shuffle" not in inspect.signature(GroupKFold).parameters:
        raise err(
            "[cv] shuffle = true with groups for a regressor needs scikit-learn >= 1.6 "
            "(GroupKFold(shuffle=True)); set shuffle = false or upgrade scikit-learn."
        )
    return GroupKFold(cv.folds, shuffle=True, random_state=state)
