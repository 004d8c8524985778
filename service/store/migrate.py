"""Bringing a database's schema up to date: Alembic for the service's tables, Optuna for its own.

``hpt db upgrade`` runs it, and so do ``hpt serve`` and ``hpt worker`` when they start. Any number
of processes may start together: one upgrades while the others wait for its lock (a PostgreSQL
advisory lock; on SQLite the write lock of an immediate transaction), then find nothing to do.

A database created by the first release (tables made by ``create_all``, no version table) is
recognised and marked as revision ``0001`` before the upgrade.
"""

from __future__ import annotations

import logging
from importlib.resources import files

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.store.database import Database, make_optuna_storage

log = logging.getLogger(__name__)

# Where Alembic keeps the revision of our tables (Optuna keeps its own in alembic_version).
VERSION_TABLE = "hpt_alembic_version"
# Key of the PostgreSQL advisory lock held while migrating ("hpt" in ASCII).
MIGRATION_LOCK_KEY = 0x687074
FIRST_RELEASE_REVISION = "0001"


def _alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("service.store") / "migrations"))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(files("service.store") / "migrations"))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def current_revision(connection: sa.Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade_database(database: Database) -> str | None:
    """Migrate the service's tables to the newest revision, then let Optuna create or check its
    own. Returns the revision the database was at before (``None``: it was empty).

    Safe to call from several processes at once: one migrates, the others wait and find it done.
    """
    engine = database.writer
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
            connection.commit()
        try:
            with connection.begin():  # on SQLite: BEGIN IMMEDIATE, the write lock
                before = _upgrade(connection)
        finally:
            if engine.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
                connection.commit()
    make_optuna_storage(database.url).engine.dispose()  # creates Optuna's tables when missing
    return before


def _upgrade(connection: sa.Connection) -> str | None:
    before = current_revision(connection)
    tables = set(sa.inspect(connection).get_table_names())
    config = _alembic_config(connection)
    if before is None and "hpt_studies" in tables:
        log.info("database made by the first release: marking it as revision %s", "0001")
        command.stamp(config, FIRST_RELEASE_REVISION)
        before = FIRST_RELEASE_REVISION
    head = head_revision()
    if before != head:
        log.info("upgrading the service's tables from %s to %s", before or "empty", head)
        command.upgrade(config, "head")
    return before
