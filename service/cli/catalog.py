"""``hpt tasks``, ``hpt optimizers`` and ``hpt best``: what a study can train and tune, and the
best known config of a task over all studies, asked of the API."""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli.common import ApiKeyOption, JsonOption, UrlOption, api, print_json
from service.cli.render import print_optimizers, print_task_best, print_tasks
from service.client import DEFAULT_URL


def tasks(
    url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False
) -> None:
    """Tasks a study can train, with their metrics."""
    with api(url, api_key) as client:
        answer = client.tasks()
    if as_json:
        print_json(answer)
        return
    print_tasks(answer)


def optimizers(
    url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False
) -> None:
    """Optimizers a study can tune, with their default search spaces."""
    with api(url, api_key) as client:
        answer = client.optimizers()
    if as_json:
        print_json(answer)
        return
    print_optimizers(answer)


def best(
    task: Annotated[str, typer.Option(help="The task (see `hpt tasks`).", show_default=False)],
    model: Annotated[
        str | None,
        typer.Option(help="Task external: your model's name (required there).", show_default=False),
    ] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="Only this optimizer.", show_default=False)
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="Default: the task's (task external: required).", show_default=False),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Best known config per optimizer for a model, over all studies of it (a confirmed config with
    its mean over seeds)."""
    with api(url, api_key) as client:
        answer = client.best_for_task(task, optimizer, metric=metric, model=model)
    if as_json:
        print_json(answer)
        return
    print_task_best(answer)
