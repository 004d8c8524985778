"""The life of a trial slot and of a study: every state change, and only legal ones.

A slot is one attempt at a trial (see :class:`~service.vocabulary.SlotState`)::

    claimed ──> running ──> finished            (COMPLETE or PRUNED: counts towards n_trials)
       │           │
       └───────────┴──────> released            (failed, lost, expired, revoked: runs again)

Each change is one conditional UPDATE on the slot's current state, in the same transaction as the
counters of its (study, optimizer) row, so it happens exactly once however many workers,
reapers and clients race for it. A holder's changes are also conditional on its claim token: a
late writer (a worker frozen past its grace period, a client whose lease ran out, a worker of a
deleted study) can only ever miss, never touch someone else's slot.

``n_trials`` stays exact because a claim is one conditional UPDATE of the counters
(``claimed = claimed + 1 WHERE claimed < n_trials``), applied atomically by the database.

A study is ``queued`` until its first claim (``running``), ``completed`` when the last slot of
its last optimizer finishes (decided here, in :func:`finish_slot`), ``failed`` after too many
failed trials of one optimizer (:func:`release_slot`), ``stopped`` by a user (:func:`stop_study`),
``deleting`` while a DELETE waits for its running trials (:func:`revoke_study`).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.errors import Conflict, StudyNotFound
from service.store.database import Database, db_now
from service.store.tables import StudyOptimizerRow, StudyRow, TrialSlotRow
from service.studies.confirmation import next_round, record_confirmed_best, start_confirmation
from service.vocabulary import (
    ACCEPTING_TRIALS,
    EXTERNAL_TASK,
    FINISHING_OUTCOMES,
    HELD_SLOT_STATES,
    ConfigOrigin,
    Direction,
    SlotOutcome,
    SlotState,
    StudyPhase,
    StudyStatus,
)

log = logging.getLogger(__name__)

TRANSITIONS: Mapping[SlotState, frozenset[SlotState]] = {
    SlotState.CLAIMED: frozenset({SlotState.RUNNING, SlotState.RELEASED}),
    SlotState.RUNNING: frozenset({SlotState.FINISHED, SlotState.RELEASED}),
    SlotState.FINISHED: frozenset(),
    SlotState.RELEASED: frozenset(),
}
"""The legal changes of a slot's state."""

STUDY_TRANSITIONS: Mapping[StudyStatus, frozenset[StudyStatus]] = {
    StudyStatus.QUEUED: frozenset(
        {StudyStatus.RUNNING, StudyStatus.STOPPED, StudyStatus.FAILED, StudyStatus.DELETING}
    ),
    StudyStatus.RUNNING: frozenset(
        {StudyStatus.COMPLETED, StudyStatus.STOPPED, StudyStatus.FAILED, StudyStatus.DELETING}
    ),
    StudyStatus.COMPLETED: frozenset({StudyStatus.DELETING}),
    StudyStatus.STOPPED: frozenset({StudyStatus.DELETING}),
    StudyStatus.FAILED: frozenset({StudyStatus.DELETING}),
    StudyStatus.DELETING: frozenset(),
}
"""The legal changes of a study's status."""

# Configs retried when the slot that tried them is given back without a verdict on them.
RETRIED_OUTCOMES = frozenset({SlotOutcome.LOST, SlotOutcome.EXPIRED})
# By the config's origin, the endings of a released slot after which its config is queued again
# for the next claim (origins not listed: ``RETRIED_OUTCOMES``). A confirmation seed is part of
# the verdict's design, so it runs again after a failure too, unless its study is being deleted;
# an imported trial's config is the client's own, sent again by the client if it wants (its 409
# says which trials were imported), so it is never offered to the next claim.
RETRIED_OUTCOMES_BY_ORIGIN: dict[ConfigOrigin, frozenset[SlotOutcome]] = {
    ConfigOrigin.CONFIRM: frozenset(SlotOutcome) - FINISHING_OUTCOMES - {SlotOutcome.REVOKED},
    ConfigOrigin.IMPORT: frozenset(),
}


