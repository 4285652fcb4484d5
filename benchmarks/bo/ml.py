"""Bayesmark-style tuning tasks: scikit-learn models on the data sets scikit-learn ships.

A task is a model on a data set, named ``"{model}-{data}"`` (``svm-wine``,
``rf-diabetes``). Models: ``svm`` (SVC / SVR), ``rf`` (random forest, 10 trees), ``dt``
(decision tree), ``knn``, ``mlp`` (one hidden layer, Adam, early stopping) and, for
classification, ``lr`` (logistic regression) or, for regression, ``enet`` (elastic net).
Data: ``breast``, ``wine``, ``digits``, ``iris`` (classification) and ``diabetes``
(regression).

Protocol, per task:

* a stratified (classification) 80 % / 20 % split, with a seed fixed per task
  (CRC-32 of the task name), so every optimiser and every seed sees the same split;
* the loss of a configuration is minus the mean 5-fold cross-validated score on the
  80 %: **accuracy** for classification, **R^2** for regression (R^2 rather than the
  mean squared error so that losses read the same on any target scale; on the fixed
  folds the two rank configurations almost identically). The folds are fixed per task
  and every estimator has ``random_state=0``, so the loss is a deterministic function;
* the held-out score (accuracy or R^2 on the 20 %) is computed only for the
  configuration an optimiser finally chooses (lowest cross-validated loss);
* features are standardised inside the pipeline (fitted on the training folds only)
  for every model but the trees; the regression target is standardised once with the
  80 % split's mean and standard deviation (R^2 does not change).

Cheapness: the random forest has a fixed ``n_estimators=10`` (as Bayesmark), the MLP
``max_iter=20`` epochs with early stopping, logistic regression ``max_iter=100``
(lbfgs). The spaces follow Bayesmark's (``bayesmark.sklearn_funcs``) with these
changes: ranges adapted to standardised features (SVM ``gamma``); kNN's Minkowski
``p`` in {1, 2} (p = 3, 4 cost about ten times more on digits) plus ``weights``;
logistic regression uses lbfgs (liblinear, where Bayesmark's ``intercept_scaling``
matters, takes minutes on digits at large C), so its space is ``C``, ``tol``,
``fit_intercept`` and ``class_weight``; the MLP's ``validation_fraction`` stops at 0.5
and ``batch_size`` is a multiple of 32.
"""

from __future__ import annotations

import functools
import warnings
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from benchmarks.bo.problems import Problem
from twiddle import Categorical, Float, Int, Space

CLASSIFICATION_DATA = ("breast", "wine", "digits", "iris")
REGRESSION_DATA = ("diabetes",)
CLASSIFICATION_MODELS = ("svm", "rf", "dt", "knn", "mlp", "lr")
REGRESSION_MODELS = ("svm", "rf", "dt", "knn", "mlp", "enet")
N_FOLDS = 5
TEST_FRACTION = 0.2
RF_TREES = 10
MLP_MAX_ITER = 20
LR_MAX_ITER = 100


def task_names() -> list[str]:
    names = [f"{m}-{d}" for d in CLASSIFICATION_DATA for m in CLASSIFICATION_MODELS]
    names += [f"{m}-{d}" for d in REGRESSION_DATA for m in REGRESSION_MODELS]
    return names


# ---------------------------------------------------------------------------------
# Spaces
# ---------------------------------------------------------------------------------
def _tree_space() -> dict[str, Any]:
    return {
        "max_depth": Int(1, 15),
        "max_features": Float(0.01, 1.0),
        "min_samples_split": Float(0.01, 0.99),
        "min_samples_leaf": Float(0.01, 0.49),
        "min_weight_fraction_leaf": Float(0.0, 0.49),
        "max_leaf_nodes": Int(2, 256, log=True),
    }


