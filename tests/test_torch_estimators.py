"""twiddle.torch: scikit-learn contract, determinism, divergence, trial reporting, LR test."""

from __future__ import annotations

import doctest
import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import twiddle  # noqa: E402
import twiddle.torch  # noqa: E402
from twiddle import InvalidParameterError, Study, TrainingDivergedError, TrialState  # noqa: E402
from twiddle.torch import MLPClassifier, MLPRegressor, lr_range_test  # noqa: E402

FAST = {"epochs": 5, "learning_rate": 1e-2, "width": 16, "seed": 0}


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X, y


@pytest.fixture(scope="module")
def small_digits(digits):
    X, y = digits
    return X[:400], y[:400]


def _regression(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * rng.normal(size=n)
    return X, y


# -- scikit-learn's estimator checks ------------------------------------------------------
# Every check applies and passes with a fixed seed (the estimators are then deterministic;
# with seed=None they declare the `non_deterministic` tag).
@parametrize_with_checks([MLPClassifier(**FAST), MLPRegressor(**FAST)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_params_roundtrip_and_clone():
    def factory(n_features, n_outputs):
        return torch.nn.Linear(n_features, n_outputs)

    est = MLPClassifier(learning_rate=0.05, optimizer="sgd", module=factory, seed=3)
    params = est.get_params()
    assert params["learning_rate"] == 0.05
    assert params["module"] is factory
    assert "trial" not in params
    est.set_params(width=8, n_layers=1)
    assert (est.width, est.n_layers) == (8, 1)
    twin = clone(est)
    assert twin is not est
    assert twin.get_params() == est.get_params()
    assert not hasattr(twin, "module_")


def test_same_seed_same_predictions_and_global_state_untouched(small_digits):
    X, y = small_digits
    torch.manual_seed(123)
    expected_torch = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    a = MLPClassifier(**{**FAST, "dropout": 0.2}).fit(X, y)
    b = MLPClassifier(**{**FAST, "dropout": 0.2}).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.history_ == b.history_
    c = MLPClassifier(**{**FAST, "dropout": 0.2, "seed": 1}).fit(X, y)
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))
    # the fits neither consumed torch's global stream nor changed the thread count
    assert torch.equal(torch.rand(3), expected_torch)
    assert torch.get_num_threads() == threads


def test_fitted_attributes(small_digits):
    X, y = small_digits
    clf = MLPClassifier(**FAST).fit(X, y)
    assert clf.n_iter_ == 5 and len(clf.history_) == 5
    assert set(clf.history_[0]) == {"train_loss", "val_loss", "val_score"}
    assert clf.n_features_in_ == 64
    np.testing.assert_array_equal(clf.classes_, np.arange(10))
    assert clf.x_mean_.shape == clf.x_scale_.shape == (64,)
    assert isinstance(clf.module_, torch.nn.Module)
    proba = clf.predict_proba(X[:5])
    assert proba.shape == (5, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_regressor_standardises_targets():
    X, y = _regression()
    reg = MLPRegressor(**{**FAST, "epochs": 20}).fit(X, 1000.0 + 50.0 * y)
    assert reg.y_mean_.shape == (1,) and abs(reg.y_mean_[0] - 1000.0) < 50
    assert reg.score(X, 1000.0 + 50.0 * y) > 0.9
    assert reg.predict(X).shape == (200,)
    Y = np.column_stack([y, -y])
    assert MLPRegressor(**FAST).fit(X, Y).predict(X).shape == (200, 2)


def test_digits_accuracy_well_above_chance(digits):
    X, y = digits
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    clf = MLPClassifier(learning_rate=3e-3, epochs=5, width=64, seed=0).fit(X_tr, y_tr)
    assert clf.score(X_te, y_te) > 0.9  # chance is 0.1


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("batch_size", 0, "an int >= 1"),
        ("learning_rate", 0.0, "a finite number > 0.0"),
        ("optimizer", "rmsprop", "one of 'adam', 'sgd', 'adamw'"),
        ("dropout", 1.0, "a number in [0, 1)"),
        ("validation_fraction", 1.0, "a number in [0, 1)"),
        ("epochs", 2.5, "an int >= 1"),
    ],
)
def test_invalid_hyperparameters_rejected_in_fit(name, value, expected):
    est = MLPClassifier(**{**FAST, name: value})  # the constructor stores anything
    X, y = _regression(20)
    with pytest.raises(InvalidParameterError) as info:
        est.fit(X, y > 0)
    assert str(info.value) == (
        f"The {name!r} parameter of MLPClassifier must be {expected}. Got {value!r} instead."
    )


def test_diverging_learning_rate_raises_with_hint():
    X, y = _regression()
    est = MLPRegressor(learning_rate=1e3, optimizer="sgd", epochs=5, width=16, seed=0)
    with pytest.raises(TrainingDivergedError, match=r"learning_rate=1000\.0 is probably too high"):
        est.fit(X, y)
    err = TrainingDivergedError("x")
    assert isinstance(err, twiddle.TwiddleError) and isinstance(err, ArithmeticError)
    with pytest.raises(
        TrainingDivergedError, match=r"epoch 1\b.*try a lower value such as 100 .*lr_range_test"
    ):
        est.fit(X, y)


