"""The confirmation as a race, through the service: seeds go out in rounds (one look of the race
at a time) and only to optimizers whose answer is still open; a clearly worse optimizer stops at
the first look, optimizers within the margin are declared tied and stop, the counts stay exact on
both backends, and every surface says how the race ended."""

from __future__ import annotations

from collections import Counter
from typing import Any

from service.client import HPTClient
from tests.service.support import assert_exact_trials

SEARCH = 2


def _values(worse: str | None, *, spread: float) -> Any:
    """An objective whose figure is set by the optimizer (``worse`` far below the others) and a
    small seed-to-seed spread, so the race's decisions are known in advance."""
    seen: Counter[tuple[str, str]] = Counter()

    def objective(trial: Any) -> float:
        seen[(trial.optimizer, trial.phase)] += 1
        base = 0.5 if trial.optimizer == worse else 0.9
        value = base + spread * ((trial.seed % 7) / 7.0)
        trial.report(0, value)
        return value

    objective.seen = seen  # type: ignore[attr-defined]
    return objective


def _study(client: HPTClient, name: str, optimizers: list[str], **confirm: Any) -> None:
    client.create_study(
        name=name,
        task="external",
        model=name,
        optimizers=optimizers,
        n_trials=SEARCH,
        metric="val_accuracy",
        direction="maximize",
        pruner="none",
        seed=1,
        confirm={"top_k": 1, **confirm},
    )


def test_a_clearly_worse_optimizer_stops_at_the_first_look_and_ties_stop_within_the_margin(
    start_server, database_url
):
    server = start_server(database_url)
    objective = _values("gd", spread=0.001)
    with HPTClient(server.base_url) as client:
        _study(client, "race", ["sgd", "adam", "gd"], seeds=10, equivalence=0.05)
        client.optimize("race", objective)
        study = client.get_study("race")
        best = client.best("race")
    assert study["status"] == "completed"
    # The first look (3 seeds each) settles it: gd is worse beyond noise, sgd and adam are
    # within the margin of each other; nobody got a seed more.
    assert {row["optimizer"]: row["confirm_trials"] for row in study["optimizers"]} == {
        "sgd": 3, "adam": 3, "gd": 3,
    }  # fmt: skip
    for row in study["optimizers"]:
        assert_exact_trials(database_url, "race", [row["optimizer"]], SEARCH + 3)
    race = best["verdict"]["race"]
    assert race["settled"] and race["looks_done"] == 1
    outcomes = {tuple(sorted((p["a"], p["b"]))): p["outcome"] for p in race["pairs"]}
    assert outcomes[("adam", "sgd")] == "tied"
    assert outcomes[("gd", "sgd")] == outcomes[("adam", "gd")] == "better"
    assert race["optimizers"]["gd"]["status"] == "worse"
    assert race["optimizers"]["gd"]["stopped_at_seeds"] == 3
    assert best["winner"] is None and sorted(best["leaders"]) == ["adam", "sgd"]
    standings = {s["optimizer"]: s["status"] for s in best["verdict"]["standings"]}
    assert standings["gd"] == "worse" and {standings["sgd"], standings["adam"]} == {"best", "tied"}
    assert "0.05" in best["answer"] and "gd" in best["answer"], best["answer"]
    assert study["answer"] == best["answer"]


def test_a_race_not_separable_within_its_cap_says_so(start_server, database_url):
    server = start_server(database_url)
    # Two equal optimizers (each confirmation seed gives both the same figure) with a seed
    # spread of 0.04: never better, and never provably within a margin of 0.001 by the cap.
    seen: Counter[str] = Counter()

    def objective(trial: Any) -> float:
        seen[trial.phase] += 1
        value = 0.9 + 0.04 * ((trial.seed % 5) / 4.0 - 0.5)
        trial.report(0, value)
        return value

    with HPTClient(server.base_url) as client:
        _study(client, "capped", ["sgd", "adam"], seeds=5, equivalence=0.001)
        client.optimize("capped", objective)
        study = client.get_study("capped")
        best = client.best("capped")
    race = best["verdict"]["race"]
    assert race["settled"]
    [pair] = race["pairs"]
    assert pair["outcome"] == "not_separable"
    # Looks at 3 and 5 seeds: the race went on to its cap.
    assert {row["optimizer"]: row["confirm_trials"] for row in study["optimizers"]} == {
        "sgd": 5, "adam": 5,
    }  # fmt: skip
    assert seen["confirm"] == 10
    assert best["winner"] is None
    assert "not separable within the cap" in best["answer"].lower(), best["answer"]
