"""Warm starts in the service: a new study tries the shipped portfolio first, a task seen before
starts from its best known configs (the catalogue), ``"warm_start"`` says where to start from,
and every trial says where its config came from. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.service.support import Server, ServiceProcess, create_study, wait_for_status

STUDY_TIMEOUT = 180.0


def _study(name: str, **fields: object) -> dict:
    return {
        "name": name,
        "task": "wine_mlp",
        "optimizers": ["adam"],
        "n_trials": 10,  # 2 warm-start configs (studies.warm_start.warm_start_budget)
        "epochs": 3,
        "seed": 0,
        "confirm": {"top_k": 0},
        **fields,
    }


def _origins(api, name: str) -> list[tuple[str, dict]]:
    trials = api.get(f"/api/v1/studies/{name}/trials", params={"limit": 100}).json()["items"]
    return [(t["origin"], t["params"]) for t in sorted(trials, key=lambda t: t["number"])]


@pytest.mark.slow
def test_portfolio_then_catalogue_then_sampler_with_origins(
    database_url: str,
    start_server: Callable[..., Server],
    start_worker: Callable[..., ServiceProcess],
) -> None:
    server = start_server(database_url)
    worker = start_worker(database_url)
    with server.client() as api:
        create_study(api, _study("first"))
        wait_for_status(api, "first", STUDY_TIMEOUT, processes=[worker])
        first = _origins(api, "first")
        assert first[0][0] == "portfolio", first
        assert {origin for origin, _ in first} <= {"portfolio", "sampler"}
        assert "sampler" in {origin for origin, _ in first}, "the sampler takes over"

        create_study(api, _study("second"))
        wait_for_status(api, "second", STUDY_TIMEOUT, processes=[worker])
        second = _origins(api, "second")
        best_first = api.get("/api/v1/studies/first/best").json()["winner"]
        assert second[0] == ("catalogue", best_first["params"]), second
        assert second[1][0] == "portfolio"

        # Its best is never worse than what it started from.
        best_second = api.get("/api/v1/studies/second/best").json()["winner"]
        assert best_second["value"] >= best_first["value"] - 1e-12

        create_study(api, _study("cold", warm_start="none"))
        named = create_study(api, _study("named", warm_start=["first"]))
        assert named["status"] == "queued"
        wait_for_status(api, "cold", STUDY_TIMEOUT, processes=[worker])
        assert {origin for origin, _ in _origins(api, "cold")} == {"sampler"}
        wait_for_status(api, "named", STUDY_TIMEOUT, processes=[worker])
        assert _origins(api, "named")[0] == ("catalogue", best_first["params"])

        unknown = api.post("/api/v1/studies", json=_study("lost", warm_start=["nowhere"]))
        assert unknown.status_code == 422 and "nowhere" in unknown.text
        other_task = api.post(
            "/api/v1/studies",
            json={**_study("mixed", warm_start=["first"]), "task": "digits_mlp"},
        )
        assert other_task.status_code == 422 and "wine_mlp" in other_task.text
        assert api.get("/api/v1/studies/lost").status_code == 404
