"""The slot layer straight against the database, SQLite and PostgreSQL: what keeps n_trials exact.

Studies are inserted as rows (the slot layer does not care what a task is); Optuna studies are
created only where a test needs trials.
"""

from __future__ import annotations

import multiprocessing
import random
import secrets
import threading
import time
from collections import Counter
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy.engine import Engine

from service.db import (
    StudyOptimizerRow,
    StudyRow,
    TrialSlotRow,
    WorkerRow,
    make_engine,
    make_optuna_storage,
    session_scope,
    utcnow,
)
from service.slots import (
    COMPLETED,
    EXTERNAL_TASK,
    FAILED,
    QUEUED,
    RUNNING,
    SLOT_FINISHED,
    SLOT_RELEASED,
    SLOT_RUNNING,
    STOPPED,
    ClaimedSlot,
    claim_trial_slot,
    expire_leases,
    finish_slot,
    mark_slot_running,
    reclaim_lost_slots,
    release_slot,
)
from tests.helpers import wait_until

# --------------------------------------------------------------------------- helpers


def add_study(
    engine: Engine,
    name: str,
    *,
    optimizers: tuple[str, ...] = ("sgd", "adam"),
    n_trials: int = 2,
    task: str = "fake_task",
    status: str = QUEUED,
) -> int:
    with session_scope(engine) as session:
        study = StudyRow(
            name=name,
            task=task,
            metric="val_accuracy",
            direction="maximize",
            epochs=2,
            n_trials=n_trials,
            sampler="random",
            pruner="none",
            seed=0,
            status=status,
        )
        study.optimizers = [
            StudyOptimizerRow(
                position=position,
                optimizer=optimizer,
                optuna_study_name=f"{name}/{optimizer}",
                search_space={},
                n_trials=n_trials,
            )
            for position, optimizer in enumerate(optimizers)
        ]
        session.add(study)
        session.flush()
        return study.id


def pairs(engine: Engine, study_id: int) -> dict[str, StudyOptimizerRow]:
    with session_scope(engine) as session:
        rows = session.scalars(
            sa.select(StudyOptimizerRow).where(StudyOptimizerRow.study_id == study_id)
        ).all()
        return {row.optimizer: row for row in rows}


def study_row(engine: Engine, study_id: int) -> StudyRow:
    with session_scope(engine) as session:
        return session.get_one(StudyRow, study_id)


def set_status(engine: Engine, study_id: int, status: str) -> None:
    with session_scope(engine) as session:
        session.execute(sa.update(StudyRow).where(StudyRow.id == study_id).values(status=status))


def slot_states(engine: Engine) -> dict[int, str]:
    with session_scope(engine) as session:
        return dict(session.execute(sa.select(TrialSlotRow.id, TrialSlotRow.state)).all())


def claim(engine: Engine, holder: str = "w1", **kwargs: Any) -> ClaimedSlot | None:
    return claim_trial_slot(engine, holder=holder, **kwargs)


# --------------------------------------------------------------------------- claims


def test_claims_take_turns_between_optimizers_and_start_the_study(engine: Engine) -> None:
    study_id = add_study(engine, "turns", optimizers=("sgd", "adam"), n_trials=2)
    assert study_row(engine, study_id).status == QUEUED

    claimed = [claim(engine) for _ in range(5)]

    got = [slot for slot in claimed if slot is not None]
    assert [slot.optimizer for slot in got] == ["sgd", "adam", "sgd", "adam"]
    assert claimed[4] is None, "a fifth claim on 2 optimizers x 2 trials must find nothing"
    assert [slot.ordinal for slot in got] == [1, 1, 2, 2]
    assert {slot.optuna_study_name for slot in got} == {"turns/sgd", "turns/adam"}
    assert study_row(engine, study_id).status == RUNNING
    assert {name: row.claimed for name, row in pairs(engine, study_id).items()} == {
        "sgd": 2,
        "adam": 2,
    }


def test_workers_and_ask_tell_never_take_each_others_slots(engine: Engine) -> None:
    trained = add_study(engine, "trained", optimizers=("sgd",), n_trials=1)
    external = add_study(engine, "ext", optimizers=("adam",), n_trials=1, task=EXTERNAL_TASK)

    worker_slot = claim(engine)
    assert worker_slot is not None and worker_slot.study_id == trained
    assert claim(engine) is None, "a worker must never take an ask/tell study's slot"

    lease = claim(engine, "lease", external=True, study_id=external, lease_token="t1")
    assert lease is not None and lease.study_id == external and lease.lease_token == "t1"
    assert claim(engine, "lease", external=True, study_id=external, lease_token="t2") is None


