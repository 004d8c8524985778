"""Hostile and careless input at the API's boundary: huge numbers, huge bodies, missing leases,
truthy booleans, an empty API key. Each answers a 4xx that says what to fix, writes nothing, and
never answers 500. Against a real server, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import sqlalchemy as sa

from service.store.tables import StudyRow, TrialSlotRow
from tests.helpers import wait_until
from tests.service.support import Server, create_study, get_study, inspector, tiny_study

EXTERNAL = {
    "name": "ext",
    "task": "external",
    "confirm": {"top_k": 0},
    "optimizers": ["adam"],
    "n_trials": 3,
    "metric": "loss",
    "direction": "minimize",
    "sampler": "random",
    "pruner": "none",
    "seed": 0,
}


def _studies(database_url: str) -> int:
    db = inspector(database_url)
    try:
        with db.connect() as conn:
            return conn.scalar(sa.select(sa.func.count()).select_from(StudyRow))
    finally:
        db.dispose()


def test_integers_beyond_any_column_are_refused_not_overflowed(
    database_url: str, start_server: Callable[..., Server]
) -> None:
    server = start_server(database_url)
    with server.client() as api:
        create_study(api, EXTERNAL)
        trial = api.post("/api/v1/studies/ext/trials/ask").json()
        for query in ("offset=9223372036854775808", "offset=2147483648", "limit=100000"):
            response = api.get(f"/api/v1/studies?{query}")
            assert response.status_code == 422, (query, response.text)
        for number in (2**63, 2**31, -1):
            for verb, body in (
                ("report", {"step": 0, "value": 1.0, "lease": trial["lease"]}),
                ("tell", {"value": 1.0, "lease": trial["lease"]}),
                ("renew", {"lease": trial["lease"]}),
            ):
                response = api.post(f"/api/v1/studies/ext/trials/adam/{number}/{verb}", json=body)
                assert response.status_code == 422, (number, verb, response.text)
        huge_step = {"step": 2**40, "value": 1.0, "lease": trial["lease"]}
        response = api.post(
            f"/api/v1/studies/ext/trials/adam/{trial['number']}/report", json=huge_step
        )
        assert response.status_code == 422
        for field, value in (("n_trials", 2**40), ("epochs", 2**63), ("seed", 2**31)):
            response = api.post("/api/v1/studies", json=tiny_study("big", **{field: value}))
            assert response.status_code == 422, (field, response.text)
    assert _studies(database_url) == 1


def test_a_lease_is_required_and_must_be_the_trials_own(
    database_url: str, start_server: Callable[..., Server]
) -> None:
    server = start_server(database_url)
    with server.client() as api:
        create_study(api, EXTERNAL)
        mine = api.post("/api/v1/studies/ext/trials/ask").json()
        theirs = api.post("/api/v1/studies/ext/trials/ask").json()
        url = f"/api/v1/studies/ext/trials/adam/{theirs['number']}"
        no_lease = api.post(f"{url}/tell", json={"value": 0.1})
        assert no_lease.status_code == 422 and "lease" in no_lease.text
        assert api.post(f"{url}/renew", json={}).status_code == 422
        stolen = api.post(f"{url}/tell", json={"value": 0.1, "lease": mine["lease"]})
        assert stolen.status_code == 409 and "does not match" in stolen.json()["detail"]
        own = api.post(f"{url}/tell", json={"value": 0.2, "lease": theirs["lease"]})
        assert own.status_code == 200, "the real owner is not locked out"
        renewed = api.post(
            f"/api/v1/studies/ext/trials/adam/{mine['number']}/renew",
            json={"lease": mine["lease"], "lease_seconds": 1000},
        )
        assert renewed.status_code == 200, renewed.text
        assert renewed.json()["lease_expires_at"] > mine["lease_expires_at"]


def test_big_bodies_and_big_spaces_are_refused_and_nothing_is_written(
    database_url: str, start_server: Callable[..., Server]
) -> None:
    server = start_server(database_url)
    with server.client() as api:
        huge = tiny_study("huge")
        huge["search_space"] = {"adam": {"batch_size": {"choices": list(range(1, 1_200_000))}}}
        response = api.post(
            "/api/v1/studies",
            content=json.dumps(huge).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 413, response.text[:200]
        assert "HPT_MAX_REQUEST_BYTES" in response.json()["detail"]
        many = tiny_study("many")
        many["search_space"] = {"adam": {"batch_size": {"choices": list(range(1, 200))}}}
        response = api.post("/api/v1/studies", json=many)
        assert response.status_code == 422 and "at most 64" in response.text
        overflowing = tiny_study("overflow")
        overflowing["search_space"] = {"sgd": {"lr": {"low": 1e300, "high": 1e308}}}
        response = api.post("/api/v1/studies", json=overflowing)
        assert response.status_code == 422 and "overflow" in response.text
        assert (
            api.post("/api/v1/studies", json=tiny_study("flag", n_trials=True)).status_code == 422
        )
        assert api.post("/api/v1/studies", json=tiny_study("text", epochs="3")).status_code == 422
    assert _studies(database_url) == 0


def test_expired_leases_are_collected_without_waiting_for_the_next_request(
    database_url: str, start_server: Callable[..., Server]
) -> None:
    server = start_server(database_url)
    with server.client() as api:
        create_study(api, EXTERNAL)
        api.post("/api/v1/studies/ext/trials/ask", json={"lease_seconds": 1})
        assert get_study(api, "ext")["optimizers"][0]["running"] == 1

        def collected() -> bool:
            adam = get_study(api, "ext")["optimizers"][0]
            return adam["running"] == 0 and adam["failed"] == 1

        wait_until(collected, 30, 0.2, message="the expired lease to be collected by itself")
    db = inspector(database_url)
    with db.connect() as conn:
        outcome = conn.scalar(sa.select(TrialSlotRow.outcome))
    assert outcome == "expired"


def test_an_empty_api_key_refuses_to_start_rather_than_run_open(sqlite_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--workers", "0", "--port", "0"],
        env={"HPT_DATABASE_URL": sqlite_url, "HPT_API_KEY": "", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "HPT_API_KEY is set but empty" in result.stdout + result.stderr
