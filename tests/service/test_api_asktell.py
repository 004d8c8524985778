"""Ask/tell in-process: trials of an ``external`` study trained by the client, leases that run
out or are renewed, tells that happen exactly once, and the conflicts a client can run into."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.store import optuna_bridge
from service.store.database import Database, make_optuna_storage
from service.studies.admin import delete_study
from tests.helpers import wait_until

STUDY = "/api/v1/studies/ext"


def make_client(database_url: str) -> TestClient:
    # A short grace period: the API's recovery starts collecting expired leases after it.
    settings = Settings(database_url=database_url, api_key=None, grace_period=2)
    return TestClient(create_app(settings))


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with make_client(database_url) as client:
        yield client


@pytest.fixture(scope="module")
def busy_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app with an external study of many trials, for cases that each run one trial."""
    path = tmp_path_factory.mktemp("asktell") / "hpt.db"
    with make_client(f"sqlite:///{path}") as client:
        create_external(client, n_trials=100)
        yield client


def create_external(client: TestClient, **changes: Any) -> dict[str, Any]:
    body = {
        "name": "ext",
        "task": "external",
        "confirm": {"top_k": 0},
        "metric": "loss",
        "direction": "minimize",
        "optimizers": ["adam"],
        "n_trials": 2,
        "seed": 7,
        "pruner": "none",
    }
    body.update(changes)
    response = client.post("/api/v1/studies", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def ask(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post(f"{STUDY}/trials/ask", json=body or None)
    assert response.status_code == 200, response.text
    return response.json()


def trial_url(trial: dict[str, Any], action: str) -> str:
    return f"{STUDY}/trials/{trial['optimizer']}/{trial['number']}/{action}"


def post(client: TestClient, trial: dict[str, Any], action: str, **body: Any) -> Any:
    """Report, tell or renew ``trial`` with its lease."""
    return client.post(trial_url(trial, action), json={"lease": trial["lease"], **body})


def test_ask_report_tell_runs_a_trial_and_completes_the_study(client: TestClient) -> None:
    create_external(client, n_trials=1)
    trial = ask(client)
    assert (trial["study"], trial["optimizer"], trial["number"]) == ("ext", "adam", 0)
    assert set(trial["params"]) == {"lr", "beta1", "beta2", "batch_size"}
    assert trial["python"].startswith("optim_core.Adam(model.parameters(), lr=")
    assert trial["lease"] and trial["lease_expires_at"].endswith("Z")
    assert client.get(STUDY).json()["status"] == "running"

    report = post(client, trial, "report", step=1, value=0.5)
    assert report.status_code == 200
    assert report.json()["should_prune"] is False
    assert report.json()["lease_expires_at"] >= trial["lease_expires_at"]

    told = post(client, trial, "tell", value=0.25)
    assert told.status_code == 200, told.text
    assert told.json() == {
        "study": "ext",
        "optimizer": "adam",
        "number": 0,
        "state": "complete",
        "value": 0.25,
        "study_status": "completed",
    }
    study = client.get(STUDY).json()
    assert study["optimizers"][0]["complete"] == 1
    assert study["best"]["params"] == trial["params"]
    assert study["best"]["python"] == trial["python"]
    listed = client.get(f"{STUDY}/trials").json()["items"][0]
    assert listed["intermediate_values"] == {"1": 0.5}
    assert listed["worker"] == "ask/tell"


def test_a_finished_study_takes_no_more_trials(client: TestClient) -> None:
    create_external(client, n_trials=1)
    trial = ask(client)
    post(client, trial, "tell", state="pruned")
    response = client.post(f"{STUDY}/trials/ask")
    assert response.status_code == 409
    assert response.json()["detail"] == "study 'ext' is completed; it takes no new trials"
    stop = client.post(f"{STUDY}/stop")
    assert stop.status_code == 409
    assert "already completed; there is nothing to stop" in stop.json()["detail"]


def test_every_slot_taken_answers_409_until_a_trial_ends(client: TestClient) -> None:
    create_external(client, n_trials=2)
    first, second = ask(client), ask(client)
    assert first["number"] != second["number"]
    response = client.post(f"{STUDY}/trials/ask")
    assert response.status_code == 409
    assert "retry when a running trial ends" in response.json()["detail"]

    # A failed trial gives its slot back; the study still gets its two finished trials.
    failed = post(client, first, "tell", state="failed")
    assert failed.json()["state"] == "failed"
    third = ask(client)
    post(client, second, "tell", value=1.0)
    post(client, third, "tell", value=2.0)
    study = client.get(STUDY).json()
    assert study["status"] == "completed"
    counts = study["optimizers"][0]
    assert (counts["finished"], counts["complete"], counts["failed"]) == (2, 2, 1)


def test_a_lease_that_runs_out_fails_the_trial_and_offers_its_params_again(
    client: TestClient,
) -> None:
    create_external(client, n_trials=1)
    expiring = ask(client, lease_seconds=0.3)

    def ask_again() -> dict[str, Any] | None:
        response = client.post(f"{STUDY}/trials/ask")
        return response.json() if response.status_code == 200 else None

    offered = wait_until(ask_again, timeout=15, interval=0.1, message="the lease to run out")
    assert offered["number"] != expiring["number"]
    assert offered["params"] == expiring["params"]
    assert offered["python"] == expiring["python"]

    late = post(client, expiring, "report", step=1, value=0.1)
    assert late.status_code == 409
    assert "ran out" in late.json()["detail"]
    late_tell = post(client, expiring, "tell", value=0.1)
    assert late_tell.status_code == 409
    states = [t["state"] for t in client.get(f"{STUDY}/trials").json()["items"]]
    assert states == ["failed", "running"]


def test_an_enqueued_trial_samples_the_same_values() -> None:
    # What the re-offer relies on: sampling an enqueued trial gives back its params exactly.
    from optim_core.registry import OPTIMIZERS
    from optim_core.spaces import sample_space

    space = OPTIMIZERS["adam"].resolve_space({"eps": {"low": 1e-9, "high": 1e-6}, "lr": 0.01})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    first = study.ask()
    values = sample_space(first, space)
    study.tell(first, state=optuna.trial.TrialState.FAIL)
    study.enqueue_trial(study.trials[0].params)
    assert sample_space(study.ask(), space) == values


def test_report_says_when_to_prune(client: TestClient) -> None:
    create_external(client, n_trials=3, pruner="sha")
    good = ask(client)
    post(client, good, "report", step=1, value=0.1)
    post(client, good, "tell", value=0.1)
    bad = ask(client)
    response = post(client, bad, "report", step=1, value=50.0)
    assert response.json()["should_prune"] is True
    assert post(client, bad, "tell", state="pruned").status_code == 200


def test_ask_tell_is_only_for_external_studies(client: TestClient) -> None:
    body = {"name": "ext", "task": "rosenbrock", "optimizers": ["gd"], "n_trials": 1}
    client.post("/api/v1/studies", json=body)
    response = client.post(f"{STUDY}/trials/ask")
    assert response.status_code == 409
    assert "workers run its trials" in response.json()["detail"]
    tell = client.post(f"{STUDY}/trials/gd/0/tell", json={"value": 1.0, "lease": "x"})
    assert tell.status_code == 409


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("adam/{number}/report", {"step": 1, "value": 1.0, "lease": "x"}, 409, "lease does not"),
        ("adam/{number}/tell", {"value": 1.0, "lease": "x"}, 409, "lease does not match"),
        ("adam/{number}/renew", {"lease": "x"}, 409, "lease does not match"),
        ("adam/{number}/report", {"step": 1, "value": 1.0}, 422, "lease"),
        ("adam/{number}/tell", {"value": 1.0}, 422, "lease"),
        ("adam/{number}/renew", {}, 422, "lease"),
        ("adam/{number}/tell", {"value": 1.0, "lease": ""}, 422, "lease"),
        ("adam/99/report", {"step": 1, "value": 1.0, "lease": "{lease}"}, 404, "trial adam/99"),
        ("sgd/0/tell", {"value": 1.0, "lease": "{lease}"}, 404, "has no optimizer 'sgd'"),
        ("adam/{number}/tell", {"lease": "{lease}"}, 422, "send 'value'"),
        (
            "adam/{number}/tell",
            {"state": "pruned", "value": 1.0, "lease": "{lease}"},
            422,
            "has no",
        ),
        ("adam/{number}/tell", {"state": "lost", "lease": "{lease}"}, 422, "'complete', 'pruned'"),
        ("adam/{number}/report", {"value": 1.0, "lease": "{lease}"}, 422, "Field required"),
        ("adam/{number}/report", {"step": -1, "value": 1.0, "lease": "{lease}"}, 422, "greater"),
        ("adam/{number}/report", {"step": 1, "value": 1, "x": 1, "lease": "{lease}"}, 422, "'x'"),
        ("adam/{number}/renew", {"lease": "{lease}", "lease_seconds": 0}, 422, "greater than"),
        ("adam/zero/report", {"step": 1, "value": 1.0, "lease": "{lease}"}, 422, "valid integer"),
        ("adam/2147483648/tell", {"value": 1.0, "lease": "{lease}"}, 422, "less than or equal"),
    ],
)
def test_report_tell_and_renew_refuse_what_does_not_fit(
    busy_client: TestClient, path: str, body: dict[str, Any], status: int, fragment: str
) -> None:
    client = busy_client
    trial = ask(client)
    sent = {key: trial["lease"] if value == "{lease}" else value for key, value in body.items()}
    response = client.post(f"{STUDY}/trials/" + path.format(number=trial["number"]), json=sent)
    assert response.status_code == status, response.text
    assert fragment in response.text
    # The trial is still running and can be told.
    assert post(client, trial, "tell", value=1.0).status_code == 200


