"""The benchmark harness's problems: known optima at known minimisers, and its plumbing."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the harness lives beside the package, not inside it
    sys.path.insert(0, str(ROOT))

from benchmarks.bo import problems as bp  # noqa: E402

# (name, dimension, minimum as usually quoted)
QUOTED = [
    ("branin", 2, 0.397887),
    ("hartmann3", 3, -3.86278),
    ("hartmann6", 6, -3.32237),
    ("ackley5", 5, 0.0),
    ("levy5", 5, 0.0),
    ("rosenbrock4", 4, 0.0),
    ("styblinski5", 5, -39.16617 * 5),
]


@pytest.mark.parametrize(("name", "dim", "quoted"), QUOTED)
def test_value_at_known_minimiser_is_the_optimum(name, dim, quoted):
    p = bp.get_problem(name)
    assert len(p.space) == dim
    assert p.optimum == pytest.approx(quoted, rel=2e-6, abs=1e-6)
    config = p.space.validate(p.minimiser)  # the minimiser lies in the domain
    assert p.loss(config) == pytest.approx(p.optimum, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("name", list(bp.SYNTHETIC))
def test_minimiser_is_a_local_minimum_and_nothing_random_beats_it(name):
    f = bp.SYNTHETIC[name]
    x0 = np.array(f.minimiser)
    for i in range(f.dim):
        for h in (1e-3, -1e-3):
            x = x0.copy()
            x[i] += h
            assert f.fn(x)[0] >= f.optimum - 1e-9
    rng = np.random.default_rng(0)
    lo, hi = np.array(f.bounds).T
    values = f.fn(lo + (hi - lo) * rng.random((5000, f.dim)))
    assert values.shape == (5000,)
    assert values.min() >= f.optimum - 1e-9


def test_branin_has_three_minimisers():
    for x in ([-math.pi, 12.275], [math.pi, 2.275], [9.42478, 2.475]):
        assert bp.branin(np.array(x))[0] == pytest.approx(0.397887, abs=1e-6)


def test_vectorised_and_config_values_agree():
    f = bp.SYNTHETIC["hartmann6"]
    space = f.space()
    rng = np.random.default_rng(1)
    configs = [space.sample(rng) for _ in range(5)]
    batch = f.fn(f.to_array(configs))
    assert [f.loss(c) for c in configs] == pytest.approx(list(batch))


def test_problem_names_and_groups():
    assert bp.resolve_problems("synthetic") == list(bp.SYNTHETIC)
    ml = bp.resolve_problems("ml")
    assert "svm-wine" in ml and "rf-diabetes" in ml and "lr-digits" in ml
    assert bp.resolve_problems("branin,wine")[0] == "branin"
    assert all(n.endswith("-wine") for n in bp.resolve_problems("wine"))
    with pytest.raises(ValueError, match="Unknown problem"):
        bp.resolve_problems("nope")


def test_every_ml_task_has_a_space():
    from benchmarks.bo.ml import MLTask

    for name in bp.resolve_problems("ml"):
        task = MLTask(name)
        assert len(task.space) >= 2
        assert task.problem().optimum is None


def test_a_cheap_ml_task_gives_a_cv_loss_and_a_held_out_score():
    p = bp.get_problem("dt-iris")
    config = p.space.sample(np.random.default_rng(0))
    loss = p.loss(config)
    assert -1.0 <= loss <= 0.0
    assert p.loss(config) == loss  # fixed folds and random_state: deterministic
    assert p.holdout is not None
    assert 0.0 <= p.holdout(config) <= 1.0
    # the per-fold losses are scikit-learn's fold accuracies, negated; their mean is the loss
    from benchmarks.bo.ml import make_estimator, split_seed, task_data
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    X, _, y, _ = task_data("dt-iris")
    ref = cross_val_score(
        make_estimator("dt", False, config),
        X,
        y,
        cv=StratifiedKFold(5, shuffle=True, random_state=split_seed("dt-iris")),
    )
    assert p.fold_losses is not None
    assert p.fold_losses(config) == list(-ref)
    assert float(np.mean(p.fold_losses(config))) == loss


def test_twiddle_is_told_the_fold_losses_unless_named_at_mean():
    from benchmarks.bo.optimizers import make_optimizer

    p = bp.get_problem("dt-iris")
    opt = make_optimizer("twiddle-random", p.space, 0)
    trial, config, *_ = opt.ask()
    folds = p.fold_losses(config)
    opt.tell(trial, float(np.mean(folds)), folds)
    assert opt.study.trials[0].fold_scores == tuple(folds)
    opt = make_optimizer("twiddle-random@mean", p.space, 0)
    trial, config, *_ = opt.ask()
    opt.tell(trial, float(np.mean(folds)), folds)
    assert opt.study.trials[0].fold_scores == ()


def test_normalised_score_is_0_at_the_random_median_and_100_at_the_optimum():
    from benchmarks.bo.report import summarise

    opt = bp.SYNTHETIC["branin"].optimum
    recs = [
        {"type": "run", "problem": "branin", "optimizer": "x", "seed": s, "n_trials": 2,
         "losses": [10.0, v], "ask_s": [0.1, 0.2], "tell_s": [0, 0], "eval_s": [0, 0],
         "n_failed": 0, "checkpoints": {"2": {}}}
        for s, v in enumerate([opt, 5.0])
    ]  # fmt: skip
    summary = summarise(recs, {"branin": {"median": 5.0, "min": 1.0}})
    cell = summary["cells"][("branin", "x", 2)]
    assert cell["scores"] == pytest.approx([100.0, 0.0])
    assert cell["mean"] == pytest.approx((opt + 5.0) / 2)


def test_space_maps_to_optuna_distributions_faithfully():
    pytest.importorskip("optuna")
    from benchmarks.bo.optimizers import from_optuna_value, optuna_distribution
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    from twiddle import Categorical, Float, Int

    d = optuna_distribution(Float(1e-4, 1.0, log=True))
    assert isinstance(d, FloatDistribution) and d.log and (d.low, d.high) == (1e-4, 1.0)
    d = optuna_distribution(Float(0.0, 1.0, step=0.3))
    assert d.step == 0.3 and d.high == pytest.approx(0.9)
    d = optuna_distribution(Int(32, 256, step=32))
    assert isinstance(d, IntDistribution) and d.step == 32 and not d.log
    d = optuna_distribution(Int(2, 256, log=True))
    assert d.log and d.step == 1
    dim = Categorical([None, "balanced", (1, 2)])
    d = optuna_distribution(dim)
    assert isinstance(d, CategoricalDistribution)
    assert from_optuna_value(dim, d.choices[2]) == (1, 2)
    assert from_optuna_value(dim, d.choices[0]) is None


def test_sampler_options_in_an_optimiser_name_configure_that_sampler():
    import math

    from benchmarks.bo.optimizers import make_optimizer, unavailable

    from twiddle._gp import Hyperprior

    p = bp.get_problem("hartmann6")
    name = "twiddle-gp:fit=mcmc:n_mcmc=3:nu2_loc=-8:nu2_scale=2:acq_maxiter=7"
    opt = make_optimizer(name, p.space, 0)
    sampler = opt.study.sampler
    assert (sampler.fit, sampler.n_mcmc, sampler.acq_maxiter) == ("mcmc", 3, 7)
    # the other hyperprior fields stay the default for d = 6 (Hvarfner et al. 2024)
    assert sampler.hyperprior == Hyperprior(
        ell_loc=math.sqrt(2.0) + 0.5 * math.log(6), nu2_loc=-8.0, nu2_scale=2.0
    )
    assert opt.name == name
    assert unavailable("twiddle-gp:nu2_loc=-6") is None
    assert "no option 'colour'" in str(unavailable("twiddle-gp:colour=red"))
    tpe_says = unavailable("twiddle-tpe:nu2_loc=-6")
    assert tpe_says is not None and "no option 'nu2_loc'" in tpe_says
    assert "Hyperprior" not in tpe_says
    assert "given twice" in str(unavailable("twiddle-gp:fit=mcmc:fit=map"))
    assert "needs an int" in str(unavailable("twiddle-gp:acq_maxiter=7.5"))
    assert "fields instead" in str(unavailable("twiddle-gp:hyperprior=x"))
    assert "finite number" in str(unavailable("twiddle-gp:nu2_loc=nan"))
    assert "no option 'suggest'" in str(unavailable("twiddle-gp:suggest=1"))
    assert make_optimizer("twiddle-gp:n_startup=None", p.space, 0).study.sampler.n_startup is None
    assert "key=value" in str(unavailable("twiddle-gp:fit"))
    assert "needs a finite number" in str(unavailable("twiddle-gp:nu2_loc=low"))
    assert "must be 'map' or 'mcmc'" in str(unavailable("twiddle-gp:fit=exact"))


def test_report_of_scaling_runs_alone_gives_both_clocks_and_no_empty_tables():
    from benchmarks.bo.report import render, summarise, targets

    def scaling(optimizer, wall_ms, cpu_ms):
        return {
            "type": "scaling",
            "problem": "hartmann6",
            "optimizer": optimizer,
            "n_trials": 300,
            "capped": False,
            "time_cap_s": 600.0,
            "optimizer_s": 1.0,
            "ask_s": [wall_ms / 1e3] * 300,
            "ask_cpu_s": [cpu_ms / 1e3] * 300,
            "versions": {"twiddle": "0.1.0"},
        }

    summary = summarise([scaling("twiddle-gp", 30.0, 20.0), scaling("optuna-gp", 120.0, 80.0)], {})
    lines = targets(summary)
    assert not any("None" in line for line in lines)
    # 30 / 120 in wall time, 20 / 80 in CPU time: both 0.25, over the 0.2 target
    assert any("twiddle-gp / optuna-gp = 0.25 (target <= 0.2; not met)" in x for x in lines)
    assert any("CPU time: 20 ms / 80 ms = 0.25" in x for x in lines)
    assert "twiddle-tpe / optuna-tpe: n/a (no runs or scaling runs of both)" in lines[-1]
    md = render(summary, "scaling.jsonl")
    assert "0 runs, 0 problems, 0 optimisers, 2 scaling runs. Versions: twiddle 0.1.0." in md
    assert "## Time per suggestion (ms" not in md
    assert "| hartmann6 | twiddle-gp | 30 | 30 | - | 20 | 20 | - | 30 | 1.0 | 300 trials |" in md


def test_scaling_only_run_writes_scaling_records_alone(tmp_path):
    import json

    from benchmarks.bo.run import main

    results = tmp_path / "scaling.jsonl"
    argv = ["--scaling-only", "--optimizers", "twiddle-random", "--scaling-trials", "12"]
    main([*argv, "--results", str(results), "--no-report"])
    records = [json.loads(line) for line in results.read_text().splitlines()]
    # no random baselines of the 37 problems, which the scaling runs are not scored on
    assert [r["type"] for r in records] == ["scaling"]
    assert records[0]["n_trials"] == 12 and len(records[0]["ask_cpu_s"]) == 12