def _sources(state: SlotState) -> list[str]:
    return [str(s) for s, targets in TRANSITIONS.items() if state in targets]


def _study_sources(status: StudyStatus) -> list[str]:
    return [str(s) for s, targets in STUDY_TRANSITIONS.items() if status in targets]


@dataclass(frozen=True)
class Claim:
    """A slot taken by one holder, with everything needed to run its trial.

    ``params``/``origin`` are set when the slot runs a planned config (a retried one, a warm
    start) instead of asking the sampler.
    """

    slot_id: int
    claim_token: str
    pair_id: int
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
    params: dict[str, Any] | None = None
    origin: str = ConfigOrigin.SAMPLER
    confirm_of: int | None = None
    source: str | None = None
    lease_expires_at: datetime | None = None


def new_claim_token() -> str:
    return secrets.token_urlsafe(24)


# --------------------------------------------------------------------------- claiming


def claim_slot(
    db: Database,
    *,
    holder: str,
    study_id: int | None = None,
    external: bool = False,
    lease_seconds: float | None = None,
    optimizer: str | None = None,
    bringing: ConfigOrigin | None = None,
) -> Claim | None:
    """Take one free slot, or return ``None`` when there is none.

    Studies take turns: the study whose last claim is oldest goes first (a new study counts from
    its creation, so a stream of new small studies cannot starve an older big one); within a
    study, its least recently claimed optimizer.

    Args:
        db: The database.
        holder: Who takes the slot (a worker id, or ``"ask/tell"``).
        study_id: Only this study (ask/tell); ``None`` for any.
        external: Take slots of ``external`` (ask/tell) studies instead of trainable ones.
        lease_seconds: For ask/tell: how long the lease lasts (on the database's clock).
        optimizer: Only a slot of this optimizer (with ``study_id``).
        bringing: The claimant brings the trial's config itself, from this origin (an
            import): the slot takes none of the study's planned configs.
    """
    task_filter = StudyRow.task == EXTERNAL_TASK if external else StudyRow.task != EXTERNAL_TASK
    accepting = [str(s) for s in ACCEPTING_TRIALS]
    with db.write() as session:
        query = (
            sa.select(StudyOptimizerRow.id)
            .join(StudyRow)
            .where(
                StudyRow.status.in_(accepting),
                task_filter,
                StudyOptimizerRow.claimed < StudyOptimizerRow.n_trials,
            )
            .order_by(
                sa.func.coalesce(StudyRow.last_claimed_at, StudyRow.created_at),
                StudyRow.id,
                StudyOptimizerRow.last_claimed_at.asc().nulls_first(),
                StudyOptimizerRow.position,
            )
            .limit(16)
        )
        if study_id is not None:
            query = query.where(StudyRow.id == study_id)
        if optimizer is not None:
            query = query.where(StudyOptimizerRow.optimizer == optimizer)
        for candidate in session.scalars(query).all():
            claim = _claim_in(
                session, candidate, holder=holder, lease_seconds=lease_seconds, bringing=bringing
            )
            if claim is not None:
                return claim
    return None


