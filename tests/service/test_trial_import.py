"""Importing trials trained elsewhere into an external study: they count like told trials (slots,
best, Optuna, the trials list with origin ``import``), and a bad request writes nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.store import optuna_bridge
from service.store.database import Database, db_now, make_optuna_storage
from service.store.tables import StudyOptimizerRow, TrialSlotRow
from service.trials.recovery import Recovered, recover
from tests.helpers import wait_until
from tests.service.test_api_asktell import STUDY, ask, create_external, make_client, post

IMPORT = f"{STUDY}/trials/import"
ADAM = {"lr": 0.003, "beta1": 0.9, "beta2": 0.999, "batch_size": 64}


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with make_client(database_url) as client:
        yield client


def trial(**changes: Any) -> dict[str, Any]:
    return {"optimizer": "adam", "params": dict(ADAM), "value": 0.5, **changes}


def test_imported_trials_count_like_told_ones(client: TestClient, database_url: str) -> None:
    create_external(client, n_trials=4)
    response = client.post(
        IMPORT,
        json={
            "trials": [
                trial(value=0.4, intermediate_values={"1": 0.9, "2": 0.4}),
                trial(
                    params={**ADAM, "lr": 0.1},
                    state="pruned",
                    value=None,
                    intermediate_values={"1": 2.5},
                ),
                trial(params={**ADAM, "batch_size": 128}, value=0.3),
            ]
        },
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "study": "ext",
        "imported": [{"optimizer": "adam", "number": n} for n in (0, 1, 2)],
    }
    study = client.get(STUDY).json()
    adam = study["optimizers"][0]
    assert (adam["finished"], adam["complete"], adam["pruned"], adam["running"]) == (3, 2, 1, 0)
    assert study["best"]["value"] == 0.3
    assert study["best"]["params"] == {**ADAM, "batch_size": 128}
    items = client.get(f"{STUDY}/trials").json()["items"]
    assert [(t["number"], t["state"], t["origin"]) for t in items] == [
        (0, "complete", "import"),
        (1, "pruned", "import"),
        (2, "complete", "import"),
    ]
    assert items[0]["intermediate_values"] == {"1": 0.9, "2": 0.4}
    assert items[0]["params"] == ADAM and items[1]["params"]["lr"] == 0.1
    # Optuna holds them as the sampler will read them: finished, with the study's params.
    storage = make_optuna_storage(database_url)
    try:
        frozen = optuna.load_study(study_name="ext/adam", storage=storage).trials
    finally:
        storage.engine.dispose()
    assert [t.state.name for t in frozen] == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert frozen[0].params["lr"] == 0.003 and frozen[0].intermediate_values == {1: 0.9, 2: 0.4}
    assert frozen[0].user_attrs["origin"] == "import"
    # The study goes on: the next ask is trial 3, and telling it completes the study.
    asked = ask(client)
    assert asked["number"] == 3
    assert post(client, asked, "tell", value=1.0).json()["study_status"] == "completed"


BAD_TRIALS = [
    (trial(optimizer="sgd"), ["optimizer"], "has no optimizer 'sgd'"),
    (trial(params={**ADAM, "lr": 10.0}), ["params", "lr"], "outside the study's search space"),
    (
        trial(params={"lr": 0.01}),
        ["params", "batch_size"],
        "missing: the study searches batch_size",
    ),
    (trial(params={**ADAM, "eps": 1e-8}), ["params", "eps"], "not a hyperparameter"),
    (trial(value=None), ["value"], "needs its final 'value'"),
    (trial(state="pruned"), ["value"], "a pruned trial has no final value"),
]


def test_a_bad_trial_is_refused_and_nothing_is_written(client: TestClient) -> None:
    create_external(client, n_trials=4)
    for sent, where, says in BAD_TRIALS:
        response = client.post(IMPORT, json={"trials": [trial(), sent]})
        assert response.status_code == 422, response.text
        problem = response.json()["detail"][0]
        assert problem["loc"] == ["body", "trials", 1, *where]
        assert says in problem["msg"]
    assert client.get(f"{STUDY}/trials").json()["total"] == 0
    assert client.get(STUDY).json()["optimizers"][0]["finished"] == 0


def test_more_trials_than_free_slots_is_a_409_before_anything_is_written(
    client: TestClient,
) -> None:
    create_external(client, n_trials=2)
    response = client.post(IMPORT, json={"trials": [trial(), trial(), trial()]})
    assert response.status_code == 409
    assert "adam: 3 sent, 2 free" in response.json()["detail"]
    assert client.get(f"{STUDY}/trials").json()["total"] == 0
    assert client.post(f"{STUDY}/stop").status_code == 200
    response = client.post(IMPORT, json={"trials": [trial()]})
    assert response.status_code == 409
    assert response.json()["detail"] == "study 'ext' is stopped; it takes no new trials"


def test_only_external_studies_take_imports(client: TestClient) -> None:
    body = {"name": "ext", "task": "rosenbrock", "optimizers": ["gd"], "n_trials": 1}
    assert client.post("/api/v1/studies", json=body).status_code == 201
    response = client.post(IMPORT, json={"trials": [trial(optimizer="gd", params={"lr": 0.01})]})
    assert response.status_code == 409
    assert "workers run its trials" in response.json()["detail"]


def test_an_import_racing_a_delete_never_answers_500_and_leaves_nothing(
    client: TestClient, database_url: str
) -> None:
    """The study is deleted while a request of 100 trials is being imported: the import ends
    with a clear 404 or 409 (503 when SQLite stays locked; or it had finished), and the purge
    leaves no trial behind."""
    create_external(client, n_trials=100)
    trials = [trial(params={**ADAM, "lr": 0.001 + i * 1e-5}, value=float(i)) for i in range(100)]
    answer: dict[str, Any] = {}
    importer = threading.Thread(
        target=lambda: answer.update(response=client.post(IMPORT, json={"trials": trials}))
    )
    importer.start()
    try:
        wait_until(
            lambda: client.get(STUDY).json()["optimizers"][0]["finished"] >= 3,
            timeout=60,
            message="the import to get going",
        )
        # A delete that waited too long for the import's row locks answers 503 ("try again"),
        # never 500; a client tries again, as here.
        deleted: list[int] = []
        wait_until(
            lambda: deleted.append(client.delete(STUDY).status_code) or deleted[-1] != 503,
            timeout=60,
            message="the delete to be taken",
        )
        assert deleted[-1] in (200, 202), deleted
    finally:
        importer.join(timeout=120)
    response = answer["response"]
    # 503: on SQLite the purge can hold the write lock past the API's busy timeout; the import
    # then stops with "try again shortly", the trials before it imported whole. Never a 500.
    assert response.status_code != 500, response.text
    assert response.status_code in (200, 404, 409, 503), response.text
    if response.status_code == 409:
        assert "trials were imported" in response.json()["detail"]
    wait_until(lambda: client.get(STUDY).status_code == 404, timeout=60, message="the purge")
    storage = make_optuna_storage(database_url)
    try:
        wait_until(
            lambda: "ext/adam" not in {s.study_name for s in storage.get_all_studies()},
            timeout=60,
            message="the Optuna study to be purged",
        )
    finally:
        storage.engine.dispose()


def test_an_import_slower_than_the_grace_period_keeps_its_slots(
    client: TestClient, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each trial's Optuna write takes "longer" than the grace period (its slot's heartbeat set
    a minute back, then a recovery pass runs, as the API's own would): the import's slots are
    leased, so recovery leaves them, every trial is imported, and no config is queued again."""
    create_external(client, n_trials=3)
    db = Database.connect(database_url)
    storage = make_optuna_storage(database_url)
    real_add = optuna_bridge.add_finished_trial

    def slow_add(*args: Any, **kwargs: Any) -> Any:
        with db.write() as session:
            session.execute(
                sa.update(TrialSlotRow)
                .where(TrialSlotRow.state == "claimed")
                .values(heartbeat_at=db_now(-60))
            )
        assert recover(db, storage, grace_period=2) == Recovered()
        return real_add(*args, **kwargs)

    monkeypatch.setattr(optuna_bridge, "add_finished_trial", slow_add)
    try:
        trials = [trial(params={**ADAM, "lr": 0.001 * (i + 1)}, value=float(i)) for i in range(3)]
        response = client.post(IMPORT, json={"trials": trials})
        assert response.status_code == 200, response.text
        study = client.get(STUDY).json()
        (row,) = study["optimizers"]
        assert (row["finished"], row["failed"]) == (3, 0)
        with db.read() as session:
            planned = session.scalar(sa.select(StudyOptimizerRow.planned_configs)) or []
        assert not [c for c in planned if c["origin"] == "import"], planned
    finally:
        storage.engine.dispose()
        db.dispose()


