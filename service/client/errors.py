"""What the client raises: one exception type for every refusal or unreachable server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class HPTError(Exception):
    """The API refused a request, or could not be reached.

    Attributes:
        status_code: HTTP status of the answer; ``None`` when there was no answer at all.
        detail: The server's ``detail`` (a message, or FastAPI's list of validation errors).
    """

    def __init__(self, status_code: int | None, detail: Any) -> None:
        self.status_code = status_code
        self.detail = detail
        super().__init__(format_detail(detail))

    @property
    def message(self) -> str:
        """The detail as one human-readable message."""
        return format_detail(self.detail)


class HPTConnectionError(HPTError):
    """Nothing answered at the API's URL (connection refused, DNS failure, timeout)."""


# Answers that say "not now" rather than "no": a proxy without its upstream, the database
# unreachable (the API answers 503), a rate limit.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})


def is_transient(exc: HPTError) -> bool:
    """Whether the same request may well succeed a little later: nothing answered, or the
    server answered 429, 502, 503 or 504."""
    return exc.status_code is None or exc.status_code in TRANSIENT_STATUSES


def format_detail(detail: Any) -> str:
    """A person-readable message from an error ``detail``.

    FastAPI's validation errors are a list of ``{"loc": [...], "msg": ...}``; they become one
    ``where: what`` line each.
    """
    if isinstance(detail, list):
        lines = []
        for error in detail:
            if isinstance(error, Mapping) and "msg" in error:
                where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
                lines.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
            else:
                lines.append(str(error))
        return "\n".join(lines)
    return str(detail)
