"""A parameter given data of another dtype (``p.data = p.data.double()``) steps as in torch.optim.

What torch.optim does (2.x, CPU, every implementation alike), which these tests hold us to:

- state not created yet: the state is created in the new dtype and the parameter trains in it;
  ``torch.optim.Adagrad`` is the exception, its state is made in the constructor and stays float32;
- state already created: Adam and AdamW raise ``RuntimeError`` ("expected dtype float for `end`
  but got dtype double", from ``exp_avg.lerp_``); SGD with momentum, RMSprop and Adagrad go on,
  their state keeping its old dtype (updated in place), the float64 parameter staying float64.

The packed CPU path used to keep the layout it built for the float32 data and stepped float32
copies of the float64 weights, rounding them every step, where torch.optim raises or keeps them.
"""

from __future__ import annotations

import pytest
import torch

import optim_core
from optim_core._tensor_lists import PACK_MAX_NUMEL
from tests.optim_core._training import ONE_PER_CLASS, Config

# Enough small tensors to be packed by every optimizer (SGD's two ops per tensor included). No
# large one: unpacked, it would raise for Adam on its own and hide what the packs do.
SHAPES = [*[(7, 3)] * 5, *[(4,)] * 5]
assert max(torch.Size(shape).numel() for shape in SHAPES) <= PACK_MAX_NUMEL
STEPS_AFTER = 4

# Every class with all the state it keeps, plus plain Adam and SGD without momentum (no state).
CONFIGS = [
    *ONE_PER_CLASS,
    Config(optim_core.Adam, torch.optim.Adam, {"lr": 0.01}),
    Config(optim_core.SGD, torch.optim.SGD, {"lr": 0.05}),
]
CASES = [
    (config, foreach, state)
    for config in CONFIGS
    for foreach in (None, False, True)
    for state in ("state created", "no state yet")
]


def _grads(params: list[torch.Tensor], generator: torch.Generator) -> None:
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.dtype)


def _run(
    cls: type[torch.optim.Optimizer], kwargs: dict, foreach: bool | None, steps_before: int
) -> tuple[list[torch.Tensor], torch.optim.Optimizer] | RuntimeError:
    """Float32 parameters stepped ``steps_before`` times, then made float64 and stepped again:
    the parameters and optimizer, or the error the steps after the change raised."""
    generator = torch.Generator().manual_seed(0)
    params = [
        torch.randn(shape, generator=generator, dtype=torch.float64).float().requires_grad_()
        for shape in SHAPES
    ]
    optimizer = cls(params, **kwargs, foreach=foreach)
    for _ in range(steps_before):
        _grads(params, generator)
        optimizer.step()
    for p in params:
        p.data = p.data.double()
    try:
        for _ in range(STEPS_AFTER):
            _grads(params, generator)
            optimizer.step()
    except RuntimeError as error:
        return error
    return params, optimizer


@pytest.mark.parametrize(
    ("config", "foreach", "state"),
    CASES,
    ids=[f"{config.id}-foreach={foreach}-{state}" for config, foreach, state in CASES],
)
def test_a_dtype_change_steps_as_in_torch(config: Config, foreach: bool | None, state: str) -> None:
    steps_before = 2 if state == "state created" else 0
    theirs = _run(config.theirs, config.kwargs, foreach, steps_before)
    ours = _run(config.ours, config.kwargs, foreach, steps_before)
    if isinstance(theirs, RuntimeError):
        assert isinstance(ours, RuntimeError), "torch.optim raises here"
        assert str(ours) == str(theirs)
        return
    assert not isinstance(ours, RuntimeError), f"torch.optim goes on here; we raised {ours}"
    (our_params, our_optimizer), (their_params, their_optimizer) = ours, theirs
    for p, q in zip(our_params, their_params, strict=True):
        assert p.dtype == q.dtype == torch.float64
        our_state, their_state = our_optimizer.state[p], their_optimizer.state[q]
        assert set(our_state) == set(their_state)
        for key, value in their_state.items():
            if key != "step":
                assert our_state[key].dtype == value.dtype, key
                # float32 round-off (SGD's float32 steps fuse m*b + g where torch rounds twice)
                torch.testing.assert_close(our_state[key], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
    # The float64 weights are not rounded to float32 at any step: after float64 updates hardly
    # any of them is a float32 number (rounded ones would all be). torch's are the reference.
    for params in (our_params, their_params):
        weights = torch.cat([p.detach().reshape(-1) for p in params])
        rounded = weights == weights.float().double()
        assert rounded.double().mean() < 0.1, f"{int(rounded.sum())}/{weights.numel()} rounded"
