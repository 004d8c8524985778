"""Each optimizer, with hand-chosen hyperparameters, drives two classic objectives down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import optim_core

EIGENVALUES = torch.logspace(0, 2, 20, dtype=torch.float64)  # condition number 100


def rosenbrock(z: torch.Tensor) -> torch.Tensor:
    """Minimum 0 at (1, 1), at the end of a long curved valley."""
    x, y = z
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def quadratic(z: torch.Tensor) -> torch.Tensor:
    """Minimum 0 at the origin; curvature from 1 to 100 along the axes."""
    return 0.5 * (EIGENVALUES * z * z).sum()


# name -> (class, keywords on Rosenbrock from (-1.2, 1) for 500 steps, on the quadratic from
# (1, ..., 1) for 200 steps, the largest final/initial loss ratio accepted on Rosenbrock)
SETTINGS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any], dict[str, Any], float]] = {
    "sgd": (optim_core.SGD, {"lr": 1.5e-3}, {"lr": 0.015}, 0.1),
    "momentum": (
        optim_core.SGD,
        {"lr": 1e-3, "momentum": 0.9},
        {"lr": 0.01, "momentum": 0.5},
        1e-3,
    ),
    "nesterov": (
        optim_core.SGD,
        {"lr": 1e-3, "momentum": 0.9, "nesterov": True},
        {"lr": 0.01, "momentum": 0.5, "nesterov": True},
        1e-3,
    ),
    "adagrad": (optim_core.AdaGrad, {"lr": 0.5}, {"lr": 0.5}, 0.1),
    "rmsprop": (optim_core.RMSProp, {"lr": 0.01}, {"lr": 0.01}, 0.05),
    "rmsprop-centered": (
        optim_core.RMSProp,
        {"lr": 0.01, "centered": True, "momentum": 0.5},
        {"lr": 0.01, "centered": True},
        0.05,
    ),
    "adam": (optim_core.Adam, {"lr": 0.05}, {"lr": 0.05}, 0.05),
    "amsgrad": (
        optim_core.Adam,
        {"lr": 0.05, "amsgrad": True},
        {"lr": 0.05, "amsgrad": True},
        0.05,
    ),
    "adamw": (optim_core.AdamW, {"lr": 0.05}, {"lr": 0.05, "weight_decay": 0.1}, 0.05),
}


def minimize(
    cls: type[torch.optim.Optimizer],
    kwargs: dict[str, Any],
    objective: Callable[[torch.Tensor], torch.Tensor],
    start: list[float],
    steps: int,
) -> tuple[float, float]:
    z = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    optimizer = cls([z], **kwargs)
    initial = objective(z).item()
    for _ in range(steps):
        optimizer.zero_grad()
        objective(z).backward()
        optimizer.step()
    final = objective(z).item()
    assert final == final, "diverged to nan"
    return initial, final


@pytest.mark.parametrize("name", SETTINGS)
def test_rosenbrock_goes_down(name: str) -> None:
    cls, kwargs, _, max_ratio = SETTINGS[name]
    initial, final = minimize(cls, kwargs, rosenbrock, [-1.2, 1.0], 500)
    assert final < max_ratio * initial, (initial, final)


@pytest.mark.parametrize("name", SETTINGS)
def test_ill_conditioned_quadratic_goes_down(name: str) -> None:
    cls, _, kwargs, _ = SETTINGS[name]
    initial, final = minimize(cls, kwargs, quadratic, [1.0] * len(EIGENVALUES), 200)
    assert final < 1e-4 * initial, (initial, final)


def test_maximize_climbs() -> None:
    initial, final = minimize(
        optim_core.Adam, {"lr": 0.05, "maximize": True}, lambda z: -quadratic(z), [1.0] * 20, 200
    )
    assert initial < final <= 0 and abs(final) < 1e-4 * abs(initial), (initial, final)
