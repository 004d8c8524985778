"""Best configs: per optimizer, the best complete trial, with what a user needs to reuse it.

A best config carries the metric it reached, its hyperparameters as the optimizer takes them, the
test metric measured once at the end of the trial, and the line of Python that builds the
optimizer. It is looked up for one study or, per task and metric, over all studies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial
from sqlalchemy.engine import Engine

from optim_core.registry import OPTIMIZERS
from service.db import StudyOptimizerRow, StudyRow, session_scope
from service.errors import FieldError, InvalidRequest
from service.slots import EXTERNAL_TASK
from service.study_ops import study_row, task_names
from studies.tasks import available_tasks


@dataclass(frozen=True)
class BestTrial:
    """The best trial of one optimizer: what it reached and how to build that optimizer."""

    study: str
    optimizer: str
    number: int
    value: float
    params: dict[str, Any]
    test_value: float | None
    test_metrics: dict[str, Any]
    python: str | None
    completed_at: datetime | None


@dataclass(frozen=True)
class BestReport:
    """Best config per optimizer, best first, and the overall winner."""

    task: str
    metric: str | None
    direction: str | None
    studies: list[str]
    optimizers: list[BestTrial]
    winner: BestTrial | None
    status: str | None = None


def optuna_time(value: datetime | None) -> datetime | None:
    """A naive local datetime of Optuna's tables, timezone-aware in UTC."""
    return None if value is None else value.astimezone(UTC)


def hyperparameters(trial: FrozenTrial) -> dict[str, Any]:
    """The user-facing values of a trial (``beta1``, not Optuna's ``one_minus_beta1``)."""
    values = trial.user_attrs.get("hyperparameters")
    return dict(values) if isinstance(values, Mapping) else dict(trial.params)


def best_trial(
    storage: optuna.storages.BaseStorage, *, study: str, optimizer: str, optuna_study_name: str
) -> BestTrial | None:
    """The best complete trial of one optimizer of a study; ``None`` while there is none."""
    try:
        trial = storage.get_best_trial(storage.get_study_id_from_name(optuna_study_name))
    except (KeyError, ValueError):  # no such Optuna study / no complete trial yet
        return None
    values = trial.user_attrs.get("hyperparameters")
    spec = OPTIMIZERS.get(optimizer)
    python = spec.python_line(values) if spec is not None and isinstance(values, Mapping) else None
    test_metrics = trial.user_attrs.get("test_metrics")
    return BestTrial(
        study=study,
        optimizer=optimizer,
        number=trial.number,
        value=float(trial.value),
        params=hyperparameters(trial),
        test_value=trial.user_attrs.get("test_value"),
        test_metrics=dict(test_metrics) if isinstance(test_metrics, Mapping) else {},
        python=python,
        completed_at=optuna_time(trial.datetime_complete),
    )


def rank(best: Iterable[BestTrial], direction: str | None) -> list[BestTrial]:
    """Best first: highest value when maximizing, lowest when minimizing."""
    return sorted(best, key=lambda trial: trial.value, reverse=direction == "maximize")


def study_best(*, engine: Engine, storage: optuna.storages.BaseStorage, name: str) -> BestReport:
    """The best config of each optimizer of a study, best first, and the winner.

    Optimizers without a complete trial yet are left out.

    Raises:
        StudyNotFound: no such study.
    """
    with session_scope(engine) as session:
        study = study_row(session, name)
        task, metric, direction, status = study.task, study.metric, study.direction, study.status
        pairs = [(pair.optimizer, pair.optuna_study_name) for pair in study.optimizers]
    found = (
        best_trial(storage, study=name, optimizer=optimizer, optuna_study_name=optuna_name)
        for optimizer, optuna_name in pairs
    )
    ranked = rank((best for best in found if best is not None), direction)
    return BestReport(
        task=task,
        metric=metric,
        direction=direction,
        studies=[name],
        optimizers=ranked,
        winner=ranked[0] if ranked else None,
        status=status,
    )


def best_for_task(
    *,
    engine: Engine,
    storage: optuna.storages.BaseStorage,
    task: str,
    optimizer: str | None = None,
    metric: str | None = None,
    direction: str | None = None,
) -> BestReport:
    """The best known config of each optimizer for a task, over every study of it that optimises
    the same metric.

    Args:
        engine: Engine of the service's tables.
        storage: Optuna's storage.
        task: A task name (or ``"external"``).
        optimizer: Only this optimizer.
        metric: The metric compared; default: the task's default metric (required for
            ``external``, whose studies name their own).
        direction: For ``external`` studies whose metrics share a name but not a direction.

    Raises:
        InvalidRequest: unknown task, optimizer or metric; the message lists the valid ones.
    """
    metric, direction = _task_objective(task, metric, direction)
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise _query_error(
            "optimizer", f"unknown optimizer {optimizer!r}; choose from {sorted(OPTIMIZERS)}"
        )
    query = (
        sa.select(
            StudyRow.name,
            StudyRow.direction,
            StudyOptimizerRow.optimizer,
            StudyOptimizerRow.optuna_study_name,
        )
        .join(StudyOptimizerRow)
        .where(StudyRow.task == task, StudyRow.metric == metric)
        .order_by(StudyRow.id, StudyOptimizerRow.position)
    )
    if optimizer is not None:
        query = query.where(StudyOptimizerRow.optimizer == optimizer)
    if direction is not None:
        query = query.where(StudyRow.direction == direction)
    with session_scope(engine) as session:
        pairs = session.execute(query).all()
    directions = {row.direction for row in pairs}
    if len(directions) > 1:
        raise _query_error(
            "direction",
            f"studies of task {task!r} disagree on whether to minimize or maximize {metric!r}; "
            "add direction=minimize or direction=maximize",
        )
    direction = direction or next(iter(directions), None)
    best: dict[str, BestTrial] = {}
    for study_name, _, pair_optimizer, optuna_name in pairs:
        candidate = best_trial(
            storage, study=study_name, optimizer=pair_optimizer, optuna_study_name=optuna_name
        )
        if candidate is None:
            continue
        current = best.get(pair_optimizer)
        if current is None or rank([candidate, current], direction)[0] is candidate:
            best[pair_optimizer] = candidate
    ranked = rank(best.values(), direction)
    return BestReport(
        task=task,
        metric=metric,
        direction=direction,
        studies=sorted({row.name for row in pairs}),
        optimizers=ranked,
        winner=ranked[0] if ranked else None,
    )


def _task_objective(task: str, metric: str | None, direction: str | None) -> tuple[str, str | None]:
    """The metric compared for ``task`` and its direction (``None``: decided by the studies)."""
    if task == EXTERNAL_TASK:
        if not metric:
            raise _query_error(
                "metric", "task 'external' has no default metric; add metric=<its name>"
            )
        return metric, direction
    found = available_tasks().get(task)
    if found is None:
        raise _query_error("task", f"unknown task {task!r}; choose one of {task_names()}")
    metric = metric or found.default_metric
    if metric not in found.metrics:
        raise _query_error(
            "metric",
            f"task {task!r} has no metric {metric!r}; choose one of {sorted(found.metrics)}",
        )
    if direction is not None and direction != found.metrics[metric]:
        raise _query_error(
            "direction",
            f"{metric!r} of task {task!r} is always to {found.metrics[metric]}; leave "
            "'direction' out",
        )
    return metric, found.metrics[metric]


def _query_error(parameter: str, msg: str) -> InvalidRequest:
    return InvalidRequest([FieldError(("query", parameter), msg)])
