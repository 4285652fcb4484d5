"""Laplace evidence of neural networks: exact on linear models, GGN against independent routes."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from twiddle import InvalidParameterError  # noqa: E402
from twiddle.evidence import (  # noqa: E402
    BayesianLinearRegression,
    ConvergenceWarning,
    LaplaceFit,
    fit_laplace_hyperparameters,
    laplace_evidence,
    linear_evidence,
)

D = torch.float64


def _data(n: int = 40, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.5 * rng.normal(size=n) + 3.0
    return X, y


def _map(X: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Closed-form posterior mean of Bayesian linear regression."""
    A = beta * X.T @ X + alpha * np.eye(X.shape[1])
    return np.asarray(beta * np.linalg.solve(A, X.T @ y))


def _linear_net(w: np.ndarray, bias: float | None = None) -> torch.nn.Module:
    net = torch.nn.Linear(w.size, 1, bias=bias is not None).to(D)
    with torch.no_grad():
        net.weight.copy_(torch.as_tensor(w, dtype=D).reshape(1, -1))
        if bias is not None:
            net.bias.fill_(bias)
    return net


def _mlp(d_in: int, d_out: int, seed: int = 0, hidden: int = 5) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(d_in, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, d_out)
    ).to(D)


def _loglik_and_prior(net, X, y, alpha, beta=None):
    """log p(D | theta) + log p(theta | alpha) + P/2 log 2 pi, computed directly."""
    with torch.no_grad():
        out = net(X)
        theta = torch.cat([p.reshape(-1) for p in net.parameters()])
        P = theta.numel()
        if beta is None:
            ll = float(torch.log_softmax(out, 1).gather(1, y.reshape(-1, 1)).sum())
        else:
            r = (y.reshape(out.shape) - out).reshape(-1)
            ll = 0.5 * r.numel() * math.log(beta / (2 * math.pi)) - 0.5 * beta * float(r @ r)
        lp = 0.5 * P * math.log(alpha / (2 * math.pi)) - 0.5 * alpha * float(theta @ theta)
    return ll + lp + 0.5 * P * math.log(2 * math.pi), theta


# ---------------------------------------------------------------------------------------
# Linear models: the Laplace approximation is exact
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("structure", ["full", "diag"])
def test_linear_regression_equals_exact_evidence_centred(structure):
    # Centred data and no bias: the convention of linear_evidence(fit_intercept=True).
    X, y = _data()
    Xc, yc = X - X.mean(0), y - y.mean()
    if structure == "diag":  # orthogonal design: the GGN is diagonal, diag is exact
        Q, _ = np.linalg.qr(Xc)
        Xc = Q * np.array([1.0, 2.0, 3.0, 4.0])
    alpha, beta = 0.7, 3.0
    w = _map(Xc, yc, alpha, beta)
    lap = laplace_evidence(
        _linear_net(w),
        Xc,
        yc.reshape(-1, 1),
        prior_precision=alpha,
        noise_precision=beta,
        structure=structure,
    )
    exact, _ = linear_evidence(Xc, yc, fit_intercept=False)({"alpha": beta, "lambda": alpha})
    exact_c, _ = linear_evidence(X if structure == "full" else Xc, yc, fit_intercept=True)(
        {"alpha": beta, "lambda": alpha}
    )
    assert abs(lap - exact) <= 1e-10 * abs(exact)
    if structure == "full":
        assert abs(lap - exact_c) <= 1e-10 * abs(exact)


def test_linear_regression_with_bias_equals_exact_evidence_with_ones_column():
    # A bias under the same prior is a weight on a column of ones.
    X, y = _data(seed=1)
    alpha, beta = 0.3, 2.0
    X1 = np.hstack([X, np.ones((X.shape[0], 1))])
    w = _map(X1, y, alpha, beta)
    net = _linear_net(w[:-1], bias=float(w[-1]))
    lap = laplace_evidence(net, X, y, prior_precision=alpha, noise_precision=beta)
    exact, _ = linear_evidence(X1, y, fit_intercept=False)({"alpha": beta, "lambda": alpha})
    assert abs(lap - exact) <= 1e-10 * abs(exact)


def test_diag_is_a_lower_bound_and_differs_for_correlated_design():
    X, y = _data(seed=2)
    X[:, 1] += 0.9 * X[:, 0]
    alpha, beta = 0.5, 2.0
    net = _linear_net(_map(X, y, alpha, beta))
    kw = {"prior_precision": alpha, "noise_precision": beta}
    full = laplace_evidence(net, X, y, structure="full", **kw)
    diag = laplace_evidence(net, X, y, structure="diag", **kw)
    assert diag < full - 1e-3  # Hadamard's inequality, strict for a non-diagonal GGN


