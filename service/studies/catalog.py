"""The tasks a study may name, as the API lists them."""

from __future__ import annotations

from service.api.schemas import (
    TaskOut,
)
from service.vocabulary import (
    EXTERNAL_TASK,
)
from studies.tasks import available_tasks

EXTERNAL_TASK_OUT = TaskOut(
    name=EXTERNAL_TASK,
    description="Your own training code runs the trials: POST .../trials/ask for hyperparameters, "
    "report intermediate values, tell the result. A study on it names its metric and direction.",
    metrics={},
    default_metric=None,
    direction=None,
    default_epochs=None,
    external=True,
)


def task_catalog() -> list[TaskOut]:
    """Every task a study may name, by name, and the pseudo-task ``external`` last."""
    tasks = available_tasks()
    return [
        *(
            TaskOut(
                name=task.name,
                description=task.description,
                metrics=dict(task.metrics),
                default_metric=task.default_metric,
                direction=task.metrics[task.default_metric],
                default_epochs=task.default_epochs,
                external=False,
            )
            for task in (tasks[name] for name in sorted(tasks))
        ),
        EXTERNAL_TASK_OUT,
    ]
