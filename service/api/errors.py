"""Every error becomes JSON here, in one place: ``{"detail": "..."}`` with a message a person can
act on, or for a request that cannot be carried out as sent (422)
``{"detail": [{"loc": [...], "msg": "...", "type": "..."}], "message": "..."}``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from optim_core.spaces import SpaceError
from service.api.schemas import ErrorOut, ValidationErrorOut
from service.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    ServiceError,
    Unauthorized,
    dotted_loc,
)
from service.store.database import is_outage
from service.trials.guard import SlotTakenBack

log = logging.getLogger(__name__)

# Status code of each kind of service error (the most specific class in the MRO wins).
STATUS_BY_ERROR: Mapping[type[ServiceError], int] = {
    NotFound: 404,
    Conflict: 409,
    InvalidRequest: 422,
    Unauthorized: 401,
}
HEADERS_BY_STATUS: Mapping[int, dict[str, str]] = {401: {"WWW-Authenticate": "Bearer"}}

_DESCRIPTIONS = {
    400: "The request body is not valid JSON.",
    401: "An API key is needed (HPT_API_KEY is set on the server).",
    404: "No study (or trial) by that name.",
    409: "The request clashes with the current state; the message says which way.",
    413: "The request body is larger than this server accepts (HPT_MAX_REQUEST_BYTES).",
    422: "The request cannot be carried out as sent; each problem names its field.",
    503: "The database is not reachable.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry of a route that reads the database and takes parameters: the
    given error statuses, plus 422 (our validation shape) and 503 (database unreachable)."""
    return {
        status: {
            "model": ValidationErrorOut if status == 422 else ErrorOut,
            "description": _DESCRIPTIONS[status],
        }
        for status in sorted({*statuses, 422, 503})
    }


def _json_error(status: int, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=dict(headers or {}))


def _validation_error(problems: Iterable[tuple[Sequence[str | int], str, str]]) -> JSONResponse:
    detail = [{"loc": list(loc), "msg": msg, "type": kind} for loc, msg, kind in problems]
    message = "; ".join(f"{dotted_loc(item['loc'])}: {item['msg']}" for item in detail)
    return JSONResponse({"detail": detail, "message": message}, status_code=422)


def _status_of(error: ServiceError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 400


async def handle_service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if isinstance(exc, InvalidRequest):
        return _validation_error((e.loc, e.msg, "value_error") for e in exc.errors)
    status = _status_of(exc)
    return _json_error(status, str(exc), HEADERS_BY_STATUS.get(status))


async def handle_space_error(request: Request, exc: Exception) -> JSONResponse:
    return _validation_error([(("body", "search_space"), str(exc), "value_error")])


def _human_message(error: Mapping[str, Any]) -> str:
    """Pydantic's message, reworded where it would leave a person guessing."""
    kind, loc, msg = error["type"], tuple(error["loc"]), str(error["msg"])
    if kind == "extra_forbidden":
        return f"unknown field {loc[-1]!r}; leave it out (GET /docs shows the fields this takes)"
    if kind == "model_attributes_type" and loc == ("body",):
        return "the request body must be a JSON object, sent with Content-Type: application/json"
    if kind == "missing" and loc == ("body",):
        return "a JSON body is required; GET /docs shows what it holds"
    return msg.removeprefix("Value error, ")


async def handle_request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    for error in errors:
        if error["type"] == "json_invalid":
            reason = error.get("ctx", {}).get("error", "malformed")
            position = error["loc"][-1] if len(error["loc"]) > 1 else "?"
            return _json_error(
                400, f"request body is not valid JSON: {reason} (at character {position})"
            )
    return _validation_error(
        (error["loc"], _human_message(error), error["type"]) for error in errors
    )


async def handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no endpoint {request.url.path}; the API is described at /docs"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"{request.method} is not allowed on {request.url.path}; use {allowed or 'GET'}"
    return _json_error(exc.status_code, str(detail), exc.headers)


async def handle_database_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database error on %s %s: %s", request.method, request.url.path, exc)
    return _json_error(503, "the database is not reachable right now; try again shortly")


async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    if is_outage(exc):  # Optuna's StorageInternalError, a pool timeout ...
        return await handle_database_error(request, exc)
    if isinstance(exc, SlotTakenBack):
        return _json_error(409, f"the trial ended meanwhile: {exc}")
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _json_error(500, "internal error; the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    """Register every handler of this module on ``app``."""
    app.add_exception_handler(ServiceError, handle_service_error)
    app.add_exception_handler(SpaceError, handle_space_error)
    app.add_exception_handler(RequestValidationError, handle_request_validation)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    app.add_exception_handler(sa.exc.OperationalError, handle_database_error)
    app.add_exception_handler(sa.exc.InterfaceError, handle_database_error)
    app.add_exception_handler(Exception, handle_unexpected)
