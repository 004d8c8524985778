"""Several workers and the API on one database at once: no lock errors, n_trials exact.

SQLite is the case that matters (one file, several writing processes: WAL, a busy timeout and
write transactions that take the lock at BEGIN must hold). PostgreSQL runs it too: several workers
on one PostgreSQL is the distributed mode.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import sqlalchemy as sa

from service.store.tables import WorkerRow
from tests.helpers import wait_until
from tests.service.support import (
    Server,
    ServiceProcess,
    assert_exact_trials,
    create_study,
    grep_logs,
    inspector,
    tiny_study,
    wait_for_status,
)

STUDY_TIMEOUT = 150.0
LOCK_ERRORS = ("database is locked", "database table is locked", "deadlock detected")


def test_three_workers_and_the_api_share_one_database(
    database_url: str,
    start_server: Callable[..., Server],
    start_worker: Callable[..., ServiceProcess],
) -> None:
    workers = [start_worker(database_url) for _ in range(3)]
    server = start_server(database_url)
    db = inspector(database_url)

    def all_registered() -> bool:
        with db.connect() as conn:
            return conn.scalar(sa.select(sa.func.count()).select_from(WorkerRow)) == 3

    wait_until(all_registered, 90, 0.2, message="three workers to register")

    # Readers hammer the API while the workers write: the dashboard and `hpt study watch` do.
    answers: list[tuple[str, int | str]] = []
    stop_reading = threading.Event()

    def read_continuously() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as reader:
            while not stop_reading.is_set():
                for path in (
                    "/api/v1/studies/first",
                    "/api/v1/studies/first/trials?limit=5",
                    "/api/v1/studies",
                    "/metrics",
                ):
                    try:
                        answers.append((path, reader.get(path).status_code))
                    except httpx.HTTPError as exc:
                        answers.append((path, f"{type(exc).__name__}: {exc}"))

    optimizers = ["sgd", "momentum", "adam"]
    with server.client() as api:
        create_study(api, tiny_study("first", optimizers=optimizers, n_trials=3))
        reader = threading.Thread(target=read_continuously, daemon=True)
        reader.start()
        try:
            create_study(api, tiny_study("second", optimizers=["adagrad", "rmsprop"], n_trials=2))
            everyone = [server.process, *workers]
            first = wait_for_status(api, "first", STUDY_TIMEOUT, processes=everyone)
            second = wait_for_status(api, "second", STUDY_TIMEOUT, processes=everyone)
        finally:
            stop_reading.set()
            reader.join(timeout=30)
        listed = {
            name: api.get(f"/api/v1/studies/{name}/trials", params={"limit": 100}).json()["items"]
            for name in ("first", "second")
        }
        ran = {trial["worker"] for trials in listed.values() for trial in trials}

    assert (first["status"], second["status"]) == ("completed", "completed")
    # What the API shows comes from the slot rows and agrees with Optuna's storage below.
    for study, n_trials in ((first, 3), (second, 2)):
        for row in study["optimizers"]:
            assert (row["finished"], row["running"]) == (n_trials, 0), row
        assert study["progress"]["fraction"] == 1.0
    for name, trials in listed.items():
        finished = [t for t in trials if t["state"] in ("complete", "pruned")]
        assert len(finished) == sum(
            o["finished"] for o in {"first": first, "second": second}[name]["optimizers"]
        )
        assert all(t["origin"] and t["started_at"] and t["completed_at"] for t in finished), trials
    assert_exact_trials(database_url, "first", optimizers, 3)
    assert_exact_trials(database_url, "second", ["adagrad", "rmsprop"], 2)
    for error in LOCK_ERRORS:
        assert not grep_logs([server.process, *workers], error), grep_logs(everyone, error)
    assert answers, "the reader never got an answer"
    failures = [answer for answer in answers if answer[1] != 200]
    assert not failures, f"{len(failures)} of {len(answers)} reads failed: {failures[:10]}"
    assert len(ran) == 3, f"every worker should have run trials; these did: {ran}"
    if db.dialect.name == "sqlite":
        with db.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    db.dispose()
