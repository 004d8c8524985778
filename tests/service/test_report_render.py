"""The report page rendered from synthetic studies: its figures, its verdict, its empty states,
and what it makes of hostile names."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser

import numpy as np
import optuna
import plotly.offline
import pytest

from optim_core.registry import OPTIMIZERS
from service.report import (
    OptimizerReport,
    Progress,
    StudyReport,
    TrialPoint,
    render_report,
    seed_curve,
    trial_point,
    trial_points,
)
from service.report.figures import FINISHED, best_so_far_steps, mean_curve, wants_log
from service.report.page import status_label
from studies.importance import study_param_importances
from studies.verdict import ConfirmedConfig, format_mean, study_verdict

# Per optimizer: the lr of its peak, the accuracy there, how sharp the peak is (per decade),
# and the seed-to-seed spread of its confirmed config.
PROFILES = {
    "sgd": (0.1, 0.962, 0.03, 0.003),
    "momentum": (0.02, 0.975, 0.025, 0.003),
    "adam": (2e-3, 0.976, 0.02, 0.0035),
    "gd": (3.0, 0.90, 0.05, 0.004),
}
EPOCHS = 20


def synthetic_optimizer(name: str, n_trials: int, seed: int) -> tuple[OptimizerReport, list]:
    """An optimizer's search (a real Optuna study on a synthetic objective) and its seeds."""
    peak_lr, peak, sharpness, spread = PROFILES[name]
    spec = OPTIMIZERS[name]
    rng = np.random.default_rng(seed)
    low, high = (1e-3, 10.0) if name == "gd" else (1e-5, 1.0)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", low, high, log=True)
        if name != "gd":
            trial.suggest_categorical("batch_size", [16, 32, 64, 128])
        if name in ("momentum", "adam"):
            trial.suggest_float("one_minus_beta1" if name == "adam" else "one_minus_momentum",
                                1e-3, 0.5, log=True)  # fmt: skip
        distance = abs(math.log10(lr / peak_lr))
        if lr > 30 * peak_lr or distance > 2.2:
            raise optuna.TrialPruned()  # diverged, or too slow to be worth finishing
        return peak - sharpness * distance**2 + 0.002 * rng.standard_normal()

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed))
    study.optimize(objective, n_trials=n_trials, catch=())
    trials = []
    for t in study.trials:
        lr = t.params["lr"]
        diverged = t.state == optuna.trial.TrialState.PRUNED and lr > peak_lr
        state = {"COMPLETE": "complete", "PRUNED": "pruned"}[t.state.name]
        if diverged and t.number % 2 == 0:
            state = "failed"
        value = t.value if state == "complete" else (None if diverged else 0.5 + 0.01 * t.number)
        epochs = EPOCHS if state == "complete" else 1 if diverged else 4
        trials.append(TrialPoint(t.number, state, value, epochs, lr, dict(t.params),
                                 "loss diverged" if diverged else ""))  # fmt: skip
    best = sorted(
        (t for t in study.trials if t.value is not None),
        key=lambda t: -t.value,  # type: ignore[operator]
    )[:2]
    configs = []
    for rank, trial in enumerate(best):
        params = {"lr": trial.params["lr"]}
        if "batch_size" in trial.params:
            params["batch_size"] = trial.params["batch_size"]
        center = peak - 0.002 * rank
        val = tuple(float(v) for v in center + spread * rng.standard_normal(5))
        test = tuple(v - 0.004 + 0.002 * rng.standard_normal() for v in val)
        configs.append(ConfirmedConfig(trial.number, params, spec.python_line(params), val, test))
    finals = configs[0].val
    curves = [
        [
            final
            - (final - 0.1) * math.exp(-epoch / (2.5 + rng.uniform()))
            + 0.004 * rng.standard_normal()
            for epoch in range(1, EPOCHS + 1)
        ]
        for final in finals
    ]
    report = OptimizerReport(
        name=name,
        trials=trials,
        importance=study_param_importances(study),
        curves=curves,
        search=Progress(n_trials, n_trials),
        confirm=Progress(10, 10),
    )
    return report, configs


