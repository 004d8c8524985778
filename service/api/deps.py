"""Typed dependencies of the routes: settings, the database and Optuna's storages of this process,
ask/tell, and the API-key check of mutating requests. All of them are built in the app's
lifespan (:mod:`service.app`), never here."""

from __future__ import annotations

import secrets
from typing import Annotated

import optuna
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.schemas import INT32_MAX
from service.config import Settings
from service.errors import Unauthorized
from service.store.database import Database
from service.trials.ask_tell import AskTell


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def get_db(request: Request) -> Database:
    """The database of this process (a reader and a writer engine)."""
    return request.app.state.db


def get_reader(request: Request) -> optuna.storages.RDBStorage:
    """Optuna's storage for reads: on SQLite it never waits for the write lock."""
    return request.app.state.reader_storage


def get_writer(request: Request) -> optuna.storages.RDBStorage:
    """Optuna's storage for writes (its writes are checked against their slot)."""
    return request.app.state.writer_storage


def get_ask_tell(request: Request) -> AskTell:
    return request.app.state.ask_tell


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_db)]
ReaderDep = Annotated[optuna.storages.RDBStorage, Depends(get_reader)]
WriterDep = Annotated[optuna.storages.RDBStorage, Depends(get_writer)]
AskTellDep = Annotated[AskTell, Depends(get_ask_tell)]

# Paging of the list endpoints; offsets beyond any table are refused rather than overflowing.
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=INT32_MAX)]

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
