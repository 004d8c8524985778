"""The worker: claim a trial slot, train it through ``studies``, record the outcome, repeat.

A worker is one process with one torch thread; run one per core. Any number of workers on any
number of machines may share one database: slots are claimed atomically
(:mod:`service.trials.lifecycle`), the worker beats each running slot's heartbeat, and every worker
runs
recovery (:mod:`service.trials.recovery`) for holders that went silent. SIGTERM (or SIGINT) lets the
running trial finish, then the worker exits.

A trial is told to Optuna first and recorded on its slot second: a worker that dies between the
two leaves a slot that recovery finishes from Optuna's record. Every Optuna write of a trial is
checked against its slot (:mod:`service.trials.guard`), so a worker whose slot was taken back (it
was frozen too long, its study was deleted) writes nothing more.

The database may go away for a while: every database call of the loop is retried with backoff,
logged once per outage; the worker stays up and picks up where it was.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import TypeVar

import optuna
import sqlalchemy as sa
import torch
from optuna.trial import TrialState

from optim_core.registry import get_optimizer
from optim_core.spaces import space_from_json
from service.config import Settings
from service.store import optuna_bridge
from service.store.database import Database, db_now, is_outage, make_optuna_storage
from service.store.migrate import upgrade_database
from service.store.tables import WorkerRow
from service.studies.admin import purge_deleting_studies
from service.trials import protocol
from service.trials.guard import SlotGuard, SlotTakenBack
from service.trials.lifecycle import Claim, Ending, beat, claim_slot
from service.trials.recovery import forget_dead_workers, recover
from service.vocabulary import ConfigOrigin, SlotOutcome, TrialPhase
from studies.devices import resolve_device
from studies.objective import TrialPlan, make_objective
from studies.samplers import make_pruner, make_sampler, slot_sampler_seed
from studies.tasks import Task, get_task

log = logging.getLogger(__name__)

T = TypeVar("T")

# Backoff while the database is unreachable: first wait, and the longest.
OUTAGE_FIRST_WAIT = 0.5
OUTAGE_MAX_WAIT = 5.0


class Stopping(RuntimeError):
    """The worker was asked to stop while waiting for the database."""


def warm_up_torch() -> None:
    """Pay torch's one-time costs before the first trial is claimed.

    The first optimizer built in a process imports ``torch._dynamo`` (seconds), because
    ``torch.optim.Optimizer`` methods are wrapped to disable it. A registered worker is a ready one.
    """
    weight = torch.zeros(1, requires_grad=True)
    weight.grad = torch.zeros(1)
    get_optimizer("sgd").build([weight], {"lr": 0.1}).step()


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class OutageWatch:
    """Retries database calls through an outage, saying so once per outage."""

    name: str
    stop_event: threading.Event
    connected_since: float = field(default_factory=time.monotonic)
    down_since: float | None = None

    def call(self, what: str, fn: Callable[[], T], *, give_up_on_stop: bool = True) -> T:
        """``fn()``, retried with backoff while the database is unreachable.

        Raises:
            Stopping: the worker was asked to stop while the database was unreachable.
        """
        wait = OUTAGE_FIRST_WAIT
        while True:
            try:
                result = fn()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    log.warning(
                        "%s: the database is unreachable (%s: %s); retrying until it is back",
                        self.name,
                        what,
                        str(exc).splitlines()[0][:200],
                    )
                if give_up_on_stop and self.stop_event.is_set():
                    raise Stopping(what) from exc
                time.sleep(wait)
                wait = min(wait * 2, OUTAGE_MAX_WAIT)
                continue
            if self.down_since is not None:
                log.warning(
                    "%s: the database is reachable again after %.0f s",
                    self.name,
                    time.monotonic() - self.down_since,
                )
                self.down_since = None
                self.connected_since = time.monotonic()
            return result

    def connected_for(self) -> float:
        return 0.0 if self.down_since is not None else time.monotonic() - self.connected_since


@dataclass
class Worker:
    """One worker process's loop. Build it in the process that runs it (engines are per process).

    Args:
        settings: Database URL, heartbeat and limits.
        exit_when_idle: Return as soon as no slot is free (for scripts and benchmarks).
        max_trials: Return after this many trials (``None``: no limit).
    """

    settings: Settings
    exit_when_idle: bool = False
    max_trials: int | None = None
    worker_id: str = field(default_factory=new_worker_id)
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.db = Database.connect(self.settings.database_url)
        self.outage = OutageWatch(f"worker {self.worker_id}", self.stop_event)
        self.device = resolve_device(self.settings.device)
        self._storage: optuna.storages.RDBStorage | None = None
        self._guard: SlotGuard | None = None
        self.trials_done = 0
        self._current: Claim | None = None
        # One instance per task name: a task caches its loaded data, so later trials skip the load.
        self._tasks: dict[str, Task] = {}

    @property
    def storage(self) -> optuna.storages.RDBStorage:
        """Optuna's storage, opened on first use (waiting out an outage at start)."""
        if self._storage is None:
            self._storage = self.outage.call(
                "open Optuna's storage", lambda: make_optuna_storage(self.settings.database_url)
            )
        return self._storage

    @property
    def guard(self) -> SlotGuard:
        """Checks every Optuna write of a trial against its slot (:mod:`service.trials.guard`)."""
        if self._guard is None:
            self._guard = SlotGuard.install(self.storage.engine)
        return self._guard

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT: finish the running trial, then stop."""

        def request_stop(signum: int, frame: FrameType | None) -> None:
            log.info(
                "worker %s: %s received, stopping after this trial",
                self.worker_id,
                signal.Signals(signum).name,
            )
            self.stop_event.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def run(self) -> int:
        """Work until stopped (or idle / out of trials, when asked to). Returns trials run."""
        torch.set_num_threads(1)
        warm_up_torch()
        beat_thread = threading.Thread(target=self._beat, name="hpt-worker-heartbeat", daemon=True)
        try:
            self.outage.call("upgrade the schema", lambda: upgrade_database(self.db))
            self.outage.call("register", self._register)
            beat_thread.start()
            log.info(
                "worker %s started on %s", self.worker_id, _safe_url(self.settings.database_url)
            )
            self._loop()
        except Stopping:
            log.warning("worker %s: stopping while the database is unreachable", self.worker_id)
        finally:
            self.stop_event.set()
            if beat_thread.is_alive():
                beat_thread.join(timeout=5)
            self._unregister()
            self.db.dispose()
            if self._storage is not None:
                self._storage.engine.dispose()
        log.info("worker %s stopped after %d trials", self.worker_id, self.trials_done)
        return self.trials_done

    def _loop(self) -> None:
        last_recovery = -float("inf")
        while not self.stop_event.is_set():
            if self.max_trials is not None and self.trials_done >= self.max_trials:
                return
            if time.monotonic() - last_recovery > self.settings.grace_period:
                self._recover()
                last_recovery = time.monotonic()
            claim = self.outage.call(
                "claim a slot", lambda: claim_slot(self.db, holder=self.worker_id)
            )
            if claim is None:
                if self.exit_when_idle:
                    return
                self.stop_event.wait(self.settings.poll_interval)
                continue
            self.run_claim(claim)
            self.trials_done += 1

    def run_claim(self, claim: Claim) -> None:
        """Run the trial of a claimed slot and record how it ended. Never raises for a trial."""
        self._current = claim
        try:
            with self.guard.holding(claim.slot_id, claim.claim_token):
                ending = self._train(claim)
        except SlotTakenBack as exc:
            log.warning("worker %s: %s", self.worker_id, exc)
            return
        except Stopping:
            raise
        except Exception as exc:  # the study could not even be loaded: give the slot back
            log.exception("worker %s: slot %s could not run", self.worker_id, claim.slot_id)
            ending = Ending(SlotOutcome.FAILED, reason=f"{type(exc).__name__}: {exc}")
        finally:
            self._current = None
        self._record(claim, ending)

    def _train(self, claim: Claim) -> Ending:
        plan = self._plan(claim)
        study = self.outage.call("load the study", lambda: self._load_study(claim, plan))
        fixed = optuna_bridge.fixed_params(plan.space, claim.params) if claim.params else None
        trial = protocol.start(
            self.db,
            study,
            claim,
            attrs=self._trial_attrs(claim),
            fixed=fixed,
            call=self.outage.call,
        )
        outage_during_trial = False
        try:
            value: float | None = make_objective(plan)(trial)
            state = TrialState.COMPLETE
        except optuna.TrialPruned:
            value, state = None, TrialState.PRUNED
        except SlotTakenBack:
            raise
        except Exception as exc:
            outage_during_trial = is_outage(exc)
            log.warning("worker %s: trial %s failed: %s", self.worker_id, trial.number, exc)
            value, state = None, TrialState.FAIL
        frozen = self.outage.call(
            "tell Optuna",
            lambda: self._tell(optuna_bridge.trial_id(trial), state, value),
            give_up_on_stop=False,
        )
        # The database went away under the trial: not the config's fault.
        failed = SlotOutcome.LOST if outage_during_trial else SlotOutcome.FAILED
        return protocol.ending_of(frozen, failed=failed)

    def _trial_attrs(self, claim: Claim) -> dict[str, object]:
        attrs: dict[str, object] = {
            "worker": self.worker_id,
            "phase": str(TrialPhase.of(claim.origin)),  # labels the re-runs in the dashboard
        }
        if claim.confirm_of is not None:
            attrs["confirm_of_slot"] = claim.confirm_of  # labels it in the dashboard
        if claim.source is not None:
            attrs["origin_source"] = claim.source  # an earlier study, or the shipped portfolio
        return attrs

    def _tell(
        self, trial_id: int, state: TrialState, value: float | None
    ) -> optuna.trial.FrozenTrial:
        try:
            return protocol.tell(self.storage, trial_id, state, value)
        except protocol.EndedOtherwise as exc:
            # Failed by recovery, which took the slot over while this worker was silent.
            raise SlotTakenBack(f"trial {exc.trial.number} was failed by recovery") from None

    def _record(self, claim: Claim, ending: Ending) -> None:
        # A trial lost to an outage is not the config's fault: it never fails the study.
        max_failed = None if ending.outcome == SlotOutcome.LOST else self.settings.max_failed_trials
        self.outage.call(
            "record how the trial ended",
            lambda: protocol.end_as(
                self.db,
                claim.slot_id,
                ending,
                token=claim.claim_token,
                max_failed_trials=max_failed,
            ),
            give_up_on_stop=False,
        )

    def _task(self, name: str) -> Task:
        if name not in self._tasks:
            self._tasks[name] = get_task(name)
        return self._tasks[name]

    def _plan(self, claim: Claim) -> TrialPlan:
        task = self._task(claim.task)
        spec = get_optimizer(claim.optimizer)
        return TrialPlan(
            task=task,
            optimizer=spec,
            space=space_from_json(claim.search_space, spec.domains),
            epochs=claim.epochs or task.default_epochs,
            metric=claim.metric,
            seed=claim.seed or 0,
            time_limit=self.settings.trial_time_limit,
            device=self.device,
        )

    def _load_study(self, claim: Claim, plan: TrialPlan) -> optuna.Study:
        seed = slot_sampler_seed(claim.seed, claim.optimizer, claim.ordinal, sampler=claim.sampler)
        return optuna_bridge.load_study(
            self.storage,
            claim.optuna_study_name,
            sampler=make_sampler(claim.sampler, seed=seed, space=plan.space),
            # A confirmation trial runs every epoch: its seeds are what the verdict compares.
            pruner=make_pruner(
                "none" if claim.origin == ConfigOrigin.CONFIRM else claim.pruner,
                epochs=plan.epochs,
            ),
        )

    def _recover(self) -> None:
        # Right after an outage every holder looks silent: let them beat again first.
        if self.outage.connected_for() < self.settings.grace_period:
            return
        try:
            done = recover(
                self.db,
                self.storage,
                grace_period=self.settings.grace_period,
                max_failed_trials=self.settings.max_failed_trials,
            )
            forget_dead_workers(self.db, grace_period=self.settings.grace_period)
            purge_deleting_studies(self.db, self.storage)
        except Exception as exc:
            if not is_outage(exc):
                log.exception("worker %s: recovery failed", self.worker_id)
            return
        if done:
            log.warning("worker %s recovered: %s", self.worker_id, done)

    def _register(self) -> None:
        with self.db.write() as session:
            session.merge(
                WorkerRow(
                    id=self.worker_id,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=db_now(),
                    last_seen_at=db_now(),
                    trials_done=0,
                )
            )

    def _unregister(self) -> None:
        try:
            with self.db.write() as session:
                session.execute(sa.delete(WorkerRow).where(WorkerRow.id == self.worker_id))
        except sa.exc.SQLAlchemyError:
            log.warning("worker %s could not unregister", self.worker_id)

    def _beat(self) -> None:
        # Liveness of the worker (ETA, /metrics) and of its running slot (recovery).
        while not self.stop_event.wait(self.settings.heartbeat_interval):
            current = self._current
            try:
                with self.db.write() as session:
                    session.execute(
                        sa.update(WorkerRow)
                        .where(WorkerRow.id == self.worker_id)
                        .values(last_seen_at=db_now(), trials_done=self.trials_done)
                    )
                if (
                    current is not None
                    and not beat(self.db, current.slot_id, current.claim_token)
                    and self._current is current  # not just finished by this worker meanwhile
                ):
                    log.warning(
                        "worker %s: slot %s was taken back; its trial stops at its next write",
                        self.worker_id,
                        current.slot_id,
                    )
            except sa.exc.SQLAlchemyError as exc:
                if not is_outage(exc):
                    log.warning("worker %s: heartbeat failed", self.worker_id, exc_info=True)


def _safe_url(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def run_worker(
    settings: Settings, *, exit_when_idle: bool = False, max_trials: int | None = None
) -> int:
    """Run one worker in this process until SIGTERM/SIGINT. Returns the number of trials run."""
    worker = Worker(settings, exit_when_idle=exit_when_idle, max_trials=max_trials)
    worker.install_signal_handlers()
    return worker.run()
