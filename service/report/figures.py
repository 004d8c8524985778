"""The report's figures, each a plotly figure built here and rendered to a ``<div>`` whose script
draws it with the plotly.js the page inlines once (or an empty-state note when there is nothing
to draw yet).

1. ``best_so_far``: the best validation figure against the epochs each optimizer has spent.
2. ``learning_curves``: each optimizer's confirmed config, validation metric per epoch, mean over
   seeds with its 95% interval as a band.
3. ``lr_sensitivity``: validation metric against learning rate (log), every search trial, with
   each optimizer's confirmed config; hovering a trial shows its config.
4. ``importance_bars``: which hyperparameters mattered, per optimizer.

Every optimizer keeps its colour and its legend group in every figure, so clicking it in a
legend hides or shows all of its marks. User text (names, metric, parameters, notes) reaches
plotly escaped (``label``): plotly draws labels as a subset of HTML; and plotly's JSON escapes
``<``, ``>`` and ``/``, so nothing typed can end the page's ``<script>``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
import plotly.io

from service.report.data import StudyReport, TrialPoint
from service.report.markup import esc, label, number
from studies.verdict import OptimizerResult, summarize

# Okabe-Ito (distinguishable with the common colour-vision deficiencies), yellow darkened to read
# on white, then two more for long optimizer lists.
PALETTE = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#9A7B00",
    "#7F3C8D", "#6B6B6B",
)  # fmt: skip
FINISHED = ("complete", "pruned", "failed")
LOG_SPAN = 100.0  # a minimized figure spanning more than this ratio is drawn on a log axis
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
# The mode bar without what needs a server or makes no sense here; its picture download is
# drawn in the browser, so it works offline too.
PLOT_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "modeBarButtonsToRemove": ["select2d", "lasso2d"],
    "toImageButtonOptions": {"format": "png", "scale": 2},
}


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def translucent(hex_colour: str, alpha: float) -> str:
    red, green, blue = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def optimizer_colours(report: StudyReport) -> dict[str, str]:
    """Each optimizer's colour, fixed by its place in the study."""
    return {o.name: colour(i) for i, o in enumerate(report.optimizers)}


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


def plot(figure: go.Figure, div_id: str) -> str:
    """The figure as a ``<div>`` and the script that draws it (plotly.js comes with the page)."""
    return plotly.io.to_html(
        figure,
        config=PLOT_CONFIG,
        include_plotlyjs=False,
        full_html=False,
        div_id=div_id,
        default_width="100%",
    )


def layout(
    *, height: int, x_title: str, y_title: str, x_log: bool = False, y_log: bool = False
) -> dict[str, Any]:
    """What every figure shares: the look, the legend above the plot, labelled axes (whose
    type plotly infers from the data unless ``x_log`` or ``y_log``)."""
    # No template: plotly's own weigh ~10 kB per figure and a third of the render time; the
    # few settings of its white look are written out here.
    return dict(
        template="none",
        paper_bgcolor="#ffffff",
        plot_bgcolor="#ffffff",
        height=height,
        margin=dict(l=72, r=24, t=48, b=56),
        font=dict(family=FONT, size=13, color="#1d1d1f"),
        legend=dict(orientation="h", x=0, y=1.02, xanchor="left", yanchor="bottom"),
        hovermode="closest",
        hoverlabel=dict(align="left"),
        xaxis=axis(x_title, log=x_log),
        yaxis=axis(y_title, log=y_log),
    )


def axis(title: str, *, log: bool) -> dict[str, Any]:
    """An axis with its title; a log one marks every decade as a power of ten (``10⁻³``)."""
    decades = dict(type="log", dtick=1, exponentformat="power") if log else {}
    return dict(
        title=dict(text=label(title)),
        automargin=True,
        gridcolor="#ebf0f8",
        showline=True,
        linecolor="#888",
        mirror=True,
        zeroline=False,
        **decades,
    )


