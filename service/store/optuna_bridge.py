"""What the service does with Optuna, in one place, through Optuna's public API only (the storage
methods, ``Study``, ``Trial``, ``FrozenTrial``).

Each (study, optimizer) pair is one Optuna study named ``<study>/<optimizer>``. Each trial the
service starts carries the id of its slot in the user attribute ``hpt_slot``, written in the same
transaction that creates the trial (``storage.create_new_trial`` with a template trial), so a
RUNNING trial can always be traced to its slot: one whose slot has ended is an orphan
(:mod:`service.trials.recovery`).

Times: Optuna writes ``datetime_start``/``datetime_complete`` as naive *local* time of whichever
process wrote them, so they are never compared with anything here. The service's own record of
when a trial started and ended is its slot's (on the database's clock).

Where Optuna offers no public way, this module says so: :func:`start_trial` creates a trial
through the study's own storage, and :func:`trial_id` reads a trial's storage id (the key every
storage method takes, which ``Trial`` and ``FrozenTrial`` keep in a private attribute). No other
module uses Optuna's private names. There is no query for "this page of trials" either: a finished
trial's figures are copied onto its slot when the slot ends (:func:`trial_record`), so a page of
trials is one read of slot rows; only a trial still running (or one that ended under an earlier
release) is read with ``storage.get_trial`` (a handful of indexed reads, whatever the study's
size).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from optim_core.spaces import Dimension
from studies.warm_start import fit_to_space

log = logging.getLogger(__name__)

SLOT_ATTR = "hpt_slot"
ORIGIN_ATTR = "origin"
FINISHED_TRIAL_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def optuna_study_name(study: str, optimizer: str) -> str:
    """The Optuna study of one (study, optimizer) pair: both parts show in the dashboard."""
    return f"{study}/{optimizer}"


def create_study(
    storage: optuna.storages.BaseStorage,
    *,
    name: str,
    direction: str,
    metric: str,
    attrs: Mapping[str, Any],
) -> None:
    """Create one Optuna study with its user attributes (shown by optuna-dashboard).

    Raises:
        optuna.exceptions.DuplicatedStudyError: the name is taken.
    """
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction=direction,
        sampler=optuna.samplers.RandomSampler(),  # unused: trials bring their own sampler
    )
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    # The dashboard's axes then say "val_accuracy" rather than "Objective 0".
    study.set_metric_names([metric])


def delete_studies(storage: optuna.storages.BaseStorage, names: Iterable[str]) -> list[str]:
    """Delete Optuna studies; returns the names that could not be deleted (and still exist)."""
    left: list[str] = []
    for name in names:
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            continue  # never created, or already deleted
        except Exception as exc:
            log.warning("could not delete Optuna study %s: %s", name, exc)
        # Optuna's RDB storage only logs some failures of a delete (an integrity error): look.
        if study_exists(storage, name):
            left.append(name)
    return left


def set_study_attrs(
    storage: optuna.storages.BaseStorage, name: str, attrs: Mapping[str, Any]
) -> bool:
    """Set user attributes of the Optuna study ``name`` (the dashboard shows them); ``False``
    when it no longer exists."""
    try:
        study_id = storage.get_study_id_from_name(name)
        for key, value in attrs.items():
            storage.set_study_user_attr(study_id, key, value)
    except KeyError:
        return False
    return True


def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def load_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    return optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=sampler or optuna.samplers.RandomSampler(),
        pruner=pruner,
    )


def fixed_params(space: Mapping[str, Dimension], values: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna's parameters for the user-facing ``values`` of a planned config (``beta1=0.9`` is
    Optuna's ``one_minus_beta1=0.1``), fitted to ``space`` as every warm start is
    (:func:`studies.warm_start.fit_to_space`); empty when nothing of it fits."""
    fitted = fit_to_space(values, space)
    return {} if fitted is None else fitted[1]


def slot_attrs(slot_id: int, origin: str) -> dict[str, Any]:
    """The user attributes that tie a trial to its slot, written with the trial."""
    return {SLOT_ATTR: slot_id, ORIGIN_ATTR: origin}


