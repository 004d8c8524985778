"""Best configs: per study (each optimizer's representative config, and the winner the verdict
names) and over every study of a task (the catalogue behind ``/api/v1/best``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
    SlotOutcome,
    SlotState,
    StudyStatus,
)
from studies.tasks import available_tasks
from studies.verdict import StudyVerdict, Summary, summarize


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
        # A confirmed config's figure is its mean over seeds, never one run of it.
        value=float(
            confirmed.value.mean
            if confirmed is not None and confirmed.value.mean is not None
            else slot.value
            if slot.value is not None
            else math.nan
        ),
        search_value=slot.value,
        params=params,
        test_value=(
            confirmed.test_value.mean
            if confirmed is not None and confirmed.test_value.mean is not None
            else slot.test_value
        ),
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
        else:
            ranked = _confirmed_best(session, study, verdict)
        answer = answer_of(study, verdict, ranked)
        winner = next((b for b in ranked if b.optimizer == answer.winner), None)
        return BestOut(
            task=study.task,
            model=study.model,
            metric=study.metric,
            direction=study.direction,
            studies=[name],
            optimizers=ranked,
            winner=winner,
            leaders=answer.leaders,
            basis=answer.basis,
            answer=answer.sentence,
            verdict=None if verdict is None else verdict.verdict.to_json(),
            status=study.status,
        )


@dataclass(frozen=True)
class Answer:
    """What a study answers, one answer for every surface (API, CLI, report, dashboard).

    Attributes:
        basis: ``"verdict"`` (the confirmation's seeds decide), ``"search"`` (single search
            runs: no confirmation, or it has not started) or ``"none"`` (nothing finished).
        winner: Named only when the verdict names one; without a confirmation, a study that
            completed with one strictly best search value; never while the study runs.
        leaders: The tied leaders (every optimizer at the best search value, when single runs).
        sentence: The answer in words.
    """

    basis: str
    winner: str | None
    leaders: list[str]
    sentence: str


def study_answer(session: Session, study: StudyRow, ranked: Sequence[BestTrialOut]) -> Answer:
    """The study's answer: the verdict's once the confirmation has seeds, else the search's
    (``ranked``: each optimizer's best search run, best first)."""
    return answer_of(study, verdict_of(session, study), ranked)


def answer_of(
    study: StudyRow, verdict: StudyVerdict | None, ranked: Sequence[BestTrialOut]
) -> Answer:
    """The verdict's answer when there is one, else the search's (:func:`search_answer`)."""
    if verdict is None:
        return search_answer(study, ranked)
    return Answer(
        "verdict", verdict.verdict.winner, verdict.verdict.leaders, verdict.verdict.sentence
    )


def search_answer(study: StudyRow, ranked: Sequence[BestTrialOut]) -> Answer:
    """The answer from single search runs: equal values are a tie, never broken by the order the
    optimizers are listed in, and a confirmation still to come names no winner yet."""
    if not ranked:
        return Answer("none", None, [], "No trial has completed yet.")
    top = ranked[0].value
    leaders = [b.optimizer for b in ranked if b.value == top]
    figure = f"{study.metric} {top:.4g}"
    # Still running (more trials, or a confirmation, to come): leading, not winning.
    confirming = study.status != StudyStatus.COMPLETED
    if len(leaders) > 1:
        sentence = (
            f"Tied on single search runs: {', '.join(leaders)} at {figure}; single runs are "
            "not compared over seeds."
        )
        return Answer("search", None, leaders, sentence)
    if confirming:
        then = "the confirmation on fresh seeds decides" if study.confirm_top_k else "more to come"
        sentence = f"Leading the search so far: {leaders[0]}, {figure} (a single run); {then}."
        return Answer("search", None, leaders, sentence)
    sentence = (
        f"Best single search run: {leaders[0]}, {figure}; without a confirmation, not compared "
        "over seeds."
    )
    return Answer("search", leaders[0], leaders, sentence)


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
) -> list[BestTrialOut]:
    """Each optimizer's representative confirmed config, in the verdict's order (every optimizer
    of the study: one without a finished seed with its best search config and no seeds)."""
    pairs = {pair.optimizer: pair for pair in study.optimizers}
    keys = [r.config.key for r in verdict.results if r.config is not None]
    # An optimizer none of whose seeds finished is shown with its best search config.
    keys += [p.best_slot_id for p in pairs.values() if p.best_slot_id is not None]
    slots = {
        s.id: s for s in session.scalars(sa.select(TrialSlotRow).where(TrialSlotRow.id.in_(keys)))
    }
    entries: dict[str, BestTrialOut] = {}
    for result in verdict.results:
        pair = pairs[result.optimizer]
        key = result.config.key if result.config is not None else pair.best_slot_id
        if key not in slots:
            continue
        standing = verdict.verdict.standing(result.optimizer)
        entries[result.optimizer] = _best_out(
            study.name,
            result.optimizer,
            slots[key],
            ConfirmedOut(
                value=_summary_out(result.val),
                test_value=_summary_out(result.test),
                status=standing.status,
            ),
        )
    return list(entries.values())


