"""Tasks whose model is a single point: the optimizer minimises a known function of it."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from studies.tasks.base import Direction, Split, Task, TaskData

if TYPE_CHECKING:
    import torch
    from torch import nn


class PointTask(Task):
    """Minimise a function of a point from a fixed start; the metric is the function's value.

    There is no validation or test data: ``loss`` (and ``test_loss``) is the exact function value
    at the trained point, while ``train_loss`` is the loss the optimizer saw (noisy for
    stochastic tasks).
    """

    metrics: Mapping[str, Direction] = MappingProxyType({"loss": "minimize"})
    default_metric = "loss"

    @abc.abstractmethod
    def start(self) -> torch.Tensor:
        """The starting point (the same for every trial, so trials differ only in the optimizer)."""

    @abc.abstractmethod
    def value(self, position: torch.Tensor) -> torch.Tensor:
        """The exact (noise-free) function value at ``position``."""

    def load_data(self) -> TaskData:
        import torch

        # No data: one empty sample per split, so every batch is the point alone.
        x, y = torch.zeros(1, 0), torch.zeros(1)
        return TaskData(x, y, x, y, x, y)

    def build_model(self) -> nn.Module:
        from studies.tasks.point_model import Point

        return Point(self.start())

    def evaluate(self, model: nn.Module, split: Split) -> dict[str, float]:
        name = "loss" if split == "val" else f"{split}_loss"
        return {name: self.value(model()).item()}
