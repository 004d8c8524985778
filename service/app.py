"""The FastAPI application: ``create_app(settings)``, run by uvicorn as a factory::

    uvicorn --factory service.app:create_app

Nothing is built at import time. The engine of our tables and Optuna's storage are built once per
process when the app starts (its lifespan) and closed when it stops. The API never trains: workers
do (:mod:`service.worker`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from optuna.storages import RDBStorage
from starlette.concurrency import run_in_threadpool

from service.api import asktell, best, catalog, docs, health, studies, trials
from service.api.errors import install_error_handlers
from service.api.limits import BodySizeLimit
from service.config import Settings
from service.metrics import HttpMetrics, RequestMetricsMiddleware, ServiceCollector
from service.store.database import Database, is_outage, make_optuna_storage
from service.store.migrate import upgrade_database
from service.studies.admin import purge_deleting_studies
from service.studies.dashboard import publish_answers
from service.trials.ask_tell import AskTell
from service.trials.guard import SlotGuard
from service.trials.recovery import backfill_slots, recover

log = logging.getLogger(__name__)

# Seconds an API request waits for SQLite's write lock before answering 503 (workers wait longer).
API_SQLITE_BUSY_TIMEOUT = 15.0

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


def _janitor(stop: threading.Event, db: Database, storage: RDBStorage, settings: Settings) -> None:
    """Recovery in the API process too: expired leases are collected when they expire (not at
    the next ask), and deletes that could not finish at once are finished."""
    healthy_since = time.monotonic()
    interval = max(1.0, min(settings.grace_period, settings.lease_seconds) / 2)
    while not stop.wait(interval):
        try:
            if time.monotonic() - healthy_since >= settings.grace_period:
                done = recover(
                    db,
                    storage,
                    grace_period=settings.grace_period,
                    max_failed_trials=settings.max_failed_trials,
                )
                if done:
                    log.info("recovered: %s", done)
            purge_deleting_studies(db, storage)
            publish_answers(db, storage)
        except Exception as exc:
            healthy_since = time.monotonic()
            if not is_outage(exc):
                log.exception("recovery in the API failed")


def _open(settings: Settings) -> tuple[Database, RDBStorage, RDBStorage]:
    db = Database.connect(settings.database_url, busy_timeout=API_SQLITE_BUSY_TIMEOUT)
    upgrade_database(db)
    writer = make_optuna_storage(settings.database_url, busy_timeout=API_SQLITE_BUSY_TIMEOUT)
    reader = make_optuna_storage(
        settings.database_url, writer=False, busy_timeout=API_SQLITE_BUSY_TIMEOUT
    )
    backfill_slots(db, writer)
    return db, writer, reader


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Bring the schema up to date, build the database and Optuna storages of this process, run
    recovery in the background; close everything when the app stops."""
    settings: Settings = app.state.settings
    db, writer, reader = await run_in_threadpool(_open, settings)
    guard = SlotGuard.install(writer.engine)
    app.state.db = db
    app.state.writer_storage, app.state.reader_storage = writer, reader
    app.state.ask_tell = AskTell(db, writer, guard, settings.max_failed_trials, reader)
    collector = ServiceCollector(db=db, heartbeat_interval=settings.heartbeat_interval)
    app.state.metrics.registry.register(collector)
    stop = threading.Event()
    janitor = threading.Thread(
        target=_janitor, args=(stop, db, writer, settings), name="hpt-recovery", daemon=True
    )
    janitor.start()
    try:
        yield
    finally:
        stop.set()
        janitor.join(timeout=10)
        app.state.metrics.registry.unregister(collector)
        db.dispose()
        writer.engine.dispose()
        reader.engine.dispose()


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
    app.add_middleware(BodySizeLimit, max_bytes=app.state.settings.max_request_bytes)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
