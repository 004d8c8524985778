"""A page of a study's trials: one page of slot rows, a finished trial's figures read from its
slot (kept there when it ended), a running one's from Optuna."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
import sqlalchemy as sa

from service.api.schemas import (
    TrialOut,
    TrialPageOut,
)
from service.errors import FieldError, InvalidRequest
from service.store import optuna_bridge
from service.store.database import Database, as_utc
from service.store.tables import StudyOptimizerRow, TrialSlotRow
from service.studies.lookup import study_row
from service.vocabulary import (
    SlotOutcome,
    SlotState,
    TrialState,
)

# Which slots each API trial state lists.
_STATE_FILTERS: Mapping[TrialState, Any] = {
    TrialState.WAITING: TrialSlotRow.state == SlotState.CLAIMED,
    TrialState.RUNNING: TrialSlotRow.state == SlotState.RUNNING,
    TrialState.COMPLETE: sa.and_(
        TrialSlotRow.state == SlotState.FINISHED, TrialSlotRow.outcome == SlotOutcome.COMPLETE
    ),
    TrialState.PRUNED: sa.and_(
        TrialSlotRow.state == SlotState.FINISHED, TrialSlotRow.outcome == SlotOutcome.PRUNED
    ),
    TrialState.FAILED: sa.and_(
        TrialSlotRow.state == SlotState.RELEASED, TrialSlotRow.trial_id.is_not(None)
    ),
}


def trial_state(slot: TrialSlotRow) -> TrialState:
    """How the API names the state of the trial a slot ran."""
    if slot.state == SlotState.CLAIMED:
        return TrialState.WAITING
    if slot.state == SlotState.RUNNING:
        return TrialState.RUNNING
    if slot.state == SlotState.FINISHED:
        return TrialState.PRUNED if slot.outcome == SlotOutcome.PRUNED else TrialState.COMPLETE
    return TrialState.FAILED


def list_trials(
    db: Database,
    storage: optuna.storages.BaseStorage,
    *,
    name: str,
    optimizer: str | None = None,
    state: TrialState | None = None,
    limit: int,
    offset: int,
) -> TrialPageOut:
    """One page of a study's trials, in the order they were asked for (each optimizer's in the
    order of its trial numbers); trials added while a client pages come last.

    Raises:
        StudyNotFound: no such study (or it was deleted while the page was read).
        InvalidRequest: ``optimizer`` is not one of the study's.
    """
    with db.read() as session:
        study = study_row(session, name)
        pairs = {p.id: p for p in study.optimizers}
        if optimizer is not None:
            pairs = {pid: p for pid, p in pairs.items() if p.optimizer == optimizer}
            if not pairs:
                raise InvalidRequest(
                    [
                        FieldError(
                            ("query", "optimizer"),
                            f"study {name!r} has no optimizer {optimizer!r}; its optimizers are "
                            f"{[p.optimizer for p in study.optimizers]}",
                        )
                    ]
                )
        conditions = [TrialSlotRow.study_optimizer_id.in_(list(pairs))]
        if state is not None:
            conditions.append(_STATE_FILTERS[state])
        else:
            conditions.append(
                sa.or_(TrialSlotRow.trial_id.is_not(None), TrialSlotRow.state == SlotState.CLAIMED)
            )
        total = session.scalar(
            sa.select(sa.func.count()).select_from(TrialSlotRow).where(*conditions)
        )
        # The page's ids first, then their rows: the sort handles the ids of the study's
        # matching slots (read from an index), never their rows with their records.
        page = (
            sa.select(TrialSlotRow.id)
            .where(*conditions)
            # In the order the slots were claimed: a trial added meanwhile comes after every
            # trial listed so far, so offset pages neither repeat nor skip one. "+ 0": the
            # study's slots are found by their pairs, then sorted; never by walking the whole
            # table (or a whole index) in id order until this study's slots turn up.
            .order_by(TrialSlotRow.id + 0)
            .limit(limit)
            .offset(offset)
        )
        ids = list(session.scalars(page))
        slots = session.execute(
            sa.select(TrialSlotRow, StudyOptimizerRow.optimizer)
            .join(StudyOptimizerRow)
            .where(TrialSlotRow.id.in_(ids))
            .order_by(TrialSlotRow.id)
        ).all()
    items = [_trial_out(storage, slot, pair_optimizer) for slot, pair_optimizer in slots]
    if any(item is None for item in items):
        with db.read() as session:
            study_row(session, name)  # deleted meanwhile: 404
        items = [item for item in items if item is not None]
    return TrialPageOut(items=items, total=total or 0, limit=limit, offset=offset)


def _trial_out(
    storage: optuna.storages.BaseStorage, slot: TrialSlotRow, optimizer: str
) -> TrialOut | None:
    """A trial as the API shows it: from its slot alone once it has ended (its record), else
    with what Optuna holds of it so far. ``None``: its Optuna trial is gone (study deleted)."""
    frozen = None
    if slot.record is not None:
        attrs = dict(slot.record)
        intermediate = {int(step): value for step, value in attrs.pop("intermediate_values", [])}
    elif slot.trial_id is not None:
        frozen = optuna_bridge.get_trial(storage, slot.trial_id)
        if frozen is None:
            return None
        attrs = frozen.user_attrs
        intermediate = dict(frozen.intermediate_values)
    else:
        attrs, intermediate = {}, {}
    state = trial_state(slot)
    started, ended = slot.started_at, slot.ended_at
    params = dict(slot.params or {}) or (
        optuna_bridge.hyperparameters(frozen) if frozen is not None else {}
    )
    return TrialOut(
        optimizer=optimizer,
        number=slot.trial_number,
        state=state,
        value=slot.value,
        params=params,
        origin=slot.origin,
        test_value=slot.test_value,
        test_metrics=slot.test_metrics if slot.test_metrics else attrs.get("test_metrics"),
        epochs_run=attrs.get("epochs_run"),
        pruned_reason=attrs.get("pruned_reason") if state == TrialState.PRUNED else None,
        error=(slot.reason or attrs.get("error")) if state == TrialState.FAILED else None,
        worker=attrs.get("worker") or slot.holder,
        started_at=as_utc(started),
        completed_at=as_utc(ended),
        duration_seconds=(ended - started).total_seconds() if started and ended else None,
        intermediate_values=intermediate,
        curves=attrs.get("curves"),
    )
