"""Sampler contract suite (run over every sampler) and per-sampler behaviour."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import qmc

from twiddle import (
    AutoSampler,
    Categorical,
    Float,
    FrozenTrial,
    GridSampler,
    History,
    Int,
    InvalidSpaceError,
    RandomSampler,
    SobolSampler,
    Space,
    TPESampler,
    TrialState,
)
from twiddle._samplers import make_sampler

SPACE = Space(
    {
        "opt": Categorical(["sgd", "adam", "rmsprop"]),
        "lr": Float(1e-4, 1e-1, log=True),
        "momentum": Float(0.0, 0.9, step=0.3, when={"opt": "sgd"}),
        "layers": Int(1, 4),
        "width": Int(8, 64, step=8),
    }
)
# the grid sampler needs a finite space; this one is the same minus the continuous lr
FINITE = Space(
    {
        "opt": Categorical(["sgd", "adam", "rmsprop"]),
        "momentum": Float(0.0, 0.9, step=0.3, when={"opt": "sgd"}),
        "layers": Int(1, 4),
        "width": Int(8, 64, step=8),
    }
)

SAMPLERS = [RandomSampler, SobolSampler, GridSampler, TPESampler]


def space_for(cls):
    return FINITE if cls is GridSampler else SPACE


def history(trials=(), pending=(), seed=7):
    return History(list(trials), list(pending), "minimize", seed)


def done(number, params, value):
    return FrozenTrial(number=number, state=TrialState.COMPLETE, params=params, value=value)


def run(sampler, space, n, seed=7, batch=1):
    trials = []
    rng_seed = 0
    while len(trials) < n:
        rng = np.random.default_rng([seed, rng_seed])
        rng_seed += 1
        configs = sampler.suggest(space, history(trials, seed=seed), rng, batch)
        if not configs:
            break
        for c in configs:
            trials.append(done(len(trials), c, 0.0))
    return [t.params for t in trials]


@pytest.mark.parametrize("cls", SAMPLERS)
def test_types_bounds_and_conditions(cls):
    space = space_for(cls)
    for c in run(cls(), space, 60):
        assert space.validate(c) == c  # every active dimension present, in range
        for k, v in c.items():
            expected = {"float": float, "int": int}.get(space[k].kind)
            if expected is not None:
                assert type(v) is expected
        assert ("momentum" in c) == (c["opt"] == "sgd")


@pytest.mark.parametrize("cls", SAMPLERS)
def test_deterministic_under_seed(cls):
    space = space_for(cls)
    assert run(cls(), space, 30, seed=3) == run(cls(), space, 30, seed=3)
    assert run(cls(), space, 30, seed=3) != run(cls(), space, 30, seed=4)


@pytest.mark.parametrize("cls", SAMPLERS)
def test_batch_proposals_distinct(cls):
    space = space_for(cls)
    configs = cls().suggest(space, history(), np.random.default_rng(0), 8)
    assert len(configs) == 8
    assert len({json.dumps(c, sort_keys=True) for c in configs}) == 8


@pytest.mark.parametrize("cls", SAMPLERS)
def test_running_trials_respected(cls):
    # a config that is being evaluated must not be proposed again in the next batch
    space = space_for(cls)
    first = cls().suggest(space, history(), np.random.default_rng(0), 4)
    pending = [
        FrozenTrial(number=i, state=TrialState.RUNNING, params=c) for i, c in enumerate(first)
    ]
    nxt = cls().suggest(space, history(pending=pending), np.random.default_rng(1), 4)
    keys = {json.dumps(c, sort_keys=True) for c in first}
    assert not keys & {json.dumps(c, sort_keys=True) for c in nxt}


def test_grid_visits_every_config_once_then_stops():
    configs = run(GridSampler(), FINITE, 10_000)
    assert len(configs) == len(FINITE.grid()) == (4 + 2) * 4 * 8
    assert len({json.dumps(c, sort_keys=True) for c in configs}) == len(configs)
    assert (
        GridSampler().suggest(
            FINITE,
            history([done(i, c, 0.0) for i, c in enumerate(configs)]),
            np.random.default_rng(0),
        )
        == []
    )


def test_grid_unshuffled_order_is_lexicographic():
    space = Space({"a": Int(0, 1), "b": Categorical(["x", "y"])})
    got = run(GridSampler(shuffle=False), space, 10)
    assert len(got) == 4
    assert {json.dumps(c, sort_keys=True) for c in got} == {
        json.dumps(c, sort_keys=True) for c in space.grid()
    }


def test_grid_rejects_continuous_space():
    with pytest.raises(InvalidSpaceError, match="finite space"):
        GridSampler().suggest(SPACE, history(), np.random.default_rng(0))


def test_sobol_matches_scipy_sequence():
    # The k-th trial takes the k-th point of scipy's scrambled Sobol sequence seeded by the study.
    space = Space({"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)})
    got = np.array([[c["x"], c["y"]] for c in run(SobolSampler(), space, 16, seed=11)])
    ref = qmc.Sobol(2, scramble=True, seed=11).random(16)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_sobol_covers_better_than_random():
    # discrepancy of 64 Sobol points is well below that of 64 uniform points, on average
    space = Space({f"x{i}": Float(0.0, 1.0) for i in range(4)})
    sob, ran = [], []
    for seed in range(8):
        for sampler, out in ((SobolSampler(), sob), (RandomSampler(), ran)):
            pts = np.array([list(c.values()) for c in run(sampler, space, 64, seed=seed)])
            out.append(qmc.discrepancy(pts))
    assert np.mean(sob) < 0.5 * np.mean(ran)


def test_make_sampler():
    assert isinstance(make_sampler("auto"), AutoSampler)
    assert isinstance(make_sampler("random"), RandomSampler)
    s = GridSampler()
    assert make_sampler(s) is s
    with pytest.raises(ValueError, match="'sampler' parameter of Study"):
        make_sampler("tpe-ish")
