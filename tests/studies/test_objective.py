"""The Optuna objective of one trial, and run_study around it: what a trial leaves in storage."""

from __future__ import annotations

import json

import optuna
import pytest

from optim_core import OPTIMIZERS, SpaceError
from studies import TrialPlan, make_objective, run_study, study_direction, task_space
from studies.objective import training_seed
from studies.samplers import make_pruner
from studies.tasks import get_task
from tests.studies.helpers import ADAM, Parabola

COMPLETE_ATTRS = {
    "origin",
    "optimizer",
    "hyperparameters",
    "seed",
    "curves",
    "epochs_run",
    "test_metrics",
    "test_value",
}


def test_a_completed_trial_stores_what_the_api_reads():
    study = run_study("wine_mlp", "adam", n_trials=1, epochs=4, overrides={"batch_size": 16})
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    attrs = trial.user_attrs
    assert set(attrs) == COMPLETE_ATTRS
    json.dumps(attrs, allow_nan=False)
    assert attrs["optimizer"] == "adam"
    assert attrs["origin"] == "sampler"
    hyper = attrs["hyperparameters"]
    assert set(hyper) == {"lr", "beta1", "beta2", "batch_size"}  # user-facing keys, fixed included
    assert hyper["batch_size"] == 16
    assert 0.5 <= hyper["beta1"] < 1 and hyper["beta1"] == pytest.approx(
        1 - trial.params["one_minus_beta1"]
    )
    assert attrs["epochs_run"] == 4
    curves = attrs["curves"]
    assert set(curves) == {"train_loss", "val_accuracy", "val_loss"}
    assert all(len(curve) == 4 for curve in curves.values())
    # The value is the last epoch's validation metric, reported after every epoch.
    assert trial.value == curves["val_accuracy"][-1]
    assert trial.intermediate_values == dict(enumerate(curves["val_accuracy"], start=1))
    assert set(attrs["test_metrics"]) == {"test_accuracy", "test_loss"}
    assert attrs["test_value"] == attrs["test_metrics"]["test_accuracy"]


def test_the_study_metric_sets_direction_and_test_value():
    study = run_study(
        "breast_cancer_logreg", "sgd", n_trials=1, epochs=2, metric="val_accuracy", seed=1
    )
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    attrs = study.trials[0].user_attrs
    assert attrs["test_value"] == attrs["test_metrics"]["test_accuracy"]
    default = run_study("breast_cancer_logreg", "sgd", n_trials=1, epochs=2, seed=1)
    assert default.direction == optuna.study.StudyDirection.MINIMIZE
    assert default.trials[0].value == default.trials[0].user_attrs["curves"]["val_loss"][-1]


def test_a_diverging_config_ends_pruned_with_its_reason():
    study = run_study("digits_mlp", "sgd", n_trials=1, overrides={"lr": 50.0, "batch_size": 32})
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["pruned_reason"].startswith("diverged: loss ")
    assert trial.user_attrs["pruned_reason"].endswith(" at epoch 1")
    assert "test_metrics" not in trial.user_attrs and "error" not in trial.user_attrs
    json.dumps(trial.user_attrs, allow_nan=False)


def test_a_trial_past_its_time_limit_ends_pruned():
    study = run_study("digits_cnn", "adam", n_trials=1, time_limit=1e-6)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["pruned_reason"] == "time limit 1e-06 s exceeded at epoch 1"
    assert trial.user_attrs["epochs_run"] == 0


def _wine_plan(epochs: int) -> TrialPlan:
    spec = OPTIMIZERS["adam"]
    space = spec.resolve_space({"batch_size": 16, **ADAM})  # only lr is searched
    task = get_task("wine_mlp")
    return TrialPlan(task, spec, space, epochs=epochs, metric="val_loss")


def test_the_pruner_stops_a_bad_trial_early():
    plan = _wine_plan(epochs=6)
    study = optuna.create_study(direction="minimize", pruner=make_pruner("median", epochs=6))
    for _ in range(5):
        study.enqueue_trial({"lr": 1e-2})
    study.enqueue_trial({"lr": 1e-5})  # barely moves: worse than the median from epoch 1 on
    study.optimize(make_objective(plan), n_trials=6)
    *good, bad = study.trials
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in good)
    assert bad.state == optuna.trial.TrialState.PRUNED
    assert bad.user_attrs["pruned_reason"] == "pruned by MedianPruner at epoch 1"
    assert bad.user_attrs["epochs_run"] == 1 < plan.epochs
    assert len(bad.user_attrs["curves"]["val_loss"]) == 1


class Exploding(Parabola):
    name = "exploding"

    def batch_loss(self, model, x, y):
        raise RuntimeError("boom in the user's loss")


