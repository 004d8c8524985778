"""What a task is: data split and scaled once, a model, a training loss and the metrics it reports.

A task is the problem an optimizer is tuned on. The training loop (``studies.training``) only needs
four things from it: the data as in-memory tensors (:attr:`Task.data`), a fresh model
(:meth:`Task.build_model`), the loss of one batch (:meth:`Task.batch_loss`), and the metrics of a
trained model on the validation or test split (:meth:`Task.evaluate`). User tasks subclass
:class:`Task` (or :class:`studies.tasks.supervised.ClassificationTask` ...) and register themselves
under the entry-point group ``hpt.tasks``.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch
    from torch import nn


Direction = Literal["maximize", "minimize"]
Split = Literal["train", "val", "test"]
LossKind = Literal["cross_entropy", "mse"]

DIRECTIONS: tuple[Direction, ...] = ("maximize", "minimize")
LOSS_KINDS: tuple[LossKind, ...] = ("cross_entropy", "mse")


@dataclass(frozen=True)
class TaskData:
    """A task's data as in-memory tensors, split and scaled once.

    The first dimension of every ``x`` and ``y`` tensor indexes samples. A task without data
    (a function to minimise) holds one empty sample per split.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def split(self, name: Split) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(x, y)`` tensors of split ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def to(self, device: torch.device) -> TaskData:
        """The same data on ``device`` (this object itself when it is there already)."""
        tensors = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if all(tensor.device == device for tensor in tensors.values()):
            return self
        return TaskData(**{key: tensor.to(device) for key, tensor in tensors.items()})


class Task(abc.ABC):
    """A training problem a study tunes an optimizer on.

    Subclasses set the class attributes and implement the four abstract methods. The training loop
    calls :meth:`evaluate` in ``eval()`` mode under :func:`torch.inference_mode`, so implementations
    need not.

    Attributes:
        name: Registry key (``"digits_mlp"``).
        description: One line for people choosing a task.
        metrics: The selectable objective metrics and their direction,
            ``{"val_accuracy": "maximize", "val_loss": "minimize"}``.
        default_metric: The metric a study optimises when the request names none.
        default_epochs: Epochs of a trial when the request names none.
        default_batch_size: Batch size when the search space has none (and the optimizer is not
            full-batch).
        batch_size_applies: Whether the batch size changes what a step sees. ``False`` for tasks
            without data, whose every step sees the same (empty) batch: their studies do not
            search a ``batch_size`` and their best params show none.
        steps_per_epoch: For tasks without data (a function to minimise): optimizer steps per epoch,
            each on the whole (empty) training set. ``None`` for tasks with data, where an epoch is
            one pass over the training set.
        split_seed: Seed of the train / validation / test split, fixed so that every trial of every
            study sees the same split.
        loss_kind: What :meth:`batch_loss` computes, when it is exactly
            ``F.cross_entropy(model(x), y)`` on class indices (``"cross_entropy"``) or
            ``F.mse_loss(model(x), y)`` (``"mse"``): the training loop may then compute the
            gradients of a plain MLP by hand (:mod:`studies.fast_mlp`). ``None`` (the default):
            always autograd. It describes the ``batch_loss`` of the class that declares it, so a
            subclass overriding ``batch_loss`` trains through autograd until it declares it again.
    """

    name: str
    description: str
    metrics: Mapping[str, Direction]
    default_metric: str
    default_epochs: int
    default_batch_size: int = 32
    batch_size_applies: bool = True
    steps_per_epoch: int | None = None
    split_seed: int = 0
    loss_kind: LossKind | None = None

    @functools.cached_property
    def data(self) -> TaskData:
        """The task's tensors, loaded on first use and kept by this instance (on
        :attr:`device`)."""
        return self.load_data()

    @property
    def device(self) -> torch.device:
        """Where the task's data are (the CPU until :meth:`to` moves them)."""
        import torch

        return self.__dict__.get("_device", torch.device("cpu"))

    def to(self, device: torch.device) -> Task:
        """Keep the data on ``device`` from now on: moved once, then every trial of this instance
        finds them there. Returns the task.

        A task holding tensors of its own besides :attr:`data` (constants its loss or metrics
        use) overrides this to move them too, calling ``super().to(device)``.
        """
        if device != self.device:
            self.__dict__["data"] = self.data.to(device)
            self.__dict__["_device"] = device
        return self

    @abc.abstractmethod
    def load_data(self) -> TaskData:
        """Load (never download), split with :attr:`split_seed` and scale on the training split."""

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model; the caller seeds torch's global generator first."""

    @abc.abstractmethod
    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The scalar training loss of one batch (a mean over its samples)."""

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, split: Split) -> dict[str, float]:
        """Every metric of ``model`` on ``split``, named as reported.

        Returns:
            For ``"val"`` the keys of :attr:`metrics` (``{"val_accuracy": 0.97, "val_loss": 0.1}``);
            for ``"test"`` their test counterparts (see :meth:`test_metric`).
        """

    def test_metric(self, metric: str) -> str:
        """The test counterpart of a validation metric: ``val_accuracy`` -> ``test_accuracy``,
        ``loss`` -> ``test_loss``."""
        return "test_" + metric.removeprefix("val_")


def check_task(task: object) -> None:
    """Check that ``task`` declares what a study needs (used on plugins before they are listed).

    Raises:
        TypeError: ``task`` is not a :class:`Task`.
        ValueError: a declared attribute is missing or inconsistent; the message names it.
    """
    if not isinstance(task, Task):
        raise TypeError(f"expected a studies.tasks.Task, got {type(task).__name__}")
    for attribute in ("name", "description", "metrics", "default_metric", "default_epochs"):
        if not hasattr(task, attribute):
            raise ValueError(f"task {type(task).__name__} does not declare {attribute!r}")
    if not isinstance(task.name, str) or not task.name.isidentifier():
        raise ValueError(f"task name must be an identifier like 'digits_mlp', got {task.name!r}")
    if not task.metrics:
        raise ValueError(f"task {task.name!r} declares no metrics")
    for metric, direction in task.metrics.items():
        if direction not in DIRECTIONS:
            raise ValueError(
                f"task {task.name!r}: metric {metric!r} has direction {direction!r}; "
                f"use one of {list(DIRECTIONS)}"
            )
    if task.default_metric not in task.metrics:
        raise ValueError(
            f"task {task.name!r}: default_metric {task.default_metric!r} is not one of "
            f"{sorted(task.metrics)}"
        )
    for attribute in ("default_epochs", "default_batch_size"):
        value = getattr(task, attribute)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"task {task.name!r}: {attribute} must be a positive integer")
    if not isinstance(task.batch_size_applies, bool):
        raise ValueError(f"task {task.name!r}: batch_size_applies must be True or False")
    if task.loss_kind is not None and task.loss_kind not in LOSS_KINDS:
        raise ValueError(
            f"task {task.name!r}: loss_kind must be None or one of {list(LOSS_KINDS)}, "
            f"got {task.loss_kind!r}"
        )
    steps = task.steps_per_epoch
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"task {task.name!r}: steps_per_epoch must be None or a positive integer")
