"""The worker: real ``hpt worker`` processes that are killed and stopped, and the loop in-process.

Studies are created with :func:`service.study_ops.create_study`, exactly what ``POST /studies``
runs, so these tests need no API server.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy.engine import Engine

from service.config import Settings
from service.db import StudyRow, WorkerRow, make_optuna_storage, session_scope
from service.study_ops import StudyRequest, create_study
from service.worker import Worker
from tests.helpers import wait_until
from tests.service.support import (
    ServiceProcess,
    assert_exact_trials,
    freeze_during_trial,
    inspector,
    optuna_trial_state,
    pair_rows,
    slot,
    slots_of,
    study_row,
    tiny_study,
)

STUDY_TIMEOUT = 120.0


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        heartbeat_interval=1,
        grace_period=3,
        poll_interval=0.2,
        max_failed_trials=3,
    )


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    engine = inspector(database_url)
    yield engine
    engine.dispose()


def add_study(engine: Engine, settings: Settings, name: str, **overrides: object) -> None:
    """Create a study as the API does (validated, Optuna studies first, then our rows)."""
    storage = make_optuna_storage(settings.database_url)
    try:
        create_study(
            engine=engine,
            storage=storage,
            settings=settings,
            request=StudyRequest(**tiny_study(name, **overrides)),
        )
    finally:
        storage.engine.dispose()


def wait_for_study_status(
    db: Engine, name: str, status: str, workers: list[ServiceProcess]
) -> None:
    def reached() -> bool:
        for worker in workers:
            if worker.popen.poll() not in (None, 0):
                raise AssertionError(
                    f"{worker.name} died ({worker.popen.poll()}):\n{worker.tail()}"
                )
        return study_row(db, name).status == status

    def describe() -> str:
        pairs = {
            opt: dict(claimed=p.claimed, finished=p.finished, failed=p.failed)
            for opt, p in pair_rows(db, name).items()
        }
        return f"study {name!r} to be {status} (it is {study_row(db, name).status}: {pairs})"

    wait_until(reached, STUDY_TIMEOUT, 0.2, message=describe)


# --------------------------------------------------------------------------- real processes


def test_killed_worker_trial_is_failed_and_the_study_still_completes(
    database_url: str,
    engine: Engine,
    db: Engine,
    settings: Settings,
    start_worker: Callable[..., ServiceProcess],
) -> None:
    doomed = start_worker(database_url)
    add_study(engine, settings, "survivor")

    # Once its trial beats: a worker killed before the first beat leaves a trial that Optuna can
    # never call stale (test_slots covers that case).
    lost = freeze_during_trial(db, doomed, with_heartbeat=True)
    assert optuna_trial_state(db, lost.trial_id) == "RUNNING"
    doomed.kill()
    assert doomed.popen.returncode == -signal.SIGKILL
    rescuer = start_worker(database_url)

    wait_for_study_status(db, "survivor", "completed", [rescuer])

    assert optuna_trial_state(db, lost.trial_id) == "FAIL"
    assert slot(db, lost.id).state == "released"
    assert_exact_trials(database_url, "survivor", ["sgd", "adam"], 2, failed=1)
    pairs = pair_rows(db, "survivor")
    assert {opt: (p.finished, p.claimed) for opt, p in pairs.items()} == {
        "sgd": (2, 2),
        "adam": (2, 2),
    }
    assert sum(p.failed for p in pairs.values()) == 1


def test_sigterm_lets_the_running_trial_finish_then_the_worker_exits_0(
    database_url: str,
    engine: Engine,
    db: Engine,
    settings: Settings,
    start_worker: Callable[..., ServiceProcess],
) -> None:
    worker = start_worker(database_url)
    add_study(engine, settings, "interrupted", optimizers=["sgd"], n_trials=50)

    running = freeze_during_trial(db, worker)
    worker.send(signal.SIGTERM)  # delivered when it wakes up, in the middle of that trial
    worker.send(signal.SIGCONT)

    assert worker.wait(timeout=60) == 0, worker.tail()
    assert slot(db, running.id).state == "finished"
    assert optuna_trial_state(db, running.trial_id) in ("COMPLETE", "PRUNED")
    held = slots_of(db, worker)
    assert held[-1].id == running.id, "no trial may start after SIGTERM"
    assert {s.state for s in held} == {"finished"}
    assert study_row(db, "interrupted").status == "running"
    with db.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(WorkerRow)) == 0, (
            "a stopped worker unregisters"
        )


# --------------------------------------------------------------------------- the loop in-process


def test_worker_runs_max_trials_then_until_idle(
    engine: Engine, db: Engine, settings: Settings
) -> None:
    add_study(engine, settings, "loop", n_trials=2)

    assert Worker(settings, max_trials=3).run() == 3
    assert sum(p.finished for p in pair_rows(db, "loop").values()) == 3
    assert study_row(db, "loop").status == "running"

    assert Worker(settings, exit_when_idle=True).run() == 1
    assert study_row(db, "loop").status == "completed"
    assert_exact_trials(settings.database_url, "loop", ["sgd", "adam"], 2)
    with db.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(WorkerRow)) == 0


def test_trials_that_cannot_run_fail_the_study_after_max_failed_trials(
    engine: Engine, db: Engine, settings: Settings
) -> None:
    # A worker without the study's task (a plugin installed on the API's machine only): every
    # trial fails, its slot goes back, and after max_failed_trials the study says why it failed.
    add_study(engine, settings, "orphan", optimizers=["sgd"], n_trials=2)
    with session_scope(engine) as session:
        session.execute(
            sa.update(StudyRow).where(StudyRow.name == "orphan").values(task="plugin_task")
        )

    Worker(settings, exit_when_idle=True).run()

    study = study_row(db, "orphan")
    assert study.status == "failed"
    assert "plugin_task" in study.error, study.error
    pair = pair_rows(db, "orphan")["sgd"]
    assert (pair.failed, pair.claimed, pair.finished) == (settings.max_failed_trials, 0, 0)
    storage = optuna.storages.RDBStorage(settings.database_url)
    trials = optuna.load_study(study_name="orphan/sgd", storage=storage).get_trials()
    storage.engine.dispose()
    assert all(t.state != TrialState.RUNNING for t in trials)
