"""Each study names the model it tunes (``hpt_studies.model``): warm starts, the catalogue and
``GET /api/v1/best`` share configs only between studies of the same model and metric. A built-in
task is its own model; an external study made before this revision becomes a model of its own
(its name), so it shares configs with no other. ``verdict_published_at``: when the verdict of a
completed study was written into its Optuna studies' attributes (the dashboard shows them).
``confirm_equivalence``: the practical-equivalence margin of the confirmation's race (a study
confirmed before the race has none, and keeps its all-pairs verdict).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hpt_studies") as batch:
        batch.add_column(sa.Column("model", sa.String(128), nullable=True))
        batch.add_column(sa.Column("verdict_published_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("confirm_equivalence", sa.Float(), nullable=True))
    op.execute(
        "UPDATE hpt_studies SET model = CASE WHEN task = 'external' THEN name ELSE task END"
    )
    with op.batch_alter_table("hpt_studies") as batch:
        batch.alter_column("model", existing_type=sa.String(128), nullable=False)
        batch.create_index("ix_hpt_studies_model_metric", ["task", "model", "metric"])


def downgrade() -> None:
    with op.batch_alter_table("hpt_studies") as batch:
        batch.drop_index("ix_hpt_studies_model_metric")
        batch.drop_column("confirm_equivalence")
        batch.drop_column("verdict_published_at")
        batch.drop_column("model")
