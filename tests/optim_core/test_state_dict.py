"""Saving and restoring optimizer state: mid-run round trips, and exchange with torch.optim."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from tests.optim_core._training import (
    ALL_CONFIGS,
    ONE_PER_CLASS,
    Config,
    assert_parity,
    flat,
    make_params,
    parametrize_configs,
    train,
)

HALF = 150

EXPECTED_KEYS = {
    "SGD": {"momentum_buffer"},
    "AdaGrad": {"step", "sum"},
    "RMSProp": {"step", "square_avg", "momentum_buffer", "grad_avg"},
    "Adam": {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    "AdamW": {"step", "exp_avg", "exp_avg_sq"},
}


def _torch_round_trip(state_dict: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# Every kind of state (ONE_PER_CLASS keeps all of them) through every implementation, and SGD
# without state.
ROUND_TRIPS = [(config, foreach) for config in ONE_PER_CLASS for foreach in (None, False, True)]
ROUND_TRIPS.append((ALL_CONFIGS[0], None))


@pytest.mark.parametrize(
    ("config", "foreach"), ROUND_TRIPS, ids=[f"{c.id}-foreach={f}" for c, f in ROUND_TRIPS]
)
def test_round_trip_mid_run_changes_nothing(config: Config, foreach: bool | None) -> None:
    kwargs = {**config.kwargs, "foreach": foreach}
    whole = make_params()
    uninterrupted = (whole, config.ours(whole, **kwargs))
    first = make_params()
    interrupted = (first, config.ours(first, **kwargs))
    train([uninterrupted, interrupted], range(HALF), maximize=config.maximize)
    saved_params = [p.detach().clone() for p in first]
    saved_state = _torch_round_trip(copy.deepcopy(interrupted[1].state_dict()))
    # The saved run goes on; what was saved must not follow it.
    train([interrupted], range(HALF, HALF + 5), maximize=config.maximize)

    resumed = make_params(seed=1)
    with torch.no_grad():
        for p, saved in zip(resumed, saved_params, strict=True):
            p.copy_(saved)
    optimizer = config.ours(resumed, **kwargs)
    optimizer.load_state_dict(saved_state)
    train([uninterrupted, (resumed, optimizer)], range(HALF, 2 * HALF), maximize=config.maximize)
    assert torch.equal(flat(resumed), flat(whole))


@parametrize_configs(ONE_PER_CLASS)
def test_state_has_torch_keys_and_float_steps(config: Config) -> None:
    params = make_params()
    optimizer = config.ours(params, **config.kwargs)
    # Created lazily, on the first step, except where torch.optim creates it in the constructor.
    twin = config.theirs(make_params(), **config.kwargs)
    assert optimizer.state_dict()["state"].keys() == twin.state_dict()["state"].keys()
    train([(params, optimizer)], range(3))
    state = optimizer.state_dict()["state"]
    assert sorted(state) == [0, 1, 2, 3]
    for index, param_state in state.items():
        assert set(param_state) <= EXPECTED_KEYS[config.ours.__name__]
        if "step" in param_state:
            assert param_state["step"] == 3.0 and isinstance(param_state["step"], float)
        for key, value in param_state.items():
            if key != "step":
                assert value.shape == params[index].shape, key
    theirs_params = make_params()
    theirs = config.theirs(theirs_params, **config.kwargs)
    train([(theirs_params, theirs)], range(3))
    assert {key for s in state.values() for key in s} == {
        key for s in theirs.state_dict()["state"].values() for key in s
    }


@parametrize_configs(ONE_PER_CLASS)
@pytest.mark.parametrize("direction", ["torch->ours", "ours->torch"])
def test_state_dict_exchanges_with_torch(config: Config, direction: str) -> None:
    first_cls, second_cls = (
        (config.theirs, config.ours) if direction == "torch->ours" else (config.ours, config.theirs)
    )
    reference = make_params()
    reference_run = (reference, config.theirs(reference, **config.kwargs))
    params = make_params()
    first = first_cls(params, **config.kwargs)
    train([reference_run, (params, first)], range(100))
    second = second_cls(params, **config.kwargs)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    train([reference_run, (params, second)], range(100, 200))
    assert_parity(flat(params), flat(reference))
