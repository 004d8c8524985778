"""A study request, validated completely and resolved into the plan that is stored.

Every problem is collected, so one answer lists all there is to fix; nothing is written here
(:mod:`service.studies.admin` stores the plan).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optim_core.registry import OPTIMIZERS
from optim_core.spaces import SpaceError, space_to_json
from service.config import Settings
from service.errors import FieldError, InvalidRequest
from service.store.optuna_bridge import optuna_study_name
from service.studies.defaults import DEFAULT_CONFIRM
from service.vocabulary import EXTERNAL_TASK
from studies.objective import task_space
from studies.samplers import (
    DEFAULT_PRUNER,
    DEFAULT_SAMPLER,
    PRUNERS,
    SAMPLERS,
    make_pruner,
    make_sampler,
)
from studies.tasks import available_tasks

STUDY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
STUDY_NAME_RULE = "1 to 64 letters, digits, '_' or '-', starting with a letter or a digit"

# A search space is a few ranges and short lists; anything bigger is a mistake or an attack.
MAX_CHOICES = 64
# No hyperparameter of any optimizer here is sensibly beyond this magnitude (an lr of 1e308
# overflows on the first step of every trial).
MAX_MAGNITUDE = 1e6


@dataclass(frozen=True)
class StudyRequest:
    """What a client asked for, before validation (field meanings: DESIGN.md §5)."""

    name: str
    task: str
    optimizers: Sequence[str]
    n_trials: int
    epochs: int | None = None
    sampler: str = DEFAULT_SAMPLER
    pruner: str = DEFAULT_PRUNER
    seed: int | None = None
    metric: str | None = None
    direction: str | None = None
    search_space: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    confirm: Mapping[str, float | None] | None = None
    warm_start: str | Sequence[str] = "auto"
    model: str | None = None


@dataclass(frozen=True)
class StudyPlan:
    """A validated request: everything the rows and the Optuna studies are made of."""

    name: str
    task: str
    metric: str
    direction: str
    epochs: int | None
    n_trials: int
    model: str
    sampler: str
    pruner: str
    seed: int | None
    spaces: dict[str, dict[str, Any]]  # optimizer -> resolved search space (JSON form)
    confirm_top_k: int = 0
    confirm_seeds: int = 0
    confirm_equivalence: float | None = None
    # optimizer -> configs its first claims try before the sampler: [{"params", "origin"}]
    planned: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def optuna_study_name(self, optimizer: str) -> str:
        return optuna_study_name(self.name, optimizer)


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
    model = _model(request, report)
    _check_limit(report, "n_trials", request.n_trials, settings.max_trials, "HPT_MAX_TRIALS")
    if request.epochs is not None:
        _check_limit(report, "epochs", request.epochs, settings.max_epochs, "HPT_MAX_EPOCHS")
    _check_space_sizes(request, report)
    spaces = _resolve_spaces(request, report)
    _check_magnitudes(spaces, report)
    _check_sampler_and_pruner(request, spaces, epochs, report)
    if problems:
        raise InvalidRequest(problems)
    assert metric is not None and direction is not None  # reported above otherwise
    top_k, seeds = _confirmation(request)
    return StudyPlan(
        confirm_top_k=top_k,
        confirm_seeds=seeds,
        confirm_equivalence=(request.confirm or {}).get("equivalence") if top_k else None,
        name=request.name,
        task=request.task,
        model=model,
        metric=metric,
        direction=direction,
        epochs=epochs,
        n_trials=request.n_trials,
        sampler=request.sampler,
        pruner=request.pruner,
        seed=request.seed,
        spaces={name: space_to_json(space) for name, space in spaces.items()},
    )


def _confirmation(request: StudyRequest) -> tuple[int, int]:
    """``(top_k, seeds)`` of the confirmation phase, for every task (an external study's client
    trains on the seeds the service hands it); off (0, 0) when ``top_k`` is 0; a key left out
    takes :data:`DEFAULT_CONFIRM`'s."""
    asked = request.confirm or {}
    top_k = asked.get("top_k")
    seeds = asked.get("seeds")
    top_k = DEFAULT_CONFIRM.top_k if top_k is None else int(top_k)
    seeds = DEFAULT_CONFIRM.seeds if seeds is None else int(seeds)
    return (0, 0) if top_k == 0 else (top_k, seeds)


def _model(request: StudyRequest, report: ReportProblem) -> str:
    """The model a study tunes: what warm starts and the catalogue share configs by. A built-in
    task is its own model; an external study names its model, or is a model of its own."""
    if request.task != EXTERNAL_TASK:
        if request.model is not None and request.model != request.task:
            report(
                ("model",),
                f"task {request.task!r} trains its own model; leave 'model' out (it names the "
                "model of an 'external' study)",
            )
        return request.task
    return request.model if request.model is not None else request.name


def _check_space_sizes(request: StudyRequest, report: ReportProblem) -> None:
    for optimizer, overrides in request.search_space.items():
        for key, dim in overrides.items():
            choices = dim.get("choices") if isinstance(dim, Mapping) else None
            if isinstance(choices, list) and len(choices) > MAX_CHOICES:
                report(
                    ("search_space", optimizer, key),
                    f"{len(choices)} choices; a search space takes at most {MAX_CHOICES} per "
                    "key (use a range with low/high for more values)",
                )


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, Mapping):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def _check_magnitudes(spaces: Mapping[str, Any], report: ReportProblem) -> None:
    for optimizer, space in spaces.items():
        for key, dim in space_to_json(space).items():
            if key == "batch_size":
                continue
            too_big = [n for n in _numbers(dim) if not math.isfinite(n) or abs(n) > MAX_MAGNITUDE]
            if too_big:
                report(
                    ("search_space", optimizer, key),
                    f"{too_big[0]:g} is out of range for {key}: every trial would overflow; "
                    f"keep values within +-{MAX_MAGNITUDE:g}",
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