def test_another_clients_lease_cannot_tell_my_trial(busy_client: TestClient) -> None:
    client = busy_client
    mine, theirs = ask(client), ask(client)
    stolen = client.post(trial_url(mine, "tell"), json={"value": 9.0, "lease": theirs["lease"]})
    assert stolen.status_code == 409
    assert "lease does not match" in stolen.json()["detail"]
    for trial in (mine, theirs):
        told = post(client, trial, "tell", value=1.0)
        assert told.status_code == 200, told.text
        assert told.json()["value"] == 1.0


def test_non_finite_values_are_refused(busy_client: TestClient) -> None:
    client = busy_client
    trial = ask(client)
    response = client.post(
        trial_url(trial, "report"),
        content=b'{"step": 1, "value": NaN, "lease": "%s"}' % trial["lease"].encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "finite number" in response.json()["message"]
    assert post(client, trial, "tell", value=1.0).status_code == 200


def test_a_tell_is_idempotent_and_told_once(busy_client: TestClient) -> None:
    client = busy_client
    trial = ask(client)
    first = post(client, trial, "tell", value=1.0)
    assert first.status_code == 200
    retried = post(client, trial, "tell", value=1.0)
    assert (retried.status_code, retried.json()) == (200, first.json()), "a retry answers alike"
    again = post(client, trial, "tell", value=2.0)
    assert again.status_code == 409
    assert "already told complete with value 1.0" in again.json()["detail"]
    pruned = post(client, trial, "tell", state="pruned")
    assert pruned.status_code == 409
    report = post(client, trial, "report", step=2, value=2.0)
    assert report.status_code == 409
    assert "has already been told" in report.json()["detail"]
    renewed = post(client, trial, "renew")
    assert renewed.status_code == 409

    failed = ask(client)
    assert post(client, failed, "tell", state="failed").json()["state"] == "failed"
    assert post(client, failed, "tell", state="failed").status_code == 200
    assert post(client, failed, "tell", value=1.0).status_code == 409


def test_a_tell_retried_after_optuna_was_told_completes_the_slot(client: TestClient) -> None:
    # The first tell told Optuna, then failed before its slot was finished (a crash, an outage):
    # the client retries, and the retry records what Optuna already holds.
    create_external(client, n_trials=1)
    trial = ask(client)
    storage = optuna.storages.RDBStorage(client.app.state.settings.database_url)
    try:
        optuna.load_study(study_name="ext/adam", storage=storage).tell(trial["number"], 0.5)
    finally:
        storage.engine.dispose()

    retried = post(client, trial, "tell", value=0.5)

    assert retried.status_code == 200, retried.text
    assert retried.json()["study_status"] == "completed"
    listed = client.get(f"{STUDY}/trials").json()["items"]
    assert [(t["state"], t["value"]) for t in listed] == [("complete", 0.5)]


def test_renew_extends_the_lease_until_it_runs_out(client: TestClient) -> None:
    create_external(client, n_trials=2)
    trial = ask(client, lease_seconds=5)
    renewed = post(client, trial, "renew", lease_seconds=600)
    assert renewed.status_code == 200, renewed.text
    extended = renewed.json()["lease_expires_at"]
    assert extended > trial["lease_expires_at"]
    assert datetime.fromisoformat(extended) - datetime.fromisoformat(
        trial["lease_expires_at"]
    ) > timedelta(seconds=500)
    # A report renews with the lease's length (600 s now): it moves forward again.
    report = post(client, trial, "report", step=1, value=0.3)
    assert report.json()["lease_expires_at"] >= extended
    assert post(client, trial, "renew", lease="not-mine").status_code == 409

    short = ask(client, lease_seconds=0.3)

    def collected() -> bool:
        # Polled without renewing (a renew would keep it alive): recovery fails it when it ends.
        items = client.get(f"{STUDY}/trials", params={"state": "failed"}).json()["items"]
        return any(item["number"] == short["number"] for item in items)

    wait_until(collected, timeout=15, interval=0.1, message="the short lease to be collected")
    late = post(client, short, "renew")
    assert late.status_code == 409
    assert "ran out" in late.json()["detail"]
    assert post(client, short, "tell", value=0.1).status_code == 409
    # The renewed trial is unaffected and tells as usual.
    assert post(client, trial, "tell", value=0.2).status_code == 200


def test_bad_ask_options_answer_422(busy_client: TestClient) -> None:
    client = busy_client
    for body, fragment in [({"lease_seconds": 0}, "greater than 0"), ({"lease": 1}, "unknown")]:
        response = client.post(f"{STUDY}/trials/ask", json=body)
        assert response.status_code == 422
        assert fragment in response.json()["message"]


def test_an_ask_whose_study_is_deleted_under_it_answers_409(
    client: TestClient, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete takes the ask's slot back and purges the Optuna study after the claim and
    before the trial is created: Optuna's reads then fail with a KeyError, which is the delete's
    doing, so the answer is the 409 of a slot taken back, never a 500."""
    create_external(client, n_trials=2)
    real_load = optuna_bridge.load_study
    db = Database.connect(database_url)
    storage = make_optuna_storage(database_url)

    def delete_then_load(*args: Any, **kwargs: Any) -> Any:
        delete_study(db=db, storage=storage, name="ext")  # a racing DELETE, done whole
        return real_load(*args, **kwargs)

    monkeypatch.setattr(optuna_bridge, "load_study", delete_then_load)
    try:
        response = client.post(f"{STUDY}/trials/ask")
        assert response.status_code == 409, response.text
        assert "deleted or stopped" in response.json()["detail"], response.text
        assert client.get(STUDY).status_code == 404
    finally:
        storage.engine.dispose()
        db.dispose()
