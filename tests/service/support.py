"""What the end-to-end tests look at: the API's answers, Optuna's storage, the slot table.

The database is read through a plain engine (``inspector``), never the service's: the service's
SQLite engine takes the write lock at BEGIN, and a test that has just frozen a worker with SIGSTOP
must still be able to read while that worker holds the lock.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import optuna
import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy.engine import Engine

from service.store.tables import StudyOptimizerRow, StudyRow, TrialSlotRow
from tests.helpers import wait_until

# Re-exported: the service tests import the process classes from here.
from tests.processes import LOG_TAIL_LINES as LOG_TAIL_LINES
from tests.processes import Processes as Processes
from tests.processes import ServiceProcess as ServiceProcess

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
FINAL_STATUSES = ("completed", "stopped", "failed")


# --------------------------------------------------------------------------- the server


@dataclass
class Server:
    """A real uvicorn server of the API."""

    process: ServiceProcess
    base_url: str
    database_url: str
    api_key: str | None = None

    def client(self, *, auth: bool = True, timeout: float = 30.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if auth and self.api_key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)


# --------------------------------------------------------------------------- requests


def tiny_study(name: str, **overrides: Any) -> dict[str, Any]:
    """A study request that trains in well under a second per trial."""
    return {
        "name": name,
        "task": "digits_mlp",
        "optimizers": ["sgd", "adam"],
        "n_trials": 2,
        "epochs": 2,
        "sampler": "tpe",
        "pruner": "none",
        "seed": 0,
        "confirm": {"top_k": 0},  # the confirmation phase's own tests turn it on
        "warm_start": "none",  # the warm start's own tests turn it on
        **overrides,
    }


def inspector(database_url: str) -> Engine:
    """A read-only view of the database: no BEGIN IMMEDIATE, so it never waits for a writer."""
    return sa.create_engine(database_url, poolclass=sa.pool.NullPool)


# --------------------------------------------------------------------------- the API


def create_study(client: httpx.Client, body: Mapping[str, Any]) -> dict[str, Any]:
    response = client.post("/api/v1/studies", json=dict(body))
    assert response.status_code == 201, f"create answered {response.status_code}: {response.text}"
    return response.json()


def get_study(client: httpx.Client, name: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/studies/{name}")
    assert response.status_code == 200, (
        f"GET study answered {response.status_code}: {response.text}"
    )
    return response.json()


def wait_for_status(
    client: httpx.Client,
    name: str,
    timeout: float,
    *,
    statuses: Iterable[str] = FINAL_STATUSES,
    processes: Iterable[ServiceProcess] = (),
) -> dict[str, Any]:
    """Poll GET /studies/{name} until its status is one of ``statuses``; returns the study.

    Fails at once when one of ``processes`` (the API, the workers) died meanwhile.
    """
    wanted = set(statuses)
    last: dict[str, Any] = {}
    watched = list(processes)

    def reached() -> bool:
        for process in watched:
            if process.popen.poll() not in (None, 0):
                raise AssertionError(
                    f"{process.name} died ({process.popen.poll()}) while waiting for study "
                    f"{name!r}:\n{process.tail()}"
                )
        last.update(get_study(client, name))
        return last["status"] in wanted

    def describe() -> str:
        progress = {
            o["optimizer"]: {k: o[k] for k in ("finished", "running", "failed")}
            for o in last.get("optimizers", [])
        }
        return (
            f"study {name!r} to become {sorted(wanted)}; it is {last.get('status')!r}, "
            f"progress {progress}, error {last.get('error')!r}"
        )

    wait_until(reached, timeout, 0.25, message=describe)
    return last


# --------------------------------------------------------------------------- Optuna's storage


def trial_states(database_url: str, optuna_study_name: str) -> Counter[TrialState]:
    """How many trials of each state one Optuna study holds, read with Optuna itself."""
    storage = optuna.storages.RDBStorage(database_url)
    try:
        study = optuna.load_study(study_name=optuna_study_name, storage=storage)
        return Counter(trial.state for trial in study.get_trials(deepcopy=False))
    finally:
        storage.engine.dispose()


def assert_exact_trials(
    database_url: str, name: str, optimizers: Iterable[str], n_trials: int, *, failed: int = 0
) -> dict[str, Counter[TrialState]]:
    """Each optimizer's Optuna study has exactly ``n_trials`` finished trials and none left
    running or waiting; ``failed`` is the number of FAIL trials allowed over all optimizers."""
    states = {opt: trial_states(database_url, f"{name}/{opt}") for opt in optimizers}
    for optimizer, counts in states.items():
        finished = sum(counts[state] for state in FINISHED_STATES)
        assert finished == n_trials, f"{name}/{optimizer}: {finished} finished trials, {counts}"
        assert counts[TrialState.RUNNING] == 0, f"{name}/{optimizer}: trial left RUNNING {counts}"
        assert counts[TrialState.WAITING] == 0, f"{name}/{optimizer}: trial left WAITING {counts}"
    total_failed = sum(counts[TrialState.FAIL] for counts in states.values())
    assert total_failed == failed, f"{total_failed} FAIL trials, expected {failed}: {states}"
    return states


def optuna_trial_state(engine: Engine, trial_id: int) -> str:
    """The state of one trial, read straight from Optuna's table ('RUNNING', 'FAIL' ...)."""
    with engine.connect() as conn:
        state = conn.execute(
            sa.text("SELECT state FROM trials WHERE trial_id = :id"), {"id": trial_id}
        ).scalar_one()
    return str(getattr(state, "name", state))


