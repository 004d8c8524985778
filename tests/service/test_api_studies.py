"""The studies API in-process (TestClient on SQLite and PostgreSQL): what a client sees for good
and bad requests. Trials are recorded as a worker records them (a slot claimed, its Optuna trial
started, told and the slot ended), since every count and best comes from the slot rows. The
end-to-end tests with real servers and workers live beside this file."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.store import optuna_bridge
from service.store.database import Database
from service.store.tables import StudyOptimizerRow, StudyRow, TrialSlotRow
from service.studies.defaults import DEFAULT_CONFIRM
from service.studies.progress import estimate_eta
from service.trials import protocol
from service.trials.lifecycle import Claim, _claim_in, start_slot
from service.vocabulary import StudyStatus
from service.worker import Worker
from tests.helpers import wait_until

MAX_TRIALS, MAX_EPOCHS = 50, 100
ADAM_VALUES = {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "batch_size": 64}
SGD_VALUES = {"lr": 0.1, "batch_size": 32}


def make_client(database_url: str) -> TestClient:
    settings = Settings(
        database_url=database_url, api_key=None, max_trials=MAX_TRIALS, max_epochs=MAX_EPOCHS
    )
    return TestClient(create_app(settings))


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with make_client(database_url) as client:
        yield client


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for the bad-input matrix: no case may write anything, so they can share it."""
    path: Path = tmp_path_factory.mktemp("api") / "hpt.db"
    with make_client(f"sqlite:///{path}") as client:
        yield client


def study_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "digits-compare",
        "task": "digits_mlp",
        "optimizers": ["sgd", "adam"],
        "n_trials": 4,
        "epochs": 3,
        "seed": 0,
        "search_space": {"adam": {"lr": {"low": 1e-4, "high": 1e-2}, "batch_size": 64}},
        "warm_start": "none",  # trials are recorded by hand here: the sampler's, not planned ones
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def stored(client: TestClient) -> tuple[list[str], list[str]]:
    """Names of our study rows and of the Optuna studies in the storage."""
    db: Database = client.app.state.db
    with db.read() as session:
        rows = list(session.scalars(sa.select(StudyRow.name).order_by(StudyRow.id)))
        pairs = session.scalar(sa.select(sa.func.count()).select_from(StudyOptimizerRow))
        assert pairs >= len(rows)
    return rows, optuna.get_all_study_names(client.app.state.writer_storage)


def claim_of(client: TestClient, optuna_study_name: str, holder: str = "test-worker") -> Claim:
    """Claim a slot of one (study, optimizer) pair, by the lifecycle's own claim of a pair (a
    worker's claim picks the pair itself; these tests need to choose it)."""
    db: Database = client.app.state.db
    with db.write() as session:
        pair_id = session.scalar(
            sa.select(StudyOptimizerRow.id).where(
                StudyOptimizerRow.optuna_study_name == optuna_study_name
            )
        )
        claim = _claim_in(session, pair_id, holder=holder, lease_seconds=None)
    assert claim is not None, f"no free slot of {optuna_study_name}"
    return claim


def record_trial(
    client: TestClient,
    optuna_study_name: str,
    value: float,
    values: dict[str, Any],
    *,
    state: optuna.trial.TrialState = optuna.trial.TrialState.COMPLETE,
) -> Claim:
    """A trial as a worker records it: a slot claimed, its Optuna trial started with the
    user-facing values and test metrics as user attrs, told, then the slot ended."""
    db: Database = client.app.state.db
    storage = client.app.state.writer_storage
    claim = claim_of(client, optuna_study_name)
    study = optuna_bridge.load_study(storage, optuna_study_name)

    def record_values(trial: optuna.Trial) -> dict[str, Any]:
        trial.set_user_attr("hyperparameters", values)
        return values

    trial = protocol.start(db, study, claim, prepare=record_values)
    trial.set_user_attr("test_value", value - 0.01)
    trial.set_user_attr("test_metrics", {"test_accuracy": value - 0.01})
    trial.set_user_attr("curves", {"val_accuracy": [value / 2, value]})
    trial.report(value, 1)
    _, ended = protocol.end(
        db,
        storage,
        slot_id=claim.slot_id,
        token=claim.claim_token,
        trial_id=optuna_bridge.trial_id(trial),
        state=state,
        value=value if state == optuna.trial.TrialState.COMPLETE else None,
        reason="the trial raised",
    )
    assert ended
    return claim


# --------------------------------------------------------------------------- bad input

