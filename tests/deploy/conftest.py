"""Fixtures of the deployment tests: local processes that stand in for the compose services.

Each process leads its own process group and logs to a file in the test's directory; a failing
test's report carries the tail of every log, and every process is killed when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

LOG_TAIL_LINES = 120
POLL_INTERVAL = 0.25

T = TypeVar("T")


@dataclass
class LocalProcess:
    name: str
    args: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def describe(self) -> str:
        command = " ".join(self.args)
        return f"{self.name} (pid {self.popen.pid}, exit {self.popen.poll()}): {command}"

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``grace`` seconds."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; what it started may not be.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            return


@dataclass
class LocalProcesses:
    directory: Path
    started: list[LocalProcess] = field(default_factory=list)

    def start(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> LocalProcess:
        log_path = self.directory / f"{len(self.started):02d}-{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                list(args),
                env=dict(env),
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = LocalProcess(name, list(args), popen, log_path)
        self.started.append(process)
        return process

    def check_alive(self) -> None:
        """Fail with the log of the first process that died."""
        for process in self.started:
            if not process.alive():
                raise AssertionError(f"{process.describe()} died:\n{process.tail()}")

    def wait_until(
        self, predicate: Callable[[], T], timeout: float, *, message: str | Callable[[], str]
    ) -> T:
        """Poll ``predicate`` until it returns something truthy, and return that.

        Fails at once when one of the processes dies or the predicate fails an assertion (both
        final); other exceptions (a server still starting) are retried until ``timeout``.
        """
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                last = predicate()
            except AssertionError:
                raise
            except Exception as exc:
                last = exc
            else:
                if last:
                    return last  # type: ignore[return-value]
            time.sleep(POLL_INTERVAL)
        self.check_alive()
        what = message() if callable(message) else message
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")

    def stop_all(self) -> None:
        for process in self.started:
            if process.alive():
                os.killpg(process.popen.pid, signal.SIGTERM)
        for process in self.started:
            process.stop()


_PROCESSES = pytest.StashKey[LocalProcesses]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    processes = item.stash.get(_PROCESSES, None)
    if report.failed and processes is not None:
        for process in processes.started:
            report.sections.append((f"log of {process.describe()}", process.tail() or "(empty)"))
    return report


@pytest.fixture
def local_processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalProcesses]:
    directory = tmp_path / "processes"
    directory.mkdir()
    processes = LocalProcesses(directory)
    request.node.stash[_PROCESSES] = processes
    try:
        yield processes
    finally:
        processes.stop_all()


def clean_environment() -> dict[str, str]:
    """This process's environment without any ``HPT_*`` setting: the test decides those."""
    return {key: value for key, value in os.environ.items() if not key.startswith("HPT_")}