def synthetic_report(*, name: str = "digits-compare", status: str = "completed") -> StudyReport:
    optimizers, configs = [], {}
    for seed, optimizer in enumerate(PROFILES):
        report, confirmed = synthetic_optimizer(optimizer, 30, seed)
        optimizers.append(report)
        configs[optimizer] = confirmed
    verdict = study_verdict(configs, "maximize", metric="val_accuracy", test_metric="test_accuracy")
    return StudyReport(
        name=name,
        task="digits_mlp",
        metric="val_accuracy",
        direction="maximize",
        status=status,
        phase="completed" if status == "completed" else "confirming",
        search=Progress(120, 120),
        confirm=Progress(40, 40) if status == "completed" else Progress(22, 40, running=2),
        optimizers=optimizers,
        verdict=verdict,
        test_metric="test_accuracy",
        epochs=EPOCHS,
        eta_seconds=None if status == "completed" else 95.0,
        generated_at=datetime(2026, 12, 1, 15, 0, tzinfo=UTC),
        dashboard_url="http://127.0.0.1:8080/dashboard/",
    )


class Parsed(HTMLParser):
    """The tags and the classes they carry, the visible text, and each script's content."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self.inside: str | None = None  # script or style: not text
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self.inside = tag
            self.scripts += [""] if tag == "script" else []

    def handle_endtag(self, tag):
        if tag == self.inside:
            self.inside = None

    def handle_data(self, data):
        if self.inside == "script":
            self.scripts[-1] += data
        elif self.inside is None:
            self.text.append(data)

    def count(self, tag: str, css_class: str | None = None) -> int:
        return sum(
            t == tag and (css_class is None or css_class in (a.get("class") or "").split())
            for t, a in self.tags
        )


def plotly_figures(page: str) -> dict[str, tuple[list[dict], dict]]:
    """Each figure the page draws: its div's id -> (traces, layout), read from its script."""
    decoder = json.JSONDecoder()
    figures = {}
    for match in re.finditer(r'Plotly\.newPlot\(\s*"([\w-]+)",\s*', page):
        data, end = decoder.raw_decode(page, match.end())
        layout, _ = decoder.raw_decode(page, end + re.match(r",\s*", page[end:]).end())
        figures[match.group(1)] = (data, layout)
    return figures


def traces(page: str, figure: str, meta: str | None = None) -> list[dict]:
    data, _ = plotly_figures(page)[figure]
    return [t for t in data if meta is None or t.get("meta") == meta]


def render(report: StudyReport) -> str:
    """The report page with the plotly.js it inlines (once, when it draws a figure) left out of
    its ``<script>``: 4.8 MB of a library's source that names many URLs and ``javascript:``."""
    page = render_report(report)
    js = plotly.offline.get_plotlyjs()
    assert page.count(js) == (1 if "Plotly.newPlot" in page else 0)
    return page.replace(js, "")


@pytest.fixture(autouse=True)
def quiet_optuna():
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(verbosity)


@pytest.fixture(scope="module")
def finished() -> StudyReport:
    return synthetic_report()


