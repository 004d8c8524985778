"""Ask/tell: trials of task ``external`` studies, trained by the client's own code.

A client asks for a trial and gets its hyperparameters and a lease; it may report intermediate
values (and hears whether to prune), then tells the outcome. Each ask takes one trial slot exactly
as a worker does (:mod:`service.slots`), so ``n_trials`` stays exact however many clients ask. A
lease that runs out without a tell fails the trial and gives its slot back; the next ask is
offered the same hyperparameters again.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy.engine import Engine

from optim_core.registry import OPTIMIZERS
from optim_core.spaces import sample_space, space_from_json
from service.db import StudyRow, TrialSlotRow, session_scope, utcnow
from service.errors import Conflict, TrialNotFound
from service.queries import as_utc
from service.slots import (
    ACCEPTING_TRIALS,
    EXTERNAL_TASK,
    SLOT_HELD,
    SLOT_RELEASED,
    ClaimedSlot,
    claim_trial_slot,
    expire_leases,
    finish_slot,
    mark_slot_running,
    release_slot,
)
from service.study_ops import study_row
from studies.samplers import make_pruner, make_sampler, slot_sampler_seed

# The holder recorded on slots taken through the API.
ASK_TELL_HOLDER = "ask/tell"
# What a told outcome becomes in Optuna.
TOLD_STATES = {
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
}


@dataclass(frozen=True)
class AskedTrial:
    """A trial handed to an ask/tell client."""

    study: str
    optimizer: str
    number: int
    params: dict[str, Any]
    python: str
    lease: str
    lease_expires_at: datetime


@dataclass(frozen=True)
class Reported:
    """The answer to a report."""

    should_prune: bool
    lease_expires_at: datetime | None


@dataclass(frozen=True)
class Told:
    """How a told trial ended, and the study's status afterwards."""

    study: str
    optimizer: str
    number: int
    state: str
    value: float | None
    study_status: str


@dataclass(frozen=True)
class _ExternalStudy:
    id: int
    status: str
    pairs: dict[str, tuple[int, str]]  # optimizer -> (pair id, Optuna study name)
    pruner: str
    epochs: int | None


@dataclass(frozen=True)
class _HeldTrial:
    study: _ExternalStudy
    optimizer: str
    number: int
    trial_id: int
    optuna_study_name: str
    slot_id: int
    lease_seconds: float


def _external_study(engine: Engine, name: str) -> _ExternalStudy:
    with session_scope(engine) as session:
        study = study_row(session, name)
        if study.task != EXTERNAL_TASK:
            raise Conflict(
                f"study {name!r} trains task {study.task!r}: workers run its trials. Ask/tell is "
                "for studies of task 'external', whose trials your own code trains"
            )
        return _ExternalStudy(
            id=study.id,
            status=study.status,
            pairs={p.optimizer: (p.id, p.optuna_study_name) for p in study.optimizers},
            pruner=study.pruner,
            epochs=study.epochs,
        )


def ask_trial(
    *,
    engine: Engine,
    storage: optuna.storages.BaseStorage,
    name: str,
    lease_seconds: float,
) -> AskedTrial:
    """Start the next trial of an external study and lease it to the caller.

    Args:
        engine: Engine of the service's tables.
        storage: Optuna's storage.
        name: The study.
        lease_seconds: How long the caller has for its tell (each report renews it).

    Raises:
        StudyNotFound: no such study.
        Conflict: not an external study, the study takes no more trials, or every slot is held
            by a running trial.
    """
    study = _external_study(engine, name)
    expire_leases(engine, storage)
    slot = claim_trial_slot(
        engine,
        holder=ASK_TELL_HOLDER,
        study_id=study.id,
        external=True,
        lease_token=secrets.token_urlsafe(16),
        lease_seconds=lease_seconds,
    )
    if slot is None:
        raise Conflict(_no_free_slot(engine, name))
    try:
        return _start_trial(engine, storage, slot, lease_seconds)
    except BaseException:
        release_slot(engine, slot.slot_id, reason="the API could not start the trial")
        raise


def _no_free_slot(engine: Engine, name: str) -> str:
    study = _external_study(engine, name)
    if study.status not in ACCEPTING_TRIALS:
        return f"study {name!r} is {study.status}; it takes no new trials"
    return (
        f"every trial slot of study {name!r} is held by a running trial; retry when a running "
        "trial ends (a tell, or a lease that runs out)"
    )


