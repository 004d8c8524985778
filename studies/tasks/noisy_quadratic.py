"""noisy_quadratic: a 100-D ill-conditioned quadratic, gradient noise shrinking as 1/batch size."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from studies.tasks.base import TaskData
from studies.tasks.point import PointTask

if TYPE_CHECKING:
    import torch
    from torch import nn

DIMENSIONS = 100
TRAIN_SAMPLES = 2048


class NoisyQuadratic(PointTask):
    """The noisy quadratic model (Zhang et al., 2019): L(w) = 1/2 sum_i h_i w_i^2, h_i = 1/i.

    The training set is ``TRAIN_SAMPLES`` noise vectors c with c_i ~ N(0, 1/h_i). A batch's loss is
    the quadratic centred on the batch's mean noise, 1/2 sum_i h_i (w_i - mean(c)_i)^2, so the
    gradient noise has covariance H / batch_size: it shrinks as 1/batch_size and is largest along
    the steep directions. The reported ``loss`` is the exact L(w) (0 at the optimum); every trial
    starts from w = 1 (L = 2.59).
    """

    name = "noisy_quadratic"
    description = (
        "100-D ill-conditioned quadratic (condition number 100), gradient noise ~ 1/batch_size; "
        "loss 0 at the optimum."
    )
    default_epochs = 20

    @functools.cached_property
    def curvature(self) -> torch.Tensor:
        """The diagonal Hessian h_i = 1/i."""
        import torch

        return 1.0 / torch.arange(1, DIMENSIONS + 1, dtype=torch.float32)

    def load_data(self) -> TaskData:
        import torch

        generator = torch.Generator().manual_seed(self.split_seed)
        noise = torch.randn(TRAIN_SAMPLES, DIMENSIONS, generator=generator) / self.curvature.sqrt()
        empty_x, empty_y = torch.zeros(0, DIMENSIONS), torch.zeros(0)
        return TaskData(noise, torch.zeros(TRAIN_SAMPLES), empty_x, empty_y, empty_x, empty_y)

    def to(self, device: torch.device) -> NoisyQuadratic:
        super().to(device)
        self.__dict__["curvature"] = self.curvature.to(device)
        return self

    def start(self) -> torch.Tensor:
        import torch

        return torch.ones(DIMENSIONS)

    def value(self, position: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.curvature * position.square()).sum()

    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.curvature * (model() - x.mean(dim=0)).square()).sum()
