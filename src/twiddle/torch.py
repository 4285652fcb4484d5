"""Small PyTorch networks as scikit-learn estimators, ready to be tuned by twiddle.

:class:`MLPClassifier` and :class:`MLPRegressor` are multi-layer perceptrons that follow
scikit-learn's estimator contract (``get_params``, ``set_params`` and ``clone`` work; the
learned state ends with ``_``), so they run in :func:`twiddle.tune`,
:func:`twiddle.cross_validate` and :class:`twiddle.sklearn.TuneSearchCV` like any other
estimator. Their ``fit`` takes an optional twiddle trial and reports the validation loss
after each epoch to it, so a study records a learning curve per trial and a scheduler can
stop a poor trial early. A learning rate that makes training blow up raises
:class:`twiddle.TrainingDivergedError`, which fails that trial with a hint instead of
recording a meaningless score. :func:`lr_range_test` finds a sensible range for the
learning rate before a search.

This module imports PyTorch; ``import twiddle`` does not. Install it with
``pip install "twiddle[torch]"``.

Notation
--------
epoch
    One pass over the training part of the data (``fit`` runs ``epochs`` of them).
validation loss
    The loss on the ``validation_fraction`` of the data held out inside ``fit``; this is
    what is reported to a trial.

References
----------
L. N. Smith, "Cyclical learning rates for training neural networks", WACV 2017
(the learning-rate range test).
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

try:
    import torch
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        'twiddle.torch needs PyTorch, which is an optional extra: pip install "twiddle[torch]"'
    ) from err

from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from twiddle._errors import InvalidParameterError, TrainingDivergedError, TrialPruned
from twiddle._validation import check_choice, check_float, check_in, check_int, seed_entropy

__all__ = ["LRRangeTestResult", "MLPClassifier", "MLPRegressor", "lr_range_test"]

_OPTIMIZERS = ("adam", "sgd", "adamw")
_DIVERGENCE_FACTOR = 1e3  # training loss this many times its first-epoch value: diverged
_ARCHITECTURE = ("n_layers", "width", "dropout")  # passed to a user `module` factory


# ----------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _seeded(entropy: int) -> Iterator[None]:
    """Seed torch's global generator inside a fork, so the caller's RNG state is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(entropy)
        yield


def _mlp(n_features: int, n_outputs: int, n_layers: int, width: int, dropout: float) -> Any:
    layers: list[torch.nn.Module] = []
    size = n_features
    for _ in range(n_layers):
        layers += [torch.nn.Linear(size, width), torch.nn.ReLU()]
        if dropout > 0:
            layers.append(torch.nn.Dropout(dropout))
        size = width
    layers.append(torch.nn.Linear(size, n_outputs))
    return torch.nn.Sequential(*layers)


