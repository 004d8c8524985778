"""The optimize loop of an external study: ask, train with your own code, report, tell, the way
``optuna.Study.optimize`` runs an objective (:meth:`service.client.HPTClient.optimize`)."""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service import vocabulary
from service.client.errors import HPTConnectionError, HPTError

if TYPE_CHECKING:
    import torch

    from service.client.http import HPTClient

log = logging.getLogger("hpt.client")

DEFAULT_POLL_INTERVAL = 1.0
# Study statuses after which nothing changes any more (service.vocabulary.FINAL_STATUSES).
FINAL_STATUSES = frozenset(str(status) for status in vocabulary.FINAL_STATUSES)
# The lease optimize() asks for: a killed client's trial is offered again that long after.
DEFAULT_OPTIMIZE_LEASE = 60.0
# Renewals per lease: a renewal may fail (a network blip) twice before the lease runs out.
RENEWALS_PER_LEASE = 3
# Attempts of a tell that could not reach the server (a tell is idempotent: retrying is safe).
TELL_ATTEMPTS = 3


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