def best_for_task(
    db: Database,
    *,
    task: str,
    model: str | None = None,
    optimizer: str | None = None,
    metric: str | None = None,
    direction: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> BestOut:
    """The best known config of each optimizer for a model, over every study of it that
    optimises the same metric; ``studies`` lists them, a page at a time (newest first). A
    built-in task is its own model; task ``external`` needs ``model``. A config a study
    confirmed is shown with its mean over seeds (its ``confirmed`` figures), never one seed.

    Each optimizer's best is one indexed lookup of the best (study, optimizer) row, whatever the
    number of studies and trials stored.

    Raises:
        InvalidRequest: unknown task, optimizer or metric; the message lists the valid ones.
    """
    metric, direction = _task_objective(task, metric, direction)
    model = _model_of(task, model)
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise _query_error(
            "optimizer", f"unknown optimizer {optimizer!r}; choose from {sorted(OPTIMIZERS)}"
        )
    scope = [
        StudyRow.task == task,
        StudyRow.model == model,
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
        top = [b for b in ranked if ranked and b.value == ranked[0].value]
        return BestOut(
            task=task,
            model=model,
            metric=metric,
            direction=direction,
            studies=list(studies),
            optimizers=ranked,
            # Across studies there is no verdict: one optimizer strictly best, or a tie.
            winner=top[0] if len(top) == 1 else None,
            leaders=[b.optimizer for b in top],
            basis="catalogue",
        )


def _model_of(task: str, model: str | None) -> str:
    if task != EXTERNAL_TASK:
        if model is not None and model != task:
            raise _query_error(
                "model", f"task {task!r} is its own model; leave 'model' out or set it to {task!r}"
            )
        return task
    if not model:
        raise _query_error(
            "model",
            "task 'external' holds the models of many users; add model=<the model's name> "
            "(the 'model' its studies were created with, or the study's name)",
        )
    return model


def _best_of_optimizer(
    session: Session, scope: Sequence[Any], optimizer: str, direction: str | None
) -> BestTrialOut | None:
    order = (
        StudyOptimizerRow.best_value.desc()
        if direction == Direction.MAXIMIZE
        else StudyOptimizerRow.best_value.asc()
    )
    row = session.execute(
        sa.select(StudyRow.name, StudyOptimizerRow.best_slot_id, StudyOptimizerRow.id)
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
    if slot is None:
        return None
    return _best_out(row.name, optimizer, slot, _confirmation_of(session, row.id, slot.id))


def _confirmation_of(session: Session, pair_id: int, slot_id: int) -> ConfirmedOut | None:
    """The confirmed figures of a search config (its seeds' mean and spread), if it has seeds."""
    seeds = session.execute(
        sa.select(TrialSlotRow.value, TrialSlotRow.test_value).where(
            TrialSlotRow.study_optimizer_id == pair_id,
            TrialSlotRow.confirm_of == slot_id,
            TrialSlotRow.state == SlotState.FINISHED,
            TrialSlotRow.outcome == SlotOutcome.COMPLETE,
        )
    ).all()
    values = [value for value, _ in seeds if value is not None]
    if not values:
        return None
    tests = [test for _, test in seeds if test is not None]
    return ConfirmedOut(
        value=_summary_out(summarize(values)),
        test_value=_summary_out(summarize(tests if len(tests) == len(values) else [])),
        status="confirmed",
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
