"""API answers for people: Rich tables, the winner line, and the live progress of ``study watch``.

Each ``print_*`` takes an answer of :class:`service.client.HPTClient` and prints it on stdout;
``--json`` output never comes here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from service.cli.common import stdout_console
from service.cli.formatting import (
    TRIAL_STATE_STYLES,
    counts_text,
    eta_text,
    format_params,
    format_space,
    format_spread,
    format_value,
    short_time,
    study_summary,
    styled_count,
    styled_status,
)
from service.client import FINAL_STATUSES, HPTClient

_NUMERIC_COLUMNS = frozenset({"#", "value", "test", "time"})
_NO_STUDIES_YET = "No studies yet. Create one with [bold]hpt study create[/] (see --help)."

# --------------------------------------------------------------------------- studies


def print_studies(page: Mapping[str, Any], *, filtered: bool) -> None:
    """A page of ``list_studies``; ``filtered``: a filter or an offset was given."""
    out = stdout_console()
    if not page["items"]:
        out.print("No studies." if filtered else _NO_STUDIES_YET)
        return
    table = Table(title=f"Studies ({page['total']})", title_justify="left")
    for column in ("name", "task", "metric", "status", "optimizers", "trials", "created (UTC)"):
        table.add_column(column, justify="right" if column == "trials" else "left")
    for study in page["items"]:
        table.add_row(
            escape(study["name"]),
            escape(study["task"]),
            escape(study["metric"]),
            styled_status(study["status"]),
            escape(", ".join(study["optimizers"])),
            f"{study['finished']}/{study['total']}",
            short_time(study["created_at"]),
        )
    out.print(table)
    print_more(page)


def print_study(study: Mapping[str, Any]) -> None:
    """A study's status: progress per optimizer, best so far, ETA."""
    out = stdout_console()
    out.print(f"Study [bold]{escape(study['name'])}[/]: {study_summary(study)}")
    progress = study["progress"]
    out.print(
        f"{styled_status(study['status'])}: {progress['finished']}/{progress['total']} trials "
        f"finished; {escape(eta_text(study['eta']))}"
    )
    if study["error"]:
        out.print(f"[red]{escape(study['error'])}[/]")
    table = Table()
    for column in ("optimizer", "finished", "running", "pruned", "failed", "best", "params"):
        table.add_column(column, justify="left" if column in ("optimizer", "params") else "right")
    for row in study["optimizers"]:
        best = row["best"] or {}
        table.add_row(
            escape(row["optimizer"]),
            f"{row['finished']}/{row['n_trials']}",
            str(row["running"]),
            str(row["pruned"]),
            styled_count(row["failed"], "red"),
            format_value(best.get("value")),
            escape(format_params(best.get("params"))),
        )
    out.print(table)
    if study["best"]:
        print_winner(study["best"], leader=study["status"] != "completed")


def print_best(name: str, best: Mapping[str, Any]) -> None:
    """The best trial of each optimizer of study ``name``, and the winner."""
    out = stdout_console()
    status = f" ({styled_status(best['status'])})" if best.get("status") else ""
    if not best["optimizers"]:
        out.print(f"Study [bold]{escape(name)}[/]{status} has no complete trial yet.")
        return
    table = Table(
        title=f"Best of {escape(name)}{status}: {escape(str(best['metric']))}, "
        f"{escape(str(best['direction']))}",
        title_justify="left",
    )
    confirmed = best.get("verdict") is not None
    columns = ("optimizer", "value", "test", "seeds", "verdict", "params") if confirmed else (
        "optimizer", "value", "test", "trial", "params"
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("optimizer", "params") else "right")
    for row in best["optimizers"]:
        seeds = row.get("confirmed")
        if confirmed and seeds:
            table.add_row(
                escape(row["optimizer"]),
                format_spread(seeds["value"]),
                format_spread(seeds["test_value"]),
                str(seeds["value"]["n"]),
                escape(seeds["status"]),
                escape(format_params(row["params"])),
            )
        else:
            table.add_row(
                escape(row["optimizer"]),
                format_value(row["value"]),
                format_value(row["test_value"]),
                f"#{row['number']}",
                escape(format_params(row["params"])),
            )
    out.print(table)
    if confirmed:
        out.print(escape(best["verdict"]["sentence"]))
    if best["winner"]:
        print_winner(best["winner"], leader=best.get("status") not in (None, "completed"))