def _call_factory(
    factory: Callable[..., Any], n_features: int, n_outputs: int, arch: dict[str, Any]
) -> Any:
    """Call a user factory with the architecture hyperparameters it accepts."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        kwargs = arch
    else:
        params = sig.parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            kwargs = arch
        else:
            kwargs = {k: v for k, v in arch.items() if k in sig.parameters}
    module = factory(n_features, n_outputs, **kwargs)
    if not isinstance(module, torch.nn.Module):
        raise InvalidParameterError(
            "The 'module' parameter must be a callable returning a torch.nn.Module. "
            f"It returned {type(module).__name__} instead."
        )
    return module


def _module_dtype(module: Any) -> torch.dtype:
    for p in module.parameters():
        return p.dtype
    return torch.float32


def _diverged_message(epoch: int, loss: float, first: float | None, lr: float) -> str:
    seen = f"the training loss is {loss:.4g}"
    if first is not None and math.isfinite(loss):
        seen += f", more than {_DIVERGENCE_FACTOR:g} x its first-epoch value {first:.4g}"
    return (
        f"Training diverged at epoch {epoch}: {seen}. learning_rate={lr!r} is probably too "
        f"high; try a lower value such as {lr / 10:.3g} (for example search "
        f"twiddle.Float({lr / 1000:.3g}, {lr / 10:.3g}, log=True)), or run "
        "twiddle.torch.lr_range_test to find a range."
    )


# ----------------------------------------------------------------------------------
# the estimators
# ----------------------------------------------------------------------------------
class _BaseMLP(BaseEstimator):
    """Shared fitting logic; subclasses define the targets, the loss and the score."""

    def __init__(
        self,
        *,
        learning_rate: float = 1e-3,
        batch_size: int = 32,
        n_layers: int = 2,
        width: int = 64,
        weight_decay: float = 0.0,
        dropout: float = 0.0,
        epochs: int = 50,
        optimizer: str = "adam",
        momentum: float = 0.9,
        validation_fraction: float = 0.1,
        seed: int | np.random.Generator | None = None,
        module: Callable[..., Any] | None = None,
    ) -> None:
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_layers = n_layers
        self.width = width
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.epochs = epochs
        self.optimizer = optimizer
        self.momentum = momentum
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.module = module

    # -- subclass hooks ------------------------------------------------------------------
    def _targets(self, X: np.ndarray, y: Any) -> tuple[np.ndarray, np.ndarray, int]:
        raise NotImplementedError

    def _loss(self) -> Any:
        raise NotImplementedError

    def _target_tensor(self, y: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError

    def _val_score(self, out: torch.Tensor, y: np.ndarray) -> float:
        raise NotImplementedError

    # -- validation ----------------------------------------------------------------------
    def _check_params(self) -> None:
        where = type(self).__name__
        check_float(self.learning_rate, "learning_rate", where, minimum=0.0, exclusive=True)
        check_int(self.batch_size, "batch_size", where, minimum=1)
        check_int(self.n_layers, "n_layers", where, minimum=0)
        check_int(self.width, "width", where, minimum=1)
        if not (isinstance(self.weight_decay, str) and self.weight_decay == "evidence"):
            if isinstance(self.weight_decay, str):
                raise InvalidParameterError(
                    f"The 'weight_decay' parameter of {where} must be a float >= 0 or "
                    f"'evidence'. Got {self.weight_decay!r} instead."
                )
            check_float(self.weight_decay, "weight_decay", where, minimum=0.0)
        check_in(self.dropout, "dropout", where, "[0, 1)")
        check_int(self.epochs, "epochs", where, minimum=1)
        check_choice(self.optimizer, "optimizer", where, _OPTIMIZERS)
        check_float(self.momentum, "momentum", where, minimum=0.0)
        check_in(self.validation_fraction, "validation_fraction", where, "[0, 1)")
        if self.module is not None and not callable(self.module):
            raise InvalidParameterError(
                f"The 'module' parameter of {where} must be a callable "
                "module(n_features, n_outputs, **params) -> torch.nn.Module, or None. "
                f"Got {self.module!r} instead."
            )

    # -- building blocks (shared by fit and lr_range_test) ------------------------------
    def _prepare(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, int]:
        """Validate data, set the scaling parameters; return scaled X, encoded y, n_outputs."""
        self._check_params()
        X, y_enc, n_outputs = self._targets(X, y)
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[~(scale > 1e-12)] = 1.0
        self.x_mean_ = mean
        self.x_scale_ = scale
        return (X - mean) / scale, y_enc, n_outputs

    def _build(self, n_features: int, n_outputs: int) -> Any:
        arch: dict[str, Any] = {
            "n_layers": self.n_layers,
            "width": self.width,
            "dropout": float(self.dropout),
        }
        if self.module is None:
            return _mlp(n_features, n_outputs, **arch)
        return _call_factory(self.module, n_features, n_outputs, arch)

    def _by_evidence(self) -> bool:
        return isinstance(self.weight_decay, str)

    def _make_optimizer(self, module: Any, lr: float) -> torch.optim.Optimizer:
        params = module.parameters()
        # with weight_decay="evidence" the prior's penalty is part of the loss instead
        wd = 0.0 if self._by_evidence() else float(self.weight_decay)
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=float(self.momentum), weight_decay=wd)
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)

    # -- fit -----------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, *, trial: Any = None) -> Self:
        """Train the network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs; they are standardised inside (``x_mean_``, ``x_scale_``).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets (class labels for the classifier).
        trial : twiddle.Trial, optional
            If given, the validation loss after each epoch is reported to it with
            ``trial.report(val_loss, epoch)`` (epochs count from 1), and
            :class:`twiddle.TrialPruned` is raised when ``trial.should_prune()`` says so.

        Returns
        -------
        self
            The fitted estimator.

        Raises
        ------
        twiddle.TrainingDivergedError
            If the training loss becomes NaN or infinite, or exceeds 1000 times its
            first-epoch value (the learning rate is then almost always too high).
        """
        if trial is not None and not (
            callable(getattr(trial, "report", None))
            and callable(getattr(trial, "should_prune", None))
        ):
            raise InvalidParameterError(
                f"The 'trial' parameter of {type(self).__name__}.fit must be a twiddle.Trial "
                f"or None. Got {trial!r} instead."
            )
        X_s, y_enc, n_outputs = self._prepare(X, y)
        entropy = seed_entropy(self.seed, "seed", type(self).__name__)
        n = X_s.shape[0]
        n_val = round(float(self.validation_fraction) * n)
        if n_val < 1 or n - n_val < 1:
            n_val = 0
        order = np.random.default_rng([entropy, 1]).permutation(n)
        val_idx, train_idx = order[:n_val], order[n_val:]

        with _torch_threads(1), _seeded(entropy):
            module = self._build(X_s.shape[1], n_outputs)
            dtype = _module_dtype(module)
            Xt = torch.as_tensor(X_s[train_idx], dtype=dtype)
            yt = self._target_tensor(y_enc[train_idx], dtype)
            if n_val:
                Xv = torch.as_tensor(X_s[val_idx], dtype=dtype)
                yv_t = self._target_tensor(y_enc[val_idx], dtype)
                yv = y_enc[val_idx]
            else:  # nothing held out: the curve is measured on the training data
                Xv, yv_t, yv = Xt, yt, y_enc[train_idx]
            lr = float(self.learning_rate)
            opt = self._make_optimizer(module, lr)
            loss_fn = self._loss()
            gen = torch.Generator().manual_seed(entropy)
            bs = int(self.batch_size)
            n_train = Xt.shape[0]
            history: list[dict[str, float]] = []
            first: float | None = None
            self.module_ = module
            self.history_ = history
            self.n_iter_ = 0
            online = (
                _OnlineLaplace(self, module, int(self.epochs), Xt, yt)
                if self._by_evidence()
                else None
            )
            for epoch in range(1, int(self.epochs) + 1):
                module.train()
                perm = torch.randperm(n_train, generator=gen)
                total = 0.0
                for start in range(0, n_train, bs):
                    idx = perm[start : start + bs]
                    opt.zero_grad()
                    loss = loss_fn(module(Xt[idx]), yt[idx])
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise TrainingDivergedError(_diverged_message(epoch, value, first, lr))
                    if online is not None:
                        loss = loss + online.penalty(module)
                    loss.backward()
                    opt.step()
                    total += value * len(idx)
                train_loss = total / n_train
                if first is None:
                    first = train_loss
                if not math.isfinite(train_loss) or (
                    first > 0 and train_loss > _DIVERGENCE_FACTOR * first
                ):
                    raise TrainingDivergedError(_diverged_message(epoch, train_loss, first, lr))
                module.eval()
                with torch.no_grad():
                    out = module(Xv)
                    val_loss = float(loss_fn(out, yv_t))
                    val_score = self._val_score(out, yv)
                if not math.isfinite(val_loss):
                    raise TrainingDivergedError(_diverged_message(epoch, val_loss, first, lr))
                history.append(
                    {"train_loss": train_loss, "val_loss": val_loss, "val_score": val_score}
                )
                self.n_iter_ = epoch
                if online is not None:
                    online.after_epoch(module, epoch)
                if trial is not None:
                    trial.report(val_loss, epoch)
                    if trial.should_prune():
                        raise TrialPruned(f"pruned after epoch {epoch} (val_loss={val_loss:.4g})")
            module.eval()
            if online is not None:
                online.finish(module)
        return self

    def _forward(self, X: Any) -> torch.Tensor:
        check_is_fitted(self, "module_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        X_s = (X - self.x_mean_) / self.x_scale_
        with _torch_threads(1), torch.no_grad():
            self.module_.eval()
            return self.module_(torch.as_tensor(X_s, dtype=_module_dtype(self.module_)))


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier in PyTorch, trained with cross-entropy.

    Parameters
    ----------
    learning_rate : float, default 1e-3
        Step size of the optimiser; the hyperparameter that matters most. Search it on a
        log scale, e.g. ``twiddle.Float(1e-4, 1e-1, log=True)`` or the range
        :func:`lr_range_test` suggests.
    batch_size : int, default 32
        Mini-batch size.
    n_layers : int, default 2
        Number of hidden layers (0 gives a linear model).
    width : int, default 64
        Units per hidden layer.
    weight_decay : float or "evidence", default 0.0
        L2 penalty (decoupled for ``"adamw"``). ``"evidence"`` fits it while training,
        as a Gaussian prior whose penalty is part of the loss (for every optimiser),
        by the Laplace approximation of the evidence (online, Immer et al. 2021): the
        prior precision of each Linear layer's weights and bias (and, for the
        regressor, the noise precision) is moved to the evidence's maximum at the
        current weights after a quarter of the epochs and then every tenth of them,
        and the fitted values and ``log_evidence_`` are set after training, so a
        study can choose ``n_layers`` and ``width`` by
        :func:`twiddle.evidence.tune_evidence`. The evidence is that of the training
        part of the data (set ``validation_fraction=0`` to use all of it).
    dropout : float, default 0.0
        Dropout probability after each hidden layer, in [0, 1).
    epochs : int, default 50
        Passes over the training data.
    optimizer : {"adam", "sgd", "adamw"}, default "adam"
        The optimiser.
    momentum : float, default 0.9
        Momentum, used by ``"sgd"`` only.
    validation_fraction : float, default 0.1
        Fraction of the data held out inside ``fit`` to measure the validation loss
        reported to a trial. With 0 (or too few samples) the curve is measured on the
        training data.
    seed : int, numpy.random.Generator or None, default None
        Seeds the split, the initialisation, dropout and the shuffling. Global random
        state (numpy's and torch's) is left untouched.
    module : callable, optional
        ``module(n_features, n_outputs, **params) -> torch.nn.Module`` replacing the
        built-in network; it receives those of ``n_layers``, ``width`` and ``dropout``
        its signature accepts. It must return logits of shape (batch, n_outputs).

    Attributes
    ----------
    module_ : torch.nn.Module
        The trained network.
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    history_ : list of dict
        Per epoch: ``train_loss``, ``val_loss`` and ``val_score`` (accuracy).
    n_features_in_ : int
        Number of input features.
    n_iter_ : int
        Number of epochs run.
    x_mean_, x_scale_ : ndarray of shape (n_features,)
        Input standardisation.
    log_evidence_ : float
        With ``weight_decay="evidence"`` only, as are the attributes below: the
        Laplace log evidence of the training labels at the fitted precisions.
    prior_precision_ : ndarray of shape (n_groups,)
        Fitted precisions ``alpha_l`` of the Gaussian prior, one per Linear layer (its
        weight and bias), or a single one for a user module with other layers.
    noise_precision_ : float or None
        Fitted noise precision of the standardised targets (regressor; None here).
    weight_decay_ : ndarray of shape (n_groups,)
        The L2 coefficients that the ``alpha_l`` amount to on the mean training loss
        (``alpha_l / n`` for cross-entropy, ``2 alpha_l / (beta n C)`` for squared
        error).
    effective_parameters_ : float
        How many parameters the data determine (MacKay's gamma).
    laplace_structure_ : str
        The curvature used, ``"kron"`` (K-FAC, networks of Linear layers) or ``"diag"``.
    evidence_history_ : list of dict
        Each update: ``epoch``, ``prior_precision``, ``noise_precision``,
        ``log_evidence``, ``effective_parameters``, ``converged``.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from twiddle.torch import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier(learning_rate=1e-2, epochs=20, seed=0).fit(X, y)
    >>> clf.score(X, y) > 0.9
    True
    >>> len(clf.history_)
    20
    """

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.seed is None
        return tags

    def _targets(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, int]:
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        classes, y_enc = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data; "
                f"got 1 class ({classes[0]!r})."
            )
        self.classes_ = classes
        return X, y_enc.astype(np.int64), len(classes)

    def _loss(self) -> Any:
        return torch.nn.CrossEntropyLoss()

    def _target_tensor(self, y: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(y, dtype=torch.long)

    def _val_score(self, out: torch.Tensor, y: np.ndarray) -> float:
        return float((out.argmax(dim=1).numpy() == y).mean())

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, array of shape (n_samples, n_classes)."""
        return torch.softmax(self._forward(X), dim=1).double().numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels, array of shape (n_samples,)."""
        out = self._forward(X)
        return self.classes_[out.argmax(dim=1).numpy()]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor in PyTorch, trained with mean squared error.

    Inputs and targets are standardised inside ``fit``; predictions are in the units of
    ``y``. The parameters are those of :class:`MLPClassifier`; the loss reported to a
    trial is the mean squared error of the standardised targets, and ``val_score`` in
    ``history_`` is R².

    Attributes
    ----------
    module_ : torch.nn.Module
        The trained network.
    history_ : list of dict
        Per epoch: ``train_loss``, ``val_loss`` and ``val_score`` (R²).
    n_features_in_ : int
        Number of input features.
    n_iter_ : int
        Number of epochs run.
    x_mean_, x_scale_ : ndarray of shape (n_features,)
        Input standardisation.
    y_mean_, y_scale_ : ndarray of shape (n_outputs,)
        Target standardisation.
    log_evidence_, prior_precision_, noise_precision_, weight_decay_
        With ``weight_decay="evidence"``, as in :class:`MLPClassifier`; the evidence is
        of ``y`` in its own units, the precisions are those of the standardised targets.
    effective_parameters_, laplace_structure_, evidence_history_
        As in :class:`MLPClassifier`.

    Examples
    --------
    >>> import numpy as np
    >>> from twiddle.torch import MLPRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3))
    >>> y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=200)
    >>> reg = MLPRegressor(learning_rate=1e-2, epochs=30, seed=0).fit(X, y)
    >>> reg.score(X, y) > 0.9
    True
    """

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.seed is None
        tags.target_tags.multi_output = True
        return tags

    def _targets(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, int]:
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True, multi_output=True)
        y = np.asarray(y, dtype=np.float64)
        y2 = y.reshape(-1, 1) if y.ndim == 1 else y
        self.n_outputs_ = y2.shape[1]
        self._y_1d = y.ndim == 1
        mean = y2.mean(axis=0)
        scale = y2.std(axis=0)
        scale[~(scale > 1e-12)] = 1.0
        self.y_mean_ = mean
        self.y_scale_ = scale
        return X, (y2 - mean) / scale, y2.shape[1]

    def _loss(self) -> Any:
        return torch.nn.MSELoss()

    def _target_tensor(self, y: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(y, dtype=dtype)

    def _val_score(self, out: torch.Tensor, y: np.ndarray) -> float:
        resid = ((out.double().numpy() - y) ** 2).sum()
        total = ((y - y.mean(axis=0)) ** 2).sum()
        return float(1.0 - resid / total) if total > 0 else 0.0

    def predict(self, X: Any) -> np.ndarray:
        """Predictions, array of shape (n_samples,) or (n_samples, n_outputs)."""
        out = self._forward(X).double().numpy() * self.y_scale_ + self.y_mean_
        return out.ravel() if self._y_1d else out


# ----------------------------------------------------------------------------------
# weight decay by the Laplace evidence, online
# ----------------------------------------------------------------------------------
class _OnlineLaplace:
    """Fit the prior (and noise) precisions by the Laplace evidence while training.

    The network is trained on the MAP objective ``beta/2 sse + sum_l alpha_l/2
    |theta_l|^2`` (regression, on standardised targets) or ``sum NLL + sum_l alpha_l/2
    |theta_l|^2`` (classification), written per sample as the estimator's mean loss
    plus ``sum_l alpha_l / (beta n C) |theta_l|^2`` or ``sum_l alpha_l / (2 n)
    |theta_l|^2``. There is one prior precision ``alpha_l`` per Linear layer when
    every trainable parameter sits in one (the layer-wise prior of Immer et al. 2021;
    layers of different fan-in want different scales), else one for the whole
    network. After a burn-in of a quarter of the epochs, and then every tenth of them,
    the curvature is computed at the current weights (K-FAC for networks of Linear
    layers, else the exact diagonal) and the precisions move to the maximum of the
    Laplace evidence there (algorithm 1 of that paper, optimised to convergence
    rather than by a few gradient steps). A last update after training gives
    ``log_evidence_``.
    """

    def __init__(
        self, est: _BaseMLP, module: Any, epochs: int, X: torch.Tensor, y: torch.Tensor
    ) -> None:
        self.est = est
        self.X, self.y = X, y
        self.regression = isinstance(est, RegressorMixin)
        self.likelihood = "regression" if self.regression else "classification"
        self.n = int(X.shape[0])
        self.n_out = int(y.reshape(self.n, -1).shape[1]) if self.regression else 1
        trainable = [p for p in module.parameters() if p.requires_grad]
        linear = [
            m
            for m in module.modules()
            if isinstance(m, torch.nn.Linear) and any(p.requires_grad for p in m.parameters())
        ]
        in_linear = {id(p) for m in linear for p in m.parameters()}
        if linear and all(id(p) in in_linear for p in trainable):
            self.groups = [[p for p in m.parameters() if p.requires_grad] for m in linear]
        else:
            self.groups = [trainable]
        self.alphas = np.ones(len(self.groups))
        self.beta: float | None = 1.0 if self.regression else None
        self.burn_in = max(1, epochs // 4)
        self.every = max(1, epochs // 10)
        self.updates: list[dict[str, Any]] = []
        self.structure = ""

    def coefficients(self) -> np.ndarray:
        """Per group, the L2 coefficient c_l of the per-sample loss: loss + c_l |theta_l|^2."""
        if self.beta is not None:
            out: np.ndarray = self.alphas / (self.beta * self.n * self.n_out)
        else:
            out = self.alphas / (2.0 * self.n)
        return out

    def penalty(self, module: Any) -> torch.Tensor:
        total = torch.zeros(())
        for c, group in zip(self.coefficients(), self.groups, strict=True):
            total = total + float(c) * sum((p * p).sum() for p in group)
        return total

    def update(self, module: Any, epoch: int) -> None:
        from twiddle.evidence._laplace import _online_update

        was_training = module.training
        module.eval()
        try:
            alphas, beta, log_ev, gamma, self.structure, success = _online_update(
                module, self.X, self.y, self.likelihood, self.alphas, self.beta
            )
        finally:
            module.train(was_training)
        if math.isfinite(log_ev):
            if alphas.size != self.alphas.size:  # K-FAC did not apply: one shared prior
                self.groups = [[p for group in self.groups for p in group]]
            self.alphas = alphas
            self.beta = beta
        self.updates.append(
            {
                "epoch": epoch,
                "prior_precision": self.alphas.tolist(),
                "noise_precision": self.beta,
                "log_evidence": log_ev,
                "effective_parameters": gamma,
                "converged": success,
            }
        )

    def after_epoch(self, module: Any, epoch: int) -> None:
        if epoch >= self.burn_in and (epoch - self.burn_in) % self.every == 0:
            self.update(module, epoch)

    def finish(self, module: Any) -> None:
        self.update(module, self.est.n_iter_)
        est = self.est
        last = self.updates[-1]
        log_ev = float(last["log_evidence"])
        if self.regression:  # evidence of y as given, not of the standardised targets
            log_ev -= self.n * float(np.sum(np.log(est.y_scale_)))
        est.prior_precision_ = self.alphas.copy()
        est.noise_precision_ = self.beta
        est.weight_decay_ = 2.0 * self.coefficients()
        est.log_evidence_ = log_ev
        est.effective_parameters_ = float(last["effective_parameters"])
        est.laplace_structure_ = self.structure
        est.evidence_history_ = self.updates


# ----------------------------------------------------------------------------------
# learning-rate range test
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LRRangeTestResult:
    """What :func:`lr_range_test` measured.

    Attributes
    ----------
    lrs_ : ndarray of shape (n_recorded,)
        Learning rates tried, increasing.
    losses_ : ndarray of shape (n_recorded,)
        Smoothed (and bias-corrected) training loss at each learning rate; all finite.
    suggested_bounds_ : tuple of (float, float)
        ``(low, high)`` with ``lr_min <= low < high <= lr_max``, for a log-scale search.
    diverged_ : bool
        Whether the test stopped early because the loss blew up.
    """

    lrs_: np.ndarray
    losses_: np.ndarray
    suggested_bounds_: tuple[float, float]
    diverged_: bool


def _suggest_bounds(
    lrs: np.ndarray, losses: np.ndarray, lr_min: float, lr_max: float
) -> tuple[float, float]:
    if len(lrs) < 3:
        return lr_min, lr_max
    best = int(np.argmin(losses))
    high = float(lrs[best]) if best > 0 else float(lrs[-1])
    slope = np.gradient(losses, np.log(lrs))
    region = slope[: max(best, 1)] if best > 0 else slope
    steep = float(lrs[int(np.argmin(region))])
    low = max(lr_min, steep / 10)
    high = min(lr_max, high)
    if not low < high:
        low = max(lr_min, high / 100)
    if not low < high:
        low, high = lr_min, lr_max
    return float(low), float(high)


def lr_range_test(
    estimator: MLPClassifier | MLPRegressor,
    X: Any,
    y: Any,
    *,
    lr_min: float = 1e-6,
    lr_max: float = 1.0,
    n_steps: int = 100,
    seed: int | np.random.Generator | None = None,
) -> LRRangeTestResult:
    """Smith's learning-rate range test: which learning rates make this network learn.

    Trains a fresh copy of ``estimator`` (same architecture and optimiser; the estimator
    itself is not changed) for ``n_steps`` mini-batches while the learning rate grows
    exponentially from ``lr_min`` to ``lr_max``, and records the training loss,
    smoothed by an exponential moving average (factor 0.9, bias-corrected). The test
    stops early when the smoothed loss exceeds four times its minimum or stops being
    finite.

    The suggested bounds are ``low`` = the learning rate of steepest descent of the loss
    (against log learning rate) divided by 10, and ``high`` = the learning rate at which
    the loss is minimal, just before it starts to diverge. Search between them on a log
    scale: ``twiddle.Float(low, high, log=True)``.

    Parameters
    ----------
    estimator : MLPClassifier or MLPRegressor
        Supplies the architecture, ``batch_size`` and ``optimizer``; its
        ``learning_rate`` and ``epochs`` are ignored.
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
    lr_min, lr_max : float, default 1e-6 and 1.0
        Range of learning rates, ``0 < lr_min < lr_max``.
    n_steps : int, default 100
        Number of mini-batches (and learning rates) tried, at least 3.
    seed : int, numpy.random.Generator or None
        Seeds initialisation and shuffling; None uses the estimator's ``seed``.

    Returns
    -------
    LRRangeTestResult
        ``lrs_``, ``losses_``, ``suggested_bounds_`` and ``diverged_``.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> import twiddle
    >>> from twiddle.torch import MLPClassifier, lr_range_test
    >>> X, y = load_digits(return_X_y=True)
    >>> result = lr_range_test(MLPClassifier(seed=0), X, y, n_steps=60, seed=0)
    >>> low, high = result.suggested_bounds_
    >>> 1e-6 <= low < high <= 1.0
    True
    >>> space = twiddle.Space({"learning_rate": twiddle.Float(low, high, log=True)})
    """
    where = "lr_range_test"
    if not isinstance(estimator, _BaseMLP):
        raise InvalidParameterError(
            f"The 'estimator' parameter of {where} must be an MLPClassifier or MLPRegressor "
            f"from twiddle.torch. Got {estimator!r} instead."
        )
    lo = check_float(lr_min, "lr_min", where, minimum=0.0, exclusive=True)
    hi = check_float(lr_max, "lr_max", where, minimum=0.0, exclusive=True)
    assert lo is not None and hi is not None
    if not lo < hi:
        raise InvalidParameterError(
            f"The 'lr_max' parameter of {where} must be a number > lr_min={lr_min!r}. "
            f"Got {lr_max!r} instead."
        )
    steps = check_int(n_steps, "n_steps", where, minimum=3)
    assert steps is not None
    est = clone(estimator)
    X_s, y_enc, n_outputs = est._prepare(X, y)
    entropy = seed_entropy(est.seed if seed is None else seed, "seed", where)
    lrs_all = lo * (hi / lo) ** (np.arange(steps) / (steps - 1))
    lrs: list[float] = []
    losses: list[float] = []
    diverged = False
    with _torch_threads(1), _seeded(entropy):
        module = est._build(X_s.shape[1], n_outputs)
        dtype = _module_dtype(module)
        Xt = torch.as_tensor(X_s, dtype=dtype)
        yt = est._target_tensor(y_enc, dtype)
        opt = est._make_optimizer(module, lo)
        loss_fn = est._loss()
        gen = torch.Generator().manual_seed(entropy)
        bs = min(int(est.batch_size), Xt.shape[0])
        perm = torch.randperm(Xt.shape[0], generator=gen)
        pos, avg, best, beta = 0, 0.0, math.inf, 0.9
        module.train()
        for i, lr in enumerate(lrs_all):
            if pos + bs > Xt.shape[0]:
                perm, pos = torch.randperm(Xt.shape[0], generator=gen), 0
            idx = perm[pos : pos + bs]
            pos += bs
            for group in opt.param_groups:
                group["lr"] = float(lr)
            opt.zero_grad()
            loss = loss_fn(module(Xt[idx]), yt[idx])
            value = float(loss.detach())
            if not math.isfinite(value):
                diverged = True
                break
            avg = beta * avg + (1 - beta) * value
            smooth = avg / (1 - beta ** (i + 1))
            if not math.isfinite(smooth) or (i > 0 and smooth > 4 * best):
                diverged = True
                break
            best = min(best, smooth)
            lrs.append(float(lr))
            losses.append(smooth)
            loss.backward()
            opt.step()
    lr_arr, loss_arr = np.asarray(lrs), np.asarray(losses)
    return LRRangeTestResult(
        lrs_=lr_arr,
        losses_=loss_arr,
        suggested_bounds_=_suggest_bounds(lr_arr, loss_arr, lo, hi),
        diverged_=diverged,
    )
