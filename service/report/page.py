"""The report page: one self-contained HTML document (inline CSS, and plotly.js inlined once for
its figures: nothing is fetched from anywhere).

It answers first (the verdict and its table), then shows why: the search, the learning curves,
the learning-rate sensitivity and which hyperparameters mattered. A live study's page says so
and reloads itself with a meta refresh.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

import plotly.offline

from service.report.data import PHASES, OptimizerReport, Progress, StudyReport
from service.report.figures import (
    best_so_far,
    importance_bars,
    learning_curves,
    lr_sensitivity,
    optimizer_colours,
    params_text,
)
from service.report.markup import esc, number
from service.vocabulary import StudyPhase
from studies.verdict import (
    TEST,
    OptimizerResult,
    Standing,
    StudyVerdict,
    Summary,
    format_mean,
    summarize,
)

DASH = "&ndash;"
# Every status a verdict's standing may carry, in words; any other one is shown readably too
# (``status_label``), never dropped.
STATUS_LABELS = {
    "best": "best mean",
    "tied": "tied",
    "worse": "worse",
    "no_seeds": "no seeds yet",
    "not_compared": "not compared",
    "stopped": "stopped early",
}
NOT_COMPARED = "not_compared"

CSS = """
:root { color-scheme: light; --ink: #1d1d1f; --muted: #5b5b66; --line: #dcdce3;
  --card: #ffffff; --bg: #f4f5f7; --accent: #0b5cad; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 20px 48px; }
header h1 { margin: 0 0 4px; font-size: 26px; word-break: break-word; }
.meta { color: var(--muted); margin: 0 0 10px; }
.meta b { color: var(--ink); font-weight: 600; }
.badge { display: inline-block; padding: 1px 10px; border-radius: 999px; font-size: 13px;
  font-weight: 600; background: #e8e8ee; color: #333; }
.badge.running, .badge.queued { background: #fff1cc; color: #7a5200; }
.badge.completed { background: #dcf3e4; color: #0d5a2c; }
.badge.failed, .badge.stopped { background: #fde2e1; color: #8a1c16; }
.phases { display: inline-flex; gap: 4px; margin-left: 10px; vertical-align: middle; }
.phases span { padding: 1px 9px; border-radius: 4px; font-size: 13px; color: var(--muted);
  border: 1px solid var(--line); background: #fff; }
.phases span.done { color: #0d5a2c; border-color: #b9e2c7; }
.phases span.now { color: #fff; background: var(--accent); border-color: var(--accent); }
.progress { display: grid; grid-template-columns: max-content 240px max-content; gap: 4px 12px;
  align-items: center; margin: 12px 0 0; font-size: 14px; }
.bar { height: 10px; background: #e6e6ec; border-radius: 5px; overflow: hidden; }
.bar i { display: block; height: 100%; background: var(--accent); }
.live { margin: 14px 0 0; padding: 8px 12px; border-left: 4px solid #e0a400;
  background: #fff8e1; border-radius: 4px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 16px 20px 18px; margin: 18px 0 0; }
section h2 { margin: 0 0 4px; font-size: 19px; }
.lead { margin: 0 0 12px; color: var(--muted); }
.sentence { font-size: 17px; margin: 6px 0 12px; padding: 10px 14px; border-radius: 6px;
  background: #eef5fd; border: 1px solid #cfe1f6; }
.sentence.winner { background: #e9f7ee; border-color: #bfe5cb; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 7px 9px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
tr[data-optimizer] td { border-bottom: none; padding-bottom: 2px; }
tr.config td { padding-top: 0; padding-bottom: 9px; }
th { font-weight: 600; color: var(--muted); font-size: 13px; white-space: nowrap; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.worse td { color: var(--muted); }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px;
  margin-right: 6px; vertical-align: -1px; }
.ci { color: var(--muted); font-size: 12px; display: block; }
.tag { font-size: 12px; font-weight: 600; padding: 1px 7px; border-radius: 4px;
  white-space: nowrap; }
.tag.best { background: #dcf3e4; color: #0d5a2c; }
.tag.tied { background: #e6effa; color: #0b4a8a; }
.tag.worse { background: #f1f1f4; color: #55555f; }
.tag.no_seeds, .tag.not_compared, .tag.stopped { background: #fff1cc; color: #7a5200; }
code { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: #f3f3f6; padding: 2px 6px; border-radius: 4px; word-break: break-all;
  margin-left: 8px; }
.params { font-size: 13px; }
.counts { margin: 6px 0 0; padding-left: 20px; color: var(--muted); font-size: 13px; }
.caption { color: var(--muted); font-size: 13px; margin: 6px 0 0; }
.empty { color: var(--muted); font-style: italic; margin: 8px 0; }
footer { color: var(--muted); font-size: 13px; margin-top: 18px; }
a { color: var(--accent); }
"""


def render_report(data: StudyReport) -> str:
    """The report of one study as a self-contained HTML page.

    Every piece of user input (study name, metric, parameters, notes ...) is escaped, in the
    markup and in the figures' data; the page loads nothing from anywhere: plotly.js, from the
    installed ``plotly`` package, is inlined once when there is a figure to draw.
    """
    refresh = (
        f'<meta http-equiv="refresh" content="{max(2, int(data.refresh_seconds))}">'
        if data.live
        else ""
    )
    body = (
        f"{_header(data)}"
        f"{_verdict_section(data)}"
        + _section(
            "search",
            "The search",
            "The best validation figure each optimizer had found, against the epochs its "
            "trials had cost so far: who gets there, and how fast.",
            best_so_far(data),
        )
        + _section(
            "curves",
            "Learning curves of the confirmed configs",
            "Each optimizer's representative config, re-trained on fresh seeds (new "
            "initialisation and batch order, same data splits).",
            learning_curves(data),
        )
        + _section(
            "lr",
            "Sensitivity to the learning rate",
            "Every search trial at its learning rate: a wide plateau forgives a rough lr, a "
            "narrow peak needs tuning.",
            lr_sensitivity(data),
        )
        + _section(
            "importance",
            "Which hyperparameters mattered",
            "How much each searched hyperparameter separates an optimizer's best trials from "
            "the rest.",
            importance_bars(data),
        )
        + _footer(data)
    )
    # Each figure's own script draws it as the page is read, so plotly.js comes first. A page
    # with nothing to draw yet (a fresh study reloading every few seconds) goes without it.
    plotly_js = (
        f"<script>{plotly.offline.get_plotlyjs()}</script>"
        if 'class="plotly-graph-div"' in body
        else ""
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{refresh}<title>{esc(data.name)}: which optimizer is best</title>"
        f"<style>{CSS}</style>{plotly_js}</head><body><main>{body}</main></body></html>\n"
    )


def _header(data: StudyReport) -> str:
    better = "higher" if data.direction == "maximize" else "lower"
    epochs = f" · <b>{esc(data.epochs)}</b> epochs per trial" if data.epochs else ""
    meta = (
        f'<p class="meta">task <b>{esc(data.task)}</b> · metric <b>{esc(data.metric)}</b> '
        f"({better} is better){epochs} · {len(data.optimizers)} optimizer"
        f"{'s' * (len(data.optimizers) != 1)}</p>"
    )
    phases = "".join(
        f'<span class="{state}">{esc(phase)}</span>' for phase, state in _phase_chips(data)
    )
    status = (
        f'<p><span class="badge {esc(data.status)}">{esc(data.status)}</span>'
        f'<span class="phases" aria-label="phase">{phases}</span></p>'
    )
    rows = _progress_row("Search", data.search)
    rows += (
        _progress_row("Confirmation", data.confirm)
        if data.confirm.total > 0
        else "<span>Confirmation</span><span>off (no seed re-runs)</span><span></span>"
    )
    eta = ""
    if data.live and data.eta_seconds is not None and math.isfinite(data.eta_seconds):
        left = esc(_duration(data.eta_seconds))
        eta = f"<span>Time left</span><span>about {left}</span><span></span>"
    live = (
        f'<p class="live">This study is {esc(data.phase if data.phase in PHASES else data.status)}'
        f": the page reloads itself every {max(2, int(data.refresh_seconds))} s.</p>"
        if data.live
        else ""
    )
    return (
        f"<header><h1>{esc(data.name)}</h1>{meta}{status}"
        f'<div class="progress">{rows}{eta}</div>{live}</header>'
    )


def _phase_chips(data: StudyReport) -> list[tuple[str, str]]:
    """The phases this study has, each ``done``, ``now`` or ahead (``""``): a study without
    confirmation never confirms."""
    phases = [phase for phase in PHASES if phase != StudyPhase.CONFIRMING or data.confirm.total > 0]
    now = phases.index(data.phase) if data.phase in phases else -1
    return [
        (phase, "now" if i == now else "done" if i < now else "") for i, phase in enumerate(phases)
    ]


def _progress_row(label: str, progress: Progress) -> str:
    running = f", {progress.running} running" if progress.running else ""
    return (
        f"<span>{esc(label)}</span>"
        f'<span class="bar" role="progressbar" aria-valuenow="{progress.done}" '
        f'aria-valuemax="{progress.total}"><i style="width:{progress.fraction * 100:.1f}%"></i>'
        f"</span><span>{progress.done} / {progress.total} trials{running}</span>"
    )


def _verdict_section(data: StudyReport) -> str:
    if data.verdict is None:
        if data.confirm.total == 0:
            text = (
                "Confirmation is off for this study, so no config was re-trained on fresh "
                "seeds: there is no verdict with confidence. The single-seed figures are in the "
                "plots below."
            )
        else:
            text = (
                "No verdict yet: it comes with the confirmation, when each optimizer's best "
                "configs have been re-trained on fresh seeds."
            )
        body = f'<p class="sentence" id="verdict-sentence">{esc(text)}</p>'
        return _section("verdict", "Verdict", "", body)
    verdict = data.verdict.verdict
    colours = optimizer_colours(data)
    sentence_class = "sentence winner" if verdict.outcome == "winner" else "sentence"
    test_metric = data.verdict.test_metric or data.test_metric or "test metric"
    head = (
        "<tr><th>#</th><th>optimizer</th><th>verdict</th>"
        f"<th>{esc(data.metric)}: mean ± 95% CI</th>"
        f"<th>{esc(test_metric)}: mean ± 95% CI</th><th>seeds</th>"
        '<th title="against the optimizer that beats it most clearly">'
        f"{'p (race, at its look)' if verdict.race else 'p (Holm, all pairs)'}</th></tr>"
    )
    rows = "".join(
        _verdict_row(result, standing, seeds, verdict.outcome, colours)
        for result, standing, seeds in _verdict_rows(data.verdict, data.optimizers)
    )
    body = (
        f'<p class="{sentence_class}" id="verdict-sentence">{esc(verdict.sentence)}</p>'
        f'<div class="table-wrap"><table id="verdict-table"><thead>{head}</thead>'
        f"<tbody>{rows}</tbody></table></div>"
        f'<p class="caption">Test: {esc(verdict.test or TEST)}, at {1 - verdict.alpha:.0%}. '
        "Intervals: "
        f"Student-t, {verdict.confidence:.0%}, over the seeds of each optimizer's confirmed "
        "config with the best mean. The test metric is shown, not used to choose.</p>"
    )
    return _section(
        "verdict",
        "Verdict",
        "Each optimizer's best confirmed config, re-trained on fresh seeds, with its spread.",
        body,
    )


def status_label(status: str) -> str:
    """A standing's status in words: a status the page has no words for yet reads as itself."""
    return STATUS_LABELS.get(status, status.replace("_", " "))


def _verdict_rows(
    verdict: StudyVerdict, optimizers: Sequence[OptimizerReport]
) -> list[tuple[OptimizerResult, Standing, int]]:
    """Every optimizer of the study with its result, its standing and its finished seeds: the
    verdict's in its order, then any optimizer the verdict leaves out, as not compared."""
    standings = {s.optimizer: s for s in verdict.verdict.standings}
    rows = []
    for result in verdict.results:
        standing = standings.get(result.optimizer) or Standing(
            result.optimizer, None, result.val, NOT_COMPARED
        )
        rows.append((result, standing, result.val.n))
    listed = {result.optimizer for result in verdict.results}
    for optimizer in optimizers:
        if optimizer.name in listed:
            continue
        nothing = summarize(())
        result = OptimizerResult(optimizer.name, None, nothing, nothing)
        seeds = optimizer.confirm.done if optimizer.confirm is not None else 0
        rows.append((result, Standing(optimizer.name, None, nothing, NOT_COMPARED), seeds))
    return rows


def _verdict_row(
    result: OptimizerResult,
    standing: Standing,
    seeds: int,
    outcome: str,
    colours: dict[str, str],
) -> str:
    tag = status_label(standing.status)
    if standing.status == "best":
        tag = {"winner": "winner", "single": "only one"}.get(outcome, "best mean, tied")
    comparison = standing.comparison
    if comparison is None:
        p_value = DASH if standing.status == "best" else "not compared"
    elif comparison.p_adjusted is None:
        p_value = f'<span title="{esc(comparison.note)}">untestable</span>'
    else:
        p_value = "&lt; 0.001" if comparison.p_adjusted < 0.001 else f"{comparison.p_adjusted:.3f}"
    config = result.config
    if config is None:
        seen = f"{seeds} finished seed{'s' * (seeds != 1)}, too few to compare"
        config_cell = f'<span class="empty">{seen if seeds else "no finished seed"}</span>'
    else:
        params = params_text(config.params)
        code = f" <code>{esc(config.python)}</code>" if config.python else ""
        config_cell = f'<span class="params">{params or "defaults"}</span>{code}'
    swatch = colours.get(result.optimizer, "#888888")
    return (
        f'<tr class="{esc(standing.status)}" data-optimizer="{esc(result.optimizer)}">'
        f"<td class=num>{standing.rank or DASH}</td>"
        f'<td><span class="swatch" style="background:{swatch}"></span>'
        f"<b>{esc(result.optimizer)}</b></td>"
        f'<td><span class="tag {esc(standing.status)}">{esc(tag)}</span></td>'
        f"<td class=num>{_mean_ci(result.val)}</td>"
        f"<td class=num>{_mean_ci(result.test)}</td>"
        f"<td class=num>{seeds}</td>"
        f"<td class=num>{p_value}</td></tr>"
        f'<tr class="config {esc(standing.status)}" data-config="{esc(result.optimizer)}">'
        f'<td></td><td colspan="6">{config_cell}</td></tr>'
    )


def _mean_ci(summary: Summary) -> str:
    if summary.mean is None:
        return DASH
    if summary.half_width is None:
        return f'{number(summary.mean)}<span class="ci">one seed: no interval</span>'
    return (
        f"{esc(format_mean(summary))}"
        f'<span class="ci">[{number(summary.ci_low)}, {number(summary.ci_high)}] · '
        f"std {number(summary.std, 2)}</span>"
    )


def _section(anchor: str, title: str, lead: str, body: str) -> str:
    lead_html = f'<p class="lead">{esc(lead)}</p>' if lead else ""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{lead_html}{body}</section>'


def _footer(data: StudyReport) -> str:
    when = data.generated_at or datetime.now(UTC)
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    link = ""
    if data.dashboard_url and urlsplit(data.dashboard_url).scheme in ("http", "https"):
        link = f' · <a href="{esc(data.dashboard_url)}">this study in optuna-dashboard</a>'
    return f"<footer>Generated {esc(when.strftime('%Y-%m-%d %H:%M:%S'))} UTC by hpt{link}.</footer>"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
