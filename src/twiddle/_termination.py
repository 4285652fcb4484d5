"""The termination rule: stop a study when what is left to gain is below CV noise.

A study can stop once the best configuration found so far cannot be beaten by more
than the statistical error of its own cross-validation estimate: further trials could
then only chase fold noise. The rule of Makarova et al. (2022) bounds the remaining
improvement with a Gaussian process fitted to the finished trials and compares the
bound with that error.

Notation (values signed so that lower is better)
------------------------------------------------
t            number of COMPLETE trials with a finite value
d            number of search-space dimensions
x_i, y_i     encoded configuration (unit cube) and signed value of trial i
mu, sigma    GP posterior mean and standard deviation of the latent objective f
beta_t       confidence parameter, beta_t = (2 / 5) log(d t^2 pi^2 / (6 delta)), delta = 0.1
UCB, LCB     mu + sqrt(beta_t) sigma and mu - sqrt(beta_t) sigma
r_t          regret bound, min_i UCB(x_i) - min_x LCB(x)
K            number of folds of the incumbent (the best COMPLETE trial)
s^2          sample variance (ddof=1) of the incumbent's K fold scores
e_t          statistical error of the incumbent's CV estimate,
             e_t = sqrt((1/K + 1/(K - 1)) s^2)

The rule
--------
If f lies between LCB and UCB everywhere (with the unscaled beta_t of Srinivas et al.,
it does with probability at least 1 - delta under the GP), then the true value of the
best observed configuration is at most min_i UCB(x_i) and the optimum over the space
is at least min_x LCB(x): their difference r_t bounds the regret of the best observed
configuration. The study stops after trial t when
r_t < e_t (and t is at least ``min_trials``).

Choices made here (the first two follow the paper; the GP changes are ours):

- beta_t is the finite-domain value of Srinivas et al. (2010, Theorem 1) with the
  domain size replaced by the dimension d, scaled down by a factor of 5 as in the
  experiments of Srinivas et al. and of Makarova et al.; delta = 0.1. The scaled value
  is no longer a guarantee, and the bound is a heuristic upper bound (measured in
  ``tests/test_termination.py``: above the true regret in most seeds).
- e_t uses the variance correction of Nadeau and Bengio (2003) for K-fold
  cross-validation, (1/K + n_test/n_train) s^2 with n_test/n_train = 1/(K - 1), which
  allows for the correlation between folds that share training data. For K folds it is
  ``value_se * sqrt(1 + K / (K - 1))``, 1.5 times the naive standard error at K = 5.
- The GP is the project's Matérn-5/2 model (:mod:`twiddle._gp`), fitted by MAP on
  the values standardised by their mean and standard deviation (a linear map, so the
  bound converts back to the units of the values). Two changes from the sampler's
  model let the GP conclude that nothing is left to find. The known noise is pooled:
  every observation gets the mean of the trials' squared CV standard errors, because a
  standard error from 5 folds (4 degrees of freedom) is too noisy on its own; with
  per-trial errors the GP explained the trials whose folds happened to agree with a
  short-length-scale signal, and the bound never fell on a flat problem. The signal
  variance prior is widened to LogNormal(0, 2) (the sampler's LogNormal(1, 1) has its
  mode at the variance of all the values, i.e. it assumes there is signal): on a flat
  problem with fold noise the fitted signal variance then drops to its lower bound.
  Length-scale and noise priors are the defaults of :class:`twiddle._gp.Hyperprior`.
- min_x LCB(x) is approximated over scrambled Sobol candidates, the observed points,
  and two rounds of perturbations of the best candidates, all snapped to valid
  configurations of the space. A missed minimum makes the bound smaller, so the
  search is kept wide rather than fast.

References
----------
A. Makarova, H. Shen, V. Perrone, A. Klein, J. B. Faddoul, A. Krause, M. Seeger,
C. Archambeau, Automatic termination for hyperparameter optimization, AutoML 2022.
N. Srinivas, A. Krause, S. M. Kakade, M. Seeger, Gaussian process optimization in the
bandit setting: no regret and experimental design, ICML 2010.
C. Nadeau, Y. Bengio, Inference for the generalization error, Machine Learning 52, 2003.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np

from twiddle._errors import InvalidParameterError
from twiddle._space import Space
from twiddle._trial import FrozenTrial, TrialState
from twiddle._validation import check_int, seed_entropy

if TYPE_CHECKING:
    from twiddle._study import Study

DELTA = 0.1
N_SOBOL = 1024
N_LOCAL = 16  # perturbations of each of the best candidates, per round
N_BEST = 8
#: Log-normal prior of the GP signal variance (standardised units): wide, mode exp(-4).
S2_LOC, S2_SCALE = 0.0, 2.0


def beta(n: int, d: int, delta: float = DELTA) -> float:
    """The confidence parameter beta_t for ``n`` observations in ``d`` dimensions."""
    return 2.0 * math.log(max(d, 1) * n * n * math.pi**2 / (6.0 * delta)) / 5.0


def cv_error(fold_scores: tuple[float | None, ...]) -> float | None:
    """Corrected standard deviation of a K-fold CV mean (Nadeau and Bengio, 2003).

    Parameters
    ----------
    fold_scores : tuple of (float or None)
        The fold scores of one trial; ``None`` and non-finite ones are left out.

    Returns
    -------
    float or None
        ``sqrt((1/K + 1/(K - 1)) s^2)`` with ``s^2`` the sample variance of the K
        finite scores; None with fewer than two.
    """
    scores = np.array([s for s in fold_scores if s is not None and math.isfinite(s)])
    k = scores.size
    if k < 2:
        return None
    return math.sqrt((1.0 / k + 1.0 / (k - 1)) * float(np.var(scores, ddof=1)))


def regret_bound(
    U: np.ndarray,
    y: np.ndarray,
    space: Space,
    rng: np.random.Generator,
    *,
    se: np.ndarray | None = None,
    warm_start: np.ndarray | None = None,
) -> tuple[float, np.ndarray | None]:
    """Upper bound on the regret of the best observed configuration.

    Parameters
    ----------
    U : array of shape (n, d)
        Unit-cube encodings of the observed configurations (NaN where inactive).
    y : array of shape (n,)
        Their values, signed so that lower is better.
    space : Space
        The search space (candidates for the LCB minimum are valid configurations).
    rng : numpy.random.Generator
        Draws the Sobol scrambling, the perturbations and the GP fit's restarts.
    se : array of shape (n,), optional
        Standard error of each value (0 or NaN where unknown). The mean of the known
        squared errors is the known noise variance of every observation.
    warm_start : array of shape (d + 2,), optional
        GP log hyperparameters of a previous fit to start from.

    Returns
    -------
    bound : float
        ``min_i UCB(x_i) - min_x LCB(x)`` in the units of ``y`` (>= 0).
    theta : array of shape (d + 2,) or None
        The fitted GP log hyperparameters (None when ``y`` is constant and the bound
        is 0 without a fit).
    """
    from scipy.stats import qmc

    from twiddle._gp import GPPosterior, Hyperprior, fit_map, group_sq_dists
    from twiddle._samplers._gp import feature_map
    from twiddle._threads import single_thread

    U = np.asarray(U, dtype=float)
    y = np.asarray(y, dtype=float)
    n, d = U.shape
    mu, sd = float(np.mean(y)), float(np.std(y))
    if n < 2 or not sd > 0:
        return 0.0, None
    z = (y - mu) / sd
    noise = None
    if se is not None:
        se2 = np.asarray(se, dtype=float) ** 2
        known = se2[np.isfinite(se2) & (se2 > 0)]
        if known.size:
            noise = np.full(n, float(np.mean(known)) / (sd * sd))
    fmap = feature_map(space)
    Z = fmap.transform(U)
    with single_thread():
        S = group_sq_dists(Z, Z, fmap.groups, d)
        restarts = 2 if warm_start is None else 0
        prior = dataclasses.replace(Hyperprior.default(d), s2_loc=S2_LOC, s2_scale=S2_SCALE)
        theta, _, _ = fit_map(
            S,
            z,
            prior,
            rng,
            extra_noise=noise,
            warm_start=warm_start,
            n_restarts=restarts,
        )
        gp = GPPosterior(theta, Z, z, fmap.groups, noise)
        root_beta = math.sqrt(beta(n, d))

        def lcb(C: np.ndarray) -> np.ndarray:
            m, v = gp.predict(fmap.transform(C))
            out: np.ndarray = m - root_beta * np.sqrt(v)
            return out

        m_obs, v_obs = gp.predict(Z)
        ucb_min = float(np.min(m_obs + root_beta * np.sqrt(v_obs)))
        sobol = qmc.Sobol(d, scramble=True, seed=rng).random_base2(int(math.log2(N_SOBOL)))
        C = np.vstack([space.snap(sobol), U])
        vals = lcb(C)
        scale = 0.1
        for _ in range(2):
            best = C[np.argsort(vals)[:N_BEST]]
            centre = np.repeat(np.nan_to_num(best, nan=0.5), N_LOCAL, axis=0)
            local = space.snap(centre + scale * rng.standard_normal(centre.shape))
            C = np.vstack([best, local])
            vals = lcb(C)
            scale /= 4.0
        lcb_min = min(float(np.min(vals)), float(np.min(m_obs - root_beta * np.sqrt(v_obs))))
    return max(0.0, sd * (ucb_min - lcb_min)), theta


class Terminator:
    """Stop a study when the bound on what is left to gain falls below CV noise.

    A callback for :meth:`Study.optimize` and :func:`twiddle.tune`
    (``callbacks=[Terminator()]``). After each finished trial, once the study has
    ``min_trials`` COMPLETE trials, it fits a Gaussian process to them and bounds the
    regret of the best one, ``min UCB over the tried configurations - min LCB over the
    space`` (Makarova et al., 2022; the choices are in the module notes). When the bound
    is below the threshold it calls :meth:`Study.stop`: no new trial starts, running
    ones finish.

    The threshold is the statistical error of the incumbent's cross-validation
    estimate, the standard deviation of its fold scores with the Nadeau-Bengio
    correction for K-fold CV, ``sqrt((1/K + 1/(K - 1)) s^2)``. Trials without fold
    scores (plain objectives) have no such error: give ``threshold`` then, or the rule
    never stops the study.

    Parameters
    ----------
    min_trials : int, default 20
        COMPLETE trials needed before the first decision.
    threshold : float, optional
        Stop when the bound is below this, in the units of the objective, instead of
        the incumbent's CV error.
    seed : int, numpy.random.Generator or None
        Entropy for the GP fit and the candidate points (decision ``t`` uses a stream
        derived from the seed and ``t``).

    Attributes
    ----------
    history_ : list of (int, float, float)
        One ``(n_complete, bound, threshold)`` per decision made.
    stopped_at_ : int or None
        Number of the trial after which the rule stopped the study; None if it did not.
    reason_ : str or None
        Why the study was stopped, in words.

    Notes
    -----
    Helps where cross-validation is noisy, the optimum is flat and the budget is large:
    trials after the stop would chase fold noise. Helps little with small budgets (the
    GP is too uncertain to stop before the budget ends) and with few folds, whose
    standard deviation is a poor estimate of the CV error. Only COMPLETE trials enter
    the GP: configurations stopped by fold racing (PRUNED) are left out. Outliers (a
    few configurations far worse than the rest) widen the bound, since the GP works on
    values scaled by their standard deviation. One Terminator serves one study.

    Examples
    --------
    >>> import twiddle
    >>> space = twiddle.Space({"x": twiddle.Float(-1, 1)})
    >>> study = twiddle.Study(name="flat", space=space, seed=0)
    >>> stop = twiddle.Terminator(min_trials=8, threshold=0.05, seed=0)
    >>> study.optimize(lambda c: 0.01 * c["x"] ** 2, n_trials=40, callbacks=[stop])
    >>> stop.stopped_at_ is not None and len(study.trials) < 40
    True
    """

    def __init__(
        self,
        *,
        min_trials: int = 20,
        threshold: float | None = None,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        where = "Terminator"
        check_int(min_trials, "min_trials", where, minimum=2)
        ok = (
            isinstance(threshold, numbers.Real)
            and not isinstance(threshold, bool)
            and math.isfinite(threshold)
            and threshold > 0
        )
        if threshold is not None and not ok:
            raise InvalidParameterError(
                f"The 'threshold' parameter of {where} must be a finite number > 0 or None. "
                f"Got {threshold!r} instead."
            )
        self.min_trials = min_trials
        self.threshold = threshold
        self.seed = seed
        self._entropy = seed_entropy(seed, "seed", where)
        self._theta: np.ndarray | None = None
        self.history_: list[tuple[int, float, float]] = []
        self.stopped_at_: int | None = None
        self.reason_: str | None = None

    def __repr__(self) -> str:
        return f"Terminator(min_trials={self.min_trials}, threshold={self.threshold})"

    def __call__(self, study: Study, trial: FrozenTrial) -> None:
        space = study.space if study.space is not None else study._define_by_run_space()
        if space is None:
            return
        sign = -1.0 if study.direction == "maximize" else 1.0
        done: list[tuple[dict[str, Any], FrozenTrial]] = []
        for t in study.trials:
            if t.state is not TrialState.COMPLETE or t.value is None:
                continue
            if not math.isfinite(t.value):
                continue
            try:
                done.append((space.validate(t.params), t))
            except ValueError:
                continue  # a trial outside the space (e.g. enqueued by hand)
        n = len(done)
        if n < self.min_trials:
            return
        values = [sign * float(t.value) for _, t in done]  # type: ignore[arg-type]
        incumbent = done[int(np.argmin(values))][1]  # the first of ties: the lowest number
        limit = self.threshold if self.threshold is not None else cv_error(incumbent.fold_scores)
        if limit is None:
            return  # no fold scores and no threshold: nothing to compare with
        U = space.encode([cfg for cfg, _ in done])
        y = np.array(values)
        ses = [t.value_se for _, t in done]
        se = None if all(s is None for s in ses) else np.array([s or 0.0 for s in ses])
        if self._theta is not None and self._theta.shape != (len(space) + 2,):
            self._theta = None
        rng = np.random.default_rng([self._entropy, n])
        bound, theta = regret_bound(U, y, space, rng, se=se, warm_start=self._theta)
        if theta is not None:
            self._theta = theta
        self.history_.append((n, bound, float(limit)))
        if bound < limit:
            if self.stopped_at_ is None:
                self.stopped_at_ = trial.number
                source = (
                    "the given threshold"
                    if self.threshold is not None
                    else f"the CV error of the best trial ({incumbent.number})"
                )
                self.reason_ = (
                    f"Stopped after trial {trial.number} with {n} complete trials: the bound "
                    f"on the remaining improvement, {bound:.4g}, is below {source}, "
                    f"{limit:.4g}."
                )
            study.stop()