def test_an_import_whose_optuna_study_is_purged_under_it_answers_409(
    client: TestClient, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete's purge removes the Optuna study (and the trial just written into it) between
    the import's write and its read of the trial: a 409 saying the study went away, not a 500;
    the slot is given back and its config is not queued again."""
    create_external(client, n_trials=3)
    real_create = optuna.storages.RDBStorage.create_new_trial

    def create_then_purge(self: optuna.storages.RDBStorage, study_id: int, **kwargs: Any) -> int:
        trial_id = real_create(self, study_id, **kwargs)
        self.delete_study(study_id)  # what the purge of a racing delete does
        return trial_id

    monkeypatch.setattr(optuna.storages.RDBStorage, "create_new_trial", create_then_purge)
    response = client.post(IMPORT, json={"trials": [trial()]})
    assert response.status_code == 409, response.text
    detail = response.json()["detail"]
    assert "deleted or stopped" in detail and "0 of the 1 trials were imported" in detail, detail
    db = Database.connect(database_url)
    try:
        with db.read() as session:
            slots = session.execute(sa.select(TrialSlotRow.state, TrialSlotRow.outcome)).all()
            pair = session.scalars(sa.select(StudyOptimizerRow)).one()
        assert [tuple(slot) for slot in slots] == [("released", "lost")], slots
        assert (pair.claimed, pair.running) == (0, 0)
        assert not [c for c in pair.planned_configs or [] if c["origin"] == "import"]
    finally:
        db.dispose()
