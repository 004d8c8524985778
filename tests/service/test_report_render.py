"""The report page rendered from synthetic studies: its figures, its verdict, its empty states,
and what it makes of hostile names."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from html.parser import HTMLParser

import numpy as np
import optuna
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
from service.report.figures import best_so_far_points, mean_curve, wants_log
from service.report.svg import Scale
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
    """Counts of tags and the classes they carry, and the visible text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def count(self, tag: str, css_class: str | None = None) -> int:
        return sum(
            t == tag and (css_class is None or css_class in (a.get("class") or "").split())
            for t, a in self.tags
        )


@pytest.fixture(autouse=True)
def quiet_optuna():
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(verbosity)


@pytest.fixture(scope="module")
def finished() -> StudyReport:
    return synthetic_report()


def panel_svgs(page: str) -> list[str]:
    return re.findall(r'<svg class="chart lr-panel".*?</svg>', page, flags=re.DOTALL)


def test_finished_study_shows_every_figure_and_the_verdict(finished):
    page = render_report(finished)
    parsed = Parsed(page)
    n = len(finished.optimizers)
    # One line per optimizer in best-so-far and in the learning curves, a band per curve.
    assert parsed.count("polyline", "series") == 2 * n
    assert parsed.count("polygon", "band") == n
    # One lr panel per optimizer, each with one marker per finished trial.
    panels = panel_svgs(page)
    assert len(panels) == n
    for optimizer, panel in zip(finished.optimizers, panels, strict=True):
        finished_trials = [t for t in optimizer.trials if t.state != "running"]
        assert panel.count('class="point ') == len(finished_trials)
        assert panel.count("point-filled") == sum(t.state == "complete" for t in finished_trials)
        assert panel.count("point-cross") == sum(not t.has_value for t in finished_trials)
        assert panel.count('class="marker-line"') == 1  # the confirmed config's lr
    # Importance bars: one per hyperparameter that was ranked.
    ranked = sum(len(o.importance.importances) for o in finished.optimizers)
    assert parsed.count("rect", "bar") == ranked
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


def test_page_works_offline_and_is_not_live_when_finished(finished):
    page = render_report(finished)
    assert not re.search(r"<script|<link|<img|<iframe|src=|url\(|@import", page, re.IGNORECASE)
    urls = set(re.findall(r"https?://[^\s\"'<>]+", page))
    assert urls <= {"http://www.w3.org/2000/svg", "http://127.0.0.1:8080/dashboard/"}
    assert 'http-equiv="refresh"' not in page
    assert "reloads itself" not in page
    assert "Generated 2026-12-01 15:00:00 UTC" in page


def test_running_study_says_so_and_refreshes():
    page = render_report(synthetic_report(status="running"))
    assert '<meta http-equiv="refresh" content="10">' in page
    assert "This study is confirming: the page reloads itself every 10 s." in page
    assert '<span class="now">confirming</span>' in page
    assert "22 / 40 trials, 2 running" in page
    assert "about 2 min" in page


def test_hostile_names_are_escaped():
    evil = '<script>alert("x")</script>'
    attr = '"><img src=x onerror=alert(1)>'
    base = synthetic_report(name=evil)
    sgd = base.optimizers[0]
    hostile_trial = TrialPoint(999, "complete", 0.9, 20, 0.01, {attr: attr}, note=evil)
    optimizers = [
        OptimizerReport(attr, [*sgd.trials, hostile_trial], sgd.importance, sgd.curves),
        *base.optimizers[1:],
    ]
    configs = {
        attr: [ConfirmedConfig(1, {attr: evil}, evil, (0.9, 0.91), (0.8, 0.81))],
        "adam": [ConfirmedConfig(2, {"lr": 1e-3}, None, (0.95, 0.96), ())],
    }
    report = StudyReport(
        **{
            **base.__dict__,
            "optimizers": optimizers,
            "verdict": study_verdict(configs, "maximize", metric=evil, test_metric=attr),
            "task": evil,
            "metric": evil,
            "dashboard_url": "javascript:alert(1)",
        }
    )
    page = render_report(report)
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert "javascript:" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    parsed = Parsed(page)
    assert all(not any(k.startswith("on") for k in attrs) for _, attrs in parsed.tags)
    assert evil in " ".join(parsed.text)  # shown to the reader as text


