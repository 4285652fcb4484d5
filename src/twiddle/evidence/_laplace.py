"""The Laplace approximation to the evidence of a neural network, with a GGN curvature.

Notation
--------
f(x; theta)  the network's output for input x, C numbers (regression: the mean;
             classification: the logits); theta holds its P parameters
theta*       the trained parameters (a MAP estimate), where the approximation is made
n            number of samples; C outputs per sample
alpha        prior precision: theta ~ N(0, I / alpha) (weight decay alpha, every parameter
             including biases)
beta         noise precision of the regression likelihood: y ~ N(f(x; theta), I / beta)
J_i          (C, P) Jacobian of f(x_i; .) at theta*
Lambda_i     (C, C) Hessian of -log p(y_i | f) in f: beta I (regression);
             diag(p_i) - p_i p_i^T with p_i = softmax(f(x_i)) (classification)
G            generalised Gauss-Newton matrix, sum_i J_i^T Lambda_i J_i, (P, P);
             G_0 = G / beta for regression (independent of beta)
H            posterior precision, G + alpha I
sse          sum_i |y_i - f(x_i; theta*)|^2 (regression)
gamma        effective number of parameters, sum_k g_k / (g_k + alpha) over the
             eigenvalues g_k of G (the diagonal of G with ``structure="diag"``)

Laplace approximation of the log evidence (MacKay 1992; Immer et al. 2021, eq. 3):

    log p(D | alpha, beta) ~ log p(D | theta*, beta) + log p(theta* | alpha)
                             + P/2 log 2 pi - 1/2 log det H,
    log p(theta* | alpha) = P/2 log(alpha / 2 pi) - alpha/2 |theta*|^2,

with log p(D | theta*, beta) = nC/2 log(beta / 2 pi) - beta/2 sse for regression and
sum_i log softmax(f(x_i))_{y_i} for classification.

Curvature structures. ``"full"`` forms G explicitly from the per-sample Jacobians
(``torch.func.jacrev`` under ``vmap``): O(n C P^2) time and O(P^2) memory, for small
networks. ``"diag"`` keeps the exact diagonal of G (from the same Jacobians, O(n C^2 P)),
so log det H ~ sum_p log(G_pp + alpha); by Hadamard's inequality this overestimates
log det H (the evidence is underestimated) unless G is diagonal. ``"kron"`` is
K-FAC (Martens and Grosse 2015; for the GGN, Botev et al. 2017, Immer et al. 2021) for
networks whose parameters all sit in ``torch.nn.Linear`` layers: G is block diagonal over
layers, each block ``G_l ~ (sum_i a_i a_i^T) (x) (sum_i Q_i^T Q_i) / n`` with a_i the
layer's input (a 1 appended for the bias) and Q_i = S_i^T ds_i the output Jacobian in
the layer's pre-activation s; log det H = sum over layers and eigenvalue pairs of
log(e^A_j e^B_k / n + alpha). It is exact for one sample and for a one-layer network
with one output (then the block is beta X^T X); memory O(sum_l (in_l^2 + out_l^2)).
All use G = sum_i B_i^T B_i with B_i = S_i^T J_i and S_i S_i^T = Lambda_i: S_i = sqrt(beta) I,
or S_i = diag(sqrt(p_i)) - p_i sqrt(p_i)^T for the softmax.

Hyperparameters. Around a fixed theta* the approximation is a closed form in (alpha,
beta) given the eigenvalues g_k of G_0 (or its diagonal):

    log Z = nC/2 log(beta / 2 pi) - beta/2 sse + P/2 log alpha - alpha/2 |theta*|^2
            - 1/2 sum_k log(beta g_k + alpha),

whose stationary points are MacKay's fixed point, gamma = sum_k beta g_k / (beta g_k +
alpha), alpha = gamma / |theta*|^2, beta = (nC - gamma) / sse (classification: alpha
only). For a linear model theta* is the exact posterior mean and H does not depend on
it, so the approximation is exact and, by the envelope theorem, its post hoc optimum
around the MAP at the optimum is the type-II maximum likelihood of Bayesian linear
regression.

References
----------
D. J. C. MacKay, "A practical Bayesian framework for backpropagation networks", Neural
Computation 4(3), 1992.
D. J. C. MacKay, "Bayesian interpolation", Neural Computation 4(3), 1992.
A. Immer, M. Bauer, V. Fortuin, G. Raetsch and M. E. Khan, "Scalable marginal likelihood
estimation for model selection in deep learning", ICML 2021.
J. Martens and R. Grosse, "Optimizing neural networks with Kronecker-factored approximate
curvature", ICML 2015.
A. Botev, H. Ritter and D. Barber, "Practical Gauss-Newton optimisation for deep
learning", ICML 2017.
E. Daxberger, A. Kristiadi, A. Immer, R. Eschenhagen, M. Bauer and P. Hennig, "Laplace
redux -- effortless Bayesian deep learning", NeurIPS 2021.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from twiddle._errors import InvalidParameterError
from twiddle._validation import check_choice, check_float, check_int
from twiddle.evidence._infer import ConvergenceWarning

if TYPE_CHECKING:
    import torch

_LOG2PI = math.log(2.0 * math.pi)
_LIKELIHOODS = ("regression", "classification")
_STRUCTURES = ("full", "diag", "kron")
#: The fixed point stops when a precision exceeds this multiple of its start: the
#: weights (or the residuals) are so small that the evidence grows without bound.
_CAP = 1e10


@dataclasses.dataclass(frozen=True)
class LaplaceFit:
    """Hyperparameters fitted by maximising the Laplace evidence around fixed weights.

    Attributes
    ----------
    prior_precision : float
        The fitted prior precision ``alpha`` (weight decay).
    noise_precision : float or None
        The fitted noise precision ``beta`` (regression; None for classification).
    log_evidence : float
        The Laplace log evidence at the fitted hyperparameters.
    n_iter : int
        Fixed-point iterations used.
    effective_parameters : float
        ``gamma``, the number of parameters determined by the data.
    """

    prior_precision: float
    noise_precision: float | None
    log_evidence: float
    n_iter: int
    effective_parameters: float


@dataclasses.dataclass(frozen=True)
class _Terms:
    """Everything the Laplace evidence needs about the network, independent of (alpha, beta)."""

    curv: np.ndarray  # eigenvalues (full) or diagonal (diag) of G_0 (regression) or G
    fit: float  # sse (regression) or the negative log likelihood (classification)
    n_out: int  # n C
    w2: float  # |theta*|^2
    n_params: int
    regression: bool
    #: K-FAC only: per Linear layer, (curvature eigenvalues, |theta_l*|^2)
    layers: tuple[tuple[np.ndarray, float], ...] = ()

    def groups(self, n_alphas: int) -> list[tuple[np.ndarray, float]]:
        """(curvature, |theta_g*|^2) per prior group: the Linear layers (K-FAC) when
        ``n_alphas`` matches them, else one group of every parameter."""
        if n_alphas > 1 and n_alphas == len(self.layers):
            return list(self.layers)
        return [(self.curv, self.w2)]

    def gammas(self, alphas: np.ndarray, beta: float | None) -> np.ndarray:
        """Effective number of parameters of each group, ``sum_k g_k / (g_k + alpha_g)``."""
        return np.array(
            [
                float(np.sum(g / (g + a)))
                for (c, _), a in zip(self.groups(alphas.size), alphas, strict=True)
                for g in [beta * c if beta is not None else c]
            ]
        )

    def log_evidence(self, alpha: float | np.ndarray, beta: float | None) -> float:
        """The closed form of the module docstring; ``alpha`` a float, or one precision
        per group of :meth:`groups` (then the evidence is a sum over the groups)."""
        alphas = np.atleast_1d(np.asarray(alpha, dtype=float))
        if self.regression:
            assert beta is not None
            total = 0.5 * self.n_out * (math.log(beta) - _LOG2PI) - 0.5 * beta * self.fit
        else:
            total = -self.fit
        for (c, w), a in zip(self.groups(alphas.size), alphas, strict=True):
            g = beta * c if beta is not None else c
            total += 0.5 * c.size * math.log(a) - 0.5 * a * w - 0.5 * float(np.log(g + a).sum())
        return total


def _check_common(
    module: Any,
    X: Any,
    y: Any,
    likelihood: Any,
    structure: Any,
    batch_size: Any,
    where: str,
) -> tuple[Any, Any, Any, str, str, int]:
    import torch

    if not isinstance(module, torch.nn.Module):
        raise InvalidParameterError(
            f"The 'module' parameter of {where} must be a torch.nn.Module. Got {module!r} instead."
        )
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise InvalidParameterError(
            f"The 'module' parameter of {where} must have parameters that require gradients. "
            f"Got {type(module).__name__} with none instead."
        )
    likelihood = check_choice(likelihood, "likelihood", where, _LIKELIHOODS)
    structure = check_choice(structure, "structure", where, _STRUCTURES)
    batch_size = int(check_int(batch_size, "batch_size", where, minimum=1) or 1)
    dtype, device = params[0].dtype, params[0].device
    Xt = torch.as_tensor(X, dtype=dtype, device=device)
    if likelihood == "classification":
        yt = torch.as_tensor(y, device=device)
        if yt.ndim != 1 or (yt.is_floating_point() and not torch.all(yt == yt.round())):
            raise InvalidParameterError(
                f"The 'y' parameter of {where} must be a 1-d array of integer class labels "
                f"with likelihood='classification'. Got an array of shape {tuple(yt.shape)} "
                f"and dtype {yt.dtype} instead."
            )
        yt = yt.long()
    else:
        yt = torch.as_tensor(y, dtype=dtype, device=device)
    if Xt.ndim < 1 or yt.ndim < 1 or Xt.shape[0] != yt.shape[0] or Xt.shape[0] < 1:
        raise InvalidParameterError(
            f"The 'X' and 'y' parameters of {where} must have the same number (>= 1) of "
            f"samples. Got shapes {tuple(Xt.shape)} and {tuple(yt.shape)} instead."
        )
    return module, Xt, yt, likelihood, structure, batch_size


def _terms(
    module: torch.nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    likelihood: str,
    structure: str,
    batch_size: int,
    where: str,
) -> _Terms:
    """The fit term, |theta*|^2 and the curvature spectrum of G (or G_0), batch by batch."""
    import torch

    if structure == "kron":
        return _terms_kron(module, X, y, likelihood, batch_size, where)
    from torch.func import functional_call, jacrev, vmap

    names = [k for k, p in module.named_parameters() if p.requires_grad]
    params = {k: p.detach() for k, p in module.named_parameters() if p.requires_grad}
    n_params = sum(p.numel() for p in params.values())
    regression = likelihood == "regression"

    def f(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = functional_call(module, p, (x.unsqueeze(0),))
        return out.reshape(-1)

    jac = vmap(jacrev(f), in_dims=(None, 0))
    G = np.zeros((n_params, n_params)) if structure == "full" else None
    diag = np.zeros(n_params)
    fit = 0.0
    n_out = 0
    with torch.no_grad():
        for start in range(0, X.shape[0], batch_size):
            xb, yb = X[start : start + batch_size], y[start : start + batch_size]
            out = functional_call(module, params, (xb,)).reshape(xb.shape[0], -1)
            n_b, C = out.shape
            with torch.enable_grad():
                jd = jac(params, xb)
            J = torch.cat([jd[k].reshape(n_b, C, -1) for k in names], dim=2)  # (n_b, C, P)
            J = J.to(torch.float64)
            f_b, S = _fit_and_sqrt(out.to(torch.float64), yb, regression, tuple(y.shape), where)
            fit += f_b
            if S is None:
                B = J.reshape(n_b * C, n_params)
            else:  # S_i = diag(sqrt p) - p sqrt(p)^T, S_i S_i^T = diag(p) - p p^T
                B = torch.einsum("ncd,ncp->ndp", S, J).reshape(n_b * C, n_params)
            n_out += n_b * C
            Bn = B.cpu().numpy()
            diag += np.einsum("ij,ij->j", Bn, Bn)
            if G is not None:
                G += Bn.T @ Bn
    w2 = float(sum(float((p.to(torch.float64) ** 2).sum()) for p in params.values()))
    curv = np.maximum(np.linalg.eigvalsh(G), 0.0) if G is not None else diag
    return _Terms(curv, fit, n_out, w2, n_params, regression)


def _check_precisions(
    likelihood: str, prior_precision: Any, noise_precision: Any, where: str, suffix: str = ""
) -> tuple[float, float | None]:
    alpha = float(
        check_float(prior_precision, "prior_precision" + suffix, where, minimum=0, exclusive=True)
        or 0.0
    )
    if likelihood == "regression":
        beta: float | None = float(
            check_float(
                noise_precision, "noise_precision" + suffix, where, minimum=0, exclusive=True
            )
            or 0.0
        )
    elif noise_precision is not None:
        raise InvalidParameterError(
            f"The 'noise_precision{suffix}' parameter of {where} must be None with "
            f"likelihood='classification'. Got {noise_precision!r} instead."
        )
    else:
        beta = None
    return alpha, beta


def laplace_evidence(
    module: torch.nn.Module,
    X: Any,
    y: Any,
    *,
    likelihood: str = "regression",
    prior_precision: float,
    noise_precision: float | None = None,
    structure: str = "full",
    batch_size: int = 256,
) -> float:
    """The Laplace approximation of a trained network's log evidence, GGN curvature.

    ``log p(D | theta*, beta) + log p(theta* | alpha) + P/2 log 2 pi - 1/2 log det(G +
    alpha I)`` at the module's current parameters ``theta*`` (which should be a MAP
    estimate under weight decay ``alpha``), with ``G`` the generalised Gauss-Newton
    matrix of the likelihood. See the module docstring for the notation.

    Parameters
    ----------
    module : torch.nn.Module
        The trained network; ``module(X)`` gives outputs of shape (n_samples,) or
        (n_samples, n_outputs). Every parameter that requires gradients counts, under an
        isotropic Gaussian prior of precision ``prior_precision``. Put it in eval mode
        first if it has dropout; layers that mix samples (batch norm in training mode)
        are not supported.
    X : array-like or torch.Tensor of shape (n_samples, ...)
    y : array-like or torch.Tensor
        Regression: targets of the output's shape; classification: integer labels of
        shape (n_samples,).
    likelihood : {"regression", "classification"}, default "regression"
        Gaussian likelihood with noise precision ``noise_precision``, or categorical
        likelihood of the softmax of the outputs.
    prior_precision : float
        ``alpha`` > 0.
    noise_precision : float or None
        ``beta`` > 0; required for regression, None for classification.
    structure : {"full", "diag", "kron"}, default "full"
        The explicit P x P GGN (small networks); its exact diagonal (log det of the
        diagonal; an underestimate of the evidence unless the GGN is diagonal); or
        K-FAC, per-layer Kronecker factors, for networks whose trainable parameters are
        all in ``torch.nn.Linear`` layers, each called once per forward pass (no
        in-place operations on their outputs).
    batch_size : int, default 256
        Samples per batch of Jacobians (memory ``batch_size * n_outputs * P``).

    Returns
    -------
    float
        The approximate log evidence, in nats.

    Examples
    --------
    >>> import torch
    >>> from twiddle.evidence import laplace_evidence
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Linear(3, 1, bias=False).double()
    >>> X, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    >>> value = laplace_evidence(net, X, y, prior_precision=1.0, noise_precision=2.0)
    """
    where = "laplace_evidence"
    module, Xt, yt, likelihood, structure, batch_size = _check_common(
        module, X, y, likelihood, structure, batch_size, where
    )
    alpha, beta = _check_precisions(likelihood, prior_precision, noise_precision, where)
    terms = _terms(module, Xt, yt, likelihood, structure, batch_size, where)
    return terms.log_evidence(alpha, beta)


def fit_laplace_hyperparameters(
    module: torch.nn.Module,
    X: Any,
    y: Any,
    *,
    likelihood: str = "regression",
    structure: str = "full",
    prior_precision_init: float = 1.0,
    noise_precision_init: float | None = None,
    max_iter: int = 1000,
    tol: float = 1e-10,
    batch_size: int = 256,
) -> LaplaceFit:
    """Maximise the Laplace evidence in the prior (and noise) precision, around fixed weights.

    Post hoc: the module's parameters ``theta*`` stay as they are, the curvature is
    computed once, and MacKay's fixed point (see the module docstring) runs to
    convergence on the closed form of the evidence in ``(alpha, beta)``. For a model
    linear in its parameters, with ``theta*`` the MAP at the fitted hyperparameters,
    this is exactly type-II maximum likelihood.

    Parameters
    ----------
    module, X, y, likelihood, structure, batch_size
        As in :func:`laplace_evidence`.
    prior_precision_init : float, default 1.0
        Starting ``alpha`` > 0.
    noise_precision_init : float or None
        Starting ``beta`` > 0 (regression; default: ``nC / sse``, the maximum-likelihood
        noise precision); must be None for classification.
    max_iter : int, default 1000
        The most fixed-point iterations.
    tol : float, default 1e-10
        Stop when neither precision changes by more than a factor ``exp(tol)``.

    Returns
    -------
    LaplaceFit
        The fitted ``prior_precision``, ``noise_precision`` (None for classification),
        the ``log_evidence`` there, ``n_iter`` and ``effective_parameters``.

    Warns
    -----
    ConvergenceWarning
        If ``max_iter`` iterations do not converge, or the weights are all zero or the
        residuals vanish, or a precision runs past ``1e10`` times its start (no finite
        optimum: the evidence grows as the weights' prior collapses on near-zero
        weights); the last iterate is returned.
    """
    where = "fit_laplace_hyperparameters"
    module, Xt, yt, likelihood, structure, batch_size = _check_common(
        module, X, y, likelihood, structure, batch_size, where
    )
    max_iter = int(check_int(max_iter, "max_iter", where, minimum=1) or 1)
    tol = float(check_float(tol, "tol", where, minimum=0, exclusive=True) or 0.0)
    regression = likelihood == "regression"
    if regression and noise_precision_init is None:
        alpha, _ = _check_precisions("classification", prior_precision_init, None, where, "_init")
        beta: float | None = None
    else:
        alpha, beta = _check_precisions(
            likelihood, prior_precision_init, noise_precision_init, where, "_init"
        )
    terms = _terms(module, Xt, yt, likelihood, structure, batch_size, where)
    if regression and beta is None:
        beta = terms.n_out / max(terms.fit, np.finfo(float).tiny)
    alphas, beta, gamma, n_iter, status = _mackay(terms, alpha, beta, max_iter, tol)
    alpha = float(alphas[0])
    if status != "converged":
        reason = {
            "max_iter": f"did not converge in max_iter={max_iter} iterations",
            "degenerate": "has no finite optimum (zero weights or zero residuals)",
            "unbounded": "keeps growing as a precision goes to infinity (weights or "
            "residuals all near zero, e.g. a network collapsed by strong weight decay)",
        }[status]
        warnings.warn(
            f"The Laplace evidence of {where} {reason}; returning the last iterate.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return LaplaceFit(
        prior_precision=alpha,
        noise_precision=beta,
        log_evidence=terms.log_evidence(alpha, beta),
        n_iter=n_iter,
        effective_parameters=gamma,
    )


def _mackay(
    terms: _Terms, alpha: float | np.ndarray, beta: float | None, max_iter: int, tol: float
) -> tuple[np.ndarray, float | None, float, int, str]:
    """MacKay's fixed point, ``alpha_g = gamma_g / |theta_g|^2`` for each prior group
    (one, or one per Linear layer when ``alpha`` has one entry per layer) and
    ``beta = (nC - gamma) / sse``; returns ``(alphas, beta, gamma, n_iter, status)``."""
    tiny = np.finfo(float).tiny
    a = np.atleast_1d(np.asarray(alpha, dtype=float)).copy()
    groups = terms.groups(a.size)
    a = a[: len(groups)]
    w2 = np.array([w for _, w in groups])
    a_cap = _CAP * a
    b_cap = _CAP * beta if beta is not None else math.inf

    gam = np.full(a.size, math.nan)
    for it in range(1, max_iter + 1):
        gam = terms.gammas(a, beta)
        if np.any(w2 <= tiny) or (beta is not None and terms.fit <= tiny):
            return a, beta, float(gam.sum()), it, "degenerate"
        a_new = np.maximum(gam, tiny) / w2
        step = float(np.max(np.abs(np.log(a_new / a))))
        beta_new = beta
        if beta is not None:
            beta_new = max(terms.n_out - float(gam.sum()), tiny) / terms.fit
            step = max(step, abs(math.log(beta_new / beta)))
        a, beta = a_new, beta_new
        if np.any(a > a_cap) or (beta is not None and beta > b_cap):
            return a, beta, float(gam.sum()), it, "unbounded"
        if step < tol:
            return a, beta, float(terms.gammas(a, beta).sum()), it, "converged"
    return a, beta, float(gam.sum()), max_iter, "max_iter"


def _fit_and_sqrt(
    out: torch.Tensor, yb: torch.Tensor, regression: bool, y_shape: tuple[int, ...], where: str
) -> tuple[float, torch.Tensor | None]:
    """The batch's fit term and ``S_i`` (None for regression, where S_i = I after G_0)."""
    import torch

    n_b, C = out.shape
    if regression:
        yb64 = yb.to(torch.float64).reshape(n_b, -1)
        if yb64.shape != out.shape:
            raise InvalidParameterError(
                f"The 'y' parameter of {where} must match the module's output: "
                f"{C} target(s) per sample. Got shape {y_shape} instead."
            )
        return float(((yb64 - out) ** 2).sum()), None
    if yb.min() < 0 or yb.max() >= C:
        raise InvalidParameterError(
            f"The 'y' parameter of {where} must hold class labels in 0..{C - 1} "
            f"for a module with {C} outputs. Got labels in "
            f"{int(yb.min())}..{int(yb.max())} instead."
        )
    logp = torch.log_softmax(out, dim=1)
    p = logp.exp()
    sp = p.sqrt()
    S = torch.diag_embed(sp) - p.unsqueeze(2) * sp.unsqueeze(1)  # (n_b, C, C)
    return -float(logp.gather(1, yb.reshape(-1, 1)).sum()), S


