"""The report as a person sees it: the page of a finished study rendered by headless Chromium.

The screenshot is kept in test-artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import optuna
import pytest

from service.report import render_report
from tests.deploy.compose import REPO_ROOT, require_tool
from tests.deploy.test_dashboard_browser import chromium_binary, visible_text
from tests.service.test_report_render import synthetic_report

ARTIFACTS = REPO_ROOT / "test-artifacts"


def chromium_dom(chromium: str, page: Path, profile: Path, screenshot: Path | None = None) -> str:
    """The DOM Chromium builds from ``page`` (a file, opened offline), and its screenshot."""
    shot = [f"--screenshot={screenshot}"] if screenshot is not None else []
    result = subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={profile}", "--window-size=1280,3100",
            "--virtual-time-budget=5000", *shot, "--dump-dom", page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"chromium failed:\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture
def chromium() -> str:
    return require_tool(
        chromium_binary(), "Chromium", "make test installs Debian's chromium with apt"
    )


@pytest.fixture(autouse=True)
def quiet_optuna():
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(verbosity)


@pytest.mark.browser
def test_report_of_a_finished_study_shows_its_plots_and_verdict(tmp_path: Path, chromium: str):
    report = synthetic_report()
    page = tmp_path / "report.html"
    page.write_text(render_report(report), encoding="utf-8")
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report-study.png"
    screenshot.unlink(missing_ok=True)

    dom = chromium_dom(chromium, page, tmp_path / "chromium-profile", screenshot)
    text = visible_text(dom)

    n = len(report.optimizers)
    charts = re.findall(r'<svg class="chart[^"]*"', dom)
    # Best so far, learning curves, one lr panel per optimizer, one importance chart per
    # optimizer with a ranking (gd searches only lr).
    ranked = sum(bool(o.importance.importances) for o in report.optimizers)
    assert len(charts) == 2 + n + ranked, charts
    assert len(re.findall(r'<polyline class="series"', dom)) == 2 * n
    assert len(re.findall(r'<polygon class="band"', dom)) == n
    assert len(re.findall(r'class="point point-', dom)) >= sum(
        len(o.trials) for o in report.optimizers
    )
    verdict = report.verdict.verdict
    assert verdict.sentence in text, text[:3000]
    assert "Welch's t-test, Holm-corrected, 95%" in text
    for result in report.verdict.results:
        assert re.search(rf'<tr class="\w+" data-optimizer="{result.optimizer}">', dom)
        assert result.config.python in text
    assert "learning rate lr (log scale)" in text and "epochs spent" in text
    assert screenshot.stat().st_size > 50_000, "the screenshot is (nearly) empty"


@pytest.mark.browser
def test_hostile_study_name_stays_text_in_the_browser(tmp_path: Path, chromium: str):
    evil = '<img src=x onerror="document.title=1"><script>document.title=2</script>'
    page = tmp_path / "hostile.html"
    page.write_text(render_report(synthetic_report(name=evil, status="running")), "utf-8")

    dom = chromium_dom(chromium, page, tmp_path / "chromium-profile")

    assert "<script" not in dom.lower() and "<img" not in dom.lower()
    assert f"{evil}: which optimizer is best" in visible_text(dom)
    assert "This study is confirming: the page reloads itself every 10 s." in visible_text(dom)


@pytest.mark.browser
def test_report_of_a_real_finished_study_served_by_the_api(
    tmp_path: Path, chromium: str, sqlite_url: str, start_server, start_worker
):
    from tests.service.support import create_study, tiny_study, wait_for_status

    server = start_server(sqlite_url)
    worker = start_worker(sqlite_url)
    body = tiny_study(
        "browser-report",
        optimizers=["sgd", "momentum", "adam"],
        n_trials=4,
        epochs=4,
        confirm={"top_k": 1, "seeds": 3},
    )
    with server.client() as api:
        create_study(api, body)
        study = wait_for_status(api, "browser-report", 300, processes=[worker])
        assert study["status"] == "completed"
        verdict = api.get("/api/v1/studies/browser-report/best").json()["verdict"]
        html = api.get("/api/v1/studies/browser-report/report").text
    page = tmp_path / "served-report.html"
    page.write_text(html, encoding="utf-8")  # opened from a file: nothing may come from the API
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report-served-study.png"
    screenshot.unlink(missing_ok=True)

    dom = chromium_dom(chromium, page, tmp_path / "chromium-profile", screenshot)
    text = visible_text(dom)

    assert len(re.findall(r'<svg class="chart[^"]*"', dom)) >= 2 + 3
    assert len(re.findall(r'<polygon class="band"', dom)) == 3, "a band over seeds per optimizer"
    assert verdict["sentence"] in " ".join(text.split())
    for optimizer in ("sgd", "momentum", "adam"):
        assert optimizer in text
    assert "optim_core." in text
    assert screenshot.exists() and screenshot.stat().st_size > 10_000
