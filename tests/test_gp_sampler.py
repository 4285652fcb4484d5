"""The GP sampler: the sampler contract on the GP path, convergence, conditions, fold noise."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from twiddle import Categorical, Float, FrozenTrial, History, Int, Space, Study, TrialState
from twiddle._samplers._gp import GPSampler, fold_adjusted_means, warp_outputs

MIXED = Space(
    {
        "opt": Categorical(["sgd", "adam", "rmsprop"]),
        "lr": Float(1e-4, 1e-1, log=True),
        "momentum": Float(0.0, 0.9, when={"opt": "sgd"}),
        "layers": Int(1, 4),
        "width": Int(8, 512, log=True),
        "drop": Float(0.0, 0.5, step=0.1),
    }
)


def mixed_objective(c):
    v = (math.log10(c["lr"]) + 2.5) ** 2 + 0.1 * (c["layers"] - 3) ** 2
    v += 0.2 * (math.log2(c["width"]) - 6) ** 2 / 9 + (c["drop"] - 0.2) ** 2
    if c["opt"] == "sgd":
        v += (c["momentum"] - 0.8) ** 2
    else:
        v += 0.3
    return v


def history_of(space, n, seed, objective, fold_se=False):
    rng = np.random.default_rng(seed)
    trials = []
    for i in range(n):
        c = space.sample(rng)
        v = objective(c)
        folds = tuple(v + 0.05 * rng.standard_normal(5)) if fold_se else ()
        trials.append(
            FrozenTrial(number=i, state=TrialState.COMPLETE, params=c, value=v, fold_scores=folds)
        )
    return trials


def test_proposals_are_valid_typed_and_respect_conditions():
    trials = history_of(MIXED, 14, 0, mixed_objective)
    sampler = GPSampler(n_startup=5, n_candidates=128)
    for k in range(5):
        out = sampler.suggest(
            MIXED, History(trials, [], "minimize", 1), np.random.default_rng(k), 2
        )
        assert sampler.last_info["phase"] == "gp"
        for c in out:
            assert MIXED.validate(c) == c
            assert type(c["layers"]) is int and type(c["width"]) is int
            assert type(c["lr"]) is float
            assert ("momentum" in c) == (c["opt"] == "sgd")
        assert json.dumps(out[0], sort_keys=True) != json.dumps(out[1], sort_keys=True)


def test_deterministic_under_seed():
    trials = history_of(MIXED, 12, 1, mixed_objective)

    def once():
        s = GPSampler(n_startup=5, n_candidates=128)
        return s.suggest(MIXED, History(trials, [], "minimize", 3), np.random.default_rng(9), 3)

    assert once() == once()


def test_pending_trials_are_not_proposed_again():
    trials = history_of(MIXED, 12, 2, mixed_objective)
    s = GPSampler(n_startup=5, n_candidates=128)
    first = s.suggest(MIXED, History(trials, [], "minimize", 0), np.random.default_rng(0), 1)[0]
    pending = [FrozenTrial(number=12, state=TrialState.RUNNING, params=first)]
    second = s.suggest(MIXED, History(trials, pending, "minimize", 0), np.random.default_rng(0), 1)[
        0
    ]
    assert second != first


def test_a_small_space_gets_its_one_configuration_not_tried_yet():
    # 12 configurations, 11 of them complete (one twice, to pass the Sobol start):
    # the only proposal that is not a repeat is the twelfth, wherever its acquisition
    # value ranks among the candidates
    space = Space({"k": Int(1, 6), "w": Categorical(["uniform", "distance"])})
    configs = [{"k": k, "w": w} for k in range(1, 7) for w in ("uniform", "distance")]
    for missing in (0, 5, 11):
        seen = [c for i, c in enumerate(configs) if i != missing]
        trials = [
            FrozenTrial(
                number=i,
                state=TrialState.COMPLETE,
                params=c,
                value=(c["k"] - 3) ** 2 + (c["w"] == "uniform"),
            )
            for i, c in enumerate([*seen, seen[0]])
        ]
        for seed in range(3):
            got = GPSampler().suggest(
                space, History(trials, [], "minimize", 0), np.random.default_rng(seed), 1
            )
            assert got == [configs[missing]]


def test_fold_standard_errors_become_observation_noise():
    y = np.array([0.1, 0.5, 0.2, 0.9, 0.4])
    se = np.array([0.0, 0.05, 0.1, 0.0, 0.2])
    z, noise = warp_outputs(y, se)
    assert z.shape == (5,) and abs(z.mean()) < 1e-12 and abs(z.std() - 1) < 1e-12
    assert noise is not None and noise[0] == 0.0 and noise[3] == 0.0
    assert noise[4] > noise[2] > noise[1] > 0
    trials = history_of(MIXED, 12, 3, mixed_objective, fold_se=True)
    out = GPSampler(n_startup=5, n_candidates=128).suggest(
        MIXED, History(trials, [], "minimize", 0), np.random.default_rng(0)
    )
    assert MIXED.validate(out[0]) == out[0]


def test_mcmc_fit_gives_several_hyperparameter_samples():
    trials = history_of(MIXED, 12, 4, mixed_objective)
    s = GPSampler(fit="mcmc", n_startup=5, n_candidates=64, n_mcmc=4)
    out = s.suggest(MIXED, History(trials, [], "minimize", 0), np.random.default_rng(0))
    assert s.last_info == {"phase": "gp", "fit": "mcmc", "n_samples": 4}
    assert MIXED.validate(out[0]) == out[0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="'fit' parameter of GPSampler"):
        GPSampler(fit="laplace")
    with pytest.raises(ValueError, match="'n_startup'"):
        GPSampler(n_startup=0)


def branin(c):
    x1, x2 = c["x1"], c["x2"]
    b, cc, r, s, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + cc * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


BRANIN = Space({"x1": Float(-5.0, 10.0), "x2": Float(0.0, 15.0)})


@pytest.mark.slow
def test_gp_beats_random_search_on_branin_across_seeds():
    gp, rnd = [], []
    for seed in range(5):
        a = Study(name="b", space=BRANIN, sampler=GPSampler(), seed=seed)
        a.optimize(branin, n_trials=30)
        b = Study(name="b", space=BRANIN, sampler="random", seed=seed)
        b.optimize(branin, n_trials=30)
        gp.append(a.best_value - 0.397887)
        rnd.append(b.best_value - 0.397887)
    # regret of the GP after 30 trials is far below random search's, on every seed's mean
    assert np.mean(gp) < 0.05
    assert np.mean(gp) < 0.2 * np.mean(rnd)


@pytest.mark.slow
def test_gp_finds_an_optimum_inside_a_conditional_branch():
    regrets = []
    for seed in range(3):
        st = Study(name="c", space=MIXED, sampler=GPSampler(), seed=seed)
        st.optimize(mixed_objective, n_trials=35)
        regrets.append(st.best_value)
        assert st.best_params["opt"] == "sgd"
    assert np.mean(regrets) < 0.15


def _racing_history():
    trials = history_of(MIXED, 12, 5, mixed_objective, fold_se=True)
    pruned = FrozenTrial(
        number=12,
        state=TrialState.PRUNED,
        params=trials[0].params,
        value=5.0,
        fold_scores=(4.9, 5.0, 5.1, None, None),
    )
    learning_curve = FrozenTrial(
        number=13, state=TrialState.PRUNED, params=trials[1].params, value=9.0
    )
    return [*trials, pruned, learning_curve]


def test_trials_stopped_by_racing_enter_at_their_fold_corrected_mean():
    trials = _racing_history()
    complete = np.array([t.fold_scores for t in trials[:12]])
    # fold effects and interaction variance of the two-way additive model, by least
    # squares on an explicit design matrix (trial and fold indicators)
    n, k = complete.shape
    X = np.zeros((n * k, n + k - 1))
    for i in range(n):
        for j in range(k):
            X[i * k + j, i] = 1.0
            if j < k - 1:
                X[i * k + j, n + j] = 1.0
    coef, res, *_ = np.linalg.lstsq(X, complete.ravel(), rcond=None)
    effects = np.r_[coef[n:], 0.0]
    effects -= effects.mean()
    sigma2 = float(res[0]) / ((n - 1) * (k - 1))
    s = GPSampler(n_startup=5)
    _, y, se = s._data(MIXED, History(trials, [], "minimize", 0))
    assert y.size == 13  # the learning-curve trial is left out
    assert y[-1] == pytest.approx(np.mean(np.array([4.9, 5.0, 5.1]) - effects[:3]), abs=1e-12)
    assert se is not None and np.all(se[:12] == 0.0)
    assert se[-1] == pytest.approx(math.sqrt(sigma2 * 2 / (5 * 3) * (1 + 1 / 12)), rel=1e-10)


def test_fold_noise_modes():
    trials = _racing_history()
    h = History(trials, [], "minimize", 0)
    _, y, se = GPSampler(fold_noise="off")._data(MIXED, h)
    assert y.size == 12 and se is None
    _, y, se = GPSampler(fold_noise="se")._data(MIXED, h)
    assert y.size == 13 and y[-1] == 5.0
    assert se is not None and se[-1] == pytest.approx(trials[12].value_se)
    assert se[0] == pytest.approx(np.std(trials[0].fold_scores, ddof=1) / math.sqrt(5))
    # complete trials only: no known noise, whatever the fold scores say
    _, _, se = GPSampler()._data(MIXED, History(trials[:12], [], "minimize", 0))
    assert se is None
    # a stopped trial whose only fold score is NaN is left out
    nan_fold = trials[12].replace(fold_scores=(math.nan, None, None, None, None))
    _, y, se = GPSampler()._data(MIXED, History([*trials[:12], nan_fold], [], "minimize", 0))
    assert y.size == 12 and np.isfinite(y).all() and se is not None and se.size == 12
    with pytest.raises(ValueError, match="fold_noise"):
        GPSampler(fold_noise="yes")


def test_stopped_trials_enter_without_a_fold_correction_behind_a_lone_complete_trial():
    # racing can stop every trial behind an early incumbent: with one complete trial
    # the fold effects are unknown, and the stopped trials still enter the model
    rng = np.random.default_rng(3)
    configs = [MIXED.sample(rng) for _ in range(4)]
    folds = [
        (0.90, 0.80, 0.85, 0.95, 0.90),
        (0.50, 0.40, None, None, None),
        (0.30, None, None, None, None),
        (0.60, 0.55, 0.70, None, None),
    ]
    trials = [
        FrozenTrial(
            number=i,
            state=TrialState.COMPLETE if i == 0 else TrialState.PRUNED,
            params=c,
            value=float(np.mean([v for v in f if v is not None])),
            fold_scores=f,
        )
        for i, (c, f) in enumerate(zip(configs, folds, strict=True))
    ]
    _, y, se = GPSampler()._data(MIXED, History(trials, [], "maximize", 0))
    assert y.size == 4
    assert y == pytest.approx([-t.value for t in trials])
    rows = [np.array([v for v in f if v is not None]) for f in folds]
    pooled = sum(np.sum((r - r.mean()) ** 2) for r in rows if r.size > 1) / sum(
        r.size - 1 for r in rows if r.size > 1
    )
    expected = [0.0] + [math.sqrt(pooled * (5 - r.size) / (5 * r.size)) for r in rows[1:]]
    assert se is not None and se == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("m", [1, 2, 4])
def test_fold_corrected_mean_is_calibrated(m):
    # F_ij = mu_i + f_j + e_ij: the estimate of a partial trial's k-fold mean, divided
    # by its stated standard error, is standard normal (mean 0, variance 1), but for
    # the estimated variance in the denominator (Student t: variance df / (df - 2))
    rng = np.random.default_rng(m)
    k, n, reps = 5, 20, 2000
    z = []
    for _ in range(reps):
        f = rng.normal(0.0, 0.3, k)
        mu = rng.normal(0.0, 1.0, n + 1)
        F = mu[:, None] + f[None, :] + rng.normal(0.0, 0.05, (n + 1, k))
        trials = [
            FrozenTrial(
                number=i,
                state=TrialState.COMPLETE,
                params={},
                value=float(F[i].mean()),
                fold_scores=tuple(F[i]),
            )
            for i in range(n)
        ]
        folds = tuple(float(v) if j < m else None for j, v in enumerate(F[n]))
        trials.append(
            FrozenTrial(number=n, state=TrialState.PRUNED, params={}, value=0.0, fold_scores=folds)
        )
        means, se = fold_adjusted_means(trials)
        assert np.allclose(means[:n], F[:n].mean(axis=1))
        z.append((means[n] - F[n].mean()) / se[n])
    z = np.array(z)
    df = (n - 1) * (k - 1)
    # Monte-Carlo tolerances: 4 standard errors of the mean and of the variance
    assert abs(z.mean()) < 4 / math.sqrt(reps)
    assert abs(z.var() - df / (df - 2)) < 4 * math.sqrt(2 / reps)


def _schedule(sampler, space, trials, seed):
    """Proposals and fit kinds of ``sampler`` as the history grows one trial at a time."""
    kinds, proposals = [], []
    for k in range(6, len(trials) + 1):
        out = sampler.suggest(
            space, History(trials[:k], [], "minimize", 0), np.random.default_rng([seed, k])
        )
        kinds.append(sampler.last_info["refit"])
        proposals.append(out[0])
    return kinds, proposals


def test_hyperparameter_refit_schedule_is_periodic_and_deterministic():
    trials = history_of(BRANIN, 16, 6, branin)

    def make():
        s = GPSampler(n_startup=5, n_candidates=64)
        s.refit_every = 4
        s.refit_drop = -math.inf  # only the periodic schedule
        return s

    kinds, proposals = _schedule(make(), BRANIN, trials, 0)
    # a full fit first, then every 4th proposal; warm fits in between
    assert kinds == ["full", "warm", "warm", "warm"] * 2 + ["full", "warm", "warm"]
    assert _schedule(make(), BRANIN, trials, 0) == (kinds, proposals)


def test_a_drop_in_evidence_forces_a_full_refit():
    trials = history_of(BRANIN, 10, 7, branin)
    s = GPSampler(n_startup=5, n_candidates=64)
    s.refit_drop = math.inf  # every warm fit counts as a drop
    kinds, _ = _schedule(s, BRANIN, trials, 1)
    assert set(kinds) == {"full"}
    # a warm fit that ran from a stale optimum is redone in full, on the new data
    state = s._fits[next(iter(s._fits))]
    assert state.n == 10 and state.since_full == 0


def test_discrete_moves_are_one_step_or_one_choice_away():
    from twiddle._samplers._gp import _neighbour_rows

    space = Space(
        {
            "n": Int(1, 25),
            "m": Int(2, 256, log=True),
            "w": Categorical(["uniform", "distance", "auto"]),
            "s": Float(0.0, 1.0, step=0.25),
            "x": Float(1e-3, 1.0, log=True),
        }
    )
    config = {"n": 1, "m": 17, "w": "distance", "s": 0.5, "x": 0.01}
    rows, owner = _neighbour_rows(space, space.encode(config))
    assert list(owner) == [0] * len(rows)
    got = [space.decode(r) for r in rows]
    expected = [
        {**config, "n": 2},  # n = 0 is out of bounds
        {**config, "m": 16},
        {**config, "m": 18},
        {**config, "w": "uniform"},
        {**config, "w": "auto"},
        {**config, "s": 0.25},
        {**config, "s": 0.75},
    ]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.keys() == e.keys()
        assert {k: g[k] for k in g if k != "x"} == {k: e[k] for k in e if k != "x"}
        assert g["x"] == pytest.approx(0.01, rel=1e-12)  # continuous dimensions stay
    # several points at once: each neighbour says which point it belongs to
    other = {**config, "n": 25, "w": "uniform"}
    rows2, owner2 = _neighbour_rows(space, space.encode([other, config]))
    assert list(owner2) == [0] * 7 + [1] * 7
    assert [space.decode(r)["n"] for r in rows2[:2]] == [24, 25]  # n = 26 is out of bounds
    np.testing.assert_array_equal(rows2[7:], rows)


def test_discrete_moves_re_resolve_conditions():
    from twiddle._samplers._gp import _neighbour_rows

    space = Space(
        {
            "kind": Categorical(["a", "b"]),
            "n": Int(1, 9, when={"kind": ["a"]}),
            "m": Int(1, 9, when={"kind": ["b"]}),
        }
    )
    rows, _ = _neighbour_rows(space, space.encode({"kind": "a", "n": 3}))
    got = [space.decode(r) for r in rows]
    # switching the kind turns n off and m on, at the middle of its range
    assert got == [{"kind": "b", "m": 5}, {"kind": "a", "n": 2}, {"kind": "a", "n": 4}]


def test_discrete_moves_of_several_starts_are_those_of_each_start_alone(monkeypatch):
    # the starts are moved in one batch; each must end where it would alone
    space = Space(
        {
            "n": Int(1, 30),
            "w": Categorical(["a", "b", "c", "d"]),
            "m": Int(1, 200, log=True),
            "x": Float(0.0, 1.0),
        }
    )
    target = np.array([0.8, 0.1, 0.35, 0.5])

    def acq(models, fmap, U, best):
        # a smooth bowl in the encoding, with a tilt so that the starts differ
        U = np.nan_to_num(np.asarray(U, dtype=float), nan=0.5)
        return -np.sum((U - target) ** 2 * np.array([1.0, 2.0, 3.0, 0.5]), axis=1)

    monkeypatch.setattr(GPSampler, "_acq", staticmethod(acq))
    sampler = GPSampler()
    rng = np.random.default_rng(4)
    starts = [space.sample(rng) for _ in range(6)]
    # the first start cannot improve, so the others' rows shift in the later batches
    best = space.decode(target)
    for _ in range(10):
        (best,), _ = GPSampler()._local_discrete(
            space, None, [], 0.0, [best], acq(None, None, space.encode(best), 0.0)
        )
    starts[0] = best
    values = acq(None, None, space.encode(starts), 0.0)
    together, vals = sampler._local_discrete(space, None, [], 0.0, starts, values)
    alone = [
        sampler._local_discrete(space, None, [], 0.0, [s], values[i : i + 1])
        for i, s in enumerate(starts)
    ]
    assert together == [a[0][0] for a in alone]
    np.testing.assert_array_equal(vals, [a[1][0] for a in alone])
    assert together[0] == starts[0]
    assert all(a != b for a, b in zip(together[1:], starts[1:], strict=True))
