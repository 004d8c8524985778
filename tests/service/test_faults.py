"""Faults users meet, with real processes: time zones and skewed clocks, a database gone for a
while, a process frozen holding SQLite's write lock, deletes racing workers and readers.

Nothing is lost, nothing is counted twice, nothing answers 500.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import optuna
import psycopg
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy.engine import URL

from service.store import optuna_bridge
from service.store.database import Database, db_now
from service.store.tables import TrialSlotRow, WorkerRow
from service.trials.lifecycle import claim_slot
from tests.helpers import wait_until
from tests.service.support import (
    Processes,
    Server,
    ServiceProcess,
    assert_exact_trials,
    create_study,
    freeze_during_trial,
    get_study,
    grep_logs,
    inspector,
    optuna_trial_state,
    slot,
    tiny_study,
    wait_for_status,
)

STUDY_TIMEOUT = 150.0
# How long the database stays away: three of the tests' grace periods (HPT_GRACE_PERIOD=5).
OUTAGE_SECONDS = 15.0


def _tz_env(tz: str) -> dict[str, str]:
    return {"TZ": tz}


@contextmanager
def _local_time_zone(tz: str) -> Iterator[None]:
    """This process's local time zone is ``tz`` inside the block (Optuna writes local times)."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = tz
    time.tzset()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = previous
        time.tzset()


# --------------------------------------------------------------------------- one clock


# Hours behind and ahead of UTC, each once per backend and per case (in-process recovery runs
# both zones on both backends: tests/service/test_recovery.py).
KILL_ZONE = {"sqlite": "Pacific/Honolulu", "postgres": "Asia/Tokyo"}
ORPHAN_ZONE = {"sqlite": "Asia/Tokyo", "postgres": "Pacific/Honolulu"}


def test_a_killed_worker_is_recovered_on_any_time_zone(
    database_url: str,
    backend: str,
    start_server: Callable[..., Server],
    start_worker: Callable[..., ServiceProcess],
) -> None:
    tz = KILL_ZONE[backend]
    server = start_server(database_url, **_tz_env(tz))
    doomed = start_worker(database_url, **_tz_env(tz))
    db = inspector(database_url)
    with server.client() as api:
        create_study(api, tiny_study("zoned", n_trials=3, epochs=3))
        lost = freeze_during_trial(db, doomed)
        doomed.kill()
        rescuer = start_worker(database_url, **_tz_env(tz))
        study = wait_for_status(api, "zoned", STUDY_TIMEOUT, processes=[rescuer, server.process])
    assert study["status"] == "completed"
    assert optuna_trial_state(db, lost.trial_id) == "FAIL"
    assert slot(db, lost.id).state == "released"
    assert_exact_trials(database_url, "zoned", ["sgd", "adam"], 3, failed=1)


def test_orphans_are_failed_and_live_trials_are_not_on_any_time_zone(
    database_url: str,
    backend: str,
    start_worker: Callable[..., ServiceProcess],
    start_server: Callable[..., Server],
) -> None:
    tz = ORPHAN_ZONE[backend]
    server = start_server(database_url, **_tz_env(tz))
    with server.client() as api:
        create_study(api, tiny_study("orphans", optimizers=["sgd"], n_trials=3, epochs=2))
    db = Database.connect(database_url)
    storage = optuna.storages.RDBStorage(database_url)
    try:
        # A worker that died right after creating its Optuna trial, before recording it on its
        # slot; it wrote the trial's start in its own (far from UTC) local time.
        dead = claim_slot(db, holder="dead-worker")
        assert dead is not None
        with _local_time_zone(tz):
            study = optuna_bridge.load_study(storage, dead.optuna_study_name)
            orphan = optuna_bridge.start_trial(study, slot_id=dead.slot_id, origin="sampler")
        with db.write() as session:  # silent for a minute, on the database's clock
            session.execute(
                sa.update(TrialSlotRow)
                .where(TrialSlotRow.id == dead.slot_id)
                .values(heartbeat_at=db_now(-60))
            )
        worker = start_worker(database_url, **_tz_env(tz))
        with server.client() as api:
            done = wait_for_status(api, "orphans", STUDY_TIMEOUT, processes=[worker])
        assert done["status"] == "completed"
        assert storage.get_trial(optuna_bridge.trial_id(orphan)).state == TrialState.FAIL
        # Every trial the live worker ran under that time zone completed: none was taken for an
        # orphan because of its local start time.
        states = assert_exact_trials(database_url, "orphans", ["sgd"], 3, failed=1)
        assert states["sgd"][TrialState.FAIL] == 1
    finally:
        storage.engine.dispose()
        db.dispose()