def _claim_in(
    session: Session,
    pair_id: int,
    *,
    holder: str,
    lease_seconds: float | None,
    bringing: ConfigOrigin | None = None,
) -> Claim | None:
    accepting = sa.select(StudyRow.id).where(
        StudyRow.status.in_([str(s) for s in ACCEPTING_TRIALS])
    )
    ordinal = session.execute(
        sa.update(StudyOptimizerRow)
        .where(
            StudyOptimizerRow.id == pair_id,
            StudyOptimizerRow.claimed < StudyOptimizerRow.n_trials,
            StudyOptimizerRow.study_id.in_(accepting),
        )
        .values(
            claimed=StudyOptimizerRow.claimed + 1,
            running=StudyOptimizerRow.running + 1,
            issued=StudyOptimizerRow.issued + 1,
            last_claimed_at=db_now(),
        )
        .returning(StudyOptimizerRow.issued)
    ).scalar_one_or_none()
    if ordinal is None:
        return None  # another claimant took the last slot of this one first
    pair = session.get_one(StudyOptimizerRow, pair_id)
    study = pair.study
    planned = (_pop_planned_config(pair) or {}) if bringing is None else {"origin": bringing}
    origin = planned.get("origin", ConfigOrigin.SAMPLER)
    token = new_claim_token()
    slot = TrialSlotRow(
        study_optimizer_id=pair.id,
        holder=holder,
        claim_token=token,
        state=SlotState.CLAIMED,
        ordinal=ordinal,
        origin=origin,
        params=planned.get("params"),
        confirm_of=planned.get("confirm_of"),
        lease_seconds=lease_seconds,
        lease_expires_at=db_now(lease_seconds) if lease_seconds else None,
        claimed_at=db_now(),
        heartbeat_at=db_now(),
    )
    session.add(slot)
    session.execute(
        sa.update(StudyRow).where(StudyRow.id == study.id).values(last_claimed_at=db_now())
    )
    set_study_status(session, study.id, StudyStatus.RUNNING)
    session.flush()
    session.refresh(slot, ["lease_expires_at"])
    return Claim(
        slot_id=slot.id,
        claim_token=token,
        pair_id=pair.id,
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
        params=dict(planned["params"]) if "params" in planned else None,
        origin=origin,
        confirm_of=planned.get("confirm_of"),
        source=planned.get("source"),
        lease_expires_at=slot.lease_expires_at,
    )


def _pop_planned_config(pair: StudyOptimizerRow) -> dict[str, Any] | None:
    # The pair row is locked by the claim's UPDATE (and SQLite writes one at a time), so two
    # claims never pop the same config.
    queue = list(pair.planned_configs or [])
    if not queue:
        return None
    pair.planned_configs = queue[1:]
    return queue[0]


# --------------------------------------------------------------------------- a holder's changes


def start_slot(
    db: Database,
    slot_id: int,
    token: str,
    *,
    trial_id: int,
    trial_number: int,
    params: Mapping[str, Any],
) -> bool:
    """claimed -> running: record the Optuna trial the slot became and its hyperparameters.

    ``False``: the slot is no longer this holder's (it was given back meanwhile).
    """
    with db.write() as session:
        result = session.execute(
            sa.update(TrialSlotRow)
            .where(
                TrialSlotRow.id == slot_id,
                TrialSlotRow.claim_token == token,
                TrialSlotRow.state.in_(_sources(SlotState.RUNNING)),
            )
            .values(
                state=SlotState.RUNNING,
                trial_id=trial_id,
                trial_number=trial_number,
                params=dict(params),
                started_at=db_now(),
                heartbeat_at=db_now(),
            )
        )
        return result.rowcount == 1


def still_held(session: Session, slot_id: int, token: str) -> bool:
    """Whether the slot is still held with ``token``; beats its heartbeat if so."""
    result = session.execute(
        sa.update(TrialSlotRow)
        .where(
            TrialSlotRow.id == slot_id,
            TrialSlotRow.claim_token == token,
            TrialSlotRow.state.in_([str(s) for s in HELD_SLOT_STATES]),
        )
        .values(heartbeat_at=db_now())
    )
    return result.rowcount == 1


def beat(db: Database, slot_id: int, token: str) -> bool:
    """The holder's heartbeat: ``False`` when the slot was taken back meanwhile."""
    with db.write() as session:
        return still_held(session, slot_id, token)


