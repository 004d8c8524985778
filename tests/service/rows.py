"""Rows of the service's tables for the lifecycle and recovery tests: studies inserted directly
(the lifecycle does not care what a task is), and reads of what the lifecycle wrote.

Times are never computed in Python: a test that needs an old heartbeat or a lease that ran out
sets it with ``db_now(-seconds)``, on the database's clock like the service.
"""

from __future__ import annotations

from typing import Any

import optuna
import sqlalchemy as sa

from optim_core.registry import OPTIMIZERS
from optim_core.spaces import sample_space, space_from_json
from service.store import optuna_bridge
from service.store.database import Database, db_now
from service.store.tables import StudyOptimizerRow, StudyRow, TrialSlotRow
from service.trials import protocol
from service.trials.lifecycle import Claim, claim_slot
from service.vocabulary import StudyStatus


def add_study(
    db: Database,
    name: str,
    *,
    optimizers: tuple[str, ...] = ("sgd", "adam"),
    n_trials: int = 2,
    task: str = "fake_task",
    status: StudyStatus = StudyStatus.QUEUED,
    direction: str = "maximize",
) -> int:
    """Insert a study and its optimizer rows; returns the study's id."""
    with db.write() as session:
        study = StudyRow(
            name=name,
            task=task,
            model=task,
            metric="val_accuracy",
            direction=direction,
            epochs=2,
            n_trials=n_trials,
            sampler="random",
            pruner="none",
            seed=0,
            status=status,
        )
        study.optimizers = [
            StudyOptimizerRow(
                position=position,
                optimizer=optimizer,
                optuna_study_name=optuna_bridge.optuna_study_name(name, optimizer),
                search_space={},
                n_trials=n_trials,
            )
            for position, optimizer in enumerate(optimizers)
        ]
        session.add(study)
        session.flush()
        return study.id


def pairs(db: Database, study_id: int) -> dict[str, StudyOptimizerRow]:
    with db.read() as session:
        rows = session.scalars(
            sa.select(StudyOptimizerRow).where(StudyOptimizerRow.study_id == study_id)
        ).all()
        return {row.optimizer: row for row in rows}


def counters(db: Database, study_id: int, optimizer: str) -> dict[str, int]:
    row = pairs(db, study_id)[optimizer]
    names = ("claimed", "running", "finished", "complete", "pruned", "failed", "issued")
    return {name: getattr(row, name) for name in names}


def study_row(db: Database, study_id: int) -> StudyRow:
    with db.read() as session:
        return session.get_one(StudyRow, study_id)


def slot_row(db: Database, slot_id: int) -> TrialSlotRow:
    with db.read() as session:
        return session.get_one(TrialSlotRow, slot_id)


def slot_states(db: Database) -> dict[int, str]:
    with db.read() as session:
        return dict(session.execute(sa.select(TrialSlotRow.id, TrialSlotRow.state)).all())


def set_slot(db: Database, slot_id: int, **values: Any) -> None:
    """Change a slot row behind the lifecycle's back (e.g. ``heartbeat_at=db_now(-60)``)."""
    with db.write() as session:
        session.execute(sa.update(TrialSlotRow).where(TrialSlotRow.id == slot_id).values(**values))


def silence(db: Database, slot_id: int, seconds: float) -> None:
    """The slot's holder was last heard of ``seconds`` ago (database clock)."""
    set_slot(db, slot_id, heartbeat_at=db_now(-seconds))


def claim(db: Database, holder: str = "w1", **kwargs: Any) -> Claim | None:
    return claim_slot(db, holder=holder, **kwargs)


def start(
    db: Database,
    storage: optuna.storages.BaseStorage,
    slot: Claim,
    *,
    params: dict[str, Any] | None = None,
    record: bool = True,
) -> optuna.Trial:
    """Start the slot's Optuna trial as a worker does (carrying ``hpt_slot``), suggest
    ``params`` (or sample an lr), and record it on the slot (:func:`service.trials.protocol.
    start`) unless ``record`` is false (a holder that died before recording it)."""
    study = optuna_bridge.load_study(storage, slot.optuna_study_name)
    fixed = params or slot.params

    def suggest(trial: optuna.Trial) -> dict[str, Any]:
        values = {"lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True)}
        trial.set_user_attr("hyperparameters", values)
        return values

    if record:
        return protocol.start(db, study, slot, fixed=fixed, prepare=suggest)
    trial = optuna_bridge.start_trial(study, slot_id=slot.slot_id, origin=slot.origin, fixed=fixed)
    suggest(trial)
    return trial


def start_sampled(
    db: Database, storage: optuna.storages.BaseStorage, slot: Claim
) -> tuple[optuna.Trial, dict[str, Any]]:
    """Start the slot's trial as ask/tell does: its whole space sampled, recorded on the slot."""
    space = space_from_json(slot.search_space, OPTIMIZERS[slot.optimizer].domains)
    study = optuna_bridge.load_study(storage, slot.optuna_study_name)
    sampled: dict[str, Any] = {}

    def sample(trial: optuna.Trial) -> dict[str, Any]:
        sampled.update(sample_space(trial, space))
        return sampled

    return protocol.start(db, study, slot, prepare=sample), sampled


def study_id_of(db: Database, name: str) -> int:
    with db.read() as session:
        return session.scalar(sa.select(StudyRow.id).where(StudyRow.name == name))


def create_optuna_studies(
    storage: optuna.storages.BaseStorage,
    name: str,
    optimizers: tuple[str, ...],
    direction: str = "maximize",
) -> None:
    for optimizer in optimizers:
        optuna.create_study(
            storage=storage,
            study_name=optuna_bridge.optuna_study_name(name, optimizer),
            direction=direction,
        )
