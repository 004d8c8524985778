"""(task, optimizer spec, search space, budget) -> the Optuna objective of one trial.

A trial samples the space, trains (:func:`studies.training.train`), reports the validation metric
after every epoch and stops when the pruner says so, on divergence or past its time limit (ending
PRUNED, with the reason in the user attribute ``pruned_reason``). A completed trial returns the
validation metric of its last epoch, which is what the trained model gives (not the best epoch's,
which no model would reproduce), and stores its test metrics once.

User attributes of a trial (JSON values; the REST API reads them):

=====================  ==========================================================================
``optimizer``          registry name of the optimizer
``origin``             where the config came from: ``catalogue``, ``portfolio``, ``lr_range`` (set
                       when the trial was queued, :mod:`studies.warm_start`) or ``sampler``
``origin_source``      warm-start trials: the earlier study's name, or ``"shipped portfolio"``
``hyperparameters``    the sampled values, fixed ones included: ``{"lr": 0.001, "beta1": 0.9, ...}``
``seed``               the training seed (initial weights, batch order): from the study's seed and
                       the trial's number (:func:`studies.seeds.training_seed`)
``curves``             per epoch: ``train_loss`` and every validation metric of the task
``epochs_run``         completed epochs
``test_metrics``       completed trials: ``{"test_accuracy": 0.98, "test_loss": 0.07}``
``test_value``         completed trials: the test counterpart of the study's metric
``pruned_reason``      pruned trials: ``"diverged: loss is nan at epoch 3"`` ...
``error``              failed trials: the exception, then re-raised
=====================  ==========================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from optim_core.registry import OptimizerSpec
from optim_core.spaces import Dimension, sample_space
from studies.seeds import training_seed
from studies.tasks.base import Task
from studies.warm_start import record_origin

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TrialPlan:
    """Everything a trial needs besides the Optuna trial itself.

    Args:
        task: The task to train.
        optimizer: The registry spec of the optimizer.
        space: The search space, already resolved (:func:`task_space`).
        epochs: Epochs per trial.
        metric: The objective, one of ``task.metrics``.
        seed: Base seed; each trial's seed is derived from it and the trial number.
        time_limit: Seconds per trial, or ``None``.
        device: Where trials train (a ``torch.device`` or a name of
            :func:`studies.devices.resolve_device`); ``None``: the CPU.

    Raises:
        ValueError: an unknown metric, or a budget that is not positive.
    """

    task: Task
    optimizer: OptimizerSpec
    space: Mapping[str, Dimension]
    epochs: int
    metric: str
    seed: int = 0
    time_limit: float | None = None
    device: torch.device | str | None = None

    def __post_init__(self) -> None:
        study_direction(self.task, self.metric)
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise ValueError(f"time_limit must be positive seconds, got {self.time_limit!r}")
        if self.device is not None:  # a bad or absent device fails here, not in every trial
            # Here, as training is: the API checks requests with task_space and trains nothing.
            from studies.devices import resolve_device

            object.__setattr__(self, "device", resolve_device(self.device))


def task_space(
    task: Task | None, optimizer: OptimizerSpec, overrides: Mapping[str, Any] | None = None
) -> dict[str, Dimension]:
    """The search space of ``optimizer`` on ``task``, with a user's JSON ``overrides``.

    A task whose batch size does nothing (``task.batch_size_applies`` false: no data) searches no
    ``batch_size``. ``task=None`` is a task this process does not train (ask/tell's
    ``external``): the whole space.

    Raises:
        optim_core.SpaceError: overrides that do not fit the optimizer or the task.
    """
    applies = task is None or task.batch_size_applies
    return optimizer.resolve_space(overrides, batch_size=applies)


def study_direction(task: Task, metric: str) -> str:
    """``"maximize"`` or ``"minimize"``: the direction of ``metric`` on ``task``.

    Raises:
        ValueError: ``metric`` is not one of the task's metrics; the message lists them.
    """
    try:
        return task.metrics[metric]
    except KeyError:
        raise ValueError(
            f"unknown metric {metric!r} for task {task.name!r}; "
            f"choose one of {sorted(task.metrics)}"
        ) from None


def _json_value(value: Any) -> Any:
    """Plain JSON types (numpy scalars unwrapped, non-finite floats as ``None``)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _pruner_name(trial: optuna.Trial) -> str:
    study = getattr(trial, "study", None)
    return type(study.pruner).__name__ if study is not None else "the pruner"


def _run_trial(plan: TrialPlan, trial: optuna.Trial) -> float:
    from studies.training import evaluate, train

    values = sample_space(trial, plan.space)
    record_origin(trial)
    trial.set_user_attr("optimizer", plan.optimizer.name)
    trial.set_user_attr("hyperparameters", {key: _json_value(v) for key, v in values.items()})

    def report(epoch: int, metrics: Mapping[str, float]) -> str | None:
        trial.report(metrics[plan.metric], epoch)
        if trial.should_prune():
            return f"pruned by {_pruner_name(trial)} at epoch {epoch}"
        return None

    seed = training_seed(plan.seed, trial.number)
    trial.set_user_attr("seed", seed)
    result = train(
        plan.task,
        plan.optimizer,
        values,
        epochs=plan.epochs,
        seed=seed,
        time_limit=plan.time_limit,
        on_epoch=report,
        device=plan.device,
    )
    trial.set_user_attr("curves", result.curves)
    trial.set_user_attr("epochs_run", result.epochs_run)
    if result.stop_reason is not None:
        trial.set_user_attr("pruned_reason", result.stop_reason)
        raise optuna.TrialPruned(result.stop_reason)

    test_metrics = {
        name: _json_value(v) for name, v in evaluate(plan.task, result.model, "test").items()
    }
    trial.set_user_attr("test_metrics", test_metrics)
    test_name = plan.task.test_metric(plan.metric)
    if test_name not in test_metrics:
        raise ValueError(
            f"task {plan.task.name!r}: evaluate(model, 'test') returned {sorted(test_metrics)}, "
            f"without {test_name!r}, the test counterpart of {plan.metric!r}"
        )
    trial.set_user_attr("test_value", test_metrics[test_name])
    return result.curves[plan.metric][-1]


def make_objective(plan: TrialPlan) -> Callable[[optuna.Trial], float]:
    """The Optuna objective that runs one trial of ``plan``.

    Returns:
        ``objective(trial) -> float``: the validation metric of the last epoch. It raises
        :class:`optuna.TrialPruned` for pruned, diverged and timed-out trials; any other exception
        is recorded in the user attribute ``error`` and re-raised, so run it with
        ``study.optimize(..., catch=(Exception,))`` to keep the caller alive.
    """

    def objective(trial: optuna.Trial) -> float:
        try:
            return _run_trial(plan, trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise

    return objective
