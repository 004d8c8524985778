"""Slots keep an ended trial's figures for the trials API (``record``), so that a page of trials
is one read of slot rows, whatever the study's size. Slots that ended before this revision have
none: the API reads those trials from Optuna, as before.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column: ALTER TABLE ... ADD COLUMN on both backends, no table rebuild.
    op.add_column("hpt_trial_slots", sa.Column("record", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hpt_trial_slots", table_kwargs={"sqlite_autoincrement": True}) as t:
        t.drop_column("record")
