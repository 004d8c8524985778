"""Trial slots: how ``n_trials`` stays exact across any number of workers on any number of machines.

Each (study, optimizer) row counts the slots it has handed out (``claimed``). A worker, or an
ask/tell client through the API, takes a slot with one conditional UPDATE
(``claimed = claimed + 1 WHERE claimed < n_trials``), which the database applies atomically, so no
two claimants can both take the last slot. A slot ends one of two ways:

- finished: its trial ended COMPLETE or PRUNED; it counts towards ``n_trials``.
- released: its trial failed (an exception, a worker that died, an expired lease); the counter
  goes back down and another claimant runs the slot again.

Every state change of a slot is conditional on its current state, so it happens exactly once even
when a worker and a reaper race for it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy.engine import Engine

from service.db import (
    StudyOptimizerRow,
    StudyRow,
    TrialSlotRow,
    WorkerRow,
    session_scope,
    utcnow,
)

log = logging.getLogger(__name__)

EXTERNAL_TASK = "external"

QUEUED, RUNNING, COMPLETED, STOPPED, FAILED = "queued", "running", "completed", "stopped", "failed"
STUDY_STATUSES = (QUEUED, RUNNING, COMPLETED, STOPPED, FAILED)
ACCEPTING_TRIALS = (QUEUED, RUNNING)

SLOT_CLAIMED, SLOT_RUNNING, SLOT_FINISHED, SLOT_RELEASED = (
    "claimed",
    "running",
    "finished",
    "released",
)
SLOT_HELD = (SLOT_CLAIMED, SLOT_RUNNING)


@dataclass(frozen=True)
class ClaimedSlot:
    """A slot taken by one claimant, with everything needed to run its trial."""

    slot_id: int
    study_optimizer_id: int
    study_id: int
    study_name: str
    optimizer: str
    optuna_study_name: str
    ordinal: int
    task: str
    metric: str
    direction: str
    epochs: int | None
    sampler: str
    pruner: str
    seed: int | None
    search_space: dict[str, Any]
    lease_token: str | None = None
    lease_expires_at: datetime | None = None


def claim_trial_slot(
    engine: Engine,
    *,
    holder: str,
    study_id: int | None = None,
    external: bool = False,
    lease_token: str | None = None,
    lease_seconds: float | None = None,
) -> ClaimedSlot | None:
    """Take one free slot, or return ``None`` when there is none.

    Candidates are the (study, optimizer) pairs of studies that accept trials, least recently
    claimed first, so every study and every optimizer gets its turn.

    Args:
        engine: Engine of the service's tables.
        holder: Who takes the slot (a worker id, or ``"lease"`` for ask/tell).
        study_id: Only this study (ask/tell); ``None`` for any.
        external: Take slots of ``external`` (ask/tell) studies instead of trainable ones.
        lease_token: For ask/tell: the token that later report/tell calls present.
        lease_seconds: For ask/tell: how long the lease lasts.
    """
    now = utcnow()
    accepting = sa.select(StudyRow.id).where(StudyRow.status.in_(ACCEPTING_TRIALS))
    task_filter = StudyRow.task == EXTERNAL_TASK if external else StudyRow.task != EXTERNAL_TASK
    with session_scope(engine) as session:
        query = (
            sa.select(StudyOptimizerRow.id)
            .join(StudyRow)
            .where(
                StudyRow.status.in_(ACCEPTING_TRIALS),
                task_filter,
                StudyOptimizerRow.claimed < StudyOptimizerRow.n_trials,
            )
            .order_by(StudyOptimizerRow.last_claimed_at.asc().nulls_first(), StudyOptimizerRow.id)
            .limit(16)
        )
        if study_id is not None:
            query = query.where(StudyRow.id == study_id)
        for candidate in session.scalars(query).all():
            ordinal = session.execute(
                sa.update(StudyOptimizerRow)
                .where(
                    StudyOptimizerRow.id == candidate,
                    StudyOptimizerRow.claimed < StudyOptimizerRow.n_trials,
                    StudyOptimizerRow.study_id.in_(accepting),
                )
                .values(
                    claimed=StudyOptimizerRow.claimed + 1,
                    issued=StudyOptimizerRow.issued + 1,
                    last_claimed_at=now,
                )
                .returning(StudyOptimizerRow.issued)
            ).scalar_one_or_none()
            if ordinal is None:
                continue  # another claimant took the last slot of this one first
            pair = session.get_one(StudyOptimizerRow, candidate)
            study = pair.study
            expires = now + timedelta(seconds=lease_seconds) if lease_seconds else None
            slot = TrialSlotRow(
                study_optimizer_id=pair.id,
                holder=holder,
                state=SLOT_CLAIMED,
                ordinal=ordinal,
                lease_token=lease_token,
                lease_expires_at=expires,
                claimed_at=now,
            )
            session.add(slot)
            session.execute(
                sa.update(StudyRow)
                .where(StudyRow.id == study.id, StudyRow.status == QUEUED)
                .values(status=RUNNING, updated_at=now)
            )
            session.flush()
            return ClaimedSlot(
                slot_id=slot.id,
                study_optimizer_id=pair.id,
                study_id=study.id,
                study_name=study.name,
                optimizer=pair.optimizer,
                optuna_study_name=pair.optuna_study_name,
                ordinal=ordinal,
                task=study.task,
                metric=study.metric,
                direction=study.direction,
                epochs=study.epochs,
                sampler=study.sampler,
                pruner=study.pruner,
                seed=study.seed,
                search_space=dict(pair.search_space),
                lease_token=lease_token,
                lease_expires_at=expires,
            )
    return None


def mark_slot_running(engine: Engine, slot_id: int, *, trial_id: int, trial_number: int) -> bool:
    """Record the Optuna trial a claimed slot became. ``False``: the slot was taken back."""
    with session_scope(engine) as session:
        result = session.execute(
            sa.update(TrialSlotRow)
            .where(TrialSlotRow.id == slot_id, TrialSlotRow.state == SLOT_CLAIMED)
            .values(state=SLOT_RUNNING, trial_id=trial_id, trial_number=trial_number)
        )
        return result.rowcount == 1


def finish_slot(engine: Engine, slot_id: int) -> bool:
    """The slot's trial ended COMPLETE or PRUNED: count it, and complete the study when every
    optimizer has its ``n_trials``. ``False`` if the slot had already ended."""
    now = utcnow()
    with session_scope(engine) as session:
        ended = session.execute(
            sa.update(TrialSlotRow)
            .where(TrialSlotRow.id == slot_id, TrialSlotRow.state.in_(SLOT_HELD))
            .values(state=SLOT_FINISHED, ended_at=now)
            .returning(TrialSlotRow.study_optimizer_id)
        ).scalar_one_or_none()
        if ended is None:
            return False
        study_id = session.execute(
            sa.update(StudyOptimizerRow)
            .where(StudyOptimizerRow.id == ended)
            .values(finished=StudyOptimizerRow.finished + 1)
            .returning(StudyOptimizerRow.study_id)
        ).scalar_one()
        # Two claimants finishing the last slots of two optimizers at once would each see the
        # other's optimizer unfinished (PostgreSQL's READ COMMITTED), and neither would complete
        # the study. Locking the study row makes the second wait for the first; its check below
        # then sees the first's commit. (Same lock order as a claim: optimizer row, then study.)
        session.execute(sa.select(StudyRow.id).where(StudyRow.id == study_id).with_for_update())
        unfinished = sa.select(StudyOptimizerRow.id).where(
            StudyOptimizerRow.study_id == study_id,
            StudyOptimizerRow.finished < StudyOptimizerRow.n_trials,
        )
        session.execute(
            sa.update(StudyRow)
            .where(
                StudyRow.id == study_id,
                StudyRow.status.in_(ACCEPTING_TRIALS),
                ~sa.exists(unfinished),
            )
            .values(status=COMPLETED, updated_at=now, finished_at=now)
        )
        return True


def release_slot(
    engine: Engine, slot_id: int, *, reason: str, max_failed_trials: int | None = None
) -> bool:
    """Give a slot back after its trial failed, so another claimant runs it again.

    When ``max_failed_trials`` is given and this optimizer has failed that often, the study is
    marked failed with ``reason`` instead of retrying forever. ``False`` if the slot had already
    ended.
    """
    now = utcnow()
    with session_scope(engine) as session:
        pair_id = session.execute(
            sa.update(TrialSlotRow)
            .where(TrialSlotRow.id == slot_id, TrialSlotRow.state.in_(SLOT_HELD))
            .values(state=SLOT_RELEASED, ended_at=now)
            .returning(TrialSlotRow.study_optimizer_id)
        ).scalar_one_or_none()
        if pair_id is None:
            return False
        study_id, failed, optimizer = session.execute(
            sa.update(StudyOptimizerRow)
            .where(StudyOptimizerRow.id == pair_id)
            .values(claimed=StudyOptimizerRow.claimed - 1, failed=StudyOptimizerRow.failed + 1)
            .returning(
                StudyOptimizerRow.study_id, StudyOptimizerRow.failed, StudyOptimizerRow.optimizer
            )
        ).one()
        log.warning("slot %s given back (%s): %s", slot_id, optimizer, reason)
        if max_failed_trials is not None and failed >= max_failed_trials:
            session.execute(
                sa.update(StudyRow)
                .where(StudyRow.id == study_id, StudyRow.status.in_(ACCEPTING_TRIALS))
                .values(
                    status=FAILED,
                    updated_at=now,
                    finished_at=now,
                    error=f"{optimizer}: {failed} trials failed; last: {reason}",
                )
            )
        return True


def _held_slots(engine: Engine, older_than: datetime, *, leased: bool) -> Sequence[Any]:
    with session_scope(engine) as session:
        query = (
            sa.select(TrialSlotRow, StudyOptimizerRow.optuna_study_name)
            .join(StudyOptimizerRow)
            .where(TrialSlotRow.state.in_(SLOT_HELD))
        )
        if leased:
            query = query.where(TrialSlotRow.lease_expires_at < older_than)
        else:
            query = query.where(
                TrialSlotRow.lease_token.is_(None), TrialSlotRow.claimed_at < older_than
            )
        return session.execute(query).all()


def reclaim_lost_slots(
    engine: Engine,
    storage: optuna.storages.RDBStorage,
    *,
    grace_period: float,
    max_failed_trials: int | None = None,
) -> int:
    """Give back the slots of workers that died; returns how many.

    A worker is dead when its trials' Optuna heartbeats stopped more than ``grace_period`` seconds
    ago (Optuna's own ``fail_stale_trials``; ``storage`` must have the heartbeat on), or when the
    worker itself has not been seen for that long (which also covers a worker killed before its
    trial's first heartbeat). Its RUNNING trials are failed and its slots released. A slot whose
    trial finished but whose worker died before recording it is counted as finished.
    """
    cutoff = utcnow() - timedelta(seconds=grace_period)
    stale = _held_slots(engine, cutoff, leased=False)
    reclaimed = 0
    if stale:
        with session_scope(engine) as session:
            live = set(
                session.scalars(sa.select(WorkerRow.id).where(WorkerRow.last_seen_at >= cutoff))
            )
        for optuna_study_name in {name for _, name in stale}:
            try:
                study = optuna.load_study(study_name=optuna_study_name, storage=storage)
            except KeyError:
                continue  # the study was deleted meanwhile
            optuna.storages.fail_stale_trials(study)
        for slot, _ in stale:
            state = None if slot.trial_id is None else storage.get_trial(slot.trial_id).state
            if state in (TrialState.COMPLETE, TrialState.PRUNED):
                finish_slot(engine, slot.id)
                continue
            if state != TrialState.FAIL and slot.holder in live:
                continue  # a live worker still training (or about to start)
            if state == TrialState.RUNNING and not _fail_trial(storage, slot.trial_id):
                continue  # it finished just now; the next round counts it
            reclaimed += release_slot(
                engine,
                slot.id,
                reason=f"worker {slot.holder} stopped sending heartbeats",
                max_failed_trials=max_failed_trials,
            )
    _fail_orphaned_trials(engine, storage, cutoff)
    return reclaimed


def _fail_trial(storage: optuna.storages.BaseStorage, trial_id: int) -> bool:
    try:
        return storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def _fail_orphaned_trials(
    engine: Engine, storage: optuna.storages.BaseStorage, cutoff: datetime
) -> None:
    # A worker killed between creating its Optuna trial and recording it on its slot leaves a
    # RUNNING trial that no slot owns (its slot is released as never started). Fail those, so a
    # study never shows a trial running forever.
    with session_scope(engine) as session:
        pairs = session.execute(
            sa.select(StudyOptimizerRow.id, StudyOptimizerRow.optuna_study_name)
            .join(StudyRow)
            .where(
                StudyRow.status.in_((*ACCEPTING_TRIALS, STOPPED)), StudyRow.task != EXTERNAL_TASK
            )
        ).all()
        owned = set(
            session.scalars(
                sa.select(TrialSlotRow.trial_id).where(
                    TrialSlotRow.state.in_(SLOT_HELD), TrialSlotRow.trial_id.is_not(None)
                )
            )
        )
    for _, optuna_study_name in pairs:
        try:
            study_id = storage.get_study_id_from_name(optuna_study_name)
        except KeyError:
            continue
        for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            started = trial.datetime_start
            if trial._trial_id in owned or started is None or started > cutoff:
                continue
            if _fail_trial(storage, trial._trial_id):
                log.warning("failed orphaned trial %s #%d", optuna_study_name, trial.number)


def expire_leases(engine: Engine, storage: optuna.storages.BaseStorage) -> int:
    """Fail ask/tell trials whose lease ran out and offer their params to the next ask.

    Returns how many leases expired.
    """
    expired = _held_slots(engine, utcnow(), leased=True)
    count = 0
    for slot, optuna_study_name in expired:
        if not release_slot(engine, slot.id, reason="lease expired without a tell"):
            continue  # a tell or another expiry got there first
        count += 1
        if slot.trial_id is None:
            continue
        trial = storage.get_trial(slot.trial_id)
        if trial.state == TrialState.RUNNING:
            try:
                storage.set_trial_state_values(slot.trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        try:
            study = optuna.load_study(study_name=optuna_study_name, storage=storage)
        except KeyError:
            continue
        study.enqueue_trial(trial.params, skip_if_exists=False)
    return count