def test_finished_study_shows_every_figure_and_the_verdict(finished):
    page = render(finished)
    parsed = Parsed(page)
    n = len(finished.optimizers)
    names = [o.name for o in finished.optimizers]
    figures = plotly_figures(page)
    assert list(figures) == ["plot-best-so-far", "plot-learning-curves", "plot-lr",
                             "plot-importance"]  # fmt: skip
    assert parsed.count("div", "plotly-graph-div") == 4
    # Best so far: a step line per optimizer, ending at its best complete value.
    lines = traces(page, "plot-best-so-far", "best-so-far")
    assert [t["name"] for t in lines] == names
    for line, optimizer in zip(lines, finished.optimizers, strict=True):
        assert line["line"]["shape"] == "hv"
        best = max(t.value for t in optimizer.trials if t.state == "complete")
        assert line["y"][-1] == best
        assert line["x"][-1] == sum(t.epochs for t in optimizer.trials)
        assert line["y"] == sorted(line["y"])  # only ever better
    # Learning curves: per optimizer a mean line over epochs and its band, in one legend group.
    means = traces(page, "plot-learning-curves", "mean")
    bands = traces(page, "plot-learning-curves", "band")
    assert [t["legendgroup"] for t in means] == [t["legendgroup"] for t in bands] == names
    assert all(t["x"] == list(range(1, EPOCHS + 1)) for t in means)
    assert all(t["fill"] == "toself" and len(t["x"]) == 2 * EPOCHS for t in bands)
    assert [t["name"] for t in means] == [f"{name} (mean of 5 seeds)" for name in names]
    # The lr figure: every finished trial at its lr on a log axis, its config on hover, and
    # each optimizer's confirmed config as a star with its interval.
    lr_traces, lr_layout = plotly_figures(page)["plot-lr"]
    assert lr_layout["xaxis"]["type"] == "log"
    for optimizer in finished.optimizers:
        drawn = [t for t in lr_traces if t["legendgroup"] == optimizer.name]
        marks = {t["meta"]: t for t in drawn}
        plotted = sum(len(marks[k]["x"]) for k in ("complete", "pruned", "no-value") if k in marks)
        assert plotted == len(optimizer.trials)
        assert len(marks["complete"]["x"]) == sum(t.state == "complete" for t in optimizer.trials)
        assert len(marks.get("no-value", {"x": []})["x"]) == sum(
            not t.has_value for t in optimizer.trials
        )
        assert [t["showlegend"] for t in drawn].count(True) == 1  # one legend entry each
        star = marks["confirmed"]
        result = finished.verdict.result(optimizer.name)
        assert star["x"] == [result.config.params["lr"]] and star["y"] == [result.val.mean]
        assert star["error_y"]["array"] == [pytest.approx(result.val.half_width)]
        trial = next(t for t in optimizer.trials if t.state == "complete")
        hover = marks["complete"]["hovertext"][0]
        assert f"trial {trial.number} (complete, {EPOCHS} epochs)" in hover
        assert all(f"{key}=" in hover for key in trial.params)
        counts = [sum(t.state == state for t in optimizer.trials) for state in FINISHED]
        assert "{}</b>: {} complete, {} pruned, {} failed".format(optimizer.name, *counts) in page
    # Importance bars: one trace per optimizer with a ranking, a bar per hyperparameter.
    bars = traces(page, "plot-importance", "importance")
    ranked = [o for o in finished.optimizers if o.importance.importances]
    assert [t["name"] for t in bars] == [o.name for o in ranked]
    for trace, optimizer in zip(bars, ranked, strict=True):
        assert trace["y"] == list(optimizer.importance.importances)
        assert sum(trace["x"]) == pytest.approx(1.0)
    assert "one searched hyperparameter or fewer (only lr): nothing to rank" in page  # gd
    # The verdict: its sentence, the test, one row per optimizer with mean, CI and the code.
    verdict = finished.verdict.verdict
    assert verdict.sentence in " ".join(parsed.text)
    assert "Welch" in verdict.sentence
    assert parsed.count("tr") == 2 * n + 1  # a figures row and a config row each
    for result in finished.verdict.results:
        row = re.search(rf'<tr class="\w+" data-optimizer="{result.optimizer}">.*?</tr>', page)
        assert row, result.optimizer
        assert format_mean(result.val) in row.group(0)
        assert f"[{result.val.ci_low:.4g}, {result.val.ci_high:.4g}]" in row.group(0)
        assert f"std {result.val.std:.2g}" in row.group(0)
        assert f"std {result.test.std:.2g}" in row.group(0)
        assert format_mean(result.test) in row.group(0)
        config = re.search(
            rf'<tr class="config \w+" data-config="{result.optimizer}">.*?</tr>', page
        )
        assert result.config.python.replace("'", "&#x27;") in config.group(0)
    # gd is far behind: it is never a leader.
    assert "gd" not in verdict.leaders
    assert 'data-optimizer="gd"' in page and '<tr class="worse" data-optimizer="gd">' in page


