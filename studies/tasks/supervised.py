"""Supervised tasks on bundled data: fixed (stratified) splits, scaling fitted on train only."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from studies.tasks.base import Direction, LossKind, Split, Task, TaskData

if TYPE_CHECKING:
    import torch
    from torch import nn

VAL_FRACTION = 0.2
TEST_FRACTION = 0.2


def split_arrays(
    x: np.ndarray, y: np.ndarray, *, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split into train / validation / test (60 / 20 / 20) with a fixed seed.

    Returns:
        ``x_train, y_train, x_val, y_val, x_test, y_test``.
    """
    # Imported here, as the datasets are: a process that never loads data (the API, which
    # imports every task to describe it) does not pay scikit-learn's import time.
    from sklearn.model_selection import train_test_split

    held_out = VAL_FRACTION + TEST_FRACTION
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=held_out, random_state=seed, stratify=y if stratify else None
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest,
        y_rest,
        test_size=TEST_FRACTION / held_out,
        random_state=seed,
        stratify=y_rest if stratify else None,
    )
    return x_train, y_train, x_val, y_val, x_test, y_test


def standardize(
    train: np.ndarray, *others: np.ndarray, per_feature: bool = True
) -> list[np.ndarray]:
    """Centre and scale by the training split's mean and standard deviation.

    Args:
        train: The training split; its statistics are the only ones used.
        others: Further splits, scaled with the training statistics.
        per_feature: One mean and deviation per column (tabular data), or a single pair for the
            whole array (images, where pixels share a scale).

    Returns:
        ``[train, *others]`` scaled; constant columns are only centred.
    """
    axis = 0 if per_feature else None
    mean = train.mean(axis=axis)
    std = train.std(axis=axis)
    std = np.where(std > 0, std, 1.0)
    return [(split - mean) / std for split in (train, *others)]


class ClassificationTask(Task):
    """Classification with cross-entropy on logits; reports accuracy and loss.

    Subclasses return their raw arrays from :meth:`load_arrays` and build the model.
    """

    metrics: Mapping[str, Direction] = MappingProxyType(
        {"val_accuracy": "maximize", "val_loss": "minimize"}
    )
    default_metric = "val_accuracy"
    per_feature_scaling: bool = True
    input_shape: tuple[int, ...] | None = None
    loss_kind: LossKind | None = "cross_entropy"  # batch_loss below

    @abc.abstractmethod
    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The features (one row per sample) and integer class labels."""

    def load_data(self) -> TaskData:
        import torch

        x, y = self.load_arrays()
        x_train, y_train, x_val, y_val, x_test, y_test = split_arrays(
            x, y, seed=self.split_seed, stratify=True
        )
        xs = standardize(x_train, x_val, x_test, per_feature=self.per_feature_scaling)
        shape = (-1, *self.input_shape) if self.input_shape else None
        x_train, x_val, x_test = (
            torch.tensor(split, dtype=torch.float32).reshape(shape or split.shape) for split in xs
        )
        y_train, y_val, y_test = (
            torch.tensor(split, dtype=torch.int64) for split in (y_train, y_val, y_test)
        )
        return TaskData(x_train, y_train, x_val, y_val, x_test, y_test)

    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(model(x), y)

    def evaluate(self, model: nn.Module, split: Split) -> dict[str, float]:
        import torch.nn.functional as F

        x, y = self.data.split(split)
        logits = model(x)
        return {
            f"{split}_accuracy": (logits.argmax(dim=1) == y).sum().item() / len(y),
            f"{split}_loss": F.cross_entropy(logits, y).item(),
        }


class RegressionTask(Task):
    """Regression with mean squared error on a standardized target.

    The model learns the target standardized with the training split's statistics;
    ``val_mse`` is reported in the target's own units, ``val_r2`` is the coefficient of
    determination (1 is perfect, 0 is predicting the mean).
    """

    metrics: Mapping[str, Direction] = MappingProxyType(
        {"val_mse": "minimize", "val_r2": "maximize"}
    )
    default_metric = "val_mse"
    target_std: float = 1.0  # the training target's standard deviation, set by load_data
    loss_kind: LossKind | None = "mse"  # batch_loss below

    @abc.abstractmethod
    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The features (one row per sample) and the real-valued target."""

    def load_data(self) -> TaskData:
        import torch

        x, y = self.load_arrays()
        x_train, y_train, x_val, y_val, x_test, y_test = split_arrays(
            x, y, seed=self.split_seed, stratify=False
        )
        self.target_std = float(y_train.std())
        xs = standardize(x_train, x_val, x_test)
        ys = standardize(y_train, y_val, y_test)
        x_train, x_val, x_test = (torch.tensor(split, dtype=torch.float32) for split in xs)
        y_train, y_val, y_test = (
            torch.tensor(split, dtype=torch.float32).reshape(-1, 1) for split in ys
        )
        return TaskData(x_train, y_train, x_val, y_val, x_test, y_test)

    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.mse_loss(model(x), y)

    def evaluate(self, model: nn.Module, split: Split) -> dict[str, float]:
        x, y = self.data.split(split)
        squared_error = (model(x) - y).square().sum().item()
        total = (y - y.mean()).square().sum().item()
        return {
            f"{split}_mse": squared_error / len(y) * self.target_std**2,
            f"{split}_r2": 1.0 - squared_error / total,
        }
