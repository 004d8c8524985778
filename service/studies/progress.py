"""How far along studies are: one study's status, per-optimizer progress, best so far and ETA;
the list of studies; the figures of ``/metrics``. Every count comes from the slot record, read in
one short read transaction that never waits for the write lock; counters are kept on each
optimizer's row as slots change, so the cost does not grow with the history."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.api.schemas import (
    EtaOut,
    OptimizerProgressOut,
    ProgressOut,
    StudyOut,
    StudyPageOut,
    StudySummaryOut,
)
from service.store.database import Database, as_utc, db_now
from service.store.tables import StudyOptimizerRow, StudyRow, TrialSlotRow, WorkerRow
from service.studies.best_configs import best_slots, rank, study_answer
from service.studies.lookup import study_row
from service.vocabulary import (
    ACCEPTING_TRIALS,
    EXTERNAL_TASK,
    SlotState,
    StudyPhase,
    StudyStatus,
    TrialState,
)

# A worker is live while its heartbeats keep coming; a few missed beats are tolerated.
LIVE_WORKER_BEATS = 3
# The ETA averages the durations of this many most recent finished trials of the study.
ETA_WINDOW = 50


def study_view(db: Database, name: str, *, heartbeat_interval: int) -> StudyOut:
    """Status, per-optimizer progress, best so far and ETA of the study ``name``.

    Raises:
        StudyNotFound: no such study.
    """
    with db.read() as session:
        study = study_row(session, name)
        pairs = list(study.optimizers)
        held = _held_counts(session, [p.id for p in pairs])
        bests = best_slots(session, pairs)
        durations = _recent_durations(session, [p.id for p in pairs])
        live = count_live_workers(session, heartbeat_interval)
        # While searching, the confirmation's trials are counted ahead (at most top_k x seeds
        # per optimizer), so the totals never grow under a progress bar; its exact count
        # replaces them when it starts.
        ahead = (
            study.confirm_top_k * study.confirm_seeds
            if study.phase == StudyPhase.SEARCHING and StudyStatus(study.status).accepts_trials
            else 0
        )
        progress = [
            OptimizerProgressOut(
                optimizer=p.optimizer,
                optuna_study_name=p.optuna_study_name,
                n_trials=p.n_trials,
                total=p.n_trials + ahead,
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
        total = sum(p.total for p in progress)
        ranked = rank((p.best for p in progress if p.best is not None), study.direction)
        answer = study_answer(session, study, ranked)
        return StudyOut(
            name=study.name,
            task=study.task,
            model=study.model,
            metric=study.metric,
            direction=study.direction,
            epochs=study.epochs,
            n_trials=study.n_trials,
            sampler=study.sampler,
            pruner=study.pruner,
            seed=study.seed,
            status=study.status,
            phase=study.phase,
            confirm={
                "top_k": study.confirm_top_k,
                "seeds": study.confirm_seeds,
                "equivalence": study.confirm_equivalence,
            },
            error=study.error,
            created_at=as_utc(study.created_at),
            updated_at=as_utc(study.updated_at),
            finished_at=as_utc(study.finished_at),
            optimizers=progress,
            progress=ProgressOut(
                finished=finished, total=total, fraction=finished / total if total else 1.0
            ),
            best=ranked[0] if ranked else None,
            winner=answer.winner,
            leaders=answer.leaders,
            basis=answer.basis,
            answer=answer.sentence,
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


def count_live_workers(session: Session, heartbeat_interval: int) -> int:
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
        live = count_live_workers(session, heartbeat_interval)
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