def start_trial(
    study: optuna.Study,
    *,
    slot_id: int,
    origin: str,
    fixed: Mapping[str, Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> optuna.Trial:
    """Create a RUNNING trial of ``study`` for a slot, as ``Study.ask`` does, with the slot's id
    (and ``attrs``) in its user attributes from the start; ``fixed`` parameters are returned by
    its suggest calls instead of sampled."""
    template = FrozenTrial(
        number=-1,  # given by the storage
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.now(),  # Optuna's convention: local time (never compared)
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={**slot_attrs(slot_id, origin), **(attrs or {})},
        system_attrs={"fixed_params": dict(fixed)} if fixed else {},
        intermediate_values={},
        trial_id=-1,
    )
    # No public way: a Study does not expose its storage, and the trial must be created through
    # it (Optuna's per-study cache must know the trial, or the first suggest fails). This is
    # what Study.ask does, with the template that carries the slot's id.
    storage = study._storage
    trial_id = storage.create_new_trial(study._study_id, template_trial=template)
    return optuna.Trial(study, trial_id)


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (what ``storage.get_trial`` and the slot's ``trial_id``
    take). No public way: both classes keep it in ``_trial_id``."""
    return trial._trial_id


def tell(
    storage: optuna.storages.BaseStorage,
    trial_id: int,
    state: TrialState,
    value: float | None = None,
) -> TrialState:
    """End a RUNNING trial in one write, as ``Study.tell`` does after its checks: ``value`` for
    a COMPLETE trial; a complete trial without a finite value fails, as ``Study.tell`` fails it.
    No study or sampler is loaded: no sampler of the service acts after a trial (no
    constraints), and the optimize loop that ``Study.stop`` ends is never run here.

    Returns the state told.

    Raises:
        optuna.exceptions.UpdateFinishedTrialError: the trial had already finished.
        KeyError: the trial no longer exists (its study was deleted).
    """
    values: list[float] | None = None
    if state == TrialState.COMPLETE:
        if value is None or not math.isfinite(value):
            log.warning("trial %s is failed: its value %r is not a finite number", trial_id, value)
            state = TrialState.FAIL
        else:
            values = [float(value)]
    storage.set_trial_state_values(trial_id, state=state, values=values)
    return state


def as_told(trial: FrozenTrial, state: TrialState, value: float | None) -> FrozenTrial:
    """A copy of ``trial`` (read while RUNNING) as :func:`tell` ended it, without reading it
    again."""
    ended = copy.deepcopy(trial)
    ended.state = state
    ended.values = [value] if state == TrialState.COMPLETE and value is not None else None
    ended.datetime_complete = datetime.now()  # Optuna's convention: local time (never compared)
    return ended


def add_finished_trial(
    storage: optuna.storages.BaseStorage, optuna_study: str, trial: FrozenTrial
) -> FrozenTrial | None:
    """Add a finished trial (made by ``optuna.trial.create_trial``, which checks it) to an
    Optuna study in one write, as ``Study.add_trial`` does; returns it as stored (its id and
    number given), or ``None`` when the study is gone (deleted before the write, or with the
    new trial just after it)."""
    try:
        study_id = storage.get_study_id_from_name(optuna_study)
    except KeyError:
        return None
    trial_id = storage.create_new_trial(study_id, template_trial=trial)
    return get_trial(storage, trial_id)


def get_trial(storage: optuna.storages.BaseStorage, trial_id: int) -> FrozenTrial | None:
    """The trial, or ``None`` when it no longer exists (its study was deleted)."""
    try:
        return storage.get_trial(trial_id)
    except KeyError:
        return None


def fail_trial(storage: optuna.storages.BaseStorage, trial_id: int) -> FrozenTrial | None:
    """Fail a RUNNING trial. Returns the trial as it is afterwards: FAIL, or the state someone
    else finished it in first (COMPLETE, PRUNED); ``None`` if it no longer exists."""
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, KeyError):
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    return get_trial(storage, trial_id)


def running_trials(storage: optuna.storages.BaseStorage, name: str) -> list[FrozenTrial]:
    """The RUNNING trials of the Optuna study ``name`` (none when it no longer exists)."""
    return _trials(storage, name, (TrialState.RUNNING,))


def all_trials(storage: optuna.storages.BaseStorage, name: str) -> dict[int, FrozenTrial]:
    """Every trial of the Optuna study ``name`` by trial id (none when it no longer exists)."""
    return {trial_id(t): t for t in _trials(storage, name, None)}


def _trials(
    storage: optuna.storages.BaseStorage, name: str, states: tuple[TrialState, ...] | None
) -> list[FrozenTrial]:
    # A delete may purge the study between the two reads: KeyError from either means gone.
    try:
        study_id = storage.get_study_id_from_name(name)
        return storage.get_all_trials(study_id, deepcopy=False, states=states)
    except KeyError:
        return []


def slot_of(trial: FrozenTrial) -> int | None:
    """The slot a trial was started for (``None``: started by something else)."""
    slot = trial.user_attrs.get(SLOT_ATTR)
    return slot if isinstance(slot, int) else None


def hyperparameters(trial: FrozenTrial) -> dict[str, Any]:
    """The user-facing values of a trial (``beta1``, not Optuna's ``one_minus_beta1``)."""
    recorded = recorded_hyperparameters(trial)
    return recorded if recorded is not None else dict(trial.params)


def recorded_hyperparameters(trial: FrozenTrial) -> dict[str, Any] | None:
    """A trial's whole config in user-facing values once it is recorded (the objective, or ask,
    sets ``hyperparameters`` after the last suggest); ``None`` before. What a slot given back
    keeps: a trial that died while suggesting holds only some params, under Optuna's names, and
    its slot must keep the config it was claimed with so that the retry runs that config."""
    values = trial.user_attrs.get("hyperparameters")
    return dict(values) if isinstance(values, Mapping) else None


# The user attributes of a trial that its record keeps (what the trials API shows of it).
RECORDED_ATTRS = ("epochs_run", "pruned_reason", "error", "worker", "curves")


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """What the trials API shows of an ended trial beyond its slot's own columns: its recorded
    user attributes and its intermediate values (as ``[step, value]`` pairs: JSON keys would
    turn the steps into strings). Kept on the slot when it ends, so that a page of trials never
    reads Optuna for a finished one."""
    record: dict[str, Any] = {
        name: _finite(trial.user_attrs[name]) for name in RECORDED_ATTRS if name in trial.user_attrs
    }
    # A non-finite value has no JSON form (PostgreSQL's json type refuses NaN): not recorded.
    record["intermediate_values"] = [
        [step, value]
        for step, value in sorted(trial.intermediate_values.items())
        if math.isfinite(value)
    ]
    return record


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float inside it made ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
