"""twiddle: tune the hyperparameters of machine-learning models and neural networks.

Hyperparameters are fixed before training (learning rate, batch size, number of
layers, regularisation); parameters are learned in training. twiddle searches the
former, by k-fold cross-validation with every fold recorded.
"""

from __future__ import annotations

from twiddle._compare import compare
from twiddle._cv import CVResult, TuneResult, cross_validate, tune
from twiddle._errors import (
    AllTrialsFailedError,
    InvalidParameterError,
    InvalidSpaceError,
    SpecError,
    StorageError,
    StudyMismatchError,
    TrainingDivergedError,
    TrialPruned,
    TwiddleError,
    WorkerCrashedError,
)
from twiddle._nested import NestedCVResult, nested_cv
from twiddle._samplers import (
    AutoSampler,
    GridSampler,
    History,
    RandomSampler,
    Sampler,
    SobolSampler,
    TPESampler,
)
from twiddle._schedulers import FoldRacing, Hyperband, MedianStopping, SuccessiveHalving
from twiddle._space import Categorical, Derived, Dimension, Float, Int, Repeat, Space
from twiddle._storage import MemoryStorage, SQLiteStorage, Storage, get_storage
from twiddle._study import Study, Trial
from twiddle._termination import Terminator
from twiddle._trial import FrozenTrial, TrialState

__version__ = "0.1.0"

__all__ = [
    "AllTrialsFailedError",
    "AutoSampler",
    "CVResult",
    "Categorical",
    "Derived",
    "Dimension",
    "Float",
    "FoldRacing",
    "FrozenTrial",
    "GPSampler",
    "GridSampler",
    "History",
    "Hyperband",
    "Int",
    "InvalidParameterError",
    "InvalidSpaceError",
    "MedianStopping",
    "MemoryStorage",
    "NestedCVResult",
    "RandomSampler",
    "Repeat",
    "SQLiteStorage",
    "Sampler",
    "SobolSampler",
    "Space",
    "SpecError",
    "Storage",
    "StorageError",
    "Study",
    "StudyMismatchError",
    "SuccessiveHalving",
    "TPESampler",
    "Terminator",
    "TrainingDivergedError",
    "Trial",
    "TrialPruned",
    "TrialState",
    "TuneResult",
    "TwiddleError",
    "WorkerCrashedError",
    "__version__",
    "compare",
    "cross_validate",
    "get_storage",
    "nested_cv",
    "tune",
]


def __getattr__(name: str) -> object:
    # GPSampler needs scipy.optimize, which is slow to import: load it on first use
    if name == "GPSampler":
        from twiddle._samplers._gp import GPSampler

        return GPSampler
    raise AttributeError(f"module 'twiddle' has no attribute {name!r}")
