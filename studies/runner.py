"""Run a whole study in-process: for tests, benchmarks and the workers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from optim_core.registry import get_optimizer
from optim_core.spaces import Dimension
from studies.objective import TrialPlan, make_objective, study_direction, task_space
from studies.samplers import make_pruner, make_sampler
from studies.tasks import get_task
from studies.warm_start import (
    KnownConfig,
    Origin,
    WarmStartConfig,
    enqueue_warm_start,
    load_portfolio,
    warm_start_configs,
)

TPE_STARTUP = 10
"""Optuna's TPE default of random trials before its model."""


def run_study(
    task: str,
    optimizer: str,
    *,
    n_trials: int,
    overrides: Mapping[str, Any] | None = None,
    epochs: int | None = None,
    metric: str | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    seed: int = 0,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    time_limit: float | None = None,
    warm_start: bool = False,
    catalogue: Sequence[KnownConfig] = (),
    portfolio: Sequence[Mapping[str, Any]] | None = None,
    warm_start_limit: int | None = None,
    space: Mapping[str, Dimension] | None = None,
    portfolio_origin: Origin = "portfolio",
    startup_after_warm_start: bool = False,
) -> optuna.Study:
    """Tune ``optimizer`` on ``task`` for ``n_trials`` trials and return the study.

    Failed trials (an exception in a trial) are recorded as FAIL with the user attribute ``error``
    and do not stop the study; pruned and diverged ones end PRUNED.

    Args:
        task: A registered task name (:func:`studies.tasks.available_tasks`).
        optimizer: A name of ``optim_core.OPTIMIZERS``.
        n_trials: Trials to run in this call.
        overrides: Search-space overrides in their JSON form (``{"lr": {"low": 1e-4, ...}}``).
        epochs: Epochs per trial; the task's default when ``None``.
        metric: The objective, one of the task's metrics; its default when ``None``.
        sampler: A name of :data:`studies.samplers.SAMPLERS`.
        pruner: A name of :data:`studies.samplers.PRUNERS`.
        seed: Seeds the sampler and, with each trial's number, the trial's training.
        storage: An Optuna storage or its URL; in memory when ``None``.
        study_name: Name in the storage; an existing study of that name is continued.
        time_limit: Seconds per trial.
        warm_start: Try known good configs first (:mod:`studies.warm_start`): the ``catalogue``,
            then the ``portfolio``; ``False`` starts from nothing.
        catalogue: Known configs of this task and optimizer from earlier studies.
        portfolio: The optimizer's portfolio; the shipped one when ``None``.
        warm_start_limit: How many warm-start configs at most; :func:`warm_start_budget` when
            ``None``.
        space: The resolved search space to use instead of the one ``overrides`` give (the
            benchmarks narrow it around a prediction, e.g. ``bench/lr_range.py``).
        portfolio_origin: The ``origin`` recorded on the portfolio's trials.
        startup_after_warm_start: With ``tpe``: its random startup trials
            (:data:`TPE_STARTUP`) follow the warm start instead of counting it.

    Raises:
        KeyError: unknown task or optimizer.
        ValueError: unknown sampler, pruner or metric, or a bad budget.
        optim_core.SpaceError: overrides that do not fit the optimizer.
    """
    task_ = get_task(task)
    spec = get_optimizer(optimizer)
    space = dict(space) if space is not None else task_space(task_, spec, overrides)
    epochs = task_.default_epochs if epochs is None else epochs
    metric = task_.default_metric if metric is None else metric
    direction = study_direction(task_, metric)
    plan = TrialPlan(task_, spec, space, epochs, metric, seed=seed, time_limit=time_limit)
    configs: list[WarmStartConfig] = []
    if warm_start:
        known = list(load_portfolio().get(optimizer, ()) if portfolio is None else portfolio)
        configs = warm_start_configs(
            space,
            n_trials,
            direction=direction,
            catalogue=catalogue,
            portfolio=known,
            limit=warm_start_limit,
            portfolio_origin=portfolio_origin,
        )
    sampler_ = (
        optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP + len(configs))
        if startup_after_warm_start and sampler == "tpe"
        else make_sampler(sampler, seed=seed, space=space)
    )
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction=direction,
        sampler=sampler_,
        pruner=make_pruner(pruner, epochs=epochs),
        load_if_exists=True,
    )
    study.set_metric_names([metric])  # optuna-dashboard labels its axes with it
    enqueue_warm_start(study, configs)
    study.optimize(make_objective(plan), n_trials=n_trials, catch=(Exception,))
    return study
