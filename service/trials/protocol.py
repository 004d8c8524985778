"""One trial protocol: how a slot's Optuna trial starts and how it ends, for every path (the
worker, ask/tell, the import, recovery, and the tests that start trials by hand).

What the slot keeps, and why (DESIGN §6). The slot row is the one record of where a trial is in
its life; Optuna holds the trial itself (params, values, intermediate values, attributes). The
slot keeps only what cannot be read from Optuna cheaply:

- its state, holder, claim token, heartbeat or lease: the service's, never Optuna's;
- the Optuna trial it became (``trial_id``, ``trial_number``), recorded by :func:`start`, so a
  tell finds its trial by one indexed read of the slot, and recovery finds a silent holder's;
- the config it runs (``params``), so a slot given back retries that config even when its
  trial died half way through its suggestions;
- once it ends, its outcome and figures (``value``, ``test_value``, ``record``), built in one
  place (:func:`ending_of`) from the finished trial, so a page of trials, the study's counters,
  its best and its verdict are reads of slot rows, never a read of Optuna per trial.

Start: the trial is created with the slot's id in its user attributes (``hpt_slot``, in the same
write), then recorded on the slot (claimed -> running). A process that dies in between leaves a
RUNNING trial whose slot never ran it: recovery fails it as an orphan.

End: Optuna is told once (one guarded write, :func:`service.store.optuna_bridge.tell`), then the
slot finishes (COMPLETE, PRUNED) or is released. A trial that had already ended the same way (an
earlier attempt of this end whose slot update was lost) is accepted, so an end can be retried
whole; one that ended otherwise raises :class:`EndedOtherwise`. Recovery (``settle``) takes
whatever end Optuna already holds.

The caller holds the slot's guard (:mod:`service.trials.guard`) around both, so a slot taken back
meanwhile makes the Optuna write raise :class:`~service.trials.guard.SlotTakenBack`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from service.store import optuna_bridge
from service.store.database import Database
from service.trials.guard import SlotTakenBack
from service.trials.lifecycle import Claim, Ending, finish_slot, release_slot, start_slot
from service.vocabulary import FINISHING_OUTCOMES, SlotOutcome


class EndedOtherwise(RuntimeError):
    """The trial had already ended, not the way this end tells it (``trial``: as it ended)."""

    def __init__(self, trial: FrozenTrial) -> None:
        super().__init__(f"trial {trial.number} already ended as {trial.state.name}")
        self.trial = trial


class TrialGone(RuntimeError):
    """The trial no longer exists: its study was deleted."""


# --------------------------------------------------------------------------- start


def start(
    db: Database,
    study: optuna.Study,
    claim: Claim,
    *,
    attrs: Mapping[str, Any] | None = None,
    fixed: Mapping[str, Any] | None = None,
    prepare: Callable[[optuna.Trial], Mapping[str, Any]] | None = None,
    call: Callable[[str, Callable[[], Any]], Any] | None = None,
) -> optuna.Trial:
    """Create the claimed slot's Optuna trial with its attributes and record it on the slot
    (claimed -> running).

    Args:
        db: The database.
        study: The slot's Optuna study, loaded with the sampler that suggests its params.
        claim: The claimed slot.
        attrs: User attributes of the trial beyond the slot's id and origin.
        fixed: Optuna params its suggest calls return instead of sampling (a planned config).
        prepare: Run on the new trial before it is recorded; returns the config recorded on
            the slot (ask/tell samples the whole space here). Without it the slot keeps the
            config it was claimed with.
        call: Runs each step, ``call(what, step)``: a worker retries each through a database
            outage, so a retried step never creates a second trial.

    Raises:
        SlotTakenBack: the slot was taken back before its trial was recorded on it.
    """
    run = call or (lambda what, step: step())
    trial: optuna.Trial = run(
        "start the trial",
        lambda: optuna_bridge.start_trial(
            study, slot_id=claim.slot_id, origin=claim.origin, fixed=fixed, attrs=attrs
        ),
    )
    params = prepare(trial) if prepare is not None else (claim.params or {})
    run(
        "record the trial on its slot",
        lambda: record(db, claim, optuna_bridge.trial_id(trial), trial.number, params),
    )
    return trial


def start_finished(
    db: Database,
    storage: optuna.storages.BaseStorage,
    claim: Claim,
    trial: FrozenTrial,
    params: Mapping[str, Any],
) -> FrozenTrial:
    """Start the claimed slot with a trial that finished elsewhere (an import): the trial is
    added whole, carrying the slot's id, and recorded on the slot. End it with :func:`end_as`.

    Raises:
        SlotTakenBack: the slot was taken back, or its Optuna study deleted, meanwhile.
    """
    if optuna_bridge.slot_of(trial) != claim.slot_id:
        raise ValueError("the trial must carry its slot's attributes (optuna_bridge.slot_attrs)")
    added = optuna_bridge.add_finished_trial(storage, claim.optuna_study_name, trial)
    if added is None:
        raise SlotTakenBack(f"the Optuna study of slot {claim.slot_id} was deleted")
    record(db, claim, optuna_bridge.trial_id(added), added.number, params)
    return added


def record(
    db: Database, claim: Claim, trial_id: int, trial_number: int, params: Mapping[str, Any]
) -> None:
    """Record on the slot the trial it became (claimed -> running).

    Raises:
        SlotTakenBack: the slot is no longer the claimant's.
    """
    if not start_slot(
        db,
        claim.slot_id,
        claim.claim_token,
        trial_id=trial_id,
        trial_number=trial_number,
        params=params,
    ):
        raise SlotTakenBack(f"slot {claim.slot_id} was taken back before its trial started")


# --------------------------------------------------------------------------- end


def tell(
    storage: optuna.storages.BaseStorage,
    trial_id: int,
    state: TrialState,
    value: float | None = None,
    *,
    reader: optuna.storages.BaseStorage | None = None,
    settle: bool = False,
) -> FrozenTrial:
    """Tell Optuna how a trial ended, once; returns the trial as it ended.

    The trial is read first, through ``reader`` when given (on SQLite a read that never takes
    the write lock), then told in one write; what was read is what ended, with the state and
    value told (nobody else writes a trial while its slot is held). A trial that had already
    finished the same way (and with the same value) is returned as it is; with ``settle``, one
    that finished in any way is.

    Raises:
        EndedOtherwise: the trial had already finished otherwise.
        TrialGone: the trial no longer exists.
        SlotTakenBack: the caller's slot was taken back (from the guard).
    """
    read = reader or storage
    trial = optuna_bridge.get_trial(read, trial_id)
    told = state
    if trial is not None and not trial.state.is_finished():
        try:
            told = optuna_bridge.tell(storage, trial_id, state, value)
        except KeyError:
            trial = None  # purged since it was read
        except optuna.exceptions.UpdateFinishedTrialError:
            trial = optuna_bridge.get_trial(read, trial_id)  # finished since it was read
        else:
            return optuna_bridge.as_told(trial, told, value)
    if trial is None:
        raise TrialGone(f"trial {trial_id} no longer exists")
    same = trial.state == told and (told != TrialState.COMPLETE or trial.value == value)
    if not same and not settle:
        raise EndedOtherwise(trial)
    return trial


def ending_of(
    trial: FrozenTrial,
    *,
    failed: SlotOutcome = SlotOutcome.FAILED,
    reason: str | None = None,
) -> Ending:
    """The slot ending that records an ended Optuna trial, the one place it is built.

    A COMPLETE or PRUNED trial finishes its slot with its figures. A FAIL one releases it as
    ``failed`` (``FAILED``; ``LOST`` or ``EXPIRED`` when it was not the config's fault), keeping
    the config it recorded, with ``reason`` (default: the trial's ``error`` attribute); only a
    ``FAILED`` one keeps the trial's record.
    """
    attrs = trial.user_attrs
    if trial.state == TrialState.COMPLETE:
        test_value = attrs.get("test_value")
        test_metrics = attrs.get("test_metrics")
        return Ending(
            SlotOutcome.COMPLETE,
            value=trial.value,
            test_value=test_value if isinstance(test_value, int | float) else None,
            test_metrics=test_metrics if isinstance(test_metrics, dict) else None,
            params=optuna_bridge.hyperparameters(trial),
            record=optuna_bridge.trial_record(trial),
        )
    if trial.state == TrialState.PRUNED:
        return Ending(
            SlotOutcome.PRUNED,
            params=optuna_bridge.hyperparameters(trial),
            reason=attrs.get("pruned_reason"),
            record=optuna_bridge.trial_record(trial),
        )
    if trial.state == TrialState.FAIL:
        if failed in FINISHING_OUTCOMES:
            raise ValueError(f"{failed} does not release a slot")
        return Ending(
            failed,
            params=optuna_bridge.recorded_hyperparameters(trial),
            reason=reason if reason is not None else str(attrs.get("error", "the trial raised")),
            record=optuna_bridge.trial_record(trial) if failed == SlotOutcome.FAILED else None,
        )
    raise ValueError(f"trial {trial.number} is {trial.state.name}, not ended")


def end_as(
    db: Database,
    slot_id: int,
    ending: Ending,
    *,
    token: str | None,
    max_failed_trials: int | None = None,
) -> bool:
    """Finish the slot (COMPLETE, PRUNED) or release it with ``ending`` (failing the study
    after ``max_failed_trials`` releases of one optimizer). ``False``: the slot had already
    ended."""
    if ending.outcome in FINISHING_OUTCOMES:
        return finish_slot(db, slot_id, ending, token=token)
    return release_slot(db, slot_id, ending, token=token, max_failed_trials=max_failed_trials)


def end(
    db: Database,
    storage: optuna.storages.BaseStorage,
    *,
    slot_id: int,
    token: str | None,
    trial_id: int,
    state: TrialState,
    value: float | None = None,
    failed: SlotOutcome = SlotOutcome.FAILED,
    reason: str | None = None,
    max_failed_trials: int | None = None,
    reader: optuna.storages.BaseStorage | None = None,
    settle: bool = False,
) -> tuple[FrozenTrial, bool]:
    """Tell Optuna once (:func:`tell`), then finish or release the slot with the ending built
    by :func:`ending_of`. Safe to retry whole. Returns the trial as it ended and whether this
    call ended the slot (``False``: it had already ended, or is not held with ``token``).

    Raises:
        EndedOtherwise, TrialGone, SlotTakenBack: as :func:`tell`; the slot is left as it is.
    """
    frozen = tell(storage, trial_id, state, value, reader=reader, settle=settle)
    ending = ending_of(frozen, failed=failed, reason=reason)
    return frozen, end_as(db, slot_id, ending, token=token, max_failed_trials=max_failed_trials)
