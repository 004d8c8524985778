"""Recovery against the database and Optuna's storage, SQLite and PostgreSQL: dead holders,
expired leases and orphaned trials are reconciled exactly once, and live work is never touched.

Holders "die" by having their slot's heartbeat or lease set in the past on the database's clock
(``db_now(-seconds)``), so nothing waits for a grace period to pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from service.store import optuna_bridge
from service.store.database import Database, db_now, make_optuna_storage
from service.store.tables import StudyOptimizerRow
from service.trials import protocol
from service.trials.guard import SlotGuard, SlotTakenBack
from service.trials.lifecycle import Ending, finish_slot, release_slot
from service.trials.recovery import Recovered, fail_orphaned_trials, recover
from service.vocabulary import EXTERNAL_TASK, ConfigOrigin, SlotOutcome, SlotState, StudyStatus
from tests.service.rows import (
    add_study,
    claim,
    counters,
    create_optuna_studies,
    pairs,
    set_slot,
    silence,
    slot_row,
    start,
    study_row,
)

GRACE = 30.0  # seconds; "dead" holders are silenced for far longer, live ones just beat


@pytest.fixture
def storage(db: Database) -> Iterator[optuna.storages.RDBStorage]:
    storage = make_optuna_storage(db.url)
    yield storage
    storage.engine.dispose()


def trial_state(storage: optuna.storages.BaseStorage, trial: optuna.Trial) -> TrialState:
    return storage.get_trial(optuna_bridge.trial_id(trial)).state


def test_a_silent_holders_slot_is_released_and_its_trial_failed(
    db: Database, storage: optuna.storages.RDBStorage
) -> None:
    study_id = add_study(db, "reap", optimizers=("sgd",), n_trials=3)
    create_optuna_studies(storage, "reap", ("sgd",))
    dead = claim(db, "dead-worker")
    dead_trial = start(db, storage, dead)
    never_started = claim(db, "died-before-its-trial")
    alive = claim(db, "alive-worker")
    alive_trial = start(db, storage, alive)
    silence(db, dead.slot_id, 10 * GRACE)
    silence(db, never_started.slot_id, 10 * GRACE)
    silence(db, alive.slot_id, GRACE / 3)  # late, but within the grace period

    assert recover(db, storage, grace_period=3600) == Recovered(), "nothing is that old"
    recovered = recover(db, storage, grace_period=GRACE)

    assert recovered == Recovered(finished=0, released=2, orphans_failed=0)
    assert trial_state(storage, dead_trial) == TrialState.FAIL
    assert trial_state(storage, alive_trial) == TrialState.RUNNING
    for slot, holder in ((dead, "dead-worker"), (never_started, "died-before-its-trial")):
        row = slot_row(db, slot.slot_id)
        assert (row.state, row.outcome) == (SlotState.RELEASED, SlotOutcome.LOST), holder
        assert holder in row.reason
    assert slot_row(db, alive.slot_id).state == SlotState.RUNNING
    assert counters(db, study_id, "sgd") == {
        "claimed": 1,
        "running": 1,
        "finished": 0,
        "complete": 0,
        "pruned": 0,
        "failed": 2,
        "issued": 3,
    }
    # The dead worker's config was never judged: the next claim tries it again.
    retry = claim(db)
    assert retry.params == slot_row(db, dead.slot_id).params
    assert retry.origin == ConfigOrigin.RETRY
    assert claim(db) is not None and claim(db) is None, "exactly the two slots went back"
    assert recover(db, storage, grace_period=GRACE) == Recovered(), "a second pass finds nothing"


@pytest.mark.parametrize("state", [TrialState.COMPLETE, TrialState.PRUNED])
def test_a_slot_whose_trial_ended_is_finished_from_it_not_released(
    db: Database, storage: optuna.storages.RDBStorage, state: TrialState
) -> None:
    # The holder told Optuna, then died before recording it on its slot: the result counts.
    study_id = add_study(db, "told", optimizers=("sgd",), n_trials=1)
    create_optuna_studies(storage, "told", ("sgd",))
    slot = claim(db, "died-after-tell")
    trial = start(db, storage, slot)
    trial.set_user_attr("test_value", 0.93)
    trial.set_user_attr("pruned_reason", "diverged")
    study = optuna_bridge.load_study(storage, slot.optuna_study_name)
    study.tell(trial, 0.91 if state == TrialState.COMPLETE else None, state=state)
    silence(db, slot.slot_id, 10 * GRACE)

    recovered = recover(db, storage, grace_period=GRACE)

    assert recovered == Recovered(finished=1)
    assert trial_state(storage, trial) == state, "a finished trial is never failed"
    row = slot_row(db, slot.slot_id)
    assert row.state == SlotState.FINISHED
    assert (
        row.params == storage.get_trial(optuna_bridge.trial_id(trial)).user_attrs["hyperparameters"]
    )
    done = counters(db, study_id, "sgd")
    assert (done["claimed"], done["running"], done["finished"], done["failed"]) == (1, 0, 1, 0)
    if state == TrialState.COMPLETE:
        assert (row.outcome, row.value, row.test_value) == (SlotOutcome.COMPLETE, 0.91, 0.93)
        assert done["complete"] == 1 and pairs(db, study_id)["sgd"].best_slot_id == slot.slot_id
    else:
        assert (row.outcome, row.value, row.reason) == (SlotOutcome.PRUNED, None, "diverged")
        assert done["pruned"] == 1
    assert study_row(db, study_id).status == StudyStatus.COMPLETED


def test_orphaned_running_trials_are_failed_and_held_ones_never_touched(
    db: Database, storage: optuna.storages.RDBStorage
) -> None:
    add_study(db, "orphans", optimizers=("sgd",), n_trials=5)
    create_optuna_studies(storage, "orphans", ("sgd",))
    study = optuna_bridge.load_study(storage, "orphans/sgd")

    # Its slot ended (told failed by its holder) while a stray trial of it still runs.
    ended = claim(db)
    ended_trial = start(db, storage, ended)
    assert release_slot(
        db, ended.slot_id, Ending(SlotOutcome.FAILED, reason="boom"), token=ended.claim_token
    )
    # A worker killed between creating its trial and recording it: the slot is still held
    # (so the trial is not an orphan yet) ...
    held = claim(db)
    held_unrecorded = start(db, storage, held, record=False)
    # ... and a held slot whose trial carries no hpt_slot: it is known by its trial id.
    recorded = claim(db)
    recorded_trial = study.ask()
    set_slot(
        db,
        recorded.slot_id,
        state=SlotState.RUNNING,
        trial_id=optuna_bridge.trial_id(recorded_trial),
    )
    # A RUNNING trial nobody ever recorded (hpt_slot names no slot).
    never_recorded = optuna_bridge.start_trial(study, slot_id=10**9, origin="sampler")
    # Trials of another Optuna study that is not ours are left alone.
    foreign = optuna.create_study(storage=storage, study_name="not-ours").ask()

    assert fail_orphaned_trials(db, storage) == 2
    assert trial_state(storage, ended_trial) == TrialState.FAIL
    assert trial_state(storage, never_recorded) == TrialState.FAIL
    assert trial_state(storage, held_unrecorded) == TrialState.RUNNING
    assert trial_state(storage, recorded_trial) == TrialState.RUNNING
    assert trial_state(storage, foreign) == TrialState.RUNNING
    assert slot_row(db, held.slot_id).state == SlotState.CLAIMED
    assert fail_orphaned_trials(db, storage) == 0

    # Once the unrecorded holder is silent past the grace period, its slot goes back and its
    # trial (now an orphan) is failed in the same pass.
    silence(db, held.slot_id, 10 * GRACE)
    assert recover(db, storage, grace_period=GRACE) == Recovered(released=1, orphans_failed=1)
    assert trial_state(storage, held_unrecorded) == TrialState.FAIL
    assert trial_state(storage, recorded_trial) == TrialState.RUNNING


def test_an_expired_lease_fails_its_trial_and_offers_its_params_again(
    db: Database, storage: optuna.storages.RDBStorage
) -> None:
    study_id = add_study(
        db, "lease", optimizers=("adam",), n_trials=2, task=EXTERNAL_TASK, direction="minimize"
    )
    create_optuna_studies(storage, "lease", ("adam",), direction="minimize")

    def ask() -> tuple:
        slot = claim(db, "ask/tell", external=True, study_id=study_id, lease_seconds=600)
        assert slot is not None
        return slot, start(db, storage, slot)

    told, told_trial = ask()
    optuna_bridge.load_study(storage, "lease/adam").tell(told_trial, 0.1)
    assert finish_slot(
        db, told.slot_id, Ending(SlotOutcome.COMPLETE, value=0.1), token=told.claim_token
    )
    late, late_trial = ask()
    # A lease is judged by its expiry, not by the heartbeat: an old heartbeat is no death.
    silence(db, late.slot_id, 10 * GRACE)
    assert recover(db, storage, grace_period=GRACE) == Recovered(), "the lease still runs"

    set_slot(db, late.slot_id, lease_expires_at=db_now(-1))
    assert recover(db, storage, grace_period=GRACE) == Recovered(released=1)

    assert trial_state(storage, late_trial) == TrialState.FAIL
    assert trial_state(storage, told_trial) == TrialState.COMPLETE
    row = slot_row(db, late.slot_id)
    assert (row.state, row.outcome) == (SlotState.RELEASED, SlotOutcome.EXPIRED)
    assert slot_row(db, told.slot_id).state == SlotState.FINISHED
    done = counters(db, study_id, "adam")
    assert (done["claimed"], done["finished"], done["failed"], done["running"]) == (1, 1, 1, 0)
    late_params = storage.get_trial(optuna_bridge.trial_id(late_trial)).params
    assert pairs(db, study_id)["adam"].planned_configs == [
        {"params": row.params, "origin": ConfigOrigin.RETRY}
    ]

    retried, retried_trial = ask()
    assert retried.origin == ConfigOrigin.RETRY and retried.params == row.params
    assert retried_trial.params == late_params, "the next ask must get the expired params"
    assert not pairs(db, study_id)["adam"].planned_configs
    assert recover(db, storage, grace_period=GRACE) == Recovered()


@pytest.mark.parametrize("suggested", [(), ("lr", "one_minus_beta1")], ids=["none", "some"])
def test_a_planned_config_killed_before_it_was_recorded_runs_again_whole(
    db: Database, storage: optuna.storages.RDBStorage, suggested: tuple[str, ...]
) -> None:
    # A confirmation seed whose worker died after its slot started, before the objective
    # recorded the whole config: its Optuna trial holds no params, or some of them under
    # Optuna's names. The retry must run the planned config, all of it.
    study_id = add_study(db, "early", optimizers=("adam",), n_trials=1)
    create_optuna_studies(storage, "early", ("adam",))
    config = {"lr": 0.01, "beta1": 0.8, "beta2": 0.99, "batch_size": 32}
    planned = {"params": config, "origin": ConfigOrigin.CONFIRM, "confirm_of": 7}
    with db.write() as session:
        pair = session.get_one(StudyOptimizerRow, pairs(db, study_id)["adam"].id)
        pair.planned_configs = [planned]
    slot = claim(db, "dead-worker")
    assert slot is not None and slot.params == config
    study = optuna_bridge.load_study(storage, slot.optuna_study_name)

    def suggest(trial: optuna.Trial) -> dict[str, Any]:
        for name in suggested:
            trial.suggest_float(name, 1e-4, 0.5, log=True)
        return slot.params

    trial = protocol.start(db, study, slot, prepare=suggest)
    silence(db, slot.slot_id, 10 * GRACE)

    assert recover(db, storage, grace_period=GRACE) == Recovered(released=1)

    assert trial_state(storage, trial) == TrialState.FAIL
    assert slot_row(db, slot.slot_id).params == config
    assert pairs(db, study_id)["adam"].planned_configs == [planned]
    again = claim(db, "rescuer")
    assert again is not None
    assert (again.origin, again.params, again.confirm_of) == (ConfigOrigin.CONFIRM, config, 7)


def test_recovery_racing_holders_ends_each_slot_exactly_once(
    db: Database, storage: optuna.storages.RDBStorage
) -> None:
    # Every holder is "dead" to recovery (silent for long), yet each one wakes up and ends its
    # own slot while recovery passes run: per slot, exactly one of them succeeds.
    n_slots = 12
    study_id = add_study(db, "race", optimizers=("sgd",), n_trials=n_slots)
    create_optuna_studies(storage, "race", ("sgd",))
    slots = [claim(db, f"h{index}") for index in range(n_slots)]
    trials = [start(db, storage, slot) for slot in slots]
    for slot in slots:
        silence(db, slot.slot_id, 10 * GRACE)
    holder_ended: list[int] = []
    passes: list[Recovered] = []
    errors: list[str] = []
    start_line = threading.Barrier(3)

    def holder() -> None:
        # As a worker does: tell Optuna under the slot guard, then end the slot from what
        # Optuna holds (recovery may have failed the trial first); a slot taken back is let go.
        own_storage = make_optuna_storage(db.url)
        guard = SlotGuard.install(own_storage.engine)
        try:
            start_line.wait()
            for index, (slot, trial) in enumerate(zip(slots, trials, strict=True)):
                state = TrialState.COMPLETE if index % 2 == 0 else TrialState.FAIL
                value = 0.5 if state == TrialState.COMPLETE else None
                try:
                    with guard.holding(slot.slot_id, slot.claim_token):
                        _, ended = protocol.end(
                            db,
                            own_storage,
                            slot_id=slot.slot_id,
                            token=slot.claim_token,
                            trial_id=optuna_bridge.trial_id(trial),
                            state=state,
                            value=value,
                            reason="raised",
                        )
                except (SlotTakenBack, protocol.EndedOtherwise):
                    continue  # recovery took the slot, or failed the trial, first
                if ended:
                    holder_ended.append(slot.slot_id)
        except Exception as exc:
            errors.append(f"holder: {type(exc).__name__}: {exc}")
        finally:
            own_storage.engine.dispose()

    def recovery() -> None:
        try:
            start_line.wait()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                passes.append(recover(db, storage, grace_period=GRACE))
                if not any(slot_row(db, s.slot_id).state in ("claimed", "running") for s in slots):
                    return
        except Exception as exc:
            errors.append(f"recovery: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=holder)] + [
        threading.Thread(target=recovery) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)

    assert not errors, errors
    by_recovery = sum(p.finished + p.released for p in passes)
    assert len(holder_ended) + by_recovery == n_slots, (holder_ended, passes)
    rows = [slot_row(db, slot.slot_id) for slot in slots]
    finished = [row for row in rows if row.state == SlotState.FINISHED]
    released = [row for row in rows if row.state == SlotState.RELEASED]
    assert len(finished) + len(released) == n_slots
    done = counters(db, study_id, "sgd")
    assert done["running"] == 0
    assert (done["claimed"], done["finished"], done["failed"]) == (
        len(finished),
        len(finished),
        len(released),
    )
    for row, trial in zip(rows, trials, strict=True):
        state = trial_state(storage, trial)
        # The two records agree: a finished slot's trial finished, a released slot's failed.
        expected = TrialState.COMPLETE if row.state == SlotState.FINISHED else TrialState.FAIL
        assert state == expected, (row.id, row.state, row.outcome, state)


def test_a_lost_workers_sampled_config_is_offered_again(
    db: Database, storage: optuna.storages.RDBStorage
) -> None:
    # As Worker._train does for a sampled trial: the slot is started with the claim's params
    # (none), the objective then samples and records "hyperparameters" on the Optuna trial.
    study_id = add_study(db, "sampled", optimizers=("sgd",), n_trials=1)
    create_optuna_studies(storage, "sampled", ("sgd",))
    slot = claim(db, "killed-worker")
    study = optuna_bridge.load_study(storage, slot.optuna_study_name)
    trial = protocol.start(db, study, slot)  # as a worker: the claim's params (none)
    sampled = {"lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True)}
    trial.set_user_attr("hyperparameters", sampled)
    silence(db, slot.slot_id, 10 * GRACE)

    assert recover(db, storage, grace_period=GRACE) == Recovered(released=1)

    retry = claim(db)
    assert retry is not None and retry.study_id == study_id
    assert (retry.origin, retry.params) == (ConfigOrigin.RETRY, sampled)


@pytest.mark.parametrize("zone", ["Pacific/Honolulu", "Asia/Tokyo"])
def test_recovery_decides_on_the_database_clock_whatever_the_time_zone(
    db: Database,
    storage: optuna.storages.RDBStorage,
    zone: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Optuna stamps datetime_start in the process's local time: ten hours behind UTC in
    # Honolulu, nine ahead in Tokyo. Nothing recovery decides may depend on it.
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        add_study(db, "zones", optimizers=("sgd",), n_trials=3)
        create_optuna_studies(storage, "zones", ("sgd",))
        live = claim(db, "live-worker")
        live_unrecorded = start(db, storage, live, record=False)  # started a moment ago
        live_recorded_slot = claim(db, "another-live-worker")
        live_recorded = start(db, storage, live_recorded_slot)
        dead = claim(db, "dead-worker")
        dead_trial = start(db, storage, dead)
        silence(db, dead.slot_id, 10 * GRACE)

        assert recover(db, storage, grace_period=GRACE) == Recovered(released=1)

        assert trial_state(storage, live_unrecorded) == TrialState.RUNNING
        assert trial_state(storage, live_recorded) == TrialState.RUNNING
        assert trial_state(storage, dead_trial) == TrialState.FAIL
        assert slot_row(db, live.slot_id).state == SlotState.CLAIMED
        assert slot_row(db, live_recorded_slot.slot_id).state == SlotState.RUNNING
    finally:
        monkeypatch.undo()
        time.tzset()
