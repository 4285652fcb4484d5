"""TOML study specs: structure checks, path rules, and preparing estimator, data and folds."""

from __future__ import annotations

import inspect
import math
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from twiddle import Categorical, Float, Int, Repeat, SpecError
from twiddle._spec import RunSpec, load_spec, resolve_storage

TINY = """
[study]
seed = 0

[data]
loader = "load_iris"

[estimator]
class = "sklearn.tree.DecisionTreeClassifier"
params = { random_state = 0 }

[space.max_depth]
type = "int"
low = 1
high = 6

[space.criterion]
type = "categorical"
choices = ["gini", "entropy"]

[cv]
folds = 3
scoring = "accuracy"

[run]
n_trials = 4
"""

CSV_TEXT = """\
a,b,site,label
0.1,1.0,s1,yes
0.2,0.9,s1,no
0.3,0.8,s2,yes
0.4,0.7,s2,no
0.5,0.6,s3,yes
0.6,0.5,s3,no
0.7,0.4,s4,yes
0.8,0.3,s4,no
"""

CSV_SPEC = """
[data]
csv = "data/table.csv"
target = "label"

[estimator]
class = "sklearn.tree.DecisionTreeClassifier"

[space.max_depth]
type = "int"
low = 1
high = 3

[cv]
folds = 2
groups = "site"

[run]
n_trials = 2
"""


@pytest.fixture(autouse=True)
def restore_imports() -> Iterator[None]:
    """Undo what loading a spec does to sys.path (its directory) and sys.modules."""
    path = list(sys.path)
    yield
    added = [Path(p).resolve() for p in sys.path if p and p not in path]
    sys.path[:] = path
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and any(Path(file).resolve().is_relative_to(a) for a in added):
            del sys.modules[name]


def write(tmp_path: Path, text: str, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def spec_error(tmp_path: Path, text: str) -> str:
    """The message of the SpecError that loading (and preparing) ``text`` raises."""
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path).prepare()
    return str(info.value)


def with_csv(tmp_path: Path, text: str = CSV_TEXT) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "table.csv").write_text(text)


# -- reading the structure --------------------------------------------------------------
def test_defaults_come_from_the_spec_file(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, TINY))
    assert isinstance(spec, RunSpec)
    assert spec.name == "tiny"
    assert spec.storage == f"sqlite:///{tmp_path / 'tiny.db'}"
    assert spec.sampler == "auto"
    assert spec.seed == 0
    assert spec.n_trials == 4
    assert spec.timeout is None
    assert spec.n_jobs == 1
    assert spec.cv.folds == 3
    assert spec.cv.shuffle is False
    assert spec.cv.scoring == "accuracy"
    assert math.isnan(float(spec.cv.error_score))
    assert spec.estimator.path == "sklearn.tree.DecisionTreeClassifier"
    assert spec.estimator.params == {"random_state": 0}
    assert spec.data.loader == "load_iris"
    assert spec.space["max_depth"] == Int(1, 6)
    assert spec.space["criterion"] == Categorical(["gini", "entropy"])


def test_full_spec(tmp_path: Path) -> None:
    text = """
    [study]
    name = "mlp"
    storage = "sqlite:///runs/mlp.db"
    sampler = "random"
    seed = 3
    direction = "maximize"

    [data]
    loader = "load_digits"

    [estimator]
    class = "sklearn.neural_network:MLPClassifier"
    [estimator.params]
    max_iter = 5
    early_stopping = false

    [space.learning_rate_init]
    type = "float"
    low = 1e-4
    high = 1e-1
    log = true

    [space.solver]
    type = "categorical"
    choices = ["adam", "sgd"]

    [space.momentum]
    type = "float"
    low = 0.0
    high = 0.99
    when = { solver = "sgd" }

    [space.width]
    type = "int"
    low = 8
    high = 64
    log = true

    [space.n_layers]
    type = "int"
    low = 1
    high = 3

    [derived.hidden_layer_sizes]
    type = "repeat"
    value = "width"
    times = "n_layers"

    [cv]
    folds = 4
    shuffle = true
    scoring = ["accuracy", "f1_macro"]
    metric = "f1_macro"
    error_score = 0.0

    [run]
    n_trials = 30
    timeout = 60
    n_jobs = 2
    """
    spec = load_spec(write(tmp_path, text))
    assert spec.name == "mlp"
    assert spec.storage == f"sqlite:///{tmp_path / 'runs' / 'mlp.db'}"
    assert (spec.sampler, spec.seed, spec.n_trials, spec.timeout, spec.n_jobs) == (
        "random",
        3,
        30,
        60.0,
        2,
    )
    assert spec.space["learning_rate_init"] == Float(1e-4, 1e-1, log=True)
    assert spec.space["momentum"] == Float(0.0, 0.99, when={"solver": "sgd"})
    assert isinstance(spec.space.derived["hidden_layer_sizes"], Repeat)
    assert spec.space.to_estimator_params(
        {"learning_rate_init": 0.01, "solver": "adam", "width": 16, "n_layers": 2}
    ) == {"learning_rate_init": 0.01, "solver": "adam", "hidden_layer_sizes": (16, 16)}
    assert spec.cv == spec.cv.__class__(
        folds=4,
        shuffle=True,
        groups=None,
        scoring=("accuracy", "f1_macro"),
        metric="f1_macro",
        error_score=0.0,
    )


