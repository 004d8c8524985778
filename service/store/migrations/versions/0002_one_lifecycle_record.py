"""The slot row becomes the one record of a trial's life; ids are never reused.

Slots gain a claim token (the old lease token, now held by workers too), their outcome, value,
params, origin and timestamps on the database's clock; optimizer rows gain counters by state and
their best slot; studies remember their last claim (fair share of workers). On SQLite the tables
are rebuilt with ``AUTOINCREMENT``. Finished slots of earlier releases are filled in from Optuna
afterwards by :func:`service.trials.recovery.backfill_slots`.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NEVER_REUSED_IDS = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("hpt_studies", recreate="auto", table_kwargs=NEVER_REUSED_IDS) as t:
        t.add_column(sa.Column("last_claimed_at", sa.DateTime(), nullable=True))
        t.add_column(sa.Column("confirm_top_k", sa.Integer(), nullable=False, server_default="0"))
        t.add_column(sa.Column("confirm_seeds", sa.Integer(), nullable=False, server_default="0"))
        t.add_column(sa.Column("phase", sa.String(16), nullable=False, server_default="searching"))
    with op.batch_alter_table(
        "hpt_study_optimizers", recreate="auto", table_kwargs=NEVER_REUSED_IDS
    ) as t:
        for name in ("running", "complete", "pruned"):
            t.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
        t.add_column(sa.Column("planned_configs", sa.JSON(), nullable=True))
        t.add_column(sa.Column("search_trials", sa.Integer(), nullable=True))
        t.add_column(sa.Column("best_slot_id", sa.Integer(), nullable=True))
        t.add_column(sa.Column("best_value", sa.Float(), nullable=True))
        t.create_index("ix_hpt_study_optimizers_study_id", ["study_id"])
        t.create_index("ix_hpt_study_optimizers_optimizer_best", ["optimizer", "best_value"])
    with op.batch_alter_table(
        "hpt_trial_slots", recreate="auto", table_kwargs=NEVER_REUSED_IDS
    ) as t:
        t.alter_column("lease_token", new_column_name="claim_token")
        t.add_column(sa.Column("outcome", sa.String(16), nullable=True))
        t.add_column(sa.Column("origin", sa.String(16), nullable=True))
        t.add_column(sa.Column("confirm_of", sa.Integer(), nullable=True))
        t.add_column(sa.Column("params", sa.JSON(), nullable=True))
        t.add_column(sa.Column("value", sa.Float(), nullable=True))
        t.add_column(sa.Column("test_value", sa.Float(), nullable=True))
        t.add_column(sa.Column("test_metrics", sa.JSON(), nullable=True))
        t.add_column(sa.Column("reason", sa.Text(), nullable=True))
        t.add_column(sa.Column("lease_seconds", sa.Float(), nullable=True))
        t.add_column(sa.Column("started_at", sa.DateTime(), nullable=True))
        t.add_column(sa.Column("heartbeat_at", sa.DateTime(), nullable=True))
        t.create_index("ix_hpt_trial_slots_trial_id", ["trial_id"])
        t.create_index("ix_hpt_trial_slots_pair_number", ["study_optimizer_id", "trial_number"])
        t.create_index(
            "ix_hpt_trial_slots_pair_state_number", ["study_optimizer_id", "state", "trial_number"]
        )
        t.create_index("ix_hpt_trial_slots_state_heartbeat", ["state", "heartbeat_at"])
    if op.get_bind().dialect.name == "sqlite":
        # batch mode rebuilds only when SQLite cannot alter in place; AUTOINCREMENT needs the
        # rebuild, so force it where it did not happen.
        for table in ("hpt_studies", "hpt_study_optimizers", "hpt_trial_slots"):
            sql = (
                op.get_bind()
                .exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (table,)
                )
                .scalar_one()
            )
            if "AUTOINCREMENT" not in sql.upper():
                with op.batch_alter_table(table, recreate="always", table_kwargs=NEVER_REUSED_IDS):
                    pass
    # Held slots of the old schema hold one counter: claimed - finished.
    op.execute(
        "UPDATE hpt_study_optimizers SET running = claimed - finished WHERE claimed > finished"
    )
    op.execute("UPDATE hpt_study_optimizers SET search_trials = n_trials")
    op.execute("UPDATE hpt_studies SET phase = 'completed' WHERE status = 'completed'")


def downgrade() -> None:
    raise NotImplementedError("the lifecycle record cannot be folded back into the old schema")
