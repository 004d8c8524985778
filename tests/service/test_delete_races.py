"""A study delete landing between two steps of a request: every request answers what the delete
left (200, or 404/409 when its trial or study is gone), never a 500.

Each test runs the whole delete (``delete_study``: revoke, then purge) at one point of a request,
deterministically, by wrapping a function the request calls there. TestClient re-raises an
unhandled exception, so a 500 fails the test with its traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient

import service.api.studies as studies_api
from service.store import optuna_bridge
from service.store.database import Database, make_optuna_storage
from service.studies import admin as study_admin
from service.studies import best_configs, progress
from service.studies.admin import delete_study
from service.trials import ask_tell, protocol
from tests.service.test_api_asktell import STUDY, create_external, make_client

OK_WHEN_DELETED = {404, 409}
# Optuna's delete_study warns when the rows it meant to delete were removed by the other delete.
pytestmark = pytest.mark.filterwarnings("ignore:DELETE statement on table:sqlalchemy.exc.SAWarning")


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with make_client(database_url) as client:
        yield client


@pytest.fixture
def race(database_url: str) -> Iterator[Callable[[], None]]:
    """A racing ``DELETE /api/v1/studies/ext``, done whole, once (later calls do nothing)."""
    db = Database.connect(database_url)
    storage = make_optuna_storage(database_url)
    done: list[bool] = []

    def delete() -> None:
        if not done:
            done.append(True)
            delete_study(db=db, storage=storage, name="ext")

    try:
        yield delete
    finally:
        storage.engine.dispose()
        db.dispose()


def before(
    target: Any, attr: str, monkeypatch: pytest.MonkeyPatch, hook: Callable[[], None]
) -> None:
    real = getattr(target, attr)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        hook()
        return real(*args, **kwargs)

    monkeypatch.setattr(target, attr, wrapped)


def after(
    target: Any, attr: str, monkeypatch: pytest.MonkeyPatch, hook: Callable[[], None]
) -> None:
    real = getattr(target, attr)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        hook()
        return result

    monkeypatch.setattr(target, attr, wrapped)


def check(response: Any, allowed: set[int]) -> None:
    assert response.status_code in allowed, (response.status_code, response.text)


def ask(client: TestClient) -> dict[str, Any]:
    response = client.post(f"{STUDY}/trials/ask")
    assert response.status_code == 200, response.text
    return response.json()


def url(trial: dict[str, Any], action: str) -> str:
    return f"{STUDY}/trials/{trial['optimizer']}/{trial['number']}/{action}"


def told(client: TestClient, value: float = 0.5) -> dict[str, Any]:
    trial = ask(client)
    response = client.post(url(trial, "tell"), json={"lease": trial["lease"], "value": value})
    assert response.status_code == 200, response.text
    return trial


# --------------------------------------------------------------------------- ask/tell writes


def test_report_deleted_before_optuna_load(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    create_external(client, n_trials=3)
    trial = ask(client)
    before(optuna_bridge, "load_study", monkeypatch, race)
    response = client.post(
        url(trial, "report"), json={"lease": trial["lease"], "step": 0, "value": 1.0}
    )
    check(response, OK_WHEN_DELETED)


def test_report_deleted_after_optuna_load(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    create_external(client, n_trials=3)
    trial = ask(client)
    after(optuna_bridge, "load_study", monkeypatch, race)
    response = client.post(
        url(trial, "report"), json={"lease": trial["lease"], "step": 0, "value": 1.0}
    )
    check(response, OK_WHEN_DELETED)


def test_report_deleted_after_intermediate_value_written(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between trial.report (written) and trial.should_prune (reads the study's trials)."""
    create_external(client, n_trials=3, pruner="median")
    trial = ask(client)
    after(optuna.trial.Trial, "report", monkeypatch, race)
    response = client.post(
        url(trial, "report"), json={"lease": trial["lease"], "step": 0, "value": 1.0}
    )
    check(response, OK_WHEN_DELETED)