SKEWED_CLOCK = """\
# Injected by the test: this process's wall clock is off by HPT_TEST_CLOCK_SKEW seconds.
import datetime as _datetime
import os as _os
import time as _time

_SKEW = float(_os.environ.get("HPT_TEST_CLOCK_SKEW", "0"))
_real_time = _time.time


class _SkewedDateTime(_datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return super().now(tz) + _datetime.timedelta(seconds=_SKEW)

    @classmethod
    def utcnow(cls):
        return super().utcnow() + _datetime.timedelta(seconds=_SKEW)

    @classmethod
    def today(cls):
        return cls.now()


_datetime.datetime = _SkewedDateTime
_time.time = lambda: _real_time() + _SKEW
"""


def test_a_worker_with_a_skewed_clock_neither_fails_nor_is_failed(
    database_url: str,
    tmp_path: Path,
    processes: Processes,
    start_server: Callable[..., Server],
    start_worker: Callable[..., ServiceProcess],
) -> None:
    # Its clock is an hour behind and in another zone, while the grace period is 5 s: any
    # comparison of its times with another host's would fail its trials or theirs.
    clock = tmp_path / "skewed-clock"
    clock.mkdir()
    (clock / "sitecustomize.py").write_text(SKEWED_CLOCK)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import datetime, time; print(time.time(), datetime.datetime.now())",
        ],
        env={**os.environ, "PYTHONPATH": str(clock), "HPT_TEST_CLOCK_SKEW": "-3600"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(probe.stdout.split()[0]) < time.time() - 3000, "the clock is skewed"
    server = start_server(database_url)
    skewed = start_worker(
        database_url,
        PYTHONPATH=os.pathsep.join(filter(None, [str(clock), os.environ.get("PYTHONPATH")])),
        HPT_TEST_CLOCK_SKEW="-3600",
        TZ="Asia/Tokyo",
    )
    db = inspector(database_url)

    def holders() -> set[str]:
        with db.connect() as conn:
            return {h for h in conn.scalars(sa.select(TrialSlotRow.holder)) if h}

    with server.client() as api:
        create_study(api, tiny_study("skew", n_trials=6, epochs=4))

        # The honest worker joins once the skewed one trains (started together on a loaded
        # machine, the honest one could run every trial before the other one was up).
        def skewed_trains() -> bool:
            assert skewed.alive(), skewed.log()
            return any(f"-{skewed.pid}-" in h for h in holders())

        wait_until(skewed_trains, STUDY_TIMEOUT, message="the skewed worker to claim a trial")
        honest = start_worker(database_url)
        study = wait_for_status(
            api, "skew", STUDY_TIMEOUT, processes=[skewed, honest, server.process]
        )
    assert study["status"] == "completed"
    assert_exact_trials(database_url, "skew", ["sgd", "adam"], 6, failed=0)


# --------------------------------------------------------------------------- the database away


def _set_connections(admin: URL, database: str, *, allowed: bool) -> None:
    conninfo = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {"true" if allowed else "false"}'
        )
        if not allowed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )


@pytest.mark.postgres
@pytest.mark.slow
def test_a_database_outage_leaves_every_worker_alive_and_the_counts_exact(
    postgres_url: str,
    postgres_admin_url: URL,
    start_server: Callable[..., Server],
    start_worker: Callable[..., ServiceProcess],
) -> None:
    server = start_server(postgres_url)
    workers = [start_worker(postgres_url) for _ in range(2)]
    database = sa.engine.make_url(postgres_url).database
    assert database is not None
    with server.client(timeout=30) as api:
        create_study(api, tiny_study("outage", n_trials=8, epochs=4))
        wait_until(
            lambda: get_study(api, "outage")["progress"]["finished"] >= 2,
            90,
            0.2,
            message="the first trials to finish",
        )
        _set_connections(postgres_admin_url, database, allowed=False)
        answers: dict[str, set[int]] = {}
        try:
            deadline = time.monotonic() + OUTAGE_SECONDS
            while time.monotonic() < deadline:
                for method, path in (
                    ("GET", "/healthz"),
                    ("GET", "/api/v1/studies/outage"),
                    ("GET", "/api/v1/studies/outage/trials"),
                    ("GET", "/api/v1/studies/outage/best"),
                    ("GET", "/api/v1/best?task=digits_mlp"),
                    ("GET", "/api/v1/studies"),
                    ("POST", "/api/v1/studies"),
                ):
                    body = tiny_study("during-outage") if method == "POST" else None
                    status = api.request(method, path, json=body).status_code
                    answers.setdefault(path, set()).add(status)
                for worker in workers:
                    assert worker.alive(), f"{worker.name} died in the outage:\n{worker.tail()}"
                time.sleep(0.5)
        finally:
            _set_connections(postgres_admin_url, database, allowed=True)
        for path, statuses in answers.items():
            assert 500 not in statuses, f"{path} answered 500 during the outage: {statuses}"
            assert 503 in statuses, f"{path} never said the database was away: {statuses}"
        study = wait_for_status(api, "outage", STUDY_TIMEOUT, processes=[*workers, server.process])
    assert study["status"] == "completed"
    # Every FAIL trial is a slot's failure, or an orphan recovery failed: a trial whose creation
    # committed while its worker saw the outage, created again on the retry. Never counted.
    orphans = grep_logs([server.process, *workers], "failed orphaned trial")
    assert_exact_trials(
        postgres_url,
        "outage",
        ["sgd", "adam"],
        8,
        failed=sum(o["failed"] for o in study["optimizers"])
        + sum(len(lines) for lines in orphans.values()),
    )
    for worker in workers:
        assert worker.alive()
        said = [line for line in worker.log().splitlines() if "database is unreachable" in line]
        assert 1 <= len(said) <= 3, f"{worker.name} should say so once per outage: {said}"