# --------------------------------------------------------------------------- slots and workers


def slots_of(engine: Engine, process: ServiceProcess) -> list[TrialSlotRow]:
    """The slots a worker process has held, oldest first (its id embeds its pid)."""
    with sa.orm.Session(engine) as session:
        return list(
            session.scalars(
                sa.select(TrialSlotRow)
                .where(TrialSlotRow.holder.like(f"%-{process.pid}-%"))
                .order_by(TrialSlotRow.id)
            )
        )


def slot(engine: Engine, slot_id: int) -> TrialSlotRow:
    with sa.orm.Session(engine) as session:
        return session.get_one(TrialSlotRow, slot_id)


def study_row(engine: Engine, name: str) -> StudyRow | None:
    with sa.orm.Session(engine) as session:
        return session.scalar(sa.select(StudyRow).where(StudyRow.name == name))


def pair_rows(engine: Engine, name: str) -> dict[str, StudyOptimizerRow]:
    with sa.orm.Session(engine) as session:
        rows = session.scalars(
            sa.select(StudyOptimizerRow).join(StudyRow).where(StudyRow.name == name)
        )
        return {row.optimizer: row for row in rows}


def freeze_during_trial(
    engine: Engine,
    worker: ServiceProcess,
    timeout: float = 90.0,
    *,
    with_heartbeat: bool = False,
) -> TrialSlotRow:
    """SIGSTOP ``worker`` at a moment it is training a trial (its slot running, its Optuna trial
    not yet told); returns that trial's slot.

    A trial of two epochs lasts a fraction of a second, too short to hit with a signal at will;
    freezing the worker and looking makes "while a trial runs" certain instead of likely. On
    SQLite it is never left frozen holding the write lock. ``with_heartbeat``: only once the
    trial has recorded an Optuna heartbeat. The caller SIGCONTs or SIGKILLs it.
    """

    def frozen_in_trial() -> TrialSlotRow | None:
        code = worker.popen.poll()
        if code is not None:
            raise AssertionError(f"{worker.name} exited ({code}):\n{worker.tail()}")
        os.kill(worker.pid, signal.SIGSTOP)
        running = [s for s in slots_of(engine, worker) if s.state == "running"]
        if (
            running
            # Not between telling Optuna and recording it on the slot: then the trial is over.
            and optuna_trial_state(engine, running[-1].trial_id) == "RUNNING"
            and not _holds_sqlite_write_lock(engine)
            and (not with_heartbeat or has_heartbeat(engine, running[-1].trial_id))
        ):
            return running[-1]
        os.kill(worker.pid, signal.SIGCONT)
        return None

    return wait_until(
        frozen_in_trial, timeout, 0.05, message=f"{worker.name} to be running a trial"
    )


def has_heartbeat(engine: Engine, trial_id: int | None) -> bool:
    """Whether the trial has recorded an Optuna heartbeat yet."""
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text("SELECT COUNT(*) FROM trial_heartbeats WHERE trial_id = :id"),
                {"id": trial_id},
            ).scalar_one()
        )


def _holds_sqlite_write_lock(engine: Engine) -> bool:
    # Frozen inside a write transaction, the worker would block every other writer (the API's
    # next POST among them) until it is woken: freeze it again at a better moment.
    if engine.dialect.name != "sqlite":
        return False
    connection = sqlite3.connect(engine.url.database, timeout=0, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        connection.close()


def grep_logs(processes: Iterable[ServiceProcess], needle: str) -> dict[str, list[str]]:
    """The lines of each process's log that contain ``needle`` (case-insensitive)."""
    hits = {}
    for process in processes:
        lines = [line for line in process.log().splitlines() if needle.lower() in line.lower()]
        if lines:
            hits[process.name] = lines
    return hits
