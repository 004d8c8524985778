"""The service's own tables, beside Optuna's in the same database (migrated by Alembic:
``service/store/migrations``).

- ``hpt_studies``: one row per study request (what to tune, its status).
- ``hpt_study_optimizers``: one row per (study, optimizer): its Optuna study, and counters of its
  slots by state, kept by :mod:`service.trials.lifecycle` in the same transaction as each slot
  change
  (they are the slot rows, counted ahead of time: reads stay O(1) however long the history).
- ``hpt_trial_slots``: one row per attempt at a trial: the one record of where a trial is in its
  life (see :class:`service.vocabulary.SlotState`), with its Optuna trial, its holder, its claim
  token, its outcome and timestamps on the database's clock.
- ``hpt_workers``: live workers and when the database last heard from them.

Ids are never reused (``AUTOINCREMENT`` on SQLite, sequences on PostgreSQL): a late writer holding
an old id can only ever miss.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from service.store.database import db_now


def _task_is_the_model(context: Any) -> str:
    """A study inserted without a model tunes its task's (``service.studies.requests`` names
    the model of every study it plans; this covers rows written by hand)."""
    return context.get_current_parameters()["task"]


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: sa.JSON, list[Any]: sa.JSON}


NEVER_REUSED_IDS = {"sqlite_autoincrement": True}


class StudyRow(Base):
    __tablename__ = "hpt_studies"
    __table_args__ = (
        # The catalogue: the studies of one model and metric.
        sa.Index("ix_hpt_studies_model_metric", "task", "model", "metric"),
        NEVER_REUSED_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    task: Mapped[str] = mapped_column(sa.String(128))
    # The model tuned: the task's name, or the name an external study gives its model.
    model: Mapped[str] = mapped_column(sa.String(128), default=_task_is_the_model)
    metric: Mapped[str] = mapped_column(sa.String(128))
    direction: Mapped[str] = mapped_column(sa.String(8))
    epochs: Mapped[int | None]
    n_trials: Mapped[int]
    sampler: Mapped[str] = mapped_column(sa.String(32))
    pruner: Mapped[str] = mapped_column(sa.String(32))
    seed: Mapped[int | None]
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=db_now())
    updated_at: Mapped[datetime] = mapped_column(default=db_now())
    finished_at: Mapped[datetime | None]
    # When a slot of this study was last claimed: studies take turns (fair share of workers).
    last_claimed_at: Mapped[datetime | None]
    # Confirmation: the top configs of each optimizer re-trained on this many fresh seeds.
    confirm_top_k: Mapped[int] = mapped_column(default=0, server_default="0")
    confirm_seeds: Mapped[int] = mapped_column(default=0, server_default="0")
    # The confirmation's race: its practical-equivalence margin, in the metric's units (the
    # request's, or resolved from the metric when the confirmation starts).
    confirm_equivalence: Mapped[float | None] = mapped_column(sa.Float)
    phase: Mapped[str] = mapped_column(
        sa.String(16), default="searching", server_default="searching"
    )
    # When the verdict of the completed study was written into its Optuna studies' attributes.
    verdict_published_at: Mapped[datetime | None]

    optimizers: Mapped[list[StudyOptimizerRow]] = relationship(
        back_populates="study",
        cascade="all, delete-orphan",
        order_by="StudyOptimizerRow.position",
        lazy="selectin",
    )


class StudyOptimizerRow(Base):
    __tablename__ = "hpt_study_optimizers"
    __table_args__ = (
        sa.UniqueConstraint("study_id", "optimizer"),
        # The catalogue's best of one optimizer over every study: walked in order of value.
        sa.Index("ix_hpt_study_optimizers_optimizer_best", "optimizer", "best_value"),
        NEVER_REUSED_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(
        sa.ForeignKey("hpt_studies.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int]
    optimizer: Mapped[str] = mapped_column(sa.String(32))
    optuna_study_name: Mapped[str] = mapped_column(sa.String(128), unique=True)
    search_space: Mapped[dict[str, Any]]
    # Slots to finish: the search's, plus the confirmation's once it starts.
    n_trials: Mapped[int]
    search_trials: Mapped[int | None]
    # Slot counters by state (maintained only by service.trials.lifecycle, with the slot change):
    # claimed = held + finished (never exceeds n_trials); finished = complete + pruned.
    claimed: Mapped[int] = mapped_column(default=0)
    running: Mapped[int] = mapped_column(default=0, server_default="0")
    finished: Mapped[int] = mapped_column(default=0)
    complete: Mapped[int] = mapped_column(default=0, server_default="0")
    pruned: Mapped[int] = mapped_column(default=0, server_default="0")
    failed: Mapped[int] = mapped_column(default=0)  # released slots
    # Slots ever handed out: numbers each claim (it seeds that trial's sampler).
    issued: Mapped[int] = mapped_column(default=0)
    last_claimed_at: Mapped[datetime | None]
    # Configs the next claims try before asking the sampler, in order: {"params", "origin"}.
    planned_configs: Mapped[list[Any] | None]
    # The best finished slot so far (complete, by the study's direction), kept on finish.
    best_slot_id: Mapped[int | None]
    best_value: Mapped[float | None] = mapped_column(sa.Float)

    study: Mapped[StudyRow] = relationship(back_populates="optimizers")


class TrialSlotRow(Base):
    __tablename__ = "hpt_trial_slots"
    __table_args__ = (
        sa.Index("ix_hpt_trial_slots_pair_number", "study_optimizer_id", "trial_number"),
        # A page of one study's trials in one state (not every study's slots in that state).
        sa.Index(
            "ix_hpt_trial_slots_pair_state_number", "study_optimizer_id", "state", "trial_number"
        ),
        sa.Index("ix_hpt_trial_slots_state_heartbeat", "state", "heartbeat_at"),
        # The trials list: every filter it offers and the ids it sorts, in one index, so that
        # its count and its page read no slot row (a row carries its record) however big the
        # study; only the page's own rows are read after.
        sa.Index(
            "ix_hpt_trial_slots_pair_listing",
            "study_optimizer_id",
            "state",
            "outcome",
            "trial_id",
            "id",
        ),
        NEVER_REUSED_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_optimizer_id: Mapped[int] = mapped_column(
        sa.ForeignKey("hpt_study_optimizers.id", ondelete="CASCADE"), index=True
    )
    holder: Mapped[str] = mapped_column(sa.String(128))
    # A secret of the holder: every change the holder makes is conditional on it, so a late
    # writer (a frozen worker woken up, a client whose lease ran out) only ever misses.
    # For ask/tell it is the lease the client sends back.
    claim_token: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    outcome: Mapped[str | None] = mapped_column(sa.String(16))
    ordinal: Mapped[int]
    origin: Mapped[str | None] = mapped_column(sa.String(16))
    # Confirmation slots: the search slot whose config they re-train.
    confirm_of: Mapped[int | None]
    trial_id: Mapped[int | None] = mapped_column(index=True)  # Optuna's
    trial_number: Mapped[int | None]
    params: Mapped[dict[str, Any] | None]
    value: Mapped[float | None] = mapped_column(sa.Float)
    test_value: Mapped[float | None] = mapped_column(sa.Float)
    test_metrics: Mapped[dict[str, Any] | None]
    reason: Mapped[str | None] = mapped_column(sa.Text)
    # An ended trial's figures for the trials API, copied from Optuna when the slot ends
    # (optuna_bridge.trial_record): a page of trials never reads Optuna for a finished one.
    record: Mapped[dict[str, Any] | None]
    lease_seconds: Mapped[float | None] = mapped_column(sa.Float)
    lease_expires_at: Mapped[datetime | None]
    claimed_at: Mapped[datetime] = mapped_column(default=db_now())
    started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]


class WorkerRow(Base):
    __tablename__ = "hpt_workers"

    id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(default=db_now())
    last_seen_at: Mapped[datetime] = mapped_column(default=db_now())
    trials_done: Mapped[int] = mapped_column(default=0)
