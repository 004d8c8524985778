"""The ``hpt`` command line: run the service (serve, worker, dashboard) and use it (study ...).

``hpt serve`` runs the API and the embedded workers, ``hpt worker`` one more worker (on this or
another machine), ``hpt dashboard`` optuna-dashboard on the same database. ``hpt study ...`` talks
to a running API over HTTP through :mod:`service.client`: tables for people, ``--json`` for
scripts, and an API error is one red line, never a traceback.

Heavy imports (torch, optuna, uvicorn) happen inside the commands that need them, so ``hpt study``
answers at once.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import SecretStr, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from service.client import DEFAULT_URL, FINAL_STATUSES, HPTClient, HPTError
from service.config import Settings

if TYPE_CHECKING:
    from service.supervisor import WorkerSupervisor

log = logging.getLogger("hpt")

LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"
# Levels both logging and uvicorn know.
LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# Seconds `hpt serve` waits for its workers to finish their running trials before killing them.
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
# How often a worker started by `hpt serve` checks that `hpt serve` is still alive.
PARENT_CHECK_INTERVAL = 1.0
STATUS_STYLES = {
    "queued": "yellow",
    "running": "cyan",
    "completed": "green",
    "stopped": "magenta",
    "failed": "red",
}
TRIAL_STATE_STYLES = {
    "complete": "green",
    "running": "cyan",
    "pruned": "yellow",
    "failed": "red",
    "waiting": "dim",
}


# --------------------------------------------------------------------------- shared helpers


def _stdout() -> Console:
    # Built per call, not at import: CliRunner and redirections swap sys.stdout.
    # soft_wrap: a long line stays one line (greppable); tables still fit the terminal.
    return Console(highlight=False, soft_wrap=True)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str) -> NoReturn:
    """Print ``message`` in red on stderr and exit with status 1."""
    _stderr().print(escape(message), style="red")
    raise typer.Exit(1)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def load_settings(**overrides: Any) -> Settings:
    """Settings from ``HPT_*`` variables, with the flags that were given (not ``None``) on top."""
    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        _fail(f"invalid settings (flags or HPT_* variables): {problems}")


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as ``HPT_*`` variables: how `hpt serve` hands them to the API and workers."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"HPT_{name.upper()}"] = str(value)
    return env


def configure_logging(level: str) -> None:
    """Timestamped log lines on stderr, Optuna's included."""
    import optuna

    if level.lower() not in LOG_LEVELS:
        _fail(f"unknown log level {level!r}; choose one of {', '.join(LOG_LEVELS)}")
    logging.basicConfig(
        level=LOG_LEVELS[level.lower()], format=LOG_FORMAT, stream=sys.stderr, force=True
    )
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    # The service uses Optuna's heartbeat on purpose; its "experimental" warning only adds noise.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.captureWarnings(True)


def _safe_url(url: str) -> str:
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _http_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


# --------------------------------------------------------------------------- hpt serve

HostOption = Annotated[
    str | None,
    typer.Option(
        help="Address to listen on (env HPT_HOST, default 127.0.0.1).", show_default=False
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL of the database (env HPT_DATABASE_URL, default sqlite:///hpt.db).",
        show_default=False,
    ),
]
LogLevelOption = Annotated[
    str | None,
    typer.Option(
        help="debug, info, warning ... (env HPT_LOG_LEVEL, default info).", show_default=False
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
            "per core).",
            show_default=False,
        ),
    ] = None,
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
        host=host, port=port, workers=workers, database_url=database_url, log_level=log_level
    )
    configure_logging(settings.log_level)
    _initialize_database(settings.database_url)
    sock = _bind(settings.host, settings.port)
    settings = settings.model_copy(update={"port": sock.getsockname()[1]})
    # create_app (uvicorn's factory) and the workers read their settings from the environment.
    os.environ.update(settings_env(settings))
    _run_api_and_workers(settings, sock, shutdown_timeout=shutdown_timeout)


def _initialize_database(url: str) -> None:
    """Create every table once, before any worker starts, so they never race to do it."""
    import sqlalchemy as sa

    from service.db import create_tables, make_engine, make_optuna_storage

    try:
        engine = make_engine(url)
        try:
            create_tables(engine)
        finally:
            engine.dispose()
        make_optuna_storage(url).engine.dispose()
    except sa.exc.SQLAlchemyError as exc:
        _fail(f"cannot initialize the database {_safe_url(url)}: {exc.__class__.__name__}: {exc}")


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
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    return sock


