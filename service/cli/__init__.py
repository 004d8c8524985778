"""The ``hpt`` command line: run the service (serve, worker, dashboard) and use it (study ...).

``hpt serve`` runs the API and the embedded workers, ``hpt worker`` one more worker (on this or
another machine), ``hpt dashboard`` optuna-dashboard on the same database. ``hpt study ...``,
``hpt tasks``, ``hpt optimizers`` and ``hpt best`` talk to a running API over HTTP through
:mod:`service.client`: tables for people, ``--json`` for scripts, and an API error is one red
line, never a traceback. Where that API is, and its key, go before the command
(``hpt --url URL --api-key KEY study list``), after it (``--url``, ``--api-key``), or in
``HPT_URL`` and ``HPT_API_KEY``: the command's own flag first, then the global one, then the
variable.

Heavy imports (torch, optuna, uvicorn) happen inside the commands that need them, so ``hpt study``
answers at once.

Modules: :mod:`~service.cli.server` (``hpt serve``), :mod:`~service.cli.runtime` (``hpt worker``,
``hpt dashboard``), :mod:`~service.cli.study` (``hpt study ...``), :mod:`~service.cli.catalog`
(``hpt tasks``, ``hpt optimizers``, ``hpt best``), :mod:`~service.cli.render` and
:mod:`~service.cli.formatting` (output for people), :mod:`~service.cli.common` (what they share).
This module assembles the app; ``python -m service.cli`` runs it (:mod:`service.cli.__main__`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from service.cli.catalog import best, optimizers, tasks
from service.cli.common import (
    LOG_FORMAT,
    LOG_LEVELS,
    ApiKeyOption,
    DatabaseOption,
    GlobalApiKeyOption,
    GlobalUrlOption,
    JsonOption,
    LogLevelOption,
    NameArgument,
    UrlOption,
    configure_logging,
    load_settings,
    remember_global_options,
    settings_env,
    taking_global_options,
)
from service.cli.formatting import STATUS_STYLES, TRIAL_STATE_STYLES
from service.cli.runtime import PARENT_CHECK_INTERVAL, dashboard, db_upgrade, worker
from service.cli.server import DEFAULT_SHUTDOWN_TIMEOUT, HostOption, serve
from service.cli.study import (
    REQUIRED_FIELDS,
    study_best,
    study_create,
    study_delete,
    study_import,
    study_list,
    study_report,
    study_show,
    study_stop,
    study_trials,
    study_watch,
)

__all__ = [
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "LOG_FORMAT",
    "LOG_LEVELS",
    "PARENT_CHECK_INTERVAL",
    "REQUIRED_FIELDS",
    "SERVICE_COMMANDS",
    "STATUS_STYLES",
    "STUDY_COMMANDS",
    "TRIAL_STATE_STYLES",
    "ApiKeyOption",
    "DatabaseOption",
    "HostOption",
    "JsonOption",
    "LogLevelOption",
    "NameArgument",
    "UrlOption",
    "best",
    "build_app",
    "configure_logging",
    "dashboard",
    "load_settings",
    "main",
    "optimizers",
    "serve",
    "settings_env",
    "study_best",
    "study_create",
    "study_delete",
    "study_import",
    "study_list",
    "study_show",
    "study_stop",
    "study_trials",
    "study_watch",
    "tasks",
    "worker",
]

SERVICE_COMMANDS: Mapping[str, Callable[..., None]] = {
    "serve": serve,
    "worker": worker,
    "dashboard": dashboard,
    "tasks": tasks,
    "optimizers": optimizers,
    "best": best,
}
STUDY_COMMANDS: Mapping[str, Callable[..., None]] = {
    "create": study_create,
    "list": study_list,
    "show": study_show,
    "best": study_best,
    "report": study_report,
    "trials": study_trials,
    "import": study_import,
    "stop": study_stop,
    "delete": study_delete,
    "watch": study_watch,
}
DB_COMMANDS: Mapping[str, Callable[..., None]] = {"upgrade": db_upgrade}


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"hpt {installed_version()}")
        raise typer.Exit()


def _top_level(
    ctx: typer.Context,
    url: GlobalUrlOption = None,
    api_key: GlobalApiKeyOption = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the installed version and exit.",
        ),
    ] = False,
) -> None:
    """Optimizer hyperparameter tuning service: which optimizer, with which hyperparameters,
    trains your model best."""
    remember_global_options(ctx, url, api_key)


def installed_version() -> str:
    """The version of the installed ``hpt`` distribution (``0+unknown`` when run from a source
    tree that was never installed)."""
    try:
        return version("hpt")
    except PackageNotFoundError:
        return "0+unknown"


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
    app.callback()(_top_level)
    for name, command in SERVICE_COMMANDS.items():
        app.command(name)(taking_global_options(command))
    study = typer.Typer(
        help="Create, follow and query studies through the API (--url, env HPT_URL).",
        no_args_is_help=True,
    )
    for name, command in STUDY_COMMANDS.items():
        study.command(name)(taking_global_options(command))
    app.add_typer(study, name="study")
    db = typer.Typer(help="The database's schema.", no_args_is_help=True)
    for name, command in DB_COMMANDS.items():
        db.command(name)(command)
    app.add_typer(db, name="db")
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``hpt`` console script."""
    build_app()(args=list(argv) if argv is not None else None, prog_name="hpt")
