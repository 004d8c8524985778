"""User tasks plugged in through the entry-point group hpt.tasks, as an installed package would."""

from __future__ import annotations

import logging
import sys

import optuna
import pytest

from studies import available_tasks, get_task, run_study
from studies.tasks import BUILTIN_TASKS


def test_an_installed_plugin_task_is_listed_and_tuned(install_plugin):
    install_plugin("shifted_bowl = {module}:ShiftedBowl")
    tasks = available_tasks()
    assert set(BUILTIN_TASKS) < set(tasks)
    assert tasks["shifted_bowl"].description == "A plugin task: (w - 3)^2 from 0."
    assert get_task("shifted_bowl").default_epochs == 4

    study = run_study("shifted_bowl", "momentum", n_trials=3, sampler="random", pruner="none")
    assert {trial.state for trial in study.trials} == {optuna.trial.TrialState.COMPLETE}
    assert study.best_value < 36.0  # the start, w = 0, is at (0 - 3)^2 * 4
    assert study.best_trial.user_attrs["test_value"] == study.best_value
    assert len(study.best_trial.user_attrs["curves"]["loss"]) == 4


def test_broken_plugins_are_logged_and_skipped(install_plugin, caplog):
    module = install_plugin(
        """
        shifted_bowl = {module}:ShiftedBowl
        crashes = {module}:broken
        missing = {module}:NoSuchTask
        absent_module = hpt_no_such_module:Task
        not_a_task = {module}:TaskData
        mislabelled = {module}:Misnamed
        digits_mlp = {module}:ShiftedBowl
        """
    )
    with caplog.at_level(logging.WARNING, logger="studies.tasks"):
        tasks = available_tasks()
    assert "shifted_bowl" in tasks
    for name in ("crashes", "missing", "absent_module", "not_a_task", "mislabelled"):
        assert name not in tasks
        assert any(f"task plugin {name!r}" in record.getMessage() for record in caplog.records)
    # A plugin cannot replace a built-in task.
    assert type(tasks["digits_mlp"]).__module__ == "studies.tasks.digits_mlp"
    assert any(
        "'digits_mlp'" in r.getMessage() and "taken" in r.getMessage() for r in caplog.records
    )
    assert module in sys.modules  # imported because it is installed, never because it was named


def test_a_plugin_name_from_a_request_is_only_looked_up(install_plugin):
    with pytest.raises(KeyError, match="unknown task 'shifted_bowl'"):
        get_task("shifted_bowl")  # not installed yet
    install_plugin("shifted_bowl = {module}:ShiftedBowl")
    assert get_task("shifted_bowl").name == "shifted_bowl"