def test_an_exception_fails_the_trial_not_the_caller():
    spec = OPTIMIZERS["gd"]
    plan = TrialPlan(Exploding(), spec, spec.resolve_space(), epochs=1, metric="loss")
    study = optuna.create_study()
    study.optimize(make_objective(plan), n_trials=2, catch=(Exception,))
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.FAIL] * 2
    assert study.trials[0].user_attrs["error"] == "RuntimeError: boom in the user's loss"
    # Without catch, the objective re-raises, as Optuna expects.
    with pytest.raises(RuntimeError, match="boom"):
        study.optimize(make_objective(plan), n_trials=1)


class WrongMetricNames(Parabola):
    name = "wrong_metric_names"

    def evaluate(self, model, split):
        return {"objective": 1.0}


def test_a_task_reporting_other_metrics_than_it_declares_fails_clearly():
    spec = OPTIMIZERS["gd"]
    space = spec.resolve_space({"lr": 0.1})  # converges: the trial reaches its evaluation
    plan = TrialPlan(WrongMetricNames(), spec, space, epochs=1, metric="loss")
    study = optuna.create_study()
    study.optimize(make_objective(plan), n_trials=1, catch=(Exception,))
    error = study.trials[0].user_attrs["error"]
    assert error == (
        "ValueError: task 'wrong_metric_names': evaluate(model, 'val') returned ['objective'], "
        "without ['loss'] of its declared metrics"
    )


def test_a_plan_refuses_an_unknown_metric_and_a_bad_budget():
    spec = OPTIMIZERS["adam"]
    task = get_task("wine_mlp")
    space = spec.resolve_space()
    with pytest.raises(
        ValueError, match=r"unknown metric 'accuracy'.*\['val_accuracy', 'val_loss'\]"
    ):
        TrialPlan(task, spec, space, epochs=3, metric="accuracy")
    with pytest.raises(ValueError, match="epochs"):
        TrialPlan(task, spec, space, epochs=0, metric="val_loss")
    with pytest.raises(ValueError, match="time_limit"):
        TrialPlan(task, spec, space, epochs=1, metric="val_loss", time_limit=0)
    assert study_direction(task, "val_loss") == "minimize"
    assert study_direction(get_task("rosenbrock"), "loss") == "minimize"


def test_run_study_refuses_unknown_names_and_bad_overrides():
    with pytest.raises(KeyError, match="unknown optimizer"):
        run_study("wine_mlp", "lbfgs", n_trials=1)
    with pytest.raises(KeyError, match="unknown task"):
        run_study("cifar10", "adam", n_trials=1)
    with pytest.raises(SpaceError, match="momentum"):
        run_study("wine_mlp", "adam", n_trials=1, overrides={"momentum": 0.9})


def test_training_seeds_differ_per_trial_and_repeat_per_base_seed():
    seeds = {training_seed(0, number) for number in range(100)}
    assert len(seeds) == 100
    assert training_seed(3, 7) == training_seed(3, 7) != training_seed(4, 7)


def test_a_study_in_sqlite_keeps_its_trials_and_can_be_continued(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    kwargs = dict(n_trials=1, epochs=2, storage=storage, study_name="wine-adam", seed=0)
    run_study("wine_mlp", "adam", **kwargs)
    study = run_study("wine_mlp", "adam", **kwargs)
    assert len(study.trials) == 2
    loaded = optuna.load_study(study_name="wine-adam", storage=storage)
    for trial in loaded.trials:
        assert trial.user_attrs["optimizer"] == "adam"
        assert len(trial.user_attrs["curves"]["train_loss"]) == trial.user_attrs["epochs_run"]


def test_a_task_without_data_searches_no_batch_size():
    rosenbrock, quadratic = get_task("rosenbrock"), get_task("noisy_quadratic")
    assert rosenbrock.batch_size_applies is False
    assert quadratic.batch_size_applies is True  # its gradient noise is ~ 1/batch_size
    for name, spec in OPTIMIZERS.items():
        assert "batch_size" not in task_space(rosenbrock, spec), name
        assert task_space(quadratic, spec).keys() == spec.space.keys(), name
        assert task_space(None, spec).keys() == spec.space.keys(), name  # ask/tell: all of it
    with pytest.raises(SpaceError, match="batch_size: this task has no data"):
        task_space(rosenbrock, OPTIMIZERS["sgd"], {"batch_size": 64})

    study = run_study("rosenbrock", "adam", n_trials=2, epochs=2, seed=0)
    for trial in study.trials:
        assert "batch_size" not in trial.params, trial.params
        assert set(trial.user_attrs["hyperparameters"]) == {"lr", "beta1", "beta2"}
