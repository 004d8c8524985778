"""What a trial is: tasks, the fast training loop, the Optuna objective, samplers and pruners."""

from studies.objective import TrialPlan, make_objective, study_direction, task_space
from studies.runner import run_study
from studies.samplers import (
    DEFAULT_PRUNER,
    DEFAULT_SAMPLER,
    PRUNERS,
    SAMPLERS,
    make_pruner,
    make_sampler,
)
from studies.tasks import Task, available_tasks, get_task
from studies.training import TrainingResult, train

__all__ = [
    "DEFAULT_PRUNER",
    "DEFAULT_SAMPLER",
    "PRUNERS",
    "SAMPLERS",
    "Task",
    "TrainingResult",
    "TrialPlan",
    "available_tasks",
    "get_task",
    "make_objective",
    "make_pruner",
    "make_sampler",
    "run_study",
    "study_direction",
    "task_space",
    "train",
]
