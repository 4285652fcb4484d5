"""Search spaces: validation, sampling, unit-cube encoding, JSON, conditions, grids."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from twiddle import Categorical, Derived, Float, Int, InvalidSpaceError, Repeat, Space


def cond_space() -> Space:
    return Space(
        {
            "optimizer": Categorical(["sgd", "adam"]),
            "lr": Float(1e-4, 1e-1, log=True),
            "momentum": Float(0.0, 0.99, when={"optimizer": "sgd"}),
            "nesterov": Categorical([True, False], when={"optimizer": "sgd"}),
            "layers": Int(1, 4),
            "width": Int(8, 512, log=True),
        }
    )


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: Float(1.0, 1.0), "low < high"),
        (lambda: Float(2.0, 1.0), "low < high"),
        (lambda: Float(0.0, 1.0, log=True), "low > 0"),
        (lambda: Float(-1.0, 1.0, log=True), "low > 0"),
        (lambda: Float(0.0, math.inf), "finite"),
        (lambda: Float(0.0, 1.0, step=0.0), "step"),
        (lambda: Float(1e-3, 1.0, log=True, step=0.1), "log=True with a step"),
        (lambda: Int(3, 3), "low < high"),
        (lambda: Int(0, 10, log=True), "low >= 1"),
        (lambda: Int(1.5, 3), "integers"),  # type: ignore[arg-type]
        (lambda: Int(True, 3), "integers"),  # type: ignore[arg-type]
        (lambda: Int(1, 10, step=0), "step"),
        (lambda: Categorical([]), "at least one"),
        (lambda: Categorical("abc"), "list or tuple"),  # type: ignore[arg-type]
        (lambda: Categorical([1, 1]), "distinct"),
        (lambda: Categorical([object()]), "JSON-serialisable"),
    ],
)
def test_dimension_validation(make, needle):
    with pytest.raises(InvalidSpaceError, match=needle):
        make()


def test_invalid_space_error_is_value_error():
    with pytest.raises(ValueError):
        Float(1.0, 0.0)


def test_condition_on_unknown_dimension():
    with pytest.raises(InvalidSpaceError, match="unknown dimension 'optimiser'"):
        Space({"momentum": Float(0, 1, when={"optimiser": "sgd"})})


def test_condition_on_impossible_value():
    with pytest.raises(InvalidSpaceError, match="can never take"):
        Space({"opt": Categorical(["a", "b"]), "m": Float(0, 1, when={"opt": "c"})})


def test_condition_cycle():
    with pytest.raises(InvalidSpaceError, match="cycle"):
        Space(
            {
                "a": Categorical([0, 1], when={"b": 1}),
                "b": Categorical([0, 1], when={"a": 1}),
            }
        )


def test_empty_space():
    with pytest.raises(InvalidSpaceError, match="non-empty"):
        Space({})


def test_sample_types_and_bounds_on_every_path():
    space = cond_space()
    rng = np.random.default_rng(0)
    seen_sgd = seen_adam = False
    for _ in range(500):
        c = space.sample(rng)
        assert type(c["optimizer"]) is str
        assert type(c["lr"]) is float and 1e-4 <= c["lr"] <= 1e-1
        assert type(c["layers"]) is int and 1 <= c["layers"] <= 4
        assert type(c["width"]) is int and 8 <= c["width"] <= 512
        if c["optimizer"] == "sgd":
            seen_sgd = True
            assert 0.0 <= c["momentum"] <= 0.99
            assert type(c["nesterov"]) is bool
        else:
            seen_adam = True
            assert "momentum" not in c and "nesterov" not in c
        assert space.validate(c) == c
    assert seen_sgd and seen_adam


def test_log_float_is_log_uniform():
    # Under log-uniform sampling, log10(x) is uniform on [-4, -1]: a quarter of the draws
    # fall below 10**-3.25. Binomial standard error at n=4000 is about 0.007.
    d = Space({"lr": Float(1e-4, 1e-1, log=True)})
    rng = np.random.default_rng(1)
    xs = np.array([d.sample(rng)["lr"] for _ in range(4000)])
    assert abs(np.mean(xs < 10**-3.25) - 0.25) < 0.03


def test_int_uniform_over_values():
    d = Space({"k": Int(1, 4)})
    rng = np.random.default_rng(2)
    counts = np.bincount([d.sample(rng)["k"] for _ in range(4000)], minlength=5)[1:]
    assert np.all(np.abs(counts / 4000 - 0.25) < 0.03)


def test_log_int_covers_bounds_and_prefers_small():
    d = Space({"w": Int(1, 1000, log=True)})
    rng = np.random.default_rng(3)
    xs = [d.sample(rng)["w"] for _ in range(3000)]
    assert min(xs) == 1
    assert max(xs) >= 900
    assert np.median(xs) < 60  # log-uniform median is about sqrt(1000) ~ 32


def test_encode_decode_round_trip_exact():
    space = cond_space()
    rng = np.random.default_rng(4)
    configs = [space.sample(rng) for _ in range(200)]
    u = space.encode(configs)
    assert u.shape == (200, len(space))
    for c, row in zip(configs, u, strict=True):
        back = space.decode(np.nan_to_num(row, nan=0.5))
        assert back == c
        for k, v in back.items():
            assert type(v) is type(c[k])


def test_encode_marks_inactive_as_nan():
    space = cond_space()
    u = space.encode({"optimizer": "adam", "lr": 0.01, "layers": 2, "width": 64})
    cols = list(space.names)
    assert np.isnan(u[0, cols.index("momentum")])
    assert np.isnan(u[0, cols.index("nesterov")])
    assert np.all(np.isfinite(np.delete(u[0], [cols.index("momentum"), cols.index("nesterov")])))


def test_encode_known_values():
    space = Space(
        {
            "x": Float(0.0, 10.0),
            "lr": Float(1e-4, 1e0, log=True),
            "k": Int(0, 3),
            "c": Categorical(["a", "b", "c", "d", "e"]),
        }
    )
    u = space.encode({"x": 2.5, "lr": 1e-2, "k": 2, "c": "b"})[0]
    np.testing.assert_allclose(u, [0.25, 0.5, (2 + 0.5) / 4, (1 + 0.5) / 5])


def test_decode_clips_and_int_step():
    space = Space({"k": Int(0, 100, step=10), "f": Float(0.0, 1.0, step=0.25)})
    assert space.decode([0.0, 0.0]) == {"k": 0, "f": 0.0}
    assert space.decode([1.0, 1.0]) == {"k": 100, "f": 1.0}
    assert space.decode([0.5, 0.5]) == {"k": 50, "f": 0.5}
    assert space["k"].grid() == list(range(0, 101, 10))
    assert space["f"].grid() == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_categorical_keeps_type():
    d = Categorical([1, 1.0, True, None, "1", [1, 2]])
    assert d.cardinality == 6
    for i, c in enumerate(d.choices):
        assert d.decode((i + 0.5) / 6) is c
        assert d.cast(json.loads(json.dumps(c))) == c
    assert d.index(True) == 2
    assert d.index(1.0) == 1
    assert d.index(1) == 0


def test_tuple_choice_survives_json():
    d = Categorical([(64,), (64, 64)])
    stored = json.loads(json.dumps(d.choices[1]))
    assert stored == [64, 64]
    assert d.cast(stored) == (64, 64)


def test_json_round_trip():
    space = Space(
        {
            "n_layers": Int(1, 3),
            "width": Int(16, 256, log=True),
            "alpha": Float(1e-6, 1e-1, log=True),
            "solver": Categorical(["adam", "sgd"]),
            "momentum": Float(0.0, 0.99, step=0.01, when={"solver": ["sgd"]}),
        },
        derived={"hidden_layer_sizes": Repeat("width", "n_layers")},
    )
    text = json.dumps(space.to_json())
    again = Space.from_json(json.loads(text))
    assert again == space
    assert again.to_json() == space.to_json()
    assert list(again.names) == list(space.names)


def test_from_json_errors():
    with pytest.raises(InvalidSpaceError, match="Unknown dimension type"):
        Space.from_json({"dims": {"x": {"type": "real", "low": 0, "high": 1}}})
    with pytest.raises(InvalidSpaceError, match="needs 'high'"):
        Space.from_json({"dims": {"x": {"type": "float", "low": 0}}})
    with pytest.raises(InvalidSpaceError, match="Unknown key"):
        Space.from_json({"dims": {"x": {"type": "int", "low": 0, "high": 2, "lgo": True}}})


def test_validate_errors():
    space = cond_space()
    ok = {"optimizer": "adam", "lr": 0.01, "layers": 2, "width": 64}
    assert space.validate(ok) == ok
    with pytest.raises(InvalidSpaceError, match="Unknown hyperparameter"):
        space.validate({**ok, "colour": 1})
    with pytest.raises(InvalidSpaceError, match="inactive"):
        space.validate({**ok, "momentum": 0.5})
    with pytest.raises(InvalidSpaceError, match="missing"):
        space.validate({"optimizer": "sgd", "lr": 0.01, "layers": 2, "width": 64})
    with pytest.raises(InvalidSpaceError, match="outside"):
        space.validate({**ok, "layers": 7})


def test_validate_casts_numpy_ints():
    space = Space({"k": Int(1, 5)})
    out = space.validate({"k": np.int64(3)})
    assert out == {"k": 3} and type(out["k"]) is int


def test_grid_with_conditions_counts():
    space = Space(
        {
            "opt": Categorical(["sgd", "adam"]),
            "momentum": Float(0.0, 0.9, step=0.45, when={"opt": "sgd"}),
            "k": Int(1, 3),
        }
    )
    grid = space.grid()
    # sgd: 3 momenta x 3 k = 9; adam: 3 k = 3
    assert len(grid) == 12
    assert len({json.dumps(c, sort_keys=True) for c in grid}) == 12
    assert all(("momentum" in c) == (c["opt"] == "sgd") for c in grid)
    assert space.cardinality == 12


def test_grid_of_continuous_space_is_an_error():
    with pytest.raises(InvalidSpaceError, match="step="):
        Space({"x": Float(0, 1)}).grid()
    assert math.isinf(Space({"x": Float(0, 1)}).cardinality)


def test_derived_parameters():
    space = Space(
        {"n_layers": Int(1, 3), "width": Int(8, 64), "alpha": Float(1e-5, 1e-1, log=True)},
        derived={
            "hidden_layer_sizes": Repeat("width", "n_layers"),
            "tag": Derived(lambda alpha, width: f"{width}@{alpha:.0e}"),
        },
    )
    params = space.to_estimator_params({"n_layers": 3, "width": 32, "alpha": 1e-3})
    assert params == {"hidden_layer_sizes": (32, 32, 32), "tag": "32@1e-03"}


def test_derived_unknown_input():
    with pytest.raises(InvalidSpaceError, match="unknown dimension"):
        Space({"a": Int(1, 3)}, derived={"h": Repeat("width", "a")})