def renew_lease(db: Database, slot_id: int, token: str, lease_seconds: float) -> datetime | None:
    """Extend an ask/tell lease to ``lease_seconds`` from now (database clock). ``None``: the
    slot is not held with ``token`` or its lease has already run out."""
    with db.write() as session:
        renewed = session.execute(
            sa.update(TrialSlotRow)
            .where(
                TrialSlotRow.id == slot_id,
                TrialSlotRow.claim_token == token,
                TrialSlotRow.state.in_([str(s) for s in HELD_SLOT_STATES]),
                TrialSlotRow.lease_expires_at > db_now(),
            )
            .values(
                lease_expires_at=db_now(lease_seconds),
                lease_seconds=lease_seconds,
                heartbeat_at=db_now(),
            )
            .returning(TrialSlotRow.lease_expires_at)
        ).scalar_one_or_none()
    return renewed


RECOVERY_HOLDER = "recovery"
"""The holder recorded on a slot that recovery took over from a silent holder."""


def silent_holder(grace_period: float) -> Any:
    """SQL condition: the slot's holder has gone silent (database clock): a worker that has not
    beaten for ``grace_period`` seconds, or an ask/tell lease that ran out."""
    leased = TrialSlotRow.lease_expires_at.is_not(None)
    return sa.and_(
        TrialSlotRow.state.in_([str(s) for s in HELD_SLOT_STATES]),
        sa.or_(
            sa.and_(
                ~leased,
                sa.func.coalesce(TrialSlotRow.heartbeat_at, TrialSlotRow.claimed_at)
                < db_now(-grace_period),
            ),
            sa.and_(leased, TrialSlotRow.lease_expires_at < db_now()),
        ),
    )


def take_over(db: Database, slot_id: int, *, grace_period: float) -> str | None:
    """Take a held slot from a silent holder: a new claim token, so the holder's guarded writes
    miss from now on, while the slot stays held until recovery ends it with that token.

    Conditional on the holder still being silent (database clock): a holder that beat in time
    keeps its slot. Returns the new token, or ``None`` when the holder is alive after all or
    the slot has ended.
    """
    token = new_claim_token()
    with db.write() as session:
        result = session.execute(
            sa.update(TrialSlotRow)
            .where(TrialSlotRow.id == slot_id, silent_holder(grace_period))
            # Recovery is the holder now: another recovery pass leaves the slot alone unless
            # this one dies in turn (then its heartbeat goes silent like any holder's).
            .values(
                claim_token=token,
                holder=RECOVERY_HOLDER,
                heartbeat_at=db_now(),
                lease_expires_at=None,
            )
        )
    return token if result.rowcount == 1 else None


# --------------------------------------------------------------------------- ending a slot


@dataclass(frozen=True)
class Ending:
    """How a slot ended, as recorded on it."""

    outcome: SlotOutcome
    value: float | None = None
    test_value: float | None = None
    test_metrics: Mapping[str, Any] | None = None
    params: Mapping[str, Any] | None = None
    reason: str | None = None
    # The ended trial's figures for the trials API (optuna_bridge.trial_record).
    record: Mapping[str, Any] | None = None


def finish_slot(db: Database, slot_id: int, ending: Ending, *, token: str | None = None) -> bool:
    """held -> finished (COMPLETE or PRUNED): count it, keep the optimizer's best, and complete
    the study when every optimizer has its ``n_trials``.

    ``token``: the holder's; recovery, acting for a holder that died, passes none.
    ``False``: the slot had already ended (or is not this holder's).
    """
    if ending.outcome not in FINISHING_OUTCOMES:
        raise ValueError(f"{ending.outcome} does not finish a slot; release it")
    with db.write() as session:
        ended = _end(session, slot_id, SlotState.FINISHED, ending, token)
        if ended is None:
            return False
        pair_id, slot = ended
        counter = "complete" if ending.outcome == SlotOutcome.COMPLETE else "pruned"
        study_id = session.execute(
            sa.update(StudyOptimizerRow)
            .where(StudyOptimizerRow.id == pair_id)
            .values(
                running=StudyOptimizerRow.running - 1,
                finished=StudyOptimizerRow.finished + 1,
                **{counter: getattr(StudyOptimizerRow, counter) + 1},
            )
            .returning(StudyOptimizerRow.study_id)
        ).scalar_one()
        # Two claimants finishing the last slots of two optimizers at once would each see the
        # other's optimizer unfinished (PostgreSQL's READ COMMITTED), and neither would complete
        # the study. Locking the study row makes the second wait for the first; its check below
        # then sees the first's commit. (Same lock order as a claim: optimizer row, then study.)
        direction = session.execute(
            sa.select(StudyRow.direction).where(StudyRow.id == study_id).with_for_update()
        ).scalar_one()
        # A confirmation seed is one run of a config already known: the config's figure is its
        # mean over seeds, recorded when the confirmation ends, never its luckiest seed.
        searched = slot["origin"] != ConfigOrigin.CONFIRM
        if ending.outcome == SlotOutcome.COMPLETE and ending.value is not None and searched:
            _keep_best(session, pair_id, slot_id, ending.value, direction)
        unfinished = sa.select(StudyOptimizerRow.id).where(
            StudyOptimizerRow.study_id == study_id,
            StudyOptimizerRow.finished < StudyOptimizerRow.n_trials,
        )
        if session.scalar(sa.select(~sa.exists(unfinished))):
            _advance(session, study_id)
        return True