BAD_BODIES = {
    "unknown task": (study_body(task="mnist"), "unknown task 'mnist'; choose one of ['"),
    "unknown task lists external": (study_body(task="mnist"), "'external']"),
    "unknown optimizer": (
        study_body(optimizers=["sgd", "adamax"]),
        "unknown optimizer 'adamax'; choose from ['adagrad'",
    ),
    "duplicate optimizer": (study_body(optimizers=["sgd", "sgd"]), "'sgd' is listed twice"),
    "no optimizer": (study_body(optimizers=[]), "at least 1 item"),
    "space with low above high": (
        study_body(search_space={"adam": {"lr": {"low": 1.0, "high": 0.1}}}),
        "lr: 'low' (1) must be smaller than 'high' (0.1)",
    ),
    "space with a key the optimizer lacks": (
        study_body(search_space={"sgd": {"beta1": 0.9}}),
        "beta1: not a hyperparameter of this optimizer; valid keys:",
    ),
    "space value out of its domain": (
        study_body(search_space={"adam": {"beta1": 1.5}}),
        "beta1: 1.5 is not accepted",
    ),
    "space of an optimizer not in the study": (
        study_body(search_space={"rmsprop": {"lr": 0.01}}),
        "'rmsprop' is not one of this study's optimizers",
    ),
    "space of an optimizer is not an object": (
        study_body(search_space={"adam": 3}),
        "Input should be a valid dictionary",
    ),
    "n_trials above the limit": (
        study_body(n_trials=MAX_TRIALS + 1),
        f"above this server's limit of {MAX_TRIALS}; ask for at most {MAX_TRIALS} "
        "(the limit is set by HPT_MAX_TRIALS)",
    ),
    "epochs above the limit": (study_body(epochs=MAX_EPOCHS + 1), "HPT_MAX_EPOCHS"),
    "n_trials far above the limit": (study_body(n_trials=10**30), "less than or equal to"),
    "n_trials zero": (study_body(n_trials=0), "greater than or equal to 1"),
    "n_trials not a number": (study_body(n_trials="many"), "valid integer"),
    "negative seed": (study_body(seed=-1), "greater than or equal to 0"),
    "name with a space": (study_body(name="my study"), "'my study' is not a valid study name"),
    "name with a slash": (study_body(name="a/b"), "letters, digits, '_' or '-'"),
    "name too long": (study_body(name="x" * 65), "1 to 64 letters"),
    "name starting with a dash": (study_body(name="-x"), "starting with a letter or a digit"),
    "metric the task lacks": (
        study_body(metric="val_f1"),
        "task 'digits_mlp' has no metric 'val_f1'; choose one of ['val_accuracy'",
    ),
    "direction against the task's": (study_body(direction="minimize"), "always to maximize"),
    "unknown direction": (study_body(direction="up"), "'maximize' or 'minimize'"),
    "unknown sampler": (study_body(sampler="bayes"), "unknown sampler 'bayes'; choose one of"),
    "unknown pruner": (study_body(pruner="early"), "unknown pruner 'early'; choose one of"),
    "unknown field": (study_body(colour="red"), "unknown field 'colour'"),
    "missing task": ({"name": "x", "optimizers": ["sgd"], "n_trials": 1}, "Field required"),
    "external without direction": (
        study_body(task="external", metric="loss", search_space={}),
        "must say whether its metric is to 'minimize' or 'maximize'",
    ),
    "external without metric": (
        study_body(task="external", direction="minimize", search_space={}),
        "must name its metric",
    ),
    "body is a list": ([study_body()], "the request body must be a JSON object"),
}


@pytest.mark.parametrize("case", BAD_BODIES)
def test_a_bad_request_answers_422_saying_what_to_fix_and_writes_nothing(
    shared_client: TestClient, case: str
) -> None:
    body, fragment = BAD_BODIES[case]
    response = shared_client.post("/api/v1/studies", json=body)
    assert response.status_code == 422, response.text
    payload = response.json()
    assert fragment in payload["message"]
    assert all({"loc", "msg", "type"} <= set(item) for item in payload["detail"])
    assert stored(shared_client) == ([], [])


def test_every_problem_of_a_request_is_listed_at_once(shared_client: TestClient) -> None:
    body = study_body(task="mnist", optimizers=["sgd", "nope"], sampler="bayes")
    response = shared_client.post("/api/v1/studies", json=body)
    assert response.status_code == 422
    locs = [item["loc"] for item in response.json()["detail"]]
    assert ["body", "task"] in locs
    assert ["body", "optimizers", 1] in locs
    assert ["body", "sampler"] in locs


