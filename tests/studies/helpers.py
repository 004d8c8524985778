"""Shared pieces of the studies tests."""

from __future__ import annotations

import torch
from torch import nn

from studies.tasks.point import PointTask

ADAM = {"beta1": 0.9, "beta2": 0.999}


class Parabola(PointTask):
    """loss = w^2 from w = 1: gd with lr > 1 overshoots further every step (x(1 - 2 lr))."""

    name = "parabola"
    description = "w^2 from w = 1"
    default_epochs = 3
    steps_per_epoch = 10

    def start(self) -> torch.Tensor:
        return torch.ones(1)

    def value(self, position: torch.Tensor) -> torch.Tensor:
        return position.square().sum()

    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.value(model())
