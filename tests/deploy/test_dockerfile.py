"""The Dockerfile: lint-clean, one image for every role, and a build context without secrets."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.deploy.compose import (
    DOCKERFILE,
    REPO_ROOT,
    dockerfile_exec_form,
    dockerfile_instruction,
    require_tool,
    venv_script,
)
from tests.helpers import free_port


def test_hadolint_is_clean() -> None:
    hadolint = require_tool(
        venv_script("hadolint"), "hadolint", "it comes with the dev extra: make test installs it"
    )
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_slim_python_with_cpu_torch_before_the_project() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.MULTILINE)
    torch = re.search(r"^RUN pip install .*--index-url https://download\.pytorch\.org/whl/cpu "
                      r"torch==2\.13\.0$", text, re.MULTILINE)  # fmt: skip
    assert torch, "torch 2.13.0 must come from the CPU index"
    project = re.search(r"pip install .*--no-deps \.", text)
    assert project and torch.start() < project.start(), "torch must be installed first"


def test_runs_hpt_as_a_non_root_user() -> None:
    user = dockerfile_instruction("USER").split(":")[0]
    assert user not in ("root", "0")
    assert dockerfile_exec_form("ENTRYPOINT") == ["hpt"]
    assert dockerfile_exec_form("CMD") == ["serve", "--host", "0.0.0.0"]
    assert set(dockerfile_instruction("EXPOSE").split()) == {"8000", "8080"}


def test_healthcheck_asks_the_database_of_any_role(tmp_path: Path) -> None:
    # The same image is the API, a worker and the dashboard: its own check must hold for all.
    command = dockerfile_exec_form("HEALTHCHECK")
    assert command[0] == "python"

    def healthcheck(url: str) -> int:
        return subprocess.run(
            [sys.executable, *command[1:]],
            env={"HPT_DATABASE_URL": url},
            capture_output=True,
            timeout=60,
            check=False,
        ).returncode

    assert healthcheck(f"sqlite:///{tmp_path / 'hpt.db'}") == 0
    assert healthcheck(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/hpt") != 0


@cache
def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception, regex) of each .dockerignore line, in order: the last match wins."""
    rules = []
    for line in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                token, re.escape(token)
            )
        rules.append((exception, re.compile(regex)))
    return rules


def sent_to_docker(path: str) -> bool:
    """Whether ``path`` is in the build context (a pattern matching a parent matches the path)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for exception, regex in _dockerignore_rules():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = exception
    return included


@pytest.mark.parametrize(
    "path",
    [".env", ".venv/bin/python", ".git/config", "hpt.db", "hpt.db-wal", "tests/conftest.py",
     "test-artifacts/dashboard.png", "service/__pycache__/app.cpython-311.pyc"],
)  # fmt: skip
def test_build_context_leaves_out(path: str) -> None:
    assert not sent_to_docker(path)


def test_build_context_has_everything_the_dockerfile_copies() -> None:
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            args = [arg for arg in line.split()[1:] if not arg.startswith("--")]
            sources += args[:-1]
    assert sources, "the Dockerfile copies nothing"
    for source in sources:
        assert (REPO_ROOT / source).exists(), source
        assert sent_to_docker(source), f"{source} is copied but .dockerignore leaves it out"
    assert sent_to_docker("service/config.py")