def test_page_is_self_contained_and_not_live_when_finished(finished):
    page = render_report(finished)
    scripts = Parsed(page).scripts
    # plotly.js once, from the installed package, then one script per figure, nothing else.
    assert scripts[0] == plotly.offline.get_plotlyjs()
    assert len(scripts) == 1 + 4
    assert all(s.strip().startswith("window.PLOTLYENV") for s in scripts[1:])
    rest = page.replace(scripts[0], "")
    assert not re.search(r"<link|<img|<iframe|src=|url\(|@import|cdn", rest, re.IGNORECASE)
    assert set(re.findall(r"https?://[^\s\"'<>]+", rest)) == {"http://127.0.0.1:8080/dashboard/"}
    assert "MathJax" not in rest and "plotlyServerURL" not in rest
    assert 'http-equiv="refresh"' not in rest
    assert "reloads itself" not in rest
    assert "Generated 2026-12-01 15:00:00 UTC" in rest
    assert len(page.encode()) < 5_500_000  # plotly.js is 4.8 MB of it


def test_running_study_says_so_and_refreshes():
    page = render(synthetic_report(status="running"))
    assert '<meta http-equiv="refresh" content="10">' in page
    assert "This study is confirming: the page reloads itself every 10 s." in page
    assert "22 / 40 trials, 2 running" in page
    assert "about 2 min" in page
    assert plotly_figures(page), "a live page draws its figures too"


def test_phase_chips_show_the_phases_the_study_has():
    def chips(page: str) -> list[tuple[str, str]]:
        bar = re.search(r'<span class="phases" aria-label="phase">(.*?)</span></p>', page)
        return re.findall(r'<span class="([a-z]*)">(\w+)</span>', bar.group(1))

    confirming = render(synthetic_report(status="running"))
    assert chips(confirming) == [("done", "searching"), ("now", "confirming"), ("", "completed")]
    base = synthetic_report()
    unconfirmed = {**base.__dict__, "confirm": Progress(0, 0), "verdict": None}
    searching = render(StudyReport(**{**unconfirmed, "status": "running", "phase": "searching"}))
    assert chips(searching) == [("now", "searching"), ("", "completed")]
    done = render(StudyReport(**unconfirmed))
    assert chips(done) == [("done", "searching"), ("now", "completed")]
    assert "confirming" not in Parsed(done).text


def test_hostile_names_are_escaped():
    # The study name's pattern forbids these, but an external study's metric and parameter
    # names are free text: none of it may end a script, open a tag or become a link.
    breakout = "</script><script>alert(1)</script>"
    evil = '<script>alert("x")</script>'
    attr = '"><img src=x onerror=alert(1)>'
    base = synthetic_report(name=breakout)
    sgd = base.optimizers[0]
    hostile_trial = TrialPoint(999, "complete", 0.9, 20, 0.01, {attr: breakout}, note=evil)
    optimizers = [
        OptimizerReport(attr, [*sgd.trials, hostile_trial], sgd.importance, sgd.curves),
        *base.optimizers[1:],
    ]
    configs = {
        attr: [ConfirmedConfig(1, {attr: evil, "lr": 0.01}, evil, (0.9, 0.91), (0.8, 0.81))],
        "adam": [ConfirmedConfig(2, {"lr": 1e-3}, None, (0.95, 0.96), ())],
    }
    report = StudyReport(
        **{
            **base.__dict__,
            "optimizers": optimizers,
            "verdict": study_verdict(configs, "maximize", metric=breakout, test_metric=attr),
            "task": evil,
            "metric": breakout,
            "dashboard_url": "javascript:alert(1)",
        }
    )
    page = render(report)
    parsed = Parsed(page)
    # Exactly plotly.js and one script per figure: nothing broke out of the figures' JSON.
    assert len(parsed.scripts) == 1 + 4 and parsed.count("script") == 5  # plotly.js left out
    assert not any("<script" in s.lower() or "</script" in s.lower() for s in parsed.scripts)
    rest = page
    for script in parsed.scripts:
        rest = rest.replace(script, "")
    assert "<script>alert" not in rest.lower() and "<img" not in rest.lower()
    assert "javascript:" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert all(not any(k.startswith("on") for k in attrs) for _, attrs in parsed.tags)
    assert breakout in " ".join(parsed.text) and evil in " ".join(parsed.text)  # shown as text
    # In the figures, plotly is given the escaped text: it shows it, it does not parse it.
    _, layout = plotly_figures(page)["plot-best-so-far"]
    assert layout["yaxis"]["title"]["text"] == (
        "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt; (validation; higher is better)"
    )
    shown = '"&gt;&lt;img src=x onerror=alert(1)&gt;'  # plotly reads no &quot;
    lr = {t["meta"]: t for t in traces(page, "plot-lr") if t["legendgroup"] == shown}
    hostile = next(t for t in lr["complete"]["hovertext"] if "trial 999" in t)
    assert f"{shown}=&lt;/script&gt;" in hostile
    assert '&lt;script&gt;alert("x")&lt;/script&gt;' in hostile  # the note
    assert lr["complete"]["name"] == shown


