"""The optimizer registry: names, default spaces (DESIGN.md §3), overrides, kwargs and building."""

from __future__ import annotations

import ast
import json
import re

import optuna
import pytest
import torch

import optim_core
from optim_core.registry import (
    DOMAINS,
    OPTIMIZERS,
    TRAINING_KEYS,
    get_optimizer,
    resolve_space,
)
from optim_core.spaces import (
    Categorical,
    Fixed,
    Float,
    Int,
    OneMinus,
    SpaceError,
    sample_space,
    space_from_json,
    space_to_json,
    validate_space,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

NAMES = ["gd", "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]

CLASSES = {
    "gd": "SGD",
    "sgd": "SGD",
    "momentum": "SGD",
    "nesterov": "SGD",
    "adagrad": "AdaGrad",
    "rmsprop": "RMSProp",
    "adam": "Adam",
    "adamw": "AdamW",
}


def one_minus(distance_low: float, distance_high: float) -> OneMinus:
    """The table's "1-x in [distance_low, distance_high] log" as bounds on x itself."""
    return OneMinus(1.0 - distance_high, 1.0 - distance_low, log=True)


BATCH = Categorical((16, 32, 64, 128, 256))

# DESIGN.md §3, column "default space", written out independently of registry.py.
DESIGN_SPACES = {
    "gd": {"lr": Float(1e-3, 10.0, log=True)},
    "sgd": {"lr": Float(1e-4, 1.0, log=True), "batch_size": BATCH},
    "momentum": {
        "lr": Float(1e-4, 1.0, log=True),
        "momentum": one_minus(1e-3, 0.5),
        "batch_size": BATCH,
    },
    "nesterov": {
        "lr": Float(1e-4, 1.0, log=True),
        "momentum": one_minus(1e-3, 0.5),
        "batch_size": BATCH,
    },
    "adagrad": {"lr": Float(1e-4, 1.0, log=True), "batch_size": BATCH},
    "rmsprop": {
        "lr": Float(1e-5, 1e-1, log=True),
        "alpha": one_minus(1e-3, 0.5),
        "batch_size": BATCH,
    },
    "adam": {
        "lr": Float(1e-5, 1e-1, log=True),
        "beta1": one_minus(1e-3, 0.5),
        "beta2": one_minus(1e-4, 0.1),
        "batch_size": BATCH,
    },
    "adamw": {
        "lr": Float(1e-5, 1e-1, log=True),
        "beta1": one_minus(1e-3, 0.5),
        "beta2": one_minus(1e-4, 0.1),
        "batch_size": BATCH,
        "weight_decay": Float(1e-5, 1.0, log=True),
    },
}

# A valid value for every hyperparameter any optimizer takes.
EXAMPLE_VALUES = {
    "lr": 0.0125,
    "batch_size": 32,
    "momentum": 0.875,
    "dampening": 0.25,
    "weight_decay": 1e-4,
    "beta1": 0.8,
    "beta2": 0.995,
    "alpha": 0.95,
    "eps": 1e-7,
    "lr_decay": 1e-3,
    "initial_accumulator_value": 0.1,
    "amsgrad": True,
    "centered": True,
}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


def _same_dimension(actual, expected) -> bool:
    if type(actual) is not type(expected):
        return False
    if isinstance(expected, Categorical):
        return actual.choices == expected.choices
    if isinstance(expected, Fixed):
        return actual.value == expected.value
    return (
        actual.log is expected.log
        and actual.low == pytest.approx(expected.low, rel=1e-12)
        and actual.high == pytest.approx(expected.high, rel=1e-12)
    )


def _assert_group_settings(optimizer: torch.optim.Optimizer, kwargs: dict) -> None:
    assert len(optimizer.param_groups) == 1
    group = optimizer.param_groups[0]
    for key, value in kwargs.items():
        assert key in group, key
        if key == "betas":
            assert tuple(group[key]) == value
        else:
            assert group[key] == value, key


def _random_values(name: str, seed: int = 0) -> dict:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return sample_space(study.ask(), OPTIMIZERS[name].space)


# --------------------------------------------------------------------------------------------------
# Names, classes, default spaces


def test_every_name_present():
    assert sorted(OPTIMIZERS) == sorted(NAMES)
    for name in NAMES:
        assert OPTIMIZERS[name].name == name
        assert get_optimizer(name) is OPTIMIZERS[name]


@pytest.mark.parametrize("name", NAMES)
def test_spec_class(name):
    spec = OPTIMIZERS[name]
    assert spec.cls is getattr(optim_core, CLASSES[name])
    assert issubclass(spec.cls, torch.optim.Optimizer)
    assert spec.description.strip()


@pytest.mark.parametrize("name", NAMES)
def test_default_space_matches_design(name):
    space = OPTIMIZERS[name].space
    expected = DESIGN_SPACES[name]
    assert set(space) == set(expected)
    for key, dim in expected.items():
        assert _same_dimension(space[key], dim), (key, space[key], dim)


@pytest.mark.parametrize(
    ("name", "key", "distance_low", "distance_high"),
    [
        ("momentum", "momentum", 1e-3, 0.5),
        ("nesterov", "momentum", 1e-3, 0.5),
        ("rmsprop", "alpha", 1e-3, 0.5),
        ("adam", "beta1", 1e-3, 0.5),
        ("adam", "beta2", 1e-4, 0.1),
        ("adamw", "beta1", 1e-3, 0.5),
        ("adamw", "beta2", 1e-4, 0.1),
    ],
)
def test_one_minus_defaults_search_the_distance_to_one(name, key, distance_low, distance_high):
    dim = OPTIMIZERS[name].space[key]
    assert isinstance(dim, OneMinus)
    assert dim.log is True
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    dim.sample(trial, key)
    assert f"one_minus_{key}" in trial.params
    assert key not in trial.params
    dist = trial.distributions[f"one_minus_{key}"]
    assert dist.log is True
    assert dist.low == pytest.approx(distance_low, rel=1e-9)
    assert dist.high == pytest.approx(distance_high, rel=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_full_batch_and_batch_size(name):
    spec = OPTIMIZERS[name]
    if name == "gd":
        assert spec.full_batch is True
        assert "batch_size" not in spec.space
        assert "batch_size" not in spec.keys
        with pytest.raises(SpaceError, match=re.escape("batch_size: not a hyperparameter")):
            spec.resolve_space({"batch_size": 32})
    else:
        assert spec.full_batch is False
        assert spec.space["batch_size"] == BATCH
        assert set(spec.space["batch_size"].choices) == {16, 32, 64, 128, 256}


@pytest.mark.parametrize("name", NAMES)
def test_default_space_valid(name):
    spec = OPTIMIZERS[name]
    assert set(spec.space) <= spec.keys
    assert spec.keys <= set(DOMAINS)
    assert set(spec.domains) == spec.keys
    validate_space(spec.space, spec.domains)
    assert spec.resolve_space() == dict(spec.space)
    assert spec.resolve_space({}) == dict(spec.space)
    assert resolve_space(name) == dict(spec.space)


@pytest.mark.parametrize("name", NAMES)
def test_default_space_read_only(name):
    spec = OPTIMIZERS[name]
    with pytest.raises(TypeError):
        spec.space["lr"] = Fixed(0.1)  # type: ignore[index]
    with pytest.raises(TypeError):
        spec.constructor_defaults["nesterov"] = False  # type: ignore[index]
    resolved = spec.resolve_space({"lr": 0.1})
    assert resolved["lr"] == Fixed(0.1)
    assert spec.space["lr"] == DESIGN_SPACES[name]["lr"]


def test_registry_read_only():
    with pytest.raises(TypeError):
        OPTIMIZERS["sgd"] = OPTIMIZERS["adam"]  # type: ignore[index]
    with pytest.raises(TypeError):
        OPTIMIZERS["lion"] = OPTIMIZERS["adam"]  # type: ignore[index]
    with pytest.raises(TypeError):
        del OPTIMIZERS["sgd"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        DOMAINS["lr"] = DOMAINS["eps"]  # type: ignore[index]
    assert OPTIMIZERS["sgd"].cls is optim_core.SGD


@pytest.mark.parametrize("name", ["lion", "", "Adam", "SGD", " sgd", "torch.optim.SGD"])
def test_unknown_optimizer(name):
    with pytest.raises(KeyError) as excinfo:
        get_optimizer(name)
    message = excinfo.value.args[0]
    assert message == f"unknown optimizer {name!r}; choose one of {sorted(NAMES)}"
    with pytest.raises(KeyError, match="choose one of"):
        resolve_space(name, {"lr": 0.1})


def test_spec_to_json():
    for name in NAMES:
        spec = OPTIMIZERS[name]
        data = json.loads(json.dumps(spec.to_json()))
        assert data["name"] == name
        assert data["class"] == CLASSES[name]
        assert data["full_batch"] is (name == "gd")
        assert data["tunable"] == sorted(spec.keys)
        assert data["default_space"] == space_to_json(spec.space)


# --------------------------------------------------------------------------------------------------
# JSON round trip


@pytest.mark.parametrize("name", NAMES)
def test_default_space_json_round_trip(name):
    spec = OPTIMIZERS[name]
    raw = json.loads(json.dumps(space_to_json(spec.space)))
    back = space_from_json(raw, spec.domains)
    assert back == dict(spec.space)
    assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in spec.space.items()}
    for key, dim in spec.space.items():
        if isinstance(dim, OneMinus):
            assert raw[key]["one_minus"] is True


@pytest.mark.parametrize(
    ("name", "overrides", "types"),
    [
        ("sgd", {"batch_size": {"low": 16, "high": 128, "log": True}}, {"batch_size": Int}),
        ("gd", {"lr": {"low": 1, "high": 10}}, {"lr": Float}),
        ("adam", {"eps": {"low": 1e-9, "high": 1e-7}, "amsgrad": True}, {"eps": Float}),
        ("rmsprop", {"momentum": {"low": 0.1, "high": 0.9}}, {"momentum": Float}),
        ("momentum", {"momentum": {"low": 0.8, "high": 0.95}}, {"momentum": OneMinus}),
        ("adam", {"beta1": {"choices": [0.8, 0.9]}}, {"beta1": Categorical}),
    ],
)
def test_resolved_space_json_round_trip(name, overrides, types):
    spec = OPTIMIZERS[name]
    space = spec.resolve_space(overrides)
    for key, kind in types.items():
        assert type(space[key]) is kind
    back = space_from_json(json.loads(json.dumps(space_to_json(space))), spec.domains)
    assert back == space
    assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in space.items()}


# --------------------------------------------------------------------------------------------------
# Overrides


@pytest.mark.parametrize(
    ("name", "overrides", "key", "expected"),
    [
        # a range replaces the default; "log" omitted inherits the default's scale
        ("sgd", {"lr": {"low": 1e-3, "high": 0.1}}, "lr", Float(1e-3, 0.1, log=True)),
        ("sgd", {"lr": {"low": 1e-3, "high": 0.1, "log": False}}, "lr", Float(1e-3, 0.1)),
        ("gd", {"lr": {"low": 0.5, "high": 5.0}}, "lr", Float(0.5, 5.0, log=True)),
        (
            "adamw",
            {"weight_decay": {"low": 1e-4, "high": 1e-2}},
            "weight_decay",
            Float(1e-4, 1e-2, log=True),
        ),
        # no default to inherit from: linear
        (
            "adam",
            {"weight_decay": {"low": 1e-4, "high": 1e-2}},
            "weight_decay",
            Float(1e-4, 1e-2, log=False),
        ),
        # a fixed value
        ("adam", {"lr": 1e-3}, "lr", Fixed(1e-3)),
        ("sgd", {"batch_size": 64}, "batch_size", Fixed(64)),
        ("nesterov", {"momentum": 0.9}, "momentum", Fixed(0.9)),
        # categorical choices
        ("sgd", {"batch_size": {"choices": [32, 64]}}, "batch_size", Categorical((32, 64))),
        ("adam", {"lr": {"choices": [1e-3, 3e-4]}}, "lr", Categorical((1e-3, 3e-4))),
        ("sgd", {"batch_size": {"low": 8, "high": 512}}, "batch_size", Int(8, 512)),
        # keys outside the default space that the optimizer accepts
        (
            "adam",
            {"eps": {"low": 1e-10, "high": 1e-6, "log": True}},
            "eps",
            Float(1e-10, 1e-6, True),
        ),
        ("adam", {"eps": 1e-7}, "eps", Fixed(1e-7)),
        ("adamw", {"amsgrad": {"choices": [True, False]}}, "amsgrad", Categorical((True, False))),
        ("rmsprop", {"centered": True}, "centered", Fixed(True)),
        ("rmsprop", {"momentum": {"low": 0.1, "high": 0.9}}, "momentum", Float(0.1, 0.9)),
        ("adagrad", {"lr_decay": 1e-4}, "lr_decay", Fixed(1e-4)),
        ("adagrad", {"initial_accumulator_value": 0.1}, "initial_accumulator_value", Fixed(0.1)),
        ("momentum", {"dampening": 0.1}, "dampening", Fixed(0.1)),
        ("momentum", {"momentum": 0.0}, "momentum", Fixed(0.0)),
        ("sgd", {"weight_decay": 5e-4}, "weight_decay", Fixed(5e-4)),
        ("gd", {"weight_decay": 5e-4}, "weight_decay", Fixed(5e-4)),
        # a OneMinus stays OneMinus unless "one_minus": false
        ("momentum", {"momentum": {"low": 0.8, "high": 0.99}}, "momentum", OneMinus(0.8, 0.99)),
        ("nesterov", {"momentum": {"low": 0.8, "high": 0.99}}, "momentum", OneMinus(0.8, 0.99)),
        ("adam", {"beta2": {"low": 0.99, "high": 0.9999}}, "beta2", OneMinus(0.99, 0.9999)),
        (
            "adam",
            {"beta1": {"low": 0.8, "high": 0.95, "log": False}},
            "beta1",
            OneMinus(0.8, 0.95, log=False),
        ),
        (
            "rmsprop",
            {"alpha": {"low": 0.9, "high": 0.99, "one_minus": False}},
            "alpha",
            Float(0.9, 0.99, log=True),
        ),
        (
            "adamw",
            {"beta2": {"low": 0.9, "high": 0.99, "one_minus": False, "log": False}},
            "beta2",
            Float(0.9, 0.99),
        ),
    ],
)
def test_override_applied(name, overrides, key, expected):
    spec = OPTIMIZERS[name]
    space = spec.resolve_space(overrides)
    assert space[key] == expected
    assert type(space[key]) is type(expected)
    assert resolve_space(name, overrides) == space
    # Everything else keeps its default dimension.
    assert {k: v for k, v in space.items() if k != key} == {
        k: v for k, v in spec.space.items() if k != key
    }
    # The resolved space samples into values that build the optimizer.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    values = sample_space(study.ask(), space)
    optimizer = spec.build(_model().parameters(), values)
    _assert_group_settings(optimizer, spec.to_kwargs(values))


def test_several_overrides_at_once():
    space = resolve_space(
        "adam",
        {
            "lr": {"low": 1e-4, "high": 1e-2},
            "beta1": 0.9,
            "batch_size": {"choices": [64, 128]},
            "eps": 1e-6,
        },
    )
    assert space == {
        "lr": Float(1e-4, 1e-2, log=True),
        "beta1": Fixed(0.9),
        "beta2": OPTIMIZERS["adam"].space["beta2"],
        "batch_size": Categorical((64, 128)),
        "eps": Fixed(1e-6),
    }


# --------------------------------------------------------------------------------------------------
# Bad spaces refused, with the key and what is wrong

ADAM_KEYS = "['amsgrad', 'batch_size', 'beta1', 'beta2', 'eps', 'lr', 'weight_decay']"


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("sgd", {"lr": {"low": 0.1, "high": 1e-3}}, "lr: 'low' (0.1) must be smaller than 'high'"),
        ("adam", {"lr": {"low": 1e-3, "high": 1e-3}}, "lr: 'low' (0.001) must be smaller"),
        ("adam", {"lr": {"low": 0, "high": 0.1}}, "lr: a log scale needs 'low' > 0, got 0"),
        (
            "sgd",
            {"batch_size": {"low": 0, "high": 64, "log": True}},
            "batch_size: a log scale needs 'low' > 0",
        ),
        ("sgd", {"batch_size": {"choices": []}}, "batch_size: 'choices' must list at least one"),
        ("sgd", {"batch_size": {"choices": [32, 32]}}, "batch_size: 'choices' has duplicates"),
        (
            "adam",
            {"learning_rate": 1e-3},
            f"learning_rate: not a hyperparameter of this optimizer; valid keys: {ADAM_KEYS}",
        ),
        (
            "sgd",
            {"momentum": 0.9},
            "momentum: not a hyperparameter of this optimizer; "
            "valid keys: ['batch_size', 'lr', 'weight_decay']",
        ),
        ("nesterov", {"dampening": 0.1}, "dampening: not a hyperparameter of this optimizer"),
        ("adagrad", {"momentum": 0.9}, "momentum: not a hyperparameter of this optimizer"),
        ("adam", {"betas": [0.9, 0.999]}, "betas: not a hyperparameter of this optimizer"),
        ("sgd", {"lr": -0.1}, "lr: -0.1 is not accepted; it must be a number in [0, inf]"),
        ("gd", {"lr": {"low": -1.0, "high": 1.0, "log": False}}, "lr low: -1.0 is not accepted"),
        ("momentum", {"momentum": 1.0}, "momentum: 1.0 is not accepted; it must be a number in"),
        ("momentum", {"momentum": 1.5}, "momentum: 1.5 is not accepted"),
        ("momentum", {"momentum": {"low": 0.9, "high": 1.0}}, "momentum high: 1.0 is not accepted"),
        # Nesterov momentum needs momentum > 0 (the constructor refuses 0).
        (
            "nesterov",
            {"momentum": 0.0},
            "momentum: 0.0 is not accepted; it must be a number in (0, 1)",
        ),
        ("nesterov", {"momentum": {"low": 0.0, "high": 0.9}}, "momentum low: 0.0 is not accepted"),
        (
            "nesterov",
            {"momentum": {"low": 0, "high": 0.9, "one_minus": False, "log": False}},
            "momentum low: 0 is not accepted",
        ),
        ("nesterov", {"momentum": {"choices": [0, 0.9]}}, "momentum choice: 0 is not accepted"),
        ("rmsprop", {"momentum": -0.5}, "momentum: -0.5 is not accepted"),
        ("adam", {"beta2": 1}, "beta2: 1 is not accepted; it must be a number in [0, 1)"),
        ("adamw", {"beta2": 1.0}, "beta2: 1.0 is not accepted; it must be a number in [0, 1)"),
        ("adam", {"beta1": {"low": 0.5, "high": 1}}, "beta1 high: 1 is not accepted"),
        ("rmsprop", {"alpha": 1.5}, "alpha: 1.5 is not accepted"),
        ("adam", {"eps": 0.0}, "eps: 0.0 is not accepted"),
        ("adamw", {"weight_decay": -1e-4}, "weight_decay: -0.0001 is not accepted"),
        ("adagrad", {"lr_decay": -1}, "lr_decay: -1 is not accepted"),
        (
            "sgd",
            {"batch_size": 0},
            "batch_size: 0 is not accepted; it must be an integer in [1, inf]",
        ),
        ("adam", {"batch_size": -32}, "batch_size: -32 is not accepted"),
        ("sgd", {"batch_size": 32.5}, "batch_size: 32.5 is not accepted; it must be an integer"),
        ("sgd", {"batch_size": 32.0}, "batch_size: 32.0 is not accepted; it must be an integer"),
        ("sgd", {"batch_size": "32"}, "batch_size: '32' is not accepted"),
        ("sgd", {"batch_size": {"low": 16.0, "high": 64}}, "batch_size: 'low' must be an integer"),
        ("sgd", {"batch_size": {"choices": [16, 64.0]}}, "batch_size choice: 64.0 is not accepted"),
        ("adam", {"lr": True}, "lr: True is not accepted; it must be a number in [0, inf]"),
        ("adam", {"amsgrad": "yes"}, "amsgrad: 'yes' is not accepted; it must be true or false"),
        ("rmsprop", {"centered": 1}, "centered: 1 is not accepted; it must be true or false"),
        (
            "adam",
            {"lr": {"low": 1e-4, "high": 1e-2, "steps": 3}},
            "lr: unknown field(s) ['steps']; use 'low', 'high', 'log', 'one_minus' or 'choices'",
        ),
        ("adam", {"lr": {"low": 1e-4}}, "lr: a range needs both 'low' and 'high'"),
        ("adam", {"lr": [1e-4, 1e-2]}, "lr: expected a value, {'low', 'high', 'log'}"),
        ("adam", {"batch_size": [16, 32]}, "batch_size: expected a value"),
        ("adam", {"lr": None}, "lr: expected a value"),
        ("adam", {"lr": {"low": 1e-4, "high": 1e-2, "log": "true"}}, "lr: 'log' must be true"),
        (
            "adam",
            {"beta1": {"low": 0.8, "high": 0.99, "one_minus": "no"}},
            "beta1: 'one_minus' must be true or false",
        ),
    ],
)
def test_bad_override_refused(name, overrides, message):
    with pytest.raises(SpaceError, match=re.escape(message)):
        OPTIMIZERS[name].resolve_space(overrides)
    with pytest.raises(SpaceError, match=re.escape(message)):
        resolve_space(name, overrides)


