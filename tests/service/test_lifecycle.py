"""The slot lifecycle straight against the database, SQLite and PostgreSQL: what keeps n_trials
exact, every state change happening once, only legal changes, and studies taking turns.

Studies are inserted as rows (the lifecycle does not care what a task is).
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest

from service.errors import Conflict, StudyNotFound
from service.store.database import Database, db_now
from service.trials.lifecycle import (
    TRANSITIONS,
    Claim,
    Ending,
    beat,
    claim_slot,
    finish_slot,
    release_slot,
    renew_lease,
    start_slot,
    stop_study,
)
from service.vocabulary import EXTERNAL_TASK, ConfigOrigin, SlotOutcome, SlotState, StudyStatus
from tests.service.rows import (
    add_study,
    claim,
    counters,
    pairs,
    set_slot,
    slot_row,
    slot_states,
    study_row,
)

COMPLETE = Ending(SlotOutcome.COMPLETE, value=0.5)
FAILED = Ending(SlotOutcome.FAILED, reason="trial raised")


def run(db: Database, slot: Claim, trial_id: int = 1) -> None:
    """claimed -> running, as a worker does once its Optuna trial exists."""
    assert start_slot(
        db, slot.slot_id, slot.claim_token, trial_id=trial_id, trial_number=0, params={"lr": 0.1}
    )


def finish(db: Database, slot: Claim, ending: Ending = COMPLETE) -> bool:
    return finish_slot(db, slot.slot_id, ending, token=slot.claim_token)


# --------------------------------------------------------------------------- claims


def test_claims_take_turns_between_optimizers_and_start_the_study(db: Database) -> None:
    study_id = add_study(db, "turns", optimizers=("sgd", "adam"), n_trials=2)
    assert study_row(db, study_id).status == StudyStatus.QUEUED

    claimed = [claim(db) for _ in range(5)]

    got = [slot for slot in claimed if slot is not None]
    assert [slot.optimizer for slot in got] == ["sgd", "adam", "sgd", "adam"]
    assert claimed[4] is None, "a fifth claim on 2 optimizers x 2 trials must find nothing"
    assert [slot.ordinal for slot in got] == [1, 1, 2, 2]
    assert {slot.optuna_study_name for slot in got} == {"turns/sgd", "turns/adam"}
    assert len({slot.claim_token for slot in got}) == 4, "every claim has its own token"
    assert study_row(db, study_id).status == StudyStatus.RUNNING
    for optimizer in ("sgd", "adam"):
        assert counters(db, study_id, optimizer) == {
            "claimed": 2,
            "running": 2,
            "finished": 0,
            "complete": 0,
            "pruned": 0,
            "failed": 0,
            "issued": 2,
        }
    rows = [slot_row(db, slot.slot_id) for slot in got]
    assert {row.state for row in rows} == {SlotState.CLAIMED}
    assert all(row.claimed_at is not None and row.heartbeat_at is not None for row in rows)


def test_workers_and_ask_tell_never_take_each_others_slots(db: Database) -> None:
    trained = add_study(db, "trained", optimizers=("sgd",), n_trials=1)
    external = add_study(db, "ext", optimizers=("adam",), n_trials=1, task=EXTERNAL_TASK)

    worker_slot = claim(db)
    assert worker_slot is not None and worker_slot.study_id == trained
    assert worker_slot.lease_expires_at is None, "a worker's slot has no lease"
    assert claim(db) is None, "a worker must never take an ask/tell study's slot"

    lease = claim(db, "ask/tell", external=True, study_id=external, lease_seconds=60)
    assert lease is not None and lease.study_id == external
    assert lease.lease_expires_at is not None
    assert claim(db, "ask/tell", external=True, study_id=external, lease_seconds=60) is None
    assert claim(db, "ask/tell", external=True, study_id=trained, lease_seconds=60) is None


def _race(
    url: str,
    holder: str,
    attempts: int,
    studies: tuple[int, int],
    barrier: Any,
    results: Any,
) -> None:
    # Runs in a spawned process with its own engines. First everyone claims the few slots of
    # one study at once; then everyone claims, runs, finishes or gives back slots of another as
    # fast as it can until it completes: SQLite's write lock changes hands hundreds of times a
    # second.
    db = Database.connect(url)
    got: list[tuple[int, int]] = []
    error = None
    rng = random.Random(holder)
    try:
        with db.read():
            pass
        barrier.wait(timeout=60)
        race_study, churn_study = studies
        for _ in range(attempts):
            slot = claim_slot(db, holder=holder, study_id=race_study)
            if slot is not None:
                got.append((slot.slot_id, slot.ordinal))
        barrier.wait(timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            slot = claim_slot(db, holder=holder, study_id=churn_study)
            if slot is None:
                if study_row(db, churn_study).status == StudyStatus.COMPLETED:
                    break
                continue
            if rng.random() < 0.3:
                assert release_slot(db, slot.slot_id, FAILED, token=slot.claim_token)
            else:
                run(db, slot)
                assert finish(db, slot)
        else:
            error = "the churn study did not complete within 60 s"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        barrier.abort()  # the others stop waiting for this one
    finally:
        db.dispose()
    results.put((holder, got, error))


@pytest.mark.slow
def test_racing_processes_keep_n_trials_exact_without_lock_errors(
    db: Database, database_url: str
) -> None:
    n_trials, n_processes, attempts = 5, 4, 12
    study_id = add_study(db, "race", optimizers=("sgd",), n_trials=n_trials)
    churn_id = add_study(db, "churn", optimizers=("sgd", "adam"), n_trials=15)
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
    race = counters(db, study_id, "sgd")
    assert (race["claimed"], race["running"], race["issued"]) == (n_trials, n_trials, n_trials)
    for optimizer in ("sgd", "adam"):
        row = counters(db, churn_id, optimizer)
        assert (row["claimed"], row["finished"], row["complete"]) == (15, 15, 15), optimizer
        assert row["running"] == 0, optimizer
        assert row["issued"] == 15 + row["failed"], optimizer
    assert study_row(db, churn_id).status == StudyStatus.COMPLETED


def test_racing_threads_finish_exactly_n_trials_despite_failures(db: Database) -> None:
    # Threads claim, and either finish or give back (a failed trial) what they got, until the
    # study completes: every optimizer ends with exactly n_trials finished.
    n_trials, n_threads = 6, 6
    study_id = add_study(db, "churn", optimizers=("sgd", "adam"), n_trials=n_trials)
    errors: list[str] = []
    deadline = time.monotonic() + 60

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while time.monotonic() < deadline:
                slot = claim(db, f"t{seed}")
                if slot is None:
                    if study_row(db, study_id).status == StudyStatus.COMPLETED:
                        return
                    time.sleep(0.01)
                    continue
                if rng.random() < 0.3:
                    assert release_slot(db, slot.slot_id, FAILED, token=slot.claim_token)
                else:
                    run(db, slot)
                    outcome = COMPLETE if rng.random() < 0.7 else Ending(SlotOutcome.PRUNED)
                    assert finish(db, slot, outcome)
            errors.append(f"thread {seed} ran out of time")
        except Exception as exc:
            errors.append(f"thread {seed}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=churn, args=(seed,)) for seed in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)

    assert not errors, errors
    study = study_row(db, study_id)
    assert study.status == StudyStatus.COMPLETED and study.finished_at is not None
    for optimizer in ("sgd", "adam"):
        row = counters(db, study_id, optimizer)
        assert (row["claimed"], row["finished"], row["running"]) == (n_trials, n_trials, 0)
        assert row["complete"] + row["pruned"] == n_trials, optimizer
        assert row["issued"] == n_trials + row["failed"], optimizer
    states = Counter(slot_states(db).values())
    assert states[SlotState.FINISHED] == 2 * n_trials
    assert set(states) <= {SlotState.FINISHED, SlotState.RELEASED}


def test_last_slots_of_two_optimizers_finished_at_once_complete_the_study(db: Database) -> None:
    # Each finish sees the other optimizer unfinished unless the completion check is serialized
    # (a write skew under PostgreSQL's READ COMMITTED): the study would stay running forever.
    for attempt in range(20):
        study_id = add_study(db, f"skew-{attempt}", optimizers=("sgd", "adam"), n_trials=1)
        slots = [claim(db), claim(db)]
        assert all(slots), "one slot per optimizer"
        for slot in slots:
            run(db, slot)
        barrier = threading.Barrier(len(slots))
        outcomes: list[bool] = []

        def finish_at_once(slot: Claim, barrier: threading.Barrier, outcomes: list[bool]) -> None:
            barrier.wait()
            outcomes.append(finish(db, slot))

        threads = [
            threading.Thread(target=finish_at_once, args=(slot, barrier, outcomes))
            for slot in slots
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert outcomes == [True, True]
        assert study_row(db, study_id).status == StudyStatus.COMPLETED, f"attempt {attempt}"


# --------------------------------------------------------------------------- fair turns


def test_an_old_big_study_and_a_stream_of_new_small_ones_take_turns(db: Database) -> None:
    # Each new one-trial study arrives while the big one runs; the two claims that follow go one
    # to each, never both to the newcomer (which would starve the big study) nor both to the
    # big one.
    big = add_study(db, "big", optimizers=("sgd",), n_trials=100)
    first = claim(db)
    assert first is not None and first.study_id == big
    got: list[str] = []
    for index in range(12):
        add_study(db, f"small-{index}", optimizers=("sgd",), n_trials=1)
        pair = [claim(db), claim(db)]
        assert all(pair)
        names = sorted(slot.study_name for slot in pair)
        assert names == ["big", f"small-{index}"], f"round {index}: {names}"
        got.extend(slot.study_name for slot in pair)
    assert counters(db, big, "sgd")["claimed"] == 13
    # Then the big study has the workers to itself.
    assert {claim(db).study_name for _ in range(3)} == {"big"}


def test_studies_of_equal_age_alternate_and_optimizers_within_them(db: Database) -> None:
    first = add_study(db, "first", optimizers=("sgd", "adam"), n_trials=3)
    second = add_study(db, "second", optimizers=("sgd",), n_trials=3)
    order = [(slot.study_id, slot.optimizer) for slot in (claim(db) for _ in range(6))]
    assert order == [
        (first, "sgd"),
        (second, "sgd"),
        (first, "adam"),
        (second, "sgd"),
        (first, "sgd"),
        (second, "sgd"),
    ]


# --------------------------------------------------------------------------- finish / release


def test_release_gives_the_slot_back_exactly_once(db: Database) -> None:
    study_id = add_study(db, "release", optimizers=("sgd",), n_trials=1)
    slot = claim(db)
    assert slot is not None
    assert claim(db) is None, "the only slot is taken"

    assert release_slot(db, slot.slot_id, FAILED, token=slot.claim_token) is True
    assert release_slot(db, slot.slot_id, FAILED, token=slot.claim_token) is False
    assert release_slot(db, slot.slot_id, FAILED) is False, "recovery cannot release it again"
    assert finish(db, slot) is False, "a released slot cannot finish"

    row = slot_row(db, slot.slot_id)
    assert (row.state, row.outcome, row.reason) == ("released", "failed", "trial raised")
    assert row.ended_at is not None
    assert counters(db, study_id, "sgd") == {
        "claimed": 0,
        "running": 0,
        "finished": 0,
        "complete": 0,
        "pruned": 0,
        "failed": 1,
        "issued": 1,
    }
    again = claim(db)
    assert again is not None and again.ordinal == 2
    assert claim(db) is None, "a double release must not have made two slots"


def test_finish_counts_once_keeps_the_best_and_completes_the_study(db: Database) -> None:
    study_id = add_study(db, "finish", optimizers=("sgd", "adam"), n_trials=2)
    slots = [claim(db) for _ in range(4)]
    assert all(slots)
    for slot in slots:
        run(db, slot)
    values = {slots[0].slot_id: 0.7, slots[2].slot_id: 0.9, slots[1].slot_id: 0.4}

    for slot in slots[:3]:
        ending = Ending(SlotOutcome.COMPLETE, value=values[slot.slot_id], test_value=0.1)
        assert finish(db, slot, ending) is True
        assert study_row(db, study_id).status == StudyStatus.RUNNING
    assert finish(db, slots[0]) is False, "finished twice"
    assert finish_slot(db, slots[0].slot_id, COMPLETE) is False, "recovery cannot finish it again"
    assert release_slot(db, slots[0].slot_id, FAILED, token=slots[0].claim_token) is False

    assert finish(db, slots[3], Ending(SlotOutcome.PRUNED, reason="diverged")) is True
    study = study_row(db, study_id)
    assert study.status == StudyStatus.COMPLETED and study.finished_at is not None
    rows = pairs(db, study_id)
    assert (rows["sgd"].finished, rows["sgd"].complete, rows["sgd"].running) == (2, 2, 0)
    assert (rows["adam"].finished, rows["adam"].complete, rows["adam"].pruned) == (2, 1, 1)
    assert (rows["sgd"].best_slot_id, rows["sgd"].best_value) == (slots[2].slot_id, 0.9)
    assert (rows["adam"].best_slot_id, rows["adam"].best_value) == (slots[1].slot_id, 0.4)
    best = slot_row(db, slots[2].slot_id)
    assert (best.state, best.outcome, best.value, best.test_value) == (
        "finished",
        "complete",
        0.9,
        0.1,
    )
    assert claim(db) is None


def test_minimizing_study_keeps_the_lowest_value(db: Database) -> None:
    study_id = add_study(db, "low", optimizers=("sgd",), n_trials=3, direction="minimize")
    for value in (0.5, 0.2, 0.3):
        slot = claim(db)
        run(db, slot)
        assert finish(db, slot, Ending(SlotOutcome.COMPLETE, value=value))
    assert pairs(db, study_id)["sgd"].best_value == 0.2


def test_stopped_study_gives_no_new_slots_but_running_ones_finish(db: Database) -> None:
    study_id = add_study(db, "stop", optimizers=("sgd",), n_trials=3)
    running = claim(db)
    assert running is not None
    run(db, running)

    assert stop_study(db, "stop") == StudyStatus.STOPPED
    assert stop_study(db, "stop") == StudyStatus.STOPPED, "stopping twice changes nothing"

    assert claim(db) is None
    assert finish(db, running) is True
    study = study_row(db, study_id)
    assert study.status == StudyStatus.STOPPED and study.finished_at is not None
    assert pairs(db, study_id)["sgd"].finished == 1
    with pytest.raises(StudyNotFound):
        stop_study(db, "no-such-study")


def test_a_completed_study_cannot_be_stopped(db: Database) -> None:
    add_study(db, "done", optimizers=("sgd",), n_trials=1)
    slot = claim(db)
    run(db, slot)
    assert finish(db, slot)
    with pytest.raises(Conflict, match="completed"):
        stop_study(db, "done")


def test_max_failed_trials_marks_the_study_failed(db: Database) -> None:
    study_id = add_study(db, "fails", optimizers=("sgd", "adam"), n_trials=3)

    def fail(slot: Claim, reason: str) -> None:
        ending = Ending(SlotOutcome.FAILED, reason=reason)
        assert release_slot(db, slot.slot_id, ending, token=slot.claim_token, max_failed_trials=2)

    first = claim(db)
    assert first is not None and first.optimizer == "sgd"
    fail(first, "CUDA on fire")
    assert study_row(db, study_id).status == StudyStatus.RUNNING

    second = claim(db)  # adam's turn: its first failure
    third = claim(db)  # sgd again: its second
    assert (second.optimizer, third.optimizer) == ("adam", "sgd")
    fail(second, "adam hiccup")
    assert study_row(db, study_id).status == StudyStatus.RUNNING
    fail(third, "CUDA on fire")

    study = study_row(db, study_id)
    assert study.status == StudyStatus.FAILED and study.finished_at is not None
    assert "sgd" in study.error and "CUDA on fire" in study.error
    assert claim(db) is None


def test_release_without_a_failure_limit_retries_forever(db: Database) -> None:
    study_id = add_study(db, "retry", optimizers=("sgd",), n_trials=1)
    for _ in range(15):
        slot = claim(db)
        assert slot is not None
        assert release_slot(db, slot.slot_id, FAILED, token=slot.claim_token)
    assert study_row(db, study_id).status == StudyStatus.RUNNING
    assert counters(db, study_id, "sgd")["failed"] == 15


def test_a_lost_import_slot_is_not_offered_again(db: Database) -> None:
    # An imported trial's config is its client's: a slot of it given back (its API died, its
    # lease ran out) is not queued for the next claim, unlike a worker's lost config.
    study_id = add_study(db, "imported", optimizers=("sgd",), n_trials=2, task=EXTERNAL_TASK)
    slot = claim(
        db,
        "import",
        external=True,
        study_id=study_id,
        optimizer="sgd",
        bringing=ConfigOrigin.IMPORT,
        lease_seconds=60,
    )
    assert slot is not None and slot.origin == ConfigOrigin.IMPORT
    run(db, slot)
    lost = Ending(SlotOutcome.EXPIRED, params={"lr": 0.1}, reason="the lease ran out")
    assert release_slot(db, slot.slot_id, lost, token=slot.claim_token)
    assert not pairs(db, study_id)["sgd"].planned_configs


@pytest.mark.parametrize(
    "status", [StudyStatus.STOPPED, StudyStatus.FAILED, StudyStatus.COMPLETED, StudyStatus.DELETING]
)
def test_no_claims_from_studies_that_ended(db: Database, status: StudyStatus) -> None:
    add_study(db, f"ended-{status}", optimizers=("sgd",), n_trials=3, status=status)
    external = add_study(
        db, f"ext-{status}", optimizers=("sgd",), n_trials=3, task=EXTERNAL_TASK, status=status
    )
    assert claim(db) is None
    assert claim(db, external=True, study_id=external, lease_seconds=60) is None


# --------------------------------------------------------------------------- legal changes only


def test_transitions_table_is_the_documented_state_machine() -> None:
    legal = dict(TRANSITIONS)
    assert legal == {
        SlotState.CLAIMED: {SlotState.RUNNING, SlotState.RELEASED},
        SlotState.RUNNING: {SlotState.FINISHED, SlotState.RELEASED},
        SlotState.FINISHED: set(),
        SlotState.RELEASED: set(),
    }


def test_illegal_transitions_are_refused(db: Database) -> None:
    study_id = add_study(db, "illegal", optimizers=("sgd",), n_trials=3)
    slot = claim(db)

    # claimed -> finished skips running: no trial was ever recorded to finish.
    assert finish(db, slot) is False
    assert slot_row(db, slot.slot_id).state == SlotState.CLAIMED
    run(db, slot)
    # running -> running: a second start must not overwrite the recorded trial.
    assert not start_slot(
        db, slot.slot_id, slot.claim_token, trial_id=99, trial_number=5, params={}
    )
    assert slot_row(db, slot.slot_id).trial_id == 1
    assert finish(db, slot)
    # finished -> anything: ended slots stay ended.
    assert not start_slot(db, slot.slot_id, slot.claim_token, trial_id=2, trial_number=1, params={})
    assert release_slot(db, slot.slot_id, FAILED) is False
    assert slot_row(db, slot.slot_id).state == SlotState.FINISHED

    released = claim(db)
    assert release_slot(db, released.slot_id, FAILED, token=released.claim_token)
    assert not start_slot(
        db, released.slot_id, released.claim_token, trial_id=3, trial_number=2, params={}
    ), "released -> running"
    assert finish_slot(db, released.slot_id, COMPLETE) is False, "released -> finished"
    assert counters(db, study_id, "sgd")["finished"] == 1


def test_outcomes_go_with_their_transition(db: Database) -> None:
    add_study(db, "outcomes", optimizers=("sgd",), n_trials=1)
    slot = claim(db)
    run(db, slot)
    for outcome in (SlotOutcome.FAILED, SlotOutcome.LOST, SlotOutcome.EXPIRED):
        with pytest.raises(ValueError):
            finish_slot(db, slot.slot_id, Ending(outcome), token=slot.claim_token)
    for outcome in (SlotOutcome.COMPLETE, SlotOutcome.PRUNED):
        with pytest.raises(ValueError):
            release_slot(db, slot.slot_id, Ending(outcome), token=slot.claim_token)
    assert slot_row(db, slot.slot_id).state == SlotState.RUNNING


def test_a_holders_changes_need_its_claim_token(db: Database) -> None:
    study_id = add_study(db, "tokens", optimizers=("sgd",), n_trials=2)
    mine, theirs = claim(db, "me"), claim(db, "them")
    wrong = theirs.claim_token

    assert not start_slot(db, mine.slot_id, wrong, trial_id=1, trial_number=0, params={})
    assert not start_slot(db, mine.slot_id, "not-a-token", trial_id=1, trial_number=0, params={})
    assert slot_row(db, mine.slot_id).state == SlotState.CLAIMED
    run(db, mine)
    assert beat(db, mine.slot_id, mine.claim_token) is True
    assert beat(db, mine.slot_id, wrong) is False
    assert finish_slot(db, mine.slot_id, COMPLETE, token=wrong) is False
    assert release_slot(db, mine.slot_id, FAILED, token=wrong) is False
    assert slot_row(db, mine.slot_id).state == SlotState.RUNNING
    assert counters(db, study_id, "sgd")["running"] == 2

    assert finish(db, mine)
    assert beat(db, mine.slot_id, mine.claim_token) is False, "an ended slot has no heartbeat"


def test_beat_refreshes_the_heartbeat_on_the_database_clock(db: Database) -> None:
    add_study(db, "beats", optimizers=("sgd",), n_trials=1)
    slot = claim(db)
    set_slot(db, slot.slot_id, heartbeat_at=db_now(-3600))
    old = slot_row(db, slot.slot_id).heartbeat_at
    assert beat(db, slot.slot_id, slot.claim_token)
    new = slot_row(db, slot.slot_id).heartbeat_at
    assert (new - old).total_seconds() > 3500


def test_renew_extends_a_live_lease_only(db: Database) -> None:
    external = add_study(db, "leases", optimizers=("sgd",), n_trials=2, task=EXTERNAL_TASK)
    slot = claim(db, "ask/tell", external=True, study_id=external, lease_seconds=5)
    before = slot_row(db, slot.slot_id).lease_expires_at

    renewed = renew_lease(db, slot.slot_id, slot.claim_token, 600)
    assert renewed is not None and (renewed - before).total_seconds() > 500
    row = slot_row(db, slot.slot_id)
    assert (row.lease_expires_at, row.lease_seconds) == (renewed, 600)
    assert renew_lease(db, slot.slot_id, "wrong", 600) is None

    set_slot(db, slot.slot_id, lease_expires_at=db_now(-1))
    assert renew_lease(db, slot.slot_id, slot.claim_token, 600) is None, "it already ran out"
