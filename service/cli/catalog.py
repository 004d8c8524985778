"""``hpt tasks`` and ``hpt optimizers``: what a study can train and tune, asked of the API."""

from __future__ import annotations

from service.cli.common import ApiKeyOption, JsonOption, UrlOption, api, print_json
from service.cli.render import print_optimizers, print_tasks
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