def test_fit_matches_bayesian_linear_regression():
    X, y = _data(n=60, d=5, seed=3)
    blr = BayesianLinearRegression(tol=1e-12, max_iter=2000).fit(X, y)
    Xc, yc = X - X.mean(0), y - y.mean()
    net = _linear_net(blr.coef_)
    fit = fit_laplace_hyperparameters(net, Xc, yc, prior_precision_init=1.0)
    assert isinstance(fit, LaplaceFit)
    assert fit.noise_precision is not None
    assert abs(fit.prior_precision / blr.lambda_ - 1) < 1e-6
    assert abs(fit.noise_precision / blr.alpha_ - 1) < 1e-6
    assert abs(fit.log_evidence - blr.log_evidence_) < 1e-8 * abs(blr.log_evidence_)


def test_linear_softmax_ggn_is_the_hessian():
    # For a model linear in its parameters the GGN is the Hessian of the negative log
    # likelihood: compare log det(H) with torch's Hessian of the negative log joint.
    rng = np.random.default_rng(4)
    X = torch.as_tensor(rng.normal(size=(30, 3)), dtype=D)
    y = torch.as_tensor(rng.integers(0, 3, size=30))
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 3).to(D)
    alpha = 0.8
    lap = laplace_evidence(net, X, y, likelihood="classification", prior_precision=alpha)
    base, theta = _loglik_and_prior(net, X, y, alpha)
    shapes = [p.shape for p in net.parameters()]

    def neg_log_joint(t):
        w, b = t[:9].reshape(shapes[0]), t[9:].reshape(shapes[1])
        out = X @ w.T + b
        nll = -torch.log_softmax(out, 1).gather(1, y.reshape(-1, 1)).sum()
        return nll + 0.5 * alpha * (t @ t)

    H = torch.autograd.functional.hessian(neg_log_joint, theta.clone())
    expected = base - 0.5 * float(torch.linalg.slogdet(H)[1])
    assert abs(lap - expected) <= 1e-10 * abs(expected)


# ---------------------------------------------------------------------------------------
# Nonlinear networks: the GGN by an explicit loop over samples
# ---------------------------------------------------------------------------------------
def _ggn_by_loop(net, X, y, beta=None):
    params = list(net.parameters())
    P = sum(p.numel() for p in params)
    G = torch.zeros(P, P, dtype=D)
    for i in range(X.shape[0]):
        out = net(X[i : i + 1]).reshape(-1)
        rows = []
        for c in range(out.numel()):
            g = torch.autograd.grad(out[c], params, retain_graph=True)
            rows.append(torch.cat([t.reshape(-1) for t in g]))
        J = torch.stack(rows)  # (C, P)
        if beta is None:
            p = torch.softmax(out.detach(), 0)
            Lam = torch.diag(p) - torch.outer(p, p)
        else:
            Lam = beta * torch.eye(out.numel(), dtype=D)
        G += J.T @ Lam @ J
    return G


@pytest.mark.parametrize("likelihood", ["regression", "classification"])
def test_full_ggn_matches_explicit_loop(likelihood):
    rng = np.random.default_rng(5)
    X = torch.as_tensor(rng.normal(size=(25, 3)), dtype=D)
    C = 2 if likelihood == "regression" else 3
    net = _mlp(3, C, seed=1)
    alpha = 0.4
    if likelihood == "regression":
        y = torch.as_tensor(rng.normal(size=(25, C)), dtype=D)
        beta = 1.7
    else:
        y = torch.as_tensor(rng.integers(0, C, size=25))
        beta = None
    kw = {"likelihood": likelihood, "prior_precision": alpha, "noise_precision": beta}
    base, _ = _loglik_and_prior(net, X, y, alpha, beta)
    G = _ggn_by_loop(net, X, y, beta)
    H = G + alpha * torch.eye(G.shape[0], dtype=D)
    logdet_full = float(torch.linalg.slogdet(H)[1])
    logdet_diag = float(torch.log(torch.diagonal(H)).sum())
    full = laplace_evidence(net, X, y, batch_size=7, **kw)  # batches of uneven size
    diag = laplace_evidence(net, X, y, structure="diag", **kw)
    assert abs((base - full) * 2 - logdet_full) <= 1e-9 * abs(logdet_full)
    assert abs((base - diag) * 2 - logdet_diag) <= 1e-9 * abs(logdet_diag)
    assert diag < full


