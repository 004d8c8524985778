"""The report as a person sees it: the page rendered by headless Chromium, opened from a file with
every host name unresolvable, and Chromium's log of the requests the page made.

The screenshots are kept in test-artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
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
FIGURES = ("plot-best-so-far", "plot-learning-curves", "plot-lr", "plot-importance")
# Chromium's own services (its clock, updates, accounts) start requests of their own; the
# page's requests carry its origin as initiator ("null" for a file).
CHROMIUM_OWN = "not an origin"


def chromium_dom(
    chromium: str, page: Path, workdir: Path, screenshot: Path | None = None
) -> tuple[str, list[str]]:
    """The DOM Chromium builds from ``page`` (a file, opened with no host name resolving), its
    screenshot, and the URLs of every request the page started."""
    shot = [f"--screenshot={screenshot}"] if screenshot is not None else []
    netlog = workdir / "netlog.json"
    result = subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={workdir / 'chromium-profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND", f"--log-net-log={netlog}",
            "--window-size=1280,3400", "--virtual-time-budget=5000", *shot, "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"chromium failed:\n{result.stderr[-3000:]}"
    return result.stdout, page_requests(netlog)


def page_requests(netlog: Path) -> list[str]:
    """The URLs of the requests a page started, from a Chromium net log."""
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start
        and "url" in event.get("params", {})
        and event["params"].get("initiator") != CHROMIUM_OWN
    ]


def drawn(dom: str) -> dict[str, str]:
    """Each figure's markup after plotly.js drew it, by its div's id."""
    parts = re.split(r'(?=<div id="plot-)', dom)[1:]
    return {re.match(r'<div id="([\w-]+)"', part).group(1): part for part in parts}


def legend(part: str) -> list[str]:
    return re.findall(r'class="legendtext"[^>]*>([^<]*)<', part)


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
def test_the_request_log_sees_what_a_page_fetches(tmp_path: Path, chromium: str):
    """The check the other tests rely on: a page that asks for an image and a script is seen
    asking, even though no host name resolves."""
    page = tmp_path / "fetching.html"
    page.write_text(
        '<img src="https://cdn.example.com/a.png">'
        '<script>fetch("https://cdn.plot.ly/plotly.min.js").catch(() => {})</script>'
    )
    _, requests = chromium_dom(chromium, page, tmp_path)
    assert sorted(requests) == [
        "https://cdn.example.com/a.png",
        "https://cdn.plot.ly/plotly.min.js",
    ]


@pytest.mark.browser
def test_report_of_a_finished_study_draws_its_plots_offline(tmp_path: Path, chromium: str):
    report = synthetic_report()
    # The page as served, and a script after it that hovers the lr figure's first trial, as a
    # person's mouse would.
    hover = (
        '<script>Plotly.Fx.hover("plot-lr", [{curveNumber: 0, pointNumber: 0}]);</script></body>'
    )
    page = tmp_path / "report.html"
    page.write_text(render_report(report).replace("</body>", hover), encoding="utf-8")
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report-study.png"
    screenshot.unlink(missing_ok=True)

    dom, requests = chromium_dom(chromium, page, tmp_path, screenshot)
    text = visible_text(dom)
    figures = drawn(dom)

    assert requests == [], "the page fetched something"
    assert list(figures) == list(FIGURES)
    names = [o.name for o in report.optimizers]
    for figure in figures.values():
        assert 'class="plot-container plotly"' in figure and 'class="main-svg"' in figure
    assert legend(figures["plot-best-so-far"]) == names
    assert figures["plot-best-so-far"].count('class="trace scatter') == len(names)
    assert legend(figures["plot-learning-curves"]) == [f"{n} (mean of 5 seeds)" for n in names]
    assert figures["plot-learning-curves"].count('class="trace scatter') == 2 * len(names)
    lr = figures["plot-lr"]
    assert legend(lr) == names
    # A mark per search trial and a star per confirmed config.
    trials = sum(len(o.trials) for o in report.optimizers)
    assert lr.count('class="point"') == trials + len(names)
    ranked = [o.name for o in report.optimizers if o.importance.importances]
    assert legend(figures["plot-importance"]) == ranked
    assert figures["plot-importance"].count('class="trace bars"') == len(ranked)
    # The hovered trial shows its config.
    first = next(t for t in report.optimizers[0].trials if t.state == "complete")
    label = visible_text(re.search(r'<g class="hoverlayer">.*?</g></svg>', lr).group(0))
    assert f"trial {first.number} (complete, 20 epochs)" in label
    assert "lr=" in label and "batch_size=" in label, label
    # The verdict and the axis titles are there to read.
    verdict = report.verdict.verdict
    assert verdict.sentence in text, text[:3000]
    assert "Welch's t-test, Holm-corrected, 95%" in text
    for result in report.verdict.results:
        assert re.search(rf'<tr class="\w+" data-optimizer="{result.optimizer}">', dom)
        assert result.config.python in text
    assert "learning rate lr (log scale)" in text and "epochs spent" in text
    assert screenshot.stat().st_size > 50_000, "the screenshot is (nearly) empty"


@pytest.mark.browser
def test_hostile_names_stay_text_in_the_browser(tmp_path: Path, chromium: str):
    evil = '<img src=x onerror="document.title=1"></script><script>document.title=2</script>'
    base = synthetic_report(name=evil, status="running")
    report = type(base)(**{**base.__dict__, "metric": evil})
    page = tmp_path / "hostile.html"
    page.write_text(render_report(report), "utf-8")

    dom, requests = chromium_dom(chromium, page, tmp_path)

    assert requests == []
    assert "<img" not in dom.lower()
    # plotly.js and one script per figure: none more.
    assert len(re.findall(r"<script", dom)) == 1 + len(FIGURES)
    assert f"{evil}: which optimizer is best" in visible_text(dom)
    assert "This study is confirming: the page reloads itself every 10 s." in visible_text(dom)
    # The figures draw, and show the metric as text in their axis titles.
    figures = drawn(dom)
    assert list(figures) == list(FIGURES)
    title = re.search(r'class="ytitle"[^>]*>(.*?)</text>', figures["plot-best-so-far"]).group(1)
    assert visible_text(title) == f"{evil} (validation; higher is better)"


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

    dom, requests = chromium_dom(chromium, page, tmp_path, screenshot)
    text = visible_text(dom)
    figures = drawn(dom)

    assert requests == []
    assert list(figures)[:3] == list(FIGURES[:3])
    for optimizer in ("sgd", "momentum", "adam"):
        assert optimizer in legend(figures["plot-best-so-far"])
        assert f"{optimizer} (mean of 3 seeds)" in legend(figures["plot-learning-curves"])
    # A band over seeds and a mean line per optimizer.
    assert figures["plot-learning-curves"].count('class="trace scatter') == 2 * 3
    assert verdict["sentence"] in " ".join(text.split())
    assert "optim_core." in text
    assert screenshot.exists() and screenshot.stat().st_size > 10_000
