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
        optimizer = trial.build_optimizer(model.parameters())
        ...
        trial.report(epoch, val_loss)  # raises TrialPruned when the service says so
        return val_loss

    hpt.optimize("my-model", objective)
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

import httpx

from service import vocabulary

if TYPE_CHECKING:
    import torch

log = logging.getLogger("hpt.client")

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
DEFAULT_POLL_INTERVAL = 1.0
API_PREFIX = "/api/v1"
# Study statuses after which nothing changes any more (service.vocabulary.FINAL_STATUSES).
FINAL_STATUSES = frozenset(str(status) for status in vocabulary.FINAL_STATUSES)
# The lease optimize() asks for: a killed client's trial is offered again that long after.
DEFAULT_OPTIMIZE_LEASE = 60.0
# Renewals per lease: a renewal may fail (a network blip) twice before the lease runs out.
RENEWALS_PER_LEASE = 3
# Attempts of a tell that could not reach the server (a tell is idempotent: retrying is safe).
TELL_ATTEMPTS = 3


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
    ) -> int:
        """Run ``objective`` on trials of an external study until it is complete: ask, train
        (your code), report, tell.

        Each trial asked is handed to ``objective`` as a :class:`RemoteTrial`; what it returns is
        told as the trial's value. :meth:`RemoteTrial.report` raises :class:`TrialPruned` when the
        service prunes the trial (told as pruned). An exception of ``catch`` fails the trial
        and the loop goes on; any other exception, and Ctrl-C, fails the running trial(s) and is
        raised. While the objective trains, a background thread renews the trial's lease every
        ``lease_seconds / 3``, so a training longer than the lease is fine; a client that dies
        leaves its trial to fail after ``lease_seconds``, and its params go to the next ask.

        Args:
            study: An external study (``create_study(task="external", ...)``).
            objective: ``objective(trial) -> float``, the study's metric of the trained model.
            n_trials: Trials this call runs at most (over all its threads, exactly); ``None``:
                until the study has all its trials.
            n_jobs: Threads running trials side by side, sharing the study.
            catch: Exceptions of the objective that fail its trial without stopping the loop.
            lease_seconds: The lease of each trial.
            poll_interval: Seconds between asks while every remaining trial is held by running
                trials (of this or other clients).

        Returns:
            The number of trials this call ran (complete, pruned or failed).

        Raises:
            HPTError: the study is not an external one, or the server refused a request.
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
        )
        if n_jobs == 1:
            run.work()  # in this thread: Ctrl-C lands in the objective
        else:
            run.work_in_threads(n_jobs)
        return run.ran

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


# --------------------------------------------------------------------------- optimize


class TrialPruned(Exception):
    """The service pruned the trial: raised by :meth:`RemoteTrial.report`; let it propagate out
    of the objective (or raise it yourself) and the trial is told pruned."""


@dataclass
class RemoteTrial:
    """A trial asked of the service, as :meth:`HPTClient.optimize` hands it to the objective.

    Attributes:
        study: The study's name.
        optimizer: The optimizer's registry name (``"adam"``).
        number: The trial's number (per optimizer).
        params: The hyperparameters to train with (``{"lr": ..., "batch_size": ...}``).
        python: The line of Python that builds the optimizer with them.
        lease: The lease token report and tell send back.
    """

    study: str
    optimizer: str
    number: int
    params: dict[str, Any]
    python: str
    lease: str
    _client: HPTClient = field(repr=False)
    _lost: str | None = field(default=None, repr=False)

    @property
    def batch_size(self) -> int | None:
        """The sampled batch size; ``None`` when the optimizer searches none (full batch)."""
        value = self.params.get("batch_size")
        return None if value is None else int(value)

    def build_optimizer(self, parameters: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
        """The ``optim_core`` optimizer of this trial over ``parameters``, configured with its
        params (the batch size is yours to apply)."""
        from optim_core.registry import get_optimizer

        return get_optimizer(self.optimizer).build(parameters, self.params)

    def report(self, step: int, value: float) -> None:
        """Report the metric at ``step`` (an epoch); renews the lease.

        Raises:
            TrialPruned: the service's pruner stops this trial, or ``value`` is nan or infinite
                (the training diverged: told pruned, as the service's own workers do).
            HPTError: the trial ended meanwhile (its lease ran out), or the server refused.
        """
        if self._lost is not None:
            label = f"trial {self.optimizer}/{self.number}"
            raise HPTError(409, f"{label} lost its lease: {self._lost}")
        if not math.isfinite(value):
            raise TrialPruned(f"diverged: the value is {value} at step {step}")
        answer = self._client.report(
            self.study, self.optimizer, self.number, int(step), float(value), lease=self.lease
        )
        if answer["should_prune"]:
            raise TrialPruned(f"trial {self.optimizer}/{self.number} pruned at step {step}")


@dataclass
class _LeaseKeeper:
    """Renews a trial's lease every ``interval`` seconds until stopped."""

    trial: RemoteTrial
    lease_seconds: float
    interval: float
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run,
            name=f"hpt-lease-{self.trial.optimizer}-{self.trial.number}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        trial = self.trial
        while not self._stop.wait(self.interval):
            try:
                trial._client.renew(
                    trial.study,
                    trial.optimizer,
                    trial.number,
                    lease=trial.lease,
                    lease_seconds=self.lease_seconds,
                )
            except HPTError as exc:
                if exc.status_code is None or exc.status_code >= 500:
                    log.warning("renewing the lease of trial %s/%s failed, will retry: %s",
                                trial.optimizer, trial.number, exc.message)  # fmt: skip
                    continue
                trial._lost = exc.message
                log.warning("trial %s/%s lost its lease: %s", trial.optimizer, trial.number,
                            exc.message)  # fmt: skip
                return


class _StudyOver(Exception):
    """The study takes no more trials."""


@dataclass
class _OptimizeRun:
    """One call of :meth:`HPTClient.optimize`: a trial budget shared by its threads."""

    client: HPTClient
    study: str
    objective: Callable[[RemoteTrial], float]
    budget: int | None
    catch: tuple[type[Exception], ...]
    lease_seconds: float
    poll_interval: float
    ran: int = 0
    _taken: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _running: set[int] = field(default_factory=set)
    _trials: dict[int, RemoteTrial] = field(default_factory=dict)
    _error: BaseException | None = None

    # -- the budget: exact over threads --------------------------------------------------------

    def _take(self) -> bool:
        with self._lock:
            if self._stop.is_set() or (self.budget is not None and self._taken >= self.budget):
                return False
            self._taken += 1
            return True

    def _give_back(self) -> None:
        with self._lock:
            self._taken -= 1

    # -- the loop ------------------------------------------------------------------------------

    def work(self) -> None:
        """Run trials until the study, the budget or another thread says stop."""
        while self._take():
            try:
                trial = self._ask()
            except _StudyOver:
                self._give_back()
                self._stop.set()
                return
            except BaseException:
                self._give_back()
                raise
            if trial is None:  # stopping
                self._give_back()
                return
            self._run(trial)

    def work_in_threads(self, n_jobs: int) -> None:
        def job() -> None:
            try:
                self.work()
            except BaseException as exc:  # the first one is raised by the caller's thread
                with self._lock:
                    self._error = self._error or exc
                self._stop.set()

        threads = [
            threading.Thread(target=job, name=f"hpt-optimize-{i}", daemon=True)
            for i in range(n_jobs)
        ]
        for thread in threads:
            thread.start()
        try:
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(timeout=0.1)  # short joins: Ctrl-C reaches this thread
        except KeyboardInterrupt:
            self._stop.set()
            self._fail_running("interrupted (KeyboardInterrupt)")
            raise
        if self._error is not None:
            raise self._error

    def _ask(self) -> RemoteTrial | None:
        """The next trial; ``None`` when told to stop while waiting for a free slot.

        Raises:
            _StudyOver: the study takes no more trials.
        """
        while True:
            try:
                asked = self.client.ask(self.study, lease_seconds=self.lease_seconds)
            except HPTError as exc:
                if exc.status_code != 409:
                    raise
                study = self.client.get_study(self.study)
                if study["task"] != "external":
                    raise
                if study["status"] in FINAL_STATUSES:
                    raise _StudyOver(study["status"]) from None
                # Every remaining trial is held by a running one: wait for a tell or an expiry.
                if self._stop.wait(self.poll_interval):
                    return None
                continue
            return RemoteTrial(
                study=asked["study"],
                optimizer=asked["optimizer"],
                number=asked["number"],
                params=dict(asked["params"]),
                python=asked["python"],
                lease=asked["lease"],
                _client=self.client,
            )

    def _run(self, trial: RemoteTrial) -> None:
        key = id(trial)
        with self._lock:
            self._trials[key] = trial
        keeper = _LeaseKeeper(
            trial, self.lease_seconds, interval=self.lease_seconds / RENEWALS_PER_LEASE
        )
        keeper.start()
        try:
            try:
                value = self.objective(trial)
            finally:
                keeper.stop()
        except BaseException as exc:
            if _is_pruned(exc):
                self._tell(trial, state="pruned")
                return
            reason = f"{type(exc).__name__}: {exc}"
            self._tell(trial, state="failed")
            if isinstance(exc, self.catch) and isinstance(exc, Exception):
                log.warning("trial %s/%s failed: %s", trial.optimizer, trial.number, reason,
                            exc_info=exc)  # fmt: skip
                return
            raise
        finally:
            with self._lock:
                self._trials.pop(key, None)
                self.ran += 1
        if not isinstance(value, int | float) or not math.isfinite(value):
            log.warning("trial %s/%s failed: the objective returned %r, not a finite number",
                        trial.optimizer, trial.number, value)  # fmt: skip
            self._tell(trial, state="failed")
            return
        self._tell(trial, value=float(value))

    def _tell(self, trial: RemoteTrial, *, value: float | None = None, state: str | None = None):
        for attempt in range(1, TELL_ATTEMPTS + 1):
            try:
                self.client.tell(
                    trial.study, trial.optimizer, trial.number, value=value, state=state,
                    lease=trial.lease,
                )  # fmt: skip
                return
            except HPTConnectionError as exc:
                if attempt == TELL_ATTEMPTS:
                    log.warning("could not tell trial %s/%s: %s", trial.optimizer, trial.number,
                                exc.message)  # fmt: skip
                    return
                time.sleep(self.poll_interval * attempt)
            except HPTError as exc:
                if exc.status_code != 409:
                    raise
                # Ended meanwhile: its lease ran out (it is failed, its params offered again),
                # or another thread failed it on Ctrl-C.
                log.warning("trial %s/%s could not be told: %s", trial.optimizer, trial.number,
                            exc.message)  # fmt: skip
                return

    def _fail_running(self, reason: str) -> None:
        with self._lock:
            running = list(self._trials.values())
        for trial in running:
            log.warning("failing trial %s/%s: %s", trial.optimizer, trial.number, reason)
            self._tell(trial, state="failed")


def _is_pruned(exc: BaseException) -> bool:
    """Our :class:`TrialPruned`, or Optuna's when the objective raised that one."""
    if isinstance(exc, TrialPruned):
        return True
    optuna = sys.modules.get("optuna")
    return optuna is not None and isinstance(exc, optuna.TrialPruned)
