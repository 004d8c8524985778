"""Run a whole study in-process: for tests, benchmarks and the workers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from optim_core.registry import get_optimizer
from studies.lr_range import (
    LR_RANGE_MODES,
    Reference,
    centre_configs,
    centre_on_task,
    centred_space,
)
from studies.objective import TrialPlan, make_objective, study_direction, task_space
from studies.portfolio import load_portfolio
from studies.samplers import make_pruner, make_sampler
from studies.tasks import get_task
from studies.warm_start import (
    KnownConfig,
    WarmStartConfig,
    enqueue_warm_start,
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
    lr_range: str = "none",
    lr_reference: Reference | None = None,
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
        lr_range: What the learning-rate range test (:mod:`studies.lr_range`) centres on the
            task before the first trial: a name of :data:`studies.lr_range.LR_RANGE_MODES`
            (``"none"``, ``"portfolio"``, ``"space"``, ``"both"``). Its sweep is stored in the
            study's user attribute ``lr_range`` (``lr``, ``epochs``).
        lr_reference: The sweeps' reference; the shipped one (every learning task) when ``None``.
        startup_after_warm_start: With ``tpe``: its random startup trials
            (:data:`TPE_STARTUP`) follow the warm start instead of counting it.

    Raises:
        KeyError: unknown task or optimizer.
        ValueError: unknown sampler, pruner or metric, or a bad budget.
        optim_core.SpaceError: overrides that do not fit the optimizer.
    """
    task_ = get_task(task)
    spec = get_optimizer(optimizer)
    space = task_space(task_, spec, overrides)
    epochs = task_.default_epochs if epochs is None else epochs
    try:
        centre_portfolio, narrow = LR_RANGE_MODES[lr_range]
    except KeyError:
        raise ValueError(
            f"unknown lr_range {lr_range!r}; choose one of {sorted(LR_RANGE_MODES)}"
        ) from None
    centring = (
        centre_on_task(task_, spec, space, seed=seed, epochs=epochs, ref=lr_reference)
        if centre_portfolio or narrow
        else None
    )
    sweep, ref = centring if centring is not None else (None, None)
    if sweep is not None and narrow:
        space = centred_space(space, sweep, ref)
    metric = task_.default_metric if metric is None else metric
    direction = study_direction(task_, metric)
    plan = TrialPlan(task_, spec, space, epochs, metric, seed=seed, time_limit=time_limit)
    configs: list[WarmStartConfig] = []
    if warm_start:
        known = list(load_portfolio().get(optimizer, ()) if portfolio is None else portfolio)
        centred = sweep is not None and centre_portfolio
        configs = warm_start_configs(
            space,
            n_trials,
            direction=direction,
            catalogue=catalogue,
            portfolio=centre_configs(known, sweep, ref) if centred else known,
            limit=warm_start_limit,
            portfolio_origin="lr_range" if centred else "portfolio",
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
    if sweep is not None:
        study.set_user_attr("lr_range", {"lr": sweep.lr, "epochs": sweep.epochs})
    enqueue_warm_start(study, configs)
    study.optimize(make_objective(plan), n_trials=n_trials, catch=(Exception,))
    return study