def test_bad_override_names_the_bad_key_among_good_ones():
    with pytest.raises(SpaceError) as excinfo:
        resolve_space("adam", {"lr": 1e-3, "eps": 1e-8, "beta2": 1.0, "batch_size": 64})
    assert str(excinfo.value).startswith("beta2: ")


# --------------------------------------------------------------------------------------------------
# Keyword mapping, building, the line of Python shown to users


@pytest.mark.parametrize(
    ("name", "values", "kwargs"),
    [
        ("gd", {"lr": 1.5}, {"lr": 1.5}),
        ("sgd", {"lr": 0.1, "batch_size": 64}, {"lr": 0.1}),
        ("momentum", {"lr": 0.1, "momentum": 0.9, "batch_size": 32}, {"lr": 0.1, "momentum": 0.9}),
        (
            "nesterov",
            {"lr": 0.1, "momentum": 0.9, "batch_size": 32},
            {"nesterov": True, "lr": 0.1, "momentum": 0.9},
        ),
        ("adagrad", {"lr": 0.05, "batch_size": 16, "eps": 1e-8}, {"lr": 0.05, "eps": 1e-8}),
        (
            "rmsprop",
            {"lr": 1e-3, "alpha": 0.95, "batch_size": 128, "centered": True},
            {"lr": 1e-3, "alpha": 0.95, "centered": True},
        ),
        (
            "adam",
            {"lr": 1e-3, "beta1": 0.8, "beta2": 0.99, "batch_size": 256},
            {"lr": 1e-3, "betas": (0.8, 0.99)},
        ),
        ("adam", {"lr": 1e-3, "beta1": 0.8}, {"lr": 1e-3, "betas": (0.8, 0.999)}),
        ("adam", {"beta2": 0.95}, {"betas": (0.9, 0.95)}),
        ("adam", {"lr": 1e-3, "amsgrad": True}, {"lr": 1e-3, "amsgrad": True}),
        (
            "adamw",
            {"lr": 1e-3, "beta1": 0.85, "beta2": 0.98, "weight_decay": 0.01, "batch_size": 32},
            {"lr": 1e-3, "betas": (0.85, 0.98), "weight_decay": 0.01},
        ),
    ],
)
def test_to_kwargs(name, values, kwargs):
    spec = OPTIMIZERS[name]
    before = dict(spec.constructor_defaults)
    assert spec.to_kwargs(values) == kwargs
    assert type(spec.to_kwargs(values).get("betas", ())) is tuple
    assert dict(spec.constructor_defaults) == before


