"""Creating and deleting studies: the service's rows and their Optuna studies together.

Nothing is ever half written. A request is validated completely before anything is stored
(:mod:`service.studies.requests`); the Optuna studies are created first and our rows after them in
one transaction, and the Optuna studies are removed again if that transaction fails.

Deleting goes the other way round: the study becomes ``deleting`` and every running trial's slot
is taken back (:func:`service.trials.lifecycle.revoke_study`); from then on no worker or client can
write to its Optuna trials (:mod:`service.trials.guard`), so its Optuna studies are deleted without
racing anyone, and our rows last. What cannot be removed is reported, and the study stays
``deleting`` until recovery removes it.

No function here calls Optuna's storage while a transaction of ours is open: on SQLite it would
wait for the write lock its own caller holds.
"""

from __future__ import annotations

import dataclasses

import optuna
import sqlalchemy as sa

from service.config import Settings
from service.errors import Conflict, StudyNotFound
from service.store import optuna_bridge
from service.store.database import Database, db_now
from service.store.tables import StudyOptimizerRow, StudyRow, TrialSlotRow
from service.studies.requests import StudyPlan, StudyRequest, plan_study
from service.studies.warm_start import planned_configs
from service.trials.lifecycle import revoke_study
from service.vocabulary import StudyPhase, StudyStatus


def create_study(
    *,
    db: Database,
    storage: optuna.storages.BaseStorage,
    settings: Settings,
    request: StudyRequest,
) -> StudyPlan:
    """Validate and store a new study: one Optuna study per optimizer, then our rows.

    Raises:
        InvalidRequest: the request asks for something impossible; nothing was written.
        Conflict: a study (or an Optuna study) of that name exists; nothing was written.
    """
    plan = plan_study(request, settings=settings)
    existing = _status_of(db, plan.name)
    if existing is not None:
        raise _name_taken(plan.name, existing)
    plan = dataclasses.replace(plan, planned=planned_configs(db, plan, request.warm_start))
    created: list[str] = []
    try:
        for optimizer, space in plan.spaces.items():
            name = plan.optuna_study_name(optimizer)
            try:
                optuna_bridge.create_study(
                    storage,
                    name=name,
                    direction=plan.direction,
                    metric=plan.metric,
                    attrs=_dashboard_attrs(plan, optimizer, space),
                )
            except optuna.exceptions.DuplicatedStudyError as exc:
                raise Conflict(
                    f"a study named {plan.name!r} already exists (the database holds its Optuna "
                    f"study {name!r}); choose another name"
                ) from exc
            created.append(name)
        try:
            _insert_rows(db, plan)
        except sa.exc.IntegrityError as exc:  # a concurrent request took the name first
            raise _name_taken(plan.name, _status_of(db, plan.name)) from exc
    except BaseException:
        optuna_bridge.delete_studies(storage, created)
        raise
    return plan


def _dashboard_attrs(plan: StudyPlan, optimizer: str, space: dict) -> dict:
    # Shown by optuna-dashboard, so that a person reading it sees what the study is about.
    return {
        "hpt_study": plan.name,
        "optimizer": optimizer,
        "task": plan.task,
        "model": plan.model,
        "metric": plan.metric,
        "n_trials": plan.n_trials,
        "epochs": plan.epochs,
        "sampler": plan.sampler,
        "pruner": plan.pruner,
        "search_space": space,
        "confirm": {"top_k": plan.confirm_top_k, "seeds": plan.confirm_seeds},
        "report": f"/api/v1/studies/{plan.name}/report",
    }


def _status_of(db: Database, name: str) -> StudyStatus | None:
    with db.read() as session:
        status = session.scalar(sa.select(StudyRow.status).where(StudyRow.name == name))
    return None if status is None else StudyStatus(status)


