"""Creating, stopping and deleting studies: the service's rows and their Optuna studies together.

Nothing is ever half written. A request is validated completely before anything is stored; the
Optuna studies are created first and our rows after them in one transaction, and the Optuna
studies are removed again if that transaction fails. Deleting goes the other way round: our rows
first (so no worker claims a slot any more), then the Optuna studies.

Our SQLite engine takes the write lock when a transaction begins, and Optuna's storage has an
engine of its own on the same file, so no function here calls the Optuna storage while a
transaction of ours is open: it would wait for the lock its own caller holds.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from optim_core.registry import OPTIMIZERS
from optim_core.spaces import SpaceError, space_to_json
from service.config import Settings
from service.db import StudyOptimizerRow, StudyRow, TrialSlotRow, session_scope, utcnow
from service.errors import Conflict, FieldError, InvalidRequest, StudyNotFound
from service.slots import ACCEPTING_TRIALS, EXTERNAL_TASK, QUEUED, STOPPED
from studies.objective import task_space
from studies.samplers import PRUNERS, SAMPLERS, make_pruner, make_sampler
from studies.tasks import available_tasks

STUDY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
STUDY_NAME_RULE = "1 to 64 letters, digits, '_' or '-', starting with a letter or a digit"
DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class StudyRequest:
    """What a client asked for, before validation (field meanings: DESIGN.md §5)."""

    name: str
    task: str
    optimizers: Sequence[str]
    n_trials: int
    epochs: int | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int | None = None
    metric: str | None = None
    direction: str | None = None
    search_space: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyPlan:
    """A validated request: everything the rows and the Optuna studies are made of."""

    name: str
    task: str
    metric: str
    direction: str
    epochs: int | None
    n_trials: int
    sampler: str
    pruner: str
    seed: int | None
    spaces: dict[str, dict[str, Any]]  # optimizer -> resolved search space (JSON form)

    def optuna_study_name(self, optimizer: str) -> str:
        return optuna_study_name(self.name, optimizer)


def optuna_study_name(study: str, optimizer: str) -> str:
    """The Optuna study of one (study, optimizer) pair: both parts show in the dashboard."""
    return f"{study}/{optimizer}"


ReportProblem = Callable[[tuple[str | int, ...], str], None]


def plan_study(request: StudyRequest, *, settings: Settings) -> StudyPlan:
    """Validate a request completely and resolve its defaults.

    Every problem is collected, so one answer lists all there is to fix.

    Args:
        request: The client's request.
        settings: The limits (``max_trials``, ``max_epochs``).

    Returns:
        The plan to store.

    Raises:
        InvalidRequest: one entry per problem, each naming the field and what to do.
    """
    problems: list[FieldError] = []

    def report(loc: tuple[str | int, ...], msg: str) -> None:
        problems.append(FieldError(("body", *loc), msg))

    if not STUDY_NAME_PATTERN.fullmatch(request.name):
        report(("name",), f"{request.name!r} is not a valid study name: use {STUDY_NAME_RULE}")
    metric, direction, epochs = _objective(request, report)
    _check_limit(report, "n_trials", request.n_trials, settings.max_trials, "HPT_MAX_TRIALS")
    if request.epochs is not None:
        _check_limit(report, "epochs", request.epochs, settings.max_epochs, "HPT_MAX_EPOCHS")
    spaces = _resolve_spaces(request, report)
    _check_sampler_and_pruner(request, spaces, epochs, report)
    if problems:
        raise InvalidRequest(problems)
    assert metric is not None and direction is not None  # reported above otherwise
    return StudyPlan(
        name=request.name,
        task=request.task,
        metric=metric,
        direction=direction,
        epochs=epochs,
        n_trials=request.n_trials,
        sampler=request.sampler,
        pruner=request.pruner,
        seed=request.seed,
        spaces={name: space_to_json(space) for name, space in spaces.items()},
    )


def task_names() -> list[str]:
    """Every task a study may name, the pseudo-task ``external`` (ask/tell) last."""
    return [*sorted(available_tasks()), EXTERNAL_TASK]


def _objective(
    request: StudyRequest, report: ReportProblem
) -> tuple[str | None, str | None, int | None]:
    """The metric, its direction and the epochs of a study on ``request.task``."""
    if request.task == EXTERNAL_TASK:
        if not request.metric:
            report(("metric",), "a study on task 'external' must name its metric, e.g. 'loss'")
        if request.direction is None:
            report(
                ("direction",),
                "a study on task 'external' must say whether its metric is to 'minimize' or "
                "'maximize'",
            )
        return request.metric, request.direction, request.epochs
    task = available_tasks().get(request.task)
    if task is None:
        report(("task",), f"unknown task {request.task!r}; choose one of {task_names()}")
        return None, None, request.epochs
    metric = request.metric or task.default_metric
    if metric not in task.metrics:
        report(
            ("metric",),
            f"task {task.name!r} has no metric {metric!r}; choose one of {sorted(task.metrics)}",
        )
        return None, None, request.epochs
    direction = task.metrics[metric]
    if request.direction is not None and request.direction != direction:
        report(
            ("direction",),
            f"{metric!r} of task {task.name!r} is always to {direction}; leave 'direction' out "
            "(it is only needed for task 'external')",
        )
    return metric, direction, request.epochs or task.default_epochs


def _check_limit(report: ReportProblem, key: str, value: int, limit: int, variable: str) -> None:
    if value > limit:
        report(
            (key,),
            f"{value} is above this server's limit of {limit}; ask for at most {limit} "
            f"(the limit is set by {variable})",
        )


def _resolve_spaces(request: StudyRequest, report: ReportProblem) -> dict[str, Any]:
    # No task (external, or unknown: reported already): the whole space.
    task = available_tasks().get(request.task) if request.task != EXTERNAL_TASK else None
    spaces: dict[str, Any] = {}
    for index, name in enumerate(request.optimizers):
        spec = OPTIMIZERS.get(name)
        if spec is None:
            report(
                ("optimizers", index),
                f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}",
            )
        elif name in spaces:
            report(("optimizers", index), f"{name!r} is listed twice; list each optimizer once")
        else:
            try:
                spaces[name] = task_space(task, spec, request.search_space.get(name))
            except SpaceError as exc:
                report(("search_space", name), str(exc))
                spaces[name] = None
    for name in request.search_space:
        if name not in request.optimizers:
            report(
                ("search_space", name),
                f"{name!r} is not one of this study's optimizers {list(request.optimizers)}; "
                "add it to 'optimizers' or drop its search space",
            )
    return {name: space for name, space in spaces.items() if space is not None}


def _check_sampler_and_pruner(
    request: StudyRequest, spaces: Mapping[str, Any], epochs: int | None, report: ReportProblem
) -> None:
    # Building them once here catches combinations a factory refuses (a grid over a continuous
    # range ...) now, instead of in every worker later.
    if request.sampler not in SAMPLERS:
        report(
            ("sampler",), f"unknown sampler {request.sampler!r}; choose one of {sorted(SAMPLERS)}"
        )
    else:
        for name, space in spaces.items():
            try:
                make_sampler(request.sampler, seed=request.seed, space=space)
            except ValueError as exc:
                report(("sampler",), f"sampler {request.sampler!r} cannot search {name}: {exc}")
    if request.pruner not in PRUNERS:
        report(("pruner",), f"unknown pruner {request.pruner!r}; choose one of {sorted(PRUNERS)}")
        return
    try:
        make_pruner(request.pruner, epochs=epochs)
    except ValueError as exc:
        report(("pruner",), str(exc))


def create_study(
    *,
    engine: Engine,
    storage: optuna.storages.BaseStorage,
    settings: Settings,
    request: StudyRequest,
) -> StudyPlan:
    """Validate and store a new study: one Optuna study per optimizer, then our rows.

    Args:
        engine: Engine of the service's tables.
        storage: Optuna's storage on the same database.
        settings: The limits requests are checked against.
        request: What the client asked for.

    Returns:
        The stored plan.

    Raises:
        InvalidRequest: the request asks for something impossible; nothing was written.
        Conflict: a study (or an Optuna study) of that name exists; nothing was written.
    """
    plan = plan_study(request, settings=settings)
    if study_exists(engine=engine, name=plan.name):
        raise _name_taken(plan.name)
    created: list[str] = []
    try:
        for optimizer, space in plan.spaces.items():
            _create_optuna_study(storage, plan, optimizer, space, created=created)
        try:
            _insert_rows(engine, plan)
        except sa.exc.IntegrityError as exc:  # a concurrent request took the name first
            raise _name_taken(plan.name) from exc
    except BaseException:
        _delete_optuna_studies(storage, created)
        raise
    return plan


def _name_taken(name: str) -> Conflict:
    return Conflict(
        f"a study named {name!r} already exists; choose another name, or "
        f"DELETE /api/v1/studies/{name} first"
    )


def _create_optuna_study(
    storage: optuna.storages.BaseStorage,
    plan: StudyPlan,
    optimizer: str,
    space: dict[str, Any],
    *,
    created: list[str],
) -> None:
    """Create the Optuna study of one optimizer and append its name to ``created``."""
    name = plan.optuna_study_name(optimizer)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction=plan.direction,
            sampler=optuna.samplers.RandomSampler(),  # unused: trials bring their own sampler
        )
    except optuna.exceptions.DuplicatedStudyError as exc:
        raise Conflict(
            f"a study named {plan.name!r} already exists (the database holds its Optuna study "
            f"{name!r}); choose another name"
        ) from exc
    created.append(name)
    # Shown by optuna-dashboard, so that a person reading it sees what the study is about.
    attrs = {
        "hpt_study": plan.name,
        "optimizer": optimizer,
        "task": plan.task,
        "metric": plan.metric,
        "n_trials": plan.n_trials,
        "epochs": plan.epochs,
        "sampler": plan.sampler,
        "pruner": plan.pruner,
        "search_space": space,
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    # The dashboard's axes then say "val_accuracy" rather than "Objective 0".
    study.set_metric_names([plan.metric])


def _insert_rows(engine: Engine, plan: StudyPlan) -> None:
    now = utcnow()
    with session_scope(engine) as session:
        session.add(
            StudyRow(
                name=plan.name,
                task=plan.task,
                metric=plan.metric,
                direction=plan.direction,
                epochs=plan.epochs,
                n_trials=plan.n_trials,
                sampler=plan.sampler,
                pruner=plan.pruner,
                seed=plan.seed,
                status=QUEUED,
                created_at=now,
                updated_at=now,
                optimizers=[
                    StudyOptimizerRow(
                        position=position,
                        optimizer=optimizer,
                        optuna_study_name=plan.optuna_study_name(optimizer),
                        search_space=space,
                        n_trials=plan.n_trials,
                    )
                    for position, (optimizer, space) in enumerate(plan.spaces.items())
                ],
            )
        )


def _delete_optuna_studies(storage: optuna.storages.BaseStorage, names: Sequence[str]) -> None:
    for name in names:
        with contextlib.suppress(KeyError):  # never created, or deleted meanwhile
            optuna.delete_study(study_name=name, storage=storage)


def study_row(session: Session, name: str) -> StudyRow:
    """The row of the study ``name``, read in ``session``.

    Raises:
        StudyNotFound: no such study.
    """
    study = session.scalar(sa.select(StudyRow).where(StudyRow.name == name))
    if study is None:
        raise StudyNotFound(name)
    return study


def study_exists(*, engine: Engine, name: str) -> bool:
    """Whether a study called ``name`` is stored."""
    with session_scope(engine) as session:
        return session.scalar(sa.select(StudyRow.id).where(StudyRow.name == name)) is not None


def stop_study(*, engine: Engine, name: str) -> str:
    """Let no new trial of the study start; running trials finish and are recorded.

    Stopping a stopped study changes nothing.

    Returns:
        The study's status afterwards (``"stopped"``).

    Raises:
        StudyNotFound: no such study.
        Conflict: the study already completed or failed.
    """
    now = utcnow()
    with session_scope(engine) as session:
        status = study_row(session, name).status
        if status in ACCEPTING_TRIALS:
            session.execute(
                sa.update(StudyRow)
                .where(StudyRow.name == name, StudyRow.status.in_(ACCEPTING_TRIALS))
                .values(status=STOPPED, updated_at=now, finished_at=now)
            )
            return STOPPED
    if status == STOPPED:
        return STOPPED
    raise Conflict(f"study {name!r} already {status}; there is nothing to stop")


def delete_study(*, engine: Engine, storage: optuna.storages.BaseStorage, name: str) -> list[str]:
    """Remove a study: our rows (slots, optimizers, the study) and then its Optuna studies.

    Workers running one of its trials finish it and find the slot gone; nothing is retried.

    Returns:
        The names of the Optuna studies that belonged to it.

    Raises:
        StudyNotFound: no such study.
    """
    with session_scope(engine) as session:
        study_id = study_row(session, name).id
        pairs = sa.select(StudyOptimizerRow.id).where(StudyOptimizerRow.study_id == study_id)
        optuna_names = list(
            session.scalars(
                sa.select(StudyOptimizerRow.optuna_study_name)
                .where(StudyOptimizerRow.study_id == study_id)
                .order_by(StudyOptimizerRow.position)
            )
        )
        # Explicitly, child tables first: SQLite enforces no ON DELETE CASCADE by default.
        session.execute(sa.delete(TrialSlotRow).where(TrialSlotRow.study_optimizer_id.in_(pairs)))
        session.execute(sa.delete(StudyOptimizerRow).where(StudyOptimizerRow.study_id == study_id))
        session.execute(sa.delete(StudyRow).where(StudyRow.id == study_id))
    _delete_optuna_studies(storage, optuna_names)
    return optuna_names
