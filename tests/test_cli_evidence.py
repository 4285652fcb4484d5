"""``twiddle run`` with ``[run] method = "evidence"``: one fit per trial, scored by log evidence."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from twiddle import Study, TrialState
from twiddle._cli import main
from twiddle._spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

SPEC = """
[study]
seed = 0
sampler = "grid"

[data]
loader = "load_diabetes"

[estimator]
class = "twiddle.evidence.BayesianLinearRegression"

[space.fit_intercept]
type = "categorical"
choices = [true, false]

[run]
method = "evidence"
n_trials = 2
"""


def write(directory: Path, text: str, name: str = "ev.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_with_evidence_creates_the_study_and_prints_log_evidence(tmp_path, capsys):
    spec = write(tmp_path, SPEC)
    code, out, err = run(capsys, "run", str(spec), "--no-progress")
    assert code == 0, err
    assert "by log evidence" in out and "log evidence ± se" not in out
    assert "Best: trial" in out and "log evidence -" in out
    study = Study.load("ev", f"sqlite:///{tmp_path / 'ev.db'}")
    try:
        trials = study.trials
        assert len(trials) == 2 and all(t.state is TrialState.COMPLETE for t in trials)
        assert all(t.fold_scores == () and "fit_time" in t.user_attrs for t in trials)
        assert study.direction == "maximize"
        assert study.best_params == {"fit_intercept": True}
    finally:
        study.storage.close()
    # `twiddle show` knows the study is an evidence study
    code, out, _ = run(capsys, "show", str(spec))
    assert code == 0 and "by log evidence" in out


def test_the_example_spec_runs(tmp_path, capsys):
    for name in ("diabetes_evidence.toml", "pipelines.py"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    code, out, err = run(capsys, "run", str(tmp_path / "diabetes_evidence.toml"), "--no-progress")
    assert code == 0, err
    assert "Ran 6 trial(s)" in out and "log evidence" in out


@pytest.mark.slow
def test_the_torch_evidence_example_prefers_the_linear_network(tmp_path, capsys):
    # diabetes is close to linear: the evidence of the network without hidden layers
    # (-2407.7, near Bayesian ridge's exact -2405.8) beats every hidden-layer network
    pytest.importorskip("torch")
    shutil.copy(EXAMPLES / "diabetes_mlp_evidence.toml", tmp_path / "ex.toml")
    code, _out, err = run(capsys, "run", str(tmp_path / "ex.toml"), "--no-progress")
    assert code == 0, err
    study = Study.load("ex", f"sqlite:///{tmp_path / 'ex.db'}")
    try:
        assert study.best_params["n_layers"] == 0
        assert len(study.trials) == 9
    finally:
        study.storage.close()


def test_method_defaults_to_cv_and_is_read_from_run():
    assert load_spec(EXAMPLES / "wine_svm.toml").method == "cv"
    assert load_spec(EXAMPLES / "diabetes_evidence.toml").method == "evidence"


@pytest.mark.parametrize(
    ("value", "expected"),
    [('"bayes"', "'evidence'"), ("3", "a non-empty string")],
)
def test_a_bad_method_exits_2(tmp_path, capsys, value, expected):
    spec = write(tmp_path, SPEC.replace('method = "evidence"', f"method = {value}"))
    code, _, err = run(capsys, "run", str(spec), "--no-progress")
    assert code == 2
    assert "[run] method" in err and expected in err
    assert not (tmp_path / "ev.db").exists()


def test_a_cv_table_with_evidence_exits_2(tmp_path, capsys):
    spec = write(tmp_path, SPEC + "\n[cv]\nfolds = 3\n")
    code, _, err = run(capsys, "run", str(spec), "--no-progress")
    assert code == 2
    assert "[cv] table would be ignored" in err


def test_an_estimator_without_evidence_fails_its_trials(tmp_path, capsys):
    text = SPEC.replace("twiddle.evidence.BayesianLinearRegression", "sklearn.linear_model.Ridge")
    spec = write(tmp_path, text)
    code, _, err = run(capsys, "run", str(spec), "--no-progress")
    assert code == 1
    assert "log_evidence_" in err


def test_a_fold_scheduler_with_evidence_is_refused(tmp_path, capsys):
    text = SPEC.replace('method = "evidence"', 'method = "evidence"\nscheduler = "halving"')
    code, _, err = run(capsys, "run", str(write(tmp_path, text)), "--no-progress")
    assert code == 2
    assert "scheduler = 'halving' stops configurations between folds" in err


def test_dask_with_evidence_is_refused(tmp_path, capsys):
    code, _, err = run(
        capsys, "run", str(write(tmp_path, SPEC)), "--no-progress", "--dask", "local"
    )
    assert code == 2
    assert "--dask runs cross-validated studies" in err
    assert not (tmp_path / "ev.db").exists()