def _run_api_and_workers(
    settings: Settings, sock: socket.socket, *, shutdown_timeout: float
) -> None:
    import uvicorn

    from service.supervisor import WorkerSupervisor, worker_command

    supervisor = WorkerSupervisor(
        settings.workers, command=worker_command(parent_pid=os.getpid()), env=dict(os.environ)
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
                _print_serve_banner(settings)

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


def _install_stop_handlers(
    signalled: threading.Event, stopping: threading.Event, supervisor: WorkerSupervisor
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


def _print_serve_banner(settings: Settings) -> None:
    api = _http_url(settings.host, settings.port)
    dashboard = _http_url(settings.dashboard_host, settings.dashboard_port)
    workers = (
        f"{settings.workers} worker process{'es' if settings.workers != 1 else ''}"
        if settings.workers
        else "no workers (API only; start some with `hpt worker`)"
    )
    out = _stdout()
    out.print(f"[bold]hpt[/] API at [link={api}]{api}[/] with {workers}")
    out.print(f"  database   {escape(_safe_url(settings.database_url))}")
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


# --------------------------------------------------------------------------- hpt worker


def worker(
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Exit as soon as no trial is waiting.")
    ] = False,
    max_trials: Annotated[
        int | None,
        typer.Option(min=1, help="Exit after running this many trials.", show_default=False),
    ] = None,
    database_url: DatabaseOption = None,
    log_level: LogLevelOption = None,
    parent_pid: Annotated[
        int | None,
        typer.Option(hidden=True, help="Stop (after the running trial) when this process is gone."),
    ] = None,
) -> None:
    """Run one worker: claim trials of any study in the database, train them, repeat.

    SIGTERM or Ctrl-C lets the running trial finish, then the worker exits. Run one per core, on
    as many machines as share the database.
    """
    settings = load_settings(database_url=database_url, log_level=log_level)
    configure_logging(settings.log_level)
    if parent_pid is not None:
        _stop_when_parent_exits(parent_pid)

    import sqlalchemy as sa

    from service.worker import run_worker

    try:
        run_worker(settings, exit_when_idle=until_idle, max_trials=max_trials)
    except sa.exc.OperationalError as exc:
        _fail(f"worker: database {_safe_url(settings.database_url)} unusable: {exc.orig or exc}")


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

    from service.db import make_optuna_storage

    try:
        storage = make_optuna_storage(settings.database_url)
    except sa.exc.SQLAlchemyError as exc:
        _fail(f"cannot open the database {_safe_url(settings.database_url)}: {exc}")
    url = _http_url(settings.dashboard_host, settings.dashboard_port)
    _stdout().print(
        f"optuna-dashboard of {escape(_safe_url(settings.database_url))} at "
        f"[link={url}]{url}[/] (Ctrl-C to stop)"
    )
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        optuna_dashboard.run_server(
            storage, host=settings.dashboard_host, port=settings.dashboard_port
        )
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        _fail(f"cannot listen on {settings.dashboard_host}:{settings.dashboard_port}: {exc}")
    finally:
        storage.engine.dispose()


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


# --------------------------------------------------------------------------- hpt study ...

UrlOption = Annotated[str, typer.Option("--url", envvar="HPT_URL", help="Where the API listens.")]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="HPT_API_KEY",
        help="Key for servers that require one (create, stop, delete).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]
NameArgument = Annotated[str, typer.Argument(help="Name of the study.", show_default=False)]


@contextmanager
def _api(url: str, api_key: str | None) -> Iterator[HPTClient]:
    """A client of the API at ``url``; an API error becomes a red message and exit status 1."""
    try:
        with HPTClient(url, api_key=api_key) as client:
            yield client
    except HPTError as exc:
        _fail(exc.message)


def study_create(
    name: Annotated[str | None, typer.Option(help="Study name (letters, digits, _ and -).")] = None,
    task: Annotated[str | None, typer.Option(help="Task to train (see `hpt tasks`).")] = None,
    optimizers: Annotated[
        str | None,
        typer.Option(help="Comma-separated optimizers, e.g. sgd,momentum,adam (`hpt optimizers`)."),
    ] = None,
    n_trials: Annotated[int | None, typer.Option(help="Finished trials per optimizer.")] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Epochs per trial (default: the task's).")
    ] = None,
    sampler: Annotated[
        str | None, typer.Option(help="tpe (default), random, cmaes, qmc, gp or grid.")
    ] = None,
    pruner: Annotated[
        str | None, typer.Option(help="median (default), none, sha or hyperband.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Makes the samplers repeatable.")] = None,
    metric: Annotated[
        str | None, typer.Option(help="Metric to optimize (default: the task's).")
    ] = None,
    direction: Annotated[
        str | None, typer.Option(help="minimize or maximize (task 'external' only).")
    ] = None,
    space: Annotated[
        str | None,
        typer.Option(
            help='Search-space overrides as JSON: {"adam": {"lr": {"low": 1e-4, "high": 1e-2, '
            '"log": true}, "batch_size": 64}}.'
        ),
    ] = None,
    space_file: Annotated[
        Path | None, typer.Option(help="Search-space overrides from a JSON file.")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="A whole request body as JSON; flags override it."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a study: tune each optimizer on a task, N finished trials each."""
    body: dict[str, Any] = _read_json(file, "--file") if file else {}
    if space is not None and space_file is not None:
        _fail("give the search space with --space or --space-file, not both")
    if space is not None:
        body["search_space"] = _parse_json(space, "--space")
    elif space_file is not None:
        body["search_space"] = _read_json(space_file, "--space-file")
    flags = {
        "name": name,
        "task": task,
        "optimizers": _split_list(optimizers) if optimizers is not None else None,
        "n_trials": n_trials,
        "epochs": epochs,
        "sampler": sampler,
        "pruner": pruner,
        "seed": seed,
        "metric": metric,
        "direction": direction,
    }
    body.update({key: value for key, value in flags.items() if value is not None})
    missing = [f"--{key.replace('_', '-')}" for key in REQUIRED_FIELDS if key not in body]
    if missing:
        _fail(f"missing {', '.join(missing)} (flags, or fields of the --file request)")
    with _api(url, api_key) as client:
        study = client.create_study(body)
    if as_json:
        _print_json(study)
        return
    out = _stdout()
    out.print(f"Created study [bold]{escape(study['name'])}[/]: {_study_summary(study)}")
    out.print(f"Follow it with [bold]hpt study watch {escape(study['name'])}[/]")


def study_list(
    status: Annotated[
        str | None, typer.Option(help="Only studies with this status.", show_default=False)
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="Only studies of this task.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Studies per page.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Studies to skip.")] = 0,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List studies, newest first."""
    with _api(url, api_key) as client:
        page = client.list_studies(status=status, task=task, limit=limit, offset=offset)
    if as_json:
        _print_json(page)
        return
    out = _stdout()
    if not page["items"]:
        out.print("No studies." if status or task or offset else _NO_STUDIES_YET)
        return
    table = Table(title=f"Studies ({page['total']})", title_justify="left")
    for column in ("name", "task", "metric", "status", "optimizers", "trials", "created (UTC)"):
        table.add_column(column, justify="right" if column == "trials" else "left")
    for study in page["items"]:
        table.add_row(
            escape(study["name"]),
            escape(study["task"]),
            escape(study["metric"]),
            _styled_status(study["status"]),
            escape(", ".join(study["optimizers"])),
            f"{study['finished']}/{study['total']}",
            _short_time(study["created_at"]),
        )
    out.print(table)
    _print_more(page)


def study_show(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Status of a study: progress per optimizer, best so far, ETA."""
    with _api(url, api_key) as client:
        study = client.get_study(name)
    if as_json:
        _print_json(study)
        return
    out = _stdout()
    out.print(f"Study [bold]{escape(study['name'])}[/]: {_study_summary(study)}")
    progress = study["progress"]
    out.print(
        f"{_styled_status(study['status'])}: {progress['finished']}/{progress['total']} trials "
        f"finished; {escape(_eta_text(study['eta']))}"
    )
    if study["error"]:
        out.print(f"[red]{escape(study['error'])}[/]")
    table = Table()
    for column in ("optimizer", "finished", "running", "pruned", "failed", "best", "params"):
        table.add_column(column, justify="left" if column in ("optimizer", "params") else "right")
    for row in study["optimizers"]:
        best = row["best"] or {}
        table.add_row(
            escape(row["optimizer"]),
            f"{row['finished']}/{row['n_trials']}",
            str(row["running"]),
            str(row["pruned"]),
            _count(row["failed"], "red"),
            _format_value(best.get("value")),
            escape(_format_params(best.get("params"))),
        )
    out.print(table)
    if study["best"]:
        _print_winner(study["best"], leader=study["status"] != "completed")


def study_best(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Best config of each optimizer, the overall winner, and the Python line that builds it."""
    with _api(url, api_key) as client:
        best = client.best(name)
    if as_json:
        _print_json(best)
        return
    out = _stdout()
    status = f" ({_styled_status(best['status'])})" if best.get("status") else ""
    if not best["optimizers"]:
        out.print(f"Study [bold]{escape(name)}[/]{status} has no complete trial yet.")
        return
    table = Table(
        title=f"Best of {escape(name)}{status}: {escape(str(best['metric']))}, "
        f"{escape(str(best['direction']))}",
        title_justify="left",
    )
    for column in ("optimizer", "value", "test", "trial", "params"):
        table.add_column(column, justify="left" if column in ("optimizer", "params") else "right")
    for row in best["optimizers"]:
        table.add_row(
            escape(row["optimizer"]),
            _format_value(row["value"]),
            _format_value(row["test_value"]),
            f"#{row['number']}",
            escape(_format_params(row["params"])),
        )
    out.print(table)
    if best["winner"]:
        _print_winner(best["winner"], leader=best.get("status") not in (None, "completed"))


def study_trials(
    name: NameArgument,
    optimizer: Annotated[
        str | None, typer.Option(help="Only this optimizer's trials.", show_default=False)
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(
            help="Only trials in this state: complete, pruned, running, failed or waiting.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Trials per page.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Trials to skip.")] = 0,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List a study's trials: state, value, hyperparameters, and why it stopped early."""
    with _api(url, api_key) as client:
        page = client.trials(name, optimizer=optimizer, state=state, limit=limit, offset=offset)
    if as_json:
        _print_json(page)
        return
    out = _stdout()
    if not page["items"]:
        out.print(f"No trials{' on this page' if offset else ''}.")
        return
    table = Table(title=f"Trials of {escape(name)} ({page['total']})", title_justify="left")
    for column in ("optimizer", "#", "state", "value", "test", "params", "time", "note"):
        table.add_column(column, justify="right" if column in _NUMERIC_COLUMNS else "left")
    for trial in page["items"]:
        duration = trial["duration_seconds"]
        table.add_row(
            escape(trial["optimizer"]),
            str(trial["number"]),
            f"[{TRIAL_STATE_STYLES.get(trial['state'], 'white')}]{trial['state']}[/]",
            _format_value(trial["value"]),
            _format_value(trial["test_value"]),
            escape(_format_params(trial["params"])),
            "" if duration is None else f"{duration:.1f} s",
            escape(trial["pruned_reason"] or trial["error"] or ""),
        )
    out.print(table)
    _print_more(page)


def study_stop(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop a study: no new trials start; running ones finish and are recorded."""
    with _api(url, api_key) as client:
        answer = client.stop(name)
    if as_json:
        _print_json(answer)
        return
    _stdout().print(
        f"Study [bold]{escape(name)}[/] stopped: no new trials; running ones finish and are "
        "recorded."
    )


def study_delete(
    name: NameArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a study and all its trials (asks first unless --yes)."""
    if not yes and not typer.confirm(f"Delete study {name!r} and all its trials?"):
        _fail("not deleted")
    with _api(url, api_key) as client:
        answer = client.delete(name)
    if as_json:
        _print_json(answer)
        return
    _stdout().print(f"Study [bold]{escape(name)}[/] deleted.")


def study_watch(
    name: NameArgument,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between updates.")] = 1.0,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Live progress bars per optimizer until the study completes, stops or fails.

    Ctrl-C leaves (the study goes on). Exits with status 1 if the study failed. With --json,
    prints one JSON line per update instead.
    """
    with _api(url, api_key) as client:
        try:
            study = _follow(client, name, interval, as_json=as_json)
        except KeyboardInterrupt:
            _stderr().print(f"Stopped watching; study {escape(name)} goes on.")
            return
    if not as_json:
        _print_final(study)
    if study["status"] == "failed":
        raise typer.Exit(1)


def _follow(client: HPTClient, name: str, interval: float, *, as_json: bool) -> dict[str, Any]:
    """Poll the study every ``interval`` seconds until it ends; returns its last state."""
    study = client.get_study(name)
    if as_json:
        while True:
            typer.echo(json.dumps(study, default=str))
            if study["status"] in FINAL_STATUSES:
                return study
            time.sleep(interval)
            study = client.get_study(name)
    out = _stdout()
    out.print(f"Study [bold]{escape(study['name'])}[/]: {_study_summary(study)}")
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TextColumn("best {task.fields[best]}"),
        TextColumn("{task.fields[eta]}"),
        console=out,
        refresh_per_second=4,
    )
    width = max(len(row["optimizer"]) for row in [*study["optimizers"], {"optimizer": "total"}])
    bars: dict[str, TaskID] = {}
    with progress:
        while True:
            eta = _eta_text(study["eta"])
            for row in study["optimizers"]:
                done = row["finished"] >= row["n_trials"]
                fields = {
                    "counts": _counts_text(row),
                    "best": _format_value((row["best"] or {}).get("value")),
                    "eta": "[green]done[/]" if done else escape(eta),
                }
                if row["optimizer"] not in bars:
                    label = f"[bold]{escape(row['optimizer']).rjust(width)}[/]"
                    bars[row["optimizer"]] = progress.add_task(
                        label, total=row["n_trials"], **fields
                    )
                progress.update(bars[row["optimizer"]], completed=row["finished"], **fields)
            if study["status"] in FINAL_STATUSES:
                return study
            time.sleep(interval)
            study = client.get_study(name)


# --------------------------------------------------------------------------- hpt tasks / optimizers


def tasks(
    url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False
) -> None:
    """Tasks a study can train, with their metrics."""
    with _api(url, api_key) as client:
        answer = client.tasks()
    if as_json:
        _print_json(answer)
        return
    table = Table(title="Tasks", title_justify="left")
    for column in ("task", "metric (default first)", "epochs", "description"):
        table.add_column(column)
    for task in answer:
        metrics = sorted(task["metrics"].items(), key=lambda kv: kv[0] != task["default_metric"])
        table.add_row(
            escape(task["name"]),
            escape(", ".join(f"{metric} ({way[:3]})" for metric, way in metrics) or "any"),
            str(task["default_epochs"] or ""),
            escape(task["description"]),
        )
    _stdout().print(table)


def optimizers(
    url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False
) -> None:
    """Optimizers a study can tune, with their default search spaces."""
    with _api(url, api_key) as client:
        answer = client.optimizers()
    if as_json:
        _print_json(answer)
        return
    table = Table(title="Optimizers", title_justify="left")
    for column in ("optimizer", "default search space", "description"):
        table.add_column(column)
    for spec in answer:
        table.add_row(
            escape(spec["name"]),
            escape(_format_space(spec["default_space"])),
            escape(spec["description"]),
        )
    _stdout().print(table)


# --------------------------------------------------------------------------- rendering

REQUIRED_FIELDS = ("name", "task", "optimizers", "n_trials")
_NUMERIC_COLUMNS = frozenset({"#", "value", "test", "time"})
_NO_STUDIES_YET = "No studies yet. Create one with [bold]hpt study create[/] (see --help)."


def _study_summary(study: Mapping[str, Any]) -> str:
    names = [row["optimizer"] if isinstance(row, Mapping) else row for row in study["optimizers"]]
    parts = [
        f"task {study['task']}",
        f"{study['metric']} ({study['direction']})",
        f"optimizers {', '.join(names)}",
        f"{study['n_trials']} trials each",
        f"{study['epochs']} epochs" if study.get("epochs") else None,
        f"sampler {study['sampler']}",
        f"pruner {study['pruner']}",
    ]
    return escape(", ".join(part for part in parts if part))


def _styled_status(status: str) -> str:
    return f"[{STATUS_STYLES.get(status, 'white')}]{escape(status)}[/]"


def _count(count: int, style: str) -> str:
    return f"[{style}]{count}[/]" if count else str(count)


def _counts_text(row: Mapping[str, Any]) -> str:
    return (
        f"{row['running']} running, {_count(row['pruned'], 'yellow')} pruned, "
        f"{_count(row['failed'], 'red')} failed"
    )


def _format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _format_params(params: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{key}={_format_value(value)}" for key, value in (params or {}).items())


def _format_space(space: Mapping[str, Any]) -> str:
    parts = []
    for key, dim in space.items():
        if isinstance(dim, Mapping) and "low" in dim:
            scale = " log" if dim.get("log") else ""
            if dim.get("one_minus"):
                scale += ", searched as 1-x"
            parts.append(
                f"{key} [{_format_value(dim['low'])}, {_format_value(dim['high'])}]{scale}"
            )
        elif isinstance(dim, Mapping) and "choices" in dim:
            parts.append(f"{key} {{{', '.join(str(c) for c in dim['choices'])}}}")
        else:
            parts.append(f"{key} = {json.dumps(dim, default=str)}")
    return "; ".join(parts)


def _format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _eta_text(eta: Mapping[str, Any]) -> str:
    if eta["seconds"] is not None:
        workers = eta["live_workers"]
        return f"ETA {_format_seconds(eta['seconds'])} ({workers} worker{'s' * (workers != 1)})"
    return f"ETA unknown: {eta['reason']}" if eta["reason"] else "ETA unknown"


def _short_time(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


def _print_winner(best: Mapping[str, Any], *, leader: bool) -> None:
    out = _stdout()
    title = "Leading so far" if leader else "Winner"
    test = f", test {_format_value(best['test_value'])}" if best["test_value"] is not None else ""
    out.print(
        f"{title}: [bold green]{escape(best['optimizer'])}[/] "
        f"{_format_value(best['value'])}{test} (trial #{best['number']})"
    )
    if best["python"]:
        out.print(f"  [cyan]{escape(best['python'])}[/]")


def _print_more(page: Mapping[str, Any]) -> None:
    shown = page["offset"] + len(page["items"])
    if page["total"] > shown:
        _stdout().print(f"{shown} of {page['total']}; see more with --offset {shown}")


def _print_final(study: Mapping[str, Any]) -> None:
    out = _stdout()
    progress = study["progress"]
    out.print(
        f"Study [bold]{escape(study['name'])}[/] {_styled_status(study['status'])}: "
        f"{progress['finished']}/{progress['total']} trials finished."
    )
    if study["error"]:
        out.print(f"[red]{escape(study['error'])}[/]")
    if study["best"]:
        _print_winner(study["best"], leader=study["status"] != "completed")
        out.print(f"All optimizers: [bold]hpt study best {escape(study['name'])}[/]")


# --------------------------------------------------------------------------- JSON input


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parse_json(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"{option} is not valid JSON: {exc}")


def _read_json(path: Path, option: str) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        _fail(f"{option}: cannot read {path}: {exc.strerror or exc}")
    data = _parse_json(text, f"{option} {path}")
    if option == "--file" and not isinstance(data, dict):
        _fail(f"{option} {path} must hold a JSON object (a study request)")
    return data


# --------------------------------------------------------------------------- the app

SERVICE_COMMANDS: Mapping[str, Callable[..., None]] = {
    "serve": serve,
    "worker": worker,
    "dashboard": dashboard,
    "tasks": tasks,
    "optimizers": optimizers,
}
STUDY_COMMANDS: Mapping[str, Callable[..., None]] = {
    "create": study_create,
    "list": study_list,
    "show": study_show,
    "best": study_best,
    "trials": study_trials,
    "stop": study_stop,
    "delete": study_delete,
    "watch": study_watch,
}


def build_app() -> typer.Typer:
    """The ``hpt`` command line (built per call: no state lives at module level)."""
    app = typer.Typer(
        name="hpt",
        help="Optimizer hyperparameter tuning service: which optimizer, with which "
        "hyperparameters, trains your model best.",
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
    )
    for name, command in SERVICE_COMMANDS.items():
        app.command(name)(command)
    study = typer.Typer(
        help="Create, follow and query studies through the API (--url, env HPT_URL).",
        no_args_is_help=True,
    )
    for name, command in STUDY_COMMANDS.items():
        study.command(name)(command)
    app.add_typer(study, name="study")
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``hpt`` console script."""
    build_app()(args=list(argv) if argv is not None else None, prog_name="hpt")


if __name__ == "__main__":
    main()