@pytest.mark.parametrize("structure", ["full", "diag"])
@pytest.mark.parametrize("likelihood", ["regression", "classification"])
def test_fit_reaches_a_stationary_point(likelihood, structure):
    rng = np.random.default_rng(6)
    X = torch.as_tensor(rng.normal(size=(30, 2)), dtype=D)
    if likelihood == "regression":
        y = torch.sin(X[:, :1] * 2) + 0.1 * torch.as_tensor(rng.normal(size=(30, 1)), dtype=D)
        net = _mlp(2, 1, seed=2)
    else:
        y = torch.as_tensor((X[:, 0] > 0).long())
        net = _mlp(2, 2, seed=2)
    kw = {"likelihood": likelihood, "structure": structure}
    fit = fit_laplace_hyperparameters(net, X, y, **kw)
    a, b = fit.prior_precision, fit.noise_precision

    def ev(a_, b_):
        return laplace_evidence(net, X, y, prior_precision=a_, noise_precision=b_, **kw)

    assert abs(ev(a, b) - fit.log_evidence) < 1e-9 * abs(fit.log_evidence)
    h = 1e-4  # central differences in log alpha (and log beta): zero at the optimum
    assert abs(ev(a * math.exp(h), b) - ev(a * math.exp(-h), b)) / (2 * h) < 1e-5
    assert ev(a * 1.1, b) < fit.log_evidence and ev(a / 1.1, b) < fit.log_evidence
    if b is not None:
        assert abs(ev(a, b * math.exp(h)) - ev(a, b * math.exp(-h))) / (2 * h) < 1e-5
        assert ev(a, b * 1.1) < fit.log_evidence and ev(a, b / 1.1) < fit.log_evidence
    else:
        assert likelihood == "classification"
    assert 0 < fit.effective_parameters < sum(p.numel() for p in net.parameters())


def test_float32_module_runs():
    X, y = _data(seed=7)
    net = torch.nn.Linear(4, 1)
    value = laplace_evidence(net, X, y, prior_precision=1.0, noise_precision=1.0)
    assert math.isfinite(value)


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------
def test_validation_messages():
    X, y = _data()
    net = _linear_net(np.zeros(4))
    with pytest.raises(InvalidParameterError, match="'prior_precision' parameter of laplace"):
        laplace_evidence(net, X, y, prior_precision=0.0, noise_precision=1.0)
    with pytest.raises(InvalidParameterError, match="'noise_precision' parameter"):
        laplace_evidence(net, X, y, prior_precision=1.0)
    with pytest.raises(InvalidParameterError, match="must be None with likelihood='class"):
        laplace_evidence(
            net, X, y > 3, likelihood="classification", prior_precision=1.0, noise_precision=1.0
        )
    with pytest.raises(InvalidParameterError, match="integer class labels"):
        laplace_evidence(net, X, y, likelihood="classification", prior_precision=1.0)
    with pytest.raises(InvalidParameterError, match="'structure' parameter"):
        laplace_evidence(net, X, y, prior_precision=1.0, noise_precision=1.0, structure="kfac")
    with pytest.raises(InvalidParameterError, match="'module' parameter"):
        laplace_evidence("net", X, y, prior_precision=1.0, noise_precision=1.0)
    with pytest.raises(InvalidParameterError, match="same number"):
        laplace_evidence(net, X, y[:-1], prior_precision=1.0, noise_precision=1.0)
    with pytest.raises(InvalidParameterError, match=r"class labels in 0\.\.0"):
        laplace_evidence(
            net, X, (y > 3).astype(int), likelihood="classification", prior_precision=1.0
        )
    with pytest.raises(InvalidParameterError, match="'max_iter' parameter of fit_laplace"):
        fit_laplace_hyperparameters(net, X, y, max_iter=0)


def test_zero_weights_warn():
    X, y = _data()
    with pytest.warns(ConvergenceWarning, match="no finite optimum"):
        fit_laplace_hyperparameters(_linear_net(np.zeros(4)), X, y)


