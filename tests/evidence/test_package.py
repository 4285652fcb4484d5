"""The subpackage's surface: lazy loading, the public names, the docstring examples."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys

import pytest

import twiddle.evidence
from twiddle.evidence import _gpr, _infer, _linear


def _run(code: str) -> None:
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(twiddle.evidence.__file__), "..", "..")
    env["PYTHONPATH"] = os.path.abspath(src) + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_import_twiddle_does_not_load_evidence():
    _run("import sys, twiddle; assert 'twiddle.evidence' not in sys.modules")


def test_import_evidence_loads_the_estimators_lazily():
    _run(
        "import sys; from twiddle import evidence; "
        "assert 'sklearn' not in sys.modules, 'scikit-learn loaded eagerly'; "
        "evidence.BayesianLinearRegression; assert 'sklearn.base' in sys.modules"
    )


def test_public_names():
    assert sorted(twiddle.evidence.__all__) == sorted(
        [
            "BayesianLinearRegression",
            "ConvergenceWarning",
            "EvidenceTuneResult",
            "GPRegressor",
            "Gamma",
            "HalfCauchy",
            "InferenceError",
            "InferenceResult",
            "InverseGamma",
            "LaplaceFit",
            "LogNormal",
            "LogUniform",
            "Normal",
            "Prior",
            "Uniform",
            "evidence_of",
            "fit_laplace_hyperparameters",
            "infer",
            "laplace_evidence",
            "linear_evidence",
            "tune_evidence",
        ]
    )
    for name in twiddle.evidence.__all__:
        assert getattr(twiddle.evidence, name) is not None
    with pytest.raises(AttributeError):
        twiddle.evidence.NotAThing  # noqa: B018
    assert issubclass(twiddle.evidence.InferenceError, twiddle.TwiddleError)


@pytest.mark.slow
@pytest.mark.parametrize("module", [_infer, _linear, _gpr], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.slow
def test_package_docstring_example_runs():
    """The eight-schools example of the package docstring, as written."""
    doc = twiddle.evidence.__doc__
    assert doc is not None
    block = doc.split("::\n\n", 1)[1]
    code = "\n".join(line[4:] for line in block.splitlines() if line.startswith("    ") or not line)
    namespace: dict[str, object] = {}
    exec(compile(code, "twiddle.evidence docstring", "exec"), namespace)
    post = namespace["post"]
    assert abs(post.params_["mu"] - 4.4) < 0.5 and abs(post.params_["tau"] - 3.6) < 0.5


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_scikit_learn_estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator

    for estimator in (
        twiddle.evidence.BayesianLinearRegression(),
        twiddle.evidence.BayesianLinearRegression(ard=True),
        twiddle.evidence.GPRegressor(n_restarts=1, seed=0),
    ):
        results = check_estimator(estimator, on_fail=None)
        failed = [r["check_name"] for r in results if r["status"] == "failed"]
        assert not failed, (estimator, failed)
