"""The trials of a study, page by page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import DatabaseDep, Limit, Offset, ReaderDep
from service.api.errors import error_responses
from service.api.schemas import TrialPageOut
from service.studies.trial_list import list_trials
from service.vocabulary import TrialState

router = APIRouter(prefix="/api/v1/studies", tags=["trials"])


@router.get(
    "/{name}/trials",
    response_model=TrialPageOut,
    summary="List a study's trials",
    responses=error_responses(404, 422),
)
def list_(
    name: str,
    db: DatabaseDep,
    storage: ReaderDep,
    optimizer: Annotated[str | None, Query(description="Only this optimizer's trials.")] = None,
    state: Annotated[TrialState | None, Query(description="Only trials in this state.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> TrialPageOut:
    """Trials in the order they were asked for (trials added meanwhile come last): state, value,
    hyperparameters and where they came from, test metrics, timing, reported values and
    training curves."""
    return list_trials(
        db, storage, name=name, optimizer=optimizer, state=state, limit=limit, offset=offset
    )
