"""Recovery: the one place where the slot record and Optuna's trials are reconciled.

Who fails a dead worker's trial? :func:`recover`, run by every worker every grace period and by
the API in the background. It finds:

1. slots whose holder stopped beating: a worker's heartbeat (``heartbeat_at``) older than the
   grace period, or an ask/tell lease past ``lease_expires_at``, both on the database's clock;
2. for each, how its Optuna trial ended: COMPLETE or PRUNED (the holder told Optuna, then died
   before recording it) finishes the slot with that result; anything else fails the trial and
   releases the slot, so another attempt runs it;
3. orphaned Optuna trials: RUNNING trials whose slot (``hpt_slot``) has ended or never existed,
   e.g. a worker killed between creating its trial and recording it on its slot. They are failed.

Every change goes through :mod:`service.trials.lifecycle`, conditional on the slot's state, so a
holder that wakes up and a reaper never both end a slot; a trial is ended by the same protocol as
every holder's (:func:`service.trials.protocol.end`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

from service.store import optuna_bridge
from service.store.database import Database, db_now
from service.store.tables import StudyOptimizerRow, StudyRow, TrialSlotRow, WorkerRow
from service.trials import protocol
from service.trials.lifecycle import (
    Ending,
    fill_in_finished,
    release_slot,
    silent_holder,
    take_over,
)
from service.vocabulary import HELD_SLOT_STATES, SlotOutcome, SlotState, StudyStatus

log = logging.getLogger(__name__)

# Taking the write lock slower than this means heartbeats could not be written either.
STALL_SECONDS = 1.0

# Studies whose Optuna trials may still be RUNNING.
_ACTIVE_STATUSES = [str(s) for s in (StudyStatus.QUEUED, StudyStatus.RUNNING, StudyStatus.STOPPED)]


@dataclass(frozen=True)
class Recovered:
    """What one recovery pass did."""

    finished: int = 0
    released: int = 0
    orphans_failed: int = 0

    def __bool__(self) -> bool:
        return bool(self.finished or self.released or self.orphans_failed)


@dataclass(frozen=True)
class _Stale:
    slot_id: int
    trial_id: int | None
    holder: str
    leased: bool


def recover(
    db: Database,
    storage: optuna.storages.BaseStorage,
    *,
    grace_period: float,
    max_failed_trials: int | None = None,
) -> Recovered:
    """One pass of recovery over every study (see the module's docstring)."""
    if database_stalled(db):
        # Nobody could beat while the database was stalled: judge silence on the next pass.
        return Recovered()
    finished = released = 0
    for stale in _stale_slots(db, grace_period):
        ended = _settle(
            db, storage, stale, grace_period=grace_period, max_failed_trials=max_failed_trials
        )
        finished += ended == SlotState.FINISHED
        released += ended == SlotState.RELEASED
    orphans = fail_orphaned_trials(db, storage)
    return Recovered(finished, released, orphans)


def _stale_slots(db: Database, grace_period: float) -> list[_Stale]:
    with db.read() as session:
        rows = session.execute(
            sa.select(
                TrialSlotRow.id,
                TrialSlotRow.trial_id,
                TrialSlotRow.holder,
                TrialSlotRow.lease_expires_at.is_not(None).label("leased"),
            ).where(silent_holder(grace_period))
        ).all()
    return [_Stale(row.id, row.trial_id, row.holder, bool(row.leased)) for row in rows]


def _settle(
    db: Database,
    storage: optuna.storages.BaseStorage,
    stale: _Stale,
    *,
    grace_period: float,
    max_failed_trials: int | None,
) -> SlotState | None:
    # First the slot is taken from its holder (whose guarded Optuna writes then miss), and only
    # then is its Optuna trial looked at: whatever the holder wrote before is final by now.
    token = take_over(db, stale.slot_id, grace_period=grace_period)
    if token is None:
        return None  # it beat in time, or ended meanwhile
    if stale.leased:
        outcome, reason = SlotOutcome.EXPIRED, "the lease ran out without a tell"
    else:
        outcome, reason = SlotOutcome.LOST, f"worker {stale.holder} stopped sending heartbeats"
    if stale.trial_id is not None:
        try:
            # A RUNNING trial is failed; one that ended is taken as it ended: Optuna was told,
            # then the holder died (or its lease ran out) before its slot was.
            trial, ended = protocol.end(
                db,
                storage,
                slot_id=stale.slot_id,
                token=token,
                trial_id=stale.trial_id,
                state=TrialState.FAIL,
                failed=outcome,
                reason=reason,
                max_failed_trials=max_failed_trials,
                settle=True,
            )
        except protocol.TrialGone:
            pass  # purged with its study: the slot is released below
        else:
            if not ended:
                return None
            if trial.state in optuna_bridge.FINISHED_TRIAL_STATES:
                log.info(
                    "slot %s: its trial had ended %s; counted", stale.slot_id, trial.state.name
                )
                return SlotState.FINISHED
            return SlotState.RELEASED
    if not release_slot(
        db,
        stale.slot_id,
        Ending(outcome, reason=reason),
        token=token,
        max_failed_trials=max_failed_trials,
    ):
        return None
    return SlotState.RELEASED


def database_stalled(db: Database) -> bool:
    """Whether taking the write lock just now took so long that heartbeats were held up too
    (a process frozen in a write transaction on SQLite, a database that was just unreachable).
    """
    started = time.monotonic()
    with db.write() as session:
        session.execute(sa.select(db_now()))
    return time.monotonic() - started > STALL_SECONDS


def fail_orphaned_trials(db: Database, storage: optuna.storages.BaseStorage) -> int:
    """Fail RUNNING Optuna trials whose slot has ended or does not exist. Returns how many."""
    with db.read() as session:
        names = session.scalars(
            sa.select(StudyOptimizerRow.optuna_study_name)
            .join(StudyRow)
            .where(StudyRow.status.in_(_ACTIVE_STATUSES))
        ).all()
    failed = 0
    for name in names:
        running = optuna_bridge.running_trials(storage, name)
        if not running:
            continue
        owners = _held_slot_ids(db, running)
        for trial in running:
            slot = optuna_bridge.slot_of(trial)
            trial_id = optuna_bridge.trial_id(trial)
            if (slot is not None and slot in owners) or trial_id in owners.values():
                continue
            if optuna_bridge.fail_trial(storage, trial_id) is not None:
                failed += 1
                log.warning("failed orphaned trial %s #%d (slot %s)", name, trial.number, slot)
    return failed


def _held_slot_ids(db: Database, trials: Sequence[FrozenTrial]) -> dict[int, int | None]:
    """Of the slots these trials name (or that name these trials), the held ones:
    ``{slot id: trial id}``."""
    slot_ids = [s for s in (optuna_bridge.slot_of(t) for t in trials) if s is not None]
    trial_ids = [optuna_bridge.trial_id(t) for t in trials]
    with db.read() as session:
        rows = session.execute(
            sa.select(TrialSlotRow.id, TrialSlotRow.trial_id).where(
                TrialSlotRow.state.in_([str(s) for s in HELD_SLOT_STATES]),
                sa.or_(TrialSlotRow.id.in_(slot_ids), TrialSlotRow.trial_id.in_(trial_ids)),
            )
        ).all()
    return {row.id: row.trial_id for row in rows}


def forget_dead_workers(db: Database, *, grace_period: float) -> int:
    """Remove the rows of workers the database has not heard from for ten grace periods."""
    with db.write() as session:
        return session.execute(
            sa.delete(WorkerRow).where(WorkerRow.last_seen_at < db_now(-10 * grace_period))
        ).rowcount


def backfill_slots(db: Database, storage: optuna.storages.BaseStorage) -> int:
    """Fill in finished slots written by the first release (which kept results only in Optuna):
    their outcome, value and params from their Optuna trial, and each optimizer's counters and
    best. Returns how many slots were filled in. Run after the schema upgrade; a no-op after."""
    with db.read() as session:
        rows = session.execute(
            sa.select(TrialSlotRow.id, TrialSlotRow.trial_id)
            .join(StudyOptimizerRow, TrialSlotRow.study_optimizer_id == StudyOptimizerRow.id)
            .join(StudyRow)
            .where(
                TrialSlotRow.state == SlotState.FINISHED,
                TrialSlotRow.outcome.is_(None),
                TrialSlotRow.trial_id.is_not(None),
            )
        ).all()
    filled = 0
    for slot_id, trial_id in rows:
        trial = optuna_bridge.get_trial(storage, trial_id)
        if trial is None or trial.state not in optuna_bridge.FINISHED_TRIAL_STATES:
            continue
        if fill_in_finished(db, slot_id, protocol.ending_of(trial)):
            filled += 1
    return filled