def test_a_process_frozen_holding_the_sqlite_write_lock_blocks_no_read(
    sqlite_url: str,
    processes: Processes,
    start_server: Callable[..., Server],
    start_worker: Callable[..., ServiceProcess],
) -> None:
    server = start_server(sqlite_url)
    worker = start_worker(sqlite_url)
    with server.client() as api:
        create_study(api, tiny_study("frozen-lock", n_trials=6, epochs=4))
        wait_until(
            lambda: get_study(api, "frozen-lock")["progress"]["finished"] >= 1,
            90,
            0.2,
            message="a first trial",
        )
    # A stand-in for a worker stopped (Ctrl-Z, SIGSTOP, a long pause) inside a write
    # transaction: it takes the write lock and freezes itself.
    path = sa.engine.make_url(sqlite_url).database
    holder = processes.start(
        "lock-holder",
        [
            sys.executable,
            "-c",
            "import os, signal, sqlite3, sys\n"
            f"c = sqlite3.connect({path!r}, timeout=60, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "print('locked', flush=True)\n"
            "os.kill(os.getpid(), signal.SIGSTOP)\n",
        ],
    )
    wait_until(lambda: "locked" in holder.log(), 30, 0.05, message="the lock to be taken")
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as reader:
            for path_ in (
                "/healthz",
                "/api/v1/studies/frozen-lock",
                "/api/v1/studies/frozen-lock/trials?limit=5",
                "/api/v1/studies/frozen-lock/best",
                "/metrics",
            ):
                response = reader.get(path_)
                assert response.status_code == 200, f"{path_}: {response.status_code}"
        # Held past the grace period: every heartbeat is held up meanwhile.
        wait_until(
            lambda: _silent_workers(sqlite_url, seconds=6) and worker.alive(),
            60,
            0.2,
            message="the workers' heartbeats to be held up past the grace period",
        )
    finally:
        holder.kill()
    with server.client() as api:
        study = wait_for_status(api, "frozen-lock", STUDY_TIMEOUT, processes=[worker])
    assert study["status"] == "completed"
    assert_exact_trials(sqlite_url, "frozen-lock", ["sgd", "adam"], 6, failed=0)


def _silent_workers(database_url: str, *, seconds: float) -> int:
    db = inspector(database_url)  # reads need no lock
    try:
        with db.connect() as conn:
            return conn.scalar(
                sa.select(sa.func.count())
                .select_from(WorkerRow)
                .where(WorkerRow.last_seen_at < db_now(-seconds))
            )
    finally:
        db.dispose()


def test_a_frozen_worker_is_replaced_and_its_late_writes_miss(
    database_url: str,
    start_server: Callable[..., Server],
    start_worker: Callable[..., ServiceProcess],
) -> None:
    server = start_server(database_url)
    frozen = start_worker(database_url)
    db = inspector(database_url)
    with server.client() as api:
        create_study(api, tiny_study("thaw", n_trials=4, epochs=3))
        stuck = freeze_during_trial(db, frozen)  # never frozen holding SQLite's lock
        other = start_worker(database_url)
        wait_until(lambda: slot(db, stuck.id).state == "released", 60, 0.2, message="its slot back")
        frozen.send(signal.SIGCONT)  # wakes up, finishes its trial: every write of it misses
        study = wait_for_status(api, "thaw", STUDY_TIMEOUT, processes=[frozen, other])
    assert study["status"] == "completed"
    assert_exact_trials(database_url, "thaw", ["sgd", "adam"], 4, failed=1)
    assert optuna_trial_state(db, stuck.trial_id) == "FAIL"


