"""Best configs: per study (each optimizer's representative config, and the winner the verdict
names) and over every study of a task (the catalogue behind ``/api/v1/best``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from optim_core.registry import OPTIMIZERS
from service.api.schemas import (
    BestOut,
    BestTrialOut,
    ConfirmedOut,
    SeedSummaryOut,
)
from service.errors import FieldError, InvalidRequest
from service.store.database import Database, as_utc
from service.store.tables import StudyOptimizerRow, StudyRow, TrialSlotRow
from service.studies.confirmation import verdict_of
from service.studies.lookup import study_row
from service.studies.requests import task_names
from service.vocabulary import (
    EXTERNAL_TASK,
    Direction,
    StudyStatus,
)
from studies.tasks import available_tasks
from studies.verdict import StudyVerdict, Summary


def _best_out(
    study: str, optimizer: str, slot: TrialSlotRow, confirmed: ConfirmedOut | None = None
) -> BestTrialOut:
    spec = OPTIMIZERS.get(optimizer)
    params = dict(slot.params or {})
    return BestTrialOut(
        origin=slot.origin,
        confirmed=confirmed,
        study=study,
        optimizer=optimizer,
        number=slot.trial_number if slot.trial_number is not None else -1,
        value=float(slot.value if slot.value is not None else math.nan),
        params=params,
        test_value=slot.test_value,
        test_metrics=dict(slot.test_metrics or {}),
        python=spec.python_line(params) if spec is not None and params else None,
        completed_at=as_utc(slot.ended_at),
    )


def best_slots(session: Session, pairs: Sequence[StudyOptimizerRow]) -> dict[int, BestTrialOut]:
    ids = [p.best_slot_id for p in pairs if p.best_slot_id is not None]
    if not ids:
        return {}
    slots = {
        s.id: s for s in session.scalars(sa.select(TrialSlotRow).where(TrialSlotRow.id.in_(ids)))
    }
    return {
        p.id: _best_out(p.study.name, p.optimizer, slots[p.best_slot_id])
        for p in pairs
        if p.best_slot_id in slots
    }


def rank(best: Iterable[BestTrialOut], direction: str | None) -> list[BestTrialOut]:
    """Best first: highest value when maximizing, lowest when minimizing."""
    return sorted(best, key=lambda trial: trial.value, reverse=direction == Direction.MAXIMIZE)


def study_best(db: Database, name: str) -> BestOut:
    """The best config of each optimizer of a study, best first, and the winner.

    Raises:
        StudyNotFound: no such study.
    """
    with db.read() as session:
        study = study_row(session, name)
        verdict = verdict_of(session, study)
        if verdict is None:
            ranked = rank(best_slots(session, list(study.optimizers)).values(), study.direction)
            winner, leaders = (ranked[0] if ranked else None), []
        else:
            ranked, winner, leaders = _confirmed_best(session, study, verdict)
        return BestOut(
            task=study.task,
            metric=study.metric,
            direction=study.direction,
            studies=[name],
            optimizers=ranked,
            winner=winner,
            leaders=leaders,
            verdict=None if verdict is None else verdict.verdict.to_json(),
            status=study.status,
        )


def _summary_out(summary: Summary) -> SeedSummaryOut:
    return SeedSummaryOut(
        n=summary.n,
        mean=summary.mean,
        std=summary.std,
        ci_low=summary.ci_low,
        ci_high=summary.ci_high,
        confidence=summary.confidence,
        values=list(summary.values),
    )


def _confirmed_best(
    session: Session, study: StudyRow, verdict: StudyVerdict
) -> tuple[list[BestTrialOut], BestTrialOut | None, list[str]]:
    """Each optimizer's representative confirmed config, in the verdict's order, the winner
    (only one beyond noise) and the leaders."""
    keys = [r.config.key for r in verdict.results if r.config is not None]
    slots = {
        s.id: s for s in session.scalars(sa.select(TrialSlotRow).where(TrialSlotRow.id.in_(keys)))
    }
    entries: dict[str, BestTrialOut] = {}
    for result in verdict.results:
        if result.config is None or result.config.key not in slots:
            continue
        standing = verdict.verdict.standing(result.optimizer)
        entries[result.optimizer] = _best_out(
            study.name,
            result.optimizer,
            slots[result.config.key],
            ConfirmedOut(
                value=_summary_out(result.val),
                test_value=_summary_out(result.test),
                status=standing.status,
            ),
        )
    winner_name = verdict.verdict.winner
    return (
        list(entries.values()),
        entries.get(winner_name) if winner_name else None,
        list(verdict.verdict.leaders),
    )


def best_for_task(
    db: Database,
    *,
    task: str,
    optimizer: str | None = None,
    metric: str | None = None,
    direction: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> BestOut:
    """The best known config of each optimizer for a task, over every study of it that optimises
    the same metric; ``studies`` lists them, a page at a time (newest first).

    Each optimizer's best is one indexed lookup of the best (study, optimizer) row, whatever the
    number of studies and trials stored.

    Raises:
        InvalidRequest: unknown task, optimizer or metric; the message lists the valid ones.
    """
    metric, direction = _task_objective(task, metric, direction)
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise _query_error(
            "optimizer", f"unknown optimizer {optimizer!r}; choose from {sorted(OPTIMIZERS)}"
        )
    scope = [
        StudyRow.task == task,
        StudyRow.metric == metric,
        StudyRow.status != StudyStatus.DELETING,
    ]
    if direction is not None:
        scope.append(StudyRow.direction == direction)
    if since is not None:
        utc = since if since.tzinfo is None else since.astimezone(UTC).replace(tzinfo=None)
        scope.append(StudyRow.created_at >= utc)
    with db.read() as session:
        directions = set(
            session.scalars(sa.select(StudyRow.direction).where(*scope).distinct().limit(3))
        )
        if len(directions) > 1:
            raise _query_error(
                "direction",
                f"studies of task {task!r} disagree on whether to minimize or maximize "
                f"{metric!r}; add direction=minimize or direction=maximize",
            )
        direction = direction or next(iter(directions), None)
        optimizers = [optimizer] if optimizer is not None else sorted(OPTIMIZERS)
        best = []
        for name in optimizers:
            found = _best_of_optimizer(session, scope, name, direction)
            if found is not None:
                best.append(found)
        studies = session.scalars(
            sa.select(StudyRow.name)
            .where(*scope)
            .order_by(StudyRow.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
        ranked = rank(best, direction)
        return BestOut(
            task=task,
            metric=metric,
            direction=direction,
            studies=list(studies),
            optimizers=ranked,
            winner=ranked[0] if ranked else None,
        )


def _best_of_optimizer(
    session: Session, scope: Sequence[Any], optimizer: str, direction: str | None
) -> BestTrialOut | None:
    order = (
        StudyOptimizerRow.best_value.desc()
        if direction == Direction.MAXIMIZE
        else StudyOptimizerRow.best_value.asc()
    )
    row = session.execute(
        sa.select(StudyRow.name, StudyOptimizerRow.best_slot_id)
        .join(StudyOptimizerRow)
        .where(
            *scope,
            StudyOptimizerRow.optimizer == optimizer,
            StudyOptimizerRow.best_value.is_not(None),
        )
        .order_by(order, StudyOptimizerRow.id)
        .limit(1)
    ).one_or_none()
    if row is None:
        return None
    slot = session.get(TrialSlotRow, row.best_slot_id)
    return None if slot is None else _best_out(row.name, optimizer, slot)


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
