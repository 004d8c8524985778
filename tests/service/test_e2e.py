"""End to end: a real uvicorn server and real ``hpt worker`` processes on one database, used over
HTTP the way a person or a script would, on SQLite and on PostgreSQL."""

from __future__ import annotations

import signal
from collections.abc import Callable

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

from service.store.tables import StudyOptimizerRow, StudyRow, TrialSlotRow
from tests.helpers import wait_until
from tests.service.support import (
    Server,
    ServiceProcess,
    assert_exact_trials,
    create_study,
    freeze_during_trial,
    get_study,
    inspector,
    optuna_trial_state,
    slot,
    tiny_study,
    wait_for_status,
)

STUDY_TIMEOUT = 120.0


def test_study_runs_to_completion_with_exact_counts(
    database_url: str,
    start_server: Callable[..., Server],
    start_worker: Callable[..., ServiceProcess],
) -> None:
    server = start_server(database_url)
    workers = [start_worker(database_url), start_worker(database_url)]
    n_trials = 3
    with server.client() as api:
        created = create_study(api, tiny_study("digits", n_trials=n_trials))
        assert created["status"] == "queued"
        assert [o["optimizer"] for o in created["optimizers"]] == ["sgd", "adam"]

        done = wait_for_status(api, "digits", STUDY_TIMEOUT, processes=[server.process, *workers])

        assert done["status"] == "completed", done
        assert done["progress"] == {
            "finished": 2 * n_trials,
            "total": 2 * n_trials,
            "fraction": 1.0,
        }
        for progress in done["optimizers"]:
            assert progress["finished"] == n_trials, progress
            assert progress["running"] == 0, progress
        assert_exact_trials(database_url, "digits", ["sgd", "adam"], n_trials)

        best = api.get("/api/v1/studies/digits/best")
        assert best.status_code == 200, best.text
        best = best.json()
        assert {b["optimizer"] for b in best["optimizers"]} == {"sgd", "adam"}
        assert best["winner"] == max(best["optimizers"], key=lambda b: b["value"])
        for entry in best["optimizers"]:
            assert entry["test_value"] is not None and 0.0 <= entry["test_value"] <= 1.0
            assert entry["params"]["lr"] > 0
            assert entry["python"].startswith("optim_core.")

        trials = api.get("/api/v1/studies/digits/trials", params={"optimizer": "adam"}).json()
        assert trials["total"] == n_trials
        assert {t["state"] for t in trials["items"]} <= {"complete", "pruned"}

        by_task = api.get("/api/v1/best", params={"task": "digits_mlp"})
        assert by_task.status_code == 200, by_task.text
        assert "digits" in by_task.json()["studies"]

        optimizers = api.get("/api/v1/optimizers")
        assert optimizers.status_code == 200
        assert {"sgd", "adam"} <= {o["name"] for o in optimizers.json()}
        tasks = api.get("/api/v1/tasks")
        assert tasks.status_code == 200
        digits = {t["name"]: t for t in tasks.json()}["digits_mlp"]
        assert digits["direction"] == "maximize"

    # Optuna itself, as optuna-dashboard would, reads the same storage.
    adam = optuna.load_study(study_name="digits/adam", storage=database_url)
    # (load_study with a URL builds a storage of its own; it is closed with the interpreter.)
    finished = [t for t in adam.trials if t.state == TrialState.COMPLETE]
    assert len(adam.trials) == n_trials and finished
    for trial in finished:
        assert {"lr", "beta1", "beta2", "batch_size"} <= set(trial.user_attrs["hyperparameters"])
        assert isinstance(trial.user_attrs["test_value"], float)
    assert adam.best_value == next(
        b["value"] for b in best["optimizers"] if b["optimizer"] == "adam"
    )


