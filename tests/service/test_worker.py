"""The worker: real ``hpt worker`` processes that are killed and stopped, and the loop in-process.

Studies are created with :func:`service.studies.admin.create_study`, exactly what ``POST /studies``
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
from service.store import optuna_bridge
from service.store.database import Database, db_now, make_optuna_storage
from service.store.tables import StudyRow, TrialSlotRow, WorkerRow
from service.studies.admin import create_study
from service.studies.requests import StudyRequest
from service.trials.guard import SlotTakenBack
from service.trials.lifecycle import claim_slot, revoke_study
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
def view(db: Database) -> Iterator[Engine]:
    """A plain engine to look at the database (never waits for a frozen worker's lock)."""
    engine = inspector(db.url)
    yield engine
    engine.dispose()


def add_study(db: Database, settings: Settings, name: str, **overrides: object) -> None:
    """Create a study as the API does (validated, Optuna studies first, then our rows)."""
    storage = make_optuna_storage(settings.database_url)
    try:
        create_study(
            db=db,
            storage=storage,
            settings=settings,
            request=StudyRequest(**tiny_study(name, **overrides)),
        )
    finally:
        storage.engine.dispose()


def wait_for_study_status(
    view: Engine, name: str, status: str, workers: list[ServiceProcess]
) -> None:
    def reached() -> bool:
        for worker in workers:
            if worker.popen.poll() not in (None, 0):
                raise AssertionError(
                    f"{worker.name} died ({worker.popen.poll()}):\n{worker.tail()}"
                )
        return study_row(view, name).status == status

    def describe() -> str:
        pairs = {
            opt: dict(claimed=p.claimed, finished=p.finished, failed=p.failed)
            for opt, p in pair_rows(view, name).items()
        }
        return f"study {name!r} to be {status} (it is {study_row(view, name).status}: {pairs})"

    wait_until(reached, STUDY_TIMEOUT, 0.2, message=describe)


def heartbeat_of(view: Engine, slot_id: int) -> object:
    return slot(view, slot_id).heartbeat_at


# --------------------------------------------------------------------------- real processes


def test_killed_worker_trial_is_failed_and_the_study_still_completes(
    database_url: str,
    db: Database,
    view: Engine,
    settings: Settings,
    start_worker: Callable[..., ServiceProcess],
) -> None:
    doomed = start_worker(database_url)
    add_study(db, settings, "survivor")

    lost = freeze_during_trial(view, doomed)
    assert optuna_trial_state(view, lost.trial_id) == "RUNNING"
    doomed.kill()
    assert doomed.popen.returncode == -signal.SIGKILL
    rescuer = start_worker(database_url)

    wait_for_study_status(view, "survivor", "completed", [rescuer])

    assert optuna_trial_state(view, lost.trial_id) == "FAIL"
    ended = slot(view, lost.id)
    assert (ended.state, ended.outcome) == ("released", "lost")
    assert doomed.name in ended.reason or str(doomed.pid) in ended.reason, ended.reason
    assert_exact_trials(database_url, "survivor", ["sgd", "adam"], 2, failed=1)
    pairs = pair_rows(view, "survivor")
    assert {opt: (p.finished, p.claimed, p.running) for opt, p in pairs.items()} == {
        "sgd": (2, 2, 0),
        "adam": (2, 2, 0),
    }
    assert sum(p.failed for p in pairs.values()) == 1
    assert study_row(view, "survivor").status == "completed"


def test_a_running_trial_beats_its_slot_and_a_frozen_one_does_not(
    database_url: str,
    db: Database,
    view: Engine,
    settings: Settings,
    start_worker: Callable[..., ServiceProcess],
) -> None:
    # Liveness is the slot's heartbeat, written by the worker's heartbeat thread on the
    # database's clock (HPT_HEARTBEAT_INTERVAL=1 for test workers), not Optuna's heartbeat.
    worker = start_worker(database_url, HPT_GRACE_PERIOD="600")
    add_study(db, settings, "beating", optimizers=["sgd"], n_trials=50, epochs=40)

    running = freeze_during_trial(view, worker)
    frozen_at = heartbeat_of(view, running.id)
    worker.send(signal.SIGCONT)
    wait_until(
        lambda: (
            heartbeat_of(view, running.id) > frozen_at or slot(view, running.id).state != "running"
        ),
        20,
        0.1,
        message="the running slot's heartbeat to move",
    )
    beating = freeze_during_trial(view, worker)
    frozen_at = heartbeat_of(view, beating.id)
    # Frozen, it cannot beat: two heartbeat intervals later the slot is as it was.
    wait_until(lambda: _db_seconds_since(view, frozen_at) >= 2.5, 30, 0.1, message="2.5 s to pass")
    assert heartbeat_of(view, beating.id) == frozen_at
    assert slot(view, beating.id).state == "running"
    worker.kill()


def _db_seconds_since(view: Engine, moment: object) -> float:
    # Elapsed time on the database's clock, like the service's own decisions.
    with view.connect() as conn:
        now = conn.scalar(sa.select(db_now()))
    return (now - moment).total_seconds()


def test_sigterm_lets_the_running_trial_finish_then_the_worker_exits_0(
    database_url: str,
    db: Database,
    view: Engine,
    settings: Settings,
    start_worker: Callable[..., ServiceProcess],
) -> None:
    worker = start_worker(database_url)
    add_study(db, settings, "interrupted", optimizers=["sgd"], n_trials=50)

    running = freeze_during_trial(view, worker)
    worker.send(signal.SIGTERM)  # delivered when it wakes up, in the middle of that trial
    worker.send(signal.SIGCONT)

    assert worker.wait(timeout=60) == 0, worker.tail()
    ended = slot(view, running.id)
    assert ended.state == "finished" and ended.outcome in ("complete", "pruned")
    assert optuna_trial_state(view, running.trial_id) in ("COMPLETE", "PRUNED")
    held = slots_of(view, worker)
    assert held[-1].id == running.id, "no trial may start after SIGTERM"
    assert {s.state for s in held} == {"finished"}
    assert study_row(view, "interrupted").status == "running"
    assert pair_rows(view, "interrupted")["sgd"].running == 0
    with view.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(WorkerRow)) == 0, (
            "a stopped worker unregisters"
        )