def best_so_far_steps(
    trials: Sequence[TrialPoint], direction: str
) -> tuple[list[tuple[float, TrialPoint]], float]:
    """The trials that set a new best, each with the epochs spent when it finished, and the
    epochs spent in all.

    Every finished trial's epochs count as spent (pruned and failed ones cost epochs too); only
    complete trials can set the best, as in Optuna.
    """
    sign = 1.0 if direction == "maximize" else -1.0
    spent = 0.0
    steps: list[tuple[float, TrialPoint]] = []
    for trial in trials:
        if trial.state not in FINISHED:
            continue
        spent += trial.epochs
        if trial.state != "complete" or not trial.has_value:
            continue
        if not steps or sign * trial.value > sign * steps[-1][1].value:  # type: ignore[operator]
            steps.append((spent, trial))
    return steps, spent


def best_so_far(report: StudyReport) -> str:
    figure = go.Figure()
    values = []
    for i, optimizer in enumerate(report.optimizers):
        steps, spent = best_so_far_steps(optimizer.trials, report.direction)
        if not steps:
            continue
        best = steps[-1][1]
        # A step line (``hv``): flat until the next improvement, then up to it; the last point
        # is the best held until now.
        xs = [x for x, _ in steps] + [spent]
        ys = [float(t.value) for _, t in steps] + [float(best.value)]  # type: ignore[arg-type]
        hover = [f"{label(optimizer.name)}: new best after {x:g} epochs<br>{_trial_hover(t)}"
                 for x, t in steps]  # fmt: skip
        hover.append(
            f"{label(optimizer.name)}: best so far after {spent:g} epochs: {number(best.value)}"
            f" (trial {best.number})"
        )
        values += ys
        figure.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines+markers",
                line=dict(shape="hv", color=colour(i), width=2),
                marker=dict(size=[6] * len(steps) + [10], color=colour(i)),
                name=label(optimizer.name),
                legendgroup=label(optimizer.name),
                meta="best-so-far",
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    if not figure.data:
        return empty("No complete trial yet: the best-so-far lines start with the first one.")
    figure.update_layout(
        layout(
            height=420,
            x_title="epochs spent (all finished search trials of the optimizer)",
            y_title=metric_label(report),
            y_log=wants_log(values, report.direction),
        )
    )
    return plot(figure, "plot-best-so-far")


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
    figure = go.Figure()
    values = []
    last_epoch = 0
    for i, optimizer in enumerate(report.optimizers):
        rows = mean_curve(optimizer.curves)
        if not rows:
            continue
        last_epoch = max(last_epoch, rows[-1][0])
        name = label(optimizer.name)
        banded = [row for row in rows if row[2] is not None]
        if banded:
            epochs = [row[0] for row in banded]
            upper = [row[3] for row in banded]
            lower = [row[2] for row in banded]
            values += [*upper, *lower]
            figure.add_trace(
                go.Scatter(
                    x=epochs + epochs[::-1],
                    y=upper + lower[::-1],
                    fill="toself",
                    fillcolor=translucent(colour(i), 0.18),
                    line=dict(width=0),
                    mode="lines",
                    hoverinfo="skip",
                    name=f"{name}: 95% interval",
                    legendgroup=name,
                    showlegend=False,
                    meta="band",
                )
            )
        seeds = max(row[4] for row in rows)
        hover = [
            f"{name}, epoch {epoch}: {number(mean)}"
            + (f"<br>95% interval [{number(low)}, {number(high)}]" if low is not None else "")
            + f"<br>{n} seed{'s' * (n != 1)}"
            for epoch, mean, low, high, n in rows
        ]
        values += [row[1] for row in rows]
        figure.add_trace(
            go.Scatter(
                x=[row[0] for row in rows],
                y=[row[1] for row in rows],
                mode="lines",
                line=dict(color=colour(i), width=2.5),
                name=f"{name} (mean of {seeds} seed{'s' * (seeds != 1)})",
                legendgroup=name,
                meta="mean",
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    if not figure.data:
        return empty(
            "No confirmed config yet: the learning curves appear as the confirmation seeds of "
            "each optimizer's best configs finish."
        )
    figure.update_layout(
        layout(
            height=420,
            x_title="epoch",
            y_title=metric_label(report),
            y_log=wants_log(values, report.direction),
        )
    )
    if last_epoch <= 10:
        figure.update_xaxes(dtick=1)  # a few epochs: whole ones, never 1.5
    note = (
        '<p class="caption">Line: mean over the seeds of the confirmed config; band: 95% '
        "Student-t interval of that mean (where at least two seeds reached the epoch).</p>"
    )
    return plot(figure, "plot-learning-curves") + note


def lr_sensitivity(report: StudyReport) -> str:
    drawn = [
        (i, o, [t for t in o.trials if t.state in FINISHED and t.lr is not None and t.lr > 0])
        for i, o in enumerate(report.optimizers)
    ]
    if not any(trials for _, _, trials in drawn):
        return empty("No finished trial yet: each trial appears here at its learning rate.")
    confirmed = _confirmed(report)
    figure = go.Figure()
    values: list[float] = []
    # A trial with no value (failed, diverged) sits on a strip of its own under the plot.
    no_value = any(not t.has_value for _, _, trials in drawn for t in trials)
    for i, optimizer, trials in drawn:
        name = label(optimizer.name)
        marks = [
            ("complete", [t for t in trials if t.state == "complete" and t.has_value],
             dict(symbol="circle", size=8, opacity=0.8)),
            ("pruned", [t for t in trials if t.state != "complete" and t.has_value],
             dict(symbol="circle-open", size=8, line=dict(width=1.5))),
            ("no-value", [t for t in trials if not t.has_value],
             dict(symbol="x-thin-open", size=9, line=dict(width=2))),
        ]  # fmt: skip
        shown = False
        for kind, points, marker in marks:
            if not points:
                continue
            ys = [0.0] * len(points) if kind == "no-value" else [float(t.value) for t in points]  # type: ignore[arg-type]
            values += [] if kind == "no-value" else ys
            figure.add_trace(
                go.Scatter(
                    x=[t.lr for t in points],
                    y=ys,
                    mode="markers",
                    yaxis="y2" if kind == "no-value" else "y",
                    marker=dict(color=colour(i), **marker),
                    name=name,
                    legendgroup=name,
                    showlegend=not shown,
                    meta=kind,
                    hovertext=[f"{name}: {_trial_hover(t)}" for t in points],
                    hovertemplate="%{hovertext}<extra></extra>",
                )
            )
            shown = True
        star = _confirmed_star(colour(i), name, confirmed.get(optimizer.name), shown)
        if star is not None:
            values += star.y
            figure.add_trace(star)
    y_log = wants_log(values, report.direction)
    figure.update_layout(
        layout(
            height=500 if no_value else 460,
            x_title="learning rate lr (log scale)",
            y_title=metric_label(report),
            x_log=True,
            y_log=y_log,
        )
    )
    if no_value:
        figure.update_layout(
            yaxis=dict(domain=[0.17, 1.0]),
            yaxis2=dict(domain=[0.0, 0.09], range=[-1, 1], tickvals=[0], ticktext=["no value"],
                        showgrid=False, zeroline=False, fixedrange=True, showline=True,
                        linecolor="#888", mirror=True),
            xaxis=dict(anchor="y2"),
        )  # fmt: skip
    counts = "".join(
        f'<li><b style="color:{colour(i)}">{esc(o.name)}</b>: '
        f"{sum(t.state == 'complete' for t in trials)} complete, "
        f"{sum(t.state == 'pruned' for t in trials)} pruned, "
        f"{sum(t.state == 'failed' for t in trials)} failed</li>"
        for i, o, trials in drawn
    )
    key = (
        '<p class="caption">Filled: a complete trial (its final value); hollow: a pruned trial '
        "(its value when it stopped); &times; on the strip below: no value (failed or diverged); "
        "star: the confirmed config, mean over its seeds with its 95% interval. Hover a mark "
        "for its config; click an optimizer in the legend to hide or show it.</p>"
    )
    return plot(figure, "plot-lr") + key + f'<ul class="counts">{counts}</ul>'


def importance_bars(report: StudyReport) -> str:
    if not report.optimizers:
        return empty("No optimizer in this study.")
    figure = go.Figure()
    notes = []
    for i, optimizer in enumerate(report.optimizers):
        result = optimizer.importance
        head = f'<b style="color:{colour(i)}">{esc(optimizer.name)}</b>: '
        if result is None:
            notes.append(f"<li>{head}not computed yet.</li>")
            continue
        if not result.importances:
            notes.append(f"<li>{head}{esc(result.reason)}</li>")
            continue
        name = label(optimizer.name)
        params = [label(param) for param in result.importances]
        shares = list(result.importances.values())
        figure.add_trace(
            go.Bar(
                x=shares,
                y=params,
                orientation="h",
                name=name,
                legendgroup=name,
                marker_color=colour(i),
                meta="importance",
                text=[f"{share:.0%}" for share in shares],
                textposition="outside",
                hovertext=[
                    f"{name}: {param} {share:.0%}"
                    for param, share in zip(params, shares, strict=True)
                ],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
        left_out = f" ({result.n_excluded} pruned or failed left out)" if result.n_excluded else ""
        notes.append(
            f"<li>{head}{esc(result.title)} over {result.n_trials} complete trials{left_out}"
            "; shares sum to 100%.</li>"
        )
    listing = f'<ul class="counts">{"".join(notes)}</ul>'
    if not figure.data:
        return listing
    categories = len({y for trace in figure.data for y in trace.y})
    figure.update_layout(
        layout(
            height=min(900, 140 + 20 * categories * len(figure.data)),
            x_title="share of the importance",
            y_title="hyperparameter",
        ),
        barmode="group",
        # Categories bottom to top: the one that mattered most overall on top.
        yaxis=dict(type="category", categoryorder="total ascending"),
        xaxis=dict(tickformat=".0%", range=[0, 1.1]),
    )
    return plot(figure, "plot-importance") + listing


def _confirmed_star(
    stroke: str, name: str, confirmed: tuple[float, OptimizerResult] | None, shown: bool
) -> go.Scatter | None:
    """An optimizer's confirmed config at its lr: a star at its mean over seeds, with its 95%
    interval (two seeds or more); ``None`` without one."""
    if confirmed is None or confirmed[1].val.mean is None or confirmed[1].config is None:
        return None
    lr, result = confirmed
    summary = result.val
    interval = summary.half_width is not None
    hover = (
        f"{name}: confirmed config, mean of {summary.n} seed{'s' * (summary.n != 1)}: "
        f"{number(summary.mean)}"
        + (f"<br>95% interval [{number(summary.ci_low)}, {number(summary.ci_high)}]"
           if interval else "")
        + f"<br>{params_text(result.config.params)}"
    )  # fmt: skip
    return go.Scatter(
        x=[lr],
        y=[summary.mean],
        mode="markers",
        error_y=dict(type="data", array=[summary.half_width], color=stroke, thickness=2, width=6)
        if interval
        else None,
        marker=dict(symbol="star", size=16, color=stroke, line=dict(color="#ffffff", width=1)),
        name=name,
        legendgroup=name,
        showlegend=not shown,
        meta="confirmed",
        hovertext=[hover],
        hovertemplate="%{hovertext}<extra></extra>",
    )


def _confirmed(report: StudyReport) -> dict[str, tuple[float, OptimizerResult]]:
    """Each optimizer's representative confirmed config, where it has one with a positive lr."""
    if report.verdict is None:
        return {}
    found = {}
    for result in report.verdict.results:
        lr = None if result.config is None else result.config.params.get("lr")
        if isinstance(lr, int | float) and not isinstance(lr, bool) and lr > 0:
            found[result.optimizer] = (float(lr), result)
    return found


def _trial_hover(trial: TrialPoint) -> str:
    """A trial for its hover label: state, cost, value, config and note (escaped)."""
    value = number(trial.value) if trial.has_value else "no value"
    text = f"trial {trial.number} ({label(trial.state)}, {trial.epochs} epochs): {value}"
    text += f"<br>{params_text(trial.params)}" if trial.params else ""
    return text + (f"<br>{label(trial.note)}" if trial.note else "")


def params_text(params: dict[str, Any]) -> str:
    """Hyperparameters as ``lr=0.01, batch_size=32``, escaped for a label or text content (not
    for an attribute)."""
    return ", ".join(
        f"{label(k)}={label(number(v) if isinstance(v, float) else v)}" for k, v in params.items()
    )
