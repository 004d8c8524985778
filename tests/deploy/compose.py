"""Reading the deployment files as Docker does: .env files, docker-compose.yml, the Dockerfile.

``load_compose`` resolves the compose file in Python (YAML anchors and merge keys, then
``${VAR}`` interpolation) so the topology test can run without a compose binary;
``test_compose.py`` checks that it agrees with the real ``docker-compose config``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = REPO_ROOT / "Dockerfile"
APP_SERVICES = ("api", "worker", "dashboard")

T = TypeVar("T")

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, and $$ for a literal $.
_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def running_under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_tool(found: T | None, what: str, how: str) -> T:
    """``found`` when the tool is there; else skip, or fail under CI=true, saying how to get it."""
    if found:
        return found
    message = f"{what} is not installed ({how})"
    if running_under_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def venv_script(name: str) -> str | None:
    """A console script of the virtualenv running the tests, else one on PATH."""
    script = Path(sys.executable).with_name(name)
    return str(script) if script.exists() else shutil.which(name)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of a .env file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def env_from_example(directory: Path) -> tuple[Path, dict[str, str]]:
    """A .env made from .env.example as a user would: every empty secret given a random value."""
    values = read_env_file(ENV_EXAMPLE)
    for key, value in values.items():
        if not value:
            values[key] = secrets.token_hex(16)
    path = directory / ".env"
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path, values


def interpolate(text: str, variables: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"]
        value = variables.get(name)
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if op in ("-", ":-") and missing:
            return arg
        if op in ("?", ":?") and missing:
            raise ValueError(f"{name}: {arg}")
        return value or ""

    return _VARIABLE.sub(substitute, text)


def _interpolate_tree(node: Any, variables: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, variables) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(value, variables) for value in node]
    return node


def load_compose(variables: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yml with anchors merged and ``variables`` interpolated."""
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    return _interpolate_tree(document, variables)


def service_command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else [str(arg) for arg in command]


def published_ports(service: dict[str, Any]) -> set[tuple[str, int, int]]:
    """(host address, published port, container port) of each port mapping, short or long form."""
    ports = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            host_ip = entry.get("host_ip", "")
            published, target = int(entry["published"]), int(entry["target"])
        else:
            spec = str(entry).split("/")[0]
            *host, published_text, target_text = spec.split(":")
            host_ip = host[0] if host else ""
            published, target = int(published_text), int(target_text)
        ports.add((host_ip or "0.0.0.0", published, target))
    return ports


def volume_mounts(service: dict[str, Any]) -> set[tuple[str, str]]:
    """(source, target) of each volume, short (``name:/path[:mode]``) or long form."""
    mounts = set()
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            mounts.add((entry["source"], entry["target"]))
        else:
            source, target, *_ = str(entry).split(":")
            mounts.add((source, target))
    return mounts


def dockerfile_instruction(name: str) -> str:
    """The arguments of the Dockerfile's last ``name`` instruction (line continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = re.findall(rf"^{name}\s+(.+)$", text, re.MULTILINE)
    assert found, f"the Dockerfile has no {name} instruction"
    return found[-1].strip()


def dockerfile_exec_form(name: str) -> list[str]:
    """A JSON-array (exec form) instruction such as ``ENTRYPOINT ["hpt"]``, parsed."""
    text = dockerfile_instruction(name)
    if name == "HEALTHCHECK":
        text = text[text.index("CMD") + len("CMD") :].strip()
    value = json.loads(text)
    assert isinstance(value, list), f"{name} is not in exec form: {text}"
    return value


def compose_binary() -> list[str] | None:
    """``docker-compose`` (Debian's v1) or the ``docker compose`` plugin, whichever is here."""
    if path := shutil.which("docker-compose"):
        return [path]
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    return None