def test_tell_deleted_before_optuna_read(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slot was read, then the delete, then the tell reads the trial: it is gone."""
    create_external(client, n_trials=3)
    trial = ask(client)
    before(optuna_bridge, "get_trial", monkeypatch, race)
    response = client.post(url(trial, "tell"), json={"lease": trial["lease"], "value": 0.5})
    check(response, OK_WHEN_DELETED)


def test_tell_deleted_before_optuna_told(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trial was read, then the delete, then the tell's guarded write."""
    create_external(client, n_trials=3)
    trial = ask(client)
    before(optuna_bridge, "tell", monkeypatch, race)
    response = client.post(url(trial, "tell"), json={"lease": trial["lease"], "value": 0.5})
    check(response, OK_WHEN_DELETED)


def test_tell_deleted_after_optuna_told(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Optuna told, slot not yet finished: finish_slot finds no slot; the answer is 200."""
    create_external(client, n_trials=3)
    trial = ask(client)
    after(optuna_bridge, "tell", monkeypatch, race)
    response = client.post(url(trial, "tell"), json={"lease": trial["lease"], "value": 0.5})
    check(response, {200, 404})


def test_retried_tell_deleted_after_refused_tell(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retried tell whose first attempt told Optuna but not the slot: the protocol reads the
    trial back to accept it, and finds it purged."""
    create_external(client, n_trials=3)
    trial = ask(client)
    real_finish = protocol.finish_slot
    # The first tell tells Optuna, then its slot update does not happen (the slot stays held).
    monkeypatch.setattr(protocol, "finish_slot", lambda *a, **k: False)
    response = client.post(url(trial, "tell"), json={"lease": trial["lease"], "value": 0.5})
    assert response.status_code == 200, response.text
    monkeypatch.setattr(protocol, "finish_slot", real_finish)
    # The retried tell reads the trial back (finished: Optuna is not told again); the delete
    # purges it just before.
    before(optuna_bridge, "get_trial", monkeypatch, race)
    response = client.post(url(trial, "tell"), json={"lease": trial["lease"], "value": 0.5})
    check(response, OK_WHEN_DELETED)


def test_renew_deleted_before_lease_renewal(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    create_external(client, n_trials=3)
    trial = ask(client)
    before(ask_tell, "renew_lease", monkeypatch, race)
    response = client.post(url(trial, "renew"), json={"lease": trial["lease"]})
    check(response, OK_WHEN_DELETED)


def test_report_deleted_before_lease_renewal(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    create_external(client, n_trials=3)
    trial = ask(client)
    before(ask_tell, "renew_lease", monkeypatch, race)
    response = client.post(
        url(trial, "report"), json={"lease": trial["lease"], "step": 0, "value": 1.0}
    )
    check(response, OK_WHEN_DELETED)


# --------------------------------------------------------------------------- reads


def test_trials_page_deleted_before_optuna_read(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    create_external(client, n_trials=3)
    told(client)
    ask(client)  # a running trial: its page entry reads Optuna
    before(optuna_bridge, "get_trial", monkeypatch, race)
    response = client.get(f"{STUDY}/trials")
    check(response, OK_WHEN_DELETED | {200})


def test_trials_page_optuna_purged_before_optuna_read(
    client: TestClient, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mid-purge: Optuna study gone, our rows still there."""
    create_external(client, n_trials=3)
    ask(client)
    storage = make_optuna_storage(database_url)
    try:
        before(
            optuna_bridge,
            "get_trial",
            monkeypatch,
            lambda: optuna_bridge.delete_studies(storage, ["ext/adam"]),
        )
        response = client.get(f"{STUDY}/trials")
        check(response, {200, 404})
    finally:
        storage.engine.dispose()


def test_report_page_deleted_before_all_trials(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    create_external(client, n_trials=3)
    told(client)
    before(optuna_bridge, "all_trials", monkeypatch, race)
    response = client.get(f"{STUDY}/report")
    check(response, {200, 404})


def test_report_page_deleted_between_study_id_and_trials(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside optuna_bridge.all_trials: get_study_id_from_name found it, then the purge, then
    get_all_trials (Optuna checks the study exists: KeyError)."""
    create_external(client, n_trials=3)
    told(client)
    real = optuna.storages.RDBStorage.get_study_id_from_name
    armed: list[bool] = []

    def found_then_deleted(self: optuna.storages.RDBStorage, name: str) -> int:
        study_id = real(self, name)
        if armed and armed.pop():
            race()
        return study_id

    monkeypatch.setattr(optuna.storages.RDBStorage, "get_study_id_from_name", found_then_deleted)
    real_all = optuna_bridge.all_trials

    def arm(*args: Any, **kwargs: Any) -> Any:
        armed.append(True)
        return real_all(*args, **kwargs)

    monkeypatch.setattr(optuna_bridge, "all_trials", arm)
    response = client.get(f"{STUDY}/report")
    check(response, {200, 404})


def test_study_view_deleted_mid_read(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    create_external(client, n_trials=3)
    told(client)
    before(progress, "_held_counts", monkeypatch, race)
    response = client.get(STUDY)
    check(response, {200, 404})


def test_study_best_deleted_mid_read(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    create_external(client, n_trials=3)
    told(client)
    before(best_configs, "best_slots", monkeypatch, race)
    response = client.get(f"{STUDY}/best")
    check(response, {200, 404})


def test_best_for_task_deleted_mid_read(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    create_external(client, n_trials=3)
    told(client)
    before(best_configs, "_best_of_optimizer", monkeypatch, race)
    query = {"task": "external", "model": "ext", "metric": "loss"}
    response = client.get("/api/v1/best", params=query)
    check(response, {200, 404})


def test_study_list_deleted_mid_read(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    create_external(client, n_trials=3)
    told(client)
    before(progress, "as_utc", monkeypatch, race)  # called per row, after its first reads
    response = client.get("/api/v1/studies")
    check(response, {200, 404})


def test_metrics_deleted_mid_read(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    create_external(client, n_trials=3)
    told(client)
    before(progress, "count_live_workers", monkeypatch, race)
    response = client.get("/metrics")
    check(response, {200, 404})


# --------------------------------------------------------------------------- study writes


def test_stop_deleted_between_stop_and_view(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    create_external(client, n_trials=3)
    before(studies_api, "study_view", monkeypatch, race)
    response = client.post(f"{STUDY}/stop")
    check(response, OK_WHEN_DELETED | {200})


def test_delete_raced_by_another_delete_between_revoke_and_purge(
    client: TestClient, race: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    create_external(client, n_trials=3)
    ask(client)
    after(study_admin, "revoke_study", monkeypatch, race)
    response = client.delete(STUDY)
    check(response, {200, 202, 404})
    assert client.get(STUDY).status_code == 404
