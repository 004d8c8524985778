"""docker-compose.yml as the real compose binary reads it (``config`` needs no Docker engine)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.deploy.compose import (
    APP_SERVICES,
    COMPOSE_FILE,
    ENV_EXAMPLE,
    compose_binary,
    dockerfile_exec_form,
    env_from_example,
    load_compose,
    published_ports,
    read_env_file,
    require_tool,
    service_command,
    volume_mounts,
)


def run_compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    binary = require_tool(
        compose_binary(),
        "docker-compose (or the docker compose plugin)",
        "make test installs Debian's docker-compose with apt",
    )
    # Only the .env file may set the compose variables: nothing leaks in from the shell.
    variables = read_env_file(ENV_EXAMPLE)
    environment = {key: value for key, value in os.environ.items() if key not in variables}
    return subprocess.run(
        [*binary, "--file", str(COMPOSE_FILE), "--env-file", str(env_file), "config"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, str]]:
    """The compose binary's ``config`` of docker-compose.yml with a .env from .env.example."""
    env_file, values = env_from_example(tmp_path_factory.mktemp("compose"))
    result = run_compose_config(env_file)
    assert result.returncode == 0, f"compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout), values


def test_services_and_their_commands(resolved: tuple[dict[str, Any], dict[str, str]]) -> None:
    config, _ = resolved
    services = config["services"]
    assert set(services) == {"postgres", *APP_SERVICES}
    assert services["postgres"]["image"].split(":")[0] == "postgres"
    # The image's ENTRYPOINT is hpt; a service's command is the arguments of `hpt`.
    assert dockerfile_exec_form("ENTRYPOINT") == ["hpt"]
    assert "entrypoint" not in services["api"]
    assert service_command(services["api"]) == [
        "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "0",
    ]  # fmt: skip
    assert service_command(services["worker"]) == ["worker"]
    assert service_command(services["dashboard"]) == [
        "dashboard", "--host", "0.0.0.0", "--port", "8080",
    ]  # fmt: skip
    assert services["worker"]["deploy"]["replicas"] == 2


def test_one_image_for_every_app_service(resolved: tuple[dict[str, Any], dict[str, str]]) -> None:
    services = resolved[0]["services"]
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1, images
    for name in APP_SERVICES:
        assert "build" in services[name], f"{name} cannot be built by `docker compose build`"


def test_app_services_wait_for_a_healthy_postgres(
    resolved: tuple[dict[str, Any], dict[str, str]],
) -> None:
    services = resolved[0]["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    for name in APP_SERVICES:
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy", name


def test_database_url_and_secrets_come_from_the_env_file(
    resolved: tuple[dict[str, Any], dict[str, str]],
) -> None:
    services, values = resolved[0]["services"], resolved[1]
    postgres_env = services["postgres"]["environment"]
    assert postgres_env["POSTGRES_PASSWORD"] == values["POSTGRES_PASSWORD"]
    for name in APP_SERVICES:
        url = make_url(services[name]["environment"]["HPT_DATABASE_URL"])
        assert url.drivername == "postgresql+psycopg"
        assert (url.host, url.port) == ("postgres", 5432)
        assert url.username == postgres_env["POSTGRES_USER"]
        assert url.password == values["POSTGRES_PASSWORD"]
        assert url.database == postgres_env["POSTGRES_DB"]
    assert services["api"]["environment"]["HPT_API_KEY"] == values["HPT_API_KEY"]
    # Least privilege: the key is the API's alone.
    assert "HPT_API_KEY" not in services["worker"]["environment"]
    assert "HPT_API_KEY" not in services["dashboard"]["environment"]


def test_ports_volumes_and_healthchecks(resolved: tuple[dict[str, Any], dict[str, str]]) -> None:
    services, values = resolved[0]["services"], resolved[1]
    assert published_ports(services["api"]) == {("0.0.0.0", 8000, 8000)}
    assert published_ports(services["dashboard"]) == {(values["DASHBOARD_BIND"], 8080, 8080)}
    assert "ports" not in services["worker"]
    assert "ports" not in services["postgres"]  # reachable by the app services only
    assert volume_mounts(services["postgres"]) == {("pgdata", "/var/lib/postgresql/data")}
    assert "pgdata" in resolved[0]["volumes"]
    assert "http://127.0.0.1:8000/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8080/" in " ".join(services["dashboard"]["healthcheck"]["test"])


def test_python_loader_agrees_with_compose(
    resolved: tuple[dict[str, Any], dict[str, str]],
) -> None:
    # The topology test runs the services from load_compose(): it must see what compose sees.
    config, values = resolved
    ours = load_compose(values)["services"]
    for name in APP_SERVICES:
        assert service_command(ours[name]) == service_command(config["services"][name]), name
        assert {k: str(v) for k, v in ours[name]["environment"].items()} == {
            k: str(v) for k, v in config["services"][name]["environment"].items()
        }, name
        assert published_ports(ours[name]) == published_ports(config["services"][name]), name


@pytest.mark.parametrize("missing", ["POSTGRES_PASSWORD", "HPT_API_KEY"])
def test_compose_refuses_to_start_without_a_secret(tmp_path: Path, missing: str) -> None:
    env_file, values = env_from_example(tmp_path)
    values[missing] = ""
    env_file.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    result = run_compose_config(env_file)
    assert result.returncode != 0, result.stdout
    assert f"set {missing} in .env" in result.stderr


def test_env_example_leaves_the_secrets_to_the_user() -> None:
    values = read_env_file(ENV_EXAMPLE)
    assert values["POSTGRES_PASSWORD"] == ""
    assert values["HPT_API_KEY"] == ""