@pytest.mark.parametrize("name", NAMES)
def test_to_kwargs_of_sampled_values(name):
    spec = OPTIMIZERS[name]
    values = _random_values(name)
    kwargs = spec.to_kwargs(values)
    assert not TRAINING_KEYS & set(kwargs)
    assert "beta1" not in kwargs and "beta2" not in kwargs
    assert ("betas" in kwargs) is ("beta1" in spec.space)
    if "betas" in kwargs:
        assert kwargs["betas"] == (values["beta1"], values["beta2"])
    assert kwargs.get("nesterov", False) is (name == "nesterov")
    for key, value in values.items():
        if key not in TRAINING_KEYS | {"beta1", "beta2"}:
            assert kwargs[key] == value


@pytest.mark.parametrize("name", NAMES)
def test_build_returns_configured_optimizer(name):
    spec = OPTIMIZERS[name]
    model = _model()
    values = _random_values(name)
    optimizer = spec.build(model.parameters(), values)
    assert type(optimizer) is spec.cls
    assert isinstance(optimizer, getattr(optim_core, CLASSES[name]))
    assert optimizer.param_groups[0]["params"] == list(model.parameters())
    _assert_group_settings(optimizer, spec.to_kwargs(values))
    if name == "nesterov":
        assert optimizer.param_groups[0]["nesterov"] is True
    elif spec.cls is optim_core.SGD:
        assert optimizer.param_groups[0]["nesterov"] is False


