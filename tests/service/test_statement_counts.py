"""What one ask and one tell cost the database, counted in the API process on both backends.

What counts, on every engine of the API process (ours, reader and writer, and Optuna's):

- a statement: one SQL statement sent to the database by the request's thread, through
  SQLAlchemy (``before_cursor_execute``) or by the slot guard's check of a guarded write
  (:mod:`service.trials.guard`), but not the ``BEGIN`` our SQLite engines send at the start of a
  transaction (that is the transaction, counted below);
- a transaction: one transaction begun (the ``begin`` event), a read or a write;
- a locking transaction: one that takes SQLite's write lock at its start (``BEGIN IMMEDIATE``).

The API's background recovery thread is not counted: only the request's own work is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.engine import Engine

from service.app import create_app
from service.config import Settings
from service.trials.guard import SlotGuard

STUDY = "/api/v1/studies/ext"
# What one ask and one tell may cost, at most (statements, transactions, and of those the ones
# that take SQLite's write lock). Before the one trial protocol: an ask 70 statements in 14
# transactions (13 locking), a tell 33 in 11 (8 locking).
#
# A tell: its slot in one read (1); its trial read through Optuna's reader (6: get_trial loads
# the trial and its five kinds of rows), whose record the slot keeps; Optuna told in one guarded
# write (6, two of them the guard's checks); the slot finished (5); the study's status (1).
# The goal of 12 in 3 would need the slot to keep a trial's intermediate values as they are
# reported (the trial read), a design change left for later.
# An ask is mostly Optuna's own writes, one transaction each: the trial with its attributes,
# then each suggested parameter and attribute (3-4 statements each, one a guard's check).
ASK_STATEMENTS, ASK_TRANSACTIONS, ASK_LOCKING = 69, 14, 13
TELL_STATEMENTS, TELL_TRANSACTIONS, TELL_LOCKING = 19, 5, 2


@dataclass
class Cost:
    statements: int = 0
    transactions: int = 0
    locking: int = 0
    sql: list[str] = field(default_factory=list)


@contextmanager
def counting(engines: list[Engine]) -> Iterator[Cost]:
    """Counts what the threads other than the API's recovery thread send to ``engines``."""
    cost = Cost()

    def ours() -> bool:
        return threading.current_thread().name != "hpt-recovery"

    def on_statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not ours():
            return
        if statement.lstrip().upper().startswith("BEGIN"):
            cost.locking += "IMMEDIATE" in statement.upper()
            return
        cost.statements += 1
        cost.sql.append(statement.split("\n")[0][:120])

    def on_begin(conn: Any) -> None:
        if ours():
            cost.transactions += 1

    original_query = SlotGuard._query

    def guard_query(self: SlotGuard) -> str:
        if ours():
            cost.statements += 1
            cost.sql.append("(slot guard) SELECT 1 FROM hpt_trial_slots ...")
        return original_query(self)

    unique = list({id(engine): engine for engine in engines}.values())
    for engine in unique:
        event.listen(engine, "before_cursor_execute", on_statement)
        event.listen(engine, "begin", on_begin)
    SlotGuard._query = guard_query  # type: ignore[method-assign]
    try:
        yield cost
    finally:
        SlotGuard._query = original_query  # type: ignore[method-assign]
        for engine in unique:
            event.remove(engine, "before_cursor_execute", on_statement)
            event.remove(engine, "begin", on_begin)


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    # Recovery in the API waits a grace period before its first pass, and leases are long:
    # nothing of it runs while the requests are counted (it would not be counted anyway).
    settings = Settings(database_url=database_url, api_key=None, grace_period=600)
    with TestClient(create_app(settings)) as client:
        body = {
            "name": "ext",
            "task": "external",
            "confirm": {"top_k": 0},
            "metric": "loss",
            "direction": "minimize",
            "optimizers": ["adam"],
            "n_trials": 3,
            "seed": 7,
            "pruner": "none",
        }
        assert client.post("/api/v1/studies", json=body).status_code == 201
        yield client


def _engines(client: TestClient) -> list[Engine]:
    state = client.app.state
    return [
        state.db.writer,
        state.db.reader,
        state.writer_storage.engine,
        state.reader_storage.engine,
    ]


def test_one_ask_and_one_tell_cost_a_few_statements_in_a_few_transactions(
    client: TestClient, backend: str
) -> None:
    # A first trial warms what a process does once (Optuna's and SQLAlchemy's caches).
    first = client.post(f"{STUDY}/trials/ask").json()
    url = f"{STUDY}/trials/{first['optimizer']}/{first['number']}/tell"
    assert client.post(url, json={"lease": first["lease"], "value": 0.5}).status_code == 200

    with counting(_engines(client)) as ask_cost:
        response = client.post(f"{STUDY}/trials/ask")
    assert response.status_code == 200, response.text
    trial = response.json()
    url = f"{STUDY}/trials/{trial['optimizer']}/{trial['number']}/tell"
    with counting(_engines(client)) as tell_cost:
        response = client.post(url, json={"lease": trial["lease"], "value": 0.25})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "complete"

    report = (
        f"{backend}: ask {ask_cost.statements} statements in {ask_cost.transactions} "
        f"transactions ({ask_cost.locking} BEGIN IMMEDIATE); tell {tell_cost.statements} "
        f"statements in {tell_cost.transactions} transactions ({tell_cost.locking} BEGIN "
        "IMMEDIATE)"
    )
    print(report)
    print("ask:", *ask_cost.sql, sep="\n  ")
    print("tell:", *tell_cost.sql, sep="\n  ")
    assert tell_cost.statements <= TELL_STATEMENTS, report
    assert tell_cost.transactions <= TELL_TRANSACTIONS, report
    assert ask_cost.statements <= ASK_STATEMENTS, report
    assert ask_cost.transactions <= ASK_TRANSACTIONS, report
    if backend == "sqlite":
        # Reads take no write lock: only the writes' transactions begin IMMEDIATE.
        assert tell_cost.locking <= TELL_LOCKING, report
        assert ask_cost.locking <= ASK_LOCKING, report
