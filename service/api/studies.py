"""Studies: create, list, show, best configs, stop, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from service.api.deps import EngineDep, Limit, Offset, RequireApiKey, SettingsDep, StorageDep
from service.api.errors import error_responses
from service.best_configs import BestReport, study_best
from service.queries import Page, StudyStatus, get_study_status, list_studies
from service.schemas import (
    BestOut,
    StudyCreate,
    StudyDeletedOut,
    StudyOut,
    StudyPageOut,
    StudyStatusName,
)
from service.study_ops import StudyRequest, create_study, delete_study, stop_study

router = APIRouter(prefix="/api/v1/studies", tags=["studies"])


@router.post(
    "",
    status_code=201,
    response_model=StudyOut,
    summary="Create a study",
    dependencies=[RequireApiKey],
    responses=error_responses(400, 401, 409, 422),
)
def create(
    body: StudyCreate,
    response: Response,
    engine: EngineDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> StudyStatus:
    """Queue a study: one Optuna study per optimizer, ``n_trials`` finished trials each, run by
    the workers (or, for task ``external``, by ask/tell clients). Nothing is stored when the
    request is refused."""
    plan = create_study(
        engine=engine,
        storage=storage,
        settings=settings,
        request=StudyRequest(**body.model_dump()),
    )
    response.headers["Location"] = f"{router.prefix}/{plan.name}"
    return get_study_status(
        engine=engine,
        storage=storage,
        name=plan.name,
        heartbeat_interval=settings.heartbeat_interval,
    )


@router.get("", response_model=StudyPageOut, summary="List studies", responses=error_responses())
def list_(
    engine: EngineDep,
    status: Annotated[StudyStatusName | None, Query(description="Only this status.")] = None,
    task: Annotated[str | None, Query(description="Only studies of this task.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page:
    """Studies, newest first."""
    return list_studies(engine=engine, status=status, task=task, limit=limit, offset=offset)


@router.get(
    "/{name}",
    response_model=StudyOut,
    summary="Status, progress, best so far and ETA",
    responses=error_responses(404),
)
def show(name: str, engine: EngineDep, storage: StorageDep, settings: SettingsDep) -> StudyStatus:
    """The study's status, per-optimizer trial counts, the best trial of each optimizer and
    overall, and when it should be done."""
    return get_study_status(
        engine=engine, storage=storage, name=name, heartbeat_interval=settings.heartbeat_interval
    )


@router.get(
    "/{name}/best",
    response_model=BestOut,
    summary="Best config per optimizer and the winner",
    responses=error_responses(404),
)
def best(name: str, engine: EngineDep, storage: StorageDep) -> BestReport:
    """Per optimizer, best first: the value, hyperparameters, test metric and the line of Python
    that builds the optimizer; and the overall winner."""
    return study_best(engine=engine, storage=storage, name=name)


@router.post(
    "/{name}/stop",
    response_model=StudyOut,
    summary="Stop a study",
    dependencies=[RequireApiKey],
    responses=error_responses(401, 404, 409),
)
def stop(name: str, engine: EngineDep, storage: StorageDep, settings: SettingsDep) -> StudyStatus:
    """No new trial starts; running trials finish and are recorded. Stopping a stopped study is
    harmless; a completed or failed one answers 409."""
    stop_study(engine=engine, name=name)
    return get_study_status(
        engine=engine, storage=storage, name=name, heartbeat_interval=settings.heartbeat_interval
    )


@router.delete(
    "/{name}",
    response_model=StudyDeletedOut,
    summary="Delete a study",
    dependencies=[RequireApiKey],
    responses=error_responses(401, 404),
)
def delete(name: str, engine: EngineDep, storage: StorageDep) -> StudyDeletedOut:
    """Remove the study, its trial slots and its Optuna studies (with every trial)."""
    removed = delete_study(engine=engine, storage=storage, name=name)
    return StudyDeletedOut(name=name, optuna_studies=removed)
