"""Warm starts: configs fitted to the space, their order and origins, and the studies they start."""

from __future__ import annotations

import math

import optuna
import pytest

from optim_core import OPTIMIZERS
from studies import run_study
from studies.objective import training_seed
from studies.samplers import DEFAULT_PRUNER, DEFAULT_SAMPLER
from studies.tasks import get_task
from studies.training import train
from studies.warm_start import (
    CATALOGUE_CONFIGS,
    MAX_WARM_START,
    PORTFOLIO_SOURCE,
    KnownConfig,
    enqueue_warm_start,
    fit_to_space,
    warm_start_budget,
    warm_start_configs,
)

ADAM = OPTIMIZERS["adam"]


def test_values_outside_a_narrowed_space_are_clipped_to_it():
    space = ADAM.resolve_space(
        {"lr": {"low": 1e-4, "high": 1e-2}, "beta1": {"low": 0.8, "high": 0.95}}
    )
    values, params = fit_to_space(
        {"lr": 0.05, "beta1": 0.99, "beta2": 0.999, "batch_size": 32}, space
    )
    assert values == {"lr": 1e-2, "beta1": 0.95, "beta2": 0.999, "batch_size": 32}
    assert params["lr"] == 1e-2
    assert params["one_minus_beta1"] == pytest.approx(0.05)
    assert params["one_minus_beta2"] == pytest.approx(0.001)
    # Inside the Optuna distribution of the dimension, so Optuna takes it as it is.
    assert 1 - 0.95 <= params["one_minus_beta1"] <= 1 - 0.8


def test_a_batch_size_off_the_choices_becomes_the_nearest_on_a_log_scale():
    space = ADAM.resolve_space({"batch_size": {"choices": [32, 128]}})
    assert fit_to_space({"lr": 1e-3, "batch_size": 60}, space)[0]["batch_size"] == 32
    assert fit_to_space({"lr": 1e-3, "batch_size": 70}, space)[0]["batch_size"] == 128


def test_fixed_and_unsearched_keys_are_dropped_and_unfittable_configs_skipped():
    space = ADAM.resolve_space({"batch_size": 64, "beta2": 0.99})
    values, params = fit_to_space({"lr": 1e-3, "batch_size": 16, "beta2": 0.9, "eps": 1e-6}, space)
    assert values == {"lr": 1e-3} and params == {"lr": 1e-3}
    assert fit_to_space({"batch_size": 16}, space) is None  # nothing searched is left
    strings = ADAM.resolve_space({"amsgrad": {"choices": [False]}})
    assert fit_to_space({"lr": 1e-3, "amsgrad": "yes"}, strings) is None
    assert fit_to_space({"lr": math.nan}, ADAM.space) is None


def test_the_budget_grows_with_n_trials_within_bounds():
    assert warm_start_budget(0) == 0
    assert warm_start_budget(1) == 1
    assert warm_start_budget(3) == 1
    assert warm_start_budget(10_000) == MAX_WARM_START
    budgets = [warm_start_budget(n) for n in range(1, 200)]
    assert budgets == sorted(budgets)


PORTFOLIO = [
    {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "batch_size": 32},
    {"lr": 3e-3, "beta1": 0.9, "beta2": 0.999, "batch_size": 64},
    {"lr": 0.5, "beta1": 0.9, "beta2": 0.999, "batch_size": 32},  # clipped to 0.1
    {"lr": 0.9, "beta1": 0.9, "beta2": 0.999, "batch_size": 32},  # clipped: a duplicate of it
]
CATALOGUE = [
    KnownConfig({"lr": 2e-3, "beta1": 0.8, "beta2": 0.99, "batch_size": 16}, 0.95, "older"),
    KnownConfig({"lr": 4e-3, "beta1": 0.8, "beta2": 0.99, "batch_size": 16}, 0.97, "old"),
    KnownConfig({"lr": 5e-3, "beta1": 0.8, "beta2": 0.99, "batch_size": 16}, math.nan, "broken"),
    KnownConfig({"lr": 6e-3, "beta1": 0.8, "beta2": 0.99, "batch_size": 16}, 0.90, "oldest"),
]