def test_empty_study_renders_its_empty_states():
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
    page = render_report(report)
    parsed = Parsed(page)
    assert parsed.count("polyline") == 0 and parsed.count("circle") == 0
    assert "No complete trial yet" in page
    assert "No confirmed config yet" in page
    assert "No finished trial yet" in page
    assert "Not computed yet." in page
    assert "No verdict yet: it comes with the confirmation" in page
    assert "0 / 80 trials" in page
    assert 'http-equiv="refresh"' in page
    # No optimizer at all, confirmation off.
    bare = render_report(
        StudyReport(**{**report.__dict__, "optimizers": [], "confirm": Progress(0, 0)})
    )
    assert "Confirmation is off for this study" in bare
    assert "off (no seed re-runs)" in bare


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
    page = render_report(report)
    panel = panel_svgs(page)[0]
    assert panel.count("point-hollow") == 4 and panel.count("point-cross") == 1
    assert "4 pruned, 1 failed" in panel
    assert "No complete trial yet" in page  # pruned trials never set the best
    assert "one seed: no interval" in page
    assert "no finished seed" in page
    assert "Only adam has finished seeds" in page


def test_best_so_far_is_a_step_line_over_epochs_spent():
    trials = [
        TrialPoint(0, "pruned", 0.5, 3),
        TrialPoint(1, "complete", 0.80, 10),
        TrialPoint(2, "running", None, 4),
        TrialPoint(3, "complete", 0.70, 10),
        TrialPoint(4, "failed", None, 1),
        TrialPoint(5, "complete", 0.90, 10),
        TrialPoint(6, "pruned", 0.95, 2),
    ]
    assert best_so_far_points(trials, "maximize") == [
        (13, 0.80), (34, 0.80), (34, 0.90), (36, 0.90),
    ]  # fmt: skip
    assert best_so_far_points(trials, "minimize") == [
        (13, 0.80), (23, 0.80), (23, 0.70), (36, 0.70),
    ]  # fmt: skip


def test_mean_curve_has_an_interval_only_where_two_seeds_reached():
    rows = mean_curve([[1.0, 2.0, 3.0], [3.0, 4.0]])
    assert [(epoch, mean, n) for epoch, mean, _, _, n in rows] == [
        (1, 2.0, 2), (2, 3.0, 2), (3, 3.0, 1),
    ]  # fmt: skip
    # s = sqrt(2), half width = t(0.975, 1) * s / sqrt(2) = 12.7062...
    assert rows[0][2] == pytest.approx(2.0 - 12.706204736)
    assert rows[2][2] is None and rows[2][3] is None


def test_scales_have_readable_ticks():
    log = Scale.fit([3e-5, 0.2], 0, 100, log=True)
    assert (log.low, log.high) == pytest.approx((1e-5, 1.0))
    assert [label for _, label in log.ticks()] == ["10⁻⁵", "10⁻⁴", "10⁻³", "10⁻²", "10⁻¹", "1"]
    assert log(1e-5) == 0 and log(1.0) == pytest.approx(100)
    linear = Scale.fit([0.912, 0.978], 300, 0)
    assert [label for _, label in linear.ticks()] == ["0.90", "0.92", "0.94", "0.96", "0.98"]
    flat = Scale.fit([0.5, 0.5], 0, 10)
    assert flat.low < 0.5 < flat.high


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
    page = render_report(report)
    assert "loss (validation; lower is better)" in page
    for label in ("10⁻³", "10⁻²", "10⁻¹", ">1<", ">10<"):
        assert label in page
    # The best-so-far line falls at every trial: two points per improvement after the first.
    line = re.search(r'<polyline class="series"[^>]*points="([^"]+)"', page).group(1)
    assert len(line.split()) == 1 + 2 * 4


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
    panel = panel_svgs(render_report(report))[0]
    assert panel.count('class="point ') == len(points)
    assert panel.count("point-filled") == len(by_state["complete"])


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