def model_space(model: str, regression: bool) -> Space:
    """The hyperparameter space of ``model`` (a twiddle Space)."""
    if model == "svm":
        dims: dict[str, Any] = {
            "C": Float(1e-2, 1e3, log=True),
            "gamma": Float(1e-4, 1.0, log=True),
            "tol": Float(1e-5, 1e-1, log=True),
        }
        if regression:
            dims["epsilon"] = Float(1e-2, 1.0, log=True)
        return Space(dims)
    if model in ("rf", "dt"):
        return Space(_tree_space())
    if model == "knn":
        return Space(
            {
                "n_neighbors": Int(1, 25),
                "p": Int(1, 2),
                "weights": Categorical(["uniform", "distance"]),
            }
        )
    if model == "mlp":
        return Space(
            {
                "hidden_layer_sizes": Int(16, 256, log=True),
                "alpha": Float(1e-5, 1e1, log=True),
                "batch_size": Int(32, 256, step=32),
                "learning_rate_init": Float(1e-5, 1e-1, log=True),
                "tol": Float(1e-5, 1e-1, log=True),
                "validation_fraction": Float(0.1, 0.5),
                "beta_1": Float(0.5, 0.99),
                "beta_2": Float(0.9, 0.999999),
                "epsilon": Float(1e-9, 1e-6, log=True),
            }
        )
    if model == "lr" and not regression:
        return Space(
            {
                "C": Float(1e-3, 1e3, log=True),
                "tol": Float(1e-5, 1e-1, log=True),
                "fit_intercept": Categorical([True, False]),
                "class_weight": Categorical([None, "balanced"]),
            }
        )
    if model == "enet" and regression:
        return Space({"alpha": Float(1e-5, 1e1, log=True), "l1_ratio": Float(0.01, 0.99)})
    raise ValueError(f"No model {model!r} for {'regression' if regression else 'classification'}.")


# ---------------------------------------------------------------------------------
# Estimators
# ---------------------------------------------------------------------------------
def make_estimator(model: str, regression: bool, config: Mapping[str, Any]) -> Any:
    """A fresh scikit-learn estimator for ``config``."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    c = dict(config)
    if model == "svm":
        from sklearn.svm import SVC, SVR

        est: Any = SVR(kernel="rbf", **c) if regression else SVC(kernel="rbf", **c)
        return make_pipeline(StandardScaler(), est)
    if model in ("rf", "dt"):
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
        from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

        if model == "rf":
            cls = RandomForestRegressor if regression else RandomForestClassifier
            return cls(n_estimators=RF_TREES, random_state=0, **c)
        cls = DecisionTreeRegressor if regression else DecisionTreeClassifier
        return cls(random_state=0, **c)
    if model == "knn":
        from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

        cls = KNeighborsRegressor if regression else KNeighborsClassifier
        return make_pipeline(StandardScaler(), cls(**c))
    if model == "mlp":
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        cls = MLPRegressor if regression else MLPClassifier
        if "hidden_layer_sizes" in c:  # one hidden layer of that width
            c["hidden_layer_sizes"] = (int(c["hidden_layer_sizes"]),)
        est = cls(solver="adam", early_stopping=True, max_iter=MLP_MAX_ITER, random_state=0, **c)
        return make_pipeline(StandardScaler(), est)
    if model == "lr":
        from sklearn.linear_model import LogisticRegression

        est = LogisticRegression(solver="lbfgs", max_iter=LR_MAX_ITER, random_state=0, **c)
        return make_pipeline(StandardScaler(), est)
    if model == "enet":
        from sklearn.linear_model import ElasticNet

        return make_pipeline(StandardScaler(), ElasticNet(random_state=0, max_iter=2000, **c))
    raise ValueError(f"Unknown model {model!r}.")


# ---------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------
def _loader(data: str) -> Callable[..., Any]:
    from sklearn import datasets

    return {
        "breast": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "digits": datasets.load_digits,
        "iris": datasets.load_iris,
        "diabetes": datasets.load_diabetes,
    }[data]


def split_seed(name: str) -> int:
    """The split and fold seed of task ``name`` (stable across runs and machines)."""
    return zlib.crc32(name.encode()) % (2**31)


@functools.cache
def task_data(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``X_train, X_test, y_train, y_test`` of task ``name`` (80 % / 20 %)."""
    from sklearn.model_selection import train_test_split

    _, data = name.split("-", 1)
    X, y = _loader(data)(return_X_y=True)
    regression = data in REGRESSION_DATA
    X_tr, X_te, y_tr, y_te = train_test_split(
        np.asarray(X, dtype=float),
        np.asarray(y),
        test_size=TEST_FRACTION,
        random_state=split_seed(name),
        stratify=None if regression else y,
    )
    if regression:
        mu, sd = float(np.mean(y_tr)), float(np.std(y_tr))
        y_tr, y_te = (y_tr - mu) / sd, (y_te - mu) / sd
    return X_tr, X_te, y_tr, y_te


