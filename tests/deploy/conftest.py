"""Fixtures of the deployment tests: local processes that stand in for the compose services.

Each process leads its own process group and logs to a file in the test's directory; a failing
test's report carries the tail of every log, and every process is killed when the test ends.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.processes import PROCESSES_KEY, Processes, ServiceProcess

POLL_INTERVAL = 0.25

T = TypeVar("T")


# The deployment tests' names for the shared process classes of tests/processes.py.
LocalProcess = ServiceProcess


class LocalProcesses(Processes):
    """``Processes`` (each ``start`` passes the process's whole environment), with waits that
    watch every process and a graceful ``stop_all``."""

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


@pytest.fixture
def local_processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalProcesses]:
    directory = tmp_path / "processes"
    directory.mkdir()
    processes = LocalProcesses(directory)
    request.node.stash[PROCESSES_KEY] = processes  # its logs go in a failing report
    try:
        yield processes
    finally:
        processes.stop_all()


def clean_environment() -> dict[str, str]:
    """This process's environment without any ``HPT_*`` setting: the test decides those."""
    return {key: value for key, value in os.environ.items() if not key.startswith("HPT_")}
