"""The service's own tables, and the engines and Optuna storage built on one database URL.

The service keeps three small tables beside Optuna's, in the same database:

- ``hpt_studies``: one row per study request (what to tune, its status).
- ``hpt_study_optimizers``: one row per (study, optimizer): its Optuna study and the slot counters
  that keep ``n_trials`` exact across workers (see :mod:`service.slots`).
- ``hpt_trial_slots``: one row per claimed slot: which worker (or ask/tell lease) holds it and the
  Optuna trial it became.
- ``hpt_workers``: live workers and when they were last seen (for the ETA and /metrics).

Engines and storages are built per process, never at import time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import optuna
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

# Seconds a SQLite connection waits for the write lock before giving up (its busy timeout).
SQLITE_BUSY_TIMEOUT = 60.0


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: sa.JSON, list[Any]: sa.JSON}


class StudyRow(Base):
    __tablename__ = "hpt_studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    task: Mapped[str] = mapped_column(sa.String(128))
    metric: Mapped[str] = mapped_column(sa.String(128))
    direction: Mapped[str] = mapped_column(sa.String(8))
    epochs: Mapped[int | None]
    n_trials: Mapped[int]
    sampler: Mapped[str] = mapped_column(sa.String(32))
    pruner: Mapped[str] = mapped_column(sa.String(32))
    seed: Mapped[int | None]
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    optimizers: Mapped[list[StudyOptimizerRow]] = relationship(
        back_populates="study",
        cascade="all, delete-orphan",
        order_by="StudyOptimizerRow.position",
        lazy="selectin",
    )


class StudyOptimizerRow(Base):
    __tablename__ = "hpt_study_optimizers"
    __table_args__ = (sa.UniqueConstraint("study_id", "optimizer"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(sa.ForeignKey("hpt_studies.id", ondelete="CASCADE"))
    position: Mapped[int]
    optimizer: Mapped[str] = mapped_column(sa.String(32))
    optuna_study_name: Mapped[str] = mapped_column(sa.String(128), unique=True)
    search_space: Mapped[dict[str, Any]]
    n_trials: Mapped[int]
    # Slots handed out and not given back (running + finished); never exceeds n_trials.
    claimed: Mapped[int] = mapped_column(default=0)
    # Slots ever handed out; numbers each claim (it seeds that trial's sampler).
    issued: Mapped[int] = mapped_column(default=0)
    finished: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    last_claimed_at: Mapped[datetime | None]

    study: Mapped[StudyRow] = relationship(back_populates="optimizers")


class TrialSlotRow(Base):
    __tablename__ = "hpt_trial_slots"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_optimizer_id: Mapped[int] = mapped_column(
        sa.ForeignKey("hpt_study_optimizers.id", ondelete="CASCADE"), index=True
    )
    holder: Mapped[str] = mapped_column(sa.String(128))
    # claimed -> running -> finished, or claimed/running -> released (the slot went back).
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    ordinal: Mapped[int]
    trial_id: Mapped[int | None]
    trial_number: Mapped[int | None]
    lease_token: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    lease_expires_at: Mapped[datetime | None]
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]


class WorkerRow(Base):
    __tablename__ = "hpt_workers"

    id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    trials_done: Mapped[int] = mapped_column(default=0)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _begin_immediate(conn: sa.Connection) -> None:
    # A deferred SQLite transaction that reads and then writes fails at once with "database is
    # locked" when another connection wrote in between (the busy timeout does not apply to that
    # upgrade). Taking the write lock at BEGIN makes every writer wait its turn instead.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def engine_kwargs(url: str) -> dict[str, Any]:
    """Engine options for ``url``: SQLite waits for locks and leaves BEGIN to us; PostgreSQL
    checks pooled connections before use."""
    if is_sqlite(url):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT, "isolation_level": None}}
    return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 5}


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # With WAL, NORMAL syncs at checkpoints instead of at every commit: a trial writes a few dozen
    # small transactions, and an fsync each would cost more than its training. The database stays
    # consistent; only the last commits can be lost if the machine loses power.
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def configure_sqlite(engine: Engine) -> None:
    """WAL journal (readers never block the writer), NORMAL sync, immediate write transactions."""
    if engine.dialect.name != "sqlite":
        return
    # Outside any transaction: SQLite cannot change the journal mode inside one.
    raw = engine.raw_connection()
    try:
        raw.cursor().execute("PRAGMA journal_mode=WAL")
    finally:
        raw.close()
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _begin_immediate)
    engine.dispose()  # pooled connections opened before the listeners lack them


def make_engine(url: str) -> Engine:
    """The engine of the service's own tables for ``url``."""
    engine = sa.create_engine(url, **engine_kwargs(url))
    configure_sqlite(engine)
    return engine


def create_tables(engine: Engine) -> None:
    """Create the service's tables where missing (idempotent; safe from several processes)."""
    _retry_on_race(lambda: Base.metadata.create_all(engine))


def make_optuna_storage(
    url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None
) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on ``url``, with the same SQLite tuning as our own engine.

    Workers pass ``heartbeat_interval`` so that trials of a worker that died are failed after
    ``grace_period`` seconds; the API passes neither.
    """

    def build() -> optuna.storages.RDBStorage:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs(url),
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
        )

    storage = _retry_on_race(build)
    configure_sqlite(storage.engine)
    return storage


def _retry_on_race(create: Any, attempts: int = 5) -> Any:
    # Processes starting together on an empty database may race to create the same tables; the
    # loser sees "already exists" or a lock and simply tries again.
    for attempt in range(attempts):
        try:
            return create()
        except (OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back on an exception."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def database_reachable(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True
    except sa.exc.SQLAlchemyError:
        return False