@pytest.mark.parametrize(
    ("content", "content_type", "status", "fragment"),
    [
        (b'{"name": "x",', "application/json", 400, "request body is not valid JSON: "),
        (b"{'name': 'x'}", "application/json", 400, "request body is not valid JSON: "),
        (b"", "application/json", 422, "a JSON body is required"),
        (b"name=x", "text/plain", 422, "Content-Type: application/json"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused_with_the_reason(
    shared_client: TestClient, content: bytes, content_type: str, status: int, fragment: str
) -> None:
    response = shared_client.post(
        "/api/v1/studies", content=content, headers={"Content-Type": content_type}
    )
    assert response.status_code == status, response.text
    assert fragment in str(response.json())
    assert stored(shared_client) == ([], [])


def test_a_duplicate_name_answers_409_and_leaves_the_first_study_alone(client: TestClient) -> None:
    assert client.post("/api/v1/studies", json=study_body()).status_code == 201
    before = stored(client)
    again = study_body(optimizers=["rmsprop"], search_space={})
    response = client.post("/api/v1/studies", json=again)
    assert response.status_code == 409
    assert "a study named 'digits-compare' already exists" in response.json()["detail"]
    assert stored(client) == before


def test_concurrent_creates_of_one_name_make_one_study(client: TestClient) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(
            pool.map(lambda _: client.post("/api/v1/studies", json=study_body()), range(4))
        )
    assert sorted(response.status_code for response in answers) == [201, 409, 409, 409]
    assert stored(client) == (["digits-compare"], ["digits-compare/sgd", "digits-compare/adam"])


def test_a_name_whose_optuna_study_exists_answers_409_and_writes_nothing(
    client: TestClient,
) -> None:
    # An Optuna study left in the database by someone else holds the second optimizer's name.
    storage = client.app.state.writer_storage
    optuna.create_study(storage=storage, study_name="digits-compare/adam")
    response = client.post("/api/v1/studies", json=study_body())
    assert response.status_code == 409
    assert "digits-compare/adam" in response.json()["detail"]
    assert stored(client) == ([], ["digits-compare/adam"])  # sgd's was created, then removed


# --------------------------------------------------------------------------- create, show, list


def test_create_answers_201_with_the_study_and_its_location(client: TestClient) -> None:
    response = client.post("/api/v1/studies", json=study_body())
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == "/api/v1/studies/digits-compare"
    study = response.json()
    assert study["status"] == "queued"
    assert (study["metric"], study["direction"], study["epochs"]) == ("val_accuracy", "maximize", 3)
    assert (study["sampler"], study["pruner"], study["seed"]) == ("tpe", "hyperband", 0)
    assert [o["optimizer"] for o in study["optimizers"]] == ["sgd", "adam"]
    adam = study["optimizers"][1]
    assert adam["optuna_study_name"] == "digits-compare/adam"
    assert adam["search_space"]["lr"] == {"low": 1e-4, "high": 1e-2, "log": True}
    assert adam["search_space"]["batch_size"] == 64
    assert adam["search_space"]["beta1"]["one_minus"] is True
    assert {adam[key] for key in ("finished", "complete", "pruned", "running", "failed")} == {0}
    # The confirmation's trials are counted ahead (top_k x seeds per optimizer), so the total
    # never grows under a progress bar when it starts.
    ahead = DEFAULT_CONFIRM.top_k * DEFAULT_CONFIRM.seeds
    assert study["progress"] == {"finished": 0, "total": 2 * (4 + ahead), "fraction": 0.0}
    assert [row["total"] for row in study["optimizers"]] == [4 + ahead, 4 + ahead]
    assert study["best"] is None
    assert study["eta"]["seconds"] is None
    assert study["eta"]["reason"] == "no trial has finished yet"
    assert study["created_at"].endswith("Z")
    assert client.get("/api/v1/studies/digits-compare").json() == study


def test_create_stores_one_optuna_study_per_optimizer_with_what_the_dashboard_shows(
    client: TestClient,
) -> None:
    client.post("/api/v1/studies", json=study_body())
    storage = client.app.state.writer_storage
    assert sorted(optuna.get_all_study_names(storage)) == [
        "digits-compare/adam",
        "digits-compare/sgd",
    ]
    study = optuna.load_study(study_name="digits-compare/adam", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    attrs = study.user_attrs
    assert (attrs["hpt_study"], attrs["optimizer"], attrs["task"]) == (
        "digits-compare",
        "adam",
        "digits_mlp",
    )
    assert attrs["metric"] == "val_accuracy"
    assert attrs["search_space"]["batch_size"] == 64


def test_defaults_come_from_the_task(client: TestClient) -> None:
    body = {"name": "rosen", "task": "rosenbrock", "optimizers": ["gd"], "n_trials": 2}
    study = client.post("/api/v1/studies", json=body).json()
    assert (study["metric"], study["direction"]) == ("loss", "minimize")
    assert study["epochs"] >= 1
    assert (study["sampler"], study["pruner"], study["seed"]) == ("tpe", "hyperband", None)


def test_a_task_without_data_searches_and_shows_no_batch_size(client: TestClient) -> None:
    body = {
        "name": "rosen",
        "task": "rosenbrock",
        "optimizers": ["sgd", "adam"],
        "n_trials": 2,
        "confirm": {"top_k": 0},
    }
    slow = {"sgd": {"lr": {"low": 1e-4, "high": 1e-3}}}  # no divergence: complete trials
    study = client.post(
        "/api/v1/studies", json={**body, "epochs": 2, "seed": 0, "search_space": slow}
    ).json()
    spaces = {row["optimizer"]: row["search_space"] for row in study["optimizers"]}
    assert set(spaces["sgd"]) == {"lr"} and set(spaces["adam"]) == {"lr", "beta1", "beta2"}

    # The trials a worker runs, and the best params, have no batch size either.
    url = client.app.state.settings.database_url
    Worker(Settings(database_url=url, poll_interval=0.05), exit_when_idle=True).run()
    best = client.get("/api/v1/studies/rosen/best").json()
    assert {row["optimizer"] for row in best["optimizers"]} == {"sgd", "adam"}, best
    for row in best["optimizers"]:
        assert "batch_size" not in row["params"], row
        assert "batch_size" not in row["python"], row

    refused = client.post(
        "/api/v1/studies",
        json={**body, "name": "rosen-batch", "search_space": {"adam": {"batch_size": 64}}},
    )
    assert refused.status_code == 422, refused.text
    [problem] = refused.json()["detail"]
    assert problem["loc"] == ["body", "search_space", "adam"], problem
    assert "no data" in problem["msg"] and "batch_size" in problem["msg"], problem

    # A task with data searches it; so does an external study (the client's own training).
    for name, task in [("quad", "noisy_quadratic"), ("ext", "external")]:
        extra = {"metric": "loss", "direction": "minimize"} if task == "external" else {}
        created = client.post("/api/v1/studies", json={**body, "name": name, "task": task, **extra})
        assert created.status_code == 201, created.text
        assert all("batch_size" in row["search_space"] for row in created.json()["optimizers"])


def test_an_external_study_takes_its_metric_and_direction_from_the_request(
    client: TestClient,
) -> None:
    body = study_body(task="external", metric="bleu", direction="maximize", epochs=None)
    study = client.post("/api/v1/studies", json=body).json()
    assert (study["task"], study["metric"], study["direction"]) == ("external", "bleu", "maximize")
    assert study["eta"]["reason"].startswith("an external study")


def test_unknown_study_answers_404_pointing_at_the_list(client: TestClient) -> None:
    for method, path in [
        ("GET", "/api/v1/studies/nope"),
        ("GET", "/api/v1/studies/nope/best"),
        ("GET", "/api/v1/studies/nope/trials"),
        ("POST", "/api/v1/studies/nope/stop"),
        ("DELETE", "/api/v1/studies/nope"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.json() == {
            "detail": "study 'nope' not found; GET /api/v1/studies lists them"
        }


def test_list_is_paginated_newest_first_and_filters_by_status_and_task(
    client: TestClient,
) -> None:
    for name, task in [("a", "digits_mlp"), ("b", "rosenbrock"), ("c", "digits_mlp")]:
        body = study_body(name=name, task=task, search_space={}, epochs=None)
        assert client.post("/api/v1/studies", json=body).status_code == 201
    client.post("/api/v1/studies/b/stop")

    page = client.get("/api/v1/studies", params={"limit": 2}).json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    assert [item["name"] for item in page["items"]] == ["c", "b"]
    rest = client.get("/api/v1/studies", params={"limit": 2, "offset": 2}).json()
    assert [item["name"] for item in rest["items"]] == ["a"]
    summary = rest["items"][0]
    assert summary["optimizers"] == ["sgd", "adam"]
    assert (summary["n_trials"], summary["finished"], summary["total"]) == (4, 0, 8)

    stopped = client.get("/api/v1/studies", params={"status": "stopped"}).json()
    assert [item["name"] for item in stopped["items"]] == ["b"]
    digits = client.get("/api/v1/studies", params={"task": "digits_mlp"}).json()
    assert [item["name"] for item in digits["items"]] == ["c", "a"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"status": "done"}, "'queued', 'running', 'completed', 'stopped', 'failed' or 'deleting'"),
        ({"offset": 2**63}, "less than or equal to"),
        ({"limit": 0}, "greater than or equal to 1"),
        ({"limit": 10_000}, "less than or equal to 500"),
        ({"offset": -1}, "greater than or equal to 0"),
    ],
)
def test_bad_list_parameters_answer_422(
    shared_client: TestClient, params: dict[str, Any], fragment: str
) -> None:
    response = shared_client.get("/api/v1/studies", params=params)
    assert response.status_code == 422
    assert fragment in response.json()["message"]


# --------------------------------------------------------------------------- stop, delete


def test_stop_lets_no_new_trial_start_and_is_idempotent(client: TestClient) -> None:
    client.post("/api/v1/studies", json=study_body())
    response = client.post("/api/v1/studies/digits-compare/stop")
    assert response.status_code == 200
    study = response.json()
    assert study["status"] == "stopped"
    assert study["finished_at"] is not None
    assert study["eta"]["reason"] == "the study is stopped; no more trials will run"
    assert client.post("/api/v1/studies/digits-compare/stop").json()["status"] == "stopped"
    free = client.get("/metrics").text
    assert "hpt_trial_slots_free 0.0" in free


def test_delete_removes_the_rows_slots_and_optuna_studies(client: TestClient) -> None:
    client.post("/api/v1/studies", json=study_body())
    client.post("/api/v1/studies", json=study_body(name="kept"))
    record_trial(client, "digits-compare/adam", 0.9, ADAM_VALUES)
    record_trial(client, "kept/adam", 0.9, ADAM_VALUES)
    # A worker is training a trial of it right now: its slot is taken back.
    running = claim_of(client, "digits-compare/sgd")

    response = client.delete("/api/v1/studies/digits-compare")
    assert response.status_code == 200
    assert response.json() == {
        "name": "digits-compare",
        "optuna_studies": ["digits-compare/sgd", "digits-compare/adam"],
        "remaining": [],
    }
    names, optuna_names = stored(client)
    assert names == ["kept"]
    assert sorted(optuna_names) == ["kept/adam", "kept/sgd"]
    db: Database = client.app.state.db
    with db.read() as session:
        slots = session.scalars(sa.select(TrialSlotRow)).all()
        assert [slot.study_optimizer_id for slot in slots] != []
        assert running.slot_id not in {slot.id for slot in slots}
        assert len(slots) == 1, "only the kept study's slot is left"
    assert client.get("/api/v1/studies/digits-compare").status_code == 404
    # The name is free again, and the late worker of the deleted study can only miss.
    assert client.post("/api/v1/studies", json=study_body()).status_code == 201
    assert not start_slot(
        db, running.slot_id, running.claim_token, trial_id=1, trial_number=0, params={}
    )
    assert client.get("/api/v1/studies/digits-compare").json()["optimizers"][0]["running"] == 0


# Statements that make deleting one Optuna study fail, and undo that: (create, drop) by dialect
# and by the kind of error the database raises. A foreign-key violation is what PostgreSQL
# raised when trials were inserted while Optuna deleted a study (an IntegrityError, like
# SQLite's RAISE(ABORT)); "other" is any other database error.
KEEP_TRIGGER = {
    ("sqlite", "integrity"): (
        [
            "CREATE TRIGGER hpt_test_keep BEFORE DELETE ON studies "
            "WHEN OLD.study_name = 'digits-compare/adam' BEGIN SELECT RAISE(ABORT, 'kept'); END"
        ],
        ["DROP TRIGGER hpt_test_keep"],
    ),
    ("postgresql", "integrity"): (
        [
            "CREATE FUNCTION hpt_test_keep() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'kept' USING ERRCODE = 'foreign_key_violation'; END $$",
            "CREATE TRIGGER hpt_test_keep BEFORE DELETE ON studies FOR EACH ROW "
            "WHEN (OLD.study_name = 'digits-compare/adam') EXECUTE FUNCTION hpt_test_keep()",
        ],
        ["DROP TRIGGER hpt_test_keep ON studies", "DROP FUNCTION hpt_test_keep()"],
    ),
    ("postgresql", "other"): (
        [
            "CREATE FUNCTION hpt_test_keep() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'kept'; END $$",
            "CREATE TRIGGER hpt_test_keep BEFORE DELETE ON studies FOR EACH ROW "
            "WHEN (OLD.study_name = 'digits-compare/adam') EXECUTE FUNCTION hpt_test_keep()",
        ],
        ["DROP TRIGGER hpt_test_keep ON studies", "DROP FUNCTION hpt_test_keep()"],
    ),
}


def _delete_cannot_finish(database_url: str, error: str) -> None:
    settings = Settings(database_url=database_url, api_key=None, grace_period=2)
    with TestClient(create_app(settings)) as client:
        client.post("/api/v1/studies", json=study_body())
        record_trial(client, "digits-compare/adam", 0.9, ADAM_VALUES)
        db: Database = client.app.state.db
        key = (db.writer.dialect.name, error)
        if key not in KEEP_TRIGGER:
            pytest.skip(f"no {error} error to raise from a trigger on {key[0]}")
        create, drop = KEEP_TRIGGER[key]
        raw = db.writer.raw_connection()
        try:
            for statement in create:
                raw.cursor().execute(statement)
            raw.commit()

            response = client.delete("/api/v1/studies/digits-compare")

            assert response.status_code == 202, response.text
            assert response.json() == {
                "name": "digits-compare",
                "optuna_studies": ["digits-compare/sgd", "digits-compare/adam"],
                "remaining": ["digits-compare/adam"],
            }
            shown = client.get("/api/v1/studies/digits-compare")
            assert shown.status_code == 404 or shown.json()["status"] == "deleting", shown.text
            again = client.post("/api/v1/studies", json=study_body())
            assert again.status_code == 409
            assert "is being deleted" in again.json()["detail"]
            for statement in drop:
                raw.cursor().execute(statement)
            raw.commit()
        finally:
            raw.close()

        def recreated() -> bool:
            return client.post("/api/v1/studies", json=study_body()).status_code == 201

        wait_until(recreated, 30, 0.2, message="the delete to finish and the name to be free")
        study = client.get("/api/v1/studies/digits-compare").json()
        assert study["status"] == "queued" and study["best"] is None
        assert client.get("/api/v1/studies/digits-compare/trials").json()["total"] == 0


@pytest.mark.parametrize("error", ["other", "integrity"])
def test_a_delete_that_cannot_remove_everything_answers_202_and_finishes_later(
    database_url: str, error: str
) -> None:
    # The database refuses to delete one Optuna study: the answer says what is left, the name
    # stays taken while the delete waits, and the service finishes the delete once it can.
    _delete_cannot_finish(database_url, error)


def test_a_study_being_deleted_is_named_in_the_conflict(client: TestClient) -> None:
    client.post("/api/v1/studies", json=study_body())
    db: Database = client.app.state.db
    with db.write() as session:
        session.execute(
            sa.update(StudyRow)
            .where(StudyRow.name == "digits-compare")
            .values(status=StudyStatus.DELETING)
        )
    again = client.post("/api/v1/studies", json=study_body())
    assert again.status_code == 409
    assert "is being deleted; retry in a few seconds" in again.json()["detail"]


# --------------------------------------------------------------------------- progress and best


def test_status_counts_trials_per_optimizer_and_shows_the_best_so_far(client: TestClient) -> None:
    client.post("/api/v1/studies", json=study_body())
    record_trial(client, "digits-compare/adam", 0.95, ADAM_VALUES)
    record_trial(
        client, "digits-compare/adam", 0.5, ADAM_VALUES, state=optuna.trial.TrialState.PRUNED
    )
    record_trial(client, "digits-compare/sgd", 0.90, SGD_VALUES)
    record_trial(client, "digits-compare/sgd", 0.0, SGD_VALUES, state=optuna.trial.TrialState.FAIL)

    study = client.get("/api/v1/studies/digits-compare").json()
    sgd, adam = study["optimizers"]
    assert (adam["finished"], adam["complete"], adam["pruned"], adam["failed"]) == (2, 1, 1, 0)
    assert (sgd["finished"], sgd["complete"], sgd["pruned"], sgd["failed"]) == (1, 1, 0, 1)
    assert adam["best"]["value"] == 0.95
    assert sgd["best"]["params"] == SGD_VALUES
    assert study["best"]["optimizer"] == "adam"
    total = 2 * (4 + DEFAULT_CONFIRM.top_k * DEFAULT_CONFIRM.seeds)
    assert study["progress"] == {"finished": 3, "total": total, "fraction": 3 / total}
    # One search run each: adam leads, but the confirmation still to come names no winner.
    assert (study["winner"], study["leaders"], study["basis"]) == (None, ["adam"], "search")


def test_best_ranks_optimizers_and_gives_the_python_that_builds_the_winner(
    client: TestClient,
) -> None:
    client.post("/api/v1/studies", json=study_body(confirm={"top_k": 0}))
    record_trial(client, "digits-compare/sgd", 0.90, SGD_VALUES)
    record_trial(client, "digits-compare/adam", 0.80, ADAM_VALUES)
    record_trial(client, "digits-compare/adam", 0.95, ADAM_VALUES)

    best = client.get("/api/v1/studies/digits-compare/best").json()
    assert (best["task"], best["metric"], best["direction"]) == (
        "digits_mlp",
        "val_accuracy",
        "maximize",
    )
    assert best["studies"] == ["digits-compare"]
    assert [b["optimizer"] for b in best["optimizers"]] == ["adam", "sgd"]
    # Still running: adam leads on its single search run; no winner is named yet.
    assert best["winner"] is None and best["leaders"] == ["adam"], best
    assert best["answer"].startswith("Leading the search so far: adam"), best["answer"]
    winner = best["optimizers"][0]
    assert (winner["study"], winner["number"], winner["value"]) == ("digits-compare", 1, 0.95)
    assert winner["params"] == ADAM_VALUES
    assert winner["test_value"] == pytest.approx(0.94)
    assert winner["test_metrics"] == {"test_accuracy": pytest.approx(0.94)}
    assert winner["python"] == ("optim_core.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999))")
    assert best["basis"] == "search"


def test_equal_search_values_are_a_tie_never_broken_by_order(client: TestClient) -> None:
    client.post("/api/v1/studies", json=study_body(confirm={"top_k": 0}))
    record_trial(client, "digits-compare/sgd", 0.95, SGD_VALUES)
    record_trial(client, "digits-compare/adam", 0.95, ADAM_VALUES)
    best = client.get("/api/v1/studies/digits-compare/best").json()
    study = client.get("/api/v1/studies/digits-compare").json()
    for answer in (best, study):
        assert answer["winner"] is None, answer
        assert sorted(answer["leaders"]) == ["adam", "sgd"], answer
        assert answer["answer"].startswith("Tied on single search runs"), answer["answer"]
    catalogue = client.get("/api/v1/best", params={"task": "digits_mlp"}).json()
    assert catalogue["winner"] is None and sorted(catalogue["leaders"]) == ["adam", "sgd"]


def test_best_of_a_task_compares_every_study_with_that_metric(client: TestClient) -> None:
    client.post("/api/v1/studies", json=study_body(name="first"))
    client.post(
        "/api/v1/studies", json=study_body(name="second", optimizers=["sgd"], search_space={})
    )
    client.post("/api/v1/studies", json=study_body(name="by-loss", metric="val_loss"))
    record_trial(client, "first/sgd", 0.90, SGD_VALUES)
    record_trial(client, "first/adam", 0.93, ADAM_VALUES)
    record_trial(client, "second/sgd", 0.97, {**SGD_VALUES, "lr": 0.05})
    record_trial(client, "by-loss/sgd", 0.01, SGD_VALUES)

    best = client.get("/api/v1/best", params={"task": "digits_mlp"}).json()
    assert (best["metric"], best["direction"]) == ("val_accuracy", "maximize")
    assert best["studies"] == ["second", "first"], "newest first"
    assert [(b["optimizer"], b["study"], b["value"]) for b in best["optimizers"]] == [
        ("sgd", "second", 0.97),
        ("adam", "first", 0.93),
    ]
    assert best["winner"]["python"] == "optim_core.SGD(model.parameters(), lr=0.05)"

    only_adam = client.get("/api/v1/best", params={"task": "digits_mlp", "optimizer": "adam"})
    assert [b["optimizer"] for b in only_adam.json()["optimizers"]] == ["adam"]
    by_loss = client.get("/api/v1/best", params={"task": "digits_mlp", "metric": "val_loss"})
    assert (by_loss.json()["direction"], by_loss.json()["studies"]) == ("minimize", ["by-loss"])
    nothing = client.get("/api/v1/best", params={"task": "wine_mlp"}).json()
    assert (nothing["optimizers"], nothing["winner"], nothing["studies"]) == ([], None, [])


def test_best_of_a_task_pages_its_studies_and_takes_only_those_since(client: TestClient) -> None:
    client.post("/api/v1/studies", json=study_body(name="first"))
    client.post(
        "/api/v1/studies", json=study_body(name="second", optimizers=["sgd"], search_space={})
    )
    record_trial(client, "first/sgd", 0.99, SGD_VALUES)
    record_trial(client, "first/adam", 0.93, ADAM_VALUES)
    record_trial(client, "second/sgd", 0.97, {**SGD_VALUES, "lr": 0.05})

    paged = client.get("/api/v1/best", params={"task": "digits_mlp", "limit": 1, "offset": 1})
    assert paged.status_code == 200, paged.text
    assert paged.json()["studies"] == ["first"]
    # The page is of the studies listed; the bests are over every study in scope.
    assert [(b["optimizer"], b["value"]) for b in paged.json()["optimizers"]] == [
        ("sgd", 0.99),
        ("adam", 0.93),
    ]

    since = client.get("/api/v1/studies/second").json()["created_at"]
    recent = client.get("/api/v1/best", params={"task": "digits_mlp", "since": since}).json()
    assert recent["studies"] == ["second"]
    assert [(b["optimizer"], b["study"], b["value"]) for b in recent["optimizers"]] == [
        ("sgd", "second", 0.97)
    ]
    later = client.get(
        "/api/v1/best", params={"task": "digits_mlp", "since": "2999-01-01T00:00:00Z"}
    ).json()
    assert (later["studies"], later["optimizers"], later["winner"]) == ([], [], None)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({}, "Field required"),
        ({"task": "mnist"}, "unknown task 'mnist'; choose one of"),
        ({"task": "digits_mlp", "optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'"),
        ({"task": "digits_mlp", "metric": "val_f1"}, "has no metric 'val_f1'"),
        ({"task": "external"}, "add metric=<its name>"),
        ({"task": "digits_mlp", "limit": 0}, "greater than or equal to 1"),
        ({"task": "digits_mlp", "offset": -1}, "greater than or equal to 0"),
        ({"task": "digits_mlp", "since": "yesterday"}, "valid datetime"),
    ],
)
def test_best_of_a_task_refuses_bad_parameters(
    shared_client: TestClient, params: dict[str, Any], fragment: str
) -> None:
    response = shared_client.get("/api/v1/best", params=params)
    assert response.status_code == 422
    assert fragment in response.json()["message"]


def test_trials_are_listed_page_by_page_with_their_attributes(client: TestClient) -> None:
    client.post("/api/v1/studies", json=study_body())
    record_trial(client, "digits-compare/sgd", 0.90, SGD_VALUES)
    record_trial(
        client, "digits-compare/adam", 0.5, ADAM_VALUES, state=optuna.trial.TrialState.PRUNED
    )
    record_trial(client, "digits-compare/adam", 0.95, ADAM_VALUES)

    page = client.get("/api/v1/studies/digits-compare/trials").json()
    assert page["total"] == 3
    assert [(t["optimizer"], t["number"], t["state"]) for t in page["items"]] == [
        ("sgd", 0, "complete"),
        ("adam", 0, "pruned"),
        ("adam", 1, "complete"),
    ]
    assert {t["origin"] for t in page["items"]} == {"sampler"}
    assert {t["worker"] for t in page["items"]} == {"test-worker"}
    trial = page["items"][2]
    assert trial["params"] == ADAM_VALUES
    assert trial["test_metrics"] == {"test_accuracy": pytest.approx(0.94)}
    assert trial["intermediate_values"] == {"1": 0.95}
    assert trial["curves"] == {"val_accuracy": [0.475, 0.95]}
    assert trial["duration_seconds"] >= 0

    adam = client.get(
        "/api/v1/studies/digits-compare/trials",
        params={"optimizer": "adam", "limit": 1, "offset": 1},
    ).json()
    assert (adam["total"], [t["number"] for t in adam["items"]]) == (2, [1])
    pruned = client.get("/api/v1/studies/digits-compare/trials", params={"state": "pruned"}).json()
    assert [t["number"] for t in pruned["items"]] == [0]

    wrong = client.get("/api/v1/studies/digits-compare/trials", params={"optimizer": "rmsprop"})
    assert wrong.status_code == 422
    assert "has no optimizer 'rmsprop'; its optimizers are ['sgd', 'adam']" in wrong.text
    bad_state = client.get("/api/v1/studies/digits-compare/trials", params={"state": "done"})
    assert bad_state.status_code == 422


# --------------------------------------------------------------------------- ETA


@pytest.mark.parametrize(
    ("kwargs", "seconds", "reason"),
    [
        ({"durations": [10.0, 20.0], "slots_left": 6, "live_workers": 2}, 45.0, None),
        ({"durations": [10.0], "slots_left": 3, "live_workers": 8}, 10.0, None),
        ({"durations": [10.0], "slots_left": 5, "live_workers": 1}, 50.0, None),
        ({"durations": [], "slots_left": 5, "live_workers": 1}, None, "no trial has finished"),
        ({"durations": [1.0], "slots_left": 5, "live_workers": 0}, None, "no worker is running"),
        ({"durations": [1.0], "slots_left": 0, "live_workers": 0}, 0.0, None),
    ],
)
def test_eta_is_the_mean_duration_times_the_rounds_left(
    kwargs: dict[str, Any], seconds: float | None, reason: str | None
) -> None:
    eta = estimate_eta(status=StudyStatus.RUNNING, external=False, **kwargs)
    assert eta.seconds == seconds
    assert (eta.reason is None) == (reason is None)
    if reason is not None:
        assert reason in eta.reason
