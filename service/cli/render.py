"""API answers for people: Rich tables, the winner line, and the live progress of ``study watch``.

Each ``print_*`` takes an answer of :class:`service.client.HPTClient` and prints it on stdout;
``--json`` output never comes here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

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

# The narrowest a wrapping column gets, its long words folded, before a table overflows.
FOLD_WIDTH = 8
_NO_STUDIES_YET = "No studies yet. Create one with [bold]hpt study create[/] (see --help)."


# --------------------------------------------------------------------------- tables that fit


@dataclass(frozen=True)
class Column:
    """A column of a table for people.

    Args:
        header: Its heading.
        justify: ``"right"`` for numbers.
        wraps: Long cells wrap onto more lines (lists: params, optimizers, notes), folding a word
            longer than the column rather than cutting it. Other columns (names, numbers,
            statuses) are always one line, never cut.
        drop_order: Columns that do not fit the terminal are left out, highest first; ``None``:
            always shown.
    """

    header: str
    justify: Literal["left", "right"] = "left"
    wraps: bool = False
    drop_order: int | None = None


def fitted_table(
    out: Console,
    title: str | None,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
) -> Table:
    """A table of ``rows`` as wide as the terminal at most, where no cell is ever cut: list
    cells wrap at their spaces, and when the table is still too wide, the columns with the
    highest ``drop_order`` are left out (the caption names them). Past that, its lines are longer
    than the terminal, which wraps them."""
    cells = [[Text.from_markup(cell) for cell in row] for row in rows]
    headers = [Text(column.header) for column in columns]

    def longest_line(index: int) -> int:
        return max(text.cell_len for text in [headers[index], *(row[index] for row in cells)])

    def longest_word(index: int) -> int:
        texts = [headers[index], *(row[index] for row in cells)]
        return max((len(word) for text in texts for word in text.plain.split()), default=1)

    shown = list(range(len(columns)))
    while True:
        wrapping = [i for i in shown if columns[i].wraps]
        fixed = sum(longest_line(i) for i in shown if not columns[i].wraps)
        room = out.width - fixed - (3 * len(shown) + 1)  # "│ " before each cell, " │" after
        widths = _share(room, {i: (longest_word(i), longest_line(i)) for i in wrapping})
        droppable = [i for i in shown if columns[i].drop_order is not None]
        if widths is None and not droppable and wrapping:
            # Last resort before overflowing: fold long words of the wrapping columns.
            widths = _share(room, {i: (FOLD_WIDTH, longest_line(i)) for i in wrapping})
        if widths is not None or not droppable:
            break
        shown.remove(max(droppable, key=lambda i: columns[i].drop_order or 0))

    table = Table(title=title, title_justify="left")
    for index in shown:
        column = columns[index]
        width = None if widths is None else widths.get(index)
        if widths is None and column.wraps:
            width = longest_word(index)  # past the terminal's width anyway: as narrow as can be
        table.add_column(
            column.header,
            justify=column.justify,
            no_wrap=not column.wraps,
            overflow="fold",
            width=width,
        )
    for row in rows:
        table.add_row(*(row[index] for index in shown))
    if widths is None:
        # Too wide even so: longer lines than the terminal (which wraps them), rather than cuts.
        table.width = Measurement.get(out, out.options.update(width=10**4), table).minimum
    left_out = [column.header for i, column in enumerate(columns) if i not in shown]
    if left_out:
        table.caption = f"not shown (a wider terminal shows them): {', '.join(left_out)}"
        table.caption_justify = "left"
    return table


def _share(room: int, wanted: Mapping[int, tuple[int, int]]) -> dict[int, int] | None:
    """Widths for the wrapping columns, ``{index: (narrowest, widest)}``, that fit in ``room``:
    each gets its narrowest, then the rest goes to those that want more; ``None`` when even the
    narrowest do not fit."""
    widths = {index: narrowest for index, (narrowest, _) in wanted.items()}
    spare = room - sum(widths.values())
    if spare < 0:
        return None
    hungry = [index for index, (_, widest) in wanted.items() if widest > widths[index]]
    while spare > 0 and hungry:
        share = max(spare // len(hungry), 1)
        for index in list(hungry):
            grant = min(share, wanted[index][1] - widths[index], spare)
            widths[index] += grant
            spare -= grant
            if widths[index] >= wanted[index][1]:
                hungry.remove(index)
            if spare == 0:
                break
    return widths


def print_studies(page: Mapping[str, Any], *, filtered: bool) -> None:
    """A page of ``list_studies``; ``filtered``: a filter or an offset was given."""
    out = stdout_console()
    if not page["items"]:
        out.print("No studies." if filtered else _NO_STUDIES_YET)
        return
    columns = [
        Column("name"),
        Column("task", drop_order=3),
        Column("metric", drop_order=5),
        Column("status"),
        Column("optimizers", wraps=True, drop_order=4),
        Column("trials", justify="right"),
        Column("created (UTC)", drop_order=6),
    ]
    rows = [
        [
            escape(study["name"]),
            escape(study["task"]),
            escape(study["metric"]),
            styled_status(study["status"]),
            escape(", ".join(study["optimizers"])),
            f"{study['finished']}/{study['total']}",
            short_time(study["created_at"]),
        ]
        for study in page["items"]
    ]
    table = fitted_table(out, f"Studies ({page['total']})", columns, rows)
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
    columns = [
        Column("optimizer"),
        Column("finished", justify="right"),
        Column("running", justify="right", drop_order=2),
        Column("pruned", justify="right", drop_order=3),
        Column("failed", justify="right", drop_order=1),
        Column("best", justify="right"),
        Column("params", wraps=True),
    ]
    rows = []
    for row in study["optimizers"]:
        best = row["best"] or {}
        rows.append(
            [
                escape(row["optimizer"]),
                f"{row['finished']}/{row.get('total', row['n_trials'])}",
                str(row["running"]),
                str(row["pruned"]),
                styled_count(row["failed"], "red"),
                format_value(best.get("value")),
                escape(format_params(best.get("params"))),
            ]
        )
    table = fitted_table(out, None, columns, rows)
    out.print(table)
    print_answer(study)


def print_best(name: str, best: Mapping[str, Any]) -> None:
    """The best trial of each optimizer of study ``name``, and the winner."""
    out = stdout_console()
    status = f" ({styled_status(best['status'])})" if best.get("status") else ""
    if not best["optimizers"]:
        out.print(f"Study [bold]{escape(name)}[/]{status} has no complete trial yet.")
        return
    title = (
        f"Best of {escape(name)}{status}: {escape(str(best['metric']))}, "
        f"{escape(str(best['direction']))}"
    )
    confirmed = best.get("verdict") is not None
    if confirmed:
        rows = [_confirmed_row(row) for row in best["optimizers"]]
        table = fitted_table(out, title, _CONFIRMED_COLUMNS, rows)
    else:
        rows = [_best_row(row) for row in best["optimizers"]]
        table = fitted_table(out, title, _BEST_COLUMNS, rows)
    out.print(table)
    print_leaders(best)


def print_leaders(best: Mapping[str, Any]) -> None:
    """The answer of ``GET .../best``: the winner with its figures and line of Python when
    there is one, otherwise the tied leaders with theirs, then the answer's sentence."""
    out = stdout_console()
    if best["winner"]:
        print_winner(best["winner"], leader=False)
    elif len(best.get("leaders") or []) > 1:
        out.print(f"Tied: [bold]{escape(', '.join(best['leaders']))}[/]")
        for row in best["optimizers"]:
            if row["optimizer"] in best["leaders"] and row["python"]:
                out.print(f"  [cyan]{escape(row['python'])}[/]")
    elif best.get("leaders"):
        out.print(f"Leading so far: [bold]{escape(best['leaders'][0])}[/]")
    sentence = best.get("answer") or (best.get("verdict") or {}).get("sentence")
    if sentence:
        out.print(escape(sentence))