def test_relative_paths_are_read_from_the_spec_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_csv(tmp_path)
    path = write(tmp_path, CSV_SPEC + '\n[study]\nstorage = "out/results.sqlite"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(Path("..") / path.name)
    assert spec.data.csv == (tmp_path / "data" / "table.csv")
    assert spec.storage == f"sqlite:///{tmp_path / 'out' / 'results.sqlite'}"
    prepared = spec.prepare()  # reads the CSV although the working directory is elsewhere
    assert prepared.X.shape == (8, 2)


def test_resolve_storage_forms(tmp_path: Path) -> None:
    assert resolve_storage("memory", tmp_path) == "memory"
    assert resolve_storage("a.db", tmp_path) == f"sqlite:///{tmp_path / 'a.db'}"
    assert resolve_storage("sqlite:///b/c", tmp_path) == f"sqlite:///{tmp_path / 'b' / 'c'}"
    absolute = tmp_path / "abs.db"
    assert resolve_storage(f"sqlite:///{absolute}", Path("/nowhere")) == f"sqlite:///{absolute}"
    for bad in ("results", "postgres://host/db", "sqlite:///"):
        with pytest.raises(SpecError, match="storage must be"):
            resolve_storage(bad, tmp_path)


def test_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_spec(write(tmp_path, TINY))
    monkeypatch.chdir(tmp_path)
    new = spec.with_overrides(n_trials=9, n_jobs=2, timeout=5.0, storage="x/o.db", seed=7)
    assert (new.n_trials, new.n_jobs, new.timeout, new.seed) == (9, 2, 5.0, 7)
    assert new.storage == f"sqlite:///{tmp_path / 'x' / 'o.db'}"  # relative to the cwd
    assert spec.with_overrides() == spec


@pytest.mark.parametrize(
    ("old", "new", "needles"),
    [
        ("n_trials = 4", "n_trial = 4", ["[run]", "'n_trial'", "Did you mean 'n_trials'?"]),
        ("seed = 0", "sed = 0", ["[study]", "'sed'", "Did you mean 'seed'?", "Allowed keys"]),
        ("folds = 3", "fold = 3", ["[cv]", "'fold'", "'folds'"]),
        ('loader = "load_iris"', 'loader = "load_iris"\ntarjet = "y"', ["[data]", "'tarjet'"]),
        ("params = {", "parms = {", ["[estimator]", "'parms'", "'params'"]),
        ("low = 1\n", "lo = 1\n", ["[space.max_depth]", "'lo'", "Did you mean 'low'?"]),
        ("[cv]", "[cvv]\n[cv]", ["unknown table 'cvv'", "Did you mean 'cv'?", "[run]"]),
    ],
)
def test_unknown_keys_are_named_with_a_suggestion(
    tmp_path: Path, old: str, new: str, needles: list[str]
) -> None:
    assert old in TINY
    message = spec_error(tmp_path, TINY.replace(old, new, 1))
    assert message.startswith("In ")
    for needle in needles:
        assert needle in message


def test_top_level_key_points_to_its_table(tmp_path: Path) -> None:
    message = spec_error(tmp_path, "n_jobs = 2\n" + TINY)
    assert "'n_jobs'" in message
    assert "[run]" in message


def test_unknown_derived_key(tmp_path: Path) -> None:
    text = TINY + '\n[derived.max_leaf_nodes]\ntype = "repeat"\nvalue = "max_depth"\ntime = "x"\n'
    message = spec_error(tmp_path, text)
    assert "[derived.max_leaf_nodes]" in message
    assert "Did you mean 'times'?" in message


@pytest.mark.parametrize(
    ("old", "new", "needles"),
    [
        ("n_trials = 4", 'n_trials = "4"', ["[run] n_trials", "integer >= 1", "a string"]),
        ("n_trials = 4", "n_trials = 0", ["[run] n_trials", "integer >= 1"]),
        ("n_trials = 4", "n_trials = 4\ntimeout = -1", ["[run] timeout", "> 0"]),
        ("n_trials = 4", "n_trials = 4\nn_jobs = 0", ["[run] n_jobs"]),
        ("seed = 0", "seed = 1.5", ["[study] seed", "a float"]),
        ("seed = 0", 'sampler = "bayes"', ["[study] sampler", "'auto'"]),
        ("folds = 3", "folds = 1", ["[cv] folds", ">= 2"]),
        ("folds = 3", 'shuffle = "yes"', ["[cv] shuffle", "true or false"]),
        ('scoring = "accuracy"', "scoring = 3", ["[cv] scoring", "scorer name"]),
        ('scoring = "accuracy"', 'error_score = "zero"', ["[cv] error_score", "'raise'"]),
        ("params = { random_state = 0 }", "params = 3", ["[estimator] params", "table"]),
        ("high = 6", 'high = "6"', ["[space.max_depth] high", "a number"]),
        ("high = 6", "high = 6\nlog = 1", ["[space.max_depth] log", "true or false"]),
        ('choices = ["gini", "entropy"]', 'choices = "gini"', ["[space.criterion] choices"]),
        ('loader = "load_iris"', "loader = 3", ["[data] loader", "string"]),
    ],
)
def test_wrong_types_are_named(tmp_path: Path, old: str, new: str, needles: list[str]) -> None:
    assert old in TINY
    message = spec_error(tmp_path, TINY.replace(old, new, 1))
    for needle in needles:
        assert needle in message, message


def test_bad_bounds_carry_the_space_message(tmp_path: Path) -> None:
    message = spec_error(tmp_path, TINY.replace("high = 6", "high = 0"))
    assert "[space.max_depth]" in message
    assert "low < high" in message


def test_bad_dimension_type_suggests(tmp_path: Path) -> None:
    message = spec_error(tmp_path, TINY.replace('type = "int"', 'type = "integer"'))
    assert "[space.max_depth]" in message
    assert "'float', 'int' or 'categorical'" in message
    message = spec_error(tmp_path, TINY.replace('type = "int"\n', ""))
    assert "it has no type" in message


def test_float_bounds_for_int_dimension(tmp_path: Path) -> None:
    message = spec_error(tmp_path, TINY.replace("low = 1\n", "low = 1.5\n"))
    assert "[space.max_depth]" in message
    assert "integers" in message


def test_condition_on_unknown_dimension(tmp_path: Path) -> None:
    text = TINY.replace("high = 6", 'high = 6\nwhen = { splitter = "best" }')
    message = spec_error(tmp_path, text)
    assert "unknown dimension 'splitter'" in message


def test_derived_needs_known_dimensions(tmp_path: Path) -> None:
    text = TINY + '\n[derived.x]\ntype = "repeat"\nvalue = "max_dept"\ntimes = "max_depth"\n'
    message = spec_error(tmp_path, text)
    assert "[derived.x] value = 'max_dept'" in message
    assert "Did you mean 'max_depth'?" in message


def test_no_space(tmp_path: Path) -> None:
    text = TINY.split("[space.max_depth]")[0] + "[cv]\nfolds = 3\n[run]\nn_trials = 2\n"
    assert "at least one [space.NAME]" in spec_error(tmp_path, text)


def test_direction(tmp_path: Path) -> None:
    ok = load_spec(write(tmp_path, TINY.replace("seed = 0", 'direction = "maximize"')))
    assert ok.name == "tiny"
    message = spec_error(tmp_path, TINY.replace("seed = 0", 'direction = "minimize"'))
    assert "not supported" in message
    assert "neg_mean_squared_error" in message


def test_budget_is_required_except_for_grid(tmp_path: Path) -> None:
    text = TINY.replace("n_trials = 4", "")
    assert "needs a budget" in spec_error(tmp_path, text)
    spec = load_spec(write(tmp_path, text.replace("seed = 0", 'sampler = "grid"')))
    assert spec.n_trials is None and spec.timeout is None


def test_fixed_and_tuned_at_once(tmp_path: Path) -> None:
    text = TINY.replace("{ random_state = 0 }", "{ random_state = 0, max_depth = 3 }")
    message = spec_error(tmp_path, text)
    assert "'max_depth' is both fixed" in message


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, TINY + "\n[run\n")
    with pytest.raises(SpecError, match=r"not valid TOML.*line"):
        load_spec(path)
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "absent.toml")
    with pytest.raises(SpecError, match="is a directory"):
        load_spec(tmp_path)