def _terms_kron(
    module: torch.nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    likelihood: str,
    batch_size: int,
    where: str,
) -> _Terms:
    """K-FAC: per Linear layer, G_l ~ A_l (x) B_l / n with A_l = sum_i a_i a_i^T (inputs,
    with a 1 appended for a bias) and B_l = sum_i Q_i^T Q_i, Q_i = S_i^T df_i/ds_i (s the
    layer's outputs); the eigenvalues of G_l are the products of those of A_l and B_l / n."""
    import torch

    regression = likelihood == "regression"
    layers: list[torch.nn.Linear] = []
    covered: set[int] = set()
    for m in module.modules():
        if isinstance(m, torch.nn.Linear) and any(p.requires_grad for p in m.parameters()):
            if not all(p.requires_grad for p in m.parameters()):
                raise InvalidParameterError(
                    f"The 'module' parameter of {where} with structure='kron' must not freeze "
                    "part of a Linear layer (its weight but not its bias, or the reverse)."
                )
            layers.append(m)
            covered.update(id(p) for p in m.parameters())
    others = [k for k, p in module.named_parameters() if p.requires_grad and id(p) not in covered]
    if others:
        raise InvalidParameterError(
            f"The 'module' parameter of {where} with structure='kron' must have trainable "
            f"parameters in torch.nn.Linear layers only. Got others: {others[:5]} instead; "
            "use structure='full' or 'diag'."
        )
    A = [np.zeros((m.in_features + (m.bias is not None),) * 2) for m in layers]
    Bf = [np.zeros((m.out_features, m.out_features)) for m in layers]
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(m: torch.nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if id(m) in seen or inp[0].ndim != 2:
            raise InvalidParameterError(
                f"The 'module' parameter of {where} with structure='kron' must call each "
                "Linear layer once per forward pass, on inputs of shape (batch, features); "
                "use structure='full' or 'diag'."
            )
        seen[id(m)] = (inp[0].detach(), out)

    handles = [m.register_forward_hook(hook) for m in layers]
    fit, n_out = 0.0, 0
    try:
        for start in range(0, X.shape[0], batch_size):
            xb, yb = X[start : start + batch_size], y[start : start + batch_size]
            seen.clear()
            with torch.enable_grad():
                out = module(xb).reshape(xb.shape[0], -1)
                n_b, C = out.shape
                f_b, S = _fit_and_sqrt(
                    out.detach().to(torch.float64), yb, regression, tuple(y.shape), where
                )
                fit += f_b
                n_out += n_b * C
                outs = [seen[id(m)][1] for m in layers]
                # per-sample df_c/ds for every layer: samples do not interact
                jac = [torch.zeros(n_b, C, m.out_features, dtype=torch.float64) for m in layers]
                for c in range(C):
                    grads = torch.autograd.grad(
                        out[:, c].sum(), outs, retain_graph=c < C - 1, allow_unused=True
                    )
                    for j, g in enumerate(grads):
                        if g is not None:
                            jac[j][:, c, :] = g.to(torch.float64)
            for j, m in enumerate(layers):
                a = seen[id(m)][0].to(torch.float64)
                if m.bias is not None:
                    a = torch.cat([a, torch.ones(n_b, 1, dtype=torch.float64)], dim=1)
                Q = jac[j] if S is None else torch.einsum("ncd,ncp->ndp", S, jac[j])
                an, qn = a.cpu().numpy(), Q.reshape(n_b * C, -1).cpu().numpy()
                A[j] += an.T @ an
                Bf[j] += qn.T @ qn
    finally:
        for h in handles:
            h.remove()
    n = X.shape[0]
    per_layer = tuple(
        (
            np.outer(
                np.maximum(np.linalg.eigvalsh(a), 0.0), np.maximum(np.linalg.eigvalsh(b), 0.0) / n
            ).ravel(),
            float(sum(float((p.detach().to(torch.float64) ** 2).sum()) for p in m.parameters())),
        )
        for a, b, m in zip(A, Bf, layers, strict=True)
    )
    curv = np.concatenate([c for c, _ in per_layer])
    w2 = float(sum(w for _, w in per_layer))
    return _Terms(curv, fit, n_out, w2, int(curv.size), regression, per_layer)


def _online_update(
    module: torch.nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    likelihood: str,
    alphas: np.ndarray,
    beta: float | None,
    *,
    batch_size: int = 256,
) -> tuple[np.ndarray, float | None, float, float, str, bool]:
    """One hyperparameter update of online Laplace training, at the current weights.

    Computes the curvature at the module's present parameters with K-FAC when every
    trainable parameter sits in a ``torch.nn.Linear`` layer, else with the exact
    diagonal, and maximises the closed form of the evidence in the prior precisions
    and ``beta`` from their current values. ``alphas`` holds one prior precision per
    Linear layer (K-FAC; the layer-wise prior of Immer et al. 2021, under which the
    evidence is a sum over layers of the terms in the module docstring) or a single
    one shared by every parameter (any structure). The maximum is found by MacKay's
    fixed point (``alpha_l = gamma_l / |theta_l|^2``), and where that does not
    converge by L-BFGS-B in the log precisions within ``1e-8`` to ``1e8``. Used by
    the PyTorch estimators with ``weight_decay="evidence"`` between epochs (Immer et
    al. 2021, algorithm 1, with the hyperparameters optimised to convergence at each
    update instead of a few gradient steps). The fallback matters: with K-FAC the
    curvature can have more non-zero eigenvalues than there are observations (far
    from the MAP, or with P >> n), and then the fixed point's noise update ``beta =
    (nC - gamma) / sse`` has no positive solution, while the closed form keeps a
    finite maximum.

    Returns
    -------
    alphas, beta, log_evidence, gamma, structure, converged
    """
    from scipy.optimize import minimize

    where = "online Laplace update"
    try:
        terms = _terms(module, X, y, likelihood, "kron", batch_size, where)
        structure = "kron"
    except InvalidParameterError:
        terms = _terms(module, X, y, likelihood, "diag", batch_size, where)
        structure = "diag"
    regression = likelihood == "regression"
    if regression and beta is None:
        beta = terms.n_out / max(terms.fit, np.finfo(float).tiny)
    a, b, gamma, _, status = _mackay(terms, alphas, beta, 500, 1e-9)
    if status == "converged" and np.all((a > 1e-8) & (a < 1e8)):
        return a, b, terms.log_evidence(a, b), gamma, structure, True

    groups = terms.groups(np.asarray(alphas).size)
    alphas = np.atleast_1d(np.asarray(alphas, dtype=float))[: len(groups)]

    n_a = len(groups)

    def negative(z: np.ndarray) -> tuple[float, np.ndarray]:
        al = np.exp(z[:n_a])
        bb = math.exp(z[n_a]) if regression else None
        grad = np.zeros_like(z)
        total = terms.log_evidence(al, bb)
        for k, (c, w) in enumerate(groups):
            g = c * bb if bb is not None else c
            grad[k] = al[k] * (
                0.5 * c.size / al[k] - 0.5 * w - 0.5 * float((1.0 / (g + al[k])).sum())
            )
        if bb is not None:
            inner = sum(float((c / (c * bb + al[k])).sum()) for k, (c, _) in enumerate(groups))
            grad[n_a] = bb * (0.5 * terms.n_out / bb - 0.5 * terms.fit - 0.5 * inner)
        return -total, -grad

    start = np.log(np.concatenate([alphas, [beta] if beta is not None else []]))
    bound = (math.log(1e-8), math.log(1e8))
    res = minimize(
        negative, np.clip(start, *bound), jac=True, method="L-BFGS-B", bounds=[bound] * start.size
    )
    a = np.exp(res.x[:n_a])
    b = float(math.exp(res.x[n_a])) if regression else None
    gamma = float(terms.gammas(a, b).sum())
    return a, b, terms.log_evidence(a, b), gamma, structure, bool(res.success)
