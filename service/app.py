"""The FastAPI application: ``create_app(settings)``, run by uvicorn as a factory::

    uvicorn --factory service.app:create_app

Nothing is built at import time. The engine of our tables and Optuna's storage are built once per
process when the app starts (its lifespan) and closed when it stops. The API never trains: workers
do (:mod:`service.worker`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from service.api import asktell, best, catalog, docs, health, studies, trials
from service.api.errors import install_error_handlers
from service.config import Settings
from service.db import create_tables, make_engine, make_optuna_storage
from service.metrics import HttpMetrics, RequestMetricsMiddleware, ServiceCollector

ROUTERS = (
    health.router,
    catalog.router,
    studies.router,
    trials.router,
    asktell.router,
    best.router,
    docs.router,
)

DESCRIPTION = """\
Which optimizer, with which hyperparameters, trains your model best?

Create a study (`POST /api/v1/studies`) naming a task and the optimizers to compare; workers tune
each optimizer with Optuna, and `GET /api/v1/studies/{name}/best` answers with the best config of
each, its test metric and the line of Python that builds it. Studies of task `external` are
trained by your own code through ask/tell.

When the server sets `HPT_API_KEY`, POST and DELETE requests need `Authorization: Bearer <key>`.
Errors are `{"detail": "..."}`; a request that cannot be carried out as sent answers 422 with one
entry per problem.
"""

TAGS = [
    {"name": "studies", "description": "Create, follow, stop and delete studies."},
    {"name": "trials", "description": "The trials of a study."},
    {"name": "best", "description": "Best configs across studies."},
    {"name": "ask/tell", "description": "Trials of task 'external', trained by the client."},
    {"name": "catalog", "description": "Optimizers and tasks a study can use."},
    {"name": "operations", "description": "Health and Prometheus metrics."},
]


def _version() -> str:
    try:
        return version("hpt")
    except PackageNotFoundError:
        return "0+unknown"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build the engine and Optuna storage of this process; close them when the app stops."""
    settings: Settings = app.state.settings
    engine = await run_in_threadpool(make_engine, settings.database_url)
    await run_in_threadpool(create_tables, engine)
    storage = await run_in_threadpool(make_optuna_storage, settings.database_url)
    collector = ServiceCollector(
        engine=engine, storage=storage, heartbeat_interval=settings.heartbeat_interval
    )
    app.state.engine, app.state.storage = engine, storage
    app.state.metrics.registry.register(collector)
    try:
        yield
    finally:
        app.state.metrics.registry.unregister(collector)
        engine.dispose()
        storage.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API application.

    Args:
        settings: Database URL, API key, limits ...; default: read from ``HPT_*`` variables.

    Returns:
        The app; its engine and storage are built when it starts (lifespan).
    """
    app = FastAPI(
        title="hpt: optimizer hyperparameter tuning",
        version=_version(),
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        # Served by service.api.docs from installed assets, not by FastAPI's CDN-based pages.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings if settings is not None else Settings()
    app.state.metrics = HttpMetrics()
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
