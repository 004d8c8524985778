"""Trials trained elsewhere, brought into an ``external`` study whole (``POST .../trials/import``).

A client that tuned before it used the service (its own loop, another tool, an exported Optuna
study) sends each finished trial: its optimizer, hyperparameters, final value (or ``pruned``) and
per-step values. Each becomes a trial like an ask/tell one, so the study's counts, best, verdict,
the catalogue and the warm starts of later studies all see it, with origin ``import``:

1. everything is checked first (the optimizer is the study's, the hyperparameters lie inside the
   study's search space exactly, as sent: nothing is clipped; there are enough free slots), and a
   bad request is refused before anything is written;
2. then, per trial: a slot of its optimizer is claimed (:func:`service.trials.lifecycle.claim_slot`,
   bringing its own config), its Optuna trial is created finished in one write (``add_trial``,
   guarded by the slot, :mod:`service.trials.guard`), and the slot is started and finished with
   the trial's record, by the one trial protocol (:mod:`service.trials.protocol`).

Each trial is imported whole or not at all. A request that fails part way (a client racing for
the last slots, the study stopped, the database gone) has imported the trials before the failing
one, in order; a 409 says how many, and the trials list shows them (origin ``import``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import FixedTrial, TrialState

from optim_core.registry import OPTIMIZERS
from optim_core.spaces import Dimension, Fixed, sample_space, space_from_json
from service.errors import Conflict, FieldError, InvalidRequest
from service.store import optuna_bridge
from service.store.tables import StudyOptimizerRow
from service.trials import protocol
from service.trials.ask_tell import AskTell, external_study, starting
from service.trials.lifecycle import claim_slot
from service.vocabulary import ACCEPTING_TRIALS, ConfigOrigin
from studies.warm_start import fit_to_space

# The holder recorded on slots an import takes (for the moment it holds them).
IMPORT_HOLDER = "import"
# An import's slot is held for one trial's writes, and no heartbeat is sent meanwhile: it is
# leased, so recovery judges it by this lease, not by the heartbeat's grace period, which a slow
# database could outlast (the import then lost its slot to recovery part way). If the API dies
# mid-trial, the slot is collected when the lease runs out.
IMPORT_LEASE_SECONDS = 120.0
_STATES = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}


@dataclass(frozen=True)
class TrialToImport:
    """One finished trial, as the client sends it (validated by the API's schema)."""

    optimizer: str
    params: Mapping[str, Any]
    state: str = "complete"  # or "pruned"
    value: float | None = None
    intermediate_values: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportedTrial:
    optimizer: str
    number: int


@dataclass(frozen=True)
class _Prepared:
    optimizer: str
    optuna_study_name: str
    values: dict[str, Any]  # as the service shows them
    trial: TrialToImport
    params: dict[str, Any]  # Optuna's
    distributions: dict[str, optuna.distributions.BaseDistribution]

    def frozen(self, attrs: Mapping[str, Any]) -> optuna.trial.FrozenTrial:
        """The finished Optuna trial (checked by ``create_trial``)."""
        return optuna.trial.create_trial(
            state=_STATES[self.trial.state],
            value=self.trial.value,
            params=self.params,
            distributions=self.distributions,
            user_attrs={
                "optimizer": self.optimizer,
                "hyperparameters": self.values,
                **attrs,
            },
            intermediate_values=dict(self.trial.intermediate_values),
        )


def import_trials(at: AskTell, name: str, trials: Sequence[TrialToImport]) -> list[ImportedTrial]:
    """Import ``trials`` into the external study ``name``, in order.

    Raises:
        StudyNotFound: no such study.
        Conflict: not an external study, it takes no more trials, or it has too few free slots
            (for an optimizer) for them all; also when a racing client takes the last slots
            part way (the message says how many were imported).
        InvalidRequest: an optimizer the study does not have, hyperparameters outside the
            study's space, a complete trial without a value or a pruned one with one.
    """
    study = external_study(at, name)
    if study.status not in ACCEPTING_TRIALS:
        raise Conflict(f"study {name!r} is {study.status}; it takes no new trials")
    with at.db.read() as session:
        pairs = {
            pair.optimizer: pair
            for pair in session.scalars(
                sa.select(StudyOptimizerRow).where(StudyOptimizerRow.study_id == study.id)
            )
        }
    prepared = [_prepare(i, trial, pairs) for i, trial in enumerate(trials)]
    _check_free_slots(name, prepared, pairs)
    imported: list[ImportedTrial] = []
    for item in prepared:
        try:
            imported.append(_import_one(at, study.id, item))
        except Conflict as exc:
            raise Conflict(
                f"{exc} after {len(imported)} of the {len(prepared)} trials were imported; "
                f"trial {len(imported)} of the request and those after it were not"
            ) from exc
    return imported


def _prepare(index: int, trial: TrialToImport, pairs: Mapping[str, StudyOptimizerRow]) -> _Prepared:
    where: tuple[str | int, ...] = ("body", "trials", index)
    pair = pairs.get(trial.optimizer)
    if pair is None:
        raise InvalidRequest(
            [
                FieldError(
                    (*where, "optimizer"),
                    f"the study has no optimizer {trial.optimizer!r}; its optimizers are "
                    f"{sorted(pairs)}",
                )
            ]
        )
    if trial.state == "complete" and trial.value is None:
        raise InvalidRequest(
            [FieldError((*where, "value"), "a complete trial needs its final 'value'")]
        )
    if trial.state == "pruned" and trial.value is not None:
        raise InvalidRequest(
            [
                FieldError(
                    (*where, "value"),
                    "a pruned trial has no final value; leave 'value' out (its "
                    "intermediate_values show how far it got)",
                )
            ]
        )
    space = space_from_json(pair.search_space, OPTIMIZERS[pair.optimizer].domains)
    params = _optuna_params(where, trial.params, space)
    # Optuna's own distributions of the space, and the values as the service shows them.
    fixed = FixedTrial(params)
    values = sample_space(fixed, space)
    prepared = _Prepared(
        optimizer=pair.optimizer,
        optuna_study_name=pair.optuna_study_name,
        values=values,
        trial=trial,
        params=dict(fixed.params),
        distributions=dict(fixed.distributions),
    )
    try:
        prepared.frozen({})
    except ValueError as exc:  # Optuna's own checks of a trial
        raise InvalidRequest([FieldError(where, str(exc))]) from exc
    return prepared


def _optuna_params(
    where: tuple[str | int, ...], values: Mapping[str, Any], space: Mapping[str, Dimension]
) -> dict[str, Any]:
    """The Optuna parameters of ``values``, which must lie inside ``space`` exactly."""
    errors: list[FieldError] = []
    searched = {key for key, dim in space.items() if not isinstance(dim, Fixed)}
    for key, value in values.items():
        dim = space.get(key)
        if dim is None:
            errors.append(
                FieldError(
                    (*where, "params", key),
                    f"not a hyperparameter of this optimizer's space; its keys are {sorted(space)}",
                )
            )
        elif isinstance(dim, Fixed) and value != dim.value:
            errors.append(
                FieldError(
                    (*where, "params", key),
                    f"the study fixes {key} at {dim.value!r}; send that value or leave it out",
                )
            )
    for key in sorted(searched - set(values)):
        errors.append(FieldError((*where, "params", key), f"missing: the study searches {key}"))
    if errors:
        raise InvalidRequest(errors)
    fitted = fit_to_space({key: values[key] for key in searched}, space)
    outside = [
        key
        for key in sorted(searched)
        if fitted is None or not _same(fitted[0].get(key), values[key])
    ]
    if outside:
        raise InvalidRequest(
            [
                FieldError(
                    (*where, "params", key),
                    f"{values[key]!r} is outside the study's search space "
                    f"{space[key].to_json()!r}; only trials inside it can be imported",
                )
                for key in outside
            ]
        )
    assert fitted is not None
    return fitted[1]


def _same(fitted: Any, sent: Any) -> bool:
    if isinstance(sent, bool) or isinstance(fitted, bool):
        return type(sent) is type(fitted) and sent == fitted
    if isinstance(sent, float) and isinstance(fitted, float):
        return math.isclose(sent, fitted, rel_tol=1e-12, abs_tol=0.0)
    return sent == fitted


def _check_free_slots(
    name: str, prepared: Sequence[_Prepared], pairs: Mapping[str, StudyOptimizerRow]
) -> None:
    wanted: dict[str, int] = {}
    for item in prepared:
        wanted[item.optimizer] = wanted.get(item.optimizer, 0) + 1
    short = {
        optimizer: (count, pairs[optimizer].n_trials - pairs[optimizer].claimed)
        for optimizer, count in wanted.items()
        if count > pairs[optimizer].n_trials - pairs[optimizer].claimed
    }
    if short:
        details = ", ".join(
            f"{optimizer}: {count} sent, {free} free" for optimizer, (count, free) in short.items()
        )
        raise Conflict(
            f"study {name!r} has too few free trial slots for these trials ({details}); "
            "nothing was imported. Send fewer, or create a study with a larger n_trials"
        )


def _import_one(at: AskTell, study_id: int, item: _Prepared) -> ImportedTrial:
    claim = claim_slot(
        at.db,
        holder=IMPORT_HOLDER,
        study_id=study_id,
        external=True,
        optimizer=item.optimizer,
        bringing=ConfigOrigin.IMPORT,
        lease_seconds=IMPORT_LEASE_SECONDS,
    )
    if claim is None:
        raise Conflict(
            f"the study took no more {item.optimizer} trials (another client took the last "
            "slots, or the study was stopped)"
        )
    taken_back = "the study was deleted or stopped while the trials were imported"
    with starting(at, claim, failure="the import of this trial failed", taken_back=taken_back):
        attrs = optuna_bridge.slot_attrs(claim.slot_id, ConfigOrigin.IMPORT)
        added = protocol.start_finished(
            at.db, at.storage, claim, item.frozen({**attrs, "worker": IMPORT_HOLDER}), item.values
        )
    if not protocol.end_as(
        at.db, claim.slot_id, protocol.ending_of(added), token=claim.claim_token
    ):
        raise Conflict(taken_back)
    return ImportedTrial(item.optimizer, added.number)
