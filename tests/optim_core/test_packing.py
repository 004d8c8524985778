"""The packed CPU path: small parameters share flat buffers, and nothing a user sees changes."""

from __future__ import annotations

import pytest
import torch

import optim_core
from optim_core._tensor_lists import PACK_MAX_NUMEL
from tests.optim_core._training import assert_parity

GENERATOR_SEED = 7


def _model() -> list[torch.Tensor]:
    """A large matrix (not packed), small ones and biases (packed), one of them non-contiguous."""
    generator = torch.Generator().manual_seed(GENERATOR_SEED)
    shapes = [(PACK_MAX_NUMEL + 1,), (30, 20), (30,), (20, 5), (5,)]
    params = [torch.randn(s, generator=generator, dtype=torch.float64) for s in shapes]
    params[3] = params[3].T.contiguous().T  # a transposed layout: strides (1, 20)
    return [p.requires_grad_() for p in params]


def _train(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], steps: int) -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        optimizer.step()


def _storages(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], key: str) -> set[int]:
    return {optimizer.state[p][key].untyped_storage().data_ptr() for p in params}


def test_small_parameters_share_a_pack_and_large_ones_do_not() -> None:
    params = _model()
    optimizer = optim_core.Adam(params, lr=0.01)
    _train(optimizer, params, 3)
    large, *small = params
    assert len(_storages(optimizer, small, "exp_avg")) == 1
    assert _storages(optimizer, [large], "exp_avg").isdisjoint(
        _storages(optimizer, small, "exp_avg")
    )
    for p in params:
        assert optimizer.state[p]["exp_avg"].shape == p.shape
    single = optim_core.Adam(small, lr=0.01, foreach=False)
    _train(single, small, 1)
    assert len(_storages(single, small, "exp_avg")) == len(small)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (optim_core.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1, "dampening": 0.1}),
        (optim_core.AdaGrad, {"lr": 0.05}),
        (optim_core.RMSProp, {"lr": 0.01, "momentum": 0.5, "centered": True}),
        (optim_core.Adam, {"lr": 0.01, "amsgrad": True}),
        (optim_core.AdamW, {"lr": 0.01}),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_packed_path_matches_the_single_tensor_loop(cls: type, kwargs: dict) -> None:
    results = []
    for foreach in (None, False):
        params = _model()
        _train(cls(params, **kwargs, foreach=foreach), params, 20)
        results.append(torch.cat([p.detach().reshape(-1) for p in params]))
    assert_parity(results[0], results[1])


def test_state_written_by_the_user_is_picked_up() -> None:
    """A pack keeps state as views; a state tensor replaced from outside (here: reset to zero, as
    on loading) must be copied in, not ignored."""
    params, reference = _model(), _model()
    optimizer = optim_core.Adam(params, lr=0.01)
    fresh = optim_core.Adam(reference, lr=0.01)
    _train(optimizer, params, 5)
    with torch.no_grad():
        for p, q in zip(params, reference, strict=True):
            q.copy_(p)
    for p in params:
        optimizer.state[p] = {}
    _train(optimizer, params, 5)
    _train(fresh, reference, 5)
    for p, q in zip(params, reference, strict=True):
        assert torch.equal(p, q)