def test_empty_study_renders_its_empty_states_without_plotly():
    report = StudyReport(
        name="fresh",
        task="digits_mlp",
        metric="val_accuracy",
        direction="maximize",
        status="queued",
        phase="searching",
        search=Progress(0, 80),
        confirm=Progress(0, 30),
        optimizers=[OptimizerReport("sgd"), OptimizerReport("adam")],
    )
    page = render(report)
    assert not plotly_figures(page) and "<script" not in page  # nor plotly.js
    assert "No complete trial yet" in page
    assert "No confirmed config yet" in page
    assert "No finished trial yet" in page
    assert "not computed yet." in page
    assert "No verdict yet: it comes with the confirmation" in page
    assert "0 / 80 trials" in page
    assert 'http-equiv="refresh"' in page
    # No optimizer at all, confirmation off.
    bare = render(StudyReport(**{**report.__dict__, "optimizers": [], "confirm": Progress(0, 0)}))
    assert "Confirmation is off for this study" in bare
    assert "off (no seed re-runs)" in bare
    assert "No optimizer in this study." in bare


def test_pruned_only_optimizer_and_one_seed_render():
    trials = [TrialPoint(i, "pruned", 0.3 + i / 100, 2, 10 ** (-i / 2)) for i in range(4)]
    trials.append(TrialPoint(4, "failed", None, 1, 1.0, note="loss was nan"))
    trials.append(TrialPoint(5, "running", None, 0, 0.5))
    configs = {
        "adam": [ConfirmedConfig(3, {"lr": 1e-3}, None, (0.95,), (0.94,))],
        "sgd": [],
    }
    report = StudyReport(
        name="thin",
        task="wine_mlp",
        metric="val_loss",
        direction="minimize",
        status="completed",
        phase="completed",
        search=Progress(6, 6),
        confirm=Progress(1, 10),
        optimizers=[OptimizerReport("sgd", trials), OptimizerReport("adam", curves=[[0.5, 0.3]])],
        verdict=study_verdict(configs, "minimize", metric="val_loss"),
    )
    page = render(report)
    marks = {t["meta"]: t for t in traces(page, "plot-lr") if t["legendgroup"] == "sgd"}
    assert set(marks) == {"pruned", "no-value"}
    assert len(marks["pruned"]["x"]) == 4 and marks["pruned"]["showlegend"]
    assert (
        marks["no-value"]["yaxis"] == "y2" and "loss was nan" in marks["no-value"]["hovertext"][0]
    )
    assert "4 pruned, 1 failed" in page
    star = traces(page, "plot-lr", "confirmed")[0]
    assert star["legendgroup"] == "adam" and "error_y" not in star  # one seed: no interval
    assert "No complete trial yet" in page  # pruned trials never set the best
    # One seed: a mean line and no band.
    assert len(traces(page, "plot-learning-curves", "mean")) == 1
    assert not traces(page, "plot-learning-curves", "band")
    assert "one seed: no interval" in page
    assert "no finished seed" in page
    assert "Only adam has finished seeds" in page