# --------------------------------------------------------------------------- deletes racing


def test_deleting_a_study_while_it_trains_touches_no_other_study(
    database_url: str,
    start_server: Callable[..., Server],
    start_worker: Callable[..., ServiceProcess],
) -> None:
    server = start_server(database_url)
    workers = [start_worker(database_url) for _ in range(2)]
    db = inspector(database_url)
    external = {
        "name": "bystander",
        "task": "external",
        "confirm": {"top_k": 0},
        "optimizers": ["sgd", "adam"],
        "n_trials": 4,
        "metric": "loss",
        "direction": "minimize",
        "sampler": "random",
        "pruner": "none",
        "seed": 3,
    }
    with server.client() as api:
        create_study(api, tiny_study("doomed", n_trials=40, epochs=6))
        # One worker stopped in the middle of a trial, the other training on: the delete
        # races both.
        stuck = freeze_during_trial(db, workers[0])
        deleted = api.delete("/api/v1/studies/doomed")
        assert deleted.status_code == 200, deleted.text
        assert api.get("/api/v1/studies/doomed").status_code == 404
        # The same name and new ids at once (SQLite hands freed row ids out again): the deleted
        # study's worker, woken up, writes into nothing.
        create_study(api, external)
        again = create_study(api, tiny_study("doomed", n_trials=1, epochs=1))
        assert again["status"] in ("queued", "running", "completed")
        workers[0].send(signal.SIGCONT)
        assert stuck.trial_id is not None
        told: dict[tuple[str, int], float] = {}
        for i in range(8):
            trial = api.post("/api/v1/studies/bystander/trials/ask").json()
            value = 1.0 + i
            reply = api.post(
                f"/api/v1/studies/bystander/trials/{trial['optimizer']}/{trial['number']}/tell",
                json={"value": value, "lease": trial["lease"]},
            )
            assert reply.status_code == 200, reply.text
            told[(trial["optimizer"], trial["number"])] = value
        wait_for_status(api, "doomed", STUDY_TIMEOUT, processes=workers)
        names = optuna.get_all_study_names(storage=database_url)
    assert sorted(n for n in names if n.startswith("doomed/")) == ["doomed/adam", "doomed/sgd"]
    storage = optuna.storages.RDBStorage(database_url)
    try:
        for optimizer in ("sgd", "adam"):
            trials = optuna.load_study(
                study_name=f"bystander/{optimizer}", storage=storage
            ).get_trials()
            assert {t.number: t.value for t in trials} == {
                number: value for (opt, number), value in told.items() if opt == optimizer
            }, "only what the bystander's client told"
            assert {t.state for t in trials} == {TrialState.COMPLETE}
    finally:
        storage.engine.dispose()
    for worker in workers:
        assert worker.alive(), worker.tail()


def test_reads_and_creates_racing_a_delete_never_answer_500(
    database_url: str,
    start_server: Callable[..., Server],
    start_worker: Callable[..., ServiceProcess],
) -> None:
    server = start_server(database_url)
    start_worker(database_url)
    statuses: dict[str, set[int]] = {}
    stop = threading.Event()

    def read() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as reader:
            while not stop.is_set():
                for path in ("/api/v1/studies/racer/trials", "/api/v1/studies/racer"):
                    statuses.setdefault(path, set()).add(reader.get(path).status_code)

    with server.client() as api:
        readers = [threading.Thread(target=read) for _ in range(2)]
        for reader in readers:
            reader.start()
        try:
            for _ in range(4):
                create = api.post("/api/v1/studies", json=tiny_study("racer", n_trials=6))
                statuses.setdefault("create", set()).add(create.status_code)
                time.sleep(0.3)
                delete = api.delete("/api/v1/studies/racer")
                statuses.setdefault("delete", set()).add(delete.status_code)
                recreate = api.post("/api/v1/studies", json=tiny_study("racer", n_trials=1))
                statuses.setdefault("recreate", set()).add(recreate.status_code)
                api.delete("/api/v1/studies/racer")
        finally:
            stop.set()
            for reader in readers:
                reader.join()
    for what, seen in statuses.items():
        assert 500 not in seen, f"{what} answered 500: {seen}"
    assert statuses["create"] <= {201, 409}
    assert statuses["recreate"] <= {201, 409}
    assert statuses["delete"] <= {200, 202, 404}
    assert statuses["/api/v1/studies/racer/trials"] <= {200, 404}
