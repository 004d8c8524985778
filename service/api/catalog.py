"""What a study can use: the optimizers and the tasks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from optim_core.registry import OPTIMIZERS
from service.api.schemas import OptimizerOut, TaskOut
from service.studies.catalog import task_catalog

router = APIRouter(prefix="/api/v1", tags=["catalog"])


@router.get("/optimizers", response_model=list[OptimizerOut], summary="Optimizers and their spaces")
def list_optimizers() -> list[dict[str, Any]]:
    """Every optimizer a study may tune, with its default search space and tunable keys."""
    return [spec.to_json() for spec in OPTIMIZERS.values()]


@router.get("/tasks", response_model=list[TaskOut], summary="Tasks and their metrics")
def list_tasks() -> list[TaskOut]:
    """Every task a study may train: metrics with their direction, default metric and epochs.
    The pseudo-task ``external`` is last: its trials are trained by the client (ask/tell)."""
    return task_catalog()
