"""The optimize loop of an external study: ask, train with your own code, report, tell, the way
``optuna.Study.optimize`` runs an objective (:meth:`service.client.HPTClient.optimize`).

What the loop promises, whatever happens around the objective:

- The objective is blamed only for what it does. A request the service cannot answer right now
  (unreachable, 429, 502, 503, 504) is retried with backoff; it never fails a trial.
- Every trial it asked is told, or left to its lease. Ctrl-C is taken calmly: a tell under way
  finishes, the trial being trained is told failed (the study runs its config again), an ask under
  way is answered and its trial told failed untrained, then one line on stderr says what the
  study kept, and the program exits with status 130.
- Confirmation trials (phase ``"confirm"``, a config re-trained on a fresh seed) are never
  pruned: a diverged one is told failed, so that the service trains that seed again.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

from service import vocabulary
from service.client.errors import HPTError, is_transient
from service.client.progress import ProgressBar
from service.client.retry import MAX_RETRY_WAIT, Stopped, retrying
from service.client.threads import torch_threads_warning

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
# What optimize() exits with after Ctrl-C: 128 + SIGINT, the status a shell gives such a program.
INTERRUPTED_EXIT_STATUS = 130
# How a trial this loop ran ended: told complete, pruned or failed, or ended by the service
# meanwhile (its lease ran out, or its study was deleted).
OUTCOMES = ("complete", "pruned", "failed", "expired")
# The phases of a trial, as the ask answers them (service.vocabulary.TrialPhase).
SEARCH_PHASE = str(vocabulary.TrialPhase.SEARCH)
CONFIRM_PHASE = str(vocabulary.TrialPhase.CONFIRM)


class TrialPruned(Exception):
    """The service pruned the trial: raised by :meth:`RemoteTrial.report`; let it propagate out
    of the objective (or raise it yourself) and the trial is told pruned."""


class TrialDiverged(Exception):
    """A confirmation trial's training diverged (a nan or infinite value): raised by
    :meth:`RemoteTrial.report`; let it propagate and the trial is told failed, so that the
    service trains that seed again (confirmation trials are never pruned)."""


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
        seed: The training seed to use (``torch.manual_seed(trial.seed)``, the data order ...):
            the confirmation re-trains a config on seeds the service chooses. ``None`` when the
            server hands out none (an older server).
        phase: ``"search"`` (a config being tried; the service may prune it) or ``"confirm"``
            (a config re-trained on a fresh seed; never pruned).
        origin: Where the config came from: ``"portfolio"``, ``"catalogue"``, ``"sampler"``,
            ``"retry"`` (offered again after a trial of it failed), ``"confirm"`` or
            ``"import"``; ``None`` when the server does not say.
    """

    study: str
    optimizer: str
    number: int
    params: dict[str, Any]
    python: str
    lease: str
    _client: HPTClient = field(repr=False)
    seed: int | None = field(default=None, kw_only=True)
    phase: str = field(default=SEARCH_PHASE, kw_only=True)
    origin: str | None = field(default=None, kw_only=True)
    _retry_wait: float = field(default=DEFAULT_POLL_INTERVAL, repr=False, kw_only=True)
    _lost: str | None = field(default=None, repr=False, kw_only=True)
    _raised: HPTError | None = field(default=None, repr=False, kw_only=True)

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

        A report the service cannot answer right now is sent again with backoff (training waits
        meanwhile).

        Raises:
            TrialPruned: a search trial that the service's pruner stops, or whose ``value`` is nan
                or infinite (the training diverged: told pruned, as the service's workers do).
            TrialDiverged: a confirmation trial whose ``value`` is nan or infinite (told failed:
                the service trains that seed again).
            HPTError: the trial ended meanwhile (its lease ran out), the server refused, or it
                could not be reached for 5 minutes.
        """
        label = _label(self)
        if self._lost is not None:
            self._raised = HPTError(409, f"trial {label} lost its lease: {self._lost}")
            raise self._raised
        value = float(value)
        if not math.isfinite(value):
            why = f"diverged: the value is {value} at step {step}"
            if self.phase == CONFIRM_PHASE:
                raise TrialDiverged(f"trial {label} {why}")
            raise TrialPruned(why)
        try:
            answer = retrying(
                lambda: self._client.report(
                    self.study, self.optimizer, self.number, int(step), value, lease=self.lease
                ),
                f"reporting trial {label}",
                first_wait=self._retry_wait,
            )
        except HPTError as exc:
            self._raised = exc
            raise
        # The service never prunes a confirmation trial; should a server say so, it is ignored.
        if answer["should_prune"] and self.phase != CONFIRM_PHASE:
            raise TrialPruned(f"trial {label} pruned at step {step}")


@dataclass
class _LeaseKeeper:
    """Renews a trial's lease every ``interval`` seconds until stopped; sooner after a renewal
    the service could not answer."""

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
        wait, retry_wait = self.interval, trial._retry_wait
        while not self._stop.wait(wait):
            try:
                trial._client.renew(
                    trial.study,
                    trial.optimizer,
                    trial.number,
                    lease=trial.lease,
                    lease_seconds=self.lease_seconds,
                )
            except HPTError as exc:
                if is_transient(exc):
                    wait = min(retry_wait, self.interval)
                    retry_wait = min(2 * retry_wait, MAX_RETRY_WAIT)
                    log.warning("renewing the lease of trial %s: %s; trying again in %.2g s",
                                _label(trial), exc.message, wait)  # fmt: skip
                    continue
                trial._lost = exc.message
                log.warning("trial %s lost its lease: %s", _label(trial), exc.message)
                return
            wait, retry_wait = self.interval, trial._retry_wait


class _StudyOver(Exception):
    """The study takes no more trials."""


@dataclass
class _Held:
    """A trial this run asked and has not told yet."""

    trial: RemoteTrial
    keeper: _LeaseKeeper | None = None
    # Someone took on its tell: its own thread, or the Ctrl-C handling (exactly one of them).
    claimed: bool = False


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
    n_jobs: int = 1
    ran: int = 0
    told: Counter[str] = field(default_factory=Counter)  # outcome -> trials, Ctrl-C's aside
    _progress: ProgressBar | None = None
    _taken: int = 0
    _busy: int = 0  # threads asking or telling: a Ctrl-C waits for them
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _stop: threading.Event = field(default_factory=threading.Event)
    _held: dict[tuple[str, int], _Held] = field(default_factory=dict)
    _error: BaseException | None = None
    _interrupts: int = 0  # Ctrl-C's received (written by the main thread only)
    _in_objective: bool = False  # the main thread runs the objective (n_jobs=1)
    _interrupted: list[str] = field(default_factory=list)  # trials told failed for Ctrl-C
    _threads_warned: bool = False

    # -- the whole run -------------------------------------------------------------------------

    def run(self, *, show_progress_bar: bool = False) -> int:
        """Run trials in ``n_jobs`` threads (this one when 1) until the study, the budget or an
        error says stop; after Ctrl-C, print what the study kept and exit with status 130."""
        with self._calm_ctrl_c():
            try:
                study = self._first_look()
                self._warn_about_threads()
                with self._progress_bar(study, show_progress_bar):
                    self._work()
                    if self._interrupts:
                        self._end_interrupted_run()
            except KeyboardInterrupt:  # not taken calmly: a second Ctrl-C, or a foreign handler
                self._interrupts += 1
                if self._interrupts == 1:
                    with suppress(KeyboardInterrupt):
                        self._end_interrupted_run()
        if self._interrupts:
            print(self._interruption_summary(), file=sys.stderr, flush=True)
            raise SystemExit(INTERRUPTED_EXIT_STATUS)
        return self.ran

    def _work(self) -> None:
        if self.n_jobs == 1:
            self.work()  # in this thread: Ctrl-C lands in the objective
        else:
            self.work_in_threads(self.n_jobs)

    def _first_look(self) -> dict[str, Any]:
        """The study, read before the first ask: nothing answering (a wrong URL, no server) or
        an unknown study is raised at once; a service answering "not now" is asked again."""
        try:
            return self.client.get_study(self.study)
        except HPTError as exc:
            if exc.status_code is None or not is_transient(exc):
                raise
        return retrying(
            lambda: self.client.get_study(self.study),
            "reading the study",
            first_wait=self.poll_interval,
        )

    @contextmanager
    def _progress_bar(self, study: dict[str, Any], show: bool) -> Iterator[None]:
        if show:
            self._progress = ProgressBar.open(study, self.budget)
        try:
            yield
        finally:
            with self._lock:
                progress, self._progress = self._progress, None
            if progress is not None:
                progress.close()

    # -- Ctrl-C --------------------------------------------------------------------------------

    @contextmanager
    def _calm_ctrl_c(self) -> Iterator[None]:
        """While the run lasts, Ctrl-C interrupts the objective (n_jobs=1) but never an ask or a
        tell: those finish, then the run stops. A second Ctrl-C interrupts whatever runs.

        Only in the main thread, and only where Ctrl-C raises KeyboardInterrupt (Python's
        handler): a program with its own SIGINT handler keeps it.
        """
        main = threading.current_thread() is threading.main_thread()
        if not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            yield
            return
        previous = signal.signal(signal.SIGINT, self._on_ctrl_c)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _on_ctrl_c(self, signum: int, frame: FrameType | None) -> None:
        self._interrupts += 1
        if self._interrupts > 1 or self._in_objective:
            raise KeyboardInterrupt
        # Not from here: the main thread may be inside the event's own lock right now.
        threading.Thread(target=self._stop.set, name="hpt-ctrl-c", daemon=True).start()

    def _end_interrupted_run(self) -> None:
        """Tell failed the trials still training (in threads), and wait for the asks and tells
        under way (an asked trial is told failed, untrained)."""
        self._stop.set()
        with self._lock:
            training = [held for held in self._held.values() if self._claim(held)]
        for held in training:
            if held.keeper is not None:
                held.keeper.stop()  # no renewal of a trial told failed
            self._tell_interrupted(held)
        with self._lock:
            while self._busy:
                self._lock.wait(0.1)

    def _interruption_summary(self) -> str:
        told = sum(self.told.values())
        if told:
            kinds = ", ".join(f"{self.told[kind]} {kind}" for kind in OUTCOMES if self.told[kind])
            head = f"{_plural(told, 'trial')} told this run ({kinds})"
        else:
            head = "no trial told this run"
        parts = []
        if self._interrupted:
            if len(self._interrupted) == 1:
                parts.append(f"trial {self._interrupted[0]} was told failed, and the study runs "
                             "its config again")  # fmt: skip
            else:
                parts.append(f"trials {_enumerate(self._interrupted)} were told failed, and the "
                             "study runs their configs again")  # fmt: skip
        untold = [_label(held.trial) for held in self._held.values()]
        if untold:
            parts.append(
                f"{'trial' if len(untold) == 1 else 'trials'} {_enumerate(untold)} could not be "
                f"told: the study runs {'its config' if len(untold) == 1 else 'their configs'} "
                f"again once {'its lease runs' if len(untold) == 1 else 'their leases run'} out "
                f"(within {self.lease_seconds:g} s)"
            )
        if not parts:
            parts.append("no trial was running")
        return f"Interrupted: {head}; {'; '.join(parts)}. The study keeps everything told."

    # -- the budget: exact over threads --------------------------------------------------------

    def _take(self) -> bool:
        """Take one trial of the budget; this thread is busy asking until :meth:`_hold`."""
        with self._lock:
            if self._interrupts or self._stop.is_set():
                return False
            if self.budget is not None and self._taken >= self.budget:
                return False
            self._taken += 1
            self._busy += 1
            return True

    def _hold(self, trial: RemoteTrial | None) -> _Held | None:
        """Hold the trial just asked (``None``: none was) and end this thread's ask. Returns
        ``None`` when there is nothing to train: no trial, or Ctrl-C came during the ask (the
        trial is then told failed, untrained)."""
        with self._lock:
            if trial is None:
                self._taken -= 1
                self._done()
                return None
            held = _Held(trial)
            self._held[(trial.optimizer, trial.number)] = held
            if not self._interrupts:
                self._done()
                return held
            held.claimed = True  # still busy: told here and now
        self._tell_interrupted(held)
        return None

    def _claim(self, held: _Held) -> bool:
        """Take on the tell of ``held`` unless someone has; busy until :meth:`_told`."""
        with self._lock:
            if held.claimed:
                return False
            held.claimed = True
            self._busy += 1
            return True

    def _told(self, held: _Held, outcome: str | None) -> None:
        """The tell of ``held`` is over: told (``outcome``), or not (``None``: still held)."""
        with self._lock:
            if outcome is not None:
                self._held.pop((held.trial.optimizer, held.trial.number), None)
            self._done()

    def _done(self) -> None:
        self._busy -= 1
        self._lock.notify_all()

    # -- the loop ------------------------------------------------------------------------------

    def work(self) -> None:
        """Run trials until the study, the budget, Ctrl-C or another thread says stop."""
        while self._take():
            try:
                trial = self._ask()
            except _StudyOver:
                self._hold(None)
                self._stop.set()
                return
            except BaseException:
                self._hold(None)
                raise
            held = self._hold(trial)
            if held is None:
                return
            self._run(held)

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
        while not self._interrupts and any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(timeout=0.1)  # short joins: this thread sees Ctrl-C at once
        if not self._interrupts and self._error is not None:
            raise self._error

    def _ask(self) -> RemoteTrial | None:
        """The next trial; ``None`` when told to stop while waiting.

        Raises:
            _StudyOver: the study takes no more trials.
        """
        while True:
            try:
                asked = retrying(
                    lambda: self.client.ask(self.study, lease_seconds=self.lease_seconds),
                    "asking for a trial",
                    first_wait=self.poll_interval,
                    stop=self._stop,
                )
                break
            except Stopped:
                return None
            except HPTError as exc:
                if exc.status_code != 409:
                    raise
                refusal = exc
            try:
                study = retrying(
                    lambda: self.client.get_study(self.study),
                    "reading the study",
                    first_wait=self.poll_interval,
                    stop=self._stop,
                )
            except Stopped:
                return None
            if study["task"] != vocabulary.EXTERNAL_TASK:
                raise refusal
            if study["status"] in FINAL_STATUSES:
                raise _StudyOver(study["status"])
            # Every remaining trial is held by a running one: wait for a tell or an expiry.
            if self._stop.wait(self.poll_interval):
                return None
        return RemoteTrial(
            study=asked["study"],
            optimizer=asked["optimizer"],
            number=asked["number"],
            params=dict(asked["params"]),
            python=asked["python"],
            lease=asked["lease"],
            _client=self.client,
            seed=asked.get("seed"),
            phase=asked.get("phase") or SEARCH_PHASE,
            origin=asked.get("origin"),
            _retry_wait=self.poll_interval,
        )

    def _run(self, held: _Held) -> None:
        trial = held.trial
        with self._lock:
            if held.claimed:  # Ctrl-C came since the ask (n_jobs > 1): told failed already
                return
            # Under the lock: whoever tells the trial on Ctrl-C stops its renewals first.
            held.keeper = _LeaseKeeper(
                trial, self.lease_seconds, interval=self.lease_seconds / RENEWALS_PER_LEASE
            )
            held.keeper.start()
        try:
            try:
                self._in_objective = threading.current_thread() is threading.main_thread()
                value = self.objective(trial)
            finally:
                self._in_objective = False
                held.keeper.stop()
        except BaseException as exc:
            self._warn_about_threads()
            self._end_raised(held, exc)
            return
        self._warn_about_threads()
        self._end_returned(held, value)

    def _end_returned(self, held: _Held, value: Any) -> None:
        trial = held.trial
        if not isinstance(value, int | float) or not math.isfinite(value):
            log.warning("trial %s failed: the objective returned %r, not a finite number",
                        _label(trial), value)  # fmt: skip
            self._tell_own(held, state="failed")
            return
        self._tell_own(held, value=float(value))

    def _end_raised(self, held: _Held, exc: BaseException) -> None:
        trial = held.trial
        if isinstance(exc, KeyboardInterrupt):  # Ctrl-C while the objective trained
            self._interrupts = max(self._interrupts, 1)
            self._stop.set()
            if self._claim(held):
                self._tell_interrupted(held)
            return
        refusal = _service_error(exc, trial)
        if refusal is not None:  # the service's, raised through the objective by report()
            if not self._claim(held):
                return
            self._told(held, "expired")
            with self._lock:
                self.ran += 1
            if not is_transient(refusal):  # 404/409: the trial (or its study) ended meanwhile
                log.warning("trial %s ended meanwhile: %s", _label(trial), refusal.message)
                self._count("expired", None, trial)
                return
            raise refusal  # unreachable for too long: its lease will end it
        pruning = isinstance(exc, TrialPruned | TrialDiverged) or _is_optunas_pruned(exc)
        if pruning and trial.phase != CONFIRM_PHASE:
            self._tell_own(held, state="pruned")
            return
        reason = f"{type(exc).__name__}: {exc}"
        told = self._tell_own(held, state="failed")
        if pruning:
            log.warning("confirmation trial %s failed (confirmation trials are never pruned; the "
                        "service trains its seed again): %s", _label(trial), reason)  # fmt: skip
            return
        if isinstance(exc, self.catch) and isinstance(exc, Exception):
            log.warning("trial %s failed: %s", _label(trial), reason, exc_info=exc)
            return
        if told:
            raise exc

    # -- tells ---------------------------------------------------------------------------------

    def _tell_own(
        self, held: _Held, *, value: float | None = None, state: str | None = None
    ) -> bool:
        """Tell the trial its thread ran; ``False`` when Ctrl-C's handling told it already."""
        if not self._claim(held):
            return False
        outcome = None
        try:
            outcome = self._tell(held.trial, value=value, state=state)
        finally:
            self._told(held, outcome)
        with self._lock:
            self.ran += 1
        self._count(outcome, value, held.trial)
        return True

    def _tell_interrupted(self, held: _Held) -> None:
        """Tell failed a trial that Ctrl-C interrupted (or that it let no one train); quietly:
        the run's last line says how it went."""
        outcome = None
        try:
            outcome = self._tell(held.trial, state="failed", quiet=True)
        except HPTError:
            pass  # still held: the last line says so
        finally:
            self._told(held, outcome)
        if outcome is not None:
            with self._lock:
                self._interrupted.append(_label(held.trial))

    def _tell(
        self,
        trial: RemoteTrial,
        *,
        value: float | None = None,
        state: str | None = None,
        quiet: bool = False,
    ) -> str:
        """Tell ``trial``; returns its outcome: complete, pruned, failed, or expired (the service
        ended it meanwhile: its lease ran out, or its study was deleted).

        Raises:
            HPTError: the server refused, or could not be reached for 5 minutes.
        """
        try:
            retrying(
                lambda: self.client.tell(
                    trial.study,
                    trial.optimizer,
                    trial.number,
                    value=value,
                    state=state,
                    lease=trial.lease,
                ),
                f"telling trial {_label(trial)}",
                first_wait=self.poll_interval,
            )
        except HPTError as exc:
            if exc.status_code not in (404, 409):
                raise
            if not quiet:
                log.warning("trial %s could not be told: %s", _label(trial), exc.message)
            return "expired"
        return state or "complete"

    def _count(self, outcome: str | None, value: float | None, trial: RemoteTrial) -> None:
        with self._lock:
            self.told[outcome or "expired"] += 1
            if self._progress is not None:
                searched = outcome == "complete" and trial.phase == SEARCH_PHASE
                self._progress.advance(1, value if searched else None)

    def _warn_about_threads(self) -> None:
        """Once per run: torch on every core here while the service's workers train here too."""
        if self._threads_warned:
            return
        warning = torch_threads_warning(self.client.base_url, self.n_jobs)
        if warning is not None:
            self._threads_warned = True
            log.warning("%s", warning)


def _label(trial: RemoteTrial) -> str:
    return f"{trial.optimizer}/{trial.number}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _enumerate(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _is_optunas_pruned(exc: BaseException) -> bool:
    """Optuna's TrialPruned, when the objective raised that one (optuna is not imported here)."""
    optuna = sys.modules.get("optuna")
    return optuna is not None and isinstance(exc, optuna.TrialPruned)


def _service_error(exc: BaseException, trial: RemoteTrial) -> HPTError | None:
    """The service's error that ``exc`` is or was raised from, when :meth:`RemoteTrial.report`
    raised it for ``trial`` and it is none of the objective's doing: the trial or its study
    ended meanwhile (404, 409), or the service stayed unreachable."""
    raised = trial._raised
    if raised is None or not (is_transient(raised) or raised.status_code in (404, 409)):
        return None
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if cause is raised:
            return raised
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None
