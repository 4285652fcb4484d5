"""Learning-curve schedulers: the rules on synthetic curves, and Study.optimize(scheduler=...)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pytest

import twiddle
from twiddle import (
    Hyperband,
    InvalidParameterError,
    MedianStopping,
    SuccessiveHalving,
    TrialPruned,
    TrialState,
)
from twiddle._schedulers import LearningCurve

STEPS = 27


def _curve(a: float, b: float = 1.0, tau: float = 5.0, steps: int = STEPS) -> dict[int, float]:
    """v(t) = a + b exp(-t / tau) at t = 0..steps (a loss: lower is better; its limit is a)."""
    return {t: a + b * math.exp(-t / tau) for t in range(steps + 1)}


def _prefix(curve: dict[int, float], s: int) -> dict[int, float]:
    return {t: v for t, v in curve.items() if t <= s}


def _first_stop(rule: Any, curve: dict[int, float], others: list[Any], **kw: Any) -> int | None:
    """Feed the curve step by step; the step at which the rule stops it, or None."""
    for s in sorted(curve):
        if rule.should_stop(_prefix(curve, s), others, **kw):
            return s
    return None


# ----------------------------------------------------------------------------------
# Median stopping
# ----------------------------------------------------------------------------------
def test_median_stops_clearly_worse_curves_and_never_the_best() -> None:
    rng = np.random.default_rng(0)
    family = [
        _curve(a, b, tau)
        for a, b, tau in zip(
            np.linspace(0.0, 1.0, 10), rng.uniform(0.5, 1.5, 10), rng.uniform(3, 8, 10), strict=True
        )
    ]
    rule = MedianStopping(n_startup_trials=5)
    # clearly worse curves (a higher limit and start) are stopped, and early
    for a in (2.0, 3.0, 5.0):
        assert _first_stop(rule, _curve(a), family, direction="minimize") == 0
    # a better curve than all of them is never stopped, whatever its shape
    for b, tau in ((0.5, 2.0), (1.5, 8.0)):
        assert _first_stop(rule, _curve(-0.5, b, tau), family, direction="minimize") is None
    # nor is the best curve of the family, compared with the rest
    assert _first_stop(rule, family[0], family[1:], direction="minimize") is None
    # the worst of the family, compared with the rest, is stopped
    assert _first_stop(rule, family[-1], family[:-1], direction="minimize") is not None


def test_median_is_direction_aware_and_uses_best_so_far() -> None:
    rule = MedianStopping(n_startup_trials=3)
    others = [{0: 0.5, 1: 0.6}, {0: 0.6, 1: 0.7}, {0: 0.7, 1: 0.8}]  # accuracies
    assert rule.should_stop({0: 0.4, 1: 0.5}, others, "maximize")
    assert not rule.should_stop({0: 0.9, 1: 0.65}, others, "maximize")
    d = rule.decide({0: 0.9, 1: 0.65}, others, "maximize")
    assert d["best"] == 0.9 and d["median"] == 0.7 and d["step"] == 1
    # minimising the same numbers turns the answer round
    assert not rule.should_stop({0: 0.4, 1: 0.5}, others, "minimize")


def test_median_waits_for_startup_warmup_and_complete_trials() -> None:
    worse = {0: 9.0, 1: 9.0, 2: 9.0}
    done = [_curve(a) for a in (0.1, 0.2, 0.3)]
    assert not MedianStopping(n_startup_trials=4).should_stop(worse, done)
    assert MedianStopping(n_startup_trials=3).should_stop(worse, done)
    assert not MedianStopping(n_startup_trials=3, n_warmup_steps=3).should_stop(worse, done)
    assert not MedianStopping(n_startup_trials=3, min_steps=4).should_stop(worse, done)
    # only COMPLETE others count towards the median
    pruned = [LearningCurve(c, TrialState.PRUNED, i) for i, c in enumerate(done)]
    assert not MedianStopping(n_startup_trials=1).should_stop(worse, pruned)
    # no other trial reported at this step: the trial goes on
    assert not MedianStopping(n_startup_trials=0).should_stop({99: 9.0}, done)
    assert not MedianStopping().should_stop({}, done)


# ----------------------------------------------------------------------------------
# Asynchronous successive halving
# ----------------------------------------------------------------------------------
def test_asha_rungs() -> None:
    assert SuccessiveHalving(1, 3, 27).rungs(100) == [1, 3, 9]
    assert SuccessiveHalving(2, 2).rungs(20) == [2, 4, 8, 16]
    assert SuccessiveHalving(5, 3, 5).rungs(100) == []


def test_asha_keeps_exactly_the_top_third_at_each_rung() -> None:
    """Synchronous view: 27 trials, each judged against all the others: 27 -> 9 -> 3 -> 1."""
    asha = SuccessiveHalving(min_resource=1, reduction_factor=3, max_resource=27)
    rng = np.random.default_rng(1)
    limits = rng.permutation(27) / 10.0  # distinct limits; curves do not cross
    curves = {i: _curve(float(a)) for i, a in enumerate(limits)}
    alive = set(curves)
    for rung in (1, 3, 9):
        at_rung = {i: _prefix(curves[i], rung) for i in alive}
        keep = {
            i
            for i in alive
            if not asha.should_stop(at_rung[i], [at_rung[j] for j in alive if j != i])
        }
        assert len(keep) == len(alive) // 3
        best = sorted(alive, key=lambda i: limits[i])[: len(alive) // 3]
        assert keep == set(best)
        alive = keep
    assert alive == {int(np.argmin(limits))}


def test_asha_decision_counts_ties_and_value_at_first_step_past_the_rung() -> None:
    asha = SuccessiveHalving(min_resource=1, reduction_factor=3)
    others = [{1: float(v)} for v in range(1, 9)]  # 8 values at rung 1
    assert not asha.should_stop({1: 0.5}, others)
    assert not asha.should_stop({1: 3.0}, others)  # ties the 3rd best of 9: kept
    assert asha.should_stop({1: 3.5}, others)
    d = asha.decide({1: 3.5}, others)
    assert (d["rung"], d["n_values"], d["n_keep"]) == (1, 9, 3)
    # a curve reporting only at even steps is judged at rung 1 by its value at step 2
    assert asha.decide({0: 9.0, 2: 0.5}, others)["value"] == 0.5
    # the first trial at a rung always goes on; maximize turns the order round
    assert not asha.should_stop({1: 100.0}, [])
    assert not asha.should_stop({1: 8.5}, others, "maximize")
    assert asha.should_stop({1: 0.5}, others, "maximize")


def test_asha_in_arrival_order_never_stops_the_best_curve_and_saves_steps() -> None:
    asha = SuccessiveHalving(min_resource=1, reduction_factor=3, max_resource=STEPS)
    rng = np.random.default_rng(2)
    limits = rng.uniform(0, 1, 40)
    history: list[LearningCurve] = []
    for i, a in enumerate(limits):
        full = _curve(float(a))
        stop = _first_stop(asha, full, list(history))
        seen = full if stop is None else _prefix(full, stop)
        state = TrialState.COMPLETE if stop is None else TrialState.PRUNED
        history.append(LearningCurve(seen, state, i))
    best = int(np.argmin(limits))
    assert history[best].state is TrialState.COMPLETE
    # every trial that was best so far when it ran went to the end
    for i in range(len(limits)):
        if limits[i] <= limits[:i].min(initial=np.inf):
            assert history[i].state is TrialState.COMPLETE
    steps = sum(len(c.values) for c in history)
    assert steps < 0.5 * len(limits) * (STEPS + 1)


def test_asha_smoothing_averages_the_last_values_up_to_the_rung() -> None:
    others = [{1: 0.5, 2: 0.45, 3: 0.40}, {1: 0.6, 2: 0.55, 3: 0.50}]
    spike = {1: 0.42, 2: 0.38, 3: 0.52}  # the best curve, with one bad value at the rung
    raw = SuccessiveHalving(min_resource=3, reduction_factor=2)
    smooth = SuccessiveHalving(min_resource=3, reduction_factor=2, smoothing=3)
    assert raw.decide(spike, others)["value"] == 0.52 and raw.should_stop(spike, others)
    d = smooth.decide(spike, others)
    assert d["value"] == pytest.approx((0.42 + 0.38 + 0.52) / 3) and not d["stop"]
    # the others are averaged over the same window: 0.45 and 0.55
    assert smooth.should_stop({1: 0.5, 2: 0.5, 3: 0.5}, others)
    # a curve with fewer values than the window is averaged over those it has, and a
    # curve that skipped the rung step is averaged up to its first step past the rung
    assert smooth.decide({3: 0.3}, others)["value"] == 0.3
    assert smooth.decide({2: 0.6, 4: 0.3}, others)["value"] == pytest.approx(0.45)
    # smoothing=1 is the rule of earlier versions: the single value at the rung
    plain = SuccessiveHalving(min_resource=3, reduction_factor=2)
    assert plain.smoothing == 1 and "smoothing" not in repr(plain)
    assert "smoothing=3" in repr(smooth)


def test_asha_smoothing_keeps_the_best_of_noisy_curves_more_often() -> None:
    """27 curves with limits 0.02 apart and noise of sd 0.05 per step; the best 3 go on.

    At rung 9 the curves are flat to 1e-4, so a value there is the limit plus noise of
    sd 0.05 alone, or 0.05 / sqrt(5) when averaged over five steps: the best curve is
    stopped about one time in five by the single value and hardly ever by the
    average. 200 noise draws.
    """
    limits = 0.02 * np.arange(27)
    kept = {1: 0, 5: 0}
    for seed in range(200):
        noise = np.random.default_rng(seed).normal(0.0, 0.05, (27, 10))
        curves = [
            {t: float(a + 0.3 * math.exp(-t) + noise[i, t]) for t in range(10)}
            for i, a in enumerate(limits)
        ]
        for w in kept:
            asha = SuccessiveHalving(min_resource=9, reduction_factor=9, smoothing=w)
            kept[w] += not asha.should_stop(curves[0], curves[1:])
    assert kept[1] / 200 < 0.9
    assert kept[5] / 200 > 0.95


def overfitting(trial: twiddle.Trial) -> float:
    """A run whose loss rises with t: (x - 0.3)^2 + 0.01 t (the best step is the first)."""
    x = trial.suggest_float("x", 0.0, 1.0)
    loss = math.inf
    for t in range(1, STEPS + 1):
        loss = (x - 0.3) ** 2 + 0.01 * t
        trial.report(loss, t)
        if trial.should_prune():
            raise TrialPruned(f"stopped at step {t}")
    return loss


def test_best_trial_ran_to_the_end_even_when_stopped_trials_report_lower_values() -> None:
    study = twiddle.Study(seed=5, sampler="random")
    study.optimize(overfitting, n_trials=30, scheduler=SuccessiveHalving(1, 3, STEPS))
    best = study.best_trial
    pruned = [t for t in study.trials if t.state is TrialState.PRUNED]
    # stopped early, these trials' last values are lower than any complete trial's
    assert any(t.value is not None and t.value < best.value for t in pruned)  # type: ignore[operator]
    assert best.state is TrialState.COMPLETE and len(best.intermediate) == STEPS
    complete = [t for t in study.trials if t.state is TrialState.COMPLETE]
    assert best.number == min(complete, key=lambda t: abs(t.params["x"] - 0.3)).number


# ----------------------------------------------------------------------------------
# Hyperband
# ----------------------------------------------------------------------------------
def test_hyperband_brackets_and_assignment() -> None:
    hb = Hyperband(min_resource=1, max_resource=27, reduction_factor=3)
    assert hb.n_brackets == 4
    assert [b.min_resource for b in hb.brackets] == [1, 3, 9, 27]
    assert all(b.max_resource == 27 for b in hb.brackets)
    assert hb.weights == [27, 18, 6, 4]
    assert Hyperband(1, 26, 3).n_brackets == 3 and Hyperband(4, 4).n_brackets == 1
    # deterministic by number, and spread over the brackets in proportion to the weights
    first = [hb.bracket(n) for n in range(1100)]
    assert first == [hb.bracket(n) for n in range(1100)]
    counts = Counter(first)
    for b, w in enumerate(hb.weights):
        assert abs(counts[b] / 1100 - w / 55) < 0.02
    assert set(first[:12]) == {0, 1, 2, 3}  # a short study sees every bracket


def test_hyperband_compares_within_the_bracket_only() -> None:
    hb = Hyperband(min_resource=1, max_resource=27, reduction_factor=3)
    by_bracket: dict[int, list[int]] = {}
    for n in range(200):
        by_bracket.setdefault(hb.bracket(n), []).append(n)
    me, mates = by_bracket[0][0], by_bracket[0][1:4]
    strangers = by_bracket[1][:20]
    good = [LearningCurve({1: 0.0}, TrialState.COMPLETE, n) for n in strangers]
    bad = [LearningCurve({1: 5.0}, TrialState.COMPLETE, n) for n in mates]
    d = hb.decide({1: 1.0}, good + bad, number=me)
    assert d["bracket"] == 0 and d["n_values"] == 4 and not d["stop"]
    # with better mates it is stopped at rung 1
    mates_good = [LearningCurve({1: 0.0}, TrialState.COMPLETE, n) for n in by_bracket[0][1:6]]
    assert hb.should_stop({1: 1.0}, mates_good, number=me)
    # the last bracket starts at max_resource: never stopped
    last = by_bracket[3][0]
    assert hb.decide({26: 9.0}, good, number=last)["rung"] is None


# ----------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: MedianStopping(n_startup_trials=-1),
        lambda: MedianStopping(min_steps=0),
        lambda: SuccessiveHalving(min_resource=0),
        lambda: SuccessiveHalving(reduction_factor=1),
        lambda: SuccessiveHalving(min_resource=5, max_resource=4),
        lambda: SuccessiveHalving(smoothing=0),
        lambda: Hyperband(),
        lambda: Hyperband(min_resource=3, max_resource=2),
        lambda: SuccessiveHalving().decide({1: 1.0}, [], "up"),
        lambda: SuccessiveHalving().decide({1: 1.0}, [[1.0]]),
    ],
)
def test_invalid_arguments(make: Any) -> None:
    with pytest.raises(InvalidParameterError, match="parameter of"):
        make()


@pytest.mark.parametrize("bad", ["racing", twiddle.FoldRacing(), "hyperband", "nope", 3])
def test_optimize_validates_scheduler(bad: Any) -> None:
    study = twiddle.Study(seed=0)
    with pytest.raises(InvalidParameterError, match=r"'scheduler' parameter of Study\.optimize"):
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1, scheduler=bad)
    assert len(study.trials) == 0


# ----------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------
def training(trial: twiddle.Trial) -> float:
    """A synthetic training run: the loss after step t is (x - 0.3)^2 + 0.5 exp(-t / 4)."""
    x = trial.suggest_float("x", 0.0, 1.0)
    loss = math.inf
    for t in range(1, STEPS + 1):
        loss = (x - 0.3) ** 2 + 0.5 * math.exp(-t / 4.0)
        trial.report(loss, t)
        if trial.should_prune():
            raise TrialPruned(f"stopped at step {t}")
    return loss


def _check_pruned_study(study: twiddle.Study, n_trials: int) -> None:
    trials = study.trials
    assert len(trials) == n_trials
    pruned = [t for t in trials if t.state is TrialState.PRUNED]
    assert pruned and all(len(t.intermediate) < STEPS for t in pruned)
    assert all(t.value == t.intermediate[max(t.intermediate)] for t in pruned)
    assert all(len(t.intermediate) == STEPS for t in trials if t.state is TrialState.COMPLETE)
    steps = sum(len(t.intermediate) for t in trials)
    assert steps <= 0.5 * n_trials * STEPS
    closest = min(trials, key=lambda t: abs(t.params["x"] - 0.3))
    assert study.best_trial.number == closest.number


def test_optimize_with_successive_halving_inline() -> None:
    study = twiddle.Study(seed=3, sampler="random")
    study.optimize(training, n_trials=30, scheduler=SuccessiveHalving(1, 3, STEPS))
    _check_pruned_study(study, 30)


def test_optimize_with_median_and_hyperband_inline() -> None:
    for scheduler in ("median", Hyperband(1, STEPS, 3)):
        study = twiddle.Study(seed=4, sampler="random")
        study.optimize(training, n_trials=30, scheduler=scheduler)
        assert any(t.state is TrialState.PRUNED for t in study.trials)
        closest = min(study.trials, key=lambda t: abs(t.params["x"] - 0.3))
        assert study.best_trial.number == closest.number


@pytest.mark.slow
def test_optimize_with_successive_halving_in_workers() -> None:
    study = twiddle.Study(seed=3, sampler="random")
    study.optimize(training, n_trials=30, n_jobs=2, scheduler=SuccessiveHalving(1, 3, STEPS))
    _check_pruned_study(study, 30)


def test_should_prune_is_false_without_a_scheduler() -> None:
    seen: list[bool] = []

    def objective(trial: twiddle.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        for t in range(1, 4):
            trial.report(x + 10.0 / t, t)
            seen.append(trial.should_prune())
        return x

    study = twiddle.Study(seed=0, sampler="random")
    study.optimize(objective, n_trials=5)
    assert seen == [False] * 15
    assert all(t.state is TrialState.COMPLETE for t in study.trials)
    assert study.ask().should_prune() is False


def test_ask_driven_trials_are_stopped_by_the_scheduler():
    # Trials report curves value / step with value = lr; once two trials have
    # finished, a trial whose curve sits above the median of the others at the same
    # step is stopped at that step, here the worst configurations.
    import twiddle

    space = twiddle.Space({"lr": twiddle.Float(0.0, 1.0)})
    study = twiddle.Study(space=space, seed=3, sampler="random")
    sched = twiddle.MedianStopping(n_startup_trials=2)
    stopped_at = {}
    for _ in range(12):
        trial = study.ask(scheduler=sched)
        lr = trial.params["lr"]
        state, step = "COMPLETE", 0
        for step in range(1, 6):
            trial.report(lr / step, step)
            if trial.should_prune():
                state = "PRUNED"
                break
        study.tell(trial, lr / step, state=state)
        if state == "PRUNED":
            stopped_at[trial.number] = step
    trials = study.trials
    pruned = [t for t in trials if t.state is twiddle.TrialState.PRUNED]
    complete = [t for t in trials if t.state is twiddle.TrialState.COMPLETE]
    assert pruned and complete
    # the first two trials start the rule and are never stopped
    assert trials[0].state is trials[1].state is twiddle.TrialState.COMPLETE
    # every stopped trial was worse, at the step it stopped, than the median of the
    # trials told before it (independent check of the median rule)
    for t in pruned:
        step = stopped_at[t.number]
        before = [u.intermediate[step] for u in trials[: t.number] if step in u.intermediate]
        assert t.intermediate[step] > float(np.median(before))
    # without a scheduler, should_prune is always False
    assert study.ask().should_prune() is False


def test_ask_rejects_an_unknown_scheduler():
    import twiddle

    study = twiddle.Study(space=twiddle.Space({"x": twiddle.Float(0.0, 1.0)}))
    with pytest.raises(twiddle.InvalidParameterError, match=r"Study\.ask"):
        study.ask(scheduler="sometimes")