def test_max_iter_warns():
    X, y = _data()
    net = _linear_net(_map(X - X.mean(0), y - y.mean(), 1.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_laplace_hyperparameters(net, X - X.mean(0), y - y.mean())
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        fit_laplace_hyperparameters(net, X, y, max_iter=1)


def test_collapsed_network_warns_unbounded():
    X, y = _data()
    net = _linear_net(np.full(4, 1e-9))
    with pytest.warns(ConvergenceWarning, match="keeps growing"):
        fit = fit_laplace_hyperparameters(net, X - X.mean(0), y - y.mean())
    assert fit.prior_precision > 1e8


# ---------------------------------------------------------------------------------------
# K-FAC
# ---------------------------------------------------------------------------------------
def test_kron_is_exact_for_one_linear_layer():
    X, y = _data(seed=8)
    alpha, beta = 0.6, 1.5
    Xc, yc = X - X.mean(0), y - y.mean()
    lap = laplace_evidence(
        _linear_net(_map(Xc, yc, alpha, beta)),
        Xc,
        yc,
        prior_precision=alpha,
        noise_precision=beta,
        structure="kron",
    )
    exact, _ = linear_evidence(X, y)({"alpha": beta, "lambda": alpha})
    assert abs(lap - exact) <= 1e-10 * abs(exact)
    X1 = np.hstack([X, np.ones((X.shape[0], 1))])
    w = _map(X1, y, alpha, beta)
    net = _linear_net(w[:-1], bias=float(w[-1]))
    lap = laplace_evidence(
        net, X, y, prior_precision=alpha, noise_precision=beta, structure="kron", batch_size=9
    )
    exact, _ = linear_evidence(X1, y, fit_intercept=False)({"alpha": beta, "lambda": alpha})
    assert abs(lap - exact) <= 1e-10 * abs(exact)


@pytest.mark.parametrize("likelihood", ["regression", "classification"])
def test_kron_is_the_block_diagonal_ggn_for_one_sample(likelihood):
    # With one sample each layer's GGN block is exactly a Kronecker product.
    rng = np.random.default_rng(9)
    X = torch.as_tensor(rng.normal(size=(1, 3)), dtype=D)
    C = 2 if likelihood == "regression" else 3
    net = _mlp(3, C, seed=3, hidden=4)
    alpha = 0.9
    if likelihood == "regression":
        y, beta = torch.as_tensor(rng.normal(size=(1, C)), dtype=D), 2.5
    else:
        y, beta = torch.as_tensor([1]), None
    G = _ggn_by_loop(net, X, y, beta)
    sizes = [net[0].weight.numel() + net[0].bias.numel(), net[2].weight.numel() + C]
    blocks = [G[: sizes[0], : sizes[0]], G[sizes[0] :, sizes[0] :]]
    logdet = sum(
        float(torch.linalg.slogdet(b + alpha * torch.eye(b.shape[0], dtype=D))[1]) for b in blocks
    )
    base, _ = _loglik_and_prior(net, X, y, alpha, beta)
    kron = laplace_evidence(
        net,
        X,
        y,
        likelihood=likelihood,
        prior_precision=alpha,
        noise_precision=beta,
        structure="kron",
    )
    assert abs((base - kron) * 2 - logdet) <= 1e-9 * abs(logdet)


def test_kron_on_mlp_is_close_to_full_and_fits():
    rng = np.random.default_rng(10)
    X = torch.as_tensor(rng.normal(size=(40, 3)), dtype=D)
    y = torch.as_tensor(rng.integers(0, 3, size=40))
    net = _mlp(3, 3, seed=4)
    kw = {"likelihood": "classification", "prior_precision": 1.0}
    full = laplace_evidence(net, X, y, **kw)
    kron = laplace_evidence(net, X, y, structure="kron", **kw)
    assert math.isfinite(kron) and abs(kron - full) < 0.2 * abs(full)
    fit = fit_laplace_hyperparameters(net, X, y, likelihood="classification", structure="kron")
    assert fit.log_evidence >= kron


def test_kron_rejects_non_linear_parameters():
    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 1).to(D)
            self.scale = torch.nn.Parameter(torch.ones(1, dtype=D))

        def forward(self, x):
            return self.lin(x) * self.scale

    X, y = _data()
    with pytest.raises(InvalidParameterError, match=r"torch\.nn\.Linear layers only"):
        laplace_evidence(Scaled(), X, y, prior_precision=1.0, noise_precision=1.0, structure="kron")


def test_import_does_not_load_torch():
    import os
    import subprocess
    import sys

    import twiddle.evidence

    src = os.path.abspath(os.path.join(os.path.dirname(twiddle.evidence.__file__), "..", ".."))
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = (
        "import sys, twiddle, twiddle.evidence as e; assert 'torch' not in sys.modules; "
        "e.laplace_evidence; e.fit_laplace_hyperparameters; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
