"""What a trial is: tasks, the fast training loop, the Optuna objective, samplers and pruners.

The names below are imported on first use: ``import studies.verdict`` (or ``studies.samplers``)
does not import torch through the training loop, so the API, which trains nothing, never does.
"""

from importlib import import_module
from typing import Any

# Where each name of the package is defined.
_MODULES = {
    "DEFAULT_PRUNER": "studies.samplers",
    "DEFAULT_SAMPLER": "studies.samplers",
    "PRUNERS": "studies.samplers",
    "SAMPLERS": "studies.samplers",
    "Task": "studies.tasks",
    "TrainingResult": "studies.training",
    "TrialPlan": "studies.objective",
    "available_tasks": "studies.tasks",
    "get_task": "studies.tasks",
    "make_objective": "studies.objective",
    "make_pruner": "studies.samplers",
    "make_sampler": "studies.samplers",
    "run_study": "studies.runner",
    "study_direction": "studies.objective",
    "task_space": "studies.objective",
    "train": "studies.training",
}


def __getattr__(name: str) -> Any:
    try:
        module = _MODULES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULES})


__all__ = sorted(_MODULES)