def _advance(session: Session, study_id: int) -> None:
    """Every optimizer has finished its slots. The search phase starts the confirmation (each
    optimizer's configs, on the first look's seeds); a round of the confirmation's race either
    plans the next look's seeds where the answer is still open, or, settled, completes the study
    (:mod:`service.studies.confirmation`)."""
    study = session.get_one(StudyRow, study_id)
    if StudyStatus(study.status) not in ACCEPTING_TRIALS:
        return  # stopped or failed meanwhile: it stays as it is
    searched = study.phase == StudyPhase.SEARCHING and study.confirm_top_k > 0
    if searched and start_confirmation(session, study):
        study.phase = StudyPhase.CONFIRMING
        study.updated_at = db_now()
        return
    racing = study.phase == StudyPhase.CONFIRMING and study.confirm_equivalence is not None
    if racing and next_round(session, study):
        study.updated_at = db_now()
        return
    if study.phase == StudyPhase.CONFIRMING:
        record_confirmed_best(session, study)
    study.phase = StudyPhase.COMPLETED
    set_study_status(session, study_id, StudyStatus.COMPLETED)


def _keep_best(session: Session, pair_id: int, slot_id: int, value: float, direction: str) -> None:
    better = (
        StudyOptimizerRow.best_value < value
        if direction == Direction.MAXIMIZE
        else StudyOptimizerRow.best_value > value
    )
    session.execute(
        sa.update(StudyOptimizerRow)
        .where(
            StudyOptimizerRow.id == pair_id, sa.or_(StudyOptimizerRow.best_value.is_(None), better)
        )
        .values(best_value=value, best_slot_id=slot_id)
    )


def fill_in_finished(db: Database, slot_id: int, ending: Ending) -> bool:
    """Record the result of a slot that finished under the first release's schema (which kept
    results only in Optuna): its outcome, value and params, its counter and the best.
    ``False``: already filled in."""
    with db.write() as session:
        pair_id = session.execute(
            sa.update(TrialSlotRow)
            .where(
                TrialSlotRow.id == slot_id,
                TrialSlotRow.state == SlotState.FINISHED,
                TrialSlotRow.outcome.is_(None),
            )
            .values(
                outcome=ending.outcome,
                value=ending.value,
                test_value=ending.test_value,
                test_metrics=dict(ending.test_metrics or {}),
                params=dict(ending.params or {}),
                reason=ending.reason,
                record=dict(ending.record) if ending.record is not None else None,
                started_at=TrialSlotRow.claimed_at,
            )
            .returning(TrialSlotRow.study_optimizer_id)
        ).scalar_one_or_none()
        if pair_id is None:
            return False
        counter = "complete" if ending.outcome == SlotOutcome.COMPLETE else "pruned"
        study_id = session.execute(
            sa.update(StudyOptimizerRow)
            .where(StudyOptimizerRow.id == pair_id)
            .values(**{counter: getattr(StudyOptimizerRow, counter) + 1})
            .returning(StudyOptimizerRow.study_id)
        ).scalar_one()
        if ending.outcome == SlotOutcome.COMPLETE and ending.value is not None:
            direction = session.scalar(sa.select(StudyRow.direction).where(StudyRow.id == study_id))
            _keep_best(session, pair_id, slot_id, ending.value, direction)
        return True