@pytest.mark.parametrize("name", NAMES)
def test_every_tunable_key_reaches_the_constructor(name):
    spec = OPTIMIZERS[name]
    values = {key: EXAMPLE_VALUES[key] for key in spec.keys}
    space = spec.resolve_space(values)
    assert all(isinstance(dim, Fixed) for dim in space.values())
    optimizer = spec.build(_model().parameters(), values)
    kwargs = spec.to_kwargs(values)
    _assert_group_settings(optimizer, kwargs)
    expected = set(spec.keys - TRAINING_KEYS - {"beta1", "beta2"}) | set(spec.constructor_defaults)
    if "beta1" in spec.keys:
        expected.add("betas")
    assert set(kwargs) == expected


CANDIDATES = [0, 0.0, 1e-12, 1e-3, 0.5, 0.9, 0.999999, 1, 1.0, 2.0, 10.0, 16, 256, True, False]


@pytest.mark.parametrize("name", NAMES)
def test_every_value_the_domains_accept_builds(name):
    """A value a space lets through is one the constructor takes: no trial fails on building."""
    spec = OPTIMIZERS[name]
    checked = 0
    for key, domain in spec.domains.items():
        for value in CANDIDATES:
            if not domain.accepts(value):
                continue
            values = {**EXAMPLE_VALUES, key: value}
            values = {k: v for k, v in values.items() if k in spec.keys}
            spec.resolve_space(values)
            spec.build(_model().parameters(), values)
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", NAMES)
def test_python_line_builds_the_same_optimizer(name, seed):
    spec = OPTIMIZERS[name]
    values = _random_values(name, seed)
    line = spec.python_line(values)
    assert "\n" not in line
    assert isinstance(ast.parse(line, mode="eval"), ast.Expression)
    assert line.startswith(f"optim_core.{CLASSES[name]}(model.parameters(), ")
    assert "batch_size" not in line
    model = _model()
    optimizer = eval(line, {"__builtins__": {}}, {"optim_core": optim_core, "model": model})
    assert type(optimizer) is spec.cls
    assert optimizer.param_groups[0]["params"] == list(model.parameters())
    kwargs = spec.to_kwargs(values)
    _assert_group_settings(optimizer, kwargs)
    # The same settings as build() gives.
    built = spec.build(_model().parameters(), values)
    for key in kwargs:
        assert optimizer.param_groups[0][key] == built.param_groups[0][key]
    if "beta1" in values:
        assert optimizer.param_groups[0]["betas"] == (values["beta1"], values["beta2"])


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("gd", {"lr": 1e-3}),
        ("nesterov", {"lr": 0.1, "momentum": 0.9, "batch_size": 64}),
        ("adam", {"lr": 0.1 + 0.2, "beta1": 1 - 1e-3, "beta2": 0.9999, "amsgrad": True}),
        ("rmsprop", {"lr": 1e-3, "alpha": 0.99, "centered": True, "momentum": 0.5}),
        ("adagrad", {"lr": 0.01, "lr_decay": 1e-4, "initial_accumulator_value": 0.1}),
        ("adamw", {"lr": 3e-4, "weight_decay": 0.01, "eps": 1e-8}),
    ],
)
def test_python_line_exact(name, values):
    spec = OPTIMIZERS[name]
    line = spec.python_line(values)
    model = _model()
    optimizer = eval(line, {"__builtins__": {}}, {"optim_core": optim_core, "model": model})
    assert type(optimizer) is spec.cls
    _assert_group_settings(optimizer, spec.to_kwargs(values))
    for key, value in values.items():
        if key == "batch_size":
            assert key not in line
        elif key.startswith("beta"):
            assert f"betas=({values['beta1']!r}, {values['beta2']!r})" in line
        else:
            assert f"{key}={value!r}" in line
    if name == "nesterov":
        assert "nesterov=True" in line


