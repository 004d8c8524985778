"""The best known config per optimizer for a task, over every study of it (the catalogue)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import DatabaseDep, Limit, Offset
from service.api.errors import error_responses
from service.api.schemas import BestOut
from service.studies.best_configs import best_for_task
from service.vocabulary import Direction

router = APIRouter(prefix="/api/v1", tags=["best"])


@router.get(
    "/best",
    response_model=BestOut,
    summary="Best known config per optimizer for a task",
    responses=error_responses(422),
)
def best(
    db: DatabaseDep,
    task: Annotated[str, Query(description="A task of GET /api/v1/tasks.")],
    model: Annotated[
        str | None,
        Query(
            max_length=128,
            description="Task external: the model's name (the 'model' its studies gave); a "
            "built-in task is its own model.",
        ),
    ] = None,
    optimizer: Annotated[str | None, Query(description="Only this optimizer.")] = None,
    metric: Annotated[
        str | None, Query(description="Default: the task's default metric (required for external).")
    ] = None,
    direction: Annotated[
        Direction | None,
        Query(description="For task external: studies of the same metric name may differ."),
    ] = None,
    since: Annotated[
        datetime | None, Query(description="Only studies created at or after this time.")
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> BestOut:
    """Over every study of the model that optimises ``metric``: each optimizer's best config
    (best first, with the study it came from; a confirmed one with its mean over seeds) and the
    leaders; ``studies`` lists the studies compared, newest first, a page at a time."""
    return best_for_task(
        db,
        task=task,
        model=model,
        optimizer=optimizer,
        metric=metric,
        direction=direction,
        since=since,
        limit=limit,
        offset=offset,
    )
