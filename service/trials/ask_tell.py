"""Ask/tell: trials of task ``external`` studies, trained by the client's own code.

A client asks for a trial and gets its hyperparameters and a lease (the slot's claim token); it
may report intermediate values (each report renews the lease, and says whether to prune) and
renew the lease while it trains, then tells the outcome. Each ask takes one trial slot exactly as
a worker does (:mod:`service.trials.lifecycle`), so ``n_trials`` stays exact however many clients
ask. A
lease that runs out without a tell is collected by recovery: the trial fails, its slot goes back
and the next ask is offered the same hyperparameters.

A tell happens exactly once, whatever fails when:

1. the lease is checked (a tell after the lease ran out is a 409, on the database's clock);
2. Optuna is told (:mod:`service.trials.guard` refuses it if the slot was taken back meanwhile);
3. the slot is finished or released.

If 3 fails, the slot is still held while Optuna knows the outcome: a retried tell finds Optuna
told with the same outcome and completes step 3, and recovery does the same when the lease runs
out. A retried identical tell answers as the first did; a different second tell is a 409.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

from optim_core.registry import OPTIMIZERS
from optim_core.spaces import sample_space, space_from_json
from service.api.schemas import AskOut, RenewOut, ReportOut, TellOut
from service.errors import Conflict, StudyNotFound, TrialNotFound
from service.store import optuna_bridge
from service.store.database import Database, as_utc, db_now
from service.store.tables import StudyOptimizerRow, StudyRow, TrialSlotRow
from service.trials import protocol
from service.trials.guard import SlotGuard, SlotTakenBack
from service.trials.lifecycle import (
    RECOVERY_HOLDER,
    Claim,
    Ending,
    claim_slot,
    release_slot,
    renew_lease,
    still_held,
)
from service.vocabulary import (
    ACCEPTING_TRIALS,
    EXTERNAL_TASK,
    HELD_SLOT_STATES,
    SlotOutcome,
    SlotState,
    StudyStatus,
    TrialPhase,
)
from studies.samplers import make_pruner, make_sampler, slot_sampler_seed
from studies.seeds import training_seed

# The holder recorded on slots taken through the API.
ASK_TELL_HOLDER = "ask/tell"
# What a told outcome becomes in Optuna.
TOLD_STATES = {
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
}
_TOLD_OUTCOMES = {
    "complete": SlotOutcome.COMPLETE,
    "pruned": SlotOutcome.PRUNED,
    "failed": SlotOutcome.FAILED,
}


@dataclass(frozen=True)
class AskTell:
    """What ask/tell needs of the API process: the database, Optuna's storages (the writer's
    writes guarded by ``guard``) and the limits."""

    db: Database
    storage: optuna.storages.BaseStorage
    guard: SlotGuard
    max_failed_trials: int | None = None
    # Optuna's storage for reads (on SQLite its reads never take the write lock); the writer's
    # when not given.
    reader: optuna.storages.BaseStorage | None = None


@dataclass(frozen=True)
class _Study:
    id: int
    name: str
    status: StudyStatus
    pruner: str
    epochs: int | None
    seed: int | None


@dataclass(frozen=True)
class _Slot:
    id: int
    token: str | None
    state: SlotState
    outcome: str | None
    value: float | None
    trial_id: int
    trial_number: int
    lease_seconds: float
    expired: bool
    optuna_study_name: str
    taken_over: bool
    origin: str | None

    @property
    def phase(self) -> TrialPhase:
        return TrialPhase.of(self.origin)


def external_study(at: AskTell, name: str) -> _Study:
    with at.db.read() as session:
        study = session.execute(
            sa.select(
                StudyRow.id,
                StudyRow.name,
                StudyRow.task,
                StudyRow.status,
                StudyRow.pruner,
                StudyRow.epochs,
                StudyRow.seed,
            ).where(StudyRow.name == name)
        ).one_or_none()
        if study is None or study.status == StudyStatus.DELETING:
            raise StudyNotFound(name)
        if study.task != EXTERNAL_TASK:
            raise Conflict(
                f"study {name!r} trains task {study.task!r}: workers run its trials. Ask/tell is "
                "for studies of task 'external', whose trials your own code trains"
            )
        return _Study(
            study.id,
            study.name,
            StudyStatus(study.status),
            study.pruner,
            study.epochs,
            study.seed,
        )


def ask_trial(at: AskTell, name: str, *, lease_seconds: float) -> AskOut:
    """Start the next trial of an external study and lease it to the caller.

    Raises:
        StudyNotFound: no such study.
        Conflict: not an external study, the study takes no more trials, or every slot is held
            by a running trial.
    """
    study = external_study(at, name)
    claim = claim_slot(
        at.db, holder=ASK_TELL_HOLDER, study_id=study.id, external=True, lease_seconds=lease_seconds
    )
    if claim is None:
        raise Conflict(_no_free_slot(at, name))
    with starting(
        at,
        claim,
        failure="the API could not start the trial",
        taken_back="the study was deleted or stopped while the trial started",
    ):
        return _start_trial(at, claim, lease_seconds)


@contextmanager
def starting(at: AskTell, claim: Claim, *, failure: str, taken_back: str) -> Iterator[None]:
    """Inside the block the claimed slot's trial is started, every Optuna write guarded by the
    slot. If the block fails, the slot goes back (``lost``: its config is offered again) and a
    slot taken back meanwhile (a delete, a stop) becomes a 409 saying ``taken_back``: whatever
    failed then failed for that (a delete's purge makes Optuna's reads of the study raise
    ``KeyError`` before any guarded write could say so)."""
    try:
        with at.guard.holding(claim.slot_id, claim.claim_token):
            yield
    except BaseException as exc:
        released = release_slot(
            at.db,
            claim.slot_id,
            Ending(SlotOutcome.LOST, reason=f"{failure}: {exc}"),
            token=claim.claim_token,
        )
        if isinstance(exc, SlotTakenBack) or (isinstance(exc, Exception) and not released):
            raise Conflict(taken_back) from exc
        raise


def _no_free_slot(at: AskTell, name: str) -> str:
    study = external_study(at, name)
    if study.status not in ACCEPTING_TRIALS:
        return f"study {name!r} is {study.status}; it takes no new trials"
    return (
        f"every trial slot of study {name!r} is held by a running trial; retry when a running "
        "trial ends (a tell, or a lease that runs out)"
    )


def _start_trial(at: AskTell, claim: Claim, lease_seconds: float) -> AskOut:
    spec = OPTIMIZERS[claim.optimizer]
    space = space_from_json(claim.search_space, spec.domains)
    study = optuna_bridge.load_study(
        at.storage,
        claim.optuna_study_name,
        sampler=make_sampler(
            claim.sampler,
            seed=slot_sampler_seed(
                claim.seed, claim.optimizer, claim.ordinal, sampler=claim.sampler
            ),
            space=space,
        ),
    )
    fixed = optuna_bridge.fixed_params(space, claim.params) if claim.params else None
    phase = TrialPhase.of(claim.origin)
    chosen: dict[str, Any] = {}

    def sample(trial: optuna.Trial) -> dict[str, Any]:
        # The seed the client trains with: the same rule as a worker's (studies.seeds), from
        # the study's seed and the trial's number, so a confirmation's seeds are fresh.
        chosen["seed"] = training_seed(claim.seed or 0, trial.number)
        trial.set_user_attr("seed", chosen["seed"])
        values = sample_space(trial, space)
        trial.set_user_attr("hyperparameters", values)
        chosen["values"] = values
        return values

    trial = protocol.start(
        at.db,
        study,
        claim,
        fixed=fixed,
        attrs={
            "optimizer": claim.optimizer,
            "worker": ASK_TELL_HOLDER,
            "phase": str(phase),
            **({"origin_source": claim.source} if claim.source else {}),
            **({"confirm_of_slot": claim.confirm_of} if claim.confirm_of is not None else {}),
        },
        prepare=sample,
    )
    values, seed = chosen["values"], chosen["seed"]
    assert claim.lease_expires_at is not None
    return AskOut(
        study=claim.study_name,
        optimizer=claim.optimizer,
        number=trial.number,
        params=values,
        python=spec.python_line(values),
        lease=claim.claim_token,
        lease_expires_at=as_utc(claim.lease_expires_at),
        seed=seed,
        phase=phase,
        origin=claim.origin,
    )


def _find_slot(at: AskTell, name: str, optimizer: str, number: int) -> tuple[_Study, _Slot]:
    """The study and the slot of trial ``optimizer``/``number``: one read of one row when they
    exist; the reads that explain why not only when they do not."""
    with at.db.read() as session:
        row = session.execute(
            sa.select(
                StudyRow.id.label("study_id"),
                StudyRow.task,
                StudyRow.status,
                StudyRow.pruner,
                StudyRow.epochs,
                StudyRow.seed,
                StudyOptimizerRow.optuna_study_name,
                TrialSlotRow.id,
                TrialSlotRow.claim_token,
                TrialSlotRow.state,
                TrialSlotRow.outcome,
                TrialSlotRow.value,
                TrialSlotRow.trial_id,
                TrialSlotRow.lease_seconds,
                TrialSlotRow.holder,
                TrialSlotRow.origin,
                (TrialSlotRow.lease_expires_at < db_now()).label("expired"),
            )
            .join(StudyOptimizerRow, TrialSlotRow.study_optimizer_id == StudyOptimizerRow.id)
            .join(StudyRow, StudyOptimizerRow.study_id == StudyRow.id)
            .where(
                StudyRow.name == name,
                StudyOptimizerRow.optimizer == optimizer,
                TrialSlotRow.trial_number == number,
            )
            .order_by(TrialSlotRow.id.desc())
            .limit(1)
        ).one_or_none()
    if (
        row is None
        or row.trial_id is None
        or row.task != EXTERNAL_TASK
        or row.status == StudyStatus.DELETING
    ):
        _no_such_slot(at, name, optimizer, number)
    assert row is not None
    study = _Study(row.study_id, name, StudyStatus(row.status), row.pruner, row.epochs, row.seed)
    return study, _Slot(
        id=row.id,
        token=row.claim_token,
        state=SlotState(row.state),
        outcome=row.outcome,
        value=row.value,
        trial_id=row.trial_id,
        trial_number=number,
        lease_seconds=row.lease_seconds or 0.0,
        expired=bool(row.expired),
        optuna_study_name=row.optuna_study_name,
        taken_over=row.holder == RECOVERY_HOLDER,
        origin=row.origin,
    )


def _no_such_slot(at: AskTell, name: str, optimizer: str, number: int) -> None:
    """Raise why trial ``optimizer``/``number`` of study ``name`` cannot be found."""
    study = external_study(at, name)
    with at.db.read() as session:
        optimizers = session.scalars(
            sa.select(StudyOptimizerRow.optimizer).where(StudyOptimizerRow.study_id == study.id)
        ).all()
    if optimizer not in optimizers:
        raise TrialNotFound(
            f"study {name!r} has no optimizer {optimizer!r}; its optimizers are "
            f"{sorted(optimizers)}"
        )
    raise TrialNotFound(
        f"trial {optimizer}/{number} of study {name!r} not found; its trial numbers come from ask"
    )


def _check_lease(slot: _Slot, lease: str, label: str) -> None:
    if slot.taken_over:
        raise Conflict(
            f"the lease of {label} ran out; the trial is failed and its params go to the next ask"
        )
    if slot.token is None or not secrets.compare_digest(lease.encode(), slot.token.encode()):
        raise Conflict(
            f"the lease does not match {label}; send the lease that ask returned with it"
        )


def _held(at: AskTell, name: str, optimizer: str, number: int, lease: str) -> _Slot:
    """The running trial ``optimizer``/``number``, checked to be held by the caller."""
    _, slot = _find_slot(at, name, optimizer, number)
    label = f"trial {optimizer}/{number} of study {name!r}"
    _check_lease(slot, lease, label)
    if slot.state == SlotState.FINISHED or (
        slot.state == SlotState.RELEASED and slot.outcome == SlotOutcome.FAILED
    ):
        raise Conflict(f"{label} has already been told ({slot.outcome}); ask for a new trial")
    if slot.state == SlotState.RELEASED:
        raise Conflict(
            f"{label} has ended ({slot.outcome}): its lease ran out or its study is being "
            "deleted. An expired trial is failed and its params are offered to the next ask"
        )
    if slot.expired:
        raise Conflict(
            f"the lease of {label} ran out; it is failed and its params go to the next ask. "
            "Renew the lease (POST .../renew, or report) while training"
        )
    return slot


def report_value(
    at: AskTell, name: str, optimizer: str, number: int, *, step: int, value: float, lease: str
) -> ReportOut:
    """Record an intermediate value of a running trial, renew its lease, say whether to prune.

    Raises:
        StudyNotFound, TrialNotFound: no such study or trial.
        Conflict: the trial was told already, its lease ran out, or ``lease`` is not its lease.
    """
    slot = _held(at, name, optimizer, number, lease)
    expires = renew_lease(at.db, slot.id, lease, slot.lease_seconds)
    if expires is None:
        raise Conflict(f"the lease of trial {optimizer}/{number} ran out meanwhile; ask again")
    study = external_study(at, name)
    try:
        with at.guard.holding(slot.id, lease):
            # A confirmation trial runs every epoch: its seeds are what the verdict compares.
            pruner = "none" if slot.phase == TrialPhase.CONFIRM else study.pruner
            optuna_study = optuna_bridge.load_study(
                at.storage,
                slot.optuna_study_name,
                pruner=make_pruner(pruner, epochs=study.epochs),
            )
            trial = optuna.trial.Trial(optuna_study, slot.trial_id)
            trial.report(value, step)
            should_prune = trial.should_prune()
    except Exception as exc:
        # Taken back meanwhile: a guarded write says so, or (a delete's purge) Optuna's reads
        # of the study fail first; either way the trial has ended.
        if isinstance(exc, SlotTakenBack) or not _still_held(at, slot.id, lease):
            raise Conflict(f"trial {optimizer}/{number} has ended meanwhile; ask again") from exc
        raise
    return ReportOut(should_prune=should_prune, lease_expires_at=as_utc(expires))


def renew(
    at: AskTell, name: str, optimizer: str, number: int, *, lease: str, lease_seconds: float | None
) -> RenewOut:
    """Extend a running trial's lease (for a client that trains longer than its lease).

    Raises:
        StudyNotFound, TrialNotFound: no such study or trial.
        Conflict: the trial was told already, its lease ran out, or ``lease`` is not its lease.
    """
    slot = _held(at, name, optimizer, number, lease)
    expires = renew_lease(at.db, slot.id, lease, lease_seconds or slot.lease_seconds)
    if expires is None:
        raise Conflict(f"the lease of trial {optimizer}/{number} ran out meanwhile; ask again")
    return RenewOut(lease_expires_at=as_utc(expires))


def tell_outcome(
    at: AskTell,
    name: str,
    optimizer: str,
    number: int,
    *,
    state: str,
    value: float | None,
    lease: str,
) -> TellOut:
    """End a running trial: ``complete`` with its ``value``, ``pruned`` or ``failed``.

    A complete or pruned trial counts towards ``n_trials``; a failed one gives its slot back (and
    fails the study after ``max_failed_trials`` failures of one optimizer).

    Raises:
        StudyNotFound, TrialNotFound: no such study or trial.
        Conflict: a different outcome was told already, the lease ran out, or ``lease`` is not
            the trial's.
    """
    study, slot = _find_slot(at, name, optimizer, number)
    label = f"trial {optimizer}/{number} of study {name!r}"
    _check_lease(slot, lease, label)
    if state == "pruned" and slot.phase == TrialPhase.CONFIRM:
        # A confirmation seed is never pruned: one that could not finish (it diverged) is a
        # failed seed, run again on another attempt, as on a worker.
        state = "failed"
    told = _TOLD_OUTCOMES[state]
    if slot.state not in HELD_SLOT_STATES:
        if slot.outcome == told and (told != SlotOutcome.COMPLETE or slot.value == value):
            return _told(at, study, optimizer, number, state, slot.value)  # a retried tell
        if slot.outcome in _TOLD_OUTCOMES.values():
            shown = (
                f"{slot.outcome} with value {slot.value}"
                if slot.value is not None
                else slot.outcome
            )
            raise Conflict(f"{label} was already told {shown}; a trial is told once")
        raise Conflict(
            f"{label} has ended ({slot.outcome}) before this tell: its lease ran out or its "
            "study is being deleted"
        )
    if slot.expired:
        raise Conflict(
            f"the lease of {label} ran out before this tell; the trial is failed and its params "
            "go to the next ask"
        )
    frozen = _end(at, slot, told, value, label)
    return _told(at, study, optimizer, number, state, frozen.value)


def _end(
    at: AskTell, slot: _Slot, told: SlotOutcome, value: float | None, label: str
) -> FrozenTrial:
    """Tell Optuna and end the slot (:func:`service.trials.protocol.end`); a retried tell whose
    first attempt told Optuna but not the slot completes the slot."""
    try:
        with at.guard.holding(slot.id, slot.token or ""):
            frozen, _ = protocol.end(
                at.db,
                at.storage,
                slot_id=slot.id,
                token=slot.token,
                trial_id=slot.trial_id,
                state=TOLD_STATES[str(told)],
                value=value if told == SlotOutcome.COMPLETE else None,
                reason="the client told the trial failed",
                max_failed_trials=at.max_failed_trials,
                reader=at.reader,
            )
    except SlotTakenBack as exc:
        raise Conflict(f"{label} ended meanwhile (its lease ran out); ask again") from exc
    except protocol.TrialGone as exc:
        # Purged by a delete.
        raise Conflict(f"{label} ended meanwhile: its study is being deleted") from exc
    except protocol.EndedOtherwise as exc:
        raise Conflict(
            f"{label} already ended as {exc.trial.state.name.lower()}; a trial is told once"
        ) from None
    return frozen


def _still_held(at: AskTell, slot_id: int, token: str) -> bool:
    with at.db.write() as session:
        return still_held(session, slot_id, token)


def _told(
    at: AskTell, study: _Study, optimizer: str, number: int, state: str, value: float | None
) -> TellOut:
    with at.db.read() as session:
        status = session.scalar(sa.select(StudyRow.status).where(StudyRow.id == study.id))
    return TellOut(
        study=study.name,
        optimizer=optimizer,
        number=number,
        state=state,
        value=value if state == "complete" else None,
        study_status=status or "deleted",
    )
