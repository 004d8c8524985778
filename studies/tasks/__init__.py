"""Training tasks by name: the built-ins and user tasks plugged in through entry points.

A user package registers a task in its ``pyproject.toml``::

    [project.entry-points."hpt.tasks"]
    my_task = "my_package.tasks:MyTask"

The entry point names a :class:`Task` subclass, a zero-argument callable returning a task, or a task
instance; the entry point's name must equal the task's ``name``. Only names listed by
:func:`available_tasks` can be run: a name from a request is looked up, never imported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType

from studies.tasks.base import Direction, Task, TaskData, check_task
from studies.tasks.breast_cancer_logreg import BreastCancerLogReg
from studies.tasks.diabetes_mlp import DiabetesMLP
from studies.tasks.digits_cnn import DigitsCNN
from studies.tasks.digits_mlp import DigitsMLP
from studies.tasks.noisy_quadratic import NoisyQuadratic
from studies.tasks.rosenbrock import Rosenbrock
from studies.tasks.supervised import ClassificationTask, RegressionTask
from studies.tasks.wine_mlp import WineMLP

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hpt.tasks"

BUILTIN_TASKS: Mapping[str, Callable[[], Task]] = MappingProxyType(
    {
        cls.name: cls
        for cls in (
            DigitsMLP,
            DigitsCNN,
            BreastCancerLogReg,
            WineMLP,
            DiabetesMLP,
            Rosenbrock,
            NoisyQuadratic,
        )
    }
)


def _load_plugin(entry_point: EntryPoint) -> Task:
    loaded = entry_point.load()
    task = loaded if isinstance(loaded, Task) else loaded()
    check_task(task)
    if task.name != entry_point.name:
        raise ValueError(
            f"entry point {entry_point.name!r} provides a task named {task.name!r}; "
            "the two names must match"
        )
    return task


def available_tasks() -> dict[str, Task]:
    """Every runnable task by name: the built-ins, then the plugins of group ``hpt.tasks``.

    A plugin that fails to import or to build, declares an inconsistent task, or reuses a taken
    name is logged and skipped; it never makes this function fail.

    Returns:
        A new dict of fresh task instances (each loads its data on first use).
    """
    tasks: dict[str, Task] = {name: factory() for name, factory in BUILTIN_TASKS.items()}
    try:
        plugins = entry_points(group=ENTRY_POINT_GROUP)
    except Exception:
        logger.exception(
            "task plugins skipped: the installed packages' entry points are unreadable"
        )
        return tasks
    for entry_point in plugins:
        if entry_point.name in tasks:
            logger.warning(
                "task plugin %r (%s) skipped: the name is already taken",
                entry_point.name,
                entry_point.value,
            )
            continue
        try:
            tasks[entry_point.name] = _load_plugin(entry_point)
        except (Exception, SystemExit):  # a plugin calling sys.exit() on import must not end us
            logger.exception(
                "task plugin %r (%s) skipped: it failed to load",
                entry_point.name,
                entry_point.value,
            )
    return tasks


def get_task(name: str) -> Task:
    """A fresh instance of the task registered as ``name``.

    Raises:
        KeyError: unknown name; the message lists the valid ones.
    """
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]()
    tasks = available_tasks()
    try:
        return tasks[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; choose one of {sorted(tasks)}") from None


__all__ = [
    "BUILTIN_TASKS",
    "ENTRY_POINT_GROUP",
    "ClassificationTask",
    "Direction",
    "RegressionTask",
    "Task",
    "TaskData",
    "available_tasks",
    "check_task",
    "get_task",
]
