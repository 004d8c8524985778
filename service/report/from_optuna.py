"""A report's trials from Optuna's ``FrozenTrial``s (pure conversions; the caller reads them).

Reads the user attributes that :mod:`studies.objective` writes: ``hyperparameters`` (the values
as the optimizer takes them), ``epochs_run``, ``curves``, ``pruned_reason`` and ``error``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime

from optuna.trial import FrozenTrial, TrialState

from service.report.data import TrialPoint

STATE_NAMES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


def trial_point(trial: FrozenTrial) -> TrialPoint:
    """One trial as the report draws it.

    Its value is the final one when complete, the last reported one when pruned (the epoch it
    stopped at), else ``None``; its epochs are ``epochs_run`` (else the epochs it reported).
    """
    attrs = trial.user_attrs
    values = attrs.get("hyperparameters")
    params = dict(values) if isinstance(values, Mapping) else dict(trial.params)
    lr = params.get("lr")
    epochs = attrs.get("epochs_run")
    if not isinstance(epochs, int) or isinstance(epochs, bool):
        epochs = len(trial.intermediate_values)
    if trial.state == TrialState.COMPLETE:
        value = trial.value
    elif trial.state == TrialState.PRUNED and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    else:
        value = None
    note = attrs.get("pruned_reason") or attrs.get("error") or ""
    return TrialPoint(
        number=trial.number,
        state=STATE_NAMES.get(trial.state, trial.state.name.lower()),
        value=None if value is None else float(value),
        epochs=epochs,
        lr=float(lr) if isinstance(lr, int | float) and not isinstance(lr, bool) else None,
        params=params,
        note=str(note),
    )


def trial_points(trials: Iterable[FrozenTrial]) -> list[TrialPoint]:
    """The trials in the order they finished (then by number); unfinished ones last."""
    ordered = sorted(
        trials,
        key=lambda t: (
            t.datetime_complete is None,
            t.datetime_complete or datetime.min,
            t.number,
        ),
    )
    return [trial_point(t) for t in ordered]


def seed_curve(trial: FrozenTrial, metric: str) -> list[float]:
    """The validation ``metric`` per epoch of one trial: its ``curves`` user attribute, else
    the values it reported, by step. Non-finite values end the curve (training stopped there)."""
    curves = trial.user_attrs.get("curves")
    if isinstance(curves, Mapping) and isinstance(curves.get(metric), list):
        raw = [float(v) if isinstance(v, int | float) else math.nan for v in curves[metric]]
    else:
        raw = [float(trial.intermediate_values[step]) for step in sorted(trial.intermediate_values)]
    finite = []
    for value in raw:
        if not math.isfinite(value):
            break
        finite.append(value)
    return finite
