"""The engines' session settings: what the database does for us when a process misbehaves."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from service.store import database
from service.store.database import Database, make_optuna_storage


def _idle_timeout(engine: Engine) -> str:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar_one()


@pytest.mark.postgres
def test_every_postgres_engine_ends_sessions_idle_in_a_transaction(postgres_url: str) -> None:
    db = Database.connect(postgres_url)
    storage = make_optuna_storage(postgres_url)
    try:
        expected = f"{int(database.POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT)}s"
        assert _idle_timeout(db.writer) == _idle_timeout(storage.engine) == expected
    finally:
        storage.engine.dispose()
        db.dispose()


@pytest.mark.postgres
def test_a_session_frozen_in_a_transaction_frees_its_row_locks(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process frozen between two statements of a transaction (here: a connection left open
    holding a row lock) is ended by the server after the timeout, so a writer waiting on that
    row goes on instead of waiting for the process to wake up."""
    monkeypatch.setattr(database, "POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT", 1.0)
    frozen_db, waiting_db = Database.connect(postgres_url), Database.connect(postgres_url)
    try:
        with frozen_db.write() as session:
            session.execute(sa.text("CREATE TABLE held (id int PRIMARY KEY, v int)"))
            session.execute(sa.text("INSERT INTO held VALUES (1, 0)"))
        frozen = frozen_db.writer.connect()
        frozen.begin()
        frozen.execute(sa.text("SELECT v FROM held WHERE id = 1 FOR UPDATE"))  # then nothing
        started = time.monotonic()
        with waiting_db.write() as session:
            session.execute(sa.text("SET LOCAL lock_timeout = '30s'"))  # fails, never hangs
            session.execute(sa.text("UPDATE held SET v = 1 WHERE id = 1"))
        assert time.monotonic() - started < 30
        with pytest.raises(sa.exc.DBAPIError, match="idle-in-transaction timeout"):
            frozen.execute(sa.text("SELECT 1"))  # its session was ended
        frozen.invalidate()
        frozen.close()
    finally:
        frozen_db.dispose()
        waiting_db.dispose()
