"""The best known config per optimizer for a task, over every study of it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import EngineDep, StorageDep
from service.api.errors import error_responses
from service.best_configs import BestReport, best_for_task
from service.schemas import BestOut, Direction

router = APIRouter(prefix="/api/v1", tags=["best"])


@router.get(
    "/best",
    response_model=BestOut,
    summary="Best known config per optimizer for a task",
    responses=error_responses(422),
)
def best(
    engine: EngineDep,
    storage: StorageDep,
    task: Annotated[str, Query(description="A task of GET /api/v1/tasks.")],
    optimizer: Annotated[str | None, Query(description="Only this optimizer.")] = None,
    metric: Annotated[
        str | None, Query(description="Default: the task's default metric (required for external).")
    ] = None,
    direction: Annotated[
        Direction | None,
        Query(description="For task external: studies of the same metric name may differ."),
    ] = None,
) -> BestReport:
    """Over every study of ``task`` that optimises ``metric``: each optimizer's best config
    (best first, with the study it came from) and the overall winner."""
    return best_for_task(
        engine=engine,
        storage=storage,
        task=task,
        optimizer=optimizer,
        metric=metric,
        direction=direction,
    )
