"""Values of API answers as short text (Rich markup where styled) for tables and messages."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rich.markup import escape

from service.vocabulary import StudyStatus, TrialState

STATUS_STYLES: Mapping[str, str] = {
    StudyStatus.QUEUED: "yellow",
    StudyStatus.RUNNING: "cyan",
    StudyStatus.COMPLETED: "green",
    StudyStatus.STOPPED: "magenta",
    StudyStatus.FAILED: "red",
    StudyStatus.DELETING: "dim",
}
TRIAL_STATE_STYLES: Mapping[str, str] = {
    TrialState.COMPLETE: "green",
    TrialState.RUNNING: "cyan",
    TrialState.PRUNED: "yellow",
    TrialState.FAILED: "red",
    TrialState.WAITING: "dim",
}


def format_spread(summary: Mapping[str, Any]) -> str:
    """A figure over seeds: ``0.9769 ± 0.0045`` (the half width of its 95% interval)."""
    mean = summary.get("mean")
    if mean is None:
        return "-"
    low, high = summary.get("ci_low"), summary.get("ci_high")
    if low is None or high is None:
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {(high - low) / 2:.2g}"


def study_summary(study: Mapping[str, Any]) -> str:
    names = [row["optimizer"] if isinstance(row, Mapping) else row for row in study["optimizers"]]
    parts = [
        f"task {study['task']}",
        f"{study['metric']} ({study['direction']})",
        f"optimizers {', '.join(names)}",
        f"{study['n_trials']} trials each",
        f"{study['epochs']} epochs" if study.get("epochs") else None,
        f"sampler {study['sampler']}",
        f"pruner {study['pruner']}",
    ]
    return escape(", ".join(part for part in parts if part))


def styled_status(status: str) -> str:
    return f"[{STATUS_STYLES.get(status, 'white')}]{escape(status)}[/]"


def styled_count(count: int, style: str) -> str:
    """``count`` in ``style``, unless it is 0."""
    return f"[{style}]{count}[/]" if count else str(count)


def counts_text(row: Mapping[str, Any]) -> str:
    return (
        f"{row['running']} running, {styled_count(row['pruned'], 'yellow')} pruned, "
        f"{styled_count(row['failed'], 'red')} failed"
    )


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_params(params: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{key}={format_value(value)}" for key, value in (params or {}).items())


def format_space(space: Mapping[str, Any]) -> str:
    parts = []
    for key, dim in space.items():
        if isinstance(dim, Mapping) and "low" in dim:
            scale = " log" if dim.get("log") else ""
            if dim.get("one_minus"):
                scale += ", searched as 1-x"
            parts.append(f"{key} [{format_value(dim['low'])}, {format_value(dim['high'])}]{scale}")
        elif isinstance(dim, Mapping) and "choices" in dim:
            parts.append(f"{key} {{{', '.join(str(c) for c in dim['choices'])}}}")
        else:
            parts.append(f"{key} = {json.dumps(dim, default=str)}")
    return "; ".join(parts)


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def eta_text(eta: Mapping[str, Any]) -> str:
    if eta["seconds"] is not None:
        workers = eta["live_workers"]
        return f"ETA {format_seconds(eta['seconds'])} ({workers} worker{'s' * (workers != 1)})"
    return f"ETA unknown: {eta['reason']}" if eta["reason"] else "ETA unknown"


def short_time(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")
