"""The dashboard as a person sees it: a real study's page rendered by headless Chromium.

The screenshot is kept in test-artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.deploy.compose import REPO_ROOT, require_tool, venv_script
from tests.deploy.conftest import LocalProcesses, clean_environment
from tests.helpers import free_port

ARTIFACTS = REPO_ROOT / "test-artifacts"
STUDY_NAME = "dashboard-check/adam"


def chromium_binary() -> str | None:
    return next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )


def visible_text(dom: str) -> str:
    """The text a person reads on the page: no scripts, no styles, no tags."""
    dom = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", dom, flags=re.DOTALL | re.IGNORECASE)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def js_number(value: float) -> str:
    """How JavaScript prints a float (shortest round-trip, like Python, but 1 and not 1.0)."""
    return str(int(value)) if value.is_integer() else repr(value)


@pytest.mark.browser
def test_study_page_shows_the_study_and_its_trials(
    tmp_path: Path, local_processes: LocalProcesses
) -> None:
    chromium = require_tool(
        chromium_binary(), "Chromium", "make test installs Debian's chromium with apt"
    )
    from studies import run_study

    database_url = f"sqlite:///{tmp_path / 'hpt.db'}"
    study = run_study(
        "digits_mlp", "adam", n_trials=3, epochs=2, pruner="none",
        storage=database_url, study_name=STUDY_NAME,
    )  # fmt: skip
    assert study.best_trial is not None

    port = free_port()
    hpt = require_tool(venv_script("hpt"), "the hpt command", "make test installs the project")
    dashboard = local_processes.start(
        "dashboard",
        [hpt, "dashboard", "--host", "127.0.0.1", "--port", str(port)],
        {**clean_environment(), "HPT_DATABASE_URL": database_url},
    )
    base_url = f"http://127.0.0.1:{port}"

    def listed_study_id() -> int | None:
        summaries = httpx.get(f"{base_url}/api/studies", timeout=5).json()["study_summaries"]
        return next((s["study_id"] for s in summaries if s["study_name"] == STUDY_NAME), None)

    study_id = local_processes.wait_until(
        listed_study_id, 60, message="the dashboard to list the study"
    )

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "dashboard-study.png"
    screenshot.unlink(missing_ok=True)
    result = subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--window-size=1280,900", "--virtual-time-budget=10000",
            f"--screenshot={screenshot}", "--dump-dom",
            f"{base_url}/dashboard/studies/{study_id}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"chromium failed:\n{result.stderr[-3000:]}"
    assert dashboard.alive()
    text = visible_text(result.stdout)

    assert f"{STUDY_NAME} (id={study_id})" in text, text[:2000]
    best = study.best_trial
    assert f"Best Trial (number={best.number})" in text, text[:2000]
    assert js_number(best.value) in text, text[:2000]
    # Each trial's learning curve is in the intermediate-values plot.
    for trial in study.trials:
        assert f"trial #{trial.number}" in text, text[:2000]
    assert screenshot.stat().st_size > 10_000, "the screenshot is (nearly) empty"
