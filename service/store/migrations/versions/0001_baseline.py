"""The service's tables as the first release created them (with ``create_all``).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hpt_studies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("task", sa.String(128), nullable=False),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=True),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("sampler", sa.String(32), nullable=False),
        sa.Column("pruner", sa.String(32), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_hpt_studies_status", "hpt_studies", ["status"])
    op.create_table(
        "hpt_study_optimizers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "study_id",
            sa.Integer(),
            sa.ForeignKey("hpt_studies.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("optimizer", sa.String(32), nullable=False),
        sa.Column("optuna_study_name", sa.String(128), nullable=False, unique=True),
        sa.Column("search_space", sa.JSON(), nullable=False),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("claimed", sa.Integer(), nullable=False),
        sa.Column("issued", sa.Integer(), nullable=False),
        sa.Column("finished", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("last_claimed_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("study_id", "optimizer"),
    )
    op.create_table(
        "hpt_trial_slots",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "study_optimizer_id",
            sa.Integer(),
            sa.ForeignKey("hpt_study_optimizers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=True),
        sa.Column("trial_number", sa.Integer(), nullable=True),
        sa.Column("lease_token", sa.String(64), nullable=True, unique=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
    )
    op.create_index(
        "ix_hpt_trial_slots_study_optimizer_id", "hpt_trial_slots", ["study_optimizer_id"]
    )
    op.create_index("ix_hpt_trial_slots_state", "hpt_trial_slots", ["state"])
    op.create_table(
        "hpt_workers",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("trials_done", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    for table in ("hpt_workers", "hpt_trial_slots", "hpt_study_optimizers", "hpt_studies"):
        op.drop_table(table)
