"""The API docs as a person sees them offline: /docs and /redoc rendered by headless Chromium
that can reach nothing but the API.

The screenshots are kept in test-artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.docs import ASSETS, ASSETS_URL
from service.app import create_app
from service.config import Settings
from tests.deploy.compose import REPO_ROOT, require_tool
from tests.deploy.test_dashboard_browser import chromium_binary, visible_text
from tests.service.support import Server

ARTIFACTS = REPO_ROOT / "test-artifacts"
# Endpoints the rendered pages must list (method and path as Swagger UI shows them).
LISTED = [
    ("POST", "/api/v1/studies"),
    ("GET", "/api/v1/studies/{name}/best"),
    ("POST", "/api/v1/studies/{name}/trials/ask"),
    ("GET", "/api/v1/best"),
    ("GET", "/healthz"),
]


def render(chromium: str, url: str, screenshot: Path, profile: Path) -> str:
    """The DOM of ``url`` after its scripts ran, in a Chromium that resolves no host but the
    loopback address (anything from the web would fail to load)."""
    screenshot.unlink(missing_ok=True)
    result = subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--window-size=1280,1400", "--virtual-time-budget=15000",
            f"--screenshot={screenshot}", "--dump-dom", url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"chromium failed:\n{result.stderr[-3000:]}"
    return result.stdout


def test_docs_pages_load_nothing_from_the_web(sqlite_url: str) -> None:
    with TestClient(create_app(Settings(database_url=sqlite_url))) as client:
        for path in ("/docs", "/redoc"):
            page = client.get(path)
            assert page.status_code == 200, page.text
            urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
            urls += re.findall(r"https?://[^\s\"'<>]+", page.text)
            assert urls, page.text
            for url in urls:
                assert url.startswith(ASSETS_URL) or url == "/openapi.json", (path, url)
        for name in ASSETS:
            asset = client.get(f"{ASSETS_URL}/{name}")
            assert asset.status_code == 200 and len(asset.content) > 1000, name
        for name in ("core.py", "..%2Fcore.py", "..%2F..%2Fservice%2Fapp.py"):
            missing = client.get(f"{ASSETS_URL}/{name}")
            assert missing.status_code == 404, (name, missing.text)
        assert "swagger-ui-bundle.js" in client.get(f"{ASSETS_URL}/core.py").json()["detail"]
        assert "/docs" not in client.get("/openapi.json").json()["paths"]


@pytest.mark.browser
def test_docs_render_offline_and_list_the_endpoints(
    start_server: Callable[..., Server], sqlite_url: str, tmp_path: Path
) -> None:
    chromium = require_tool(
        chromium_binary(), "Chromium", "make test installs Debian's chromium with apt"
    )
    server = start_server(sqlite_url)
    ARTIFACTS.mkdir(exist_ok=True)

    swagger = visible_text(
        render(
            chromium,
            f"{server.base_url}/docs",
            ARTIFACTS / "api-docs.png",
            tmp_path / "profile-docs",
        )
    )
    assert "hpt: optimizer hyperparameter tuning" in swagger, swagger[:2000]
    # Swagger UI breaks paths with <wbr> tags: compare without whitespace.
    compact = re.sub(r"[\s\u200b]+", "", swagger)
    for method, path in LISTED:
        assert f"{method}{path}" in compact, (method, path, swagger[:3000])
    assert (ARTIFACTS / "api-docs.png").stat().st_size > 10_000, "the screenshot is (nearly) empty"

    redoc = visible_text(
        render(
            chromium,
            f"{server.base_url}/redoc",
            ARTIFACTS / "api-redoc.png",
            tmp_path / "profile-redoc",
        )
    )
    assert "hpt: optimizer hyperparameter tuning" in redoc, redoc[:2000]
    assert "Ask for a trial to train" in redoc, redoc[:2000]  # an operation's summary
    compact = re.sub(r"[\s\u200b]+", "", redoc)
    for _, path in LISTED:
        assert path in compact, (path, redoc[:3000])
    assert (ARTIFACTS / "api-redoc.png").stat().st_size > 10_000
