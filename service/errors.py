"""What can go wrong in a request, as exceptions the data functions raise.

They carry a message written for the person who sent the request. The HTTP layer turns each kind
into a status code in one place (:mod:`service.api.errors`); nothing here knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ServiceError(Exception):
    """Base of the errors a client can act on; ``str(error)`` is the message to show."""


class NotFound(ServiceError):
    """The request names something that does not exist."""


class StudyNotFound(NotFound):
    """No study by that name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"study {name!r} not found; GET /api/v1/studies lists them")
        self.name = name


class TrialNotFound(NotFound):
    """No trial by that optimizer and number in the study."""


class Conflict(ServiceError):
    """The request is well formed but clashes with the current state (a duplicate name, a
    finished trial, an expired lease, a study that takes no more trials ...)."""


class Unauthorized(ServiceError):
    """A mutating request without the right API key."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one part of a request.

    Args:
        loc: Where the problem is, as FastAPI reports it (``("body", "search_space", "adam")``).
        msg: What is wrong and how to fix it.
    """

    loc: tuple[str | int, ...]
    msg: str


class InvalidRequest(ServiceError):
    """The request is well formed JSON but asks for something the service cannot do."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(f"{dotted_loc(e.loc)}: {e.msg}" for e in self.errors))


def dotted_loc(loc: Sequence[str | int]) -> str:
    """``("body", "optimizers", 1)`` as ``"body.optimizers.1"``, for one-line messages."""
    return ".".join(str(part) for part in loc)