def print_trials(name: str, page: Mapping[str, Any], *, offset: int) -> None:
    """A page of the trials of study ``name``, asked for from ``offset`` on."""
    out = stdout_console()
    if not page["items"]:
        out.print(f"No trials{' on this page' if offset else ''}.")
        return
    columns = [
        Column("optimizer"),
        Column("#", justify="right"),
        Column("state"),
        Column("value", justify="right"),
        Column("test", justify="right", drop_order=2),
        Column("params", wraps=True),
        Column("time", justify="right", drop_order=1),
        Column("note", wraps=True, drop_order=3),
        # Where the config came from: portfolio, catalogue, sampler, confirm, import ...
        Column("from", drop_order=4),
    ]
    rows = []
    for trial in page["items"]:
        duration = trial["duration_seconds"]
        rows.append(
            [
                escape(trial["optimizer"]),
                str(trial["number"]),
                f"[{TRIAL_STATE_STYLES.get(trial['state'], 'white')}]{trial['state']}[/]",
                format_value(trial["value"]),
                format_value(trial["test_value"]),
                escape(format_params(trial["params"])),
                "" if duration is None else f"{duration:.1f} s",
                escape(trial["pruned_reason"] or trial["error"] or ""),
                escape(trial.get("origin") or ""),
            ]
        )
    table = fitted_table(out, f"Trials of {escape(name)} ({page['total']})", columns, rows)
    out.print(table)
    print_more(page)


_BEST_COLUMNS = [
    Column("optimizer"),
    Column("value", justify="right"),
    Column("test", justify="right", drop_order=2),
    Column("trial", justify="right", drop_order=1),
    Column("params", wraps=True),
]


