"""Search-space dimensions: parsing, validation messages, JSON form and sampling with Optuna."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import optuna
import pytest

from optim_core.spaces import (
    Categorical,
    Domain,
    Fixed,
    Float,
    Int,
    OneMinus,
    SpaceError,
    apply_overrides,
    dimension_from_json,
    sample_space,
    space_from_json,
    space_to_json,
    validate_space,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

# The kinds of domains the registry uses, declared here so that these tests need spaces.py only.
DOMAINS = {
    "lr": Domain("float", 0.0),
    "momentum": Domain("float", 0.0, 1.0, high_open=True),
    "alpha": Domain("float", 0.0, 1.0),
    "eps": Domain("float", 0.0, low_open=True),
    "batch_size": Domain("int", 1),
    "amsgrad": Domain("bool"),
    "weight_decay": Domain("float", 0.0),
}
VALID_KEYS = "['alpha', 'amsgrad', 'batch_size', 'eps', 'lr', 'momentum', 'weight_decay']"

DEFAULT = {
    "lr": Float(1e-4, 1.0, log=True),
    "momentum": OneMinus(0.5, 0.999),
    "batch_size": Categorical((16, 32, 64, 128, 256)),
}


# --------------------------------------------------------------------------------------------------
# Domain


@pytest.mark.parametrize(
    ("domain", "value", "accepted"),
    [
        (DOMAINS["lr"], 0.0, True),
        (DOMAINS["lr"], 0, True),
        (DOMAINS["lr"], 10.0, True),
        (DOMAINS["lr"], -1e-9, False),
        (DOMAINS["lr"], True, False),
        (DOMAINS["lr"], "0.1", False),
        (DOMAINS["lr"], None, False),
        (DOMAINS["lr"], math.inf, False),
        (DOMAINS["lr"], math.nan, False),
        (DOMAINS["eps"], 0.0, False),
        (DOMAINS["eps"], 1e-12, True),
        (DOMAINS["momentum"], 0.0, True),
        (DOMAINS["momentum"], 0.999999, True),
        (DOMAINS["momentum"], 1.0, False),
        (DOMAINS["momentum"], 1, False),
        (DOMAINS["momentum"], -0.1, False),
        (DOMAINS["alpha"], 1.0, True),
        (DOMAINS["alpha"], 1.01, False),
        (DOMAINS["batch_size"], 1, True),
        (DOMAINS["batch_size"], 256, True),
        (DOMAINS["batch_size"], 0, False),
        (DOMAINS["batch_size"], -16, False),
        (DOMAINS["batch_size"], 32.5, False),
        (DOMAINS["batch_size"], 32.0, False),
        (DOMAINS["batch_size"], True, False),
        (DOMAINS["amsgrad"], True, True),
        (DOMAINS["amsgrad"], False, True),
        (DOMAINS["amsgrad"], 1, False),
        (DOMAINS["amsgrad"], "true", False),
    ],
)
def test_domain_accepts(domain, value, accepted):
    assert domain.accepts(value) is accepted


@pytest.mark.parametrize(
    ("domain", "text"),
    [
        (DOMAINS["lr"], "a number in [0, inf]"),
        (DOMAINS["eps"], "a number in (0, inf]"),
        (DOMAINS["momentum"], "a number in [0, 1)"),
        (DOMAINS["alpha"], "a number in [0, 1]"),
        (DOMAINS["batch_size"], "an integer in [1, inf]"),
        (DOMAINS["amsgrad"], "true or false"),
        (Domain("float"), "a number in [-inf, inf]"),
    ],
)
def test_domain_describe(domain, text):
    assert domain.describe() == text


# --------------------------------------------------------------------------------------------------
# Parsing the JSON form of one dimension (with a default to inherit from)


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        # A range replaces the default; "log" omitted keeps the default's scale.
        ("lr", {"low": 1e-3, "high": 0.1}, Float(1e-3, 0.1, log=True)),
        ("lr", {"low": 1e-3, "high": 0.1, "log": False}, Float(1e-3, 0.1, log=False)),
        ("lr", {"low": 1e-3, "high": 0.1, "log": True}, Float(1e-3, 0.1, log=True)),
        ("lr", 0.01, Fixed(0.01)),
        ("lr", {"choices": [0.1, 0.01]}, Categorical((0.1, 0.01))),
        ("lr", {"low": 1e-3, "high": 0.5, "one_minus": True}, OneMinus(1e-3, 0.5, log=True)),
        (
            "lr",
            {"low": 0.1, "high": 0.5, "one_minus": True, "log": False},
            OneMinus(0.1, 0.5, False),
        ),
        # A OneMinus default stays OneMinus unless told otherwise.
        ("momentum", {"low": 0.8, "high": 0.99}, OneMinus(0.8, 0.99, log=True)),
        ("momentum", {"low": 0.8, "high": 0.99, "log": False}, OneMinus(0.8, 0.99, log=False)),
        ("momentum", {"low": 0.8, "high": 0.99, "one_minus": True}, OneMinus(0.8, 0.99)),
        (
            "momentum",
            {"low": 0.8, "high": 0.99, "one_minus": False},
            Float(0.8, 0.99, log=True),
        ),
        (
            "momentum",
            {"low": 0.8, "high": 0.99, "one_minus": False, "log": False},
            Float(0.8, 0.99, log=False),
        ),
        ("momentum", 0.9, Fixed(0.9)),
        ("momentum", {"choices": [0.9, 0.99]}, Categorical((0.9, 0.99))),
        # Int or Float is decided by the domain, not by how the numbers are written.
        ("batch_size", {"low": 16, "high": 128}, Int(16, 128, log=False)),
        ("batch_size", {"low": 16, "high": 128, "log": True}, Int(16, 128, log=True)),
        ("batch_size", 64, Fixed(64)),
        ("batch_size", {"choices": [8, 512]}, Categorical((8, 512))),
        ("lr", {"low": 1, "high": 10}, Float(1, 10, log=True)),
        # Keys the default space leaves out: no default to inherit from.
        ("eps", {"low": 1e-10, "high": 1e-6}, Float(1e-10, 1e-6, log=False)),
        ("eps", {"low": 1e-10, "high": 1e-6, "log": True}, Float(1e-10, 1e-6, log=True)),
        ("eps", 1e-7, Fixed(1e-7)),
        ("amsgrad", True, Fixed(True)),
        ("amsgrad", {"choices": [True, False]}, Categorical((True, False))),
        ("alpha", {"low": 0.5, "high": 0.99}, Float(0.5, 0.99)),
    ],
)
def test_override_parsed(key, raw, expected):
    dim = dimension_from_json(key, raw, DOMAINS[key], DEFAULT.get(key))
    assert dim == expected
    assert type(dim) is type(expected)
    space = apply_overrides(DEFAULT, {key: raw}, DOMAINS)
    assert space[key] == expected
    assert type(space[key]) is type(expected)
    # The other keys keep their default dimension.
    assert {k: v for k, v in space.items() if k != key} == {
        k: v for k, v in DEFAULT.items() if k != key
    }


def test_overrides_do_not_touch_the_default():
    before = dict(DEFAULT)
    space = apply_overrides(DEFAULT, {"lr": 0.1, "eps": 1e-8}, DOMAINS)
    assert space == {**before, "lr": Fixed(0.1), "eps": Fixed(1e-8)}
    assert dict(DEFAULT) == before
    assert apply_overrides(DEFAULT, {}, DOMAINS) == DEFAULT


def test_dimensions_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT["lr"].low = 0.5  # type: ignore[misc]


# --------------------------------------------------------------------------------------------------
# Bad spaces are refused; the message names the key and says what is wrong


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # low >= high
        ({"lr": {"low": 1.0, "high": 0.1}}, "lr: 'low' (1) must be smaller than 'high' (0.1)"),
        ({"lr": {"low": 0.1, "high": 0.1}}, "lr: 'low' (0.1) must be smaller than 'high' (0.1)"),
        (
            {"batch_size": {"low": 64, "high": 16}},
            "batch_size: 'low' (64) must be smaller than 'high' (16)",
        ),
        (
            {"momentum": {"low": 0.99, "high": 0.9}},
            "momentum: 'low' (0.99) must be smaller than 'high' (0.9)",
        ),
        # log with low <= 0
        ({"lr": {"low": 0, "high": 1, "log": True}}, "lr: a log scale needs 'low' > 0, got 0"),
        ({"lr": {"low": 0.0, "high": 1}}, "lr: a log scale needs 'low' > 0, got 0"),  # inherited
        (
            {"lr": {"low": -1, "high": 1, "log": True}},
            "lr: a log scale needs 'low' > 0, got -1",
        ),
        # choices
        ({"batch_size": {"choices": []}}, "batch_size: 'choices' must list at least one value"),
        (
            {"batch_size": {"choices": [16, 32, 16]}},
            "batch_size: 'choices' has duplicates: [16, 32, 16]",
        ),
        (
            {"batch_size": {"choices": 16}},
            "batch_size: 'choices' must be a list of numbers, strings or booleans",
        ),
        (
            {"batch_size": {"choices": [[16]]}},
            "batch_size: 'choices' must be a list of numbers, strings or booleans",
        ),
        (
            {"batch_size": {"choices": [16], "log": True}},
            "batch_size: 'choices' cannot be combined with ['log']",
        ),
        (
            {"batch_size": {"choices": [16, 32.5]}},
            "batch_size choice: 32.5 is not accepted; it must be an integer in [1, inf]",
        ),
        (
            {"batch_size": {"choices": [16.0, 32.0]}},
            "batch_size choice: 16.0 is not accepted; it must be an integer in [1, inf]",
        ),
        # unknown parameter name
        (
            {"learning_rate": 0.1},
            f"learning_rate: not a hyperparameter of this optimizer; valid keys: {VALID_KEYS}",
        ),
        # values the optimizer would refuse
        ({"lr": -0.1}, "lr: -0.1 is not accepted; it must be a number in [0, inf]"),
        ({"lr": {"low": -1, "high": 1, "log": False}}, "lr low: -1 is not accepted"),
        ({"lr": {"low": 1e-3, "high": math.inf}}, "lr high: inf is not accepted"),
        ({"lr": {"low": math.nan, "high": 1}}, "lr low: nan is not accepted"),
        ({"lr": True}, "lr: True is not accepted; it must be a number in [0, inf]"),
        ({"lr": "0.1"}, "lr: '0.1' is not accepted; it must be a number in [0, inf]"),
        ({"lr": {"choices": [0.1, False]}}, "lr choice: False is not accepted"),
        ({"momentum": 1.0}, "momentum: 1.0 is not accepted; it must be a number in [0, 1)"),
        ({"momentum": 1}, "momentum: 1 is not accepted; it must be a number in [0, 1)"),
        ({"momentum": {"low": 0.5, "high": 1.0}}, "momentum high: 1.0 is not accepted"),
        (
            {"momentum": {"low": 0.5, "high": 1.0, "one_minus": False}},
            "momentum high: 1.0 is not accepted",
        ),
        ({"momentum": {"low": -0.5, "high": 0.9}}, "momentum low: -0.5 is not accepted"),
        ({"alpha": {"low": 0.5, "high": 1.0, "one_minus": True}}, "alpha: 'one_minus' needs"),
        ({"eps": 0.0}, "eps: 0.0 is not accepted; it must be a number in (0, inf]"),
        ({"batch_size": 0}, "batch_size: 0 is not accepted; it must be an integer in [1, inf]"),
        ({"batch_size": 32.5}, "batch_size: 32.5 is not accepted; it must be an integer"),
        ({"batch_size": 32.0}, "batch_size: 32.0 is not accepted; it must be an integer"),
        ({"batch_size": True}, "batch_size: True is not accepted; it must be an integer"),
        ({"batch_size": {"low": 16.0, "high": 64}}, "batch_size: 'low' must be an integer"),
        ({"batch_size": {"low": 16, "high": 64.5}}, "batch_size: 'high' must be an integer"),
        ({"batch_size": {"low": 0, "high": 64}}, "batch_size low: 0 is not accepted"),
        (
            {"batch_size": {"low": 0.5, "high": 0.9, "one_minus": True}},
            "batch_size: takes an integer in [1, inf], not a float range",
        ),
        ({"amsgrad": 1}, "amsgrad: 1 is not accepted; it must be true or false"),
        ({"amsgrad": {"low": 0, "high": 1}}, "amsgrad: takes true or false, not a float range"),
        ({"amsgrad": {"choices": [True, 0]}}, "amsgrad choice: 0 is not accepted"),
        ({"lr": {"low": True, "high": 1}}, "lr: 'low' must be a number, got True"),
        ({"lr": {"low": "1e-4", "high": 1}}, "lr: 'low' must be a number, got '1e-4'"),
        ({"lr": {"low": 1e-4, "high": None}}, "lr: 'high' must be a number, got None"),
        # unknown fields, missing fields, wrong JSON types
        (
            {"lr": {"low": 1e-4, "high": 1, "step": 0.1}},
            "lr: unknown field(s) ['step']; use 'low', 'high', 'log', 'one_minus' or 'choices'",
        ),
        ({"lr": {"min": 1e-4, "max": 1}}, "lr: unknown field(s) ['max', 'min']"),
        ({"lr": {"low": 1e-4}}, "lr: a range needs both 'low' and 'high'"),
        ({"lr": {"high": 1}}, "lr: a range needs both 'low' and 'high'"),
        ({"lr": {}}, "lr: a range needs both 'low' and 'high'"),
        ({"lr": [1e-4, 1]}, "lr: expected a value, {'low', 'high', 'log'} or {'choices': [...]}"),
        ({"lr": [1e-4, 1]}, "got list"),
        ({"lr": None}, "lr: expected a value"),
        ({"lr": {"low": 1e-4, "high": 1, "log": "yes"}}, "lr: 'log' must be true or false"),
        ({"lr": {"low": 1e-4, "high": 1, "log": 1}}, "lr: 'log' must be true or false, got 1"),
        (
            {"momentum": {"low": 0.5, "high": 0.99, "one_minus": "false"}},
            "momentum: 'one_minus' must be true or false, got 'false'",
        ),
    ],
)
def test_bad_space_refused(overrides, message):
    with pytest.raises(SpaceError, match=re.escape(message)):
        apply_overrides(DEFAULT, overrides, DOMAINS)


def test_space_error_is_a_value_error():
    assert issubclass(SpaceError, ValueError)


@pytest.mark.parametrize(
    ("dim", "key", "message"),
    [
        (Float(1e-4, 1.0), "batch_size", "batch_size: takes an integer in [1, inf], not a float"),
        (Int(1, 10), "lr", "lr: takes a number in [0, inf], not an integer range"),
        (OneMinus(0.5, 0.9), "amsgrad", "amsgrad: takes true or false, not a float range"),
        (OneMinus(0.9, 0.5), "momentum", "momentum: 'low' (0.9) must be smaller than 'high'"),
        (OneMinus(0.5, 1.0), "alpha", "alpha: 'one_minus' needs 'high' < 1, got 1"),
        (Categorical(()), "lr", "lr: 'choices' must list at least one value"),
        (Fixed(-1), "lr", "lr: -1 is not accepted"),
    ],
)
def test_validate_refuses_dimension(dim, key, message):
    with pytest.raises(SpaceError, match=re.escape(message)):
        validate_space({key: dim}, DOMAINS)


def test_validate_space_unknown_key_lists_valid_keys():
    with pytest.raises(SpaceError) as excinfo:
        validate_space({"beta3": Fixed(0.5)}, DOMAINS)
    assert str(excinfo.value) == (
        f"beta3: not a hyperparameter of this optimizer; valid keys: {VALID_KEYS}"
    )


def test_validate_space_accepts_the_default():
    validate_space(DEFAULT, DOMAINS)


# --------------------------------------------------------------------------------------------------
# JSON form

EVERY_KIND = {
    "lr": Float(1e-5, 0.1, log=True),
    "eps": Float(1e-10, 1e-6),
    "momentum": OneMinus(0.5, 0.999),
    "alpha": OneMinus(0.1, 0.3, log=False),
    "batch_size": Int(8, 512, log=True),
    "amsgrad": Categorical((True, False)),
}


@pytest.mark.parametrize(
    ("dim", "expected"),
    [
        (Float(1e-5, 0.1, log=True), {"low": 1e-5, "high": 0.1, "log": True}),
        (Float(0.0, 1.0), {"low": 0.0, "high": 1.0, "log": False}),
        (Int(16, 256, log=True), {"low": 16, "high": 256, "log": True}),
        (Int(1, 4), {"low": 1, "high": 4, "log": False}),
        (Categorical((16, 32, 64)), {"choices": [16, 32, 64]}),
        (Fixed(0.9), 0.9),
        (Fixed(True), True),
        (OneMinus(0.5, 0.999), {"low": 0.5, "high": 0.999, "log": True, "one_minus": True}),
        (OneMinus(0.1, 0.3, log=False), {"low": 0.1, "high": 0.3, "log": False, "one_minus": True}),
    ],
)
def test_dimension_to_json(dim, expected):
    assert dim.to_json() == expected
    assert json.loads(json.dumps(dim.to_json())) == expected


@pytest.mark.parametrize(
    "space",
    [
        EVERY_KIND,
        DEFAULT,
        {"lr": Fixed(0.01), "batch_size": Fixed(32), "amsgrad": Fixed(False)},
        {"batch_size": Int(16, 64), "lr": Float(1, 10), "momentum": Float(0.5, 0.9)},
        {"batch_size": Categorical((32,)), "lr": Categorical((0.1, 0.01))},
        {},
    ],
)
def test_space_json_round_trip(space):
    raw = space_to_json(space)
    back = space_from_json(json.loads(json.dumps(raw)), DOMAINS)
    assert back == space
    assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in space.items()}


def test_space_from_json_validates():
    with pytest.raises(SpaceError, match=re.escape("batch_size: 0 is not accepted")):
        space_from_json({"lr": 0.1, "batch_size": 0}, DOMAINS)


# --------------------------------------------------------------------------------------------------
# Sampling with Optuna

SAMPLED = {
    "lr": Float(1e-5, 0.1, log=True),
    "eps": Float(1e-10, 1e-6),
    "momentum": OneMinus(0.5, 0.999),
    "alpha": OneMinus(0.1, 0.3, log=False),
    "batch_size": Int(8, 512, log=True),
    "amsgrad": Categorical((True, False)),
    "weight_decay": Fixed(0.01),
}

SAMPLERS = {
    "random": lambda: optuna.samplers.RandomSampler(seed=0),
    "tpe": lambda: optuna.samplers.TPESampler(seed=0),
}


def _edge_seeking(values, space):
    """An objective TPE minimizes by sampling as close to the bounds as it can."""
    total = 0.0
    for key, dim in space.items():
        if isinstance(dim, Float | Int | OneMinus):
            position = (values[key] - dim.low) / (dim.high - dim.low)
            total -= abs(position - 0.5)
    return total


def _assert_in_space(values, space):
    assert set(values) == set(space)
    for key, dim in space.items():
        value = values[key]
        if isinstance(dim, Fixed):
            assert value == dim.value and type(value) is type(dim.value), key
        elif isinstance(dim, Categorical):
            assert value in dim.choices, key
        elif isinstance(dim, Int):
            assert type(value) is int, key
            assert dim.low <= value <= dim.high, (key, value)
        else:
            assert isinstance(value, float), key
            assert dim.low <= value <= dim.high, (key, value)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_sampled_values_inside_bounds(sampler):
    space = SAMPLED
    study = optuna.create_study(sampler=SAMPLERS[sampler]())
    seen = []

    def objective(trial):
        values = sample_space(trial, space)
        _assert_in_space(values, space)
        seen.append(values)
        return _edge_seeking(values, space)

    study.optimize(objective, n_trials=200)
    assert len(seen) == 200
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # The sampler did search: values vary, and OneMinus crowds against 1 without reaching it.
    assert len({v["lr"] for v in seen}) > 100
    momentum = [v["momentum"] for v in seen]
    assert len(set(momentum)) > 100
    assert min(momentum) < 0.9 and max(momentum) > 0.99
    assert {v["amsgrad"] for v in seen} == {True, False}
    assert {v["weight_decay"] for v in seen} == {0.01}
    assert all("weight_decay" not in t.params for t in study.trials)


def test_optuna_params_and_distributions():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    values = sample_space(trial, SAMPLED)
    assert set(trial.params) == {
        "lr",
        "eps",
        "one_minus_momentum",
        "one_minus_alpha",
        "batch_size",
        "amsgrad",
    }
    assert values["weight_decay"] == 0.01
    dists = trial.distributions
    assert dists["lr"] == optuna.distributions.FloatDistribution(1e-5, 0.1, log=True)
    assert dists["eps"] == optuna.distributions.FloatDistribution(1e-10, 1e-6)
    assert dists["batch_size"] == optuna.distributions.IntDistribution(8, 512, log=True)
    momentum = dists["one_minus_momentum"]
    assert isinstance(momentum, optuna.distributions.FloatDistribution)
    assert momentum.log is True
    assert momentum.low == pytest.approx(1e-3)
    assert momentum.high == pytest.approx(0.5)
    alpha = dists["one_minus_alpha"]
    assert alpha.log is False
    assert (alpha.low, alpha.high) == (pytest.approx(0.7), pytest.approx(0.9))
    # The value handed to the optimizer is one minus what Optuna stored.
    assert values["momentum"] == pytest.approx(1.0 - trial.params["one_minus_momentum"])
    assert values["alpha"] == pytest.approx(1.0 - trial.params["one_minus_alpha"])
    assert values["lr"] == trial.params["lr"]


@pytest.mark.parametrize(
    ("dim", "distance"),
    [
        # Both ends of the distance range Optuna searches, given back exactly (an enqueued or
        # clipped sample lands there); 1 - (1 - x) is not x in floating point for most x.
        (OneMinus(0.1, 0.3, log=False), 1.0 - 0.1),
        (OneMinus(0.1, 0.3, log=False), 1.0 - 0.3),
        (OneMinus(0.1, 0.3), 1.0 - 0.1),
        (OneMinus(0.1, 0.3), 1.0 - 0.3),
        (OneMinus(0.7, 0.9), 1.0 - 0.7),
        (OneMinus(0.7, 0.9), 1.0 - 0.9),
        (OneMinus(0.5, 0.999), 1.0 - 0.999),
        (OneMinus(0.0, 0.3), 1.0),
    ],
)
def test_one_minus_bounds_are_inclusive_and_exact(dim, distance):
    study = optuna.create_study()
    study.enqueue_trial({"one_minus_momentum": distance})
    trial = study.ask()
    value = dim.sample(trial, "momentum")
    assert trial.params["one_minus_momentum"] == distance
    assert dim.low <= value <= dim.high
    assert value == pytest.approx(1.0 - distance)


def test_fixed_values_are_passed_through_unsampled():
    space = {"lr": Fixed(0.05), "batch_size": Fixed(64), "amsgrad": Fixed(False)}
    study = optuna.create_study()
    trial = study.ask()
    assert sample_space(trial, space) == {"lr": 0.05, "batch_size": 64, "amsgrad": False}
    assert trial.params == {}


def test_sample_space_keeps_key_order():
    study = optuna.create_study()
    values = sample_space(study.ask(), SAMPLED)
    assert list(values) == list(SAMPLED)