@pytest.mark.parametrize(
    ("old", "new", "needles"),
    [
        (
            'loader = "load_iris"',
            'loader = "load_irs"',
            ["'load_irs'", "Did you mean 'load_iris'?"],
        ),
        ('loader = "load_iris"', 'loader = "fetch_openml"', ["download"]),
        ('loader = "load_iris"', "", ["exactly one of loader"]),
        ('loader = "load_iris"', 'loader = "load_iris"\ncsv = "x.csv"', ["exactly one"]),
        ('loader = "load_iris"', 'loader = "load_iris"\ntarget = "y"', ["CSV files only"]),
        ("folds = 3", 'folds = 3\ngroups = "g"', ["needs a CSV"]),
        ('scoring = "accuracy"', 'scoring = "accuracy"\nmetric = "f1"', ["metric 'f1'"]),
    ],
)
def test_data_and_cv_structure(tmp_path: Path, old: str, new: str, needles: list[str]) -> None:
    message = spec_error(tmp_path, TINY.replace(old, new, 1))
    for needle in needles:
        assert needle in message, message


def test_missing_tables(tmp_path: Path) -> None:
    no_data = TINY.replace('[data]\nloader = "load_iris"\n', "")
    assert "[data] table is missing" in spec_error(tmp_path, no_data)
    not_a_table = "data = 3\n" + no_data
    assert "'data' must be a table" in spec_error(tmp_path, not_a_table)
    no_estimator = TINY.replace("[estimator]\n", "[estimatorx]\n")
    assert "unknown table 'estimatorx'" in spec_error(tmp_path, no_estimator)