def test_verdict_table_lists_every_optimizer_whatever_its_status(finished):
    """An optimizer left out of the comparison, one without seeds, one missing from the verdict,
    and statuses the page has no words for yet: every one gets its row, its seeds and a
    readable status."""

    def row(page: str, optimizer: str) -> str:
        rows = (
            rf'<tr class="[\w ]+" data-optimizer="{optimizer}">.*?</tr>\s*'
            rf'<tr class="config[\w ]*" data-config="{optimizer}">.*?</tr>'
        )
        found = re.search(rows, page)
        assert found, optimizer
        return found.group(0)

    base = finished.verdict
    later = {"momentum": "stopped", "sgd": "a_later_status", "gd": "not_compared"}
    standings = [
        replace(s, status=later[s.optimizer], comparison=None) if s.optimizer in later else s
        for s in base.verdict.standings
    ]
    verdict = replace(base, verdict=replace(base.verdict, standings=standings))
    page = render(StudyReport(**{**finished.__dict__, "verdict": verdict}))
    assert page.count("data-optimizer=") == len(finished.optimizers)
    assert '<span class="tag stopped">stopped early</span>' in row(page, "momentum")
    assert '<span class="tag a_later_status">a later status</span>' in row(page, "sgd")
    gd = row(page, "gd")
    assert '<span class="tag not_compared">not compared</span>' in gd
    assert "<td class=num>5</td><td class=num>not compared</td>" in gd  # its seeds
    assert "optim_core.SGD(" in gd  # and its config
    # Without a finished seed: listed last, 0 seeds, not compared. An optimizer of the study
    # the verdict does not know: its finished confirmation seeds, not compared.
    configs = {"sgd": [ConfirmedConfig(1, {"lr": 0.1}, None, (0.9, 0.91, 0.92))], "adam": []}
    thin = StudyReport(
        **{
            **finished.__dict__,
            "verdict": study_verdict(configs, "maximize"),
            "optimizers": finished.optimizers[:3],
        }
    )
    page = render(thin)
    assert page.count("data-optimizer=") == 3
    adam = row(page, "adam")
    assert '<span class="tag no_seeds">no seeds yet</span>' in adam
    assert "<td class=num>0</td><td class=num>not compared</td>" in adam
    assert "no finished seed" in adam
    momentum = row(page, "momentum")
    assert '<span class="tag not_compared">not compared</span>' in momentum
    assert "<td class=num>10</td><td class=num>not compared</td>" in momentum
    assert "10 finished seeds, too few to compare" in momentum
    assert status_label("a_status_from_later") == "a status from later"


def test_best_so_far_steps_over_epochs_spent():
    trials = [
        TrialPoint(0, "pruned", 0.5, 3),
        TrialPoint(1, "complete", 0.80, 10),
        TrialPoint(2, "running", None, 4),
        TrialPoint(3, "complete", 0.70, 10),
        TrialPoint(4, "failed", None, 1),
        TrialPoint(5, "complete", 0.90, 10),
        TrialPoint(6, "pruned", 0.95, 2),
    ]
    steps, spent = best_so_far_steps(trials, "maximize")
    assert [(x, t.number) for x, t in steps] == [(13, 1), (34, 5)] and spent == 36
    steps, spent = best_so_far_steps(trials, "minimize")
    assert [(x, t.number) for x, t in steps] == [(13, 1), (23, 3)] and spent == 36


def test_mean_curve_has_an_interval_only_where_two_seeds_reached():
    rows = mean_curve([[1.0, 2.0, 3.0], [3.0, 4.0]])
    assert [(epoch, mean, n) for epoch, mean, _, _, n in rows] == [
        (1, 2.0, 2), (2, 3.0, 2), (3, 3.0, 1),
    ]  # fmt: skip
    # s = sqrt(2), half width = t(0.975, 1) * s / sqrt(2) = 12.7062...
    assert rows[0][2] == pytest.approx(2.0 - 12.706204736)
    assert rows[2][2] is None and rows[2][3] is None