def _start_trial(
    engine: Engine, storage: optuna.storages.BaseStorage, slot: ClaimedSlot, lease_seconds: float
) -> AskedTrial:
    spec = OPTIMIZERS[slot.optimizer]
    space = space_from_json(slot.search_space, spec.domains)
    study = optuna.load_study(
        study_name=slot.optuna_study_name,
        storage=storage,
        sampler=make_sampler(
            slot.sampler,
            seed=slot_sampler_seed(slot.seed, slot.optimizer, slot.ordinal),
            space=space,
        ),
        pruner=make_pruner(slot.pruner, epochs=slot.epochs),
    )
    # A trial whose lease ran out was enqueued again: ask() hands it out first, and sampling it
    # returns its params unchanged.
    trial = study.ask()
    try:
        values = sample_space(trial, space)
        trial.set_user_attr("optimizer", slot.optimizer)
        trial.set_user_attr("hyperparameters", values)
        trial.set_user_attr("worker", ASK_TELL_HOLDER)
        trial.set_user_attr("lease_seconds", lease_seconds)
        if not mark_slot_running(
            engine, slot.slot_id, trial_id=trial._trial_id, trial_number=trial.number
        ):
            raise Conflict("the lease ran out before the trial could start; ask again")
    except BaseException:
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        raise
    assert slot.lease_token is not None and slot.lease_expires_at is not None
    return AskedTrial(
        study=slot.study_name,
        optimizer=slot.optimizer,
        number=trial.number,
        params=values,
        python=spec.python_line(values),
        lease=slot.lease_token,
        lease_expires_at=as_utc(slot.lease_expires_at),
    )


def _held_trial(
    engine: Engine,
    storage: optuna.storages.BaseStorage,
    *,
    name: str,
    optimizer: str,
    number: int,
    lease: str | None,
) -> _HeldTrial:
    """The running trial ``optimizer``/``number`` of an external study, checked to be held by
    the caller. Expired leases are collected first, so a late caller hears that its ran out."""
    study = _external_study(engine, name)
    if optimizer not in study.pairs:
        raise TrialNotFound(
            f"study {name!r} has no optimizer {optimizer!r}; its optimizers are "
            f"{sorted(study.pairs)}"
        )
    pair_id, optuna_name = study.pairs[optimizer]
    label = f"trial {optimizer}/{number} of study {name!r}"
    expire_leases(engine, storage)
    try:
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(optuna_name), number
        )
    except KeyError:
        raise TrialNotFound(f"{label} not found; its trial numbers come from ask") from None
    with session_scope(engine) as session:
        slot = session.scalar(
            sa.select(TrialSlotRow)
            .where(TrialSlotRow.study_optimizer_id == pair_id, TrialSlotRow.trial_id == trial_id)
            .order_by(TrialSlotRow.id.desc())
            .limit(1)
        )
    if slot is None:
        raise TrialNotFound(f"{label} was not handed out by ask")
    if slot.state == SLOT_RELEASED:
        raise Conflict(
            f"{label} has ended: its lease ran out or it was told failed. An expired trial is "
            "failed and its params are offered to the next ask"
        )
    if slot.state not in SLOT_HELD:  # finished: told already
        raise Conflict(f"{label} has already been told; ask for a new trial")
    if lease is not None and not secrets.compare_digest(lease, slot.lease_token or ""):
        raise Conflict(
            f"the lease does not match {label}; send the lease that ask returned with it"
        )
    trial = storage.get_trial(trial_id)
    if trial.state != TrialState.RUNNING:
        raise Conflict(f"{label} is no longer running; ask for a new trial")
    return _HeldTrial(
        study=study,
        optimizer=optimizer,
        number=number,
        trial_id=trial_id,
        optuna_study_name=optuna_name,
        slot_id=slot.id,
        lease_seconds=float(trial.user_attrs.get("lease_seconds", 0.0)),
    )


