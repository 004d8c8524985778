"""Which hyperparameters mattered: real Optuna studies whose answer is known."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from studies.importance import (
    EVALUATORS,
    MIN_TRIALS,
    hyperparameter_key,
    param_importances,
    study_param_importances,
)


def lr_matters(trial: optuna.Trial) -> float:
    """An accuracy-like figure peaked at lr = 3e-3; beta1 and batch_size barely move it."""
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    one_minus_beta1 = trial.suggest_float("one_minus_beta1", 1e-3, 0.5, log=True)
    batch_size = trial.suggest_categorical("batch_size", [16, 32, 64, 128])
    return 1.0 - (math.log10(lr) + 2.5) ** 2 / 10 - 1e-4 * one_minus_beta1 - 1e-6 * batch_size


def top(importances: dict[str, float]) -> str:
    """The most important hyperparameter."""
    return next(iter(importances))


def searched(n_trials: int, objective=lr_matters, direction="maximize", seed=0) -> optuna.Study:
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.RandomSampler(seed))
    study.optimize(objective, n_trials=n_trials)
    return study


@pytest.mark.parametrize("evaluator", sorted(EVALUATORS))
def test_the_hyperparameter_that_drives_the_metric_comes_first(evaluator):
    study = searched(40)
    result = param_importances(study.trials, "maximize", evaluator=evaluator)
    assert result.reason == ""
    assert top(result.importances) == "lr"
    assert set(result.importances) == {"lr", "beta1", "batch_size"}
    assert math.fsum(result.importances.values()) == pytest.approx(1.0)
    assert result.importances["lr"] > 0.5
    assert (result.n_trials, result.n_excluded) == (40, 0)
    assert result.evaluator == evaluator


def test_direction_decides_which_trials_are_the_best():
    def valley(trial: optuna.Trial) -> float:
        return -lr_matters(trial)

    result = param_importances(searched(30, valley, "minimize").trials, "minimize")
    assert top(result.importances) == "lr"


def test_ten_trials_are_enough_and_nine_are_not():
    study = searched(MIN_TRIALS)
    assert top(param_importances(study.trials, "maximize").importances) == "lr"
    few = param_importances(study.trials[:9], "maximize")
    assert few.importances == {}
    assert few.reason == "9 complete trials; importances need at least 10"
    assert param_importances([], "maximize").reason.startswith("0 complete trials")


def test_pruned_failed_and_infinite_trials_are_left_out_and_counted():
    study = searched(12)
    distributions = study.trials[0].distributions
    params = study.trials[0].params
    for state, value in [
        (TrialState.PRUNED, None),
        (TrialState.FAIL, None),
        (TrialState.RUNNING, None),
        (TrialState.COMPLETE, math.inf),
    ]:
        study.add_trial(
            create_trial(state=state, value=value, params=params, distributions=distributions)
        )
    result = param_importances(study.trials, "maximize")
    assert (result.n_trials, result.n_excluded) == (12, 4)
    assert top(result.importances) == "lr"
    # Only failed trials: an empty result, not an exception.
    failed = [t for t in study.trials if t.state != TrialState.COMPLETE]
    assert param_importances(failed, "maximize").reason.startswith("0 complete trials")


def test_a_single_searched_hyperparameter_has_nothing_to_rank():
    def lr_only(trial: optuna.Trial) -> float:
        return -((math.log10(trial.suggest_float("lr", 1e-3, 10, log=True)) + 1) ** 2)

    result = param_importances(searched(20, lr_only).trials, "maximize")
    assert result.importances == {}
    assert result.reason == "one searched hyperparameter or fewer (only lr): nothing to rank"


def test_a_fixed_parameter_is_not_a_searched_one():
    fixed = {"lr": FloatDistribution(1e-3, 1.0, log=True), "batch": CategoricalDistribution([32])}
    trials = [
        create_trial(value=float(i), params={"lr": 10 ** (-i / 5), "batch": 32},
                     distributions=fixed)
        for i in range(12)
    ]  # fmt: skip
    assert "only lr" in param_importances(trials, "maximize").reason


def test_a_flat_objective_has_no_important_hyperparameter():
    result = param_importances(searched(15, lambda t: (lr_matters(t), 0.5)[1]).trials, "maximize")
    assert result.importances == {}
    assert result.reason == "no hyperparameter separates the best trials from the rest"


def test_study_wrapper_filters_trials_and_reads_the_direction():
    def labelled(trial: optuna.Trial) -> float:
        trial.set_user_attr("phase", "confirm" if trial.number < 6 else "search")
        return lr_matters(trial)

    study = searched(15, labelled)
    kept = study_param_importances(study, include=lambda t: t.user_attrs.get("phase") != "confirm")
    assert kept.n_trials == 9 and kept.reason.startswith("9 complete trials")
    everything = study_param_importances(study)
    assert everything.n_trials == 15 and top(everything.importances) == "lr"
    with pytest.raises(ValueError, match="single-objective"):
        study_param_importances(optuna.create_study(directions=["maximize", "minimize"]))


def test_mistakes_of_the_caller_raise():
    with pytest.raises(ValueError, match="direction"):
        param_importances([], "max")
    with pytest.raises(ValueError, match="evaluator"):
        param_importances([], "maximize", evaluator="shap")


def test_names_and_json():
    assert hyperparameter_key("one_minus_beta2") == "beta2"
    assert hyperparameter_key("lr") == "lr"
    result = param_importances(searched(20).trials, "maximize")
    data = json.loads(json.dumps(result.to_json()))
    assert data["title"] == "PED-ANOVA" and data["n_trials"] == 20
    assert list(data["importances"]) == list(result.importances)
