"""Typed dependencies of the routes: settings, engine and Optuna storage of this process, and the
API-key check of mutating requests. All of them are built in the app's lifespan, never here."""

from __future__ import annotations

import secrets
from typing import Annotated

import optuna
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine

from service.config import Settings
from service.errors import Unauthorized


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    """The engine of the service's tables (built once per process)."""
    return request.app.state.engine


def get_storage(request: Request) -> optuna.storages.RDBStorage:
    """Optuna's storage (built once per process, without heartbeat: the API never trains)."""
    return request.app.state.storage


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
StorageDep = Annotated[optuna.storages.RDBStorage, Depends(get_storage)]

# Paging of the list endpoints.
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0)]

_bearer = HTTPBearer(
    auto_error=False,
    description="Needed by POST and DELETE requests when the server sets HPT_API_KEY.",
)


def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Let a mutating request through if the server has no API key or the request has it.

    Raises:
        Unauthorized: the server has a key and the request does not send it.
    """
    expected = settings.api_key_value
    if expected is None:
        return
    if credentials is None:
        raise Unauthorized(
            "this server needs an API key for POST and DELETE requests: send the header "
            "'Authorization: Bearer <key>' with the key the server was given as HPT_API_KEY"
        )
    if not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise Unauthorized(
            "the API key sent in 'Authorization: Bearer ...' is not this server's; send the "
            "key the server was given as HPT_API_KEY"
        )


RequireApiKey = Depends(require_api_key)
