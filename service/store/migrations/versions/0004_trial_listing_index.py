"""The trials list reads one index, not the slot rows, to count and page a study's trials
(``ix_hpt_trial_slots_pair_listing``): a page of 50 costs the same at 1,000 trials in the
study as at 7,000.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_hpt_trial_slots_pair_listing",
        "hpt_trial_slots",
        ["study_optimizer_id", "state", "outcome", "trial_id", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_hpt_trial_slots_pair_listing", table_name="hpt_trial_slots")
