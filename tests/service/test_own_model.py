"""A model the product has never seen, trained by the user's own code through
``HPTClient.optimize`` against a real server, gets the whole answer of a built-in task: the
confirmation runs on seeds the service chose, none of it pruned, the counts are exact, a verdict
stands, warm starts stay within the model, and every surface says the same answer.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest
import torch
from typer.testing import CliRunner

from service.cli import build_app
from service.client import HPTClient
from studies.seeds import training_seed
from tests.helpers import wait_until
from tests.service.support import assert_exact_trials

EPOCHS = 3


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=generator)
    y = x @ torch.randn(6, 1, generator=generator) + 0.1 * torch.randn(96, 1, generator=generator)
    return x, y


def _regressor(seen: list[dict[str, Any]]) -> Any:
    """A small linear model of the user's own, seeded as the service says."""
    x, y = _data()

    def objective(trial: Any) -> float:
        torch.manual_seed(trial.seed)
        model = torch.nn.Linear(6, 1)
        optimizer = trial.build_optimizer(model.parameters())
        batch = trial.batch_size or len(x)
        order = torch.randperm(len(x))
        value = math.inf
        pruned = False
        for epoch in range(EPOCHS):
            for index in order.split(batch):
                optimizer.zero_grad()
                torch.nn.functional.mse_loss(model(x[index]), y[index]).backward()
                optimizer.step()
            with torch.no_grad():
                value = torch.nn.functional.mse_loss(model(x), y).item()
            try:
                trial.report(epoch, value)
            except BaseException:
                pruned = True
                raise
            finally:
                seen.append(
                    {
                        "optimizer": trial.optimizer,
                        "number": trial.number,
                        "seed": trial.seed,
                        "phase": trial.phase,
                        "epoch": epoch,
                        "pruned": pruned,
                    }
                )
        return value

    return objective


def test_an_own_model_is_confirmed_on_the_services_seeds_and_gets_a_verdict(
    start_server, database_url
):
    server = start_server(database_url)
    seen: list[dict[str, Any]] = []
    with HPTClient(server.base_url) as client:
        client.create_study(
            name="own-regressor",
            task="external",
            model="tiny-regressor",
            optimizers=["sgd", "adam"],
            n_trials=4,
            metric="val_mse",
            direction="minimize",
            pruner="median",
            seed=3,
            confirm={"top_k": 1, "seeds": 3},
        )
        client.optimize("own-regressor", _regressor(seen))
        study = client.get_study("own-regressor")
        best = client.best("own-regressor")
    assert study["status"] == "completed"
    assert study["phase"] == "completed"
    assert_exact_trials(database_url, "own-regressor", ["sgd", "adam"], 4 + 3)
    confirm = [s for s in seen if s["phase"] == "confirm"]
    assert {s["optimizer"] for s in confirm} == {"sgd", "adam"}
    # Every confirmation trial ran all its epochs on the seed the service handed out.
    runs = {(s["optimizer"], s["number"]) for s in confirm}
    assert len(runs) == 6
    assert not any(s["pruned"] for s in confirm)
    for optimizer, number in runs:
        epochs = [s for s in confirm if (s["optimizer"], s["number"]) == (optimizer, number)]
        assert len(epochs) == EPOCHS
        assert {s["seed"] for s in epochs} == {training_seed(3, number)}
    for optimizer in ("sgd", "adam"):  # each of its seeds a fresh one
        assert len({s["seed"] for s in confirm if s["optimizer"] == optimizer}) == 3
    assert best["basis"] == "verdict"
    assert best["verdict"] is not None
    assert {row["optimizer"] for row in best["optimizers"]} == {"sgd", "adam"}
    for row in best["optimizers"]:
        assert row["confirmed"]["value"]["n"] == 3
        assert row["value"] == pytest.approx(row["confirmed"]["value"]["mean"])
    assert best["answer"] == best["verdict"]["sentence"] == study["answer"]


def _run_constant(client: HPTClient, name: str, *, value: float) -> None:
    def objective(trial: Any) -> float:
        trial.report(0, value)
        return value

    client.optimize(name, objective)


def test_external_models_share_warm_starts_only_with_themselves(start_server, database_url):
    server = start_server(database_url)
    common = dict(
        task="external",
        optimizers=["adam"],
        n_trials=2,
        metric="loss",
        direction="minimize",
        confirm={"top_k": 0},
    )
    with HPTClient(server.base_url) as client:
        client.create_study(name="first", model="resnet", **common)
        _run_constant(client, "first", value=0.25)
        client.create_study(name="other-model", model="transformer", **common)
        client.create_study(name="same-model", model="resnet", **common)
        unnamed = client.create_study(name="unnamed", **common)
        assert unnamed["model"] == "unnamed"
        # Ask once, so each study's first trial (its first planned config) exists.
        for name in ("other-model", "same-model"):
            client.ask(name)
        origins = {
            name: [t["origin"] for t in client.trials(name)["items"]]
            for name in ("other-model", "same-model")
        }
        catalogue = client.best_for_task("external", model="resnet", metric="loss")
        transformer = client.best_for_task("external", model="transformer", metric="loss")
    assert origins["same-model"] == ["catalogue"]
    assert origins["other-model"] == ["portfolio"]
    assert catalogue["studies"][-1] == "first" and catalogue["optimizers"]
    assert transformer["optimizers"] == []


def test_a_three_way_tie_is_a_tie_on_every_surface(start_server, database_url):
    server = start_server(database_url)
    with HPTClient(server.base_url) as client:
        client.create_study(
            name="three-way",
            task="external",
            model="flat",
            optimizers=["sgd", "momentum", "adam"],
            n_trials=2,
            metric="val_accuracy",
            direction="maximize",
            confirm={"top_k": 1, "seeds": 2},
        )
        _run_constant(client, "three-way", value=0.9833)
        best = client.best("three-way")
        study = client.get_study("three-way")
        catalogue = client.best_for_task("external", model="flat", metric="val_accuracy")
    leaders = {"sgd", "momentum", "adam"}
    assert best["winner"] is None and set(best["leaders"]) == leaders
    assert study["winner"] is None and set(study["leaders"]) == leaders
    assert catalogue["winner"] is None and set(catalogue["leaders"]) == leaders
    assert "tied" in best["answer"]
    runner = CliRunner()
    env = {"HPT_URL": server.base_url}
    shown = runner.invoke(build_app(), ["study", "best", "three-way"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "Tied:" in shown.output and "Winner" not in shown.output
    watched = runner.invoke(build_app(), ["study", "watch", "three-way"], env=env)
    assert watched.exit_code == 0, watched.output
    assert "Tied:" in watched.output and "Winner" not in watched.output
    everywhere = runner.invoke(
        build_app(), ["best", "--task", "external", "--model", "flat", "--metric", "val_accuracy"],
        env=env,
    )  # fmt: skip
    assert everywhere.exit_code == 0, everywhere.output
    assert "Tied:" in everywhere.output and "Winner" not in everywhere.output

    # The dashboard: each Optuna study of it states the answer, once the API has published it.
    storage = optuna.storages.RDBStorage(database_url)
    try:

        def published() -> dict[str, Any] | None:
            attrs = optuna.load_study(study_name="three-way/adam", storage=storage).user_attrs
            return attrs if "verdict" in attrs else None

        attrs = wait_until(published, 30, 0.2, message="the verdict in the dashboard's attributes")
    finally:
        storage.engine.dispose()
    assert attrs["winner"] is None and set(attrs["leaders"]) == leaders
    assert attrs["verdict"] == best["answer"]
