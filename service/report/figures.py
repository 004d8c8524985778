"""The report's figures, each an inline SVG built from a ``StudyReport`` (or an empty-state note).

1. ``best_so_far``: the best validation figure against the epochs each optimizer has spent.
2. ``learning_curves``: each optimizer's confirmed config, validation metric per epoch, mean over
   seeds with its 95% interval as a band.
3. ``lr_sensitivity``: validation metric against learning rate, every search trial, one panel per
   optimizer on shared axes.
4. ``importance_bars``: which hyperparameters mattered, one panel per optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from service.report.data import StudyReport, TrialPoint
from service.report.svg import AXIS_COLOUR, Chart, colour, esc, legend, number
from studies.verdict import summarize

FINISHED = ("complete", "pruned", "failed")
LOG_SPAN = 100.0  # a minimized figure spanning more than this ratio is drawn on a log axis


def metric_label(report: StudyReport) -> str:
    better = "higher" if report.direction == "maximize" else "lower"
    return f"{report.metric} (validation; {better} is better)"


def empty(message: str) -> str:
    return f'<p class="empty">{esc(message)}</p>'


def wants_log(values: Sequence[float], direction: str) -> bool:
    """Losses that span decades read better in log10 (accuracies never do)."""
    positive = [v for v in values if math.isfinite(v)]
    return (
        direction == "minimize"
        and bool(positive)
        and min(positive) > 0
        and max(positive) / min(positive) > LOG_SPAN
    )


def best_so_far_points(trials: Sequence[TrialPoint], direction: str) -> list[tuple[float, float]]:
    """A step line: (epochs spent, best complete value so far), from the first complete trial.

    Every finished trial's epochs count as spent (pruned and failed ones cost epochs too); only
    complete trials can set the best, as in Optuna.
    """
    sign = 1.0 if direction == "maximize" else -1.0
    spent = 0.0
    best: float | None = None
    points: list[tuple[float, float]] = []
    for trial in trials:
        if trial.state not in FINISHED:
            continue
        spent += trial.epochs
        if trial.state == "complete" and trial.has_value:
            value = float(trial.value)  # type: ignore[arg-type]
            if best is None or sign * value > sign * best:
                if best is not None:
                    points.append((spent, best))
                best = value
                points.append((spent, value))
    if best is not None and points[-1][0] < spent:
        points.append((spent, best))
    return points


def best_so_far(report: StudyReport) -> str:
    lines = [
        (i, o, best_so_far_points(o.trials, report.direction))
        for i, o in enumerate(report.optimizers)
    ]
    lines = [(i, o, points) for i, o, points in lines if points]
    if not lines:
        return empty("No complete trial yet: the best-so-far lines start with the first one.")
    xs = [0.0, *(x for _, _, points in lines for x, _ in points)]
    ys = [y for _, _, points in lines for _, y in points]
    chart = Chart.create(
        width=780, height=360, xs=xs, ys=ys, y_log=wants_log(ys, report.direction),
        title=f"Best {report.metric} so far against epochs spent, per optimizer",
    )  # fmt: skip
    chart.axes("epochs spent (all finished search trials of the optimizer)", metric_label(report))
    for i, optimizer, points in lines:
        chart.line(points, colour(i), label=f"{optimizer.name}: best so far")
        x, y = points[-1]
        chart.point(x, y, colour(i), kind="filled", tooltip=f"{optimizer.name}: {number(y)}")
    items = [(o.name, colour(i), "line") for i, o, _ in lines]
    return _with_legend(chart.svg(), legend(items))


def mean_curve(
    curves: Sequence[Sequence[float]],
) -> list[tuple[int, float, float | None, float | None, int]]:
    """Per epoch (1-based): mean, interval low and high (``None`` under two seeds), seeds."""
    rows = []
    for epoch in range(1, max((len(c) for c in curves), default=0) + 1):
        values = [c[epoch - 1] for c in curves if len(c) >= epoch and math.isfinite(c[epoch - 1])]
        if not values:
            continue
        s = summarize(values)
        rows.append((epoch, s.mean, s.ci_low, s.ci_high, s.n))  # type: ignore[arg-type]
    return rows


def learning_curves(report: StudyReport) -> str:
    curves = [(i, o, mean_curve(o.curves)) for i, o in enumerate(report.optimizers)]
    curves = [(i, o, rows) for i, o, rows in curves if rows]
    if not curves:
        return empty(
            "No confirmed config yet: the learning curves appear as the confirmation seeds of "
            "each optimizer's best configs finish."
        )
    xs = [float(row[0]) for _, _, rows in curves for row in rows]
    ys = [
        v
        for _, _, rows in curves
        for _, mean, low, high, _ in rows
        for v in (mean, low, high)
        if v is not None
    ]
    chart = Chart.create(
        width=780, height=360, xs=[1.0, *xs], ys=ys, y_log=wants_log(ys, report.direction),
        title=f"Validation {report.metric} per epoch of each optimizer's confirmed config",
    )  # fmt: skip
    chart.axes("epoch", metric_label(report))
    items = []
    for i, optimizer, rows in curves:
        banded = [row for row in rows if row[2] is not None]
        chart.band(
            [float(row[0]) for row in banded],
            [row[2] for row in banded],  # type: ignore[misc]
            [row[3] for row in banded],  # type: ignore[misc]
            colour(i),
            label=f"{optimizer.name}: 95% interval of the mean over seeds",
        )
        chart.line(
            [(float(epoch), mean) for epoch, mean, *_ in rows],
            colour(i),
            label=f"{optimizer.name}: mean over seeds",
        )
        seeds = max(row[4] for row in rows)
        items.append((f"{optimizer.name} (mean of {seeds} seed{'s' * (seeds != 1)})", colour(i),
                      "band"))  # fmt: skip
    note = (
        '<p class="caption">Line: mean over the seeds of the confirmed config; band: 95% '
        "Student-t interval of that mean (where at least two seeds reached the epoch).</p>"
    )
    return _with_legend(chart.svg(), legend(items)) + note


def lr_sensitivity(report: StudyReport) -> str:
    drawn = [
        (i, o, [t for t in o.trials if t.state in FINISHED and t.lr is not None and t.lr > 0])
        for i, o in enumerate(report.optimizers)
    ]
    if not any(trials for _, _, trials in drawn):
        return empty("No finished trial yet: each trial appears here at its learning rate.")
    lrs = [float(t.lr) for _, _, trials in drawn for t in trials]  # type: ignore[arg-type]
    values = [float(t.value) for _, _, trials in drawn for t in trials if t.has_value]  # type: ignore[arg-type]
    y_log = wants_log(values, report.direction)
    confirmed_lrs = _confirmed_lrs(report)
    lrs += confirmed_lrs.values()
    panels = []
    for i, optimizer, trials in drawn:
        chart = Chart.create(
            width=350, height=260, xs=lrs, ys=values or [0.0, 1.0], x_log=True, y_log=y_log,
            title=f"{optimizer.name}: validation {report.metric} against learning rate",
            margin=(40, 14, 44, 58),
        )  # fmt: skip
        chart.axes("learning rate lr (log scale)", report.metric)
        counts = {state: sum(t.state == state for t in trials) for state in FINISHED}
        chart.raw(
            f'<text class="panel-title" x="{chart.left}" y="16" font-size="14" '
            f'font-weight="600" fill="{colour(i)}">{esc(optimizer.name)}</text>'
            f'<text x="{chart.left}" y="32" font-size="11" fill="{AXIS_COLOUR}">'
            f"{counts['complete']} complete, {counts['pruned']} pruned, "
            f"{counts['failed']} failed</text>"
        )
        confirmed_lr = confirmed_lrs.get(optimizer.name)
        if confirmed_lr is not None:
            chart.vline(
                confirmed_lr, colour(i), label=f"confirmed config: lr={number(confirmed_lr)}"
            )
        for trial in trials:
            kind = {"complete": "filled", "pruned": "hollow"}.get(trial.state, "cross")
            if not trial.has_value:
                kind = "cross"
            chart.point(
                float(trial.lr),  # type: ignore[arg-type]
                float(trial.value) if trial.has_value else math.nan,  # type: ignore[arg-type]
                colour(i),
                kind=kind,
                tooltip=_trial_tooltip(trial),
            )
        if not trials:
            chart.raw(
                f'<text x="{(chart.left + chart.right) / 2}" y="{(chart.top + chart.bottom) / 2}" '
                f'text-anchor="middle" font-size="12" fill="{AXIS_COLOUR}">no finished trial yet'
                "</text>"
            )
        panels.append(chart.svg("chart lr-panel"))
    key = legend(
        [
            ("complete trial (final value)", AXIS_COLOUR, "filled"),
            ("pruned trial (value when it stopped)", AXIS_COLOUR, "hollow"),
            ("failed or diverged (no value; on the x axis)", AXIS_COLOUR, "cross"),
            *([("lr of the confirmed config", AXIS_COLOUR, "dashed")] if confirmed_lrs else []),
        ],
        width=350,
    )
    return f'<div class="key">{key}</div><div class="panels">{"".join(panels)}</div>'


def importance_bars(report: StudyReport) -> str:
    panels = []
    for i, optimizer in enumerate(report.optimizers):
        result = optimizer.importance
        head = f'<h4 style="color:{colour(i)}">{esc(optimizer.name)}</h4>'
        if result is None:
            panels.append(f'<div class="panel">{head}{empty("Not computed yet.")}</div>')
            continue
        if not result.importances:
            panels.append(f'<div class="panel">{head}{empty(result.reason)}</div>')
            continue
        row, label_width, bar_width = 24, 110, 150
        parts = []
        for j, (name, share) in enumerate(result.importances.items()):
            y = 6 + j * row
            parts.append(
                f'<text x="{label_width - 6}" y="{y + 9}" text-anchor="end" '
                f'dominant-baseline="middle" font-size="12" fill="{AXIS_COLOUR}">{esc(name)}</text>'
                f'<rect class="bar" data-label="{esc(name)}" x="{label_width}" y="{y}" '
                f'width="{max(1.0, share * bar_width):.1f}" height="18" fill="{colour(i)}">'
                f"<title>{esc(name)}: {share:.0%}</title></rect>"
                f'<text x="{label_width + share * bar_width + 6:.1f}" y="{y + 9}" '
                f'dominant-baseline="middle" font-size="12" fill="{AXIS_COLOUR}">{share:.0%}</text>'
            )
        height = 12 + row * len(result.importances)
        svg = (
            f'<svg class="chart importance" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'width="310" height="{height}" viewBox="0 0 310 {height}">'
            f"<title>{esc(optimizer.name)}: hyperparameter importance ({esc(result.title)})"
            f"</title>{''.join(parts)}</svg>"
        )
        caption = (
            f'<p class="caption">{esc(result.title)} over {result.n_trials} complete trials'
            f"{f' ({result.n_excluded} pruned or failed left out)' if result.n_excluded else ''}"
            "; shares sum to 100%.</p>"
        )
        panels.append(f'<div class="panel">{head}{svg}{caption}</div>')
    if not panels:
        return empty("No optimizer in this study.")
    return f'<div class="panels">{"".join(panels)}</div>'


def _confirmed_lrs(report: StudyReport) -> dict[str, float]:
    """Each optimizer's representative confirmed config's lr, where there is one."""
    if report.verdict is None:
        return {}
    found = {}
    for result in report.verdict.results:
        lr = None if result.config is None else result.config.params.get("lr")
        if isinstance(lr, int | float) and not isinstance(lr, bool) and lr > 0:
            found[result.optimizer] = float(lr)
    return found


def _trial_tooltip(trial: TrialPoint) -> str:
    value = number(trial.value) if trial.has_value else "no value"
    params = ", ".join(f"{k}={_param(v)}" for k, v in trial.params.items())
    text = f"trial {trial.number} ({trial.state}, {trial.epochs} epochs): {value}"
    text += f"\n{params}" if params else ""
    return text + (f"\n{trial.note}" if trial.note else "")


def _param(value: object) -> str:
    return number(value) if isinstance(value, float) else str(value)


def _with_legend(svg: str, key: str) -> str:
    return f'<div class="figure">{svg}<div class="key">{key}</div></div>'


def optimizer_colours(report: StudyReport) -> dict[str, str]:
    """Each optimizer's colour, fixed by its place in the study."""
    return {o.name: colour(i) for i, o in enumerate(report.optimizers)}
