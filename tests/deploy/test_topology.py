"""The compose topology, run as local processes: what docker compose would start, minus Docker.

Each app service of docker-compose.yml runs its own command (the image's ENTRYPOINT, ``hpt``,
from this virtualenv) with its own compose environment, as many times as its replicas. Only what
Docker would provide is swapped: the ``postgres`` host becomes a fresh database on the local
PostgreSQL, and each listening port a free local one. A study then goes through the API, the two
workers train it, and the dashboard shows it.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.deploy.compose import (
    APP_SERVICES,
    dockerfile_exec_form,
    env_from_example,
    load_compose,
    published_ports,
    require_tool,
    service_command,
    venv_script,
)
from tests.deploy.conftest import LocalProcesses, clean_environment
from tests.helpers import free_port

START_TIMEOUT = 90.0
STUDY_TIMEOUT = 200.0


def localize(args: list[str]) -> tuple[list[str], dict[int, int]]:
    """``args`` listening on 127.0.0.1 and a free port; and {container port: local port}."""
    local, ports = list(args), {}
    for i, arg in enumerate(local[:-1]):
        if arg == "--host":
            local[i + 1] = "127.0.0.1"
        elif arg == "--port":
            container_port = int(local[i + 1])
            ports[container_port] = free_port()
            local[i + 1] = str(ports[container_port])
    return local, ports


def localize_healthcheck(test: list[str], ports: dict[int, int]) -> list[str]:
    """A compose/Dockerfile exec-form healthcheck, run with this Python on the local ports."""
    assert test[0] in ("CMD", "python"), f"not an exec-form python healthcheck: {test}"
    command = test[1:] if test[0] == "CMD" else test
    assert command[0] == "python", command
    code = command[-1]
    for container_port, local_port in ports.items():
        code = code.replace(f":{container_port}/", f":{local_port}/")
    return [sys.executable, *command[1:-1], code]


@pytest.mark.postgres
def test_compose_services_run_a_study_together(
    tmp_path: Path, postgres_url: str, local_processes: LocalProcesses
) -> None:
    _, values = env_from_example(tmp_path)
    services = load_compose(values)["services"]
    entrypoint = dockerfile_exec_form("ENTRYPOINT")
    hpt = require_tool(venv_script(entrypoint[0]), "the hpt command", "make test installs it")

    local_ports: dict[str, dict[int, int]] = {}
    environments: dict[str, dict[str, str]] = {}
    for name in APP_SERVICES:
        service = services[name]
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        compose_url = make_url(env["HPT_DATABASE_URL"])
        assert compose_url.host in services, f"{name} reaches its database through compose"
        env["HPT_DATABASE_URL"] = postgres_url
        args, ports = localize(service_command(service))
        for _host, _published, container_port in published_ports(service):
            assert container_port in ports, f"{name} publishes {container_port}, listens on {ports}"
        local_ports[name], environments[name] = ports, env
        replicas = int((service.get("deploy") or {}).get("replicas", 1))
        for replica in range(1, replicas + 1):
            local_processes.start(
                f"{name}{replica}" if replicas > 1 else name,
                [hpt, *entrypoint[1:], *args],
                {**clean_environment(), **env},
            )
    assert sum(p.name.startswith("worker") for p in local_processes.started) == 2

    api = f"http://127.0.0.1:{local_ports['api'][8000]}"
    dashboard = f"http://127.0.0.1:{local_ports['dashboard'][8080]}"

    def answers(url: str) -> bool:
        return httpx.get(url, timeout=5).status_code == 200

    local_processes.wait_until(
        lambda: answers(f"{api}/healthz"), START_TIMEOUT, message="the API's /healthz"
    )
    local_processes.wait_until(
        lambda: answers(f"{dashboard}/api/meta"), START_TIMEOUT, message="the dashboard"
    )

    # The healthchecks docker would run: each service's own, and the image's for every role.
    image_check = dockerfile_exec_form("HEALTHCHECK")
    for name in APP_SERVICES:
        checks = [image_check]
        if "healthcheck" in services[name]:
            checks.append(services[name]["healthcheck"]["test"])
        for test in checks:
            check = subprocess.run(
                localize_healthcheck(test, local_ports[name]),
                env={**clean_environment(), **environments[name]},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert check.returncode == 0, f"{name} healthcheck {test} failed:\n{check.stderr}"

    study = f"compose-{secrets.token_hex(3)}"
    request = {
        "name": study, "task": "digits_mlp", "optimizers": ["sgd", "adam"],
        "n_trials": 2, "epochs": 2, "pruner": "none", "confirm": {"top_k": 0},
    }  # fmt: skip
    with httpx.Client(base_url=api, timeout=30) as client:
        anonymous = client.post("/api/v1/studies", json=request)
        assert anonymous.status_code in (401, 403), anonymous.text
        headers = {"Authorization": f"Bearer {values['HPT_API_KEY']}"}
        created = client.post("/api/v1/studies", json=request, headers=headers)
        assert created.status_code == 201, created.text

        def completed() -> bool:
            status = client.get(f"/api/v1/studies/{study}").json()
            assert status.get("status") != "failed", status
            return status.get("status") == "completed"

        local_processes.wait_until(completed, STUDY_TIMEOUT, message=f"{study} to complete")

    summaries = httpx.get(f"{dashboard}/api/studies", timeout=30).json()["study_summaries"]
    ids = {s["study_name"]: s["study_id"] for s in summaries}
    for optimizer in request["optimizers"]:
        optuna_name = f"{study}/{optimizer}"
        assert optuna_name in ids, f"{optuna_name} not on the dashboard: {sorted(ids)}"
        detail = httpx.get(f"{dashboard}/api/studies/{ids[optuna_name]}", timeout=30).json()
        finished = [t for t in detail["trials"] if t["state"] == "Complete"]
        assert len(finished) == request["n_trials"], detail["trials"]
