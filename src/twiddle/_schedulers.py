"""Schedulers: *when* to stop a configuration. Fold racing for cross-validation.

A sampler decides *what* to try; a scheduler decides whether a running trial goes
on. :class:`FoldRacing` stops a cross-validated configuration after a few folds
once it is confidently worse than the best configuration found so far, so the
remaining folds of a loser are never fitted.

Notation
--------
K
    Number of folds of the study (every configuration sees the same folds).
k
    Number of folds of the challenger done at a look (``min_folds <= k < K``).
c_j, b_j
    Score of the challenger and of the incumbent on fold j. The *incumbent* is the
    best COMPLETE trial so far (by mean over all K folds).
d_j
    Paired difference, oriented so that a positive d_j means the challenger did
    worse on fold j: ``d_j = b_j - c_j`` when higher is better, ``c_j - b_j`` when
    lower is better. Only the k folds the challenger has done are used, so both
    are compared on the same folds.
d_bar, s_d
    Mean and sample standard deviation (ddof=1) of the k differences.
T
    The paired t statistic ``d_bar / (s_d / sqrt(k))``, with k - 1 degrees of freedom.
L
    Number of looks: ``K - min_folds`` (one look after each fold result from the
    ``min_folds``-th to the (K-1)-th; at K folds the trial is complete and stopping
    it saves nothing).
alpha
    The stated bound on the probability that a configuration that is not worse than
    the incumbent is stopped at any of its looks (the false-stop rate).

The rule
--------
At each look, test H0: E[d] <= 0 (the challenger is not worse) against H1: E[d] > 0
with a one-sided paired t-test, and stop the challenger when its p-value is below
``alpha / L`` (Bonferroni over the looks). Two further rules make the decision
safe:

* a challenger whose running mean over its done folds equals or beats the
  incumbent's mean over those same folds (``d_bar <= 0``) is never stopped (implied
  by the test, since a p-value below 1/2 needs T > 0, and also checked explicitly);
* a look needs at least ``min_folds`` finite fold scores of the challenger and a
  complete incumbent with K finite fold scores; otherwise the trial goes on.

Why Bonferroni over the looks
-----------------------------
Testing after every fold is a *repeated significance test*: at a fixed per-look
level alpha the chance that at least one of L looks rejects a true H0 grows well
above alpha (Armitage, McPherson and Rowe, 1969). Group-sequential designs fix
this with boundaries that spend alpha across looks (Pocock, 1977; O'Brien and
Fleming, 1979; the alpha-spending functions of Lan and DeMets, 1983), but their
boundaries are computed from the joint normal law of the statistics at the looks,
which does not hold for t statistics with one or two degrees of freedom (the
regime here: k = 2..9). Bonferroni needs no joint law at all: by the union bound,
P(any look rejects | H0) <= sum over looks of P(that look rejects | H0) <= L *
alpha / L = alpha, whatever the dependence between looks. With at most K - 2 looks
(at most 8 for 10 folds) it costs little power, because the looks are strongly
positively correlated (each adds one fold to the previous ones): the measured
false-stop rate is well below alpha (see ``tests/test_racing.py``).

Racing configurations fold by fold with statistical tests is the idea of Hoeffding
races (Maron and Moore, 1994) and of F-Race (Birattari, Stützle, Paquete and
Varrentrapp, 2002); paired t-tests on cross-validation folds are used for the same
purpose by Zheng and Bilenko (2013, "Lazy paired hyper-parameter tuning") and by
Krueger, Panknin and Braun (2015, "Fast cross-validation via sequential testing").

What the guarantee covers, and what it does not
-----------------------------------------------
The bound holds under the paired t-test's model: the differences d_j of the folds
are independent and normal with a common mean. Folds of one CV split are not quite
independent (training sets overlap, Nadeau and Bengio, 2003; Bengio and Grandvalet,
2004), the t-test is then somewhat liberal, and scores such as accuracy are
discrete. The incumbent can change between two looks of a challenger; each look is
still a level-alpha/L test against the incumbent of that moment. The incumbent is
the best of the trials so far, so its fold scores are optimistically biased (the
winner's curse): the rule answers "is this configuration worse than the incumbent
*as measured on these folds*", which is the comparison that decides which
configuration the study reports.

A stopped trial is recorded as PRUNED with the fold scores it reached (None for the
folds not run), its value is the running mean of its done folds (not comparable
with the K-fold means of COMPLETE trials, and never the study's best), and
``system_attrs["racing"]`` records the decision (``folds``, ``n_folds``, ``mean``,
``incumbent_mean``, ``statistic``, ``p_value``, ``threshold``, ``alpha`` and the
``incumbent``'s trial number). Folds of a stopped trial that were queued but not
started never run; folds already running in worker processes are left to finish and
their results are ignored (killing a worker costs a new process and re-sending the
data, usually more than the rest of one fold fit).

Samplers see PRUNED trials in their history, but the GP and TPE samplers model only
COMPLETE trials for now, so they learn nothing from a stopped configuration: with a
model-based sampler many stops can leave the model with few points (see
``benchmarks/racing.py``). Giving samplers the stopped trials (for TPE, in the
"bad" group; for the GP, as censored observations) is the next step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from twiddle._errors import InvalidParameterError
from twiddle._validation import check_int

__all__ = ["FoldRacing", "make_scheduler"]


class FoldRacing:
    """Stop a cross-validated configuration once it is confidently worse than the incumbent.

    After each fold result, from the ``min_folds``-th on, the configuration is
    compared with the incumbent (the best COMPLETE trial so far) on the folds it has
    done by a one-sided paired t-test, at level ``alpha / (K - min_folds)`` per look
    (Bonferroni over the looks), so that the probability of stopping a configuration
    that is not worse than the incumbent stays at most ``alpha`` despite the repeated
    looks. A configuration whose running mean equals or beats the incumbent's on the
    same folds is never stopped. See the module notes for the reasoning.

    Parameters
    ----------
    alpha : float, default 0.05
        Bound on the false-stop rate of one configuration (all its looks together),
        in (0, 1).
    min_folds : int, default 3
        Folds a configuration must have done before it may be stopped (at least 2,
        since the test needs a variance). With K folds there are ``K - min_folds``
        looks; with ``K <= min_folds`` nothing is ever stopped.

    Examples
    --------
    >>> from twiddle import FoldRacing
    >>> racing = FoldRacing(alpha=0.05, min_folds=3)
    >>> incumbent = [0.95, 0.96, 0.94, 0.97, 0.95]
    >>> racing.decide([0.80, 0.82, 0.79], incumbent)["stop"]
    True
    >>> racing.decide([0.96, 0.95, 0.95], incumbent)["stop"]
    False
    """

    name = "racing"

    def __init__(self, alpha: float = 0.05, min_folds: int = 3) -> None:
        where = "FoldRacing"
        ok = isinstance(alpha, numbers.Real) and not isinstance(alpha, bool)
        if not (ok and 0 < alpha < 1):
            raise InvalidParameterError(
                f"The 'alpha' parameter of {where} must be a number in (0, 1). Got {alpha!r} "
                "instead."
            )
        min_folds_ = check_int(min_folds, "min_folds", where, minimum=2)
        assert min_folds_ is not None
        self.alpha = float(alpha)
        self.min_folds = int(min_folds_)

    def __repr__(self) -> str:
        return f"FoldRacing(alpha={self.alpha}, min_folds={self.min_folds})"

    def n_looks(self, n_folds: int) -> int:
        """Number of looks ``L = K - min_folds`` for ``n_folds = K`` folds (0 if none)."""
        return max(0, n_folds - self.min_folds)

    def level(self, n_folds: int) -> float:
        """Per-look significance level ``alpha / L`` (0 when there is no look)."""
        looks = self.n_looks(n_folds)
        return self.alpha / looks if looks else 0.0

    def decide(
        self,
        challenger: Sequence[float | None],
        incumbent: Sequence[float | None],
        *,
        maximize: bool = True,
    ) -> dict[str, Any]:
        """Whether to stop the challenger now, with the test that decided it.

        Parameters
        ----------
        challenger : sequence of (float or None)
            The challenger's fold scores in fold order; None (or a missing tail) for
            folds not done yet. Folds need not be done in order.
        incumbent : sequence of (float or None)
            The incumbent's fold scores on all K folds.
        maximize : bool, default True
            Whether higher scores are better.

        Returns
        -------
        dict
            ``stop`` (bool), ``folds`` (k, the challenger's done folds), ``n_folds``
            (K), ``mean`` and ``incumbent_mean`` (both over the same k folds),
            ``statistic`` (T), ``p_value`` (one-sided), ``threshold`` (alpha / L),
            ``alpha`` and ``reason`` (why the trial goes on, or "worse").
        """
        n_folds = len(incumbent)
        level = self.level(n_folds)
        out: dict[str, Any] = {
            "stop": False,
            "folds": 0,
            "n_folds": n_folds,
            "mean": math.nan,
            "incumbent_mean": math.nan,
            "statistic": math.nan,
            "p_value": math.nan,
            "threshold": level,
            "alpha": self.alpha,
            "reason": "",
        }
        inc = [math.nan if s is None else float(s) for s in incumbent]
        if len(challenger) > n_folds or not all(math.isfinite(s) for s in inc):
            out["reason"] = "no complete incumbent with finite scores on the same folds"
            return out
        done = [j for j, s in enumerate(challenger) if s is not None]
        k = len(done)
        out["folds"] = k
        chal = [float(challenger[j]) for j in done]  # type: ignore[arg-type]
        if not all(math.isfinite(s) for s in chal):
            out["reason"] = "a fold score is not finite"
            return out
        if k < self.min_folds or k >= n_folds:
            out["reason"] = (
                f"{k} of {n_folds} folds done (looks at {self.min_folds}..{n_folds - 1})"
            )
            return out
        b = [inc[j] for j in done]
        mean_c, mean_b = math.fsum(chal) / k, math.fsum(b) / k
        out["mean"], out["incumbent_mean"] = mean_c, mean_b
        sign = 1.0 if maximize else -1.0
        d = [sign * (bj - cj) for bj, cj in zip(b, chal, strict=True)]
        d_bar = math.fsum(d) / k
        s_d = math.sqrt(math.fsum((x - d_bar) ** 2 for x in d) / (k - 1))
        tiny = 1e-12 * max(1.0, math.fsum(abs(x) for x in b) / k)
        if s_d <= tiny:
            # The same difference on every fold: no spread to test against; the
            # challenger is worse on every fold if that difference is positive.
            t = math.inf if d_bar > tiny else 0.0
            p = 0.0 if d_bar > tiny else 0.5
        else:
            t = d_bar / (s_d / math.sqrt(k))
            p = _t_sf(t, k - 1)
        out["statistic"] = t
        out["p_value"] = p
        if (mean_c >= mean_b) if maximize else (mean_c <= mean_b):
            out["reason"] = "running mean equals or beats the incumbent on the same folds"
        elif p < level:
            out["stop"] = True
            out["reason"] = "worse"
        else:
            out["reason"] = "not confidently worse"
        return out


def _t_sf(t: float, df: int) -> float:
    """One-sided p-value ``P(T_df >= t)`` of Student's t with ``df`` degrees of freedom."""
    from scipy.special import stdtr  # imported on first use: scipy.special is slow to import

    return float(stdtr(df, -t))


def make_scheduler(scheduler: Any, where: str) -> FoldRacing | None:
    """A scheduler object from None, ``"racing"`` or a :class:`FoldRacing`."""
    if scheduler is None or isinstance(scheduler, FoldRacing):
        return scheduler
    if isinstance(scheduler, str) and scheduler == "racing":
        return FoldRacing()
    raise InvalidParameterError(
        f"The 'scheduler' parameter of {where} must be None, 'racing' or a twiddle.FoldRacing. "
        f"Got {scheduler!r} instead."
    )
