"""The embedded worker processes of ``hpt serve``: start them, restart the ones that die, stop them.

Workers are separate programs (``python -m service.cli worker``), spawned rather than forked, so no
engine or connection pool of the API process is ever shared with them; they get their settings
through ``HPT_*`` environment variables. A worker that dies is started again after a delay that
doubles while it keeps dying within seconds of starting; after a few such crashes in a row the
supervisor gives up on it and says so loudly (the API keeps serving). A worker that exits with
status 0 was asked to stop (it only does that on SIGTERM/SIGINT) and is left stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

# How often the monitor thread looks for dead workers, and the stop loop for exited ones.
CHECK_INTERVAL = 0.2


def worker_command(*, parent_pid: int | None = None) -> list[str]:
    """The command line of one embedded worker; it exits by itself if ``parent_pid`` dies."""
    command = [sys.executable, "-m", "service.cli", "worker"]
    if parent_pid is not None:
        command += ["--parent-pid", str(parent_pid)]
    return command


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead worker is started again, and when the supervisor gives up on it.

    Args:
        first_delay: Seconds before the first restart.
        max_delay: Longest delay; it doubles with each crash at start in a row.
        crash_window: A worker that dies sooner than this after starting crashed at start.
        max_crashes_at_start: Crashes at start in a row after which the worker is given up.
    """

    first_delay: float = 1.0
    max_delay: float = 30.0
    crash_window: float = 10.0
    max_crashes_at_start: int = 5

    def delay(self, crashes_at_start: int) -> float:
        """Seconds to wait before restarting a worker that crashed at start that often in a row."""
        return min(self.first_delay * 2 ** max(crashes_at_start - 1, 0), self.max_delay)


@dataclass
class ManagedWorker:
    """One worker position of the supervisor and the process currently filling it."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    starts: int = 0
    crashes_at_start: int = 0
    restart_at: float | None = None
    given_up: bool = False
    stopped: bool = False


class WorkerSupervisor:
    """Keeps ``count`` worker processes running until :meth:`stop`.

    Args:
        count: Number of worker processes.
        command: The command line of one worker.
        env: Environment of the workers (their ``HPT_*`` settings).
        policy: Restart delays and when to give up.
        clock: Monotonic clock (tests pass a fake one).
    """

    def __init__(
        self,
        count: int,
        *,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.command = list(command)
        self.env = dict(os.environ if env is None else env)
        self.policy = policy or RestartPolicy()
        self.clock = clock
        self.workers = [ManagedWorker(index=i + 1) for i in range(count)]
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._kill_now = threading.Event()
        self._monitor: threading.Thread | None = None

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers running now."""
        with self._lock:
            return [w.process.pid for w in self.workers if w.process and w.process.poll() is None]

    def start(self) -> None:
        """Start every worker, and a thread that restarts the ones that die."""
        with self._lock:
            for worker in self.workers:
                self._spawn(worker)
        self._monitor = threading.Thread(target=self._watch, name="hpt-supervisor", daemon=True)
        self._monitor.start()

    def check(self) -> None:
        """One pass: notice workers that died, restart those whose delay is over."""
        with self._lock:
            if self._stopping.is_set():
                return
            now = self.clock()
            for worker in self.workers:
                if worker.process is not None and worker.process.poll() is not None:
                    self._on_exit(worker, worker.process.returncode, now)
                if worker.restart_at is not None and now >= worker.restart_at:
                    self._spawn(worker)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every worker (each finishes its running trial), wait up to ``timeout`` seconds,
        then SIGKILL the ones still running. Call :meth:`kill_now` to cut the wait short."""
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join()
        with self._lock:
            running = [w.process for w in self.workers if w.process and w.process.poll() is None]
        if not running:
            return
        log.info("stopping %d worker(s); each finishes its running trial first", len(running))
        for process in running:
            _signal(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in running) and time.monotonic() < deadline:
            if self._kill_now.wait(CHECK_INTERVAL):
                break
        leftovers = [p for p in running if p.poll() is None]
        if leftovers:
            log.warning(
                "killing %d worker(s) still running; their trials are failed after the "
                "heartbeat grace period and their slots given back",
                len(leftovers),
            )
        for process in leftovers:
            _signal(process, signal.SIGKILL)
        for process in running:
            process.wait()

    def kill_now(self) -> None:
        """Stop waiting for workers to finish their trials: :meth:`stop` kills them at once."""
        self._kill_now.set()

    def _watch(self) -> None:
        while not self._stopping.wait(CHECK_INTERVAL):
            try:
                self.check()
            except Exception:  # the monitor must survive anything, or dead workers stay dead
                log.exception("worker supervisor: check failed")

    def _spawn(self, worker: ManagedWorker) -> None:
        worker.restart_at = None
        worker.started_at = self.clock()
        try:
            worker.process = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL)
        except OSError as exc:
            worker.process = None
            self._on_exit(worker, f"could not start: {exc}", self.clock())
            return
        worker.starts += 1
        verb = "started" if worker.starts == 1 else "restarted"
        log.info("worker %d %s (pid %d)", worker.index, verb, worker.process.pid)

    def _on_exit(self, worker: ManagedWorker, returncode: int | str, now: float) -> None:
        worker.process = None
        if returncode == 0:
            worker.stopped = True
            log.info("worker %d exited when asked to stop; not restarting it", worker.index)
            return
        how = _describe_exit(returncode)
        if now - worker.started_at < self.policy.crash_window:
            worker.crashes_at_start += 1
        else:
            worker.crashes_at_start = 0
        if worker.crashes_at_start >= self.policy.max_crashes_at_start:
            worker.given_up = True
            log.error(
                "GIVING UP on worker %d: it %s within %.0f s of starting %d times in a row. "
                "Its error is in the log above; fix it and restart `hpt serve`. %s",
                worker.index,
                how,
                self.policy.crash_window,
                worker.crashes_at_start,
                self._still_running_note(),
            )
            return
        delay = self.policy.delay(worker.crashes_at_start)
        worker.restart_at = now + delay
        log.warning("worker %d %s; restarting it in %.0f s", worker.index, how, delay)

    def _still_running_note(self) -> str:
        alive = sum(1 for w in self.workers if not w.given_up and not w.stopped)
        if alive:
            return f"{alive} other worker(s) keep running."
        return "NO WORKER IS LEFT: the API keeps serving, but no trial will run."


def _describe_exit(returncode: int | str) -> str:
    if isinstance(returncode, str):
        return returncode
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _signal(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
        process.send_signal(signum)
