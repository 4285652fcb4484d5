"""Weight decay (and noise) fitted by the Laplace evidence while a PyTorch MLP trains."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scipy.optimize import minimize  # noqa: E402

import twiddle  # noqa: E402
from twiddle.evidence import fit_laplace_hyperparameters, tune_evidence  # noqa: E402
from twiddle.torch import MLPClassifier, MLPRegressor  # noqa: E402


def _linear_data(n: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.5 * rng.normal(size=n) + 3.0
    return X, y


def _exact_type2_ml(X: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Type-II ML of y_s = [X_s, 1] w + e, w ~ N(0, I/alpha), e ~ N(0, I/beta), on the
    standardised data, by direct optimisation of the Gaussian marginal density; returns
    (alpha, beta, log evidence of y in its own units)."""
    n = X.shape[0]
    Xs = (X - X.mean(0)) / X.std(0)
    ys = (y - y.mean()) / y.std()
    Phi = np.c_[Xs, np.ones(n)]

    def nll(z: np.ndarray) -> float:
        a, b = np.exp(z)
        C = Phi @ Phi.T / a + np.eye(n) / b
        _, logdet = np.linalg.slogdet(C)
        return 0.5 * (logdet + ys @ np.linalg.solve(C, ys) + n * np.log(2 * np.pi))

    res = minimize(nll, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12})
    alpha, beta = np.exp(res.x)
    return float(alpha), float(beta), float(-res.fun - n * np.log(y.std()))


def test_linear_network_reaches_exact_type2_maximum_likelihood():
    # One Linear layer: the Laplace evidence is exact and, trained to its MAP, the
    # online fit must land on Bayesian linear regression's type-II ML.
    X, y = _linear_data()
    alpha, beta, log_ev = _exact_type2_ml(X, y)
    reg = MLPRegressor(
        n_layers=0,
        epochs=150,
        batch_size=len(y),
        learning_rate=0.05,
        weight_decay="evidence",
        validation_fraction=0.0,
        seed=0,
    )
    reg.fit(X, y)
    assert reg.laplace_structure_ == "kron"
    assert reg.prior_precision_.shape == (1,)  # one Linear layer, one prior precision
    assert reg.prior_precision_[0] == pytest.approx(alpha, rel=1e-3)
    assert reg.noise_precision_ == pytest.approx(beta, rel=1e-3)
    assert reg.log_evidence_ == pytest.approx(log_ev, abs=1e-3)
    # the L2 coefficient actually used is 2 alpha / (beta n) on the mean squared error
    assert reg.weight_decay_[0] == pytest.approx(2 * alpha / (beta * len(y)), rel=1e-3)
    assert reg.evidence_history_[-1]["epoch"] == 150


def test_classifier_layerwise_evidence_beats_the_shared_prior_at_its_weights():
    # One prior precision per layer nests the shared one, so at the trained weights the
    # layer-wise maximum must reach at least the shared-precision maximum found by a
    # different route (MacKay's fixed point in fit_laplace_hyperparameters), and the
    # stationarity of the closed form must hold (checked by finite differences).
    from sklearn.datasets import load_iris

    from twiddle.evidence._laplace import _terms

    X, y = load_iris(return_X_y=True)
    clf = MLPClassifier(
        n_layers=1,
        width=8,
        epochs=40,
        learning_rate=1e-2,
        weight_decay="evidence",
        validation_fraction=0.0,
        seed=1,
    ).fit(X, y)
    Xs = torch.as_tensor((X - clf.x_mean_) / clf.x_scale_, dtype=torch.float32)
    post = fit_laplace_hyperparameters(
        clf.module_, Xs, y, likelihood="classification", structure="kron"
    )
    assert clf.noise_precision_ is None
    assert clf.prior_precision_.shape == (2,)
    assert clf.log_evidence_ >= post.log_evidence - 1e-9
    terms = _terms(clf.module_, Xs, torch.as_tensor(y), "classification", "kron", 256, "test")

    def log_z(alphas):
        total = -terms.fit
        for (c, w), a in zip(terms.layers, alphas, strict=True):
            total += 0.5 * c.size * np.log(a) - 0.5 * a * w - 0.5 * np.log(c + a).sum()
        return total

    assert log_z(clf.prior_precision_) == pytest.approx(clf.log_evidence_, rel=1e-9)
    for k in range(2):
        step = np.zeros(2)
        step[k] = 1e-4
        up = log_z(clf.prior_precision_ * np.exp(step))
        down = log_z(clf.prior_precision_ * np.exp(-step))
        assert abs(up - down) / 2e-4 < 1e-4  # d log Z / d log alpha_k = 0
    np.testing.assert_allclose(clf.weight_decay_, clf.prior_precision_ / len(y))
    assert clf.score(X, y) > 0.9


def test_evidence_study_prefers_the_linear_network_on_linear_data():
    # Occam's razor: on data from a linear model, hidden layers buy no fit and cost
    # evidence, so a study over n_layers by Laplace evidence picks 0.
    X, y = _linear_data(n=120, seed=3)
    est = MLPRegressor(
        width=16,
        epochs=60,
        batch_size=32,
        learning_rate=1e-2,
        weight_decay="evidence",
        validation_fraction=0.0,
        seed=0,
    )
    space = twiddle.Space({"n_layers": twiddle.Int(0, 2)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = tune_evidence(est, space, X, y, n_trials=3, sampler="grid", seed=0, refit=False)
    values = {t.params["n_layers"]: t.value for t in res.study_.trials}
    assert res.best_params_ == {"n_layers": 0}
    assert values[0] > values[1] + 10 and values[0] > values[2] + 10


def test_same_seed_same_fit_and_plain_decay_sets_no_evidence():
    X, y = _linear_data(n=60)
    kw = dict(n_layers=1, width=8, epochs=12, weight_decay="evidence", seed=4)
    a = MLPRegressor(**kw).fit(X, y)
    b = MLPRegressor(**kw).fit(X, y)
    assert a.log_evidence_ == b.log_evidence_
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    plain = MLPRegressor(n_layers=1, width=8, epochs=3, weight_decay=1e-4, seed=4).fit(X, y)
    assert not hasattr(plain, "log_evidence_")


def test_bad_weight_decay_string_is_rejected():
    X, y = _linear_data(n=20)
    with pytest.raises(twiddle.InvalidParameterError, match="'evidence'"):
        MLPRegressor(weight_decay="laplace", epochs=1).fit(X, y)


def test_a_linear_layer_used_twice_falls_back_to_one_shared_prior():
    # K-FAC needs each Linear layer called once; a module reusing one falls back to the
    # diagonal curvature, and the per-layer precisions to a single shared one.
    class Twice(torch.nn.Module):
        def __init__(self, n_features: int, n_outputs: int) -> None:
            super().__init__()
            self.inner = torch.nn.Linear(n_features, n_features)
            self.out = torch.nn.Linear(n_features, n_outputs)

        def forward(self, x):
            return self.out(torch.tanh(self.inner(torch.tanh(self.inner(x)))))

    X, y = _linear_data(n=60)
    reg = MLPRegressor(
        module=lambda n_features, n_outputs: Twice(n_features, n_outputs),
        epochs=12,
        weight_decay="evidence",
        seed=0,
    ).fit(X, y)
    assert reg.laplace_structure_ == "diag"
    assert reg.prior_precision_.shape == (1,)
    assert reg.prior_precision_[0] != 1.0  # it moved from its start
    assert np.isfinite(reg.log_evidence_)