def test_ask_tell_with_api_key_and_an_expired_lease(
    database_url: str, start_server: Callable[..., Server]
) -> None:
    server = start_server(database_url, api_key="s3cret")
    body = {
        "name": "external",
        "task": "external",
        "confirm": {"top_k": 0},
        "optimizers": ["adam"],
        "n_trials": 2,
        "metric": "loss",
        "direction": "minimize",
        "sampler": "random",
        "pruner": "none",
        "seed": 1,
    }
    with server.client(auth=False) as anonymous, server.client() as api:
        refused = anonymous.post("/api/v1/studies", json=body)
        assert refused.status_code == 401, refused.text
        assert "Authorization: Bearer" in refused.json()["detail"]
        wrong = anonymous.post(
            "/api/v1/studies", json=body, headers={"Authorization": "Bearer guess"}
        )
        assert wrong.status_code == 401
        assert anonymous.get("/api/v1/studies/external").status_code == 404, "nothing was created"
        create_study(api, body)
        assert anonymous.get("/api/v1/studies/external").status_code == 200, "reading is open"
        assert anonymous.post("/api/v1/studies/external/trials/ask").status_code == 401
        assert anonymous.post("/api/v1/studies/external/stop").status_code == 401
        assert anonymous.delete("/api/v1/studies/external").status_code == 401

        # A trial asked, reported and told.
        first = api.post("/api/v1/studies/external/trials/ask", json={"lease_seconds": 60})
        assert first.status_code == 200, first.text
        first = first.json()
        assert first["optimizer"] == "adam" and first["lease"]
        assert {"lr", "beta1", "beta2"} <= set(first["params"])
        trial_url = f"/api/v1/studies/external/trials/adam/{first['number']}"
        unleased = api.post(f"{trial_url}/report", json={"step": 0, "value": 0.9})
        assert unleased.status_code == 422, "a report needs the lease"
        report = api.post(
            f"{trial_url}/report", json={"step": 0, "value": 0.9, "lease": first["lease"]}
        )
        assert report.status_code == 200, report.text
        assert report.json()["should_prune"] is False
        told = api.post(f"{trial_url}/tell", json={"value": 0.5, "lease": first["lease"]})
        assert told.status_code == 200, told.text
        assert told.json()["state"] == "complete"
        again = api.post(f"{trial_url}/tell", json={"value": 0.5, "lease": first["lease"]})
        assert again.status_code == 200 and again.json() == told.json(), "a retried tell"
        other = api.post(f"{trial_url}/tell", json={"value": 0.4, "lease": first["lease"]})
        assert other.status_code == 409 and "already told" in other.json()["detail"]
        after = api.post(
            f"{trial_url}/report", json={"step": 1, "value": 0.8, "lease": first["lease"]}
        )
        assert after.status_code == 409 and "already been told" in after.json()["detail"]

        # A trial asked and never told: its lease runs out, its params go to the next ask.
        lost = api.post("/api/v1/studies/external/trials/ask", json={"lease_seconds": 1}).json()
        held = api.post("/api/v1/studies/external/trials/ask")
        assert held.status_code == 409, "the last slot is held by the leased trial"

        def ask_again() -> dict | None:
            response = api.post("/api/v1/studies/external/trials/ask", json={"lease_seconds": 60})
            assert response.status_code in (200, 409), response.text
            return response.json() if response.status_code == 200 else None

        retried = wait_until(ask_again, 15, 0.2, message="the lease to expire")
        assert retried["params"] == lost["params"]
        assert retried["number"] != lost["number"]
        late = api.post(
            f"/api/v1/studies/external/trials/adam/{lost['number']}/tell",
            json={"value": 0.1, "lease": lost["lease"]},
        )
        assert late.status_code == 409, late.text

        last = api.post(
            f"/api/v1/studies/external/trials/adam/{retried['number']}/tell",
            json={"value": 0.25, "lease": retried["lease"]},
        )
        assert last.status_code == 200, last.text
        assert last.json()["study_status"] == "completed"
        study = get_study(api, "external")
        assert study["status"] == "completed"
        (adam,) = study["optimizers"]
        assert (adam["finished"], adam["failed"], adam["running"]) == (2, 1, 0)
        best = api.get("/api/v1/studies/external/best").json()
        assert best["winner"]["value"] == 0.25
        assert api.post("/api/v1/studies/external/trials/ask").status_code == 409

    states = assert_exact_trials(database_url, "external", ["adam"], 2, failed=1)
    assert states["adam"][TrialState.COMPLETE] == 2


def test_stop_lets_the_running_trial_finish_and_delete_removes_everything(
    database_url: str,
    start_server: Callable[..., Server],
    start_worker: Callable[..., ServiceProcess],
) -> None:
    server = start_server(database_url)  # no API key: mutations need no Authorization
    worker = start_worker(database_url)
    db = inspector(database_url)
    with server.client() as api:
        create_study(api, tiny_study("stopme", optimizers=["sgd"], n_trials=50))

        running = freeze_during_trial(db, worker)
        stopped = api.post("/api/v1/studies/stopme/stop")
        worker.send(signal.SIGCONT)

        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["status"] == "stopped"
        wait_until(
            lambda: slot(db, running.id).state == "finished",
            30,
            message="the trial running at the stop to finish",
        )
        assert optuna_trial_state(db, running.trial_id) in ("COMPLETE", "PRUNED")
        finished_at_stop = get_study(api, "stopme")["progress"]["finished"]

        # The worker is alive and idle for the stopped study: it runs a new study to its end and
        # takes nothing more of the stopped one.
        create_study(api, tiny_study("after", optimizers=["sgd"], n_trials=1))
        assert wait_for_status(api, "after", 60, processes=[worker])["status"] == "completed"
        study = get_study(api, "stopme")
        assert study["status"] == "stopped"
        assert study["progress"]["finished"] == finished_at_stop < 50
        assert study["optimizers"][0]["running"] == 0
        assert api.post("/api/v1/studies/stopme/stop").status_code == 200, "stopping twice is fine"

        deleted = api.delete("/api/v1/studies/stopme")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["optuna_studies"] == ["stopme/sgd"]
        assert api.get("/api/v1/studies/stopme").status_code == 404
        assert api.get("/api/v1/studies/stopme/trials").status_code == 404
        assert api.delete("/api/v1/studies/stopme").status_code == 404
        assert api.get("/api/v1/studies/after").status_code == 200

    assert optuna.get_all_study_names(storage=database_url) == ["after/sgd"]
    with db.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(StudyRow)) == 1
        assert conn.scalar(sa.select(sa.func.count()).select_from(StudyOptimizerRow)) == 1
        slots_left = (
            conn.execute(
                sa.select(StudyOptimizerRow.optuna_study_name).join(
                    TrialSlotRow, TrialSlotRow.study_optimizer_id == StudyOptimizerRow.id
                )
            )
            .scalars()
            .all()
        )
        assert set(slots_left) == {"after/sgd"}
        orphans = conn.scalar(
            sa.select(sa.func.count())
            .select_from(TrialSlotRow)
            .where(TrialSlotRow.study_optimizer_id.not_in(sa.select(StudyOptimizerRow.id)))
        )
        assert orphans == 0
    db.dispose()
