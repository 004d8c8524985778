"""A small Python client of the REST API (DESIGN.md §5).

>>> with HPTClient("http://127.0.0.1:8000") as hpt:
...     hpt.create_study(name="digits", task="digits_mlp", optimizers=["sgd", "adam"], n_trials=20)
...     hpt.wait_for_study("digits")
...     winner = hpt.best("digits")

Every method returns the server's JSON as plain dicts and lists. Any error, whether the server
answered 4xx/5xx or could not be reached at all, raises :class:`HPTError` carrying the server's
``detail`` message, so callers handle one exception type.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
DEFAULT_POLL_INTERVAL = 1.0
API_PREFIX = "/api/v1"
# Study statuses after which nothing changes any more (service.slots has the full list).
FINAL_STATUSES = frozenset({"completed", "stopped", "failed"})


class HPTError(Exception):
    """The API refused a request, or could not be reached.

    Attributes:
        status_code: HTTP status of the answer; ``None`` when there was no answer at all.
        detail: The server's ``detail`` (a message, or FastAPI's list of validation errors).
    """

    def __init__(self, status_code: int | None, detail: Any) -> None:
        self.status_code = status_code
        self.detail = detail
        super().__init__(format_detail(detail))

    @property
    def message(self) -> str:
        """The detail as one human-readable message."""
        return format_detail(self.detail)


class HPTConnectionError(HPTError):
    """Nothing answered at the API's URL (connection refused, DNS failure, timeout)."""


def format_detail(detail: Any) -> str:
    """A person-readable message from an error ``detail``.

    FastAPI's validation errors are a list of ``{"loc": [...], "msg": ...}``; they become one
    ``where: what`` line each.
    """
    if isinstance(detail, list):
        lines = []
        for error in detail:
            if isinstance(error, Mapping) and "msg" in error:
                where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
                lines.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
            else:
                lines.append(str(error))
        return "\n".join(lines)
    return str(detail)


class HPTClient:
    """Client of one hpt API server; one method per endpoint.

    Args:
        base_url: Where the API listens (``http://host:port``, without ``/api/v1``).
        api_key: Sent as ``Authorization: Bearer <key>`` (the server wants it for mutating
            requests when it has ``HPT_API_KEY`` set).
        timeout: Seconds for connecting and for each response.
        transport: An httpx transport to use instead of the network (``httpx.MockTransport`` in
            tests, ``httpx.ASGITransport`` to talk to an app in-process).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- service --------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Liveness and database reachability (``GET /healthz``)."""
        return self._request("GET", "/healthz")

    def optimizers(self) -> Any:
        """The optimizer registry with default search spaces."""
        return self._request("GET", f"{API_PREFIX}/optimizers")

    def tasks(self) -> Any:
        """The tasks, with metric, direction and default epochs."""
        return self._request("GET", f"{API_PREFIX}/tasks")

    def best_for_task(
        self,
        task: str,
        optimizer: str | None = None,
        *,
        metric: str | None = None,
        direction: str | None = None,
    ) -> Any:
        """Best known config per optimizer for ``task``, over all studies (``metric``: the task's
        default unless given; task ``external`` needs it)."""
        params = _params(task=task, optimizer=optimizer, metric=metric, direction=direction)
        return self._request("GET", f"{API_PREFIX}/best", params=params)

    # -- studies --------------------------------------------------------------------------------

    def create_study(self, body: Mapping[str, Any] | None = None, /, **fields: Any) -> Any:
        """Create a study from a request body, keyword fields, or both (fields win).

        ``hpt.create_study(name="x", task="digits_mlp", optimizers=["adam"], n_trials=20)``
        """
        return self._request("POST", f"{API_PREFIX}/studies", json={**(body or {}), **fields})

    def list_studies(
        self,
        *,
        status: str | None = None,
        task: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Any:
        """One page of studies, newest first."""
        params = _params(status=status, task=task, limit=limit, offset=offset)
        return self._request("GET", f"{API_PREFIX}/studies", params=params)

    def get_study(self, name: str) -> Any:
        """Status, per-optimizer progress counts, best so far and ETA of a study."""
        return self._request("GET", _study_path(name))

    def best(self, name: str) -> Any:
        """Best config per optimizer of a study, and the overall winner."""
        return self._request("GET", f"{_study_path(name)}/best")

    def trials(
        self,
        name: str,
        *,
        optimizer: str | None = None,
        state: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Any:
        """One page of a study's trials."""
        params = _params(optimizer=optimizer, state=state, limit=limit, offset=offset)
        return self._request("GET", f"{_study_path(name)}/trials", params=params)

    def stop(self, name: str) -> Any:
        """Hand out no new trials; running ones finish."""
        return self._request("POST", f"{_study_path(name)}/stop")

    def delete(self, name: str) -> Any:
        """Remove a study and its Optuna studies."""
        return self._request("DELETE", _study_path(name))

    def wait_for_study(
        self, name: str, *, timeout: float | None = None, poll: float = DEFAULT_POLL_INTERVAL
    ) -> str:
        """Poll until the study is completed, stopped or failed; returns that status.

        Raises:
            TimeoutError: ``timeout`` seconds went by first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.get_study(name)["status"]
            if status in FINAL_STATUSES:
                return status
            if deadline is not None and time.monotonic() + poll > deadline:
                raise TimeoutError(f"study {name!r} is still {status} after {timeout:g} s")
            time.sleep(poll)

    # -- ask / tell (studies of task "external") ------------------------------------------------

    def ask(self, name: str, *, lease_seconds: float | None = None) -> Any:
        """Take a trial to run yourself: ``{optimizer, number, params, python, lease, ...}``.

        Unless told (or renewed by a report) within ``lease_seconds`` (default: the server's),
        the trial fails and its params go to the next ask.
        """
        body = _params(lease_seconds=lease_seconds)
        return self._request("POST", f"{_study_path(name)}/trials/ask", json=body)

    def report(
        self,
        name: str,
        optimizer: str,
        number: int,
        step: int,
        value: float,
        *,
        lease: str | None = None,
    ) -> Any:
        """Report an intermediate value; the answer says whether to prune (``should_prune``)."""
        body = _params(step=step, value=value, lease=lease)
        return self._request("POST", f"{_trial_path(name, optimizer, number)}/report", json=body)

    def tell(
        self,
        name: str,
        optimizer: str,
        number: int,
        value: float | None = None,
        state: str | None = None,
        *,
        lease: str | None = None,
    ) -> Any:
        """Finish an asked trial with its ``value``, or with ``state`` "pruned" or "failed"."""
        body = _params(value=value, state=state, lease=lease)
        return self._request("POST", f"{_trial_path(name, optimizer, number)}/tell", json=body)

    # -- plumbing -------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise HPTConnectionError(
                None, f"cannot reach the API at {self.base_url}; is `hpt serve` running? ({exc})"
            ) from exc
        if response.is_error:
            raise HPTError(response.status_code, _error_detail(response))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


def _params(**values: Any) -> dict[str, Any]:
    """The given values without the ``None`` ones (absent query parameters and body fields)."""
    return {key: value for key, value in values.items() if value is not None}


def _study_path(name: str) -> str:
    return f"{API_PREFIX}/studies/{quote(name, safe='')}"


def _trial_path(name: str, optimizer: str, number: int) -> str:
    return f"{_study_path(name)}/trials/{quote(optimizer, safe='')}/{int(number)}"


def _error_detail(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping) and "detail" in body:
        return body["detail"]
    text = response.text.strip()
    return text or f"{response.status_code} {response.reason_phrase}"
