"""Reading studies back, as the API's response models: status and progress, the study list, a
page of trials, best configs (per study and over every study of a task), the task catalogue and
the figures of ``/metrics``.

Every count, progress figure and ETA comes from the slot record (:mod:`service.tables`), read in
one short read transaction that never waits for the write lock. The cost of a read does not grow
with the history: counters and each optimizer's best are kept on its row as slots change, and a
page of trials is one page of slot rows, each completed with its Optuna trial
(:func:`service.optuna_bridge.get_trial`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import optuna
import sqlalchemy as sa
from sqlalchemy.orm import Session

from optim_core.registry import OPTIMIZERS
from service import optuna_bridge
from service.confirmation import verdict_of
from service.database import Database, as_utc, db_now
from service.errors import FieldError, InvalidRequest, StudyNotFound
from service.schemas import (
    BestOut,
    BestTrialOut,
    ConfirmedOut,
    EtaOut,
    OptimizerProgressOut,
    ProgressOut,
    SeedSummaryOut,
    StudyOut,
    StudyPageOut,
    StudySummaryOut,
    TaskOut,
    TrialOut,
    TrialPageOut,
)
from service.study_requests import task_names
from service.tables import StudyOptimizerRow, StudyRow, TrialSlotRow, WorkerRow
from service.vocabulary import (
    ACCEPTING_TRIALS,
    EXTERNAL_TASK,
    Direction,
    SlotOutcome,
    SlotState,
    StudyStatus,
    TrialState,
)
from studies.tasks import available_tasks
from studies.verdict import StudyVerdict, Summary

# A worker is live while its heartbeats keep coming; a few missed beats are tolerated.
LIVE_WORKER_BEATS = 3
# The ETA averages the durations of this many most recent finished trials of the study.
ETA_WINDOW = 50

# Which slots each API trial state lists.
_STATE_FILTERS: Mapping[TrialState, Any] = {
    TrialState.WAITING: TrialSlotRow.state == SlotState.CLAIMED,
    TrialState.RUNNING: TrialSlotRow.state == SlotState.RUNNING,
    TrialState.COMPLETE: sa.and_(
        TrialSlotRow.state == SlotState.FINISHED, TrialSlotRow.outcome == SlotOutcome.COMPLETE
    ),
    TrialState.PRUNED: sa.and_(
        TrialSlotRow.state == SlotState.FINISHED, TrialSlotRow.outcome == SlotOutcome.PRUNED
    ),
    TrialState.FAILED: sa.and_(
        TrialSlotRow.state == SlotState.RELEASED, TrialSlotRow.trial_id.is_not(None)
    ),
}


def trial_state(slot: TrialSlotRow) -> TrialState:
    """How the API names the state of the trial a slot ran."""
    if slot.state == SlotState.CLAIMED:
        return TrialState.WAITING
    if slot.state == SlotState.RUNNING:
        return TrialState.RUNNING
    if slot.state == SlotState.FINISHED:
        return TrialState.PRUNED if slot.outcome == SlotOutcome.PRUNED else TrialState.COMPLETE
    return TrialState.FAILED


def _study_row(session: Session, name: str) -> StudyRow:
    study = session.scalar(sa.select(StudyRow).where(StudyRow.name == name))
    if study is None:
        raise StudyNotFound(name)
    return study


# --------------------------------------------------------------------------- one study


def study_view(db: Database, name: str, *, heartbeat_interval: int) -> StudyOut:
    """Status, per-optimizer progress, best so far and ETA of the study ``name``.

    Raises:
        StudyNotFound: no such study.
    """
    with db.read() as session:
        study = _study_row(session, name)
        pairs = list(study.optimizers)
        held = _held_counts(session, [p.id for p in pairs])
        bests = _best_slots(session, pairs)
        durations = _recent_durations(session, [p.id for p in pairs])
        live = _live_workers(session, heartbeat_interval)
        progress = [
            OptimizerProgressOut(
                optimizer=p.optimizer,
                optuna_study_name=p.optuna_study_name,
                n_trials=p.n_trials,
                search_trials=p.search_trials or p.n_trials,
                confirm_trials=p.n_trials - (p.search_trials or p.n_trials),
                finished=p.finished,
                complete=p.complete,
                pruned=p.pruned,
                running=held.get((p.id, SlotState.RUNNING), 0),
                failed=p.failed,
                waiting=held.get((p.id, SlotState.CLAIMED), 0),
                search_space=dict(p.search_space),
                best=bests.get(p.id),
            )
            for p in pairs
        ]
        finished = sum(min(p.finished, p.n_trials) for p in progress)
        total = sum(p.n_trials for p in progress)
        ranked = rank((p.best for p in progress if p.best is not None), study.direction)
        return StudyOut(
            name=study.name,
            task=study.task,
            metric=study.metric,
            direction=study.direction,
            epochs=study.epochs,
            n_trials=study.n_trials,
            sampler=study.sampler,
            pruner=study.pruner,
            seed=study.seed,
            status=study.status,
            phase=study.phase,
            confirm={"top_k": study.confirm_top_k, "seeds": study.confirm_seeds},
            error=study.error,
            created_at=as_utc(study.created_at),
            updated_at=as_utc(study.updated_at),
            finished_at=as_utc(study.finished_at),
            optimizers=progress,
            progress=ProgressOut(
                finished=finished, total=total, fraction=finished / total if total else 1.0
            ),
            best=ranked[0] if ranked else None,
            eta=estimate_eta(
                status=StudyStatus(study.status),
                external=study.task == EXTERNAL_TASK,
                durations=durations,
                slots_left=total - finished,
                live_workers=live,
            ),
        )


def _held_counts(session: Session, pair_ids: Sequence[int]) -> dict[tuple[int, str], int]:
    rows = session.execute(
        sa.select(TrialSlotRow.study_optimizer_id, TrialSlotRow.state, sa.func.count())
        .where(
            TrialSlotRow.state.in_([SlotState.CLAIMED, SlotState.RUNNING]),
            TrialSlotRow.study_optimizer_id.in_(pair_ids),
        )
        .group_by(TrialSlotRow.study_optimizer_id, TrialSlotRow.state)
    ).all()
    return {(pair, state): count for pair, state, count in rows}


def _recent_durations(session: Session, pair_ids: Sequence[int]) -> list[float]:
    """How long the study's ``ETA_WINDOW`` most recently ended trials took: each optimizer's
    latest (a backwards walk of its index by trial number, however many it has), then the
    latest of those."""
    ended: list[tuple[datetime, datetime]] = []
    for pair_id in pair_ids:
        ended += session.execute(
            sa.select(TrialSlotRow.started_at, TrialSlotRow.ended_at)
            .where(
                TrialSlotRow.study_optimizer_id == pair_id,
                TrialSlotRow.state == SlotState.FINISHED,
                TrialSlotRow.started_at.is_not(None),
                TrialSlotRow.ended_at.is_not(None),
            )
            .order_by(TrialSlotRow.trial_number.desc())
            .limit(ETA_WINDOW)
        ).all()
    ended.sort(key=lambda row: row[1], reverse=True)
    return [(end - start).total_seconds() for start, end in ended[:ETA_WINDOW]]


def _live_workers(session: Session, heartbeat_interval: int) -> int:
    since = db_now(-LIVE_WORKER_BEATS * heartbeat_interval)
    return session.scalar(
        sa.select(sa.func.count()).select_from(WorkerRow).where(WorkerRow.last_seen_at >= since)
    )


def estimate_eta(
    *,
    status: StudyStatus,
    external: bool,
    durations: Sequence[float],
    slots_left: int,
    live_workers: int,
) -> EtaOut:
    """Seconds until the study is done: the mean trial duration times the rounds of trials the
    live workers still have to run, ``ceil(slots_left / min(live_workers, slots_left))``.

    ``seconds`` is ``None`` with a ``reason`` when that cannot be estimated.
    """
    mean = sum(durations) / len(durations) if durations else None

    def eta(seconds: float | None, reason: str | None = None) -> EtaOut:
        return EtaOut(
            seconds=seconds,
            reason=reason,
            mean_trial_seconds=mean,
            slots_left=slots_left,
            live_workers=live_workers,
        )

    if status == StudyStatus.COMPLETED or slots_left == 0:
        return eta(0.0)
    if status not in ACCEPTING_TRIALS:
        return eta(None, f"the study is {status}; no more trials will run")
    if external:
        return eta(None, "an external study runs its trials when its ask/tell clients do")
    if mean is None:
        return eta(None, "no trial has finished yet")
    if live_workers == 0:
        return eta(None, "no worker is running; start one with 'hpt worker'")
    rounds = math.ceil(slots_left / max(1, min(live_workers, slots_left)))
    return eta(mean * rounds)


# --------------------------------------------------------------------------- best configs


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


def _best_slots(session: Session, pairs: Sequence[StudyOptimizerRow]) -> dict[int, BestTrialOut]:
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
        study = _study_row(session, name)
        verdict = verdict_of(session, study)
        if verdict is None:
            ranked = rank(_best_slots(session, list(study.optimizers)).values(), study.direction)
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


# --------------------------------------------------------------------------- lists


def list_studies(
    db: Database, *, status: str | None = None, task: str | None = None, limit: int, offset: int
) -> StudyPageOut:
    """Studies, newest first, optionally only those of one status and/or task."""
    query = sa.select(StudyRow)
    if status is not None:
        query = query.where(StudyRow.status == status)
    if task is not None:
        query = query.where(StudyRow.task == task)
    with db.read() as session:
        total = session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))
        rows = session.scalars(query.order_by(StudyRow.id.desc()).limit(limit).offset(offset)).all()
        items = [
            StudySummaryOut(
                name=row.name,
                task=row.task,
                metric=row.metric,
                direction=row.direction,
                status=row.status,
                optimizers=[pair.optimizer for pair in row.optimizers],
                n_trials=row.n_trials,
                finished=sum(pair.finished for pair in row.optimizers),
                total=sum(pair.n_trials for pair in row.optimizers),
                error=row.error,
                created_at=as_utc(row.created_at),
                updated_at=as_utc(row.updated_at),
                finished_at=as_utc(row.finished_at),
            )
            for row in rows
        ]
    return StudyPageOut(items=items, total=total or 0, limit=limit, offset=offset)


def list_trials(
    db: Database,
    storage: optuna.storages.BaseStorage,
    *,
    name: str,
    optimizer: str | None = None,
    state: TrialState | None = None,
    limit: int,
    offset: int,
) -> TrialPageOut:
    """One page of a study's trials, in the order they were asked for (each optimizer's in the
    order of its trial numbers); trials added while a client pages come last.

    Raises:
        StudyNotFound: no such study (or it was deleted while the page was read).
        InvalidRequest: ``optimizer`` is not one of the study's.
    """
    with db.read() as session:
        study = _study_row(session, name)
        pairs = {p.id: p for p in study.optimizers}
        if optimizer is not None:
            pairs = {pid: p for pid, p in pairs.items() if p.optimizer == optimizer}
            if not pairs:
                raise InvalidRequest(
                    [
                        FieldError(
                            ("query", "optimizer"),
                            f"study {name!r} has no optimizer {optimizer!r}; its optimizers are "
                            f"{[p.optimizer for p in study.optimizers]}",
                        )
                    ]
                )
        conditions = [TrialSlotRow.study_optimizer_id.in_(list(pairs))]
        if state is not None:
            conditions.append(_STATE_FILTERS[state])
        else:
            conditions.append(
                sa.or_(TrialSlotRow.trial_id.is_not(None), TrialSlotRow.state == SlotState.CLAIMED)
            )
        total = session.scalar(
            sa.select(sa.func.count()).select_from(TrialSlotRow).where(*conditions)
        )
        # The page's ids first, then their rows: the sort handles the ids of the study's
        # matching slots (read from an index), never their rows with their records.
        page = (
            sa.select(TrialSlotRow.id)
            .where(*conditions)
            # In the order the slots were claimed: a trial added meanwhile comes after every
            # trial listed so far, so offset pages neither repeat nor skip one. "+ 0": the
            # study's slots are found by their pairs, then sorted; never by walking the whole
            # table (or a whole index) in id order until this study's slots turn up.
            .order_by(TrialSlotRow.id + 0)
            .limit(limit)
            .offset(offset)
        )
        ids = list(session.scalars(page))
        slots = session.execute(
            sa.select(TrialSlotRow, StudyOptimizerRow.optimizer)
            .join(StudyOptimizerRow)
            .where(TrialSlotRow.id.in_(ids))
            .order_by(TrialSlotRow.id)
        ).all()
    items = [_trial_out(storage, slot, pair_optimizer) for slot, pair_optimizer in slots]
    if any(item is None for item in items):
        with db.read() as session:
            _study_row(session, name)  # deleted meanwhile: 404
        items = [item for item in items if item is not None]
    return TrialPageOut(items=items, total=total or 0, limit=limit, offset=offset)


def _trial_out(
    storage: optuna.storages.BaseStorage, slot: TrialSlotRow, optimizer: str
) -> TrialOut | None:
    """A trial as the API shows it: from its slot alone once it has ended (its record), else
    with what Optuna holds of it so far. ``None``: its Optuna trial is gone (study deleted)."""
    frozen = None
    if slot.record is not None:
        attrs = dict(slot.record)
        intermediate = {int(step): value for step, value in attrs.pop("intermediate_values", [])}
    elif slot.trial_id is not None:
        frozen = optuna_bridge.get_trial(storage, slot.trial_id)
        if frozen is None:
            return None
        attrs = frozen.user_attrs
        intermediate = dict(frozen.intermediate_values)
    else:
        attrs, intermediate = {}, {}
    state = trial_state(slot)
    started, ended = slot.started_at, slot.ended_at
    params = dict(slot.params or {}) or (
        optuna_bridge.hyperparameters(frozen) if frozen is not None else {}
    )
    return TrialOut(
        optimizer=optimizer,
        number=slot.trial_number,
        state=state,
        value=slot.value,
        params=params,
        origin=slot.origin,
        test_value=slot.test_value,
        test_metrics=slot.test_metrics if slot.test_metrics else attrs.get("test_metrics"),
        epochs_run=attrs.get("epochs_run"),
        pruned_reason=attrs.get("pruned_reason") if state == TrialState.PRUNED else None,
        error=(slot.reason or attrs.get("error")) if state == TrialState.FAILED else None,
        worker=attrs.get("worker") or slot.holder,
        started_at=as_utc(started),
        completed_at=as_utc(ended),
        duration_seconds=(ended - started).total_seconds() if started and ended else None,
        intermediate_values=intermediate,
        curves=attrs.get("curves"),
    )


# --------------------------------------------------------------------------- the service


@dataclass(frozen=True)
class ServiceCounts:
    """The figures /metrics exports, read at scrape time (O(studies), never O(trials))."""

    studies_by_status: dict[str, int]
    trials_by_state: dict[str, int]
    live_workers: int
    free_slots: int


def service_counts(db: Database, *, heartbeat_interval: int) -> ServiceCounts:
    """Studies per status, trials per state, live workers and free trial slots."""
    pair = StudyOptimizerRow
    with db.read() as session:
        by_status = dict(
            session.execute(
                sa.select(StudyRow.status, sa.func.count()).group_by(StudyRow.status)
            ).all()
        )
        sums = session.execute(
            sa.select(
                sa.func.coalesce(sa.func.sum(pair.running), 0),
                sa.func.coalesce(sa.func.sum(pair.complete), 0),
                sa.func.coalesce(sa.func.sum(pair.pruned), 0),
                sa.func.coalesce(sa.func.sum(pair.failed), 0),
            )
        ).one()
        free = session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(pair.n_trials - pair.claimed), 0))
            .join(StudyRow)
            .where(StudyRow.status.in_([str(s) for s in ACCEPTING_TRIALS]))
        )
        live = _live_workers(session, heartbeat_interval)
    running, complete, pruned, failed = (int(v) for v in sums)
    return ServiceCounts(
        studies_by_status={str(s): by_status.get(str(s), 0) for s in StudyStatus},
        trials_by_state={
            TrialState.RUNNING: running,
            TrialState.COMPLETE: complete,
            TrialState.PRUNED: pruned,
            TrialState.FAILED: failed,
        },
        live_workers=live,
        free_slots=int(free or 0),
    )


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