def report_value(
    *,
    engine: Engine,
    storage: optuna.storages.BaseStorage,
    name: str,
    optimizer: str,
    number: int,
    step: int,
    value: float,
    lease: str | None = None,
) -> Reported:
    """Record an intermediate value of a running trial, say whether to prune it, renew its lease.

    Raises:
        StudyNotFound: no such study.
        TrialNotFound: no such trial.
        Conflict: the trial has ended, its lease ran out, or ``lease`` is not its lease.
    """
    held = _held_trial(engine, storage, name=name, optimizer=optimizer, number=number, lease=lease)
    study = optuna.load_study(
        study_name=held.optuna_study_name,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(),  # unused here; the cheapest to build
        pruner=make_pruner(held.study.pruner, epochs=held.study.epochs),
    )
    trial = optuna.trial.Trial(study, held.trial_id)
    trial.report(value, step)
    should_prune = trial.should_prune()
    return Reported(should_prune=should_prune, lease_expires_at=_renew_lease(engine, held))


def _renew_lease(engine: Engine, held: _HeldTrial) -> datetime | None:
    if held.lease_seconds <= 0:
        return None
    expires = utcnow() + timedelta(seconds=held.lease_seconds)
    with session_scope(engine) as session:
        renewed = session.execute(
            sa.update(TrialSlotRow)
            .where(TrialSlotRow.id == held.slot_id, TrialSlotRow.state.in_(SLOT_HELD))
            .values(lease_expires_at=expires)
        ).rowcount
    return as_utc(expires) if renewed else None


def renew_lease(
    *,
    engine: Engine,
    storage: optuna.storages.BaseStorage,
    name: str,
    optimizer: str,
    number: int,
    lease: str,
    lease_seconds: float | None = None,
) -> datetime:
    """Extend the lease of a running trial (a client training longer than its lease).

    Args:
        lease_seconds: The new lease from now; default: the one the trial was asked with.

    Returns:
        When the lease now runs out.

    Raises:
        StudyNotFound: no such study.
        TrialNotFound: no such trial.
        Conflict: the trial has ended, its lease ran out, or ``lease`` is not its lease.
    """
    held = _held_trial(engine, storage, name=name, optimizer=optimizer, number=number, lease=lease)
    if lease_seconds is not None:
        held = dataclasses.replace(held, lease_seconds=lease_seconds)
    expires = _renew_lease(engine, held)
    if expires is None:
        raise Conflict(
            f"trial {optimizer}/{number} of study {name!r} ended meanwhile (told, or its lease "
            "ran out)"
        )
    return expires


def tell_outcome(
    *,
    engine: Engine,
    storage: optuna.storages.BaseStorage,
    name: str,
    optimizer: str,
    number: int,
    value: float | None,
    state: str,
    lease: str | None = None,
    max_failed_trials: int | None = None,
) -> Told:
    """End a running trial: ``complete`` with its ``value``, ``pruned`` or ``failed``.

    A complete or pruned trial counts towards ``n_trials``; a failed one gives its slot back (and
    fails the study after ``max_failed_trials`` failures of one optimizer).

    Raises:
        StudyNotFound: no such study.
        TrialNotFound: no such trial.
        Conflict: the trial has ended, its lease ran out, or ``lease`` is not its lease.
    """
    held = _held_trial(engine, storage, name=name, optimizer=optimizer, number=number, lease=lease)
    # The slot ends first: whichever of this tell and a lease expiry ends it wins, and the loser
    # leaves the Optuna trial alone, so the trial and its slot never disagree.
    if state == "failed":
        ended = release_slot(
            engine,
            held.slot_id,
            reason="the client told the trial failed",
            max_failed_trials=max_failed_trials,
        )
    else:
        ended = finish_slot(engine, held.slot_id)
    if not ended:
        raise Conflict(
            f"trial {optimizer}/{number} of study {name!r} ended meanwhile (its lease ran out)"
        )
    study = optuna.load_study(
        study_name=held.optuna_study_name,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(),
    )
    frozen = study.tell(
        number, values=value if state == "complete" else None, state=TOLD_STATES[state]
    )
    with session_scope(engine) as session:
        status = session.scalar(sa.select(StudyRow.status).where(StudyRow.id == held.study.id))
    return Told(
        study=name,
        optimizer=optimizer,
        number=number,
        state=state,
        value=frozen.value,
        study_status=status or "deleted",
    )
