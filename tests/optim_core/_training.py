"""A small float64 model, its data, and the optimizer configurations the optim_core tests share."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import optim_core

N_BATCHES = 6


@dataclass(frozen=True)
class Config:
    """One optimizer configuration: our class, its torch.optim twin, constructor keywords."""

    ours: type[torch.optim.Optimizer]
    theirs: type[torch.optim.Optimizer]
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        options = ",".join(f"{key}={value}" for key, value in self.kwargs.items())
        return f"{self.ours.__name__}({options})"

    @property
    def maximize(self) -> bool:
        return bool(self.kwargs.get("maximize", False))


def _configs(ours: type, theirs: type, *variants: dict[str, Any]) -> list[Config]:
    return [Config(ours, theirs, kwargs) for kwargs in variants]


SGD = _configs(
    optim_core.SGD,
    torch.optim.SGD,
    {"lr": 0.05},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "dampening": 0.5},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    {"lr": 0.05, "weight_decay": 0.05},
    {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.05, "nesterov": True},
    {"lr": 0.05, "momentum": 0.9, "maximize": True},
)
ADAGRAD = _configs(
    optim_core.AdaGrad,
    torch.optim.Adagrad,
    {"lr": 0.05},
    {"lr": 0.05, "lr_decay": 0.01},
    {"lr": 0.05, "initial_accumulator_value": 0.5},
    {"lr": 0.05, "weight_decay": 0.05},
    {"lr": 0.05, "eps": 1e-3, "maximize": True},
)
RMSPROP = _configs(
    optim_core.RMSProp,
    torch.optim.RMSprop,
    {"lr": 0.002},
    {"lr": 0.002, "momentum": 0.9},
    {"lr": 0.002, "centered": True},
    {"lr": 0.002, "centered": True, "momentum": 0.9},
    {"lr": 0.002, "alpha": 0.9, "weight_decay": 0.05, "eps": 1e-4},
    {"lr": 0.002, "maximize": True},
)
ADAM = _configs(
    optim_core.Adam,
    torch.optim.Adam,
    {"lr": 0.01},
    {"lr": 0.01, "weight_decay": 0.05},
    {"lr": 0.01, "amsgrad": True},
    {"lr": 0.01, "maximize": True},
    {"lr": 0.01, "betas": (0.5, 0.9), "eps": 1e-4},
)
ADAMW = _configs(
    optim_core.AdamW,
    torch.optim.AdamW,
    {"lr": 0.01},
    {"lr": 0.01, "weight_decay": 0.2, "amsgrad": True},
    {"lr": 0.01, "maximize": True},
)
ALL_CONFIGS = SGD + ADAGRAD + RMSPROP + ADAM + ADAMW
# One configuration per class, with state of every kind it keeps.
ONE_PER_CLASS = [
    Config(optim_core.SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    Config(optim_core.AdaGrad, torch.optim.Adagrad, {"lr": 0.05, "lr_decay": 0.01}),
    Config(
        optim_core.RMSProp, torch.optim.RMSprop, {"lr": 0.002, "momentum": 0.5, "centered": True}
    ),
    Config(optim_core.Adam, torch.optim.Adam, {"lr": 0.01, "amsgrad": True}),
    Config(optim_core.AdamW, torch.optim.AdamW, {"lr": 0.01}),
]


def parametrize_configs(configs: Sequence[Config]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("config", configs, ids=[config.id for config in configs])


# Every device the parity tests run on: the CPU always; CUDA where torch sees a GPU, skipped
# with the reason elsewhere (a skip is reported, so a CPU-only run never passes for CUDA).
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(),
            reason="CUDA parity: no CUDA device here (torch.cuda.is_available() is False); "
            "bench/device_check.py runs these on a GPU machine",
        ),
    ),
]
parametrize_devices = pytest.mark.parametrize("device", DEVICES)


def make_params(seed: int = 0, device: str = "cpu") -> list[torch.Tensor]:
    """The parameters of a 2-layer float64 MLP 5-12-3 (weights and biases), the same for the same
    seed on every device (drawn on the CPU). A plain function of them is the model: cheaper to
    run than an ``nn.Module``."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(12, 5), (12,), (3, 12), (3,)]
    return [
        (0.5 * torch.randn(shape, generator=generator, dtype=torch.float64))
        .to(device)
        .requires_grad_()
        for shape in shapes
    ]


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1234)
    batches = []
    for _ in range(N_BATCHES):
        x = torch.randn(16, 5, generator=generator, dtype=torch.float64)
        y = torch.sin(x[:, :3]) + 0.1 * torch.randn(16, 3, generator=generator, dtype=torch.float64)
        batches.append((x, y))
    return batches


BATCHES = _batches()


@functools.cache
def _batches_on(device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.to(device), y.to(device)) for x, y in BATCHES]


def loss_at(params: Sequence[torch.Tensor], step: int) -> torch.Tensor:
    """Mean squared error of the MLP on the mini-batch of ``step``."""
    w1, b1, w2, b2 = params
    x, y = _batches_on(w1.device)[step % N_BATCHES]
    hidden = torch.tanh(torch.addmm(b1, x, w1.T))
    return (torch.addmm(b2, hidden, w2.T) - y).square().mean()


def set_grads(params: Sequence[torch.Tensor], step: int, *, sign: float = 1.0) -> None:
    """Set ``p.grad`` to the gradient of ``sign * loss_at(params, step)``, by backpropagation
    written out: the optimizers only see gradients, and this is several times cheaper than autograd
    for a model this small (``test_closed_form_gradient_is_autograds`` checks it)."""
    w1, b1, w2, b2 = (p.detach() for p in params)
    x, y = _batches_on(w1.device)[step % N_BATCHES]
    hidden = torch.tanh(torch.addmm(b1, x, w1.T))
    d_out = (torch.addmm(b2, hidden, w2.T) - y).mul_(2 * sign / y.numel())
    d_pre = (d_out @ w2).mul_(1 - hidden.square())
    for p, grad in zip(
        params, (d_pre.T @ x, d_pre.sum(0), d_out.T @ hidden, d_out.sum(0)), strict=True
    ):
        p.grad = grad


def train(
    runs: Sequence[tuple[Sequence[torch.Tensor], torch.optim.Optimizer]],
    steps: Iterable[int],
    *,
    maximize: bool = False,
    schedulers: Sequence[torch.optim.lr_scheduler.LRScheduler] = (),
    before_step: Callable[[int], None] | None = None,
) -> None:
    """Mini-batch training of several independent runs ``(params, optimizer)`` in lockstep.

    With ``maximize`` the objective is the negated loss, so that maximizing it trains the model as
    well and nothing diverges. ``before_step(step)`` runs after the gradients are set.
    """
    for step in steps:
        for params, optimizer in runs:
            optimizer.zero_grad()
            set_grads(params, step, sign=-1.0 if maximize else 1.0)
        if before_step is not None:
            before_step(step)
        for _, optimizer in runs:
            optimizer.step()
        for scheduler in schedulers:
            scheduler.step()


def flat(params: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params]).cpu().clone()


def assert_parity(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to round-off: relative 1e-10 (absolute 1e-12 near zero)."""
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)