# -- preparing: estimator, data, scorers, folds --------------------------------------------
def test_prepare_tiny(tmp_path: Path) -> None:
    prepared = load_spec(write(tmp_path, TINY)).prepare()
    assert prepared.X.shape == (150, 4)
    assert prepared.classifier
    assert prepared.metric == "accuracy"
    assert len(prepared.splits) == 3
    assert type(prepared.estimator).__name__ == "DecisionTreeClassifier"
    assert prepared.estimator.random_state == 0


@pytest.mark.parametrize(
    ("path", "needles"),
    [
        ("sklearn.tre.DecisionTreeClassifier", ["cannot be imported", "sklearn.tre"]),
        ("sklearn.tree.DecisionTreeClassifer", ["has no attribute", "'DecisionTreeClassifier'"]),
        ("nosuchmodule_xyz:Thing", ["No module named 'nosuchmodule_xyz'"]),
        ("DecisionTreeClassifier", ["not an import path"]),
        ("math:pi", ["neither a class nor a function"]),
        ("builtins:dict", ["not a scikit-learn estimator"]),
    ],
)
def test_unknown_estimator(tmp_path: Path, path: str, needles: list[str]) -> None:
    text = TINY.replace("sklearn.tree.DecisionTreeClassifier", path).replace(
        "params = { random_state = 0 }", ""
    )
    message = spec_error(tmp_path, text)
    assert path in message
    for needle in needles:
        assert needle in message, message


def test_module_colon_form_and_factory_function(tmp_path: Path) -> None:
    (tmp_path / "factories_spec_test.py").write_text(
        textwrap.dedent(
            """
            from sklearn.pipeline import Pipeline
            from sklearn.preprocessing import StandardScaler
            from sklearn.svm import SVC

            def scaled_svc(**params):
                return Pipeline([("scale", StandardScaler()), ("clf", SVC(**params))])
            """
        )
    )
    text = """
    [data]
    loader = "load_wine"
    [estimator]
    class = "factories_spec_test:scaled_svc"
    params = { kernel = "rbf" }
    [space.clf__C]
    type = "float"
    low = 0.1
    high = 10.0
    log = true
    [run]
    n_trials = 2
    """
    prepared = load_spec(write(tmp_path, text)).prepare()
    assert type(prepared.estimator).__name__ == "Pipeline"
    assert prepared.estimator.get_params()["clf__kernel"] == "rbf"