def test_catalogue_best_first_then_the_portfolio_in_order_without_duplicates():
    configs = warm_start_configs(
        ADAM.space, 40, direction="maximize", catalogue=CATALOGUE, portfolio=PORTFOLIO, limit=10
    )
    assert [(c.origin, c.source) for c in configs] == [
        ("catalogue", "old"),
        ("catalogue", "older"),
        ("portfolio", PORTFOLIO_SOURCE),
        ("portfolio", PORTFOLIO_SOURCE),
        ("portfolio", PORTFOLIO_SOURCE),
    ]
    assert CATALOGUE_CONFIGS == 2
    assert [c.values["lr"] for c in configs] == [4e-3, 2e-3, 1e-3, 3e-3, 0.1]
    assert configs[0].user_attrs == {"origin": "catalogue", "origin_source": "old"}
    minimizing = warm_start_configs(
        ADAM.space, 40, direction="minimize", catalogue=CATALOGUE, limit=1
    )
    assert [c.source for c in minimizing] == ["oldest"]


def test_the_budget_caps_the_list():
    configs = warm_start_configs(ADAM.space, 5, direction="maximize", portfolio=PORTFOLIO)
    assert len(configs) == warm_start_budget(5) == 1
    assert warm_start_configs(ADAM.space, 40, direction="maximize") == []
    with pytest.raises(ValueError, match="direction"):
        warm_start_configs(ADAM.space, 40, direction="up")


def test_warm_start_trials_come_first_with_their_origin_then_the_sampler():
    study = run_study(
        "wine_mlp",
        "adam",
        n_trials=5,
        epochs=2,
        seed=0,
        warm_start=True,
        catalogue=CATALOGUE[:1],
        portfolio=PORTFOLIO[:2],
        warm_start_limit=3,
    )
    trials = study.trials
    assert [t.user_attrs["origin"] for t in trials] == [
        "catalogue",
        "portfolio",
        "portfolio",
        "sampler",
        "sampler",
    ]
    assert [t.user_attrs.get("origin_source") for t in trials[:3]] == [
        "older",
        PORTFOLIO_SOURCE,
        PORTFOLIO_SOURCE,
    ]
    assert trials[1].user_attrs["hyperparameters"] == PORTFOLIO[0]
    assert trials[0].params["one_minus_beta1"] == pytest.approx(0.2)


def test_without_warm_start_every_trial_is_the_samplers_as_before():
    plain = run_study("wine_mlp", "adam", n_trials=3, epochs=1, seed=4)
    default = run_study("wine_mlp", "adam", n_trials=3, epochs=1, seed=4, warm_start=False)
    assert [t.params for t in plain.trials] == [t.params for t in default.trials]
    assert {t.user_attrs["origin"] for t in plain.trials} == {"sampler"}


def test_a_continued_study_does_not_queue_its_warm_start_again(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    common = dict(
        epochs=1,
        seed=0,
        storage=storage,
        study_name="s",
        warm_start=True,
        portfolio=PORTFOLIO[:2],
        warm_start_limit=2,
    )
    run_study("wine_mlp", "adam", n_trials=3, **common)
    study = run_study("wine_mlp", "adam", n_trials=2, **common)
    origins = [t.user_attrs["origin"] for t in study.trials]
    assert origins == ["portfolio", "portfolio", "sampler", "sampler", "sampler"]


def test_enqueue_warm_start_sets_the_attributes_optuna_returns():
    study = optuna.create_study()
    configs = warm_start_configs(ADAM.space, 40, direction="maximize", portfolio=PORTFOLIO[:1])
    enqueue_warm_start(study, configs)
    trial = study.ask()
    assert trial.user_attrs == {"origin": "portfolio", "origin_source": PORTFOLIO_SOURCE}
    assert trial.suggest_float("lr", 1e-5, 1e-1, log=True) == 1e-3


def test_a_warm_started_study_ends_no_worse_than_its_portfolio():
    # With the product defaults (sampler, pruner): the pruner must not lose what the portfolio
    # configs reach when trained in full with the same per-trial seeds.
    task, epochs, seed = "breast_cancer_logreg", 6, 2
    portfolio = [
        {"lr": 3e-2, "beta1": 0.9, "beta2": 0.999, "batch_size": 32},
        {"lr": 1e-4, "beta1": 0.5, "beta2": 0.9, "batch_size": 256},
        {"lr": 1e-2, "beta1": 0.95, "beta2": 0.99, "batch_size": 64},
    ]
    study = run_study(
        task,
        "adam",
        n_trials=12,
        epochs=epochs,
        seed=seed,
        sampler=DEFAULT_SAMPLER,
        pruner=DEFAULT_PRUNER,
        warm_start=True,
        portfolio=portfolio,
        warm_start_limit=3,
    )
    alone = [
        train(get_task(task), ADAM, values, epochs=epochs, seed=training_seed(seed, number)).curves[
            "val_loss"
        ][-1]
        for number, values in enumerate(portfolio)
    ]
    assert study.best_value <= min(alone)
