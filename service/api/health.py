"""Operations: liveness with database reachability, and Prometheus metrics."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import DatabaseDep, SettingsDep
from service.api.schemas import HealthOut

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    response_model=HealthOut,
    summary="Liveness and database reachability",
    responses={503: {"model": HealthOut, "description": "The database is not reachable."}},
)
def healthz(db: DatabaseDep, settings: SettingsDep) -> Any:
    """200 while the API runs and reaches its database; 503 when the database is unreachable."""
    if db.reachable():
        return HealthOut(status="ok", database="ok")
    url = sa.engine.make_url(settings.database_url).render_as_string(hide_password=True)
    unhealthy = HealthOut(
        status="unavailable",
        database="unreachable",
        detail=f"the database {url} is not reachable; check that it runs and HPT_DATABASE_URL",
    )
    return JSONResponse(unhealthy.model_dump(), status_code=503)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}},
)
def metrics(request: Request) -> Response:
    """Studies by status, trials by state, live workers, free trial slots (read at scrape time),
    and HTTP requests by method, route template and status."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
