"""The built-in tasks: registry, data splits, and what a known-good config reaches on each."""

from __future__ import annotations

import pytest
import torch

from studies import run_study
from studies.tasks import BUILTIN_TASKS, available_tasks, check_task, get_task
from tests.studies.helpers import ADAM

BUILTIN_NAMES = [
    "digits_mlp",
    "digits_cnn",
    "breast_cancer_logreg",
    "wine_mlp",
    "diabetes_mlp",
    "rosenbrock",
    "noisy_quadratic",
]


def test_every_builtin_task_is_registered_and_consistent():
    tasks = available_tasks()
    assert set(BUILTIN_NAMES) <= set(tasks)
    for name in BUILTIN_NAMES:
        task = tasks[name]
        check_task(task)
        assert task.name == name
        assert task.metrics[task.default_metric] in ("maximize", "minimize")


def test_default_metrics_and_directions_follow_the_design():
    expected = {
        "digits_mlp": ("val_accuracy", "maximize"),
        "digits_cnn": ("val_accuracy", "maximize"),
        "breast_cancer_logreg": ("val_loss", "minimize"),
        "wine_mlp": ("val_accuracy", "maximize"),
        "diabetes_mlp": ("val_mse", "minimize"),
        "rosenbrock": ("loss", "minimize"),
        "noisy_quadratic": ("loss", "minimize"),
    }
    for name, (metric, direction) in expected.items():
        task = get_task(name)
        assert (task.default_metric, task.metrics[metric]) == (metric, direction)


def test_unknown_task_is_a_key_error_listing_the_valid_names():
    with pytest.raises(KeyError, match=r"unknown task 'mnist'; choose one of \[.*'digits_mlp'"):
        get_task("mnist")


def test_a_requested_name_is_looked_up_never_imported(tmp_path, monkeypatch):
    (tmp_path / "hpt_not_a_task.py").write_text("raise SystemExit('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("hpt_not_a_task", "studies.tasks.digits_mlp:DigitsMLP", "__import__('os')"):
        with pytest.raises(KeyError, match="unknown task"):
            get_task(name)


@pytest.mark.parametrize("name", ["digits_mlp", "wine_mlp", "breast_cancer_logreg"])
def test_splits_are_fixed_disjoint_and_scaled_on_train_only(name):
    data = get_task(name).data
    again = get_task(name).data
    for first, second in zip(vars(data).values(), vars(again).values(), strict=True):
        assert torch.equal(first, second)
    sizes = [len(data.x_train), len(data.x_val), len(data.x_test)]
    assert sizes[0] > 2 * sizes[1] > 0 and abs(sizes[1] - sizes[2]) <= 1
    # Standardized with the training split's statistics: train is centred, the others only nearly.
    assert data.x_train.mean(dim=0).abs().max() < 1e-5
    assert data.x_val.mean(dim=0).abs().max() > 1e-3
    splits = (data.x_train, data.x_val, data.x_test)
    rows = {tuple(row.tolist()) for split in splits for row in split}
    assert len(rows) > 0.99 * sum(sizes)  # no sample in two splits (up to duplicate images)


def test_cnn_sees_images_and_regression_targets_are_columns():
    assert get_task("digits_cnn").data.x_train.shape[1:] == (1, 8, 8)
    diabetes = get_task("diabetes_mlp").data
    assert diabetes.y_train.shape == (len(diabetes.x_train), 1)


def _single_run(task, optimizer, values, **kwargs):
    study = run_study(task, optimizer, n_trials=1, overrides=values, **kwargs)
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE", trial.user_attrs
    return trial


# Known-good configurations and what they reach in the task's default epochs.
@pytest.mark.parametrize(
    ("task", "optimizer", "values", "metric", "bound"),
    [
        ("digits_mlp", "adam", {"lr": 1e-3, "batch_size": 32, **ADAM}, "val_accuracy", 0.97),
        ("digits_cnn", "adam", {"lr": 1e-3, "batch_size": 32, **ADAM}, "val_accuracy", 0.975),
        ("wine_mlp", "adam", {"lr": 1e-2, "batch_size": 16, **ADAM}, "val_accuracy", 0.95),
        ("breast_cancer_logreg", "sgd", {"lr": 0.1, "batch_size": 32}, "val_accuracy", 0.95),
        ("diabetes_mlp", "adam", {"lr": 1e-3, "batch_size": 32, **ADAM}, "val_r2", 0.35),
    ],
)
def test_known_good_config_reaches_the_expected_score(task, optimizer, values, metric, bound):
    trial = _single_run(task, optimizer, values, metric=metric)
    assert trial.value >= bound
    assert trial.user_attrs["curves"][metric][-1] == trial.value
    test_metric = "test_" + metric.removeprefix("val_")
    assert trial.user_attrs["test_value"] >= bound - 0.1
    assert trial.user_attrs["test_metrics"][test_metric] == trial.user_attrs["test_value"]


@pytest.mark.parametrize(
    ("task", "optimizer", "values", "bound"),
    [
        ("rosenbrock", "momentum", {"lr": 1e-3, "momentum": 0.9}, 1e-3),
        ("noisy_quadratic", "adam", {"lr": 1e-2, "batch_size": 32, **ADAM}, 0.05),
    ],
)
def test_functions_are_minimised_to_a_small_loss(task, optimizer, values, bound):
    trial = _single_run(task, optimizer, values)
    start = get_task(task)
    initial = start.value(start.start()).item()
    assert trial.value < bound < initial / 10
    assert trial.user_attrs["test_value"] == pytest.approx(trial.value)


def test_the_same_seed_gives_the_same_trial_and_another_seed_another():
    values = {"lr": 1e-2, "batch_size": 16, **ADAM}
    first, second, other = (
        _single_run("wine_mlp", "adam", values, epochs=5, seed=seed) for seed in (3, 3, 4)
    )
    assert first.user_attrs["curves"] == second.user_attrs["curves"]
    assert first.value == second.value
    assert other.user_attrs["curves"]["train_loss"] != first.user_attrs["curves"]["train_loss"]


def test_builtin_registry_is_read_only():
    with pytest.raises(TypeError):
        BUILTIN_TASKS["mine"] = object  # type: ignore[index]
