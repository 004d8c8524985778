"""Real processes a test starts: each leads its own session and process group, logs to a file in
the test's directory, and is killed when the test ends.

A fixture that hands out a ``Processes`` stores it in the test's stash under ``PROCESSES_KEY``;
the report hook of ``tests/conftest.py`` then attaches the tail of every log to a failing test's
report.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

LOG_TAIL_LINES = 150


@dataclass
class ServiceProcess:
    """One process the test started, with its log file."""

    name: str
    args: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        """The exit code, waiting up to ``timeout`` seconds; fails with the log if it hangs."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} (pid {self.pid}) still running after {timeout:.0f}s; "
                f"its log:\n{self.tail()}"
            ) from None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def describe(self) -> str:
        command = " ".join(self.args)
        return f"{self.name} (pid {self.pid}, exit {self.popen.poll()}): {command}"

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``grace`` seconds."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            try:
                self.popen.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; what it started may not be.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            return

    def kill(self) -> None:
        """SIGKILL the process and anything it started (it leads its own session and group)."""
        if self.popen.poll() is None:
            # Not reaped yet, so its pid, which names the group, cannot have been reused.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        else:
            # Reaped: its pid may belong to someone else by now; only its session's members
            # (processes it started: their pid differs from the session id) are still ours.
            for member in _session_members(self.pid):
                if member != self.pid:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(member, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


def _session_members(session_id: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == session_id:
            members.append(int(entry.name))
    return members


@dataclass
class Processes:
    """The processes of one test. ``start`` runs a command with ``base_env`` updated by ``env``."""

    directory: Path
    base_env: dict[str, str] = field(default_factory=dict)
    started: list[ServiceProcess] = field(default_factory=list)

    def start(
        self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> ServiceProcess:
        environment = {**self.base_env, **(env or {})}
        log_path = self.directory / f"{len(self.started):02d}-{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                list(args),
                env=environment,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = ServiceProcess(name=name, args=list(args), popen=popen, log_path=log_path)
        self.started.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.started:
            process.kill()


# Where a fixture leaves the test's ``Processes`` for the report hook of tests/conftest.py.
PROCESSES_KEY = pytest.StashKey[Processes]()