# --------------------------------------------------------------------------- the loop in-process


def test_worker_runs_max_trials_then_until_idle(
    db: Database, view: Engine, settings: Settings
) -> None:
    add_study(db, settings, "loop", n_trials=2)

    assert Worker(settings, max_trials=3).run() == 3
    assert sum(p.finished for p in pair_rows(view, "loop").values()) == 3
    assert study_row(view, "loop").status == "running"

    assert Worker(settings, exit_when_idle=True).run() == 1
    assert study_row(view, "loop").status == "completed"
    assert_exact_trials(settings.database_url, "loop", ["sgd", "adam"], 2)
    for pair in pair_rows(view, "loop").values():
        assert (pair.finished, pair.complete + pair.pruned, pair.running) == (2, 2, 0)
        finished = [s for s in _slots(view, pair.id) if s.state == "finished"]
        assert len(finished) == 2
        # The slot is the record: each carries its trial, params and (if complete) value.
        for row in finished:
            assert row.trial_id is not None and row.params, row
            assert row.started_at is not None and row.ended_at is not None
            assert (row.value is not None) == (row.outcome == "complete")
    with view.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(WorkerRow)) == 0


def _slots(view: Engine, pair_id: int) -> list[TrialSlotRow]:
    with sa.orm.Session(view) as session:
        return list(
            session.scalars(
                sa.select(TrialSlotRow).where(TrialSlotRow.study_optimizer_id == pair_id)
            )
        )


def test_trials_that_cannot_run_fail_the_study_after_max_failed_trials(
    db: Database, view: Engine, settings: Settings
) -> None:
    # A worker without the study's task (a plugin installed on the API's machine only): every
    # trial fails, its slot goes back, and after max_failed_trials the study says why it failed.
    add_study(db, settings, "orphan", optimizers=["sgd"], n_trials=2)
    with db.write() as session:
        session.execute(
            sa.update(StudyRow).where(StudyRow.name == "orphan").values(task="plugin_task")
        )

    Worker(settings, exit_when_idle=True).run()

    study = study_row(view, "orphan")
    assert study.status == "failed"
    assert "plugin_task" in study.error, study.error
    pair = pair_rows(view, "orphan")["sgd"]
    assert (pair.failed, pair.claimed, pair.finished, pair.running) == (
        settings.max_failed_trials,
        0,
        0,
        0,
    )
    assert {(s.state, s.outcome) for s in _slots(view, pair.id)} == {("released", "failed")}
    storage = optuna.storages.RDBStorage(settings.database_url)
    trials = optuna.load_study(study_name="orphan/sgd", storage=storage).get_trials()
    storage.engine.dispose()
    assert all(t.state != TrialState.RUNNING for t in trials)


def test_a_slot_taken_back_mid_trial_is_never_written_by_its_worker(
    db: Database, view: Engine, settings: Settings
) -> None:
    # The study is deleted (its slots revoked) while the worker trains: the worker's next write
    # to Optuna is refused by the slot guard, and it records nothing on the slot.
    add_study(db, settings, "revoked", optimizers=["sgd"], n_trials=1, epochs=3)
    worker = Worker(settings, exit_when_idle=True)
    claim = claim_slot(worker.db, holder=worker.worker_id)
    assert claim is not None
    revoke_study(db, "revoked")

    worker.run_claim(claim)

    ended = slot(view, claim.slot_id)
    assert (ended.state, ended.outcome) == ("released", "revoked")
    assert ended.trial_id is None, "the trial never started on a slot taken back"
    storage = optuna.storages.RDBStorage(settings.database_url)
    trials = optuna.load_study(study_name="revoked/sgd", storage=storage).get_trials()
    storage.engine.dispose()
    assert trials == [], "no Optuna trial is written for a revoked slot"
    worker.db.dispose()
    worker.storage.engine.dispose()


def test_a_worker_telling_a_trial_recovery_already_failed_lets_the_slot_go(
    db: Database, settings: Settings
) -> None:
    # A worker frozen past its grace period wakes up after recovery failed its trial (and took
    # its slot): its tell reads the trial's end back and lets the slot go, recording nothing.
    add_study(db, settings, "woken", optimizers=["sgd"], n_trials=1)
    worker = Worker(settings)
    try:
        study = optuna_bridge.load_study(worker.storage, "woken/sgd")
        trial = study.ask()
        assert (
            optuna_bridge.fail_trial(worker.storage, optuna_bridge.trial_id(trial)).state
            == TrialState.FAIL
        )

        with pytest.raises(SlotTakenBack, match="failed by recovery"):
            worker._tell(optuna_bridge.trial_id(trial), TrialState.COMPLETE, 0.5)
        # A trial that failed on its own is read back as it is.
        assert (
            worker._tell(optuna_bridge.trial_id(trial), TrialState.FAIL, None).state
            == TrialState.FAIL
        )
    finally:
        worker.db.dispose()
        worker.storage.engine.dispose()
