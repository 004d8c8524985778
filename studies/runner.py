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
    centred_space,
    load_references,
    lr_range_test,
    reference,
)
from studies.objective import TrialPlan, make_objective, study_direction, task_space
from studies.portfolio import load_portfolio
from studies.samplers import make_pruner, make_sampler
from studies.tasks import get_task
from studies.warm_start import KnownConfig, enqueue_warm_start, warm_start_configs


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

    Raises:
        KeyError: unknown task or optimizer.
        ValueError: unknown sampler, pruner or metric, or a bad budget.
        optim_core.SpaceError: overrides that do not fit the optimizer.
    """
    task_ = get_task(task)
    spec = get_optimizer(optimizer)
    space = task_space(task_, spec, overrides)
    try:
        centre_portfolio, narrow = LR_RANGE_MODES[lr_range]
    except KeyError:
        raise ValueError(
            f"unknown lr_range {lr_range!r}; choose one of {sorted(LR_RANGE_MODES)}"
        ) from None
    sweep = None
    if centre_portfolio or narrow:
        ref = lr_reference or reference(load_references().get(optimizer, {}))
        sweep = lr_range_test(task_, spec, space, seed=seed) if ref is not None else None
        if sweep is not None and narrow:
            space = centred_space(space, sweep, ref)
    epochs = task_.default_epochs if epochs is None else epochs
    metric = task_.default_metric if metric is None else metric
    plan = TrialPlan(task_, spec, space, epochs, metric, seed=seed, time_limit=time_limit)
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction=study_direction(task_, metric),
        sampler=make_sampler(sampler, seed=seed, space=space),
        pruner=make_pruner(pruner, epochs=epochs),
        load_if_exists=True,
    )
    study.set_metric_names([metric])  # optuna-dashboard labels its axes with it
    if sweep is not None:
        study.set_user_attr("lr_range", {"lr": sweep.lr, "epochs": sweep.epochs})
    if warm_start:
        configs_ = list(load_portfolio().get(optimizer, ()) if portfolio is None else portfolio)
        centred = sweep is not None and centre_portfolio
        if centred:
            configs_ = centre_configs(configs_, sweep, ref)
        configs = warm_start_configs(
            space,
            n_trials,
            direction=study.direction.name.lower(),
            catalogue=catalogue,
            portfolio=configs_,
            limit=warm_start_limit,
            portfolio_origin="lr_range" if centred else "portfolio",
        )
        enqueue_warm_start(study, configs)
    study.optimize(make_objective(plan), n_trials=n_trials, catch=(Exception,))
    return study
