"""What a new study tries first, per optimizer, before its sampler: the best known configs of the
same model and metric from earlier studies (the catalogue), then the shipped portfolio
(:mod:`studies.warm_start` decides how many and fits them to the study's space).

A request says where to start from: ``"auto"`` (every earlier study of the task that optimised
the same metric, then the portfolio), ``"none"`` (nothing: the sampler from its first trial), or
a list of earlier study names (their best configs, then the portfolio). The chosen configs are
stored as the optimizer's planned configs, which its first claims take
(:func:`service.trials.lifecycle.claim_slot`); each trial records where its config came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from optim_core.registry import OPTIMIZERS
from optim_core.spaces import space_from_json
from service.errors import FieldError, InvalidRequest
from service.store.database import Database
from service.store.tables import StudyOptimizerRow, StudyRow, TrialSlotRow
from service.studies.requests import StudyPlan
from service.vocabulary import EXTERNAL_TASK, Direction, StudyStatus
from studies.warm_start import CATALOGUE_CONFIGS, KnownConfig, load_portfolio, warm_start_configs

AUTO, NONE = "auto", "none"
WarmStart = str | Sequence[str]


def planned_configs(
    db: Database, plan: StudyPlan, warm_start: WarmStart
) -> dict[str, list[dict[str, Any]]]:
    """Per optimizer, the configs its first trials try: ``[{"params", "origin", "source"}]``.

    Raises:
        InvalidRequest: ``warm_start`` names a study that does not exist or trains another task.
    """
    if warm_start == NONE:
        return {}
    named = None if warm_start == AUTO else list(warm_start)
    if named is not None:
        _check_named(db, plan, named)
    portfolio = load_portfolio()
    planned: dict[str, list[dict[str, Any]]] = {}
    for optimizer, space_json in plan.spaces.items():
        space = space_from_json(space_json, OPTIMIZERS[optimizer].domains)
        configs = warm_start_configs(
            space,
            plan.n_trials,
            direction=plan.direction,
            catalogue=_catalogue(db, plan, optimizer, named),
            portfolio=portfolio.get(optimizer, ()),
        )
        planned[optimizer] = [
            {"params": dict(config.values), "origin": config.origin, "source": config.source}
            for config in configs
        ]
    return planned


def _check_named(db: Database, plan: StudyPlan, names: Sequence[str]) -> None:
    with db.read() as session:
        found = dict(
            (name, (task, model))
            for name, task, model in session.execute(
                sa.select(StudyRow.name, StudyRow.task, StudyRow.model).where(
                    StudyRow.name.in_(list(names))
                )
            ).all()
        )
    problems = []
    for index, name in enumerate(names):
        if name not in found:
            problems.append(
                FieldError(
                    ("body", "warm_start", index),
                    f"no study named {name!r} to start from; GET /api/v1/studies lists them "
                    "(or use 'auto')",
                )
            )
        elif found[name] != (plan.task, plan.model):
            task, model = found[name]
            what = f"task {task!r}" if task != EXTERNAL_TASK else f"model {model!r}"
            wanted = (
                f"task {plan.task!r}" if plan.task != EXTERNAL_TASK else f"model {plan.model!r}"
            )
            problems.append(
                FieldError(
                    ("body", "warm_start", index),
                    f"study {name!r} tuned {what}, not {wanted}: its configs say nothing about "
                    "this model",
                )
            )
    if problems:
        raise InvalidRequest(problems)


def _catalogue(
    db: Database, plan: StudyPlan, optimizer: str, named: Sequence[str] | None
) -> list[KnownConfig]:
    """The best configs of ``optimizer`` on the plan's task and metric in earlier studies: one
    indexed, limited lookup of their best slots, whatever the history's size."""
    order = (
        StudyOptimizerRow.best_value.desc()
        if plan.direction == Direction.MAXIMIZE
        else StudyOptimizerRow.best_value.asc()
    )
    query = (
        sa.select(StudyRow.name, TrialSlotRow.params, TrialSlotRow.value)
        .join(StudyOptimizerRow, StudyOptimizerRow.study_id == StudyRow.id)
        .join(TrialSlotRow, TrialSlotRow.id == StudyOptimizerRow.best_slot_id)
        .where(
            StudyRow.task == plan.task,
            StudyRow.model == plan.model,
            StudyRow.metric == plan.metric,
            StudyRow.direction == plan.direction,
            StudyRow.status != StudyStatus.DELETING,
            StudyOptimizerRow.optimizer == optimizer,
            StudyOptimizerRow.best_value.is_not(None),
        )
        .order_by(order, StudyOptimizerRow.id)
        .limit(CATALOGUE_CONFIGS * 4)
    )
    if named is not None:
        query = query.where(StudyRow.name.in_(list(named)))
    with db.read() as session:
        rows = session.execute(query).all()
    return [
        KnownConfig(values=dict(params or {}), value=float(value), source=name)
        for name, params, value in rows
        if params
    ]
