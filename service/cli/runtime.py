"""``hpt worker`` and ``hpt dashboard``: the service's processes besides ``hpt serve``.

Either runs on any machine that reaches the database; a worker started by ``hpt serve`` also
stops when ``hpt serve`` is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from socketserver import ThreadingMixIn
from types import FrameType
from typing import Annotated
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import typer
from rich.markup import escape

from service.cli.common import (
    DatabaseOption,
    DeviceOption,
    LogLevelOption,
    configure_logging,
    fail,
    http_url,
    load_settings,
    safe_url,
    stdout_console,
)

log = logging.getLogger("hpt")

# How often a worker started by `hpt serve` checks that `hpt serve` is still alive.
PARENT_CHECK_INTERVAL = 1.0


# --------------------------------------------------------------------------- hpt worker


def worker(
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Exit as soon as no trial is waiting.")
    ] = False,
    max_trials: Annotated[
        int | None,
        typer.Option(min=1, help="Exit after running this many trials.", show_default=False),
    ] = None,
    device: DeviceOption = None,
    database_url: DatabaseOption = None,
    log_level: LogLevelOption = None,
    parent_pid: Annotated[
        int | None,
        typer.Option(hidden=True, help="Stop (after the running trial) when this process is gone."),
    ] = None,
) -> None:
    """Run one worker: claim trials of any study in the database, train them, repeat.

    SIGTERM or Ctrl-C lets the running trial finish, then the worker exits. Run one per core (or
    one per GPU, with --device cuda:N), on as many machines as share the database.
    """
    settings = load_settings(database_url=database_url, log_level=log_level, device=device)
    configure_logging(settings.log_level)
    if parent_pid is not None:
        _stop_when_parent_exits(parent_pid)

    import sqlalchemy as sa

    from studies.devices import resolve_device

    try:
        log.info("worker trains on %s (HPT_DEVICE=%s)", resolve_device(settings.device),
                 settings.device)  # fmt: skip
    except ValueError as exc:
        fail(f"worker: {exc}")

    from service.worker import run_worker

    try:
        run_worker(settings, exit_when_idle=until_idle, max_trials=max_trials)
    except sa.exc.OperationalError as exc:
        fail(f"worker: database {safe_url(settings.database_url)} unusable: {exc.orig or exc}")


def db_upgrade(database_url: DatabaseOption = None, log_level: LogLevelOption = None) -> None:
    """Bring the database's schema up to date (the service's tables and Optuna's).

    `hpt serve` and `hpt worker` do this when they start; run it by hand before a deployment to
    see it happen. Safe while other processes run: one upgrades, the others wait.
    """
    settings = load_settings(database_url=database_url, log_level=log_level)
    configure_logging(settings.log_level)
    import sqlalchemy as sa

    from service.store.database import Database, make_optuna_storage
    from service.store.migrate import head_revision, upgrade_database
    from service.trials.recovery import backfill_slots

    try:
        db = Database.connect(settings.database_url)
        before = upgrade_database(db)
        storage = make_optuna_storage(settings.database_url)
        filled = backfill_slots(db, storage)
        storage.engine.dispose()
        db.dispose()
    except sa.exc.SQLAlchemyError as exc:
        fail(f"cannot upgrade the database {safe_url(settings.database_url)}: {exc}")
    head = head_revision()
    if before == head:
        stdout_console().print(f"the database is up to date (revision {head})")
    else:
        stdout_console().print(
            f"upgraded the database from revision {before or 'empty'} to {head}"
            + (f"; filled in {filled} finished trial(s) from Optuna" if filled else "")
        )


def _stop_when_parent_exits(parent_pid: int) -> None:
    # A worker of `hpt serve` must not outlive it (kill -9, a crash): it stops like on SIGTERM.
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_INTERVAL)
        log.warning("hpt serve (pid %d) is gone; stopping after the running trial", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="hpt-parent-watch", daemon=True).start()


# --------------------------------------------------------------------------- hpt dashboard


def dashboard(
    host: Annotated[
        str | None,
        typer.Option(
            help="Address to listen on (env HPT_DASHBOARD_HOST, default 127.0.0.1).",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="Port to listen on (env HPT_DASHBOARD_PORT, default 8080).", show_default=False
        ),
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Run optuna-dashboard on the service's database: every (study, optimizer) live."""
    settings = load_settings(dashboard_host=host, dashboard_port=port, database_url=database_url)
    import optuna_dashboard
    import sqlalchemy as sa

    from service.store.database import make_optuna_storage

    try:
        storage = make_optuna_storage(settings.database_url)
    except sa.exc.SQLAlchemyError as exc:
        fail(f"cannot open the database {safe_url(settings.database_url)}: {exc}")
    url = http_url(settings.dashboard_host, settings.dashboard_port)
    stdout_console().print(
        f"optuna-dashboard of {escape(safe_url(settings.database_url))} at "
        f"[link={url}]{url}[/] (Ctrl-C to stop)"
    )
    try:
        server = make_server(
            settings.dashboard_host,
            settings.dashboard_port,
            optuna_dashboard.wsgi(storage),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
    except OSError as exc:
        storage.engine.dispose()
        fail(f"cannot listen on {settings.dashboard_host}:{settings.dashboard_port}: {exc}")

    def stop(signum: int, frame: FrameType | None) -> None:
        # The first signal stops the server; more (make, docker and systemd may repeat it) are
        # ignored. shutdown() waits for serve_forever(), so it must run off this thread.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        threading.Thread(target=server.shutdown, name="hpt-dashboard-stop").start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        storage.engine.dispose()


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request: a browser polls several dashboard endpoints at once."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        logging.getLogger("hpt.dashboard").debug(format, *args)