def _best_row(row: Mapping[str, Any]) -> list[str]:
    confirmed = row.get("confirmed")
    return [
        escape(row["optimizer"]),
        format_spread(confirmed["value"]) if confirmed else format_value(row["value"]),
        format_value(row["test_value"]),
        f"#{row['number']}",
        escape(format_params(row["params"])),
    ]


_CONFIRMED_COLUMNS = [
    Column("optimizer"),
    Column("value (95% CI)", justify="right"),
    Column("test (95% CI)", justify="right", drop_order=2),
    Column("seeds", justify="right", drop_order=1),
    Column("verdict"),
    Column("params", wraps=True),
]


def _confirmed_row(row: Mapping[str, Any]) -> list[str]:
    seeds = row.get("confirmed")
    if not seeds or not seeds["value"]["n"]:
        # Listed, never dropped: no seed of it finished, so it was not compared.
        return [
            escape(row["optimizer"]),
            "-",
            "-",
            "0",
            "not compared (no finished seed)",
            escape(format_params(row["params"])),
        ]
    return [
        escape(row["optimizer"]),
        format_spread(seeds["value"]),
        format_spread(seeds["test_value"]),
        str(seeds["value"]["n"]),
        escape(seeds["status"]),
        escape(format_params(row["params"])),
    ]


def print_task_best(best: Mapping[str, Any]) -> None:
    """The best known config per optimizer of a task over all its studies (``GET /best``)."""
    out = stdout_console()
    if not best["optimizers"]:
        out.print(
            f"No complete trial of task [bold]{escape(best['task'])}[/] yet"
            f"{' in ' + str(len(best['studies'])) + ' studies' if best['studies'] else ''}."
        )
        return
    columns = [Column("study"), *_BEST_COLUMNS]
    rows = [[escape(row["study"]), *_best_row(row)] for row in best["optimizers"]]
    title = (
        f"Best known configs for {escape(best['task'])}: {escape(str(best['metric']))}, "
        f"{escape(str(best['direction']))}, over {len(best['studies'])} "
        f"stud{'ies' if len(best['studies']) != 1 else 'y'}"
    )
    out.print(fitted_table(out, title, columns, rows))
    if best["winner"]:
        winner = best["winner"]
        print_winner(winner, leader=False, title="Best known")
        out.print(f"  from study [bold]{escape(winner['study'])}[/]")
    elif len(best.get("leaders") or []) > 1:
        out.print(f"Tied: [bold]{escape(', '.join(best['leaders']))}[/]")


def print_winner(best: Mapping[str, Any], *, leader: bool, title: str | None = None) -> None:
    out = stdout_console()
    title = title or ("Leading so far" if leader else "Winner")
    test = f", test {format_value(best['test_value'])}" if best["test_value"] is not None else ""
    confirmed = best.get("confirmed")
    if confirmed:
        figures = (
            f"{format_spread(confirmed['value'])}, test {format_spread(confirmed['test_value'])} "
            f"over {confirmed['value']['n']} seeds (config of trial #{best['number']})"
        )
    else:
        figures = f"{format_value(best['value'])}{test} (trial #{best['number']})"
    out.print(f"{title}: [bold green]{escape(best['optimizer'])}[/] {figures}")
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
                total = row.get("total", row["n_trials"])
                done = row["finished"] >= total
                fields = {
                    "counts": counts_text(row),
                    "best": format_value((row["best"] or {}).get("value")),
                    "eta": "[green]done[/]" if done else escape(eta),
                }
                if row["optimizer"] not in bars:
                    label = f"[bold]{escape(row['optimizer']).rjust(width)}[/]"
                    bars[row["optimizer"]] = progress.add_task(label, total=total, **fields)
                # The confirmation's exact count replaces the one counted ahead when it starts.
                progress.update(
                    bars[row["optimizer"]], completed=row["finished"], total=total, **fields
                )
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
    if study.get("answer"):
        print_answer(study)
        out.print(f"All optimizers: [bold]hpt study best {escape(study['name'])}[/]")


def print_answer(answer: Mapping[str, Any]) -> None:
    """The study's answer, as the verdict (or, without one, the search) says it: the winner
    only when there is one, otherwise the tied leaders, then the sentence."""
    out = stdout_console()
    if answer.get("winner"):
        out.print(f"Winner: [bold green]{escape(answer['winner'])}[/]")
    elif len(answer.get("leaders") or []) > 1:
        out.print(f"Tied: [bold]{escape(', '.join(answer['leaders']))}[/]")
    elif answer.get("leaders"):
        out.print(f"Leading so far: [bold]{escape(answer['leaders'][0])}[/]")
    if answer.get("answer"):
        out.print(escape(answer["answer"]))


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
