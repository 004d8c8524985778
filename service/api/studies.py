"""Studies: create, list, show, best configs, stop, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import HTMLResponse, JSONResponse

from service.api.deps import (
    DatabaseDep,
    Limit,
    Offset,
    ReaderDep,
    RequireApiKey,
    SettingsDep,
    WriterDep,
)
from service.api.errors import error_responses
from service.api.schemas import BestOut, StudyCreate, StudyDeletedOut, StudyOut, StudyPageOut
from service.errors import StudyNotFound
from service.report import render_report
from service.report.assemble import study_report
from service.studies.admin import create_study, delete_study
from service.studies.best_configs import study_best
from service.studies.progress import list_studies, study_view
from service.studies.requests import StudyRequest
from service.trials.lifecycle import stop_study
from service.vocabulary import StudyStatus

router = APIRouter(prefix="/api/v1/studies", tags=["studies"])


@router.post(
    "",
    status_code=201,
    response_model=StudyOut,
    summary="Create a study",
    dependencies=[RequireApiKey],
    responses=error_responses(400, 401, 409, 413, 422),
)
def create(
    body: StudyCreate,
    response: Response,
    db: DatabaseDep,
    storage: WriterDep,
    settings: SettingsDep,
) -> StudyOut | JSONResponse:
    """Queue a study: one Optuna study per optimizer, ``n_trials`` finished trials each, run by
    the workers (or, for task ``external``, by ask/tell clients). Nothing is stored when the
    request is refused."""
    plan = create_study(
        db=db, storage=storage, settings=settings, request=StudyRequest(**body.model_dump())
    )
    response.headers["Location"] = f"{router.prefix}/{plan.name}"
    try:
        return study_view(db, plan.name, heartbeat_interval=settings.heartbeat_interval)
    except StudyNotFound:
        # Deleted by another request right after it was created: it was created all the same.
        return JSONResponse(
            {"name": plan.name, "status": "deleted"},
            status_code=201,
            headers={"Location": response.headers["Location"]},
        )


@router.get("", response_model=StudyPageOut, summary="List studies", responses=error_responses())
def list_(
    db: DatabaseDep,
    status: Annotated[StudyStatus | None, Query(description="Only this status.")] = None,
    task: Annotated[
        str | None, Query(max_length=128, description="Only studies of this task.")
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> StudyPageOut:
    """Studies, newest first."""
    return list_studies(db, status=status, task=task, limit=limit, offset=offset)


@router.get(
    "/{name}",
    response_model=StudyOut,
    summary="Status, progress, best so far and ETA",
    responses=error_responses(404),
)
def show(name: str, db: DatabaseDep, settings: SettingsDep) -> StudyOut:
    """The study's status, per-optimizer trial counts, the best trial of each optimizer and
    overall, and when it should be done."""
    return study_view(db, name, heartbeat_interval=settings.heartbeat_interval)


@router.get(
    "/{name}/best",
    response_model=BestOut,
    summary="Best config per optimizer and the winner",
    responses=error_responses(404),
)
def best(name: str, db: DatabaseDep) -> BestOut:
    """Per optimizer, best first: the value, hyperparameters, test metric and the line of Python
    that builds the optimizer; and the overall winner."""
    return study_best(db, name)


@router.get(
    "/{name}/report",
    response_class=HTMLResponse,
    summary="The study's report page (HTML, works offline)",
    responses={
        **error_responses(404),
        200: {"content": {"text/html": {}}, "description": "One self-contained page."},
    },
)
def report(name: str, db: DatabaseDep, storage: ReaderDep) -> HTMLResponse:
    """One page that compares the optimizers: best so far against epochs spent, the learning
    curves of each optimizer's confirmed config over seeds, the metric against the learning
    rate, which hyperparameters mattered, and the verdict with the line of Python that builds
    each optimizer. It reloads itself while the study runs."""
    return HTMLResponse(render_report(study_report(db, storage, name)))


@router.post(
    "/{name}/stop",
    response_model=StudyOut,
    summary="Stop a study",
    dependencies=[RequireApiKey],
    responses=error_responses(401, 404, 409),
)
def stop(name: str, db: DatabaseDep, settings: SettingsDep) -> StudyOut:
    """No new trial starts; running trials finish and are recorded. Stopping a stopped study is
    harmless; a completed or failed one answers 409."""
    stop_study(db, name)
    return study_view(db, name, heartbeat_interval=settings.heartbeat_interval)


@router.delete(
    "/{name}",
    response_model=StudyDeletedOut,
    summary="Delete a study",
    dependencies=[RequireApiKey],
    responses={
        **error_responses(401, 404),
        202: {"model": StudyDeletedOut, "description": "Being deleted; it finishes shortly."},
    },
)
def delete(name: str, db: DatabaseDep, storage: WriterDep) -> StudyDeletedOut | JSONResponse:
    """Remove the study, its trial slots and its Optuna studies (with every trial). Its running
    trials are stopped first: their workers write nothing more. 202 when part of it could not
    be removed yet; the service finishes the delete in the background."""
    names, left = delete_study(db=db, storage=storage, name=name)
    if left:
        body = StudyDeletedOut(name=name, optuna_studies=names, remaining=left)
        return JSONResponse(body.model_dump(), status_code=202)
    return StudyDeletedOut(name=name, optuna_studies=names)
