"""Samplers and pruners by name: every name works, seeded, with clear errors for bad names."""

from __future__ import annotations

import logging

import numpy as np
import optuna
import pytest

from optim_core import OPTIMIZERS
from studies import PRUNERS, SAMPLERS, make_pruner, make_sampler, run_study
from studies.samplers import SOBOL_STARTUP_TRIALS, grid_from_space

FINISHED = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
# Trials after which each sampler stops drawing its start-up points at random.
STARTUP = {
    "tpe": 10,
    "sobol_tpe": SOBOL_STARTUP_TRIALS,
    "gp": 10,
    "cmaes": 1,
    "qmc": 0,
    "random": 0,
    "grid": 0,
}


@pytest.fixture
def optuna_logs(caplog):
    optuna.logging.enable_propagation()
    caplog.set_level(logging.WARNING, logger="optuna")
    yield caplog
    optuna.logging.disable_propagation()


def test_the_registries_hold_the_documented_names_and_are_read_only():
    assert set(SAMPLERS) == {"tpe", "sobol_tpe", "random", "cmaes", "qmc", "gp", "grid"}
    assert set(SAMPLERS) == set(STARTUP)
    assert set(PRUNERS) == {"none", "median", "sha", "hyperband"}
    with pytest.raises(TypeError):
        SAMPLERS["mine"] = SAMPLERS["tpe"]  # type: ignore[index]


def test_bad_names_are_clear_errors_listing_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown sampler 'bayes'; choose one of \['cmaes', 'gp'"):
        make_sampler("bayes", seed=0)
    with pytest.raises(ValueError, match=r"unknown pruner 'early'; choose one of \['hyperband'"):
        make_pruner("early")
    with pytest.raises(ValueError, match="unknown sampler"):
        run_study("wine_mlp", "adam", n_trials=1, sampler="TPE")


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_tunes_a_space_with_a_categorical_batch_size(name, optuna_logs):
    # Adam's default space: three log-scaled floats and the categorical batch_size. Start-up
    # trials are drawn at random first, so the sampler itself proposes the last trial.
    storage = optuna.storages.InMemoryStorage()
    common = dict(epochs=1, pruner="none", seed=0, storage=storage, study_name="s")
    if STARTUP[name]:
        run_study(
            "breast_cancer_logreg", "adam", n_trials=STARTUP[name], sampler="random", **common
        )
    study = run_study("breast_cancer_logreg", "adam", n_trials=1, sampler=name, **common)
    assert len(study.trials) == STARTUP[name] + 1
    assert {trial.state for trial in study.trials} <= FINISHED
    hyper = study.trials[-1].user_attrs["hyperparameters"]
    assert hyper["batch_size"] in (16, 32, 64, 128, 256)
    assert 1e-5 <= hyper["lr"] <= 1e-1 and 0.5 <= hyper["beta1"] <= 0.999
    assert not [r.getMessage() for r in optuna_logs.records if "independent" in r.getMessage()]


@pytest.mark.parametrize("name", ["tpe", "sobol_tpe", "random", "cmaes", "qmc", "grid"])
def test_samplers_are_seeded(name):
    def params(seed):
        study = run_study("rosenbrock", "adam", n_trials=3, epochs=1, sampler=name, seed=seed)
        return [trial.params for trial in study.trials]

    assert params(0) == params(0)
    assert params(0) != params(1)


def test_the_grid_is_derived_from_the_space():
    space = OPTIMIZERS["adam"].resolve_space({"beta2": 0.999})
    grid = grid_from_space(space)
    assert set(grid) == {"lr", "one_minus_beta1", "batch_size"}  # fixed beta2 is no parameter
    assert grid["batch_size"] == [16, 32, 64, 128, 256]
    assert grid["lr"] == pytest.approx(np.geomspace(1e-5, 1e-1, 4).tolist())
    assert grid["lr"][0] == 1e-5 and grid["lr"][-1] == 1e-1
    assert min(grid["one_minus_beta1"]) == pytest.approx(1e-3)
    assert max(grid["one_minus_beta1"]) == pytest.approx(0.5)


def test_a_grid_study_visits_each_point_once_then_stops():
    study = run_study("rosenbrock", "gd", n_trials=10, epochs=1, sampler="grid", pruner="none")
    lrs = sorted(trial.params["lr"] for trial in study.trials)
    assert lrs == pytest.approx(np.geomspace(1e-3, 10.0, 4).tolist())  # gd: lr in [1e-3, 10]


def test_the_grid_sampler_needs_the_space():
    with pytest.raises(ValueError, match="search space"):
        make_sampler("grid", seed=0)


@pytest.mark.parametrize("name", sorted(PRUNERS))
def test_every_pruner_runs_a_study(name):
    study = run_study("wine_mlp", "sgd", n_trials=6, epochs=3, sampler="random", pruner=name)
    assert len(study.trials) == 6
    assert {trial.state for trial in study.trials} <= FINISHED
    assert all(trial.user_attrs["epochs_run"] <= 3 for trial in study.trials)
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert trial.user_attrs["pruned_reason"].startswith(("pruned by", "diverged"))


def test_pruners_are_the_documented_kinds():
    kinds = {name: type(make_pruner(name, epochs=9)).__name__ for name in PRUNERS}
    assert kinds == {
        "none": "NopPruner",
        "median": "MedianPruner",
        "sha": "SuccessiveHalvingPruner",
        "hyperband": "HyperbandPruner",
    }