def test_losses_spanning_decades_are_drawn_on_a_log_axis():
    assert wants_log([1e-3, 0.5, 2.0], "minimize")
    assert not wants_log([0.2, 0.5], "minimize")
    assert not wants_log([1e-3, 2.0], "maximize")
    trials = [TrialPoint(i, "complete", 10.0 ** (1 - i), 5, 10 ** (-i / 2)) for i in range(5)]
    report = StudyReport(
        name="bowl",
        task="rosenbrock",
        metric="loss",
        direction="minimize",
        status="running",
        phase="searching",
        search=Progress(5, 10),
        confirm=Progress(0, 0),
        optimizers=[OptimizerReport("adam", trials)],
    )
    page = render(report)
    traces_, layout = plotly_figures(page)["plot-best-so-far"]
    assert layout["yaxis"]["type"] == "log" and layout["yaxis"]["exponentformat"] == "power"
    assert layout["yaxis"]["title"]["text"] == "loss (validation; lower is better)"
    # The best-so-far line falls at every trial: a step per improvement, and where it stands.
    assert traces_[0]["x"] == [5, 10, 15, 20, 25, 25]
    assert plotly_figures(page)["plot-lr"][1]["yaxis"]["type"] == "log"
    # Accuracies stay linear.
    _, layout = plotly_figures(render(synthetic_report()))["plot-best-so-far"]
    assert "type" not in layout["yaxis"]


def test_a_real_study_s_trials_become_report_points():
    from studies import run_study

    study = run_study(
        "rosenbrock", "sgd", n_trials=10, epochs=4, sampler="random", pruner="none",
        overrides={"lr": {"low": 1e-4, "high": 0.1, "log": True}},
    )  # fmt: skip
    points = trial_points(reversed(study.trials))
    assert [p.number for p in points] == sorted(p.number for p in points)
    by_state = {state: [p for p in points if p.state == state] for state in ("complete", "pruned")}
    assert by_state["complete"] and by_state["pruned"], [t.state for t in study.trials]
    for point, trial in zip(points, sorted(study.trials, key=lambda t: t.number), strict=True):
        assert point.lr == trial.user_attrs["hyperparameters"]["lr"]
        assert point.epochs == trial.user_attrs["epochs_run"]
        if point.state == "complete":
            assert point.value == trial.value and point.note == ""
            assert seed_curve(trial, "loss") == [trial.intermediate_values[e] for e in (1, 2, 3, 4)]
        else:
            assert point.note == trial.user_attrs["pruned_reason"]
            assert len(seed_curve(trial, "loss")) <= point.epochs
    report = StudyReport(
        name="rosenbrock-sgd", task="rosenbrock", metric="loss", direction="minimize",
        status="completed", phase="completed", search=Progress(10, 10), confirm=Progress(0, 0),
        optimizers=[OptimizerReport("sgd", points)],
    )  # fmt: skip
    marks = {t["meta"]: t for t in traces(render(report), "plot-lr")}
    assert sum(len(t["x"]) for t in marks.values()) == len(points)
    assert len(marks["complete"]["x"]) == len(by_state["complete"])


def test_trial_point_of_each_state():
    distributions = {"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)}
    attrs = {"hyperparameters": {"lr": 0.01, "momentum": 0.9}, "epochs_run": 3}
    pruned = optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED, params={"lr": 0.01}, distributions=distributions,
        intermediate_values={1: 0.5, 3: 0.7, 2: 0.6},
        user_attrs={**attrs, "pruned_reason": "pruned by MedianPruner at epoch 3"},
    )  # fmt: skip
    point = trial_point(pruned)
    assert (point.state, point.value, point.epochs, point.lr) == ("pruned", 0.7, 3, 0.01)
    assert point.params == {"lr": 0.01, "momentum": 0.9}
    assert point.note == "pruned by MedianPruner at epoch 3"
    failed = optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL, params={"lr": 0.5}, distributions=distributions,
        user_attrs={"error": "RuntimeError: boom"},
    )  # fmt: skip
    point = trial_point(failed)
    assert (point.state, point.value, point.epochs, point.lr) == ("failed", None, 0, 0.5)
    assert point.note == "RuntimeError: boom"
    curves = optuna.trial.create_trial(
        value=0.9, params={"lr": 0.01}, distributions=distributions,
        user_attrs={"curves": {"val_accuracy": [0.5, 0.8, float("nan"), 0.9]}},
    )  # fmt: skip
    assert seed_curve(curves, "val_accuracy") == [0.5, 0.8]