def test_unknown_fixed_param_and_tuned_param(tmp_path: Path) -> None:
    message = spec_error(tmp_path, TINY.replace("random_state = 0", "random_stat = 0"))
    assert "[estimator] params has 'random_stat'" in message
    assert "Did you mean 'random_state'?" in message
    message = spec_error(tmp_path, TINY.replace("[space.max_depth]", "[space.max_dept]"))
    assert "[space.max_dept]" in message
    assert "Did you mean 'max_depth'?" in message


def test_invalid_values_are_caught_before_training(tmp_path: Path) -> None:
    message = spec_error(tmp_path, TINY.replace("random_state = 0", 'splitter = "bestest"'))
    assert "[estimator] params" in message and "'splitter'" in message
    message = spec_error(tmp_path, TINY.replace('"entropy"]', '"entropyy"]'))
    assert "invalid estimator" in message and "entropyy" in message


def test_unknown_scorer(tmp_path: Path) -> None:
    message = spec_error(tmp_path, TINY.replace('"accuracy"', '"acuracy"'))
    assert "'acuracy' is not a scikit-learn scorer" in message
    assert "Did you mean 'accuracy'?" in message


def test_too_many_folds(tmp_path: Path) -> None:
    message = spec_error(tmp_path, TINY.replace("folds = 3", "folds = 200"))
    assert "[cv]" in message


def test_csv_with_groups(tmp_path: Path) -> None:
    with_csv(tmp_path)
    prepared = load_spec(write(tmp_path, CSV_SPEC)).prepare()
    assert prepared.X.shape == (8, 2)
    assert prepared.X.dtype == float
    assert list(prepared.y[:2]) == ["yes", "no"]
    assert prepared.groups is not None
    for train, test in prepared.splits:  # no site on both sides
        assert not set(prepared.groups[train]) & set(prepared.groups[test])


def test_csv_features_and_numeric_target(tmp_path: Path) -> None:
    with_csv(tmp_path, "x;y;t\n1;2;0\n2;3;1\n3;4;0\n4;5;1\n")
    text = CSV_SPEC.replace('target = "label"', 'target = "t"\nfeatures = ["y"]\ndelimiter = ";"')
    text = text.replace('groups = "site"', "")
    prepared = load_spec(write(tmp_path, text)).prepare()
    assert prepared.X.shape == (4, 1)
    assert prepared.y.dtype.kind == "i"
    np.testing.assert_array_equal(prepared.X[:, 0], [2, 3, 4, 5])


@pytest.mark.parametrize(
    ("csv_text", "change", "needles"),
    [
        (None, ('target = "label"', 'target = "lable"'), ["'lable'", "Did you mean 'label'?"]),
        (None, ('groups = "site"', 'groups = "sites"'), ["[cv] groups", "'sites'"]),
        (None, ('csv = "data/table.csv"', 'csv = "data/other.csv"'), ["does not exist"]),
        ("a,label\nx,1\ny,0\n", ("", ""), ["non-numeric value 'x'", "line 2"]),
        ("a,label\n1,1\n2\n", ("", ""), ["row 3", "1 fields"]),
        ("a,label\n", ("", ""), ["at least one data row"]),
    ],
)
def test_csv_errors(
    tmp_path: Path, csv_text: str | None, change: tuple[str, str], needles: list[str]
) -> None:
    with_csv(tmp_path, csv_text or CSV_TEXT)
    text = CSV_SPEC if csv_text is None else CSV_SPEC.replace('groups = "site"', "")
    message = spec_error(tmp_path, text.replace(*change))
    for needle in needles:
        assert needle in message, message


def test_shuffled_folds_follow_the_seed(tmp_path: Path) -> None:
    text = TINY.replace("folds = 3", "folds = 3\nshuffle = true")
    a = load_spec(write(tmp_path, text)).prepare().splits
    b = load_spec(write(tmp_path, text)).prepare().splits
    c = load_spec(write(tmp_path, text.replace("seed = 0", "seed = 1"))).prepare().splits
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c, strict=True))
    unshuffled = load_spec(write(tmp_path, TINY)).prepare().splits
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, unshuffled, strict=True))


EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_specs_are_valid(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem
    assert spec.storage == f"sqlite:///{path.with_suffix('.db')}"
    prepared = spec.prepare()
    # method = "evidence" fits once on all the data: no folds
    assert len(prepared.splits) == (spec.cv.folds if spec.method == "cv" else 0)


def test_digits_example_is_the_main_job() -> None:
    spec = load_spec(Path(__file__).resolve().parents[1] / "examples" / "digits_mlp.toml")
    assert spec.estimator.path == "sklearn.neural_network.MLPClassifier"
    assert spec.data.loader == "load_digits"
    assert set(spec.space) == {"learning_rate_init", "batch_size", "alpha", "n_layers", "width"}
    assert isinstance(spec.space.derived["hidden_layer_sizes"], Repeat)
    assert spec.space["learning_rate_init"].log and spec.space["alpha"].log
    assert spec.space["batch_size"] == Int(16, 256, log=True)
    assert (spec.cv.folds, spec.cv.scoring, spec.n_jobs) == (5, "accuracy", 2)


# -- the [scheduler] table -----------------------------------------------------------------
def test_scheduler_parameters_from_the_spec(tmp_path: Path) -> None:
    from twiddle import FoldRacing, MedianStopping, SuccessiveHalving

    racing = TINY.replace("n_trials = 4", 'n_trials = 4\nscheduler = "racing"')
    spec = load_spec(write(tmp_path, racing + '[scheduler]\nalpha = 0.2\nlevels = "bonferroni"\n'))
    made = spec.make_scheduler()
    assert isinstance(made, FoldRacing)
    assert (made.alpha, made.min_folds, made.levels) == (0.2, 1, "bonferroni")
    # without the table: the scheduler's defaults; without a scheduler: None
    assert repr(load_spec(write(tmp_path, racing)).make_scheduler()) == repr(FoldRacing())
    assert load_spec(write(tmp_path, TINY)).make_scheduler() is None
    halving = TINY.replace("n_trials = 4", 'n_trials = 4\nscheduler = "halving"')
    made = load_spec(
        write(tmp_path, halving + "[scheduler]\nmin_resource = 2\nreduction_factor = 2\n")
    ).make_scheduler()
    assert isinstance(made, SuccessiveHalving)
    assert (made.min_resource, made.reduction_factor) == (2, 2)
    median = TINY.replace("n_trials = 4", 'n_trials = 4\nscheduler = "median"')
    made = load_spec(
        write(tmp_path, median + "[scheduler]\nn_startup_trials = 3\n")
    ).make_scheduler()
    assert isinstance(made, MedianStopping) and made.n_startup_trials == 3


def test_the_spec_knows_every_named_scheduler() -> None:
    from twiddle._schedulers import SCHEDULERS_BY_NAME
    from twiddle._spec import SCHEDULER_KEYS

    assert set(SCHEDULER_KEYS) == set(SCHEDULERS_BY_NAME)
    for name, keys in SCHEDULER_KEYS.items():  # every key is a parameter of that class
        params = inspect.signature(SCHEDULERS_BY_NAME[name]).parameters
        assert set(keys) <= set(params), name


def test_scheduler_table_errors(tmp_path: Path) -> None:
    racing = TINY.replace("n_trials = 4", 'n_trials = 4\nscheduler = "racing"')
    msg = spec_error(tmp_path, racing + "[scheduler]\nalpa = 0.1\n")
    assert "[scheduler]" in msg and "'alpa'" in msg and "Did you mean 'alpha'" in msg
    assert "min_folds" in msg  # the allowed keys are listed
    msg = spec_error(tmp_path, racing + "[scheduler]\nalpha = 2\n")
    assert "in [scheduler]" in msg and "alpha" in msg and "(0, 1)" in msg
    # a parameter of another scheduler
    median = TINY.replace("n_trials = 4", 'n_trials = 4\nscheduler = "median"')
    msg = spec_error(tmp_path, median + "[scheduler]\nalpha = 0.1\n")
    assert "unknown key 'alpha'" in msg and "n_startup_trials" in msg
    # halving's maximum resource is the number of folds, not a parameter
    halving = TINY.replace("n_trials = 4", 'n_trials = 4\nscheduler = "halving"')
    assert "max_resource" in spec_error(tmp_path, halving + "[scheduler]\nmax_resource = 3\n")
    # the scheduler's name at the top level instead of in [run]
    msg = spec_error(tmp_path, 'scheduler = "racing"\n' + TINY)
    assert "top level" in msg and "[run]" in msg
    # parameters for no scheduler
    msg = spec_error(tmp_path, TINY + "[scheduler]\nalpha = 0.1\n")
    assert "[run] names none" in msg and "scheduler = 'racing'" in msg
