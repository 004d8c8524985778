"""Health, metrics, the catalogue, API-key auth and the OpenAPI description, in-process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from optim_core.registry import OPTIMIZERS
from service.app import create_app
from service.config import Settings
from service.store.database import Database, db_now
from service.store.tables import StudyOptimizerRow, WorkerRow
from service.trials.lifecycle import claim_slot, revoke_study

API_KEY = "s3cret-key"
STUDY = {"name": "s1", "task": "rosenbrock", "optimizers": ["sgd", "adam"], "n_trials": 3}


def make_client(database_url: str, api_key: str | None = None) -> TestClient:
    return TestClient(create_app(Settings(database_url=database_url, api_key=api_key)))


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with make_client(database_url) as client:
        yield client


@pytest.fixture(scope="module")
def read_only_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for the tests that only read."""
    path = tmp_path_factory.mktemp("operations") / "hpt.db"
    with make_client(f"sqlite:///{path}") as client:
        yield client


@pytest.fixture
def locked_client(sqlite_url: str) -> Iterator[TestClient]:
    with make_client(sqlite_url, api_key=API_KEY) as client:
        yield client


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# --------------------------------------------------------------------------- health


def test_healthz_reports_the_database(read_only_client: TestClient) -> None:
    client = read_only_client
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "detail": None}


def test_healthz_answers_503_when_the_database_is_unreachable(client: TestClient) -> None:
    working = client.app.state.db
    # Nothing listens on port 1: every connection is refused at once.
    client.app.state.db = Database.connect("postgresql+psycopg://hpt:pw@127.0.0.1:1/hpt")
    try:
        response = client.get("/healthz")
        studies = client.get("/api/v1/studies")
    finally:
        client.app.state.db.dispose()
        client.app.state.db = working
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["database"]) == ("unavailable", "unreachable")
    assert "is not reachable" in body["detail"]
    assert "pw" not in body["detail"]  # no password in messages
    assert studies.status_code == 503
    assert "database is not reachable" in studies.json()["detail"]


# --------------------------------------------------------------------------- metrics


def test_metrics_count_studies_trials_workers_and_free_slots(client: TestClient) -> None:
    client.post("/api/v1/studies", json=STUDY)
    db: Database = client.app.state.db
    with db.write() as session:
        session.execute(sa.insert(WorkerRow).values(id="w1", host="h", pid=1))
        # A worker silent for far longer than three heartbeats is not live (database clock).
        session.execute(
            sa.insert(WorkerRow).values(id="w2", host="h", pid=2, last_seen_at=db_now(-3600))
        )
    client.get("/api/v1/studies/s1")
    client.get("/api/v1/studies/nope")

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert found["hpt_studies", (("status", "queued"),)] == 1
    assert found["hpt_studies", (("status", "running"),)] == 0
    assert found["hpt_trials", (("state", "complete"),)] == 0
    assert found["hpt_workers_live", ()] == 1
    assert found["hpt_trial_slots_free", ()] == 6
    assert found["hpt_database_up", ()] == 1
    key = (("method", "GET"), ("route", "/api/v1/studies/{name}"), ("status", "404"))
    assert found["hpt_http_requests_total", key] == 1
    # Route templates only: no study name (or other raw path) ever becomes a label value.
    label_values = {value for _, labels in found for _, value in labels}
    assert not {"/api/v1/studies/s1", "/api/v1/studies/nope"} & label_values

    # Counts come from the slot rows: a claimed slot is a running trial and takes a free slot.
    assert claim_slot(db, holder="w1") is not None
    found = samples(client.get("/metrics").text)
    assert found["hpt_studies", (("status", "running"),)] == 1
    assert found["hpt_trials", (("state", "running"),)] == 1
    assert found["hpt_trial_slots_free", ()] == 5


def test_metrics_count_no_running_trial_of_a_study_stuck_in_deleting(database_url: str) -> None:
    # The API's own clean-up runs far later than this test: the delete stays half done, as when
    # an Optuna study could not be deleted at once.
    settings = Settings(
        database_url=database_url, api_key=None, grace_period=600, lease_seconds=600
    )
    with TestClient(create_app(settings)) as client:
        assert client.post("/api/v1/studies", json=STUDY).status_code == 201
        db: Database = client.app.state.db
        assert claim_slot(db, holder="w1") is not None
        assert claim_slot(db, holder="w2") is not None
        found = samples(client.get("/metrics").text)
        assert found["hpt_trials", (("state", "running"),)] == 2

        revoke_study(db, "s1")  # a DELETE whose purge has not happened yet

        found = samples(client.get("/metrics").text)
        assert found["hpt_studies", (("status", "deleting"),)] == 1
        assert found["hpt_trials", (("state", "running"),)] == 0
        # Counted as every other release counts a slot given back: a failed attempt.
        assert found["hpt_trials", (("state", "failed"),)] == 2
        with db.read() as session:
            rows = session.execute(
                sa.select(StudyOptimizerRow.claimed, StudyOptimizerRow.running)
            ).all()
        assert all(tuple(row) == (0, 0) for row in rows), rows


def test_unmatched_paths_and_odd_methods_do_not_become_labels(client: TestClient) -> None:
    client.get("/no/such/path")
    client.request("BREW", "/healthz")
    found = samples(client.get("/metrics").text)
    routes = {dict(labels).get("route") for name, labels in found if name.startswith("hpt_http")}
    methods = {dict(labels).get("method") for name, labels in found if name.startswith("hpt_http")}
    assert "/no/such/path" not in routes and "<unmatched>" in routes
    assert "BREW" not in methods


