"""rosenbrock: the 2-D Rosenbrock function from the classic start (-1.2, 1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from studies.tasks.point import PointTask

if TYPE_CHECKING:
    import torch
    from torch import nn


class Rosenbrock(PointTask):
    """f(x, y) = (1 - x)^2 + 100 (y - x^2)^2, minimum 0 at (1, 1), down a curved narrow valley.

    No data: an epoch is :attr:`steps_per_epoch` deterministic steps, the same for every batch
    size (and for full-batch ``gd``), so its studies search no batch size.
    """

    name = "rosenbrock"
    description = "2-D Rosenbrock valley from (-1.2, 1), no data; loss 0 at (1, 1)."
    default_epochs = 20
    steps_per_epoch = 50
    batch_size_applies = False

    def start(self) -> torch.Tensor:
        import torch

        return torch.tensor([-1.2, 1.0])

    def value(self, position: torch.Tensor) -> torch.Tensor:
        x, y = position[0], position[1]
        return (1.0 - x).square() + 100.0 * (y - x.square()).square()

    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.value(model())
