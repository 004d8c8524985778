"""Reading studies back: status and progress, trials, the task catalogue and the figures of
/metrics (best configs: :mod:`service.best_configs`).

Each function reads our tables in one short transaction and only then Optuna's storage (see
:mod:`service.study_ops` for why the two never overlap). Results are plain dataclasses; the HTTP
layer turns them into JSON.

Datetimes are returned timezone-aware in UTC: our tables store naive UTC, Optuna naive local time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.best_configs import BestTrial, best_trial, hyperparameters, optuna_time, rank
from service.db import StudyOptimizerRow, StudyRow, TrialSlotRow, WorkerRow, session_scope, utcnow
from service.errors import FieldError, InvalidRequest
from service.slots import (
    ACCEPTING_TRIALS,
    COMPLETED,
    EXTERNAL_TASK,
    SLOT_FINISHED,
    STUDY_STATUSES,
)
from service.study_ops import study_row
from studies.tasks import available_tasks

# Trial states as the API names them (Optuna's FAIL is "failed", like the per-optimizer counts).
TRIAL_STATES: Mapping[str, TrialState] = {
    "running": TrialState.RUNNING,
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
    "waiting": TrialState.WAITING,
}
_STATE_NAMES = {state: name for name, state in TRIAL_STATES.items()}

# A worker is live while its heartbeats keep coming; a few missed beats are tolerated.
LIVE_WORKER_BEATS = 3

# Optuna's own tables, for counts that its storage API could only give one query per state.
_OPTUNA_STUDIES = sa.table("studies", sa.column("study_id"), sa.column("study_name"))
_OPTUNA_TRIALS = sa.table("trials", sa.column("study_id"), sa.column("state"))


@dataclass(frozen=True)
class Page:
    """One page of a longer list."""

    items: list[Any]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class OptimizerProgress:
    """How far one optimizer of a study is, counted from its Optuna trials."""

    optimizer: str
    optuna_study_name: str
    n_trials: int
    finished: int
    complete: int
    pruned: int
    running: int
    failed: int
    waiting: int
    search_space: dict[str, Any]
    best: BestTrial | None


@dataclass(frozen=True)
class Eta:
    """When the study should be done, or why that cannot be said."""

    seconds: float | None
    reason: str | None
    mean_trial_seconds: float | None
    slots_left: int
    live_workers: int


@dataclass(frozen=True)
class Progress:
    """Finished trials of all optimizers, out of how many the study asks."""

    finished: int
    total: int
    fraction: float


@dataclass(frozen=True)
class StudyStatus:
    """Everything GET /api/v1/studies/{name} shows."""

    name: str
    task: str
    metric: str
    direction: str
    epochs: int | None
    n_trials: int
    sampler: str
    pruner: str
    seed: int | None
    status: str
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    optimizers: list[OptimizerProgress]
    progress: Progress
    best: BestTrial | None
    eta: Eta


@dataclass(frozen=True)
class StudySummary:
    """One line of the study list (our tables only, so a long list stays cheap)."""

    name: str
    task: str
    metric: str
    direction: str
    status: str
    optimizers: list[str]
    n_trials: int
    finished: int
    total: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class TrialInfo:
    """One trial as the trial list shows it."""

    optimizer: str
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    test_value: float | None
    test_metrics: dict[str, Any] | None
    epochs_run: int | None
    pruned_reason: str | None
    error: str | None
    worker: str | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None
    intermediate_values: dict[int, float]
    curves: dict[str, Any] | None


@dataclass(frozen=True)
class ServiceCounts:
    """The figures /metrics exports, read at scrape time."""

    studies_by_status: dict[str, int]
    trials_by_state: dict[str, int]
    live_workers: int
    free_slots: int


@dataclass(frozen=True)
class TaskInfo:
    """A task as the catalogue shows it."""

    name: str
    description: str
    metrics: dict[str, str]
    default_metric: str | None
    direction: str | None
    default_epochs: int | None
    external: bool = False


EXTERNAL_TASK_INFO = TaskInfo(
    name=EXTERNAL_TASK,
    description="Your own training code runs the trials: POST .../trials/ask for hyperparameters, "
    "report intermediate values, tell the result. A study on it names its metric and direction.",
    metrics={},
    default_metric=None,
    direction=None,
    default_epochs=None,
    external=True,
)


def task_catalog() -> list[TaskInfo]:
    """Every task a study may name, by name, and the pseudo-task ``external`` last."""
    tasks = available_tasks()
    return [
        *(
            TaskInfo(
                name=task.name,
                description=task.description,
                metrics=dict(task.metrics),
                default_metric=task.default_metric,
                direction=task.metrics[task.default_metric],
                default_epochs=task.default_epochs,
            )
            for task in (tasks[name] for name in sorted(tasks))
        ),
        EXTERNAL_TASK_INFO,
    ]


# Snapshots of our rows, so that nothing lazy is touched once the session is closed.
@dataclass(frozen=True)
class _Pair:
    optimizer: str
    optuna_study_name: str
    n_trials: int
    search_space: dict[str, Any]


@dataclass(frozen=True)
class _Study:
    row: dict[str, Any]
    pairs: list[_Pair] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    live_workers: int = 0


def as_utc(value: datetime | None) -> datetime | None:
    """A naive UTC datetime of our tables, made timezone-aware."""
    return None if value is None else value.replace(tzinfo=UTC)


_STUDY_FIELDS = (
    "name",
    "task",
    "metric",
    "direction",
    "epochs",
    "n_trials",
    "sampler",
    "pruner",
    "seed",
    "status",
    "error",
    "created_at",
    "updated_at",
    "finished_at",
)


def _load_study(engine: Engine, name: str, *, heartbeat_interval: int | None = None) -> _Study:
    """Our rows of the study ``name``; with ``heartbeat_interval``, also what the ETA needs."""
    with session_scope(engine) as session:
        study = study_row(session, name)
        row = {key: getattr(study, key) for key in _STUDY_FIELDS}
        pairs = [
            _Pair(p.optimizer, p.optuna_study_name, p.n_trials, dict(p.search_space))
            for p in study.optimizers
        ]
        if heartbeat_interval is None:
            return _Study(row, pairs)
        spans = session.execute(
            sa.select(TrialSlotRow.claimed_at, TrialSlotRow.ended_at)
            .join(StudyOptimizerRow)
            .where(StudyOptimizerRow.study_id == study.id, TrialSlotRow.state == SLOT_FINISHED)
        ).all()
        durations = [(end - start).total_seconds() for start, end in spans if end is not None]
        return _Study(row, pairs, durations, _live_workers(session, heartbeat_interval))


def _live_workers(session: Session, heartbeat_interval: int) -> int:
    since = utcnow() - timedelta(seconds=LIVE_WORKER_BEATS * heartbeat_interval)
    return session.scalar(
        sa.select(sa.func.count()).select_from(WorkerRow).where(WorkerRow.last_seen_at >= since)
    )


def trial_counts(
    storage: optuna.storages.RDBStorage, optuna_study_names: Iterable[str] | None = None
) -> dict[str, Counter[str]]:
    """Trials per API state name of each Optuna study (all of them when no names are given)."""
    query = (
        sa.select(_OPTUNA_STUDIES.c.study_name, _OPTUNA_TRIALS.c.state, sa.func.count())
        .join_from(
            _OPTUNA_STUDIES,
            _OPTUNA_TRIALS,
            _OPTUNA_STUDIES.c.study_id == _OPTUNA_TRIALS.c.study_id,
        )
        .group_by(_OPTUNA_STUDIES.c.study_name, _OPTUNA_TRIALS.c.state)
    )
    if optuna_study_names is not None:
        query = query.where(_OPTUNA_STUDIES.c.study_name.in_(list(optuna_study_names)))
    counts: dict[str, Counter[str]] = {}
    with storage.engine.connect() as conn:
        for study_name, state, count in conn.execute(query):
            state_name = _STATE_NAMES[TrialState[str(getattr(state, "name", state))]]
            counts.setdefault(study_name, Counter())[state_name] += count
    return counts


def estimate_eta(
    *,
    status: str,
    external: bool,
    durations: Sequence[float],
    slots_left: int,
    live_workers: int,
) -> Eta:
    """Seconds until the study is done: the mean trial duration times the rounds of trials the
    live workers still have to run, ``ceil(slots_left / min(live_workers, slots_left))``.

    ``seconds`` is ``None`` with a ``reason`` when that cannot be estimated.
    """
    mean = sum(durations) / len(durations) if durations else None

    def unknown(reason: str) -> Eta:
        return Eta(None, reason, mean, slots_left, live_workers)

    if status == COMPLETED or slots_left == 0:
        return Eta(0.0, None, mean, slots_left, live_workers)
    if status not in ACCEPTING_TRIALS:
        return unknown(f"the study is {status}; no more trials will run")
    if external:
        return unknown("an external study runs its trials when its ask/tell clients do")
    if mean is None:
        return unknown("no trial has finished yet")
    if live_workers == 0:
        return unknown("no worker is running; start one with 'hpt worker'")
    rounds = math.ceil(slots_left / max(1, min(live_workers, slots_left)))
    return Eta(mean * rounds, None, mean, slots_left, live_workers)


def get_study_status(
    *, engine: Engine, storage: optuna.storages.RDBStorage, name: str, heartbeat_interval: int
) -> StudyStatus:
    """Status, per-optimizer progress, best so far and ETA of the study ``name``.

    Raises:
        StudyNotFound: no such study.
    """
    study = _load_study(engine, name, heartbeat_interval=heartbeat_interval)
    counts = trial_counts(storage, [pair.optuna_study_name for pair in study.pairs])
    progress = []
    for pair in study.pairs:
        count = counts.get(pair.optuna_study_name, Counter())
        best = best_trial(
            storage, study=name, optimizer=pair.optimizer, optuna_study_name=pair.optuna_study_name
        )
        progress.append(
            OptimizerProgress(
                optimizer=pair.optimizer,
                optuna_study_name=pair.optuna_study_name,
                n_trials=pair.n_trials,
                finished=count["complete"] + count["pruned"],
                complete=count["complete"],
                pruned=count["pruned"],
                running=count["running"],
                failed=count["failed"],
                waiting=count["waiting"],
                search_space=pair.search_space,
                best=best,
            )
        )
    row = study.row
    finished = sum(min(p.finished, p.n_trials) for p in progress)
    total = sum(p.n_trials for p in progress)
    ranked = rank((p.best for p in progress if p.best is not None), row["direction"])
    return StudyStatus(
        **{key: row[key] for key in _STUDY_FIELDS if not key.endswith("_at")},
        created_at=as_utc(row["created_at"]),
        updated_at=as_utc(row["updated_at"]),
        finished_at=as_utc(row["finished_at"]),
        optimizers=progress,
        progress=Progress(finished, total, finished / total if total else 1.0),
        best=ranked[0] if ranked else None,
        eta=estimate_eta(
            status=row["status"],
            external=row["task"] == EXTERNAL_TASK,
            durations=study.durations,
            slots_left=total - finished,
            live_workers=study.live_workers,
        ),
    )


def list_studies(
    *, engine: Engine, status: str | None = None, task: str | None = None, limit: int, offset: int
) -> Page:
    """Studies, newest first, optionally only those of one status and/or task."""
    query = sa.select(StudyRow)
    if status is not None:
        query = query.where(StudyRow.status == status)
    if task is not None:
        query = query.where(StudyRow.task == task)
    with session_scope(engine) as session:
        total = session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))
        rows = session.scalars(
            query.order_by(StudyRow.created_at.desc(), StudyRow.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
        items = [
            StudySummary(
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
    return Page(items=items, total=total or 0, limit=limit, offset=offset)


def _trial_info(optimizer: str, trial: FrozenTrial) -> TrialInfo:
    attrs = trial.user_attrs
    started, completed = trial.datetime_start, trial.datetime_complete
    return TrialInfo(
        optimizer=optimizer,
        number=trial.number,
        state=_STATE_NAMES[trial.state],
        value=trial.value,
        params=hyperparameters(trial),
        test_value=attrs.get("test_value"),
        test_metrics=attrs.get("test_metrics"),
        epochs_run=attrs.get("epochs_run"),
        pruned_reason=attrs.get("pruned_reason"),
        error=attrs.get("error"),
        worker=attrs.get("worker"),
        started_at=optuna_time(started),
        completed_at=optuna_time(completed),
        duration_seconds=(completed - started).total_seconds() if started and completed else None,
        intermediate_values=dict(trial.intermediate_values),
        curves=attrs.get("curves"),
    )


def list_trials(
    *,
    engine: Engine,
    storage: optuna.storages.BaseStorage,
    name: str,
    optimizer: str | None = None,
    state: str | None = None,
    limit: int,
    offset: int,
) -> Page:
    """Trials of a study, by optimizer (in the study's order) and trial number.

    Raises:
        StudyNotFound: no such study.
        InvalidRequest: ``optimizer`` is not one of the study's.
    """
    study = _load_study(engine, name)
    pairs = study.pairs
    if optimizer is not None:
        pairs = [pair for pair in pairs if pair.optimizer == optimizer]
        if not pairs:
            raise InvalidRequest(
                [
                    FieldError(
                        ("query", "optimizer"),
                        f"study {name!r} has no optimizer {optimizer!r}; its optimizers are "
                        f"{[pair.optimizer for pair in study.pairs]}",
                    )
                ]
            )
    states = None if state is None else (TRIAL_STATES[state],)
    trials: list[TrialInfo] = []
    for pair in pairs:
        try:
            study_id = storage.get_study_id_from_name(pair.optuna_study_name)
        except KeyError:
            continue
        found = storage.get_all_trials(study_id, deepcopy=False, states=states)
        trials.extend(_trial_info(pair.optimizer, trial) for trial in found)
    return Page(
        items=trials[offset : offset + limit], total=len(trials), limit=limit, offset=offset
    )


def service_counts(
    *, engine: Engine, storage: optuna.storages.RDBStorage, heartbeat_interval: int
) -> ServiceCounts:
    """Studies per status, trials per state, live workers and free trial slots."""
    with session_scope(engine) as session:
        by_status = dict(
            session.execute(
                sa.select(StudyRow.status, sa.func.count()).group_by(StudyRow.status)
            ).all()
        )
        free = session.scalar(
            sa.select(
                sa.func.coalesce(
                    sa.func.sum(StudyOptimizerRow.n_trials - StudyOptimizerRow.claimed), 0
                )
            )
            .join(StudyRow)
            .where(StudyRow.status.in_(ACCEPTING_TRIALS))
        )
        live = _live_workers(session, heartbeat_interval)
    by_state: Counter[str] = Counter()
    for counts in trial_counts(storage).values():
        by_state.update(counts)
    return ServiceCounts(
        studies_by_status={status: by_status.get(status, 0) for status in STUDY_STATUSES},
        trials_by_state={state: by_state.get(state, 0) for state in TRIAL_STATES},
        live_workers=live,
        free_slots=int(free or 0),
    )
