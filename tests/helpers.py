"""Small helpers shared by the tests: polling with a deadline, free ports."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.1,
    *,
    message: str | Callable[[], str] = "",
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Other exceptions of ``predicate`` count as "not yet" (a server still starting, a row not
    written yet); an ``AssertionError`` from it gives up at once (a process it watches died).
    Raises ``AssertionError`` when ``timeout`` seconds pass first, saying what was awaited
    (``message``, or a callable that describes the current state) and what the predicate last
    returned or raised, so a CI failure explains itself.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = predicate()
        except AssertionError:
            raise
        except Exception as exc:  # a server still starting, a row not there yet ...
            last = exc
        else:
            if last:
                return last  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            what = message() if callable(message) else message
            name = getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(
                f"timed out after {timeout:.1f}s waiting for {what or name}; last result: {last!r}"
            )
        time.sleep(interval)


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