def release_slot(
    db: Database,
    slot_id: int,
    ending: Ending,
    *,
    token: str | None = None,
    max_failed_trials: int | None = None,
) -> bool:
    """held -> released: give the slot back so another attempt runs it.

    A config that never got a verdict (its worker died, its lease ran out) goes back to the front
    of the optimizer's planned configs, so the next claim tries it again. When
    ``max_failed_trials`` is given and this optimizer has failed that often, the study is marked
    failed with the reason instead of retrying forever. ``False``: the slot had already ended.
    """
    if ending.outcome in FINISHING_OUTCOMES:
        raise ValueError(f"{ending.outcome} finishes a slot; it is not released")
    with db.write() as session:
        ended = _end(session, slot_id, SlotState.RELEASED, ending, token)
        if ended is None:
            return False
        pair_id, slot = ended
        study_id, failed, optimizer = session.execute(
            sa.update(StudyOptimizerRow)
            .where(StudyOptimizerRow.id == pair_id)
            .values(
                claimed=StudyOptimizerRow.claimed - 1,
                running=StudyOptimizerRow.running - 1,
                failed=StudyOptimizerRow.failed + 1,
            )
            .returning(
                StudyOptimizerRow.study_id, StudyOptimizerRow.failed, StudyOptimizerRow.optimizer
            )
        ).one()
        retried = RETRIED_OUTCOMES_BY_ORIGIN.get(slot["origin"], RETRIED_OUTCOMES)
        if ending.outcome in retried and slot["params"]:
            pair = session.get_one(StudyOptimizerRow, pair_id)
            origin = (
                slot["origin"] if slot["origin"] != ConfigOrigin.SAMPLER else ConfigOrigin.RETRY
            )
            config = {"params": slot["params"], "origin": origin}
            if slot["confirm_of"] is not None:
                config["confirm_of"] = slot["confirm_of"]
            pair.planned_configs = [config, *(pair.planned_configs or [])]
        log.warning(
            "slot %s of %s given back (%s): %s", slot_id, optimizer, ending.outcome, ending.reason
        )
        if (
            max_failed_trials is not None
            and failed >= max_failed_trials
            and ending.outcome != SlotOutcome.REVOKED
        ):
            set_study_status(
                session,
                study_id,
                StudyStatus.FAILED,
                error=f"{optimizer}: {failed} trials failed; last: {ending.reason}",
            )
        return True


def _end(
    session: Session,
    slot_id: int,
    target: SlotState,
    ending: Ending,
    token: str | None,
) -> tuple[int, dict[str, Any]] | None:
    conditions = [TrialSlotRow.id == slot_id, TrialSlotRow.state.in_(_sources(target))]
    if token is not None:
        conditions.append(TrialSlotRow.claim_token == token)
    values: dict[str, Any] = {
        "state": target,
        "outcome": ending.outcome,
        "reason": ending.reason,
        "ended_at": db_now(),
    }
    if ending.value is not None:
        values["value"] = ending.value
    if ending.test_value is not None:
        values["test_value"] = ending.test_value
    if ending.test_metrics is not None:
        values["test_metrics"] = dict(ending.test_metrics)
    if ending.params:
        # A trial that died before its config was recorded brings none (see
        # optuna_bridge.recorded_hyperparameters): the slot keeps the config it was claimed
        # with, so a retry runs that config again.
        values["params"] = dict(ending.params)
    if ending.record is not None:
        values["record"] = dict(ending.record)
    row = session.execute(
        sa.update(TrialSlotRow)
        .where(*conditions)
        .values(**values)
        .returning(
            TrialSlotRow.study_optimizer_id,
            TrialSlotRow.params,
            TrialSlotRow.origin,
            TrialSlotRow.confirm_of,
        )
    ).one_or_none()
    if row is None:
        return None
    return row.study_optimizer_id, {
        "params": row.params,
        "origin": row.origin,
        "confirm_of": row.confirm_of,
    }


