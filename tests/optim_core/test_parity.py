"""Float64 parity with torch.optim over 300 mini-batch steps, every option, every implementation."""

from __future__ import annotations

import pytest
import torch

from tests.optim_core._training import (
    ALL_CONFIGS,
    ONE_PER_CLASS,
    Config,
    assert_parity,
    flat,
    loss_at,
    make_params,
    parametrize_configs,
    parametrize_devices,
    set_grads,
    train,
)

STEPS = 300
CHECKPOINTS = (1, 2, 10, 100, STEPS)
IMPLEMENTATIONS = {
    "torch": None,
    "default": {},
    "single": {"foreach": False},
    "foreach": {"foreach": True},
}


@parametrize_devices
@parametrize_configs(ALL_CONFIGS)
def test_matches_torch_for_every_implementation(config: Config, device: str) -> None:
    runs = {}
    for name, extra in IMPLEMENTATIONS.items():
        params = make_params(device=device)
        cls = config.theirs if extra is None else config.ours
        runs[name] = (params, cls(params, **config.kwargs, **(extra or {})))
    start, done = flat(runs["torch"][0]), 0
    for checkpoint in CHECKPOINTS:
        train(list(runs.values()), range(done, checkpoint), maximize=config.maximize)
        done = checkpoint
        expected = flat(runs["torch"][0])
        for name, (params, _) in runs.items():
            try:
                assert_parity(flat(params), expected)
            except AssertionError as error:
                raise AssertionError(
                    f"{name} implementation, after step {checkpoint}: {error}"
                ) from None
    assert not torch.allclose(expected, start, rtol=1e-3), "the run must move the parameters"
    # The single- and multi-tensor implementations agree with each other, not only with torch.
    assert_parity(flat(runs["single"][0]), flat(runs["foreach"][0]))


@parametrize_devices
@parametrize_configs(ONE_PER_CLASS)
@pytest.mark.parametrize("foreach", [None, False, True])
def test_param_groups_keep_their_own_settings(
    config: Config, foreach: bool | None, device: str
) -> None:
    def build(
        cls: type[torch.optim.Optimizer], **extra: object
    ) -> tuple[list, torch.optim.Optimizer]:
        params = make_params(device=device)
        groups = [{"params": params[:2], "lr": config.kwargs["lr"] * 3}, {"params": params[2:]}]
        return params, cls(groups, **config.kwargs, **extra)

    theirs, ours = build(config.theirs), build(config.ours, foreach=foreach)
    same_lr = make_params(device=device)
    runs = [theirs, ours, (same_lr, config.ours(same_lr, **config.kwargs, foreach=foreach))]
    train(runs, range(100))
    assert_parity(flat(ours[0]), flat(theirs[0]))
    # The groups' own settings matter: one learning rate for both trains differently.
    assert not torch.allclose(flat(same_lr), flat(theirs[0]))


def test_closed_form_gradient_is_autograds() -> None:
    params = make_params()
    for step, sign in ((0, 1.0), (3, -1.0)):
        expected = torch.autograd.grad(sign * loss_at(params, step), params)
        set_grads(params, step, sign=sign)
        for p, want in zip(params, expected, strict=True):
            torch.testing.assert_close(p.grad, want, rtol=1e-12, atol=1e-14)


@parametrize_devices
def test_the_default_implementation_is_the_devices_fast_one(device: str) -> None:
    """On the CPU the packed single-tensor loop; elsewhere torch's multi-tensor (_foreach)
    kernels, which give the same numbers as the loop (the parity above, on that device)."""
    from optim_core._tensor_lists import GroupCache, Path

    cache = GroupCache()
    cache.refresh(make_params(device=device))
    assert cache.choose_path(None) is (Path.PACKED if device == "cpu" else Path.FOREACH)
    assert cache.choose_path(False) is Path.SINGLE and cache.choose_path(True) is Path.FOREACH