def _race(
    url: str,
    holder: str,
    attempts: int,
    studies: tuple[int, int],
    barrier: Any,
    results: Any,
) -> None:
    # Runs in a spawned process with its own engine. First everyone claims the few slots of one
    # study at once; then everyone claims, finishes and gives back slots of another as fast as it
    # can until it completes: SQLite's write lock changes hands hundreds of times a second.
    engine = make_engine(url)
    got: list[tuple[int, int]] = []
    error = None
    rng = random.Random(holder)
    try:
        with engine.connect():
            pass
        barrier.wait(timeout=60)
        race_study, churn_study = studies
        for _ in range(attempts):
            slot = claim_trial_slot(engine, holder=holder, study_id=race_study)
            if slot is not None:
                got.append((slot.slot_id, slot.ordinal))
        barrier.wait(timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            slot = claim_trial_slot(engine, holder=holder, study_id=churn_study)
            if slot is None:
                if study_row(engine, churn_study).status == COMPLETED:
                    break
                continue
            if rng.random() < 0.3:
                release_slot(engine, slot.slot_id, reason="boom")
            else:
                finish_slot(engine, slot.slot_id)
        else:
            error = "the churn study did not complete within 60 s"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        barrier.abort()  # the others stop waiting for this one
    finally:
        engine.dispose()
    results.put((holder, got, error))


def test_racing_processes_keep_n_trials_exact_without_lock_errors(
    engine: Engine, database_url: str
) -> None:
    n_trials, n_processes, attempts = 5, 4, 12
    study_id = add_study(engine, "race", optimizers=("sgd",), n_trials=n_trials)
    churn_id = add_study(engine, "churn", optimizers=("sgd", "adam"), n_trials=25)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(n_processes)
    results = context.Queue()
    workers = [
        context.Process(
            target=_race,
            args=(database_url, f"p{i}", attempts, (study_id, churn_id), barrier, results),
        )
        for i in range(n_processes)
    ]
    for process in workers:
        process.start()
    try:
        outcomes = [results.get(timeout=120) for _ in workers]
    finally:
        for process in workers:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()

    errors = {holder: error for holder, _, error in outcomes if error}
    assert not errors, f"claims raised: {errors}"
    claims = [claim for _, got, _ in outcomes for claim in got]
    assert len(claims) == n_trials, f"{len(claims)} of {n_processes * attempts} claims succeeded"
    assert sorted(ordinal for _, ordinal in claims) == list(range(1, n_trials + 1))
    assert len({slot_id for slot_id, _ in claims}) == n_trials
    row = pairs(engine, study_id)["sgd"]
    assert (row.claimed, row.issued) == (n_trials, n_trials)
    churn = pairs(engine, churn_id)
    for optimizer, row in churn.items():
        assert (row.claimed, row.finished) == (25, 25), optimizer
        assert row.issued == 25 + row.failed, optimizer
    assert study_row(engine, churn_id).status == COMPLETED


def test_racing_threads_finish_exactly_n_trials_despite_failures(engine: Engine) -> None:
    # Threads claim, and either finish or give back (a failed trial) what they got, until the
    # study completes: every optimizer ends with exactly n_trials finished.
    n_trials, n_threads = 6, 6
    study_id = add_study(engine, "churn", optimizers=("sgd", "adam"), n_trials=n_trials)
    errors: list[str] = []
    deadline = time.monotonic() + 60

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while time.monotonic() < deadline:
                slot = claim(engine, f"t{seed}")
                if slot is None:
                    if study_row(engine, study_id).status == COMPLETED:
                        return
                    time.sleep(0.01)
                    continue
                if rng.random() < 0.3:
                    assert release_slot(engine, slot.slot_id, reason="boom")
                else:
                    assert finish_slot(engine, slot.slot_id)
            errors.append(f"thread {seed} ran out of time")
        except Exception as exc:
            errors.append(f"thread {seed}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=churn, args=(seed,)) for seed in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)

    assert not errors, errors
    study = study_row(engine, study_id)
    assert study.status == COMPLETED and study.finished_at is not None
    for optimizer, row in pairs(engine, study_id).items():
        assert (row.claimed, row.finished) == (n_trials, n_trials), optimizer
        assert row.issued == n_trials + row.failed, optimizer
    states = Counter(slot_states(engine).values())
    assert states[SLOT_FINISHED] == 2 * n_trials
    assert set(states) <= {SLOT_FINISHED, SLOT_RELEASED}


def test_last_slots_of_two_optimizers_finished_at_once_complete_the_study(
    engine: Engine,
) -> None:
    # Each finish sees the other optimizer unfinished unless the completion check is serialized
    # (a write skew under PostgreSQL's READ COMMITTED): the study would stay running forever.
    for attempt in range(20):
        study_id = add_study(engine, f"skew-{attempt}", optimizers=("sgd", "adam"), n_trials=1)
        slots = [claim(engine), claim(engine)]
        assert all(slots), "one slot per optimizer"
        barrier = threading.Barrier(len(slots))
        outcomes: list[bool] = []

        def finish(slot: ClaimedSlot, barrier: threading.Barrier, outcomes: list[bool]) -> None:
            barrier.wait()
            outcomes.append(finish_slot(engine, slot.slot_id))

        threads = [
            threading.Thread(target=finish, args=(slot, barrier, outcomes)) for slot in slots
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert outcomes == [True, True]
        assert study_row(engine, study_id).status == COMPLETED, f"attempt {attempt}"


# --------------------------------------------------------------------------- finish / release


def test_release_gives_the_slot_back_exactly_once(engine: Engine) -> None:
    study_id = add_study(engine, "release", optimizers=("sgd",), n_trials=1)
    slot = claim(engine)
    assert slot is not None
    assert claim(engine) is None, "the only slot is taken"

    assert release_slot(engine, slot.slot_id, reason="trial raised") is True
    assert release_slot(engine, slot.slot_id, reason="trial raised again") is False
    assert finish_slot(engine, slot.slot_id) is False, "a released slot cannot finish"

    row = pairs(engine, study_id)["sgd"]
    assert (row.claimed, row.failed, row.finished) == (0, 1, 0)
    again = claim(engine)
    assert again is not None and again.ordinal == 2
    assert claim(engine) is None, "a double release must not have made two slots"


def test_finish_counts_once_and_completes_the_study_at_the_last_trial(engine: Engine) -> None:
    study_id = add_study(engine, "finish", optimizers=("sgd", "adam"), n_trials=2)
    slots = [claim(engine) for _ in range(4)]
    assert all(slots)

    for slot in slots[:3]:
        assert finish_slot(engine, slot.slot_id) is True
        assert study_row(engine, study_id).status == RUNNING
    assert finish_slot(engine, slots[0].slot_id) is False, "finished twice"
    assert release_slot(engine, slots[0].slot_id, reason="late") is False

    assert finish_slot(engine, slots[3].slot_id) is True
    study = study_row(engine, study_id)
    assert study.status == COMPLETED and study.finished_at is not None
    assert {name: row.finished for name, row in pairs(engine, study_id).items()} == {
        "sgd": 2,
        "adam": 2,
    }
    assert claim(engine) is None


def test_stopped_study_gives_no_new_slots_but_running_ones_finish(engine: Engine) -> None:
    study_id = add_study(engine, "stop", optimizers=("sgd",), n_trials=3)
    running = claim(engine)
    assert running is not None
    assert mark_slot_running(engine, running.slot_id, trial_id=1, trial_number=0)

    set_status(engine, study_id, STOPPED)

    assert claim(engine) is None
    assert finish_slot(engine, running.slot_id) is True
    assert study_row(engine, study_id).status == STOPPED
    assert pairs(engine, study_id)["sgd"].finished == 1


def test_max_failed_trials_marks_the_study_failed(engine: Engine) -> None:
    study_id = add_study(engine, "fails", optimizers=("sgd", "adam"), n_trials=3)

    first = claim(engine)
    assert first is not None and first.optimizer == "sgd"
    release_slot(engine, first.slot_id, reason="CUDA on fire", max_failed_trials=2)
    assert study_row(engine, study_id).status == RUNNING

    second = claim(engine)  # adam's turn: its first failure
    third = claim(engine)  # sgd again: its second
    assert (second.optimizer, third.optimizer) == ("adam", "sgd")
    release_slot(engine, second.slot_id, reason="adam hiccup", max_failed_trials=2)
    assert study_row(engine, study_id).status == RUNNING
    release_slot(engine, third.slot_id, reason="CUDA on fire", max_failed_trials=2)

    study = study_row(engine, study_id)
    assert study.status == FAILED
    assert "sgd" in study.error and "CUDA on fire" in study.error
    assert claim(engine) is None


def test_release_without_a_failure_limit_retries_forever(engine: Engine) -> None:
    study_id = add_study(engine, "retry", optimizers=("sgd",), n_trials=1)
    for _ in range(15):
        slot = claim(engine)
        assert slot is not None
        release_slot(engine, slot.slot_id, reason="flaky")
    assert study_row(engine, study_id).status == RUNNING
    assert pairs(engine, study_id)["sgd"].failed == 15


# --------------------------------------------------------------------------- dead workers


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")
def test_reclaim_lost_slots_fails_stale_trials_and_gives_their_slots_back(
    engine: Engine, database_url: str
) -> None:
    grace = 1
    storage = make_optuna_storage(database_url, heartbeat_interval=1, grace_period=grace)
    study_id = add_study(engine, "reap", optimizers=("sgd",), n_trials=4)
    study = optuna.create_study(study_name="reap/sgd", storage=storage, direction="maximize")

    def start_trial(slot: ClaimedSlot) -> optuna.Trial:
        trial = study.ask()
        storage.record_heartbeat(trial._trial_id)
        assert mark_slot_running(
            engine, slot.slot_id, trial_id=trial._trial_id, trial_number=trial.number
        )
        return trial

    dead = claim(engine, "dead-worker")
    dead_trial = start_trial(dead)
    never_started = claim(engine, "died-before-its-trial")
    told = claim(engine, "died-after-tell")
    study.tell(start_trial(told), 0.5)
    alive = claim(engine, "alive-worker")
    alive_trial = start_trial(alive)

    def alive_worker_beats() -> None:
        # A live worker is registered and refreshes its row, besides its trial's heartbeat.
        storage.record_heartbeat(alive_trial._trial_id)
        with session_scope(engine) as session:
            session.merge(WorkerRow(id="alive-worker", host="test", pid=0, last_seen_at=utcnow()))

    alive_worker_beats()
    # Slots younger than the grace period are never touched, however slow this machine is.
    assert reclaim_lost_slots(engine, storage, grace_period=3600) == 0, "nothing is stale yet"

    reclaimed = 0

    def two_reclaimed() -> bool:
        nonlocal reclaimed
        alive_worker_beats()
        reclaimed += reclaim_lost_slots(engine, storage, grace_period=grace)
        # The told slot was claimed last, so it may pass the cutoff a round later.
        return reclaimed >= 2 and slot_states(engine)[told.slot_id] == SLOT_FINISHED

    wait_until(two_reclaimed, timeout=15, interval=0.2, message="the dead slots to be reaped")

    assert reclaimed == 2
    assert storage.get_trial(dead_trial._trial_id).state == TrialState.FAIL
    assert storage.get_trial(alive_trial._trial_id).state == TrialState.RUNNING
    states = slot_states(engine)
    assert states[dead.slot_id] == SLOT_RELEASED
    assert states[never_started.slot_id] == SLOT_RELEASED
    assert states[told.slot_id] == SLOT_FINISHED
    assert states[alive.slot_id] == SLOT_RUNNING
    row = pairs(engine, study_id)["sgd"]
    assert (row.claimed, row.finished, row.failed) == (2, 1, 2)
    assert claim(engine) is not None and claim(engine) is not None, "two slots went back"
    assert claim(engine) is None
    storage.engine.dispose()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")
def test_reclaim_fails_the_trial_of_a_worker_that_died_before_its_first_heartbeat(
    engine: Engine, database_url: str
) -> None:
    # Optuna starts a trial's heartbeat thread together with the objective; a worker killed in
    # between (its first trial loads the task's data there) leaves a RUNNING trial without any
    # heartbeat row, which Optuna's fail_stale_trials never calls stale. Its slot must still go
    # back, or the study never completes.
    grace = 1
    storage = make_optuna_storage(database_url, heartbeat_interval=1, grace_period=grace)
    study_id = add_study(engine, "no-beat", optimizers=("sgd",), n_trials=1)
    study = optuna.create_study(study_name="no-beat/sgd", storage=storage, direction="maximize")
    dead = claim(engine, "died-before-its-first-heartbeat")
    trial = study.ask()
    assert mark_slot_running(
        engine, dead.slot_id, trial_id=trial._trial_id, trial_number=trial.number
    )

    wait_until(
        lambda: reclaim_lost_slots(engine, storage, grace_period=grace),
        timeout=3 * grace + 5,
        interval=0.2,
        message="the slot of the trial without heartbeat to be given back",
    )

    assert storage.get_trial(trial._trial_id).state == TrialState.FAIL
    assert slot_states(engine)[dead.slot_id] == SLOT_RELEASED
    assert pairs(engine, study_id)["sgd"].claimed == 0
    storage.engine.dispose()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")
def test_reclaim_fails_a_trial_its_worker_never_recorded_on_the_slot(
    engine: Engine, database_url: str
) -> None:
    # Killed between study.ask() and mark_slot_running: the slot is released as never started,
    # and the RUNNING trial that no slot owns is failed rather than shown running forever.
    grace = 1
    storage = make_optuna_storage(database_url, heartbeat_interval=1, grace_period=grace)
    study_id = add_study(engine, "orphan", optimizers=("sgd",), n_trials=1)
    study = optuna.create_study(study_name="orphan/sgd", storage=storage, direction="maximize")
    dead = claim(engine, "died-after-ask")
    orphan = study.ask()

    def reaped() -> bool:
        reclaim_lost_slots(engine, storage, grace_period=grace)
        return (
            storage.get_trial(orphan._trial_id).state == TrialState.FAIL
            and slot_states(engine)[dead.slot_id] == SLOT_RELEASED
        )

    wait_until(
        reaped,
        timeout=3 * grace + 5,
        interval=0.2,
        message="the orphaned trial to be failed and its slot given back",
    )
    assert pairs(engine, study_id)["sgd"].claimed == 0
    assert claim(engine) is not None, "the slot went back"
    storage.engine.dispose()


def test_expired_lease_fails_its_trial_and_offers_its_params_again(
    engine: Engine, database_url: str
) -> None:
    storage = make_optuna_storage(database_url)
    study_id = add_study(engine, "lease", optimizers=("adam",), n_trials=2, task=EXTERNAL_TASK)
    study = optuna.create_study(study_name="lease/adam", storage=storage, direction="minimize")

    def ask(seconds: float) -> tuple[ClaimedSlot, optuna.Trial]:
        slot = claim(
            engine,
            "lease",
            external=True,
            study_id=study_id,
            lease_token=secrets.token_hex(8),
            lease_seconds=seconds,
        )
        assert slot is not None
        trial = study.ask()
        trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        trial.suggest_categorical("batch_size", [16, 32, 64])
        assert mark_slot_running(
            engine, slot.slot_id, trial_id=trial._trial_id, trial_number=trial.number
        )
        return slot, trial

    told_slot, told_trial = ask(0.5)
    study.tell(told_trial, 0.1)
    assert finish_slot(engine, told_slot.slot_id)
    late_slot, late_trial = ask(0.5)
    assert expire_leases(engine, storage) == 0, "no lease has run out yet"

    expired = wait_until(lambda: expire_leases(engine, storage), timeout=10, interval=0.1)

    assert expired == 1, "only the lease that was never told expires"
    assert storage.get_trial(late_trial._trial_id).state == TrialState.FAIL
    assert storage.get_trial(told_trial._trial_id).state == TrialState.COMPLETE
    assert slot_states(engine)[late_slot.slot_id] == SLOT_RELEASED
    assert slot_states(engine)[told_slot.slot_id] == SLOT_FINISHED
    row = pairs(engine, study_id)["adam"]
    assert (row.claimed, row.finished, row.failed) == (1, 1, 1)

    _, retried = ask(60)
    assert retried.params == late_trial.params, "the next ask must get the expired params"
    assert expire_leases(engine, storage) == 0
    storage.engine.dispose()


@pytest.mark.parametrize("status", [STOPPED, FAILED, COMPLETED])
def test_no_claims_from_studies_that_ended(engine: Engine, status: str) -> None:
    add_study(engine, f"ended-{status}", optimizers=("sgd",), n_trials=3, status=status)
    assert claim(engine) is None
