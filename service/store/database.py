"""The database: engines for reading and writing, transactions, the database's clock, and what an
outage looks like.

One :class:`Database` per process, built when the process starts (never at import time):

- ``write()``: a write transaction. On SQLite it begins with ``BEGIN IMMEDIATE``: a deferred
  transaction that reads and then writes fails at once with "database is locked" when another
  connection wrote in between (the busy timeout does not cover that upgrade), so writers take
  the lock up front and wait their turn. Keep them short: nothing slow runs inside one.
- ``read()``: a read transaction. On SQLite a plain (deferred) ``BEGIN``: under WAL readers never
  wait for the writer, so a GET, a ``/metrics`` scrape or a dashboard poll is never queued
  behind the workers' writes, nor behind a frozen process that holds the write lock.

Every time decision (leases, heartbeats, liveness) compares columns with :func:`db_now`, the
database's own clock, so hosts whose clocks or time zones differ agree. Times are stored as naive
UTC; Python never writes a timestamp it computed itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import optuna
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

log = logging.getLogger(__name__)

# Seconds a SQLite writer waits for the write lock before giving up (its busy timeout).
SQLITE_BUSY_TIMEOUT = 60.0
# Seconds PostgreSQL lets a session of ours sit idle inside a transaction before ending it. Our
# transactions run their statements back to back, so only a process frozen mid-transaction (a
# SIGSTOP, a paused VM) gets there; ending its session frees the row locks it holds, which would
# otherwise stall recovery of its own slot (and every recovery after it) until it woke up.
POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT = 15.0

T = TypeVar("T")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


# --------------------------------------------------------------------------- the database's clock


class db_now(FunctionElement[datetime]):
    """The database's current time in UTC, plus ``seconds``, as a naive datetime expression.

    ``WHERE lease_expires_at < db_now()`` and ``values(heartbeat_at=db_now())`` put the same clock
    on both sides of every comparison, whatever the clocks and time zones of the hosts.
    """

    type = sa.DateTime()
    inherit_cache = True

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = float(seconds)
        super().__init__(sa.literal(self.seconds, sa.Float()))


@compiles(db_now, "sqlite")
def _db_now_sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    # SQLAlchemy stores SQLite datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff'; strftime's %f gives
    # 'SS.SSS', so three zeros make the same fixed width and text comparisons stay correct.
    seconds = compiler.process(element.clauses.clauses[0], **kw)
    return f"(strftime('%Y-%m-%d %H:%M:%f', 'now', ({seconds}) || ' seconds') || '000')"


@compiles(db_now, "postgresql")
def _db_now_postgresql(element: db_now, compiler: Any, **kw: Any) -> str:
    seconds = compiler.process(element.clauses.clauses[0], **kw)
    return f"((clock_timestamp() AT TIME ZONE 'UTC') + make_interval(secs => {seconds}))"


def as_utc(value: datetime | None) -> datetime | None:
    """A naive UTC datetime of our tables, made timezone-aware."""
    return None if value is None else value.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- outages


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is unreachable or busy for now (retry later), rather
    than that the request itself is wrong.

    Optuna wraps the driver's errors in ``StorageInternalError``; the cause is looked at too.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa.exc.OperationalError | sa.exc.InterfaceError):
            return True
        if isinstance(current, sa.exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sa.exc.TimeoutError):  # the pool had no connection to give
            return True
        if isinstance(current, optuna.exceptions.StorageInternalError):
            return True
        current = current.__cause__ or current.__context__
    return False


# --------------------------------------------------------------------------- engines


def _engine_kwargs(url: str, *, busy_timeout: float) -> dict[str, Any]:
    if is_sqlite(url):
        return {"connect_args": {"timeout": busy_timeout, "isolation_level": None}}
    return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 5, "pool_timeout": 10}


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    # With WAL, NORMAL syncs at checkpoints instead of at every commit: a trial writes a few dozen
    # small transactions, and an fsync each would cost more than its training. The database stays
    # consistent; only the last commits can be lost if the machine loses power.
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _begin_immediate(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _begin_deferred(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN")


def configure_sqlite(engine: Engine, *, writer: bool) -> None:
    """WAL journal, NORMAL sync; ``BEGIN IMMEDIATE`` for a writer's transactions, a deferred
    ``BEGIN`` for a reader's. A no-op on other databases."""
    if engine.dialect.name != "sqlite":
        return
    # Outside any transaction: SQLite cannot change the journal mode inside one.
    raw = engine.raw_connection()
    try:
        raw.cursor().execute("PRAGMA journal_mode=WAL")
    finally:
        raw.close()
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _begin_immediate if writer else _begin_deferred)
    engine.dispose()  # pooled connections opened before the listeners lack them


def _postgres_session(dbapi_connection: Any, connection_record: Any) -> None:
    timeout_ms = int(POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT * 1000)
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET idle_in_transaction_session_timeout = {timeout_ms}")
    dbapi_connection.commit()


def configure_postgres(engine: Engine) -> None:
    """Every session ends itself when idle in a transaction past
    ``POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT``. A no-op on other databases."""
    if engine.dialect.name != "postgresql":
        return
    event.listen(engine, "connect", _postgres_session)
    engine.dispose()  # pooled connections opened before the listener lack it


def make_engine(
    url: str, *, writer: bool = True, busy_timeout: float = SQLITE_BUSY_TIMEOUT
) -> Engine:
    """An engine on ``url``: a writer's (``BEGIN IMMEDIATE`` on SQLite) or a reader's."""
    engine = sa.create_engine(url, **_engine_kwargs(url, busy_timeout=busy_timeout))
    configure_sqlite(engine, writer=writer)
    configure_postgres(engine)
    return engine


@dataclass
class Database:
    """The engines of one process on one database URL.

    Args:
        url: SQLAlchemy URL.
        writer: Engine of write transactions.
        reader: Engine of read transactions (the writer itself on PostgreSQL).
    """

    url: str
    writer: Engine
    reader: Engine

    @classmethod
    def connect(cls, url: str, *, busy_timeout: float = SQLITE_BUSY_TIMEOUT) -> Database:
        writer = make_engine(url, writer=True, busy_timeout=busy_timeout)
        reader = (
            make_engine(url, writer=False, busy_timeout=busy_timeout) if is_sqlite(url) else writer
        )
        return cls(url, writer, reader)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed when the block ends, rolled back on an exception."""
        with Session(self.writer, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """One read transaction (a consistent snapshot that never waits for the write lock)."""
        with Session(self.reader, expire_on_commit=False) as session, session.begin():
            yield session

    def reachable(self) -> bool:
        try:
            with self.reader.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def dispose(self) -> None:
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()


def make_optuna_storage(
    url: str, *, writer: bool = True, busy_timeout: float = SQLITE_BUSY_TIMEOUT
) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on ``url``, with the same SQLite setup as our engines.

    No Optuna heartbeat: a trial's liveness is its slot's heartbeat
    (:mod:`service.trials.recovery`), on
    the database's clock, and only :mod:`service.trials.recovery` reconciles Optuna's trials with
    slots.
    """
    kwargs = _engine_kwargs(url, busy_timeout=busy_timeout)

    def build() -> optuna.storages.RDBStorage:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)

    storage = retry_on_create_race(build)
    configure_sqlite(storage.engine, writer=writer)
    configure_postgres(storage.engine)
    return storage


def retry_on_create_race(create: Callable[[], T], attempts: int = 5) -> T:
    """``create()``, tried again when processes starting together on an empty database race to
    create the same tables (the loser sees "already exists" or a lock)."""
    for attempt in range(attempts):
        try:
            return create()
        except (sa.exc.OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")