def test_each_app_has_its_own_registry(sqlite_url: str, tmp_path: Any) -> None:
    with make_client(sqlite_url) as first, make_client(f"sqlite:///{tmp_path / 'b.db'}") as second:
        first.post("/api/v1/studies", json=STUDY)
        assert samples(first.get("/metrics").text)["hpt_studies", (("status", "queued"),)] == 1
        assert samples(second.get("/metrics").text)["hpt_studies", (("status", "queued"),)] == 0


# --------------------------------------------------------------------------- catalogue


def test_optimizers_lists_the_registry_with_default_spaces(read_only_client: TestClient) -> None:
    client = read_only_client
    optimizers = client.get("/api/v1/optimizers").json()
    assert [o["name"] for o in optimizers] == list(OPTIMIZERS)
    adam = next(o for o in optimizers if o["name"] == "adam")
    assert adam == OPTIMIZERS["adam"].to_json()
    assert adam["class"] == "Adam"
    assert adam["default_space"]["beta1"]["one_minus"] is True


def test_tasks_lists_metrics_directions_and_the_external_pseudo_task(
    read_only_client: TestClient,
) -> None:
    client = read_only_client
    tasks = client.get("/api/v1/tasks").json()
    by_name = {task["name"]: task for task in tasks}
    digits = by_name["digits_mlp"]
    assert digits["metrics"]["val_accuracy"] == "maximize"
    assert (digits["default_metric"], digits["direction"]) == ("val_accuracy", "maximize")
    assert digits["default_epochs"] >= 1 and digits["description"]
    assert by_name["rosenbrock"]["direction"] == "minimize"
    assert tasks[-1]["name"] == "external" and tasks[-1]["external"] is True
    assert "ask" in tasks[-1]["description"]


# --------------------------------------------------------------------------- auth


def mutating_routes(client: TestClient) -> list[tuple[str, str]]:
    params = {"name": "s1", "optimizer": "sgd", "number": "0"}
    return [
        (method.upper(), path.format(**params))
        for path, operations in client.get("/openapi.json").json()["paths"].items()
        for method in operations
        if method not in ("get", "head")
    ]


def test_every_mutating_request_needs_the_api_key(locked_client: TestClient) -> None:
    routes = mutating_routes(locked_client)
    assert len(routes) == 8  # create, delete, stop, ask, report, renew, tell, import
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
            response = locked_client.request(method, path, json={}, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert "HPT_API_KEY" in response.json()["detail"]
    missing = locked_client.post("/api/v1/studies", json=STUDY).json()["detail"]
    assert "send the header 'Authorization: Bearer <key>'" in missing
    assert locked_client.get("/api/v1/studies").json()["total"] == 0  # nothing was created


def test_the_right_key_lets_mutations_through_and_reads_stay_open(
    locked_client: TestClient,
) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    assert locked_client.post("/api/v1/studies", json=STUDY, headers=headers).status_code == 201
    assert locked_client.get("/api/v1/studies/s1").status_code == 200
    assert locked_client.get("/api/v1/optimizers").status_code == 200
    assert locked_client.get("/healthz").status_code == 200
    assert locked_client.delete("/api/v1/studies/s1", headers=headers).status_code == 200


def test_without_a_key_configured_no_header_is_needed(client: TestClient) -> None:
    assert client.post("/api/v1/studies", json=STUDY).status_code == 201
    assert client.delete("/api/v1/studies/s1").status_code == 200


# --------------------------------------------------------------------------- errors and OpenAPI


def test_unknown_paths_and_methods_answer_json_that_says_so(read_only_client: TestClient) -> None:
    client = read_only_client
    missing = client.get("/api/v1/nothing")
    assert missing.status_code == 404
    assert missing.json() == {
        "detail": "no endpoint /api/v1/nothing; the API is described at /docs"
    }
    wrong = client.put("/api/v1/studies")
    assert wrong.status_code == 405
    assert "PUT is not allowed on /api/v1/studies" in wrong.json()["detail"]


def test_openapi_documents_every_endpoint_with_its_errors(read_only_client: TestClient) -> None:
    client = read_only_client
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        ("get", "/healthz"): {"200", "503"},
        ("get", "/metrics"): {"200"},
        ("get", "/api/v1/optimizers"): {"200"},
        ("get", "/api/v1/tasks"): {"200"},
        ("post", "/api/v1/studies"): {"201", "401", "409", "422"},
        ("get", "/api/v1/studies"): {"200", "422"},
        ("get", "/api/v1/studies/{name}"): {"200", "404"},
        ("get", "/api/v1/studies/{name}/best"): {"200", "404"},
        ("get", "/api/v1/studies/{name}/trials"): {"200", "404", "422"},
        ("post", "/api/v1/studies/{name}/stop"): {"200", "401", "404", "409"},
        ("delete", "/api/v1/studies/{name}"): {"200", "202", "401", "404"},
        ("get", "/api/v1/best"): {"200", "422"},
        ("post", "/api/v1/studies/{name}/trials/ask"): {"200", "401", "404", "409"},
        ("post", "/api/v1/studies/{name}/trials/{optimizer}/{number}/report"): {"200", "409"},
        ("post", "/api/v1/studies/{name}/trials/{optimizer}/{number}/tell"): {"200", "409"},
        ("post", "/api/v1/studies/{name}/trials/{optimizer}/{number}/renew"): {"200", "409"},
    }
    for (method, path), statuses in expected.items():
        operation = paths[path][method]
        assert statuses <= set(operation["responses"]), (method, path)
        assert operation["summary"] and operation["tags"], (method, path)
    create = paths["/api/v1/studies"]["post"]
    assert create["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ValidationErrorOut"
    )
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200
