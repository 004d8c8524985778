"""The slot guard on SQLite and PostgreSQL: a write to Optuna for a trial happens only while its
writer still holds the trial's slot, checked in the write's own transaction."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import optuna
import pytest
from optuna.trial import TrialState

from service.store import optuna_bridge
from service.store.database import Database, make_optuna_storage
from service.trials.guard import SlotGuard, SlotTakenBack
from service.trials.lifecycle import Ending, release_slot, revoke_study
from service.vocabulary import SlotOutcome
from tests.service.rows import add_study, claim, create_optuna_studies, start


@pytest.fixture
def guarded(db: Database) -> Iterator[tuple[optuna.storages.RDBStorage, SlotGuard]]:
    storage = make_optuna_storage(db.url)
    yield storage, SlotGuard.install(storage.engine)
    storage.engine.dispose()


def test_writes_pass_while_the_slot_is_held_and_fail_once_it_is_taken_back(
    db: Database, guarded: tuple[optuna.storages.RDBStorage, SlotGuard]
) -> None:
    storage, guard = guarded
    add_study(db, "guarded", optimizers=("sgd",), n_trials=2)
    create_optuna_studies(storage, "guarded", ("sgd",))
    slot = claim(db)
    trial = start(db, storage, slot)

    with guard.holding(slot.slot_id, slot.claim_token):
        trial.report(0.5, 1)
    with pytest.raises(SlotTakenBack), guard.holding(slot.slot_id, "someone-elses-token"):
        trial.report(0.6, 2)

    assert release_slot(db, slot.slot_id, Ending(SlotOutcome.LOST), token=slot.claim_token)
    with pytest.raises(SlotTakenBack), guard.holding(slot.slot_id, slot.claim_token):
        optuna_bridge.load_study(storage, "guarded/sgd").tell(trial, 0.9)
    frozen = storage.get_trial(optuna_bridge.trial_id(trial))
    assert frozen.state == TrialState.RUNNING and frozen.intermediate_values == {1: 0.5}, (
        "the refused writes left nothing behind"
    )
    # Outside a holding block (recovery, the API's own writes) nothing is checked.
    assert optuna_bridge.fail_trial(storage, optuna_bridge.trial_id(trial)).state == TrialState.FAIL


def test_a_revoked_study_refuses_its_workers_writes_and_other_threads_are_unaffected(
    db: Database, guarded: tuple[optuna.storages.RDBStorage, SlotGuard]
) -> None:
    storage, guard = guarded
    add_study(db, "deleted", optimizers=("sgd",), n_trials=1)
    add_study(db, "kept", optimizers=("sgd",), n_trials=1)
    create_optuna_studies(storage, "deleted", ("sgd",))
    create_optuna_studies(storage, "kept", ("sgd",))
    doomed, kept = claim(db), claim(db)
    assert (doomed.study_name, kept.study_name) == ("deleted", "kept")
    doomed_trial, kept_trial = start(db, storage, doomed), start(db, storage, kept)
    revoke_study(db, "deleted")
    outcomes: dict[str, object] = {}

    def write(name: str, slot, trial) -> None:  # type: ignore[no-untyped-def]
        try:
            with guard.holding(slot.slot_id, slot.claim_token):
                trial.report(1.0, 1)
            outcomes[name] = "written"
        except SlotTakenBack as exc:
            outcomes[name] = exc

    threads = [
        threading.Thread(target=write, args=("deleted", doomed, doomed_trial)),
        threading.Thread(target=write, args=("kept", kept, kept_trial)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert isinstance(outcomes["deleted"], SlotTakenBack)
    assert outcomes["kept"] == "written"
    assert storage.get_trial(optuna_bridge.trial_id(doomed_trial)).intermediate_values == {}
    assert storage.get_trial(optuna_bridge.trial_id(kept_trial)).intermediate_values == {1: 1.0}
