"""The worker: claim a trial slot, train it through ``studies``, record the outcome, repeat.

A worker is one process with one torch thread; run one per core. Any number of workers on any
number of machines may share one database: slots are claimed atomically (:mod:`service.slots`),
each running trial sends Optuna heartbeats, and every worker gives back the slots of workers whose
heartbeats stopped. SIGTERM (or SIGINT) lets the running trial finish, then the worker exits.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from types import FrameType

import optuna
import sqlalchemy as sa
import torch
from optuna.trial import TrialState
from sqlalchemy.engine import Engine

from optim_core.registry import get_optimizer
from optim_core.spaces import space_from_json
from service.config import Settings
from service.db import (
    WorkerRow,
    create_tables,
    make_engine,
    make_optuna_storage,
    session_scope,
    utcnow,
)
from service.slots import (
    ClaimedSlot,
    claim_trial_slot,
    finish_slot,
    mark_slot_running,
    reclaim_lost_slots,
    release_slot,
)
from studies.objective import TrialPlan, make_objective
from studies.samplers import make_pruner, make_sampler, slot_sampler_seed
from studies.tasks import Task, get_task

log = logging.getLogger(__name__)


class SlotTakenBack(RuntimeError):
    """The slot was given back (the worker looked dead) before its trial started."""


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
        self.engine: Engine = make_engine(self.settings.database_url)
        create_tables(self.engine)
        self.storage = make_optuna_storage(
            self.settings.database_url,
            heartbeat_interval=self.settings.heartbeat_interval,
            grace_period=self.settings.grace_period,
        )
        self.trials_done = 0
        # One instance per task name: a task caches its loaded data, so later trials skip the load.
        self._tasks: dict[str, Task] = {}

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
        self._register()
        beat = threading.Thread(target=self._beat, name="hpt-worker-heartbeat", daemon=True)
        beat.start()
        log.info("worker %s started on %s", self.worker_id, _safe_url(self.settings.database_url))
        last_reap = time.monotonic()
        try:
            while not self.stop_event.is_set():
                if self.max_trials is not None and self.trials_done >= self.max_trials:
                    break
                if time.monotonic() - last_reap > self.settings.grace_period:
                    self._reap()
                    last_reap = time.monotonic()
                slot = claim_trial_slot(self.engine, holder=self.worker_id)
                if slot is None:
                    self._reap()
                    last_reap = time.monotonic()
                    slot = claim_trial_slot(self.engine, holder=self.worker_id)
                if slot is None:
                    if self.exit_when_idle:
                        break
                    self.stop_event.wait(self.settings.poll_interval)
                    continue
                self.run_slot(slot)
                self.trials_done += 1
        finally:
            self.stop_event.set()
            beat.join(timeout=5)
            self._unregister()
            self.engine.dispose()
            self.storage.engine.dispose()
        log.info("worker %s stopped after %d trials", self.worker_id, self.trials_done)
        return self.trials_done

    def run_slot(self, slot: ClaimedSlot) -> None:
        """Run the trial of a claimed slot and record how it ended. Never raises for a trial."""
        trial_ids: list[int] = []
        try:
            plan = self._plan(slot)
            study = self._load_study(slot, plan)
            objective = make_objective(plan)

            def run_trial(trial: optuna.Trial) -> float:
                # Optuna's heartbeat thread records its first beat concurrently; a running slot
                # must already have one, or a death right now would leave a trial never stale.
                self.storage.record_heartbeat(trial._trial_id)
                if not mark_slot_running(
                    self.engine, slot.slot_id, trial_id=trial._trial_id, trial_number=trial.number
                ):
                    raise SlotTakenBack(f"slot {slot.slot_id} was given back before it started")
                trial_ids.append(trial._trial_id)
                trial.set_user_attr("worker", self.worker_id)
                return objective(trial)

            study.optimize(run_trial, n_trials=1, catch=(Exception,), gc_after_trial=False)
        except Exception as exc:  # a study that cannot even be loaded: give the slot back
            log.exception("worker %s: slot %s could not run", self.worker_id, slot.slot_id)
            self._end_slot(slot, None, reason=f"{type(exc).__name__}: {exc}")
            return
        self._end_slot(slot, trial_ids[0] if trial_ids else None, reason="the trial raised")

    def _end_slot(self, slot: ClaimedSlot, trial_id: int | None, *, reason: str) -> None:
        trial = self.storage.get_trial(trial_id) if trial_id is not None else None
        if trial is not None and trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            finish_slot(self.engine, slot.slot_id)
            return
        if trial is not None:
            reason = str(trial.user_attrs.get("error", reason))
        release_slot(
            self.engine,
            slot.slot_id,
            reason=reason,
            max_failed_trials=self.settings.max_failed_trials,
        )

    def _task(self, name: str) -> Task:
        if name not in self._tasks:
            self._tasks[name] = get_task(name)
        return self._tasks[name]

    def _plan(self, slot: ClaimedSlot) -> TrialPlan:
        task = self._task(slot.task)
        spec = get_optimizer(slot.optimizer)
        return TrialPlan(
            task=task,
            optimizer=spec,
            space=space_from_json(slot.search_space, spec.domains),
            epochs=slot.epochs or task.default_epochs,
            metric=slot.metric,
            seed=slot.seed or 0,
            time_limit=self.settings.trial_time_limit,
        )

    def _load_study(self, slot: ClaimedSlot, plan: TrialPlan) -> optuna.Study:
        seed = slot_sampler_seed(slot.seed, slot.optimizer, slot.ordinal)
        return optuna.load_study(
            study_name=slot.optuna_study_name,
            storage=self.storage,
            sampler=make_sampler(slot.sampler, seed=seed, space=plan.space),
            pruner=make_pruner(slot.pruner, epochs=plan.epochs),
        )

    def _reap(self) -> None:
        try:
            reclaimed = reclaim_lost_slots(
                self.engine,
                self.storage,
                grace_period=self.settings.grace_period,
                max_failed_trials=self.settings.max_failed_trials,
            )
        except sa.exc.SQLAlchemyError:
            log.exception("worker %s: looking for lost slots failed", self.worker_id)
            return
        if reclaimed:
            log.warning("worker %s gave back %d slot(s) of dead workers", self.worker_id, reclaimed)

    def _register(self) -> None:
        with session_scope(self.engine) as session:
            session.merge(WorkerRow(id=self.worker_id, host=socket.gethostname(), pid=os.getpid()))

    def _unregister(self) -> None:
        try:
            with session_scope(self.engine) as session:
                session.execute(sa.delete(WorkerRow).where(WorkerRow.id == self.worker_id))
        except sa.exc.SQLAlchemyError:
            log.warning("worker %s could not unregister", self.worker_id)

    def _beat(self) -> None:
        # Liveness for the ETA and /metrics; trials have Optuna's own heartbeat besides.
        while not self.stop_event.wait(self.settings.heartbeat_interval):
            try:
                with session_scope(self.engine) as session:
                    session.execute(
                        sa.update(WorkerRow)
                        .where(WorkerRow.id == self.worker_id)
                        .values(last_seen_at=utcnow(), trials_done=self.trials_done)
                    )
            except sa.exc.SQLAlchemyError:
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
