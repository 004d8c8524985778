"""The model of a :class:`~studies.tasks.point.PointTask`: the point itself (apart, as it needs
torch to be defined and the tasks are described without it)."""

from __future__ import annotations

import torch
from torch import nn


class Point(nn.Module):
    """A model that is nothing but its parameter, the point being optimised."""

    def __init__(self, start: torch.Tensor) -> None:
        super().__init__()
        self.position = nn.Parameter(start.clone())

    def forward(self) -> torch.Tensor:
        return self.position