class MLTask:
    """One model on one data set: CV loss on the 80 % and held-out score on the 20 %."""

    def __init__(self, name: str) -> None:
        model, sep, data = name.partition("-")
        if not sep or data not in CLASSIFICATION_DATA + REGRESSION_DATA:
            raise ValueError(f"Unknown task {name!r}; known: {', '.join(task_names())}.")
        self.name = name
        self.model = model
        self.data = data
        self.regression = data in REGRESSION_DATA
        models = REGRESSION_MODELS if self.regression else CLASSIFICATION_MODELS
        if model not in models:
            raise ValueError(f"Unknown task {name!r}; known: {', '.join(task_names())}.")
        self.space = model_space(model, self.regression)

    @property
    def scoring(self) -> str:
        return "r2" if self.regression else "accuracy"

    def folds(self, k: int = N_FOLDS) -> Any:
        """Shuffled k folds, stratified for classification, with the task's fixed seed."""
        from sklearn.model_selection import KFold, StratifiedKFold

        cls = KFold if self.regression else StratifiedKFold
        return cls(n_splits=k, shuffle=True, random_state=split_seed(self.name))

    def addressed(self) -> tuple[Any, Space, str]:
        """The estimator with default hyperparameters, the space addressed into it, the prefix.

        For a pipeline the space's names get the last step's prefix (``"svc__C"``), as
        ``twiddle.tune`` and the scikit-learn searches set them on the whole pipeline.
        """
        est = make_estimator(self.model, self.regression, {})
        prefix = f"{est.steps[-1][0]}__" if hasattr(est, "steps") else ""
        return est, Space({prefix + name: self.space[name] for name in self.space}), prefix

    def fold_losses(self, config: Mapping[str, Any]) -> list[float]:
        """Minus the CV score (accuracy or R^2) of each of the 5 folds of the training split."""
        from sklearn.model_selection import cross_val_score

        X_tr, _, y_tr, _ = task_data(self.name)
        est = make_estimator(self.model, self.regression, config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = cross_val_score(
                est, X_tr, y_tr, cv=self.folds(), scoring=self.scoring, error_score="raise"
            )
        return [-float(s) for s in scores]

    def loss(self, config: Mapping[str, Any]) -> float:
        """Minus the mean 5-fold CV score (accuracy or R^2) on the training split."""
        return float(np.mean(self.fold_losses(config)))

    def holdout(self, config: Mapping[str, Any]) -> float:
        """Score (accuracy or R^2) on the 20 % after fitting on the whole 80 %."""
        from sklearn.metrics import accuracy_score, r2_score

        X_tr, X_te, y_tr, y_te = task_data(self.name)
        est = make_estimator(self.model, self.regression, config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X_tr, y_tr)
            pred = est.predict(X_te)
        return float(r2_score(y_te, pred) if self.regression else accuracy_score(y_te, pred))

    def problem(self) -> Problem:
        return Problem(
            name=self.name,
            space=self.space,
            kind="regression" if self.regression else "classification",
            optimum=None,
            minimiser=None,
            loss=self.loss,
            holdout=self.holdout,
            fold_losses=self.fold_losses,
            description=(
                f"{self.model} on {self.data}: loss = -mean {N_FOLDS}-fold CV {self.scoring}"
            ),
        )


def make_task(name: str) -> Problem:
    return MLTask(name).problem()