def test_reports_each_epoch_to_trial_in_a_study(small_digits):
    X, y = small_digits

    def objective(trial):
        clf = MLPClassifier(
            learning_rate=trial.suggest_float("learning_rate", 1e-3, 3e-2, log=True),
            width=trial.suggest_int("width", 8, 32),
            epochs=3,
            seed=trial.number,
        )
        clf.fit(X, y, trial=trial)
        return clf.history_[-1]["val_loss"]

    study = Study(name="mlp", seed=0, sampler="random")
    study.optimize(objective, n_trials=2)
    for t in study.trials:
        assert t.state is TrialState.COMPLETE
        assert sorted(t.intermediate) == [1, 2, 3]
        assert all(math.isfinite(v) for v in t.intermediate.values())
        assert t.intermediate[3] == pytest.approx(t.value)


def test_diverging_trial_fails_with_message_and_pruning_is_honoured():
    X, y = _regression(100)

    def objective(trial):
        reg = MLPRegressor(
            learning_rate=trial.suggest_float("learning_rate", 1e3, 1e4, log=True),
            optimizer="sgd",
            epochs=3,
            width=8,
            seed=0,
        )
        reg.fit(X, y, trial=trial)
        return reg.history_[-1]["val_loss"]

    study = Study(name="div", seed=0, sampler="random")
    with pytest.raises(twiddle.AllTrialsFailedError):
        study.optimize(objective, n_trials=1)
    (t,) = study.trials
    assert t.state is TrialState.FAIL
    assert "is probably too high" in t.fail_reason

    class PruneAtOnce:
        def __init__(self):
            self.reported = {}

        def report(self, value, step):
            self.reported[step] = value

        def should_prune(self):
            return True

    trial = PruneAtOnce()
    with pytest.raises(twiddle.TrialPruned):
        MLPRegressor(**FAST).fit(X, y, trial=trial)
    assert list(trial.reported) == [1]
    with pytest.raises(InvalidParameterError, match=r"'trial' parameter of MLPRegressor\.fit"):
        MLPRegressor(**FAST).fit(X, y, trial="not a trial")


def test_user_module_factory(small_digits):
    X, y = small_digits
    seen = {}

    def factory(n_features, n_outputs, width):
        seen.update(n_features=n_features, n_outputs=n_outputs, width=width)
        return torch.nn.Sequential(
            torch.nn.Linear(n_features, width), torch.nn.Tanh(), torch.nn.Linear(width, n_outputs)
        )

    clf = MLPClassifier(**{**FAST, "module": factory, "width": 24}).fit(X, y)
    assert seen == {"n_features": 64, "n_outputs": 10, "width": 24}
    assert isinstance(clf.module_[1], torch.nn.Tanh)
    assert clf.score(X, y) > 0.8

    with pytest.raises(InvalidParameterError, match=r"torch\.nn\.Module"):
        MLPClassifier(**{**FAST, "module": lambda n, k: None}).fit(X, y)


def test_lr_range_test(small_digits):
    X, y = small_digits
    est = MLPClassifier(width=32, seed=0)
    result = lr_range_test(est, X, y, lr_min=1e-5, lr_max=10.0, n_steps=80, seed=0)
    assert not hasattr(est, "module_")  # the estimator itself is not fitted
    lrs, losses = result.lrs_, result.losses_
    assert len(lrs) == len(losses) >= 10
    assert np.all(np.diff(lrs) > 0)
    assert lrs[0] == pytest.approx(1e-5)
    assert np.all(np.isfinite(losses))
    low, high = result.suggested_bounds_
    assert 1e-5 <= low < high <= 10.0
    assert losses.min() < losses[0]  # the loss does go down somewhere in the range
    assert result.diverged_  # lr=10 with adam blows the loss up before the end
    assert len(lrs) < 80
    # the bounds make a valid log-scale dimension
    twiddle.Float(low, high, log=True)
    again = lr_range_test(est, X, y, lr_min=1e-5, lr_max=10.0, n_steps=80, seed=0)
    np.testing.assert_array_equal(again.losses_, losses)


def test_lr_range_test_validates():
    X, y = _regression(50)
    with pytest.raises(InvalidParameterError, match="'lr_max' parameter of lr_range_test"):
        lr_range_test(MLPRegressor(), X, y, lr_min=1.0, lr_max=0.1)
    with pytest.raises(InvalidParameterError, match="'estimator' parameter of lr_range_test"):
        lr_range_test(object(), X, y)


def test_missing_torch_gives_install_hint():
    code = "import sys; sys.modules['torch'] = None; import twiddle.torch"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert 'pip install "twiddle[torch]"' in proc.stderr


def test_twiddle_import_does_not_import_torch():
    code = "import sys, twiddle; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr


def test_docstring_examples():
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(twiddle.torch, optionflags=flags)
    assert result.attempted > 0
    assert result.failed == 0