def _name_taken(name: str, status: StudyStatus | None) -> Conflict:
    if status == StudyStatus.DELETING:
        return Conflict(
            f"study {name!r} is being deleted; retry in a few seconds, or choose another name"
        )
    return Conflict(
        f"a study named {name!r} already exists; choose another name, or "
        f"DELETE /api/v1/studies/{name} first"
    )


def _insert_rows(db: Database, plan: StudyPlan) -> None:
    with db.write() as session:
        session.add(
            StudyRow(
                name=plan.name,
                task=plan.task,
                model=plan.model,
                metric=plan.metric,
                direction=plan.direction,
                epochs=plan.epochs,
                n_trials=plan.n_trials,
                sampler=plan.sampler,
                pruner=plan.pruner,
                seed=plan.seed,
                confirm_top_k=plan.confirm_top_k,
                confirm_seeds=plan.confirm_seeds,
                confirm_equivalence=plan.confirm_equivalence,
                phase=StudyPhase.SEARCHING,
                status=StudyStatus.QUEUED,
                created_at=db_now(),
                updated_at=db_now(),
                optimizers=[
                    StudyOptimizerRow(
                        position=position,
                        optimizer=optimizer,
                        optuna_study_name=plan.optuna_study_name(optimizer),
                        search_space=space,
                        n_trials=plan.n_trials,
                        search_trials=plan.n_trials,
                        planned_configs=plan.planned.get(optimizer) or None,
                    )
                    for position, (optimizer, space) in enumerate(plan.spaces.items())
                ],
            )
        )


def delete_study(
    *, db: Database, storage: optuna.storages.BaseStorage, name: str
) -> tuple[list[str], list[str]]:
    """Remove a study: take its running trials back, delete its Optuna studies, then our rows.

    Returns:
        The names of its Optuna studies, and those that could not be removed (then the study
        stays ``deleting`` and recovery tries again).

    Raises:
        StudyNotFound: no such study.
    """
    study_id = revoke_study(db, name)
    return purge_study(db, storage, study_id)


def purge_study(
    db: Database, storage: optuna.storages.BaseStorage, study_id: int
) -> tuple[list[str], list[str]]:
    """Delete the Optuna studies and the rows of a ``deleting`` study (see :func:`delete_study`)."""
    with db.read() as session:
        names = list(
            session.scalars(
                sa.select(StudyOptimizerRow.optuna_study_name)
                .where(StudyOptimizerRow.study_id == study_id)
                .order_by(StudyOptimizerRow.position)
            )
        )
    left = optuna_bridge.delete_studies(storage, names)
    if left:
        return names, left
    with db.write() as session:
        pairs = sa.select(StudyOptimizerRow.id).where(StudyOptimizerRow.study_id == study_id)
        # Explicitly, child tables first: SQLite enforces no ON DELETE CASCADE by default.
        session.execute(sa.delete(TrialSlotRow).where(TrialSlotRow.study_optimizer_id.in_(pairs)))
        session.execute(sa.delete(StudyOptimizerRow).where(StudyOptimizerRow.study_id == study_id))
        session.execute(
            sa.delete(StudyRow).where(
                StudyRow.id == study_id, StudyRow.status == StudyStatus.DELETING
            )
        )
    return names, []


def purge_deleting_studies(db: Database, storage: optuna.storages.BaseStorage) -> int:
    """Finish the deletes that could not remove everything at once. Returns how many finished."""
    with db.read() as session:
        ids = session.scalars(
            sa.select(StudyRow.id).where(StudyRow.status == StudyStatus.DELETING)
        ).all()
    return sum(not purge_study(db, storage, study_id)[1] for study_id in ids)


def require_study(db: Database, name: str) -> int:
    """The id of the study ``name``.

    Raises:
        StudyNotFound: no such study.
    """
    with db.read() as session:
        study_id = session.scalar(sa.select(StudyRow.id).where(StudyRow.name == name))
    if study_id is None:
        raise StudyNotFound(name)
    return study_id
