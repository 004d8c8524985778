"""The trials of a study, page by page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import EngineDep, Limit, Offset, StorageDep
from service.api.errors import error_responses
from service.queries import Page, list_trials
from service.schemas import TrialPageOut, TrialStateName

router = APIRouter(prefix="/api/v1/studies", tags=["trials"])


@router.get(
    "/{name}/trials",
    response_model=TrialPageOut,
    summary="List a study's trials",
    responses=error_responses(404, 422),
)
def list_(
    name: str,
    engine: EngineDep,
    storage: StorageDep,
    optimizer: Annotated[str | None, Query(description="Only this optimizer's trials.")] = None,
    state: Annotated[TrialStateName | None, Query(description="Only trials in this state.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page:
    """Trials by optimizer (in the study's order), then by number: state, value,
    hyperparameters, test metrics, timing, reported values and training curves."""
    return list_trials(
        engine=engine,
        storage=storage,
        name=name,
        optimizer=optimizer,
        state=state,
        limit=limit,
        offset=offset,
    )
