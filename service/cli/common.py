"""What every ``hpt`` command shares: consoles, the red error line, settings, logging, options.

Nothing heavy is imported at module level (see :mod:`service.cli`).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from pydantic import SecretStr, ValidationError
from rich.console import Console
from rich.markup import escape

from service.client import HPTClient, HPTError
from service.config import Settings

LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"
# Levels both logging and uvicorn know.
LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# --------------------------------------------------------------------------- options

# Of the commands that run the service (serve, worker, dashboard).
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL of the database (env HPT_DATABASE_URL, default sqlite:///hpt.db).",
        show_default=False,
    ),
]
DeviceOption = Annotated[
    str | None,
    typer.Option(
        help="Where trials train: auto (CUDA if present, else the CPU), cpu, cuda or cuda:N "
        "(env HPT_DEVICE, default auto).",
        show_default=False,
    ),
]
LogLevelOption = Annotated[
    str | None,
    typer.Option(
        help="debug, info, warning ... (env HPT_LOG_LEVEL, default info).", show_default=False
    ),
]

# Of the commands that use a running API (study ..., tasks, optimizers, best); each also takes
# them before the command (`hpt --url URL study list`): the global options below.
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
GlobalUrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Where the API listens, for every command that uses it (env HPT_URL, default "
        "http://127.0.0.1:8000); a command's own --url wins.",
        show_default=False,
    ),
]
GlobalApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help="Key for servers that require one, for every command that uses the API (env "
        "HPT_API_KEY); a command's own --api-key wins.",
        show_default=False,
    ),
]
# Where the global options wait for the command (click shares a context's meta with the
# contexts nested in it).
GLOBAL_OPTIONS_META = "hpt.global_options"
NameArgument = Annotated[str, typer.Argument(help="Name of the study.", show_default=False)]

# --------------------------------------------------------------------------- output


def stdout_console() -> Console:
    # Built per call, not at import: CliRunner and redirections swap sys.stdout.
    # soft_wrap: a long line stays one line (greppable); tables still fit the terminal.
    return Console(highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str) -> NoReturn:
    """Print ``message`` in red on stderr and exit with status 1."""
    stderr_console().print(escape(message), style="red")
    raise typer.Exit(1)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def remember_global_options(ctx: typer.Context, url: str | None, api_key: str | None) -> None:
    """Keep ``hpt --url ... --api-key ...`` for the command that follows."""
    ctx.meta[GLOBAL_OPTIONS_META] = {"url": url, "api_key": api_key}


def taking_global_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` (one with ``url`` and ``api_key`` options) as ``hpt`` registers it: its
    ``url`` and ``api_key`` come from its own flags, else from ``hpt --url/--api-key``, else
    from ``HPT_URL``/``HPT_API_KEY``, else the defaults. Other commands are returned as they
    are."""
    signature = inspect.signature(command, eval_str=True)
    if not {"url", "api_key"} <= signature.parameters.keys():
        return command

    @functools.wraps(command)
    def with_global_options(ctx: typer.Context, **options: object) -> None:
        given = ctx.meta.get(GLOBAL_OPTIONS_META) or {}
        for name in ("url", "api_key"):
            source = ctx.get_parameter_source(name)
            own_flag = source is not None and source.name == "COMMANDLINE"
            if given.get(name) is not None and not own_flag:
                options[name] = given[name]
        command(**options)

    context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
    parameters = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()
    ]
    with_global_options.__signature__ = signature.replace(parameters=[context, *parameters])
    with_global_options.__annotations__ = {
        "ctx": typer.Context,
        **{p.name: p.annotation for p in signature.parameters.values()},
    }
    return with_global_options


@contextmanager
def api(url: str, api_key: str | None) -> Iterator[HPTClient]:
    """A client of the API at ``url``; an API error becomes a red message and exit status 1."""
    try:
        with HPTClient(url, api_key=api_key) as client:
            yield client
    except HPTError as exc:
        fail(exc.message)


# --------------------------------------------------------------------------- settings and logging


def load_settings(**overrides: Any) -> Settings:
    """Settings from ``HPT_*`` variables, with the flags that were given (not ``None``) on top."""
    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        fail(f"invalid settings (flags or HPT_* variables): {problems}")


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
        fail(f"unknown log level {level!r}; choose one of {', '.join(LOG_LEVELS)}")
    logging.basicConfig(
        level=LOG_LEVELS[level.lower()], format=LOG_FORMAT, stream=sys.stderr, force=True
    )
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    # The service uses Optuna's heartbeat on purpose; its "experimental" warning only adds noise.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.captureWarnings(True)


def safe_url(url: str) -> str:
    """A database URL fit to print: its password hidden."""
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)


def http_url(host: str, port: int) -> str:
    """Where a browser reaches a server listening on ``host``:``port``."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
