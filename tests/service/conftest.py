"""Fixtures of the service tests: the service's engine, and real API / worker processes.

Processes are started through ``processes`` (or the ``start_server`` / ``start_worker`` factories
built on it). Each one writes stdout and stderr to a log file in the test's directory; when a test
fails, the tail of every log is attached to its report, and every process still alive is killed
when the test ends, whatever happened.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from service.store.database import Database
from tests.helpers import free_port, wait_until
from tests.processes import PROCESSES_KEY
from tests.service.support import Processes, Server, ServiceProcess

SERVER_START_TIMEOUT = 60.0

# Settings every spawned process gets unless a test overrides them: quick polling, a short
# heartbeat and grace period, and one torch thread (2 cores, several processes).
FAST_ENV = {
    "HPT_POLL_INTERVAL": "0.2",
    "HPT_HEARTBEAT_INTERVAL": "1",
    "HPT_GRACE_PERIOD": "5",
    "HPT_LOG_LEVEL": "info",
    "PYTHONUNBUFFERED": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


# --------------------------------------------------------------------------- database


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """The service's database on a fresh database, its schema up to date (``database_url`` is a
    copy of a database the migrations built)."""
    db = Database.connect(database_url)
    yield db
    db.dispose()


@pytest.fixture
def engine(db: Database) -> Engine:
    """The service's write engine on a fresh database, its schema up to date."""
    return db.writer


# --------------------------------------------------------------------------- processes


def _test_environment() -> dict[str, str]:
    # The tests decide every HPT_* setting; nothing leaks in from the shell that runs them.
    env = {key: value for key, value in os.environ.items() if not key.startswith("HPT_")}
    env.update(FAST_ENV)
    return env


@pytest.fixture
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Processes]:
    """Starts processes for the test; SIGKILLs every one still running when it ends."""
    directory = tmp_path / "processes"
    directory.mkdir()
    group = Processes(directory=directory, base_env=_test_environment())
    request.node.stash[PROCESSES_KEY] = group  # its logs go in a failing report
    try:
        yield group
    finally:
        group.kill_all()


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]


def hpt_command(*args: str) -> list[str]:
    """``hpt ...`` as a user runs it: the console script of this virtualenv."""
    script = Path(sys.executable).with_name("hpt")
    if script.exists():
        return [str(script), *args]
    return python_command("-m", "service.cli", *args)


@pytest.fixture
def start_server(processes: Processes) -> Iterator[Callable[..., Server]]:
    """``start_server(database_url, api_key=None, **env)``: a real uvicorn server of the API on a
    free port, answering /healthz when it returns."""
    probes: list[httpx.Client] = []

    def start(database_url: str, *, api_key: str | None = None, **env: str) -> Server:
        port = free_port()
        settings = {"HPT_DATABASE_URL": database_url, "HPT_WORKERS": "0", **env}
        if api_key is not None:
            settings["HPT_API_KEY"] = api_key
        command = python_command(
            "-m",
            "uvicorn",
            "service.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",  # the tests poll; errors are logged with their traceback anyway
        )
        process = processes.start("api", command, settings)
        server = Server(
            process=process,
            base_url=f"http://127.0.0.1:{port}",
            database_url=database_url,
            api_key=api_key,
        )
        probe = httpx.Client(base_url=server.base_url, timeout=5.0)
        probes.append(probe)

        def healthy() -> bool:
            if not process.alive():
                raise AssertionError(
                    f"the API exited with {process.popen.poll()} before it answered:\n"
                    f"{process.tail()}"
                )
            return probe.get("/healthz").status_code == 200

        wait_until(healthy, SERVER_START_TIMEOUT, 0.2, message="the API to answer /healthz")
        return server

    yield start
    for probe in probes:
        probe.close()


@pytest.fixture
def start_worker(processes: Processes) -> Callable[..., ServiceProcess]:
    """``start_worker(database_url, *args, **env)``: a real ``hpt worker`` process."""
    started = 0

    def start(database_url: str, *args: str, **env: str) -> ServiceProcess:
        nonlocal started
        started += 1
        return processes.start(
            f"worker{started}",
            hpt_command("worker", *args),
            {"HPT_DATABASE_URL": database_url, **env},
        )

    return start
