"""Sending a request again while the service cannot answer it right now: the optimize loop's
asks, reports, tells and lease renewals (never an HTTPClient method called on its own)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from service.client.errors import HPTError, is_transient

log = logging.getLogger("hpt.client")

T = TypeVar("T")

# The waits between attempts start at the loop's poll interval and double up to MAX_RETRY_WAIT;
# after GIVE_UP_AFTER seconds of failures the loop gives up and raises.
MAX_RETRY_WAIT = 10.0
GIVE_UP_AFTER = 300.0


class Stopped(Exception):
    """The run stopped while a request waited to be sent again."""


def retrying(
    request: Callable[[], T],
    what: str,
    *,
    first_wait: float,
    stop: threading.Event | None = None,
) -> T:
    """``request()``, sent again while the service cannot answer it right now (unreachable,
    429, 502, 503, 504), after waits doubling from ``first_wait`` up to ``MAX_RETRY_WAIT``.

    Args:
        request: One attempt.
        what: What it does, for the log ("telling trial adam/3").
        first_wait: Seconds before the second attempt.
        stop: Set when the caller no longer wants the answer (waits end at once).

    Raises:
        HPTError: at once when the service refused; the last transient error once
            ``GIVE_UP_AFTER`` seconds went by.
        Stopped: ``stop`` was set during a wait.
    """
    give_up_at = time.monotonic() + GIVE_UP_AFTER
    wait = max(first_wait, 0.001)
    while True:
        try:
            return request()
        except HPTError as exc:
            if not is_transient(exc) or time.monotonic() + wait > give_up_at:
                raise
            log.warning("%s: %s; trying again in %.2g s", what, exc.message, wait)
        if stop is None:
            time.sleep(wait)
        elif stop.wait(wait):
            raise Stopped
        wait = min(2 * wait, MAX_RETRY_WAIT)