# --------------------------------------------------------------------------------------------------
# Sampling the default spaces

# (sampler, trials): TPE's cost grows with the history, so it gets fewer trials per optimizer here;
# test_spaces.py runs it for 200 trials over every kind of dimension.
SAMPLERS = {
    "random": (lambda: optuna.samplers.RandomSampler(seed=0), 200),
    "tpe": (lambda: optuna.samplers.TPESampler(seed=0), 100),
}


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("name", NAMES)
def test_sampled_default_values_inside_bounds(name, sampler):
    spec = OPTIMIZERS[name]
    make_sampler, n_trials = SAMPLERS[sampler]
    study = optuna.create_study(sampler=make_sampler())
    expected_params = {
        f"one_minus_{k}" if isinstance(d, OneMinus) else k for k, d in spec.space.items()
    }

    def objective(trial):
        values = sample_space(trial, spec.space)
        assert set(values) == set(spec.space)
        assert set(trial.params) == expected_params
        for key, dim in spec.space.items():
            value = values[key]
            if isinstance(dim, Categorical):
                assert value in dim.choices, key
                assert type(value) is int, key
            else:
                assert isinstance(value, float), key
                assert dim.low <= value <= dim.high, (key, value)
                assert DOMAINS[key].accepts(value), (key, value)
        # Reward the edges of the lr range, so that TPE pushes against the bounds.
        lr = spec.space["lr"]
        return -abs(values["lr"] - (lr.low + lr.high) / 2)

    study.optimize(objective, n_trials=n_trials)
    assert len(study.trials) == n_trials
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
