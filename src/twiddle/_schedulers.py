"""Schedulers: *when* to stop a configuration. Fold racing; learning-curve schedulers.

A sampler decides *what* to try; a scheduler decides whether a running trial goes
on. :class:`FoldRacing` stops a cross-validated configuration after as few as one
fold once it is confidently worse than the best configuration found so far, so the
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
    Mean and sample standard deviation (ddof=1) of the challenger's k differences
    (s_d exists from k = 2).
s_i^2, g
    Sample variance of the K paired differences of COMPLETE trial i against the
    incumbent, with ``g = K - 1`` degrees of freedom; n such trials (the history).
m_i, x_i
    Mean of those K differences (trial i's distance from the incumbent), and
    ``x_i = sqrt(|m_i|)``.
s_0, d_0
    Scale and degrees of freedom of the prior of the variance of a challenger level
    with the incumbent, fitted to the s_i^2 (and their trend in x_i, see below).
s_tilde
    Moderated standard deviation ``s_tilde^2 = (d_0 s_0^2 + (k - 1) s_d^2) / (d_0 + k - 1)``.
T
    ``d_bar / (s_tilde / sqrt(k))``, with ``d_0 + k - 1`` degrees of freedom.
alpha_k
    Level of the look after k folds: ``c * alpha * (K - k) / sum_m (K - m)`` over the
    looks ``m = min_folds .. K - 1``, where ``c >= 1`` is the calibration factor
    (``c = 1`` with ``levels="bonferroni"``).

The rule
--------
At each look, test H0: E[d] <= 0 (the challenger is not worse) against H1: E[d] > 0
with the one-sided moderated t-test, and stop the challenger when its p-value is
below alpha_k. Two further rules make the decision safe:

* a challenger whose running mean over its done folds equals or beats the
  incumbent's mean over those same folds (``d_bar <= 0``) is never stopped;
* a look needs a complete incumbent with K finite fold scores and a variance: a
  prior (at least three other COMPLETE trials with distinct fold scores) or two of
  the challenger's folds;
  otherwise the trial goes on.

A borrowed variance: why a clear loser can be stopped after one fold
--------------------------------------------------------------------
With its own folds only, the test has k - 1 degrees of freedom: after two folds a
t with one degree of freedom needs a statistic above 20 to stop at level 0.015, so
nothing is stopped before the third fold, and with K = 5 a stop saves at most 2 of
5 fits. But the spread of the paired differences is a property of the task as much
as of the configuration, and every COMPLETE trial measured it on K folds. The test
therefore borrows it, with the empirical-Bayes model of Smyth (2004, "Linear
models and empirical Bayes methods for assessing differential expression in
microarray experiments", the moderated t of limma): the variances of the
configurations are drawn from a scaled inverse chi-square prior,
``sigma^2 ~ d_0 s_0^2 / chi^2_{d_0}``, whose scale and degrees of freedom are fitted
by moments of ``log s_i^2`` (``d_0`` from the spread of the log-variances beyond their
sampling noise, ``trigamma(d_0 / 2) = var(log s_i^2) - trigamma(g / 2)``); the
posterior of the challenger's variance combines the prior with its own k - 1
degrees of freedom into s_tilde, and under the model T has exactly a t law with
``d_0 + k - 1`` degrees of freedom. After one fold the test uses the prior alone;
as folds come in, the challenger's own spread takes over.

The spread of a challenger as good as the incumbent
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
A false stop is the stop of a challenger level with the incumbent, and such
challengers are not typical of the history: configurations close to the incumbent
make nearly the same predictions, so their paired differences spread less than
those of distant ones. On the recorded fold scores of the benchmark tasks (every
configuration the random sampler proposed, 100 per run; ``python
benchmarks/racing_replay.py trend``, ``benchmarks/results/racing-replay/racing-trend.md``)
the configurations within one typical spread of the best spread about 0.8 times as
much as the typical one, the others about 1.2 times, and the spread grows with the
distance in most runs (Spearman's rho positive in 67 % to 80 % of them). The
prior's centre is therefore read where the null hypothesis lives, at distance 0:
``e_i = log s_i^2 - digamma(g / 2) + log(g / 2)`` (the log-variance without its
chi-square bias) is regressed on ``x_i`` by least squares, the intercept is the
centre and the residual spread gives d_0, as limma-trend reads the prior of a gene
at its own expression level (Law, Chen, Shi and Smyth, 2014, "voom: precision
weights unlock linear model analysis tools for RNA-seq read counts", Genome
Biology). Read at 0 the trend is less precise than the mean of the e_i, and the
COMPLETE trials are racing's survivors: a distant configuration survives more often
when its fold differences happen to spread widely, so selection alone makes the
survivors' spread grow with the distance. With spreads drawn from the model's prior
and 80 configurations raced, a trend used whenever its slope's squared t statistic
passed 2 (Akaike's rule) let the false-stop rate reach 0.061 (K = 5), against 0.048
with a history of every configuration (``python benchmarks/racing_survivors.py``).
The trend is therefore used only from 10 COMPLETE trials with distinct fold scores
and when its slope's t statistic is above 3 in absolute value (see
``benchmarks/results/racing-survivors.md`` for the rates with that rule); otherwise
the centre is the mean. A slope below 0 is used too, and then makes the test more
careful. ``x = sqrt|m|`` rather than ``|m|``
was chosen on the recorded runs of seeds 0 and 1; the runs recorded afterwards test
the rule as chosen (``benchmarks/results/racing-replay/racing-replay-new-seeds.md``).
Either reads the same centre whatever the units of the score.

Three guards keep the prior honest. ``d_0`` is capped at 4: a fit to a few dozen
trials cannot tell whether the variances really are alike, and 4 degrees of
freedom give tails heavy enough that a challenger whose spread is up to about 1.5
times the history's stays near the stated rate (measured below); it costs little,
because clear losers are many standard deviations behind. The centre is itself an
estimate: its variance on the log scale, ``h`` times the spread of the e_i around
it (``h = 1 / n`` for the mean, ``1 / n + x_bar^2 / sum (x_i - x_bar)^2`` for the
trend read at 0), adds to the prior's own ``trigamma(d_0 / 2)``, and d_0 is lowered
to the value whose trigamma is the sum: few trials, or a trend read far from them,
give heavier tails. The incumbent itself (all differences zero) and trials
identical to it up to a shift do not enter the fit.

Repeated fold scores
~~~~~~~~~~~~~~~~~~~~
Configurations often score exactly alike on every fold: where a score takes few
values (accuracy on a few dozen validation samples), where a hyperparameter has no
effect (a tree's depth limit beyond the depth it reaches), or where a small space
gives the same configuration twice (kNN's space in the benchmark has 100 points).
Rows equal to within 1e-12 of the scores' scale count as equal. In the recorded
runs of the benchmark tasks at least half of the 100 configurations repeat an
earlier one's fold scores on 14 of the 30 tasks, at K = 5 and at K = 10 (up to
83 %, kNN on iris; ``python benchmarks/racing_replay.py repeats``). Such rows are
one observation of the spread, not several, and the prior counts each distinct row
once. Counted repeatedly they make the fit look surer than it is (a smaller
leverage, a larger t statistic for the trend): with a history of 4 distinct trials seen 5 times each
(spreads from the model's prior, 4,000 null races) the false-stop rate was 0.081
at K = 5 and 0.067 at K = 10 (0.070 and 0.046 even with the Bonferroni levels),
and it is 0.038 and 0.043 with each row counted once
(``benchmarks/racing_rates.py``, scenario ``duplicates``; the earlier figures are
the same command run on the code before the change). With 12 distinct trials seen
1 to 6 times each, enough for the trend, it was 0.051 and 0.054 and is 0.038 and
0.043 (scenario ``duplicates-uneven``).

Why unequal Bonferroni over the looks
-------------------------------------
Testing after every fold is a *repeated significance test*: at a fixed per-look
level alpha the chance that at least one of L looks rejects a true H0 grows well
above alpha (Armitage, McPherson and Rowe, 1969). Group-sequential designs fix
this with boundaries that spend alpha across looks (Pocock, 1977; O'Brien and
Fleming, 1979; the alpha-spending functions of Lan and DeMets, 1983), but their
boundaries are computed from the joint normal law of the statistics at the looks,
which does not hold for t statistics with a few degrees of freedom sharing one
prior. Bonferroni needs no joint law: by the union bound, P(any look rejects | H0)
<= sum over looks of alpha_k = alpha, whatever the dependence between looks, and
the alpha_k may be any split of alpha. The split here is proportional to the fits
a stop saves (K - k at the look after k folds): spending is front-loaded like
Pocock's boundary rather than back-loaded like O'Brien-Fleming's, because a stop
after the first fold saves K - 1 fits and one after the last look saves one. (In
the benchmark an equal split and steeper front-loading save within a point of each
other: what limits the savings is the spread of the differences, not the split.)

Calibrated levels: the rate under the model made alpha (the default)
---------------------------------------------------------------------
The union bound is loose when the looks are strongly dependent, and here they are:
the statistic after k + 1 folds shares k folds and the prior with the one after k.
With Bonferroni levels, at alpha = 0.05 the false-stop rate of a null challenger
whose variance is drawn from the fitted prior is about 0.025 (K = 5 and 10), and
0.005 to 0.008 when all variances are equal (``benchmarks/results/racing-rates.md``,
``python benchmarks/racing_rates.py``): half of the stated level or more is never
spent. A user who asked for 5 % gets 2.5 % and pays for the difference in fits that
were not saved.

Under the model the joint law of the statistics at the looks does not depend on
the unknown scale s_0 nor on the mean of the fold scores: it is fixed by K, the
looks and d_0 alone. ``levels="calibrated"`` therefore computes, once per (K,
``min_folds``, d_0, alpha), the factor c by which all the Bonferroni levels are
multiplied so that the probability that *any* look stops a null challenger
(``E[d] = 0``, the boundary of H0) is alpha. The challenger is stopped at some look
when ``p_k < c * alpha_k^Bonf`` for some k, that is when
``R = min_k p_k / w_k < c * alpha`` with ``w_k = (K - k) / sum_m (K - m)``; so
``c * alpha`` is the alpha-quantile of R. That quantile is estimated from 40,000
simulated null races (fixed seed: the same on every machine and run) at the level
alpha minus two Monte Carlo standard errors, so that the estimate errs low; and c
is never below 1, where the union bound already holds. The weights, the moderated
t-test and the "running mean not worse" rule are those of the Bonferroni rule, so
calibration only relaxes thresholds the union bound made needlessly strict. d_0 is
rounded down to a multiple of 1/4 (a d_0 in (0, 1/2) takes c = 1), which bounds the
work at 15 calibrations per K; one costs about 20 ms (K = 5) to 30 ms (K = 10) of
CPU (the t tail is evaluated only for the races that decide the quantile) and is
cached for the process. The factor is about 1.4 for K = 5 and 1.9 for K = 10 with
the prior at its cap, and about 2 without a prior (no look after one fold).
``tests/test_racing.py`` checks by an independent simulation (scipy's t, other
random numbers) that the rate under the model is alpha within Monte Carlo error.

The gain is largest for moderate differences. On the same simulated races, a
challenger worse by one standard deviation of a fold difference saves 12.9 % of its
fits instead of 9.1 % (K = 5) and 29.3 % instead of 19.3 % (K = 10); worse by two,
48.1 % instead of 41.5 % and 72.2 % instead of 65.0 %. The price is the slack:
where the model does not hold (a challenger whose differences spread more than the
history's, see below) the rate passes alpha sooner than with Bonferroni levels,
which stay available as ``levels="bonferroni"``, a bound that holds whatever the
dependence between looks.

Racing configurations fold by fold with statistical tests is the idea of Hoeffding
races (Maron and Moore, 1994) and of F-Race (Birattari, Stützle, Paquete and
Varrentrapp, 2002); paired t-tests on cross-validation folds are used for the same
purpose by Zheng and Bilenko (2013, "Lazy paired hyper-parameter tuning") and by
Krueger, Panknin and Braun (2015, "Fast cross-validation via sequential testing").

What the guarantee covers, and what it does not
-----------------------------------------------
The guarantee holds under the model: the differences d_j of the folds are
independent and normal with a common mean, and the challenger's variance is drawn
from the same law as those of the history. Measured by simulation
(``benchmarks/results/racing-rates.md``, 4000 null races per cell, 10 history
trials, the prior fitted to them), the false-stop rate at alpha = 0.05 with the
calibrated levels is about 0.015 (K = 5) and 0.018 (K = 10) when all variances are
equal, 0.036 and 0.043 when they are drawn from a prior with 4 degrees of freedom
(0.008, 0.006, 0.023 and 0.025 with Bonferroni levels), and 0.012 and 0.013 when
the history's spread grows with its distance from the incumbent and the
challenger's is the trend's at distance 0; the rate stays below alpha there because
d_0 and s_0 are fitted to a few trials, d_0 is capped and the prior widened for the
error of its centre. A challenger whose spread is *larger* than the history's is the
case the model does not cover: at 1.5 times the spread the rate is about 0.074
(K = 5) and 0.071 (K = 10), at twice the spread 0.15 and 0.14 (Bonferroni: 0.052 and
0.041, 0.12 and 0.081); at twice the spread nearly half of those stops (K = 10) or
more (K = 5, six in ten) come after the first fold, where nothing of its own spread
is known yet. With a trend in the history, a challenger level with the incumbent but
as noisy as a typical history trial (1.9 times the trend's spread at distance 0) is
stopped at a rate of 0.042 (K = 5) and 0.068 (K = 10). When the history is racing's
own survivors (``benchmarks/results/racing-survivors.md``) the rate is 0.010 to 0.045
(K = 5) and 0.011 to 0.036 (K = 10) in the cases measured, none above alpha. The
guarantee is thus an average over configurations like those already complete, not a
bound for each configuration; ``min_folds=2`` or 3 removes the look that has no
spread of its own. Folds of one CV split are not quite
independent either (training sets overlap, Nadeau and Bengio, 2003; Bengio and
Grandvalet, 2004), and scores such as accuracy are discrete. The incumbent can
change between two looks of a challenger; each look is still a level-alpha_k test
against the incumbent of that moment, with the prior refitted to it. The incumbent
is the best of the trials so far, so its fold scores are optimistically biased (the
winner's curse): the rule answers "is this configuration worse than the incumbent
*as measured on these folds*", which is the comparison that decides which
configuration the study reports.

A stopped trial is recorded as PRUNED with the fold scores it reached (None for the
folds not run), its value is the running mean of its done folds (not comparable
with the K-fold means of COMPLETE trials, and never the study's best), and
``system_attrs["racing"]`` records the decision (``folds``, ``n_folds``, ``mean``,
``incumbent_mean``, ``statistic``, ``df``, ``sd``, ``prior_sd``, ``prior_df``,
``history``, ``p_value``, ``threshold``, ``alpha``, ``levels`` and the
``incumbent``'s trial number). Folds of a stopped trial that were queued but not
started never run; folds already running in worker processes are left to finish
and their results are ignored (killing a worker costs a new process and re-sending
the data, usually more than the rest of one fold fit). The history is kept by the CV
evaluator: the fold scores of the COMPLETE trials of the study (those of a resumed
study included).

Samplers see PRUNED trials in their history: TPE puts them in its "bad" group (and
counts them when it sizes its "good" group, so that a study whose trials are mostly
stopped keeps more than one good point) and the GP models them at their partial mean.

Learning-curve schedulers
-------------------------
:class:`MedianStopping`, :class:`SuccessiveHalving` and :class:`Hyperband` stop a
trial of a plain objective that reports a learning curve with
``trial.report(value, step)`` and asks ``trial.should_prune()``; pass one to
``Study.optimize(objective, scheduler=...)``. They work with any sampler.

They also stop cross-validated trials (``twiddle.tune``, ``TuneSearchCV``, the spec's
``[run] scheduler``) with folds as the resource: the value of a trial at step m is
its mean score over folds 1..m (:func:`fold_curve`), compared with the other trials'
at m, finished and running (the driver decides after each fold, so it knows them
all). Unlike :class:`FoldRacing` they rank rather than test, so they promise no
false-stop rate: ``SuccessiveHalving()`` keeps the best third of the trials at folds
1 and 3, whether or not the others are worse by more than fold noise.

Notation
~~~~~~~~
s
    The step (resource: epochs, iterations, training examples) of the trial's last
    report; steps are ints >= 0.
v_i(s)
    Value trial i reported at step s. Values are compared *direction-aware*: a
    lower value is better for ``"minimize"`` and a higher one for ``"maximize"``.
r, R, eta
    ``min_resource``, ``max_resource`` and ``reduction_factor``.
r_k
    Rung k of successive halving: ``r_k = r * eta**k`` for k = 0, 1, ... while
    ``r_k < R``. At step ``R`` a trial is complete, and stopping it saves nothing.
v_i[r_k]
    Value of trial i *at rung* r_k: its value at the first step it reported that
    is >= r_k (so a curve need not report at exactly the rung steps); with
    ``SuccessiveHalving(smoothing=w)``, the mean of its last w values up to that step.

Median stopping (Golovin et al., 2017, "Google Vizier: a service for black-box
optimization", KDD): stop at step s when the trial's best value so far
(``min_{t <= s} v(t)`` when minimizing) is worse than the median of the values at
step s of the COMPLETE other trials that reported at step s.

Asynchronous successive halving, ASHA (Li, Jamieson, Rostamizadeh, Gonina, Hardt,
Recht and Talwalkar, 2020, "A system for massively parallel hyperparameter
tuning", MLSys; successive halving itself is Jamieson and Talwalkar, 2016): when
a trial reaches rung r_k, it goes on only if v[r_k] is among the best
``max(1, floor(n / eta))`` of the n values recorded at r_k by all trials so far
(itself included, whatever their state); otherwise it is stopped. Unlike
synchronous successive halving, nobody waits for a rung to fill: the first
trials to reach a rung are compared with fewer values (the first one always goes
on), which is what makes the rule usable in parallel and tolerant of stale
information.

Hyperband (Li, Jamieson, DeSalvo, Rostamizadeh and Talwalkar, 2018, JMLR) runs
B = floor(log_eta(R / r)) + 1 brackets of ASHA; bracket b starts halving at
``r * eta**b`` (bracket 0 is the most aggressive, bracket B - 1 runs every trial
to R), and a trial is compared only with the trials of its own bracket. A trial
is put in a bracket deterministically by its number (see :class:`Hyperband`).

The decision methods are pure: ``decide(curve, others, direction, number=...)``
and ``should_stop(...)`` take the trial's curve, the curves of the other trials
(:class:`LearningCurve`, which carry their state and number) and the direction,
and touch no study, so they can be tested on synthetic learning curves.

Which other curves a trial sees
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
The rule is applied where the objective runs, by ``Trial.should_prune()``, to the
trial's reported values and to the other trials' curves as the driver knows them
at that moment: the finished trials' final curves and the curves so far of the
trials still running (:mod:`twiddle._board`). A running trial sends its own curve
each time it asks, so two trials that run side by side in worker processes are
compared with each other, as ASHA intends. With ``n_jobs=1`` no other trial runs
meanwhile, and the curves are the whole study history; results are then
reproducible, while with ``n_jobs > 1`` they depend on which trial reaches a rung
first. A decision to go on stands until the rule's next decision point
(:meth:`CurveScheduler.decision_point`; for ASHA, the next rung), so a trial is
promoted once per rung with what was known when it got there.

Trials on another executor (a Dask cluster's, a standard-library pool's) ask the
driver over TCP (its call server, :func:`twiddle._execution.register_handler`).
Where a task cannot reach the driver even so (``TWIDDLE_DRIVER_HOST=off``, an
address the workers cannot route to), the trial keeps the snapshot of the finished
trials' curves handed to it at dispatch. ASHA and the median rule are asynchronous
rules that tolerate this: a trial is then compared with fewer values, which errs
on the side of letting it go on.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from twiddle._errors import InvalidParameterError
from twiddle._trial import TrialState
from twiddle._validation import check_choice, check_in, check_int

__all__ = [
    "SCHEDULERS_BY_NAME",
    "CurveScheduler",
    "FoldRacing",
    "Hyperband",
    "LearningCurve",
    "MedianStopping",
    "StandingDecisions",
    "SuccessiveHalving",
    "fold_curve",
    "make_curve_scheduler",
    "make_scheduler",
]


class FoldRacing:
    """Stop a cross-validated configuration once it is confidently worse than the incumbent.

    After each fold result, from the ``min_folds``-th on, the configuration is
    compared with the incumbent (the best COMPLETE trial so far) on the folds it has
    done by a one-sided paired t-test whose variance is *moderated*: the spread of
    the paired fold differences is estimated from the other COMPLETE trials of the
    study (an empirical-Bayes prior, read from their trend at the incumbent's level
    where they show one) combined with the configuration's own folds, so a clear
    loser can be stopped after its first fold. The looks share the level
    ``alpha`` in proportion to the folds a stop there saves (Bonferroni with unequal
    weights), so the probability of stopping a configuration that is not worse than
    the incumbent stays at most ``alpha`` over all its looks; by default these
    levels are then *calibrated*, all multiplied by the factor that makes the
    false-stop rate equal ``alpha`` under the model instead of bounded by it. A
    configuration whose running mean equals or beats the incumbent's on the same
    folds is never stopped. See the module notes for the reasoning and for what
    the guarantee assumes.

    Parameters
    ----------
    alpha : float, default 0.05
        Bound on the false-stop rate of one configuration (all its looks together),
        in (0, 1).
    min_folds : int, default 1
        Folds a configuration must have done before it may be stopped. With K folds
        there are ``K - min_folds`` looks; with ``K <= min_folds`` nothing is ever
        stopped. A look after one fold needs the prior from the history (at least
        three other COMPLETE trials with distinct fold scores); without it the test
        needs two folds. (Earlier versions defaulted to 3 and took the variance from
        the configuration's own folds only.)
    levels : {"calibrated", "bonferroni"}, default "calibrated"
        ``"bonferroni"``: the levels ``alpha_k`` sum to ``alpha``, a bound on the
        false-stop rate whatever the dependence between looks (the rate is then
        well below ``alpha``). ``"calibrated"``: the same levels times the factor
        ``c >= 1`` (:meth:`scale`) that makes the rate ``alpha`` under the model,
        found by simulation once per number of folds and prior. (Earlier versions
        used the Bonferroni levels only.)

    Examples
    --------
    >>> from twiddle import FoldRacing
    >>> racing = FoldRacing(alpha=0.05)
    >>> incumbent = [0.95, 0.96, 0.94, 0.97, 0.95]
    >>> racing.decide([0.80, 0.82, 0.79], incumbent)["stop"]
    True
    >>> racing.decide([0.96, 0.95, 0.95], incumbent)["stop"]
    False
    >>> history = [[0.93, 0.95, 0.92, 0.96, 0.95], [0.94, 0.94, 0.93, 0.95, 0.93],
    ...            [0.95, 0.95, 0.95, 0.96, 0.94], [0.92, 0.94, 0.93, 0.95, 0.94]]
    >>> racing.decide([0.70], incumbent, history=history)["stop"]  # after one fold
    True
    """

    name = "racing"

    def __init__(self, alpha: float = 0.05, min_folds: int = 1, levels: str = "calibrated") -> None:
        where = "FoldRacing"
        check_in(alpha, "alpha", where, "(0, 1)")
        min_folds_ = check_int(min_folds, "min_folds", where, minimum=1)
        assert min_folds_ is not None
        self.alpha = float(alpha)
        self.min_folds = int(min_folds_)
        self.levels = str(check_choice(levels, "levels", where, ("calibrated", "bonferroni")))

    def __repr__(self) -> str:
        return f"FoldRacing(alpha={self.alpha}, min_folds={self.min_folds}, levels={self.levels!r})"

    def n_looks(self, n_folds: int) -> int:
        """Number of looks ``L = K - min_folds`` for ``n_folds = K`` folds (0 if none)."""
        return max(0, n_folds - self.min_folds)

    def level(self, n_folds: int, folds: int | None = None, prior_df: float | None = None) -> float:
        """Level ``alpha_k`` of the look after ``folds = k`` folds (default: the first look).

        ``alpha_k = c * alpha * (K - k) / sum_m (K - m)`` over the looks
        ``m = min_folds .. K - 1``; 0 where there is no look. ``c`` is
        :meth:`scale` for ``prior_df`` (d_0; 0 without a prior) when the levels are
        calibrated and ``prior_df`` is given, and 1 otherwise (the Bonferroni level).
        """
        k = self.min_folds if folds is None else int(folds)
        looks = self.n_looks(n_folds)
        if not looks or not self.min_folds <= k < n_folds:
            return 0.0
        total = looks * (looks + 1) // 2  # sum of K - m over the looks: L + (L - 1) + ... + 1
        c = self.scale(n_folds, prior_df) if prior_df is not None else 1.0
        return c * self.alpha * (n_folds - k) / total

    def scale(self, n_folds: int, prior_df: float = 0.0) -> float:
        """Calibration factor ``c >= 1`` of the levels for K folds and a prior with d_0 df.

        1 with ``levels="bonferroni"``. Otherwise the factor that makes the
        false-stop rate over all looks equal ``alpha`` under the model, estimated
        by simulation (see the module notes); d_0 is rounded down to a multiple of
        1/4, and a d_0 in (0, 1/2) gets 1.
        """
        if self.levels == "bonferroni" or self.n_looks(n_folds) == 0:
            return 1.0
        d0 = float(prior_df) if prior_df is not None else 0.0
        if not math.isfinite(d0) or d0 < 0:
            raise ValueError(f"prior_df must be a finite number >= 0, got {prior_df!r}")
        if 0 < d0 < 0.5:
            return 1.0
        grid = math.floor(min(d0, _PRIOR_DF_MAX) * 4) / 4
        return _calibration(int(n_folds), self.min_folds, grid, self.alpha)

    def prior(
        self,
        incumbent: Sequence[float | None],
        history: Sequence[Sequence[float | None]],
        *,
        maximize: bool = True,
    ) -> dict[str, Any]:
        """The prior of the paired-difference variance, fitted to the COMPLETE trials.

        Parameters
        ----------
        incumbent : sequence of float
            The incumbent's fold scores on all K folds.
        history : sequence of sequences of float
            Fold scores of COMPLETE trials (K each); rows that are not complete and
            finite, and rows identical to the incumbent on every fold up to a shift
            (the incumbent itself), are skipped, and rows equal to within rounding
            count once.
        maximize : bool, default True
            Whether higher scores are better (the variance does not depend on it).

        Returns
        -------
        dict
            ``sd`` (s_0, the prior's scale for a challenger level with the
            incumbent), ``df`` (d_0, its degrees of freedom, 0 when there is no
            prior), ``trials`` (n, the distinct rows it was fitted to) and ``slope`` (of the
            log-variance in ``sqrt|m_i|``; 0 when the mean was used, None without a
            prior). See "The spread of a challenger as good as the incumbent" in
            the module notes.
        """
        del maximize  # the variance of b - c and of c - b are the same
        n_folds = len(incumbent)
        out: dict[str, Any] = {"sd": None, "df": 0.0, "trials": 0, "slope": None}
        if n_folds < 2 or any(s is None for s in incumbent):
            return out
        b = np.asarray(incumbent, dtype=float)
        rows = [r for r in history if len(r) == n_folds and all(s is not None for s in r)]
        if not rows or not np.isfinite(b).all():
            return out
        c = np.asarray(rows, dtype=float)
        c = c[np.isfinite(c).all(axis=1)]
        tiny = 1e-12 * max(1.0, float(np.mean(np.abs(b))))
        if len(c):
            # configurations that score the same on every fold (to within rounding) are
            # one observation of the spread, not several: the first of them is kept
            # (see "Repeated fold scores" in the module notes)
            _, first = np.unique(np.round(c / tiny), axis=0, return_index=True)
            c = c[np.sort(first)]
        diff = b - c
        s2 = np.var(diff, axis=1, ddof=1) if len(c) else np.empty(0)
        keep = s2 > tiny * tiny
        s2, x = s2[keep], np.sqrt(np.abs(np.mean(diff[keep], axis=1)))
        n = int(s2.size)
        out["trials"] = n
        if n < _MIN_HISTORY:
            return out
        from scipy.special import digamma

        g = n_folds - 1.0
        e = np.log(s2) - digamma(g / 2) + math.log(g / 2)
        # the trend of e in x = sqrt|m_i|, read at x = 0 (a challenger level with the
        # incumbent); the mean of e when the history is too short or x does not vary
        x_bar, e_bar = float(np.mean(x)), float(np.mean(e))
        sxx = float(np.sum((x - x_bar) ** 2))
        slope, center, lever = 0.0, e_bar, 1.0 / n
        spread = float(np.var(e, ddof=1))
        if n >= _MIN_TREND and sxx > 1e-12 * max(1.0, x_bar * x_bar) * n:
            b1 = float(np.sum((x - x_bar) * (e - e_bar))) / sxx
            resid = e - e_bar - b1 * (x - x_bar)
            spread1 = float(np.sum(resid * resid)) / (n - 2)
            # the trend only where it is clear (|t| of its slope above 3): read at x = 0
            # it is less precise than the mean, and racing's own selection of its
            # survivors makes weak trends (see the module notes)
            if spread1 > 0 and b1 * b1 * sxx > _TREND_T2 * spread1:
                slope, center, spread = b1, e_bar - b1 * x_bar, spread1
                lever = 1.0 / n + x_bar * x_bar / sxx
        excess = spread - _trigamma(g / 2)
        d0 = 2.0 * _trigamma_inverse(excess) if excess > 0 else math.inf
        shift = float(digamma(d0 / 2)) - math.log(d0 / 2) if math.isfinite(d0) else 0.0
        # the error of the estimated centre widens the prior: its variance on the log
        # scale adds to that of log(chi^2_{d_0} / d_0), which is trigamma(d_0 / 2)
        d0 = min(d0, n * g, _PRIOR_DF_MAX)
        d0 = 2.0 * _trigamma_inverse(_trigamma(d0 / 2) + lever * spread)
        out["sd"], out["df"] = math.sqrt(math.exp(center + shift)), d0
        out["slope"] = slope
        return out

    def _prior_of(
        self, incumbent: Sequence[float], history: Sequence[Sequence[float | None]]
    ) -> dict[str, Any]:
        """:meth:`prior`, kept for the last (incumbent, history) seen.

        The looks of one trial mostly share both (they change only when a trial
        completes), and the fit is most of a look's cost.
        """
        key = (tuple(incumbent), tuple(tuple(row) for row in history))
        last = self.__dict__.get("_last_prior")
        if last is not None and last[0] == key:
            return dict(last[1])
        pr = self.prior(incumbent, history)
        self.__dict__["_last_prior"] = (key, pr)
        return dict(pr)

    def decide(
        self,
        challenger: Sequence[float | None],
        incumbent: Sequence[float | None],
        *,
        maximize: bool = True,
        history: Sequence[Sequence[float | None]] | None = None,
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
        history : sequence of sequences of float, optional
            Fold scores of the study's COMPLETE trials (the incumbent may be among
            them), to fit the variance prior (see :meth:`prior`). None: the test
            uses the challenger's own folds only, and needs two of them.

        Returns
        -------
        dict
            ``stop`` (bool), ``folds`` (k, the challenger's done folds), ``n_folds``
            (K), ``mean`` and ``incumbent_mean`` (both over the same k folds),
            ``statistic`` (T), ``df`` (its degrees of freedom), ``sd`` (the
            moderated standard deviation of one fold difference), ``prior_sd``,
            ``prior_df``, ``prior_slope`` and ``history`` (the prior, see
            :meth:`prior`, and the distinct trials it came from),
            ``p_value`` (one-sided), ``threshold`` (alpha_k of the look that was
            tested; 0 when none was), ``alpha``, ``levels`` and ``reason`` (why the
            trial goes on, or "worse").
        """
        n_folds = len(incumbent)
        out: dict[str, Any] = {
            "stop": False,
            "folds": 0,
            "n_folds": n_folds,
            "mean": math.nan,
            "incumbent_mean": math.nan,
            "statistic": math.nan,
            "df": 0.0,
            "sd": math.nan,
            "prior_sd": None,
            "prior_df": 0.0,
            "prior_slope": None,
            "history": 0,
            "p_value": math.nan,
            "threshold": 0.0,
            "alpha": self.alpha,
            "levels": self.levels,
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
        if (mean_c >= mean_b) if maximize else (mean_c <= mean_b):
            out["reason"] = "running mean equals or beats the incumbent on the same folds"
            return out
        sign = 1.0 if maximize else -1.0
        d = [sign * (bj - cj) for bj, cj in zip(b, chal, strict=True)]
        d_bar = math.fsum(d) / k
        own_sq = math.fsum((x - d_bar) ** 2 for x in d) / (k - 1) if k > 1 else 0.0
        pr = self._prior_of(inc, history) if history is not None else None
        d0 = float(pr["df"]) if pr is not None else 0.0
        s0_sq = float(pr["sd"]) ** 2 if pr is not None and pr["sd"] is not None else 0.0
        if pr is not None:
            out["prior_sd"], out["prior_df"], out["history"] = pr["sd"], d0, pr["trials"]
            out["prior_slope"] = pr["slope"]
        df = d0 + (k - 1)
        out["df"] = df
        if df <= 0:
            out["reason"] = "no variance yet: one fold and no prior from complete trials"
            return out
        out["threshold"] = level = self.level(n_folds, k, prior_df=d0)
        s_sq = (d0 * s0_sq + (k - 1) * own_sq) / df
        out["sd"] = math.sqrt(s_sq)
        tiny = 1e-12 * max(1.0, math.fsum(abs(x) for x in b) / k)
        if math.sqrt(s_sq) <= tiny:
            # The same difference on every fold and no prior: no spread to test
            # against; the challenger is worse on every fold (d_bar > 0 here).
            t, p = math.inf, 0.0
        else:
            t = d_bar / math.sqrt(s_sq / k)
            p = _t_sf(t, df)
        out["statistic"] = t
        out["p_value"] = p
        if p < level:
            out["stop"] = True
            out["reason"] = "worse"
        else:
            out["reason"] = "not confidently worse"
        return out


_MIN_HISTORY = 3  # distinct COMPLETE trials (besides the incumbent) to fit the prior
_PRIOR_DF_MAX = 4.0  # the prior counts for at most this many degrees of freedom
_MIN_TREND = 10  # distinct COMPLETE trials to fit the variance's trend in the distance
_TREND_T2 = 9.0  # the trend is used when its slope's squared t statistic is above this
_CALIBRATION_RACES = 40_000  # simulated null races per calibration
_CALIBRATION_SEED = 20_261_128


@functools.lru_cache(maxsize=512)
def _calibration(n_folds: int, min_folds: int, prior_df: float, alpha: float) -> float:
    """The factor c of :meth:`FoldRacing.scale` (see "Calibrated levels" in the notes).

    Simulates null races of a challenger with ``E[d] = 0`` under the model: its
    variance sigma^2 drawn from the prior (scale 1, ``prior_df`` degrees of freedom;
    no prior when ``prior_df`` is 0) and its fold differences normal. T is free of
    scale, so the differences are drawn in units of sigma, where the prior's
    ``d_0 s_0^2`` becomes ``d_0 / sigma^2``, a chi-square with d_0 degrees of freedom.
    A race is stopped at all when ``R = min_k p_k / w_k < c * alpha``, so
    ``c * alpha`` is the quantile of R at alpha minus two Monte Carlo standard errors.

    Only the smallest values of R decide that quantile, so the t-distribution's tail
    (most of the cost) is evaluated only where ``p_k / w_k`` can fall below a bound
    ``B``, found from the t statistics through the t quantile; R is exact wherever it
    is below B, and B is raised until enough races are (the result is the same as
    evaluating every race, to the last digit: see :func:`_null_race_r`).
    """
    rng = np.random.default_rng(_CALIBRATION_SEED)
    n = _CALIBRATION_RACES
    d0 = prior_df
    z = rng.standard_normal((n, n_folds - 1))  # the K-th fold is never looked at
    prior = rng.chisquare(d0, n) if d0 > 0 else np.zeros(n)
    target = alpha - 2.0 * math.sqrt(alpha * (1.0 - alpha) / n)
    if target <= 0:
        return 1.0
    # np.quantile interpolates between the order statistics at floor(pos), floor(pos)+1
    need = math.floor(target * (n - 1)) + 2
    bound = 4.0 * alpha
    while True:
        r = _null_race_r(z, prior, d0, n_folds, min_folds, bound)
        if int(np.sum(r < bound)) >= need or bound >= 1.0:
            break
        bound = min(1.0, 4.0 * bound)
    if not np.isfinite(r).any():
        return 1.0
    return max(1.0, float(np.quantile(r, target)) / alpha)


def _null_race_r(
    z: np.ndarray,
    prior: np.ndarray,
    d0: float,
    n_folds: int,
    min_folds: int,
    bound: float | None = None,
) -> np.ndarray:
    """``R = min_k p_k / w_k`` of simulated null races (see :func:`_calibration`).

    With ``bound``, the p-values are computed only where ``p_k / w_k < bound`` (the t
    statistic beyond the t quantile of that level); R is exact where it is below the
    bound and ``inf`` where it is not (the bound 1 or more computes every race).
    """
    from scipy.special import stdtr, stdtrit

    n = z.shape[0]
    sums, squares = np.cumsum(z, axis=1), np.cumsum(z * z, axis=1)
    looks = n_folds - min_folds
    total = looks * (looks + 1) / 2
    r = np.full(n, np.inf)
    for k in range(min_folds, n_folds):
        df = d0 + k - 1
        if df <= 0:
            continue  # no variance after one fold without a prior: no test (as in decide)
        mean = sums[:, k - 1] / k
        s_sq = (prior + squares[:, k - 1] - k * mean * mean) / df
        with np.errstate(divide="ignore", invalid="ignore"):  # a prior draw can be 0
            t = -mean / np.sqrt(s_sq / k)
        if bound is None or bound >= 1.0:
            rows = np.arange(n)
        else:
            # p / w_k < bound  <=>  t < stdtrit(df, bound w_k); the cut is taken at 1.5
            # times that level, so that no rounding of the inverse can drop a race
            cut = stdtrit(df, min(1.0, 1.5 * bound * (n_folds - k) / total))
            rows = np.flatnonzero((mean > 0) & ~(t >= cut))
        p = stdtr(df, t[rows])
        p[(mean[rows] <= 0) | np.isnan(p)] = 1.0  # a running mean not worse is never stopped
        r[rows] = np.minimum(r[rows], p * total / (n_folds - k))
    if bound is not None and bound < 1.0:
        r[r >= bound] = np.inf
    return r


def _trigamma_inverse(x: float) -> float:
    """y with ``trigamma(y) = x`` for x > 0 (Newton's method of Smyth, 2004)."""
    from scipy.special import zeta

    if x > 1e7:
        return 1.0 / math.sqrt(x)
    if x < 1e-6:
        return 1.0 / x
    y = 0.5 + 1.0 / x
    for _ in range(50):
        tri = _trigamma(y)  # polygamma(n, y) is (-1)^(n+1) n! zeta(n+1, y)
        step = tri * (1.0 - tri / x) / (-2.0 * float(zeta(3.0, y)))
        y += step
        if -step / y < 1e-8:
            break
    return y


def _trigamma(y: float) -> float:
    """trigamma(y) = polygamma(1, y) = zeta(2, y), through the faster ufunc."""
    from scipy.special import zeta

    return float(zeta(2.0, y))


def _t_sf(t: float, df: float) -> float:
    """One-sided p-value ``P(T_df >= t)`` of Student's t with ``df`` degrees of freedom."""
    from scipy.special import stdtr  # imported on first use: scipy.special is slow to import

    return float(stdtr(df, -t))


def make_scheduler(scheduler: Any, where: str) -> FoldRacing | CurveScheduler | None:
    """The scheduler of a cross-validated search from None, a name or an object.

    ``"racing"`` is ``FoldRacing()``; ``"halving"`` and ``"median"`` are
    ``SuccessiveHalving()`` and ``MedianStopping()`` over folds (see
    :func:`fold_curve`); a :class:`FoldRacing` or a learning-curve scheduler object
    is used as given.
    """
    if scheduler is None or isinstance(scheduler, (FoldRacing, CurveScheduler)):
        return scheduler
    if isinstance(scheduler, str) and scheduler in SCHEDULERS_BY_NAME:
        made: FoldRacing | CurveScheduler = SCHEDULERS_BY_NAME[scheduler]()
        return made
    hint = ""
    if scheduler == "hyperband":
        hint = " Hyperband needs its max_resource: pass twiddle.Hyperband(max_resource=n_folds)."
    raise InvalidParameterError(
        f"The 'scheduler' parameter of {where} must be None, 'racing', 'halving', 'median', "
        "a twiddle.FoldRacing or a learning-curve scheduler (MedianStopping, "
        f"SuccessiveHalving, Hyperband). Got {scheduler!r} instead.{hint}"
    )


def fold_curve(scores: Sequence[float | None]) -> dict[int, float]:
    """A cross-validated trial's learning curve over folds: step m -> mean of folds 1..m.

    Learning-curve schedulers stop cross-validated trials with folds as the resource:
    the value at step m is the mean score of the first m folds, defined while those
    are all done and finite (folds that finish out of order wait for the ones before
    them). Every trial is scored on the same folds, so the values at a step compare
    like with like.
    """
    out: dict[int, float] = {}
    total = 0.0
    for m, score in enumerate(scores, start=1):
        if score is None or not math.isfinite(score):
            break
        total += float(score)
        out[m] = total / m
    return out


# ----------------------------------------------------------------------------------
# Learning-curve schedulers
# ----------------------------------------------------------------------------------
_DIRECTIONS = ("minimize", "maximize")


def _req_int(value: Any, name: str, where: str, *, minimum: int) -> int:
    out = check_int(value, name, where, minimum=minimum)
    assert out is not None
    return out


@dataclasses.dataclass(frozen=True)
class LearningCurve:
    """The learning curve of one other trial, as a scheduler sees it.

    Attributes
    ----------
    values : mapping of int -> float
        Intermediate values by step.
    state : TrialState, default COMPLETE
        State of the trial when the curve was taken.
    number : int or None, default None
        The trial's number (used by :class:`Hyperband` to find its bracket).
    """

    values: Mapping[int, float]
    state: TrialState = TrialState.COMPLETE
    number: int | None = None


def _as_curve(curve: Any, where: str) -> LearningCurve:
    if isinstance(curve, LearningCurve):
        return curve
    if isinstance(curve, Mapping):
        return LearningCurve(curve)
    raise InvalidParameterError(
        f"The 'others' parameter of {where} must be a sequence of twiddle LearningCurve or "
        f"dict (step -> value). Got an item {curve!r} instead."
    )


def _finite_steps(values: Mapping[int, float]) -> list[int]:
    """Steps with a finite value, in increasing order."""
    return sorted(int(k) for k, v in values.items() if math.isfinite(v))


def _value_at_rung(values: Mapping[int, float], rung: int, window: int = 1) -> float | None:
    """Value at the first reported step >= ``rung`` (None if the curve did not get there).

    With ``window > 1``, the mean of the last ``window`` finite values up to that step
    (fewer when the curve has fewer).
    """
    steps = _finite_steps(values)
    at = next((i for i, k in enumerate(steps) if k >= rung), None)
    if at is None:
        return None
    last = steps[max(0, at + 1 - window) : at + 1]
    return math.fsum(float(values[k]) for k in last) / len(last)


class CurveScheduler:
    """Base of the learning-curve schedulers: a pure rule on learning curves.

    Subclasses implement :meth:`decide`; :meth:`should_stop` is its boolean answer.
    A trial's task calls :meth:`should_stop` from ``Trial.should_prune()``, except
    when :meth:`decision_point` says the trial has not moved on since its last
    decision to go on.
    """

    name = ""

    def decision_point(self, curve: Mapping[int, float], *, number: int | None = None) -> Any:
        """Where in ``curve`` the current decision is made (hashable), or None.

        A decision to go on stands until the point changes: ``Trial.should_prune()``
        does not ask again (nor fetch the other trials' curves) at the same point.
        None, the default, asks every time. Successive halving answers with the last
        rung reached, as ASHA promotes a trial once, when it reaches a rung, with what
        is known then; re-judging it at later steps against trials that reached the
        rung afterwards could stop a trial after its last step.
        """
        return None

    def decide(
        self,
        curve: Mapping[int, float],
        others: Sequence[LearningCurve | Mapping[int, float]],
        direction: str = "minimize",
        *,
        number: int | None = None,
    ) -> dict[str, Any]:
        """Whether to stop the trial whose curve is ``curve`` now, and why.

        Parameters
        ----------
        curve : mapping of int -> float
            The trial's intermediate values by step; its last step is "now".
        others : sequence of LearningCurve or mapping
            The curves of the other trials (a plain mapping counts as a COMPLETE
            trial without a number).
        direction : {"minimize", "maximize"}, default "minimize"
        number : int or None
            The trial's number (needed by :class:`Hyperband` only).

        Returns
        -------
        dict
            ``stop`` (bool), ``step`` (the last step, or None) and ``reason``, plus
            fields particular to the rule.
        """
        raise NotImplementedError

    def should_stop(
        self,
        curve: Mapping[int, float],
        others: Sequence[LearningCurve | Mapping[int, float]],
        direction: str = "minimize",
        *,
        number: int | None = None,
    ) -> bool:
        """``decide(...)["stop"]``: whether to stop the trial now."""
        return bool(self.decide(curve, others, direction, number=number)["stop"])

    def _prepare(
        self,
        curve: Mapping[int, float],
        others: Sequence[LearningCurve | Mapping[int, float]],
        direction: str,
    ) -> tuple[float, list[int], list[LearningCurve]]:
        where = f"{type(self).__name__}.decide"
        check_choice(direction, "direction", where, _DIRECTIONS)
        sign = -1.0 if direction == "maximize" else 1.0
        return sign, _finite_steps(curve), [_as_curve(c, where) for c in others]


class MedianStopping(CurveScheduler):
    """Stop a trial whose best value so far is worse than the median of the others at that step.

    The median stopping rule of Google Vizier (Golovin et al., 2017). At the trial's
    last step s, its best value so far (the lowest when minimizing, the highest when
    maximizing) is compared with the median of the values at step s of the COMPLETE
    other trials that reported at step s; the trial is stopped if it is strictly
    worse.

    Parameters
    ----------
    n_startup_trials : int, default 5
        Nothing is stopped until at least this many other trials are COMPLETE.
    n_warmup_steps : int, default 0
        Nothing is stopped at a step below this one.
    min_steps : int, default 1
        Nothing is stopped before the trial has reported this many values.

    Examples
    --------
    >>> from twiddle import MedianStopping
    >>> rule = MedianStopping(n_startup_trials=3)
    >>> others = [{0: 1.0, 1: 0.5}, {0: 1.1, 1: 0.6}, {0: 0.9, 1: 0.4}]
    >>> rule.should_stop({0: 1.5, 1: 1.2}, others, "minimize")
    True
    >>> rule.should_stop({0: 0.8, 1: 0.45}, others, "minimize")
    False
    """

    name = "median"

    def __init__(
        self, n_startup_trials: int = 5, n_warmup_steps: int = 0, min_steps: int = 1
    ) -> None:
        where = "MedianStopping"
        self.n_startup_trials = _req_int(n_startup_trials, "n_startup_trials", where, minimum=0)
        self.n_warmup_steps = _req_int(n_warmup_steps, "n_warmup_steps", where, minimum=0)
        self.min_steps = _req_int(min_steps, "min_steps", where, minimum=1)

    def __repr__(self) -> str:
        return (
            f"MedianStopping(n_startup_trials={self.n_startup_trials}, "
            f"n_warmup_steps={self.n_warmup_steps}, min_steps={self.min_steps})"
        )

    def decide(
        self,
        curve: Mapping[int, float],
        others: Sequence[LearningCurve | Mapping[int, float]],
        direction: str = "minimize",
        *,
        number: int | None = None,
    ) -> dict[str, Any]:
        """Whether to stop now; ``best`` and ``median`` (in the curve's units) say why.

        See :meth:`CurveScheduler.decide` for the parameters.
        """
        sign, steps, curves = self._prepare(curve, others, direction)
        out: dict[str, Any] = {"stop": False, "step": None, "best": None, "median": None}
        if not steps:
            out["reason"] = "no finite value reported yet"
            return out
        s = steps[-1]
        out["step"] = s
        if len(steps) < self.min_steps:
            out["reason"] = f"{len(steps)} values reported, fewer than min_steps={self.min_steps}"
            return out
        if s < self.n_warmup_steps:
            out["reason"] = f"step {s} is below n_warmup_steps={self.n_warmup_steps}"
            return out
        complete = [c for c in curves if c.state is TrialState.COMPLETE]
        if len(complete) < self.n_startup_trials:
            out["reason"] = (
                f"{len(complete)} other trials complete, fewer than "
                f"n_startup_trials={self.n_startup_trials}"
            )
            return out
        at_s = [
            sign * float(c.values[s])
            for c in complete
            if s in c.values and math.isfinite(c.values[s])
        ]
        if not at_s:
            out["reason"] = f"no complete trial reported a value at step {s}"
            return out
        best = min(sign * float(curve[k]) for k in steps)
        median = statistics.median(at_s)
        out["best"], out["median"] = sign * best, sign * median
        out["stop"] = best > median
        out["reason"] = "worse than the median" if out["stop"] else "not worse than the median"
        return out


class SuccessiveHalving(CurveScheduler):
    """Asynchronous successive halving (ASHA): keep the best 1/eta at each rung.

    Rungs are at steps ``min_resource * reduction_factor**k`` below ``max_resource``.
    When a trial reaches a rung (its first report at a step >= the rung), it goes on
    only if its value there is among the best ``max(1, floor(n / eta))`` of the n
    values recorded at that rung by all trials so far, itself included, whatever
    their state (the promotion rule of Li et al., 2020); otherwise it is stopped.
    Ties are kept: a trial whose value equals the ``n_keep``-th best goes on, so more
    than ``n_keep`` trials may pass a rung. Between two rungs the decision of the last
    rung reached stands.

    A stopped trial is PRUNED, and the study's best trial is chosen among the COMPLETE
    trials only (by the value the objective returns), so the chosen configuration is
    always one that ran to the end, even when a stopped trial reported a lower loss
    on its way.

    Choosing the rungs. How early the rungs may start depends on how early the
    learning curves stop crossing. On neural networks they cross late: a small
    learning rate that ends best is behind after a few epochs. On an MLP trained
    for R = 27 epochs on the digits data, 20 trials and 20 seeds
    (``benchmarks/halving.py``), ``min_resource=3, reduction_factor=3`` trains 30 %
    of the epochs but stops the configuration a full run chooses in 9 of 20 seeds
    (held-out loss +0.0057 +- 0.0034 worse, mean +- standard error), while
    ``min_resource=4, reduction_factor=2`` (rungs at 4, 8 and 16 epochs) trains 39 %
    and its choice is as good within one standard error (+0.0013 +- 0.0021). A late
    rung met by few trials is fragile: with ``min_resource=5, reduction_factor=2``
    (rungs at 5, 10 and 20) one seed kept only its first trial to the end, a poor
    one, because its validation loss at epoch 20 was a lucky low (0.094, against
    0.183 at epoch 27) and the four later trials that reached epoch 20 were judged
    against it and stopped (+0.0108 +- 0.0060 over the seeds); with ``smoothing=3``
    that seed, and so the setting, matched the full run (+0.0013 +- 0.0021).

    Parameters
    ----------
    min_resource : int, default 1
        The first rung (the step at which the first comparison is made).
    reduction_factor : int, default 3
        eta >= 2: the share of trials kept at a rung is 1/eta.
    max_resource : int or None, default None
        The step at which a trial is complete: no rung at or above it. None puts no
        bound on the rungs.
    smoothing : int, default 1
        Values compared at a rung: the mean of a trial's last ``smoothing`` reported
        values up to the rung (fewer when it has reported fewer). 1 compares the
        single value at the rung. A window of a few steps guards against a
        decision made by one noisy value; it cannot help when curves cross, and a
        window that reaches back into the first steps favours the configurations
        that learn fastest, so keep it short next to ``min_resource``.
        Keyword-only; new in this version (earlier versions compared the single
        value).

    Examples
    --------
    >>> from twiddle import SuccessiveHalving
    >>> asha = SuccessiveHalving(min_resource=1, reduction_factor=2)
    >>> others = [{1: 0.5}, {1: 0.6}, {1: 0.7}]
    >>> asha.should_stop({1: 0.4}, others, "minimize")  # best of 4: in the top 2
    False
    >>> asha.should_stop({1: 0.65}, others, "minimize")  # third of 4
    True
    >>> raw = SuccessiveHalving(min_resource=3, reduction_factor=2)
    >>> smooth = SuccessiveHalving(min_resource=3, reduction_factor=2, smoothing=3)
    >>> others = [{1: 0.5, 2: 0.45, 3: 0.40}, {1: 0.6, 2: 0.55, 3: 0.50}]
    >>> spike = {1: 0.42, 2: 0.38, 3: 0.52}  # one bad value at the rung
    >>> raw.should_stop(spike, others), smooth.should_stop(spike, others)
    (True, False)
    """

    name = "halving"

    def __init__(
        self,
        min_resource: int = 1,
        reduction_factor: int = 3,
        max_resource: int | None = None,
        *,
        smoothing: int = 1,
    ) -> None:
        where = type(self).__name__
        self.min_resource = _req_int(min_resource, "min_resource", where, minimum=1)
        self.reduction_factor = _req_int(reduction_factor, "reduction_factor", where, minimum=2)
        self.max_resource = check_int(
            max_resource, "max_resource", where, minimum=self.min_resource, allow_none=True
        )
        self.smoothing = _req_int(smoothing, "smoothing", where, minimum=1)

    def __repr__(self) -> str:
        extra = "" if self.smoothing == 1 else f", smoothing={self.smoothing}"
        return (
            f"SuccessiveHalving(min_resource={self.min_resource}, "
            f"reduction_factor={self.reduction_factor}, max_resource={self.max_resource}{extra})"
        )

    def rungs(self, up_to: int) -> list[int]:
        """The rungs at steps <= ``up_to`` (and below ``max_resource``)."""
        out: list[int] = []
        r = self.min_resource
        while r <= up_to and (self.max_resource is None or r < self.max_resource):
            out.append(r)
            r *= self.reduction_factor
        return out

    def decision_point(self, curve: Mapping[int, float], *, number: int | None = None) -> Any:
        """The last rung the curve has reached (0 before the first: nothing to decide)."""
        steps = _finite_steps(curve)
        rungs = self.rungs(steps[-1]) if steps else []
        return rungs[-1] if rungs else 0

    def decide(
        self,
        curve: Mapping[int, float],
        others: Sequence[LearningCurve | Mapping[int, float]],
        direction: str = "minimize",
        *,
        number: int | None = None,
    ) -> dict[str, Any]:
        """Whether to stop now; ``rung``, ``value``, ``n_values`` and ``n_keep`` say why.

        See :meth:`CurveScheduler.decide` for the parameters.
        """
        sign, steps, curves = self._prepare(curve, others, direction)
        return self._decide(sign, steps, curve, curves)

    def _decide(
        self,
        sign: float,
        steps: list[int],
        curve: Mapping[int, float],
        curves: Sequence[LearningCurve],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"stop": False, "step": steps[-1] if steps else None, "rung": None}
        if not steps:
            out["reason"] = "no finite value reported yet"
            return out
        rungs = self.rungs(steps[-1])
        if not rungs:
            out["reason"] = f"step {steps[-1]} is below the first rung"
            return out
        rung = rungs[-1]
        own = _value_at_rung(curve, rung, self.smoothing)
        assert own is not None
        values = [sign * own]
        for c in curves:
            v = _value_at_rung(c.values, rung, self.smoothing)
            if v is not None:
                values.append(sign * v)
        n_keep = max(1, len(values) // self.reduction_factor)
        threshold = sorted(values)[n_keep - 1]
        out.update(rung=rung, value=own, n_values=len(values), n_keep=n_keep)
        out["stop"] = sign * own > threshold
        out["reason"] = (
            f"not in the best {n_keep} of {len(values)} at rung {rung}"
            if out["stop"]
            else f"in the best {n_keep} of {len(values)} at rung {rung}"
        )
        return out


_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


class Hyperband(CurveScheduler):
    """Hyperband: several ASHA brackets that start halving at different steps.

    With ``B = floor(log_eta(max_resource / min_resource)) + 1`` brackets, bracket b
    is a :class:`SuccessiveHalving` with ``min_resource * eta**b`` as its first rung
    and the same ``max_resource`` and eta; a trial is compared only with the trials of
    its own bracket. Bracket 0 halves from the first step and bracket B - 1 runs every
    trial to ``max_resource``; the brackets hedge against a wrong guess of how early
    a learning curve tells good from bad (Li et al., 2018).

    Bracket assignment is deterministic by trial number, as in Optuna's Hyperband
    pruner, with the weights of the Hyperband paper: bracket b gets a share
    proportional to ``n_b = ceil(B / (B - b)) * eta**(B - 1 - b)`` (the number of
    configurations bracket s = B - 1 - b starts with in Hyperband, so each bracket
    uses roughly the same budget). Trial n goes to the bracket whose interval of the
    cumulative shares contains ``frac(n * (sqrt(5) - 1) / 2)``: this Weyl sequence
    spreads consecutive trials over the brackets in proportion to their shares, so a
    short study still sees every bracket, and the same number always maps to the
    same bracket (in the driver, in a worker, and on resume).

    Parameters
    ----------
    min_resource : int, default 1
        First rung of the most aggressive bracket.
    max_resource : int
        The step at which a trial is complete (required; >= ``min_resource``).
    reduction_factor : int, default 3
        eta >= 2.

    Examples
    --------
    >>> from twiddle import Hyperband
    >>> hb = Hyperband(min_resource=1, max_resource=27, reduction_factor=3)
    >>> hb.n_brackets, [b.min_resource for b in hb.brackets]
    (4, [1, 3, 9, 27])
    >>> hb.weights
    [27, 18, 6, 4]
    """

    name = "hyperband"

    def __init__(
        self,
        min_resource: int = 1,
        max_resource: int | None = None,
        reduction_factor: int = 3,
    ) -> None:
        where = "Hyperband"
        r = _req_int(min_resource, "min_resource", where, minimum=1)
        big_r = _req_int(max_resource, "max_resource", where, minimum=r)
        eta = _req_int(reduction_factor, "reduction_factor", where, minimum=2)
        self.min_resource, self.max_resource, self.reduction_factor = r, big_r, eta
        n = 0
        while r * eta ** (n + 1) <= big_r:
            n += 1
        self.n_brackets = n + 1
        self.brackets = [
            SuccessiveHalving(r * eta**b, eta, self.max_resource) for b in range(self.n_brackets)
        ]
        nb = self.n_brackets
        self.weights = [math.ceil(nb / (nb - b)) * eta ** (nb - 1 - b) for b in range(nb)]

    def __repr__(self) -> str:
        return (
            f"Hyperband(min_resource={self.min_resource}, max_resource={self.max_resource}, "
            f"reduction_factor={self.reduction_factor})"
        )

    def bracket(self, number: int) -> int:
        """The bracket (0 = most aggressive) of trial ``number``."""
        u = (int(number) * _GOLDEN) % 1.0
        total = sum(self.weights)
        acc = 0
        for b, w in enumerate(self.weights):
            acc += w
            if u < acc / total:
                return b
        return self.n_brackets - 1

    def decision_point(self, curve: Mapping[int, float], *, number: int | None = None) -> Any:
        """The last rung of the trial's bracket that the curve has reached."""
        b = 0 if number is None else self.bracket(number)
        return self.brackets[b].decision_point(curve)

    def decide(
        self,
        curve: Mapping[int, float],
        others: Sequence[LearningCurve | Mapping[int, float]],
        direction: str = "minimize",
        *,
        number: int | None = None,
    ) -> dict[str, Any]:
        """Whether to stop now, by the trial's bracket; ``bracket`` says which.

        ``number`` picks the trial's bracket (None: bracket 0). Other curves without a
        number are counted in every bracket. See :meth:`CurveScheduler.decide`.
        """
        sign, steps, curves = self._prepare(curve, others, direction)
        b = 0 if number is None else self.bracket(number)
        mine = [c for c in curves if c.number is None or self.bracket(c.number) == b]
        out = self.brackets[b]._decide(sign, steps, curve, mine)
        out["bracket"] = b
        return out


class StandingDecisions:
    """A learning-curve scheduler's decisions, each "go on" standing until the next point.

    ``decide`` asks the scheduler only when a trial's curve has reached a new
    :meth:`CurveScheduler.decision_point` (or when the scheduler has none), and
    remembers where each trial was last let go on; ``Trial.should_prune()`` and the
    cross-validated search both decide through it.
    """

    def __init__(self, scheduler: CurveScheduler) -> None:
        self.scheduler = scheduler
        self._went_on_at: dict[int | None, Any] = {}

    def decide(
        self,
        curve: Mapping[int, float],
        others: Callable[[], Sequence[LearningCurve | Mapping[int, float]]],
        direction: str,
        *,
        number: int | None = None,
    ) -> dict[str, Any] | None:
        """The scheduler's decision now, or None while an earlier "go on" stands.

        ``others`` is called only when a decision is due (it may be costly: a running
        trial asks the driver for the other trials' curves).
        """
        point = self.scheduler.decision_point(curve, number=number)
        if point is not None and self._went_on_at.get(number, _NO_POINT) == point:
            return None
        decision = self.scheduler.decide(curve, others(), direction, number=number)
        if decision["stop"]:
            self._went_on_at.pop(number, None)
        else:
            self._went_on_at[number] = point
        return decision

    def forget(self, number: int | None) -> None:
        """Drop what is remembered of trial ``number`` (it has finished)."""
        self._went_on_at.pop(number, None)


_NO_POINT = object()


def make_curve_scheduler(scheduler: Any, where: str) -> CurveScheduler | None:
    """A learning-curve scheduler from None, ``"median"``, ``"halving"`` or an instance.

    ``"median"`` is ``MedianStopping()`` and ``"halving"`` is ``SuccessiveHalving()``;
    Hyperband needs its ``max_resource``, so it is given as an object.
    """
    if scheduler is None or isinstance(scheduler, CurveScheduler):
        return scheduler
    if isinstance(scheduler, str) and scheduler in ("median", "halving"):
        made: CurveScheduler = SCHEDULERS_BY_NAME[scheduler]()
        return made
    hint = ""
    if isinstance(scheduler, FoldRacing) or scheduler == "racing":
        hint = " Fold racing stops cross-validated trials: pass it to twiddle.tune()."
    elif scheduler == "hyperband":
        hint = " Hyperband needs its max_resource: pass twiddle.Hyperband(max_resource=...)."
    raise InvalidParameterError(
        f"The 'scheduler' parameter of {where} must be None, 'median', 'halving' or a "
        "twiddle.MedianStopping, SuccessiveHalving or Hyperband. "
        f"Got {scheduler!r} instead.{hint}"
    )


#: The schedulers a name stands for (``scheduler="racing"`` etc.); the spec builds
#: them from its ``[scheduler]`` table with the same names.
SCHEDULERS_BY_NAME: dict[str, Callable[..., Any]] = {
    "racing": FoldRacing,
    "halving": SuccessiveHalving,
    "median": MedianStopping,
}