def print_trials(name: str, page: Mapping[str, Any], *, offset: int) -> None:
    """A page of the trials of study ``name``, asked for from ``offset`` on."""
    out = stdout_console()
    if not page["items"]:
        out.print(f"No trials{' on this page' if offset else ''}.")
        return
    table = Table(title=f"Trials of {escape(name)} ({page['total']})", title_justify="left")
    for column in ("optimizer", "#", "state", "value", "test", "params", "time", "note"):
        table.add_column(column, justify="right" if column in _NUMERIC_COLUMNS else "left")
    for trial in page["items"]:
        duration = trial["duration_seconds"]
        table.add_row(
            escape(trial["optimizer"]),
            str(trial["number"]),
            f"[{TRIAL_STATE_STYLES.get(trial['state'], 'white')}]{trial['state']}[/]",
            format_value(trial["value"]),
            format_value(trial["test_value"]),
            escape(format_params(trial["params"])),
            "" if duration is None else f"{duration:.1f} s",
            escape(trial["pruned_reason"] or trial["error"] or ""),
        )
    out.print(table)
    print_more(page)


def print_winner(best: Mapping[str, Any], *, leader: bool) -> None:
    out = stdout_console()
    title = "Leading so far" if leader else "Winner"
    test = f", test {format_value(best['test_value'])}" if best["test_value"] is not None else ""
    out.print(
        f"{title}: [bold green]{escape(best['optimizer'])}[/] "
        f"{format_value(best['value'])}{test} (trial #{best['number']})"
    )
    if best["python"]:
        out.print(f"  [cyan]{escape(best['python'])}[/]")


def print_more(page: Mapping[str, Any]) -> None:
    shown = page["offset"] + len(page["items"])
    if page["total"] > shown:
        stdout_console().print(f"{shown} of {page['total']}; see more with --offset {shown}")


# --------------------------------------------------------------------------- study watch


def follow(client: HPTClient, name: str, interval: float, *, as_json: bool) -> dict[str, Any]:
    """Poll the study every ``interval`` seconds until it ends; returns its last state."""
    study = client.get_study(name)
    if as_json:
        while True:
            typer.echo(json.dumps(study, default=str))
            if study["status"] in FINAL_STATUSES:
                return study
            time.sleep(interval)
            study = client.get_study(name)
    out = stdout_console()
    out.print(f"Study [bold]{escape(study['name'])}[/]: {study_summary(study)}")
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TextColumn("best {task.fields[best]}"),
        TextColumn("{task.fields[eta]}"),
        console=out,
        refresh_per_second=4,
    )
    width = max(len(row["optimizer"]) for row in [*study["optimizers"], {"optimizer": "total"}])
    bars: dict[str, TaskID] = {}
    with progress:
        while True:
            eta = eta_text(study["eta"])
            for row in study["optimizers"]:
                done = row["finished"] >= row["n_trials"]
                fields = {
                    "counts": counts_text(row),
                    "best": format_value((row["best"] or {}).get("value")),
                    "eta": "[green]done[/]" if done else escape(eta),
                }
                if row["optimizer"] not in bars:
                    label = f"[bold]{escape(row['optimizer']).rjust(width)}[/]"
                    bars[row["optimizer"]] = progress.add_task(
                        label, total=row["n_trials"], **fields
                    )
                progress.update(bars[row["optimizer"]], completed=row["finished"], **fields)
            if study["status"] in FINAL_STATUSES:
                return study
            time.sleep(interval)
            study = client.get_study(name)


def print_final(study: Mapping[str, Any]) -> None:
    """How a watched study ended."""
    out = stdout_console()
    progress = study["progress"]
    out.print(
        f"Study [bold]{escape(study['name'])}[/] {styled_status(study['status'])}: "
        f"{progress['finished']}/{progress['total']} trials finished."
    )
    if study["error"]:
        out.print(f"[red]{escape(study['error'])}[/]")
    if study["best"]:
        print_winner(study["best"], leader=study["status"] != "completed")
        out.print(f"All optimizers: [bold]hpt study best {escape(study['name'])}[/]")


# --------------------------------------------------------------------------- catalog


def print_tasks(tasks: Sequence[Mapping[str, Any]]) -> None:
    table = Table(title="Tasks", title_justify="left")
    for column in ("task", "metric (default first)", "epochs", "description"):
        table.add_column(column)
    for task in tasks:
        metrics = sorted(task["metrics"].items(), key=lambda kv: kv[0] != task["default_metric"])
        table.add_row(
            escape(task["name"]),
            escape(", ".join(f"{metric} ({way[:3]})" for metric, way in metrics) or "any"),
            str(task["default_epochs"] or ""),
            escape(task["description"]),
        )
    stdout_console().print(table)


def print_optimizers(specs: Sequence[Mapping[str, Any]]) -> None:
    table = Table(title="Optimizers", title_justify="left")
    for column in ("optimizer", "default search space", "description"):
        table.add_column(column)
    for spec in specs:
        table.add_row(
            escape(spec["name"]),
            escape(format_space(spec["default_space"])),
            escape(spec["description"]),
        )
    stdout_console().print(table)
