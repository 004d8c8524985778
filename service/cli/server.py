"""``hpt serve``: the API and its embedded workers, from start to a clean stop.

The listening socket is bound and the database initialized before anything starts, the workers
start once the API is up, and Ctrl-C / SIGTERM lets them finish their running trial (a second
signal kills them).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from types import FrameType
from typing import TYPE_CHECKING, Annotated

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
    settings_env,
    stdout_console,
)
from service.config import Settings

if TYPE_CHECKING:
    from service.supervisor import WorkerSupervisor

log = logging.getLogger("hpt")

# Seconds `hpt serve` waits for its workers to finish their running trials before killing them.
DEFAULT_SHUTDOWN_TIMEOUT = 30.0

HostOption = Annotated[
    str | None,
    typer.Option(
        help="Address to listen on (env HPT_HOST, default 127.0.0.1).", show_default=False
    ),
]


def serve(
    host: HostOption = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="Port of the API; 0 picks a free one (env HPT_PORT, default 8000).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Embedded worker processes; 0 for the API only (env HPT_WORKERS, default one "
            "per GPU on a GPU machine, else one per core).",
            show_default=False,
        ),
    ] = None,
    device: DeviceOption = None,
    database_url: DatabaseOption = None,
    log_level: LogLevelOption = None,
    shutdown_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds to let workers finish their running trial on shutdown before they "
            "are killed."
        ),
    ] = DEFAULT_SHUTDOWN_TIMEOUT,
) -> None:
    """Run the API and N worker processes (restarted when they die) until Ctrl-C / SIGTERM."""
    settings = load_settings(
        host=host,
        port=port,
        workers=workers,
        device=device,
        database_url=database_url,
        log_level=log_level,
    )
    configure_logging(settings.log_level)
    asked = workers is not None or "HPT_WORKERS" in os.environ
    devices = _worker_devices(settings, asked=asked)
    settings = settings.model_copy(update={"workers": len(devices)})
    _initialize_database(settings.database_url)
    sock = _bind(settings.host, settings.port)
    settings = settings.model_copy(update={"port": sock.getsockname()[1]})
    # create_app (uvicorn's factory) and the workers read their settings from the environment.
    os.environ.update(settings_env(settings))
    _run_api_and_workers(settings, sock, devices, shutdown_timeout=shutdown_timeout)


def _worker_devices(settings: Settings, *, asked: bool) -> list[str]:
    """The device of each embedded worker: one worker per GPU by default on a GPU machine."""
    if settings.workers == 0:
        return []
    from studies.devices import worker_devices

    try:
        return worker_devices(
            settings.device, settings.workers if asked else None, os.cpu_count() or 1
        )
    except ValueError as exc:
        fail(f"HPT_DEVICE / --device: {exc}")


def _initialize_database(url: str) -> None:
    """Bring the schema up to date once, before any worker starts."""
    import sqlalchemy as sa

    from service.store.database import Database
    from service.store.migrate import upgrade_database

    try:
        db = Database.connect(url)
        try:
            upgrade_database(db)
        finally:
            db.dispose()
    except sa.exc.SQLAlchemyError as exc:
        fail(f"cannot initialize the database {safe_url(url)}: {exc.__class__.__name__}: {exc}")


def _bind(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound now so that port 0 resolves and a taken port fails
    before any worker starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    return sock


def _run_api_and_workers(
    settings: Settings, sock: socket.socket, devices: list[str], *, shutdown_timeout: float
) -> None:
    import uvicorn

    from service.supervisor import WorkerSupervisor, worker_command

    # One supervisor per device, its workers started with that device.
    command = worker_command(parent_pid=os.getpid())
    supervisor = _Supervisors(
        [
            WorkerSupervisor(
                devices.count(device), command=[*command, "--device", device], env=dict(os.environ)
            )
            for device in dict.fromkeys(devices)
        ]
        or [WorkerSupervisor(0, command=command, env=dict(os.environ))]
    )

    signalled, stopping = threading.Event(), threading.Event()

    class APIServer(uvicorn.Server):
        # Workers start once the API is up: no workers are left behind by an app that cannot start.
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if signalled.is_set():  # a signal came before uvicorn listened for it
                self.should_exit = True
            elif self.started:
                supervisor.start()
                _print_serve_banner(settings, devices)

    config = uvicorn.Config(
        "service.app:create_app",
        factory=True,
        log_level=settings.log_level.lower(),
        log_config=None,  # our timestamped root handler prints uvicorn's lines too
        timeout_graceful_shutdown=5,
    )
    _install_stop_handlers(signalled, stopping, supervisor)
    try:
        APIServer(config).run(sockets=[sock])
    finally:
        stopping.set()
        supervisor.stop(timeout=shutdown_timeout)
        sock.close()
    log.info("hpt serve stopped")


class _Supervisors:
    """The worker supervisors of ``hpt serve`` (one per device), driven as one."""

    def __init__(self, supervisors: list[WorkerSupervisor]) -> None:
        self.supervisors = supervisors

    def start(self) -> None:
        for supervisor in self.supervisors:
            supervisor.start()

    def stop(self, *, timeout: float) -> None:
        # Side by side: every worker gets the same time to finish its trial.
        threads = [
            threading.Thread(target=supervisor.stop, kwargs={"timeout": timeout})
            for supervisor in self.supervisors
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def kill_now(self) -> None:
        for supervisor in self.supervisors:
            supervisor.kill_now()


def _install_stop_handlers(
    signalled: threading.Event, stopping: threading.Event, supervisor: _Supervisors
) -> None:
    """SIGINT/SIGTERM handlers for around uvicorn's own.

    While it serves, uvicorn handles the first signal (a graceful shutdown) and re-raises it into
    these handlers afterwards, where it must not kill the process before the workers are stopped;
    they only note it (``signalled``). A signal that arrives while the workers are finishing their
    trials (``stopping``) cuts the wait short.
    """

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signalled.set()
        if stopping.is_set():
            log.warning("%s again: killing the workers now", signal.Signals(signum).name)
            supervisor.kill_now()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def _print_serve_banner(settings: Settings, devices: list[str]) -> None:
    api = http_url(settings.host, settings.port)
    dashboard = http_url(settings.dashboard_host, settings.dashboard_port)
    workers = (
        f"{settings.workers} worker process{'es' if settings.workers != 1 else ''}"
        if settings.workers
        else "no workers (API only; start some with `hpt worker`)"
    )
    if devices:
        workers += f" on {', '.join(dict.fromkeys(devices))}"
    out = stdout_console()
    out.print(f"[bold]hpt[/] API at [link={api}]{api}[/] with {workers}")
    out.print(f"  database   {escape(safe_url(settings.database_url))}")
    out.print(f"  API docs   [link={api}/docs]{api}/docs[/]")
    out.print(
        f"  dashboard  run [bold]{escape(_dashboard_command(settings))}[/], then open "
        f"[link={dashboard}]{dashboard}[/]"
    )
    out.print(f"  studies    [bold]hpt study list --url {api}[/]")
    out.print("Press Ctrl-C to stop (workers finish their running trial first).")


def _dashboard_command(settings: Settings) -> str:
    """How to start the dashboard on this server's database, without printing a password."""
    import sqlalchemy as sa

    url = settings.database_url
    if sa.engine.make_url(url).password:
        return "hpt dashboard (with the same HPT_DATABASE_URL)"
    if url == Settings.model_fields["database_url"].default:
        return "hpt dashboard"
    return f"hpt dashboard --database-url {url}"
