"""Alembic environment of the service's own tables (Optuna migrates its own).

Run through :func:`service.store.migrate.upgrade_database` (``hpt db upgrade``), which hands over a
connection that already holds the migration lock; the version is kept in ``hpt_alembic_version``,
apart from Optuna's ``alembic_version``.
"""

from __future__ import annotations

from alembic import context

from service.store.migrate import VERSION_TABLE
from service.store.tables import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite alters tables by copying them
    include_name=lambda name, type_, parent: type_ != "table" or str(name).startswith("hpt_"),
)
with context.begin_transaction():
    context.run_migrations()