# --------------------------------------------------------------------------- study status


def set_study_status(
    session: Session, study_id: int, status: StudyStatus, *, error: str | None = None
) -> bool:
    """Move a study to ``status`` if that is a legal change from where it is; ``False`` if not."""
    values: dict[str, Any] = {"status": status, "updated_at": db_now()}
    if status.is_final:
        values["finished_at"] = db_now()
    if error is not None:
        values["error"] = error
    result = session.execute(
        sa.update(StudyRow)
        .where(StudyRow.id == study_id, StudyRow.status.in_(_study_sources(status)))
        .values(**values)
    )
    return result.rowcount == 1


def stop_study(db: Database, name: str) -> StudyStatus:
    """No new trial of the study starts; running trials finish and are recorded.

    Stopping a stopped study changes nothing.

    Raises:
        StudyNotFound: no such study.
        Conflict: the study already completed, failed or is being deleted.
    """
    with db.write() as session:
        study = session.scalar(sa.select(StudyRow).where(StudyRow.name == name))
        if study is None:
            raise StudyNotFound(name)
        status = StudyStatus(study.status)
        if status == StudyStatus.STOPPED or set_study_status(
            session, study.id, StudyStatus.STOPPED
        ):
            return StudyStatus.STOPPED
    raise Conflict(f"study {name!r} is already {status}; there is nothing to stop")


def revoke_study(db: Database, name: str) -> int:
    """Begin deleting a study: it becomes ``deleting`` (no new claims, the name stays taken) and
    every held slot is taken back from its holder, whose next guarded write misses.

    Each held slot goes held -> released (``revoked``) as :func:`release_slot` releases one, with
    the same counters (``running`` and ``claimed`` down, ``failed`` up), so the study's figures
    and /metrics stay right while the study waits in ``deleting``. A revoked config is never
    offered again. Returns the study's id.

    Raises:
        StudyNotFound: no such study.
    """
    with db.write() as session:
        study = session.scalar(sa.select(StudyRow).where(StudyRow.name == name))
        if study is None:
            raise StudyNotFound(name)
        # Slots, then optimizer rows, then the study: the order in which every other change
        # of a slot takes its locks (finish_slot, release_slot; a claim: optimizer, study), so
        # a delete racing them on PostgreSQL waits its turn and never deadlocks.
        revoked = session.execute(
            sa.update(TrialSlotRow)
            .where(
                TrialSlotRow.study_optimizer_id.in_(
                    sa.select(StudyOptimizerRow.id).where(StudyOptimizerRow.study_id == study.id)
                ),
                TrialSlotRow.state.in_(_sources(SlotState.RELEASED)),
            )
            .values(
                state=SlotState.RELEASED,
                outcome=SlotOutcome.REVOKED,
                reason="the study is being deleted",
                ended_at=db_now(),
            )
            .returning(TrialSlotRow.study_optimizer_id)
        ).scalars()
        per_pair: dict[int, int] = {}
        for pair_id in revoked:
            per_pair[pair_id] = per_pair.get(pair_id, 0) + 1
        for pair_id, count in sorted(per_pair.items()):
            session.execute(
                sa.update(StudyOptimizerRow)
                .where(StudyOptimizerRow.id == pair_id)
                .values(
                    claimed=StudyOptimizerRow.claimed - count,
                    running=StudyOptimizerRow.running - count,
                    failed=StudyOptimizerRow.failed + count,
                )
            )
        set_study_status(session, study.id, StudyStatus.DELETING)
        if per_pair:
            held = sum(per_pair.values())
            log.info("study %s: %d running trial(s) taken back for the delete", name, held)
        return study.id
