"""A small Python client of the REST API (DESIGN.md §5).

>>> with HPTClient("http://127.0.0.1:8000") as hpt:
...     hpt.create_study(name="digits", task="digits_mlp", optimizers=["sgd", "adam"], n_trials=20)
...     hpt.wait_for_study("digits")
...     winner = hpt.best("digits")

Every method returns the server's JSON as plain dicts and lists. Any error, whether the server
answered 4xx/5xx or could not be reached at all, raises :class:`HPTError` carrying the server's
``detail`` message, so callers handle one exception type.

For a study of task ``external``, :meth:`HPTClient.optimize` runs the whole ask / report / tell
loop around your own training function, the way ``optuna.Study.optimize`` does::

    def objective(trial: RemoteTrial) -> float:
        torch.manual_seed(trial.seed)  # the service's seed (a confirmation re-trains on new ones)
        optimizer = trial.build_optimizer(model.parameters())
        ...
        trial.report(epoch, val_loss)  # raises TrialPruned when the service says so
        return val_loss

    hpt.optimize("my-model", objective)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from service.client.errors import HPTConnectionError, HPTError, format_detail
from service.client.optimize import (
    DEFAULT_OPTIMIZE_LEASE,
    DEFAULT_POLL_INTERVAL,
    FINAL_STATUSES,
    RemoteTrial,
    _OptimizeRun,
)

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
API_PREFIX = "/api/v1"


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
        model: str | None = None,
    ) -> Any:
        """Best known config per optimizer for ``task``'s model, over all studies (``metric``: the
        task's default unless given; task ``external`` needs it and ``model``)."""
        params = _params(
            task=task, optimizer=optimizer, metric=metric, direction=direction, model=model
        )
        return self._request("GET", f"{API_PREFIX}/best", params=params)

    # -- studies --------------------------------------------------------------------------------

    def create_study(
        self,
        body: Mapping[str, Any] | None = None,
        /,
        *,
        load_if_exists: bool = False,
        **fields: Any,
    ) -> Any:
        """Create a study from a request body, keyword fields, or both (fields win).

        ``hpt.create_study(name="x", task="digits_mlp", optimizers=["adam"], n_trials=20)``

        Args:
            body: The request body (DESIGN.md §5).
            load_if_exists: When a study of that name exists already (409), return it instead,
                as ``optuna.create_study(load_if_exists=True)`` does, so that a script can run
                again; it must have the same task and optimizers.
            fields: Fields of the request body.

        Raises:
            HPTError: the server refused the request; with ``load_if_exists``, also when the
                existing study has another task or other optimizers (status 409).
        """
        request = {**(body or {}), **fields}
        try:
            return self._request("POST", f"{API_PREFIX}/studies", json=request)
        except HPTError as exc:
            if not (load_if_exists and exc.status_code == 409 and "name" in request):
                raise
        existing = self.get_study(request["name"])
        _check_same_study(existing, request)
        return existing

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

    def report_page(self, name: str) -> str:
        """The study's report page (self-contained HTML)."""
        return self._send("GET", f"{_study_path(name)}/report").text

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

    def import_trials(
        self, name: str, trials: Sequence[Mapping[str, Any]], *, chunk: int = 100
    ) -> list[Any]:
        """Bring finished trials trained elsewhere into the external study ``name``, in order,
        ``chunk`` per request (the API takes at most 100): each ``{"optimizer", "params",
        "value"}`` or ``{..., "state": "pruned"}``, with optional ``"intermediate_values"``.
        Returns ``{"optimizer", "number"}`` of each. A request that fails raises; the trials
        of the requests before it are imported (and, of the failing one, those its error
        counts)."""
        imported: list[Any] = []
        for start in range(0, len(trials), chunk):
            body = {"trials": list(trials[start : start + chunk])}
            answer = self._request("POST", f"{_study_path(name)}/trials/import", json=body)
            imported += answer["imported"]
        return imported

    def renew(
        self,
        name: str,
        optimizer: str,
        number: int,
        *,
        lease: str,
        lease_seconds: float | None = None,
    ) -> Any:
        """Extend the lease of an asked trial: ``{"lease_expires_at": ...}``. 409 when the trial
        has ended or its lease ran out."""
        body = _params(lease=lease, lease_seconds=lease_seconds)
        return self._request("POST", f"{_trial_path(name, optimizer, number)}/renew", json=body)

    def optimize(
        self,
        study: str,
        objective: Callable[[RemoteTrial], float],
        n_trials: int | None = None,
        n_jobs: int = 1,
        *,
        catch: tuple[type[Exception], ...] = (Exception,),
        lease_seconds: float = DEFAULT_OPTIMIZE_LEASE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        show_progress_bar: bool = False,
    ) -> int:
        """Run ``objective`` on trials of an external study until it is complete: ask, train
        (your code), report, tell.

        Each trial asked is handed to ``objective`` as a :class:`RemoteTrial`; what it returns is
        told as the trial's value. Train with ``trial.params`` and seed your training with
        ``trial.seed``. :meth:`RemoteTrial.report` raises :class:`TrialPruned` when the service
        prunes a search trial (told pruned); confirmation trials (``trial.phase == "confirm"``,
        a config re-trained on a fresh seed) are never pruned, and one that diverges is told
        failed, so that the service trains that seed again. An exception of ``catch`` fails
        the trial and the loop goes on; any other exception fails the trial and is raised.

        While the objective trains, a background thread renews the trial's lease every
        ``lease_seconds / 3``, so a training longer than the lease is fine; a client that dies
        leaves its trial to fail after ``lease_seconds``, and its params go to the next ask. A
        request the service cannot answer right now (unreachable, 429, 502, 503, 504) is sent
        again with backoff, for up to 5 minutes: the service's hiccups never fail a trial.

        Ctrl-C stops the run calmly and **exits the program with status 130** (``SystemExit``):
        the trial being trained is told failed (the study runs its config again), an ask or a
        tell under way finishes first, and one line on stderr says what the study kept, e.g.
        ``Interrupted: 7 trials told this run (5 complete, 2 pruned); trial adam/3 was told
        failed, and the study runs its config again. The study keeps everything told.`` A
        second Ctrl-C quits at once (a trial whose tell it cut short fails when its lease runs
        out). With ``n_jobs > 1`` the threads' trials are told failed the same way, without
        waiting for their objectives.

        When the service runs on this machine and torch (already imported by your code) trains
        with one thread per core, a warning says to call ``torch.set_num_threads(N)``: the
        service's workers train on the same cores.

        Args:
            study: An external study (``create_study(task="external", ...)``).
            objective: ``objective(trial) -> float``, the study's metric of the trained model.
            n_trials: Trials this call runs at most (over all its threads, exactly); ``None``:
                until the study has all its trials, the confirmation's included.
            n_jobs: Threads running trials side by side, sharing the study.
            catch: Exceptions of the objective that fail its trial without stopping the loop.
            lease_seconds: The lease of each trial.
            poll_interval: Seconds between asks while every remaining trial is held by running
                trials (of this or other clients), and the first wait before sending again a
                request the service could not answer (doubling up to 10 s).
            show_progress_bar: Show a tqdm bar of the trials told, of ``n_trials`` (or of the
                study's remaining trials), with the best value so far.

        Returns:
            The number of trials this call ran (complete, pruned or failed).

        Raises:
            HPTError: the study is unknown or not an external one, the server refused a
                request, or it could not be reached (at the start, or for 5 minutes).
            SystemExit: status 130, after Ctrl-C.
        """
        if n_jobs < 1:
            raise ValueError(f"n_jobs must be at least 1, got {n_jobs}")
        if n_trials is not None and n_trials < 0:
            raise ValueError(f"n_trials must be None or >= 0, got {n_trials}")
        run = _OptimizeRun(
            client=self,
            study=study,
            objective=objective,
            budget=n_trials,
            catch=catch,
            lease_seconds=lease_seconds,
            poll_interval=poll_interval,
            n_jobs=n_jobs,
        )
        return run.run(show_progress_bar=show_progress_bar)

    # -- plumbing -------------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise HPTConnectionError(
                None, f"cannot reach the API at {self.base_url}; is `hpt serve` running? ({exc})"
            ) from exc
        if response.is_error:
            raise HPTError(response.status_code, _error_detail(response))
        return response

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
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


def _check_same_study(existing: Mapping[str, Any], request: Mapping[str, Any]) -> None:
    """Raise unless ``existing`` is the study ``request`` asks for (same task and optimizers)."""
    names = [
        row["optimizer"] if isinstance(row, Mapping) else row for row in existing["optimizers"]
    ]
    wanted = {"task": request.get("task"), "optimizers": request.get("optimizers")}
    found = {"task": existing["task"], "optimizers": names}
    differ = [key for key, value in wanted.items() if value is not None and value != found[key]]
    if differ:
        raise HPTError(
            409,
            f"a study named {existing['name']!r} exists with "
            + ", ".join(f"{key} {found[key]!r}" for key in differ)
            + ", not "
            + ", ".join(f"{wanted[key]!r}" for key in differ)
            + "; choose another name, or delete it first",
        )


__all__ = ["HPTClient", "HPTConnectionError", "HPTError", "RemoteTrial", "format_detail"]
