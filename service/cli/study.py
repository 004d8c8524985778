"""``hpt study ...``: create, follow and query studies of a running API over HTTP.

Each command asks :class:`service.client.HPTClient`, then prints the answer as JSON (``--json``)
or through :mod:`service.cli.render`; an API error is one red line and exit status 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from service.cli.common import (
    ApiKeyOption,
    JsonOption,
    NameArgument,
    UrlOption,
    api,
    fail,
    print_json,
    stderr_console,
    stdout_console,
)
from service.cli.formatting import study_summary
from service.cli.render import (
    follow,
    print_best,
    print_final,
    print_studies,
    print_study,
    print_trials,
)
from service.client import DEFAULT_URL
from service.studies.defaults import DEFAULT_CONFIRM

REQUIRED_FIELDS = ("name", "task", "optimizers", "n_trials")


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
    warm_start: Annotated[
        str | None,
        typer.Option(
            help="What to try first: auto (earlier studies of the task, then the shipped "
            "portfolio), none, or comma-separated earlier study names.",
            show_default=False,
        ),
    ] = None,
    confirm_top_k: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Configs per optimizer re-trained on fresh seeds (0: no confirmation); "
            f"default {DEFAULT_CONFIRM.top_k}.",
        ),
    ] = None,
    confirm_seeds: Annotated[
        int | None,
        typer.Option(
            min=2, help=f"Fresh seeds per confirmed config; default {DEFAULT_CONFIRM.seeds}."
        ),
    ] = None,
    equivalence: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="The confirmation's practical-equivalence margin, in the metric's units "
            "(default: half a point of an accuracy, else 1% of the best value).",
            show_default=False,
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="A whole request body as JSON; flags override it."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a study: tune each optimizer on a task, N finished trials each, then confirm the
    best configs on fresh seeds for a verdict."""
    body: dict[str, Any] = _read_json(file, "--file") if file else {}
    if space is not None and space_file is not None:
        fail("give the search space with --space or --space-file, not both")
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
    if warm_start is not None:
        body["warm_start"] = (
            warm_start if warm_start in ("auto", "none") else _split_list(warm_start)
        )
    if confirm_top_k is not None or confirm_seeds is not None or equivalence is not None:
        confirm = dict(body.get("confirm") or {})
        if equivalence is not None:
            confirm["equivalence"] = equivalence
        if confirm_top_k is not None:
            confirm["top_k"] = confirm_top_k
        if confirm_seeds is not None:
            confirm["seeds"] = confirm_seeds
        body["confirm"] = confirm
    missing = [f"--{key.replace('_', '-')}" for key in REQUIRED_FIELDS if key not in body]
    if missing:
        fail(f"missing {', '.join(missing)} (flags, or fields of the --file request)")
    with api(url, api_key) as client:
        study = client.create_study(body)
    if as_json:
        print_json(study)
        return
    out = stdout_console()
    out.print(f"Created study [bold]{escape(study['name'])}[/]: {study_summary(study)}")
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
    with api(url, api_key) as client:
        page = client.list_studies(status=status, task=task, limit=limit, offset=offset)
    if as_json:
        print_json(page)
        return
    print_studies(page, filtered=bool(status or task or offset))


def study_show(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Status of a study: progress per optimizer, best so far, ETA."""
    with api(url, api_key) as client:
        study = client.get_study(name)
    if as_json:
        print_json(study)
        return
    print_study(study)


def study_best(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Best config of each optimizer, the overall winner, and the Python line that builds it."""
    with api(url, api_key) as client:
        best = client.best(name)
    if as_json:
        print_json(best)
        return
    print_best(name, best)


def study_report(
    name: NameArgument,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the page here (default: NAME-report.html)."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Save the study's report: one HTML page that works offline (plots and the verdict)."""
    with api(url, api_key) as client:
        page = client.report_page(name)
    path = output or Path(f"{name}-report.html")
    path.write_text(page, encoding="utf-8")
    stdout_console().print(f"wrote the report of {escape(name)} to {escape(str(path))}")


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
    with api(url, api_key) as client:
        page = client.trials(name, optimizer=optimizer, state=state, limit=limit, offset=offset)
    if as_json:
        print_json(page)
        return
    print_trials(name, page, offset=offset)


def study_import(
    name: NameArgument,
    path: Annotated[
        Path,
        typer.Argument(
            help='A JSON file: a list of trials, or {"trials": [...]}, each '
            '{"optimizer", "params", "value"} or {..., "state": "pruned"}.',
            show_default=False,
        ),
    ],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Bring finished trials trained elsewhere into an external study (origin 'import')."""
    data = _read_json(path, "PATH")
    trials = data.get("trials") if isinstance(data, dict) else data
    if not isinstance(trials, list) or not trials:
        fail(f"{path} must hold a non-empty list of trials, or an object with one in 'trials'")
    with api(url, api_key) as client:
        imported = client.import_trials(name, trials)
    if as_json:
        print_json({"study": name, "imported": imported})
        return
    stdout_console().print(f"Imported {len(imported)} trials into [bold]{escape(name)}[/].")


def study_stop(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop a study: no new trials start; running ones finish and are recorded."""
    with api(url, api_key) as client:
        answer = client.stop(name)
    if as_json:
        print_json(answer)
        return
    stdout_console().print(
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
    """Delete a study and all its trials.

    Asks first; --yes (-y) deletes without asking, as scripts and pipelines must.
    """
    if not yes:
        try:
            confirmed = typer.confirm(f"Delete study {name!r} and all its trials?")
        except typer.Abort:  # end of input: nobody at a terminal to answer
            typer.echo()  # end the question's line
            fail(f"not deleted: no answer to the question; use --yes to delete {name!r} unasked")
        if not confirmed:
            fail("not deleted")
    with api(url, api_key) as client:
        answer = client.delete(name)
    if as_json:
        print_json(answer)
        return
    stdout_console().print(f"Study [bold]{escape(name)}[/] deleted.")


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
    with api(url, api_key) as client:
        try:
            study = follow(client, name, interval, as_json=as_json)
        except KeyboardInterrupt:
            stderr_console().print(f"Stopped watching; study {escape(name)} goes on.")
            return
    if not as_json:
        print_final(study)
    if study["status"] == "failed":
        raise typer.Exit(1)


# --------------------------------------------------------------------------- JSON input


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parse_json(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{option} is not valid JSON: {exc}")


def _read_json(path: Path, option: str) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        fail(f"{option}: cannot read {path}: {exc.strerror or exc}")
    data = _parse_json(text, f"{option} {path}")
    if option == "--file" and not isinstance(data, dict):
        fail(f"{option} {path} must hold a JSON object (a study request)")
    return data
