"""Every write this process makes to Optuna's tables for a trial is conditional on still holding
that trial's slot, checked in the same transaction as the write.

A worker frozen past its grace period and woken up, a worker of a study deleted under it, an
ask/tell request racing an expired lease: each still holds an Optuna trial id, and on SQLite an
id can even have been given to someone else's new trial (Optuna's tables reuse freed row ids).
Checking the slot first and writing after would leave a gap between the two; here the check runs
inside Optuna's own write transaction, which holds SQLite's write lock, or on PostgreSQL a
``FOR SHARE`` lock on the slot row, so the slot cannot be taken back between the check and the
commit. A write for a slot taken back raises :class:`SlotTakenBack` and is rolled back.

Use::

    guard = SlotGuard.install(storage.engine)
    with guard.holding(slot_id, claim_token):
        ...  # every INSERT/UPDATE/DELETE on the storage's engine from this thread is checked
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

_WRITES = ("INSERT", "UPDATE", "DELETE")


class SlotTakenBack(RuntimeError):
    """The slot this write was for is no longer held by its writer (lost, expired, revoked)."""


class SlotGuard:
    """Checks the writes of one engine against the slot the writing thread holds."""

    def __init__(self, engine: Engine) -> None:
        self._held = threading.local()
        self._paramstyle = engine.dialect.paramstyle
        self._lock_clause = " FOR SHARE" if engine.dialect.name == "postgresql" else ""
        event.listen(engine, "before_cursor_execute", self._check)

    @classmethod
    def install(cls, engine: Engine) -> SlotGuard:
        return cls(engine)

    @contextmanager
    def holding(self, slot_id: int, token: str) -> Iterator[None]:
        """Inside the block, this thread's writes on the engine need the slot held with
        ``token``."""
        previous = getattr(self._held, "slot", None)
        self._held.slot = (slot_id, token)
        try:
            yield
        finally:
            self._held.slot = previous

    def _query(self) -> str:
        mark = "?" if self._paramstyle == "qmark" else "%s"
        return (
            f"SELECT 1 FROM hpt_trial_slots WHERE id = {mark} AND claim_token = {mark} "
            f"AND state IN ('claimed', 'running'){self._lock_clause}"
        )

    def _check(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        held = getattr(self._held, "slot", None)
        if held is None or not statement.lstrip()[:6].upper().startswith(_WRITES):
            return
        check = conn.connection.cursor()
        try:
            check.execute(self._query(), held)
            found = check.fetchone()
        finally:
            check.close()
        if found is None:
            raise SlotTakenBack(
                f"slot {held[0]} is no longer held by this process; its trial is not written"
            )
