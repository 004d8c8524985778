"""The processes the benchmarks start: a free port, a process with its log, its stop, a wait with
a deadline, and the API server (uvicorn, no embedded workers) with a client to it.

Not a benchmark itself (``make bench`` skips ``bench/_*.py``); the scripts import it as
``_processes`` (Python puts a script's own folder first on its path).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
API_START_TIMEOUT = 120.0  # seconds; a loaded 2-core machine imports torch and optuna slowly


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(argv: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``argv`` in its own process group (so ``stop`` reaches its children), output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM to the process group (a running trial finishes), SIGKILL if it outlasts
    ``timeout``."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    *,
    retry_on: tuple[type[BaseException], ...] = (httpx.HTTPError,),
) -> None:
    """Poll ``predicate`` until it is true; an error in ``retry_on`` counts as "not yet".

    Raises:
        TimeoutError: ``timeout`` seconds passed first.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except retry_on:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


@contextmanager
def api_server(
    env: Mapping[str, str], log: Path, *, client_timeout: float = 120.0
) -> Iterator[httpx.Client]:
    """The service's API (``uvicorn service.app:create_app``) on a free port with ``env`` (set
    ``HPT_DATABASE_URL``; ``HPT_WORKERS`` is 0 unless ``env`` says otherwise), up and answering
    /healthz; a client to it. Stopped at the end.

    Raises:
        RuntimeError: the server exited before it answered (see ``log``).
        TimeoutError: it did not answer within ``API_START_TIMEOUT`` seconds.
    """
    port = free_port()
    env = {"HPT_WORKERS": "0", "PYTHONPATH": str(ROOT), **env}
    argv = [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory"]
    api = start([*argv, "--port", str(port), "--no-access-log"], env, log)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=client_timeout) as client:

            def up() -> bool:
                if api.poll() is not None:
                    raise RuntimeError(f"the API exited with {api.returncode}; see {log}")
                return client.get("/healthz").status_code == 200

            wait_for(up, API_START_TIMEOUT, f"the API to answer /healthz (log: {log})")
            yield client
    finally:
        stop(api)
