"""What the processes that train nothing import: no torch (nor scikit-learn), so that every API
server and every ``hpt db upgrade`` starts without paying for them.

Each check runs in a fresh interpreter: this test process has imported torch long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TRAINING_ONLY = ("torch", "sklearn")

API_AT_WORK = """
import json, sys
from fastapi.testclient import TestClient
from service.app import create_app
from service.config import Settings

with TestClient(create_app(Settings(database_url=sys.argv[1], api_key=None))) as api:
    for path in ("/api/v1/tasks", "/api/v1/optimizers", "/api/v1/studies"):
        assert api.get(path).status_code == 200, path
print(json.dumps(sorted(sys.modules)))
"""


def _imported(code: str, *args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {name.split(".")[0] for name in json.loads(done.stdout.splitlines()[-1])}


@pytest.mark.parametrize(
    "modules",
    [
        "service.app",  # uvicorn service.app:create_app
        "service.cli",  # hpt, before a command imports what it needs
        "service.store.migrate, service.trials.recovery",  # hpt db upgrade
    ],
)
def test_modules_of_processes_that_train_nothing_import_no_torch(modules: str) -> None:
    imported = _imported(f"import json, sys, {modules}; print(json.dumps(sorted(sys.modules)))")
    leaked = sorted(imported & set(TRAINING_ONLY))
    assert not leaked, f"import {modules} imports {leaked}"


def test_the_api_answers_about_tasks_and_optimizers_without_torch(tmp_path: Path) -> None:
    imported = _imported(API_AT_WORK, f"sqlite:///{tmp_path / 'hpt.db'}")
    assert "service" in imported and "fastapi" in imported
    leaked = sorted(imported & set(TRAINING_ONLY))
    assert not leaked, f"the API at work imports {leaked}"
