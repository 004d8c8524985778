"""The ``hpt`` command line, the Python client and the worker supervisor of ``hpt serve``.

- The client against ``httpx.MockTransport``: paths, query strings, bodies, the API key, errors.
- The supervisor with stand-in worker commands: restarts with backoff, giving up loudly, stopping.
- ``hpt study ...`` through typer's ``CliRunner`` against a real API process: what a person reads
  (tables, red one-line errors, never a traceback) and what a script reads (``--json``).
- ``hpt serve`` as a user runs it: API and an embedded worker complete a study, SIGTERM stops all.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from service.cli import build_app, settings_env
from service.client import HPTClient, HPTConnectionError, HPTError, format_detail
from service.config import Settings
from service.supervisor import RestartPolicy, WorkerSupervisor, worker_command
from tests.helpers import free_port, wait_until
from tests.service.conftest import Processes, Server, hpt_command

# --------------------------------------------------------------------------- the client


def _recording_client(
    handler: Callable[[httpx.Request], httpx.Response], **kwargs: object
) -> tuple[HPTClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    client = HPTClient("http://hpt.test/", transport=httpx.MockTransport(record), **kwargs)
    return client, seen


def test_client_sends_paths_queries_and_bodies_of_the_api() -> None:
    client, seen = _recording_client(lambda request: httpx.Response(200, json={"ok": True}))
    with client:
        client.create_study({"name": "a", "task": "digits_mlp"}, n_trials=3)
        client.list_studies(status="running", limit=5)
        client.trials("my study", optimizer="adam", offset=10)
        client.best_for_task("rosenbrock")
        client.report("s", "adam", 3, step=2, value=0.5, lease="L")
        client.tell("s", "adam", 3, state="pruned", lease="L")
        client.ask("s")
        client.delete("s")
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", "/api/v1/studies"),
        ("GET", "/api/v1/studies"),
        ("GET", "/api/v1/studies/my study/trials"),
        ("GET", "/api/v1/best"),
        ("POST", "/api/v1/studies/s/trials/adam/3/report"),
        ("POST", "/api/v1/studies/s/trials/adam/3/tell"),
        ("POST", "/api/v1/studies/s/trials/ask"),
        ("DELETE", "/api/v1/studies/s"),
    ]
    assert seen[2].url.raw_path.startswith(b"/api/v1/studies/my%20study/trials?")
    assert json.loads(seen[0].content) == {"name": "a", "task": "digits_mlp", "n_trials": 3}
    assert dict(seen[1].url.params) == {"status": "running", "limit": "5"}  # None left out
    assert dict(seen[2].url.params) == {"optimizer": "adam", "offset": "10"}
    assert dict(seen[3].url.params) == {"task": "rosenbrock"}
    assert json.loads(seen[4].content) == {"step": 2, "value": 0.5, "lease": "L"}
    assert json.loads(seen[5].content) == {"state": "pruned", "lease": "L"}
    assert "authorization" not in seen[0].headers


def test_client_sends_the_api_key_as_bearer_token() -> None:
    client, seen = _recording_client(lambda r: httpx.Response(200, json={}), api_key="s3cret")
    with client:
        client.stop("x")
    assert seen[0].headers["authorization"] == "Bearer s3cret"


def test_client_raises_the_servers_detail() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"detail": "a study named 'x' already exists"})

    client, _ = _recording_client(refuse)
    with client, pytest.raises(HPTError) as caught:
        client.create_study(name="x")
    assert caught.value.status_code == 409
    assert caught.value.message == "a study named 'x' already exists"


def test_validation_errors_read_as_one_line_per_field() -> None:
    detail = [
        {"loc": ["body", "optimizers", 0], "msg": "unknown optimizer 'adamm'", "type": "x"},
        {"loc": ["body", "n_trials"], "msg": "must be >= 1", "type": "y"},
    ]
    assert (
        format_detail(detail) == "optimizers.0: unknown optimizer 'adamm'\nn_trials: must be >= 1"
    )


def test_client_reports_an_unreachable_server_as_an_hpt_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with HPTClient(url, timeout=2) as client, pytest.raises(HPTConnectionError) as caught:
        client.health()
    assert caught.value.status_code is None
    assert f"cannot reach the API at {url}; is `hpt serve` running?" in caught.value.message


def test_wait_for_study_returns_the_final_status_or_times_out() -> None:
    statuses = iter(["queued", "running", "completed"])
    client, _ = _recording_client(lambda r: httpx.Response(200, json={"status": next(statuses)}))
    with client:
        assert client.wait_for_study("s", poll=0.01) == "completed"
    client, _ = _recording_client(lambda r: httpx.Response(200, json={"status": "running"}))
    with client, pytest.raises(TimeoutError, match="still running"):
        client.wait_for_study("s", timeout=0.05, poll=0.01)


# --------------------------------------------------------------------------- the supervisor


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.fixture
def supervisors() -> Iterator[list[WorkerSupervisor]]:
    made: list[WorkerSupervisor] = []
    yield made
    for supervisor in made:
        supervisor.kill_now()
        supervisor.stop(timeout=0)


def test_a_dead_worker_is_restarted(supervisors: list[WorkerSupervisor]) -> None:
    supervisor = WorkerSupervisor(
        1,
        command=_python("import time; time.sleep(60)"),
        policy=RestartPolicy(first_delay=0.1, crash_window=0.0),
    )
    supervisors.append(supervisor)
    supervisor.start()
    first = wait_until(lambda: supervisor.pids, 10, message="the worker to start")[0]
    os.kill(first, signal.SIGKILL)
    second = wait_until(
        lambda: [pid for pid in supervisor.pids if pid != first], 10, message="a new worker"
    )
    assert second and supervisor.workers[0].starts == 2


def test_a_worker_crashing_at_start_is_given_up_loudly(
    supervisors: list[WorkerSupervisor], caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = WorkerSupervisor(
        1,
        command=_python("raise SystemExit(3)"),
        policy=RestartPolicy(first_delay=0.05, max_delay=0.2, max_crashes_at_start=3),
    )
    supervisors.append(supervisor)
    with caplog.at_level(logging.INFO, logger="service.supervisor"):
        supervisor.start()
        wait_until(lambda: supervisor.workers[0].given_up, 20, message="the supervisor to give up")
    assert supervisor.workers[0].starts == 3
    assert "exited with status 3; restarting it in" in caplog.text
    assert "GIVING UP on worker 1" in caplog.text
    assert "NO WORKER IS LEFT" in caplog.text


def test_a_worker_that_exits_cleanly_stays_stopped(supervisors: list[WorkerSupervisor]) -> None:
    supervisor = WorkerSupervisor(1, command=_python("pass"), policy=RestartPolicy(first_delay=0))
    supervisors.append(supervisor)
    supervisor.start()
    wait_until(lambda: supervisor.workers[0].stopped, 10, message="the worker to exit")
    for _ in range(3):  # a restart, if one were due, would happen in any of these passes
        supervisor.check()
    assert supervisor.workers[0].starts == 1


def test_stop_terminates_then_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "pathlib.Path(sys.argv[1], str(__import__('os').getpid())).touch(); time.sleep(60)"
    )
    ready.mkdir()
    supervisor = WorkerSupervisor(2, command=[*_python(code), str(ready)])
    supervisor.start()
    wait_until(lambda: len(list(ready.iterdir())) == 2, 20, message="two workers ignoring SIGTERM")
    processes = [worker.process for worker in supervisor.workers]
    started = time.monotonic()
    supervisor.stop(timeout=1.0)
    assert 0.9 < time.monotonic() - started < 10
    assert [p.returncode for p in processes if p is not None] == [-signal.SIGKILL] * 2


def test_worker_command_is_a_spawned_hpt_worker() -> None:
    assert worker_command(parent_pid=42) == [
        sys.executable,
        "-m",
        "service.cli",
        "worker",
        "--parent-pid",
        "42",
    ]


def test_settings_travel_to_workers_through_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(database_url="sqlite:///x.db", api_key="k", workers=3, port=0)
    env = settings_env(settings)
    assert env["HPT_API_KEY"] == "k" and env["HPT_WORKERS"] == "3"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Settings() == settings


# --------------------------------------------------------------------------- hpt study ... (CLI)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(
    runner: CliRunner, *args: str, input: str | None = None, columns: int = 200
) -> tuple[int, str, str]:
    result = runner.invoke(build_app(), list(args), input=input, env={"COLUMNS": str(columns)})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.stdout, result.stderr


def test_help_lists_every_command(runner: CliRunner) -> None:
    code, out, _ = invoke(runner, "--help")
    assert code == 0
    for command in ("serve", "worker", "dashboard", "study", "tasks", "optimizers", "best"):
        assert command in out
    code, out, _ = invoke(runner, "study", "--help")
    for command in (
        "create",
        "list",
        "show",
        "best",
        "trials",
        "import",
        "stop",
        "delete",
        "watch",
    ):
        assert command in out


def test_version_is_the_installed_distributions(runner: CliRunner) -> None:
    from importlib.metadata import version

    code, out, _ = invoke(runner, "--version")
    assert (code, out) == (0, f"hpt {version('hpt')}\n")


def test_an_unreachable_api_is_one_red_line(runner: CliRunner) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = invoke(runner, "study", "list", "--url", url)
    assert code == 1
    assert f"cannot reach the API at {url}; is `hpt serve` running?" in err
    assert out == ""


def test_the_url_goes_before_the_command_too(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens at these: the error line says which URL each command used.
    a, b, env = (f"http://127.0.0.1:{free_port()}" for _ in range(3))

    def used(*args: str) -> str:
        code, out, err = invoke(runner, *args)
        assert code == 1 and out == "", (args, out, err)
        return err.split("cannot reach the API at ")[1].split(";")[0]

    assert used("--url", a, "study", "list") == a
    assert used("--url", a, "study", "show", "x", "--json") == a
    assert used("--url", a, "tasks") == a
    assert used("--url", a, "study", "list", "--url", b) == b  # the command's own flag wins
    monkeypatch.setenv("HPT_URL", env)
    assert used("study", "list") == env
    assert used("--url", a, "best", "--task", "rosenbrock") == a  # a flag wins over HPT_URL
    assert used("--url", a, "study", "list", "--url", b) == b


def test_create_says_what_is_missing_before_calling_the_api(runner: CliRunner) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: a request would fail differently
    code, _, err = invoke(runner, "study", "create", "--name", "x", "--url", url)
    assert code == 1 and "missing --task, --optimizers, --n-trials" in err
    code, _, err = invoke(
        runner, "study", "create", "--name", "x", "--space", "{not json", "--url", url
    )
    assert code == 1 and "--space is not valid JSON" in err


@pytest.fixture
def api(start_server: Callable[..., Server], sqlite_url: str) -> str:
    return start_server(sqlite_url).base_url


EXTERNAL = (
    "--task", "external", "--metric", "loss", "--direction", "minimize", "--confirm-top-k", "0",
)  # fmt: skip


def test_study_commands_against_a_real_api(runner: CliRunner, api: str, tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps(
            {"name": "from-file", "task": "external", "n_trials": 9, "confirm": {"top_k": 0}}
        )
    )
    code, out, err = invoke(
        runner,
        "study", "create", "--file", str(request), "--optimizers", "sgd,adam", "--n-trials", "2",
        "--metric", "loss", "--direction", "minimize", "--sampler", "random",
        "--space", '{"adam": {"lr": {"low": 0.001, "high": 0.01, "log": true}}}',
        "--url", api,
    )  # fmt: skip
    assert code == 0, err
    assert "Created study from-file" in out and "optimizers sgd, adam, 2 trials each" in out

    # Run one trial as an ask/tell client would, so that there is something to show.
    with HPTClient(api) as client:
        asked = client.ask("from-file")
        client.tell(
            "from-file", asked["optimizer"], asked["number"], value=0.25, lease=asked["lease"]
        )

    code, out, _ = invoke(runner, "study", "list", "--url", api)
    assert code == 0 and "from-file" in out and "1/4" in out and "running" in out
    code, out, _ = invoke(runner, "study", "show", "from-file", "--url", api)
    assert code == 0 and "Leading so far" in out and "0.25" in out
    code, out, _ = invoke(runner, "study", "best", "from-file", "--url", api)
    assert code == 0 and asked["optimizer"] in out and "0.25" in out
    code, out, _ = invoke(runner, "study", "trials", "from-file", "--url", api)
    assert code == 0 and "complete" in out
    with HPTClient(api) as client:
        origin = client.trials("from-file")["items"][0]["origin"]
    assert origin and f"│ {origin}" in out  # where its config came from

    code, out, _ = invoke(runner, "study", "show", "from-file", "--json", "--url", api)
    shown = json.loads(out)
    assert shown["progress"] == {"finished": 1, "total": 4, "fraction": 0.25}

    # A trial trained before, brought in from a file; it shows where it came from.
    earlier = tmp_path / "earlier.json"
    earlier.write_text(
        json.dumps([{"optimizer": asked["optimizer"], "params": asked["params"], "value": 0.5}])
    )
    code, out, err = invoke(runner, "study", "import", "from-file", str(earlier), "--url", api)
    assert code == 0 and "Imported 1 trials into from-file" in out, err
    code, out, _ = invoke(runner, "study", "trials", "from-file", "--url", api)
    assert "│ import" in out

    code, out, _ = invoke(runner, "study", "stop", "from-file", "--url", api)
    assert code == 0 and "stopped" in out
    code, out, _ = invoke(runner, "study", "watch", "from-file", "--url", api)
    assert code == 0 and "from-file stopped" in out and "2/4 trials finished" in out
    code, _, err = invoke(runner, "study", "import", "from-file", str(earlier), "--url", api)
    assert code == 1 and "is stopped; it takes no new trials" in err

    code, _, _ = invoke(runner, "study", "delete", "from-file", "--url", api, input="n\n")
    assert code == 1
    code, out, _ = invoke(runner, "study", "delete", "from-file", "--yes", "--url", api)
    assert code == 0 and "deleted" in out
    code, _, err = invoke(runner, "study", "show", "from-file", "--url", api)
    assert code == 1 and "from-file" in err


LONG_NAMES = ("digits-compare-sgd-momentum-adam-2026", "wine-mlp-compare-adagrad-rmsprop-adamw")
LONG_PARAMS = ("lr=", "beta1=", "beta2=", "batch_size=", "weight_decay=")


@pytest.mark.parametrize("columns", [80, 60, 40])
def test_tables_never_cut_names_or_params(runner: CliRunner, api: str, columns: int) -> None:
    with HPTClient(api) as client:
        for name in LONG_NAMES:
            client.create_study(
                name=name, task="external", metric="loss", direction="minimize",
                optimizers=["adamw"], n_trials=2, seed=0, confirm={"top_k": 0},
            )  # fmt: skip
        asked = client.ask(LONG_NAMES[0])
        client.tell(LONG_NAMES[0], "adamw", asked["number"], value=0.125, lease=asked["lease"])

    code, out, _ = invoke(runner, "study", "list", "--url", api, columns=columns)
    assert code == 0, out
    for name in LONG_NAMES:
        assert name in out, out  # on one line, whole
    lines = out.splitlines()
    if columns < 100:  # the less important columns make room, and the caption says which
        assert "created (UTC)" not in lines[1] and "not shown" in out and "created" in out, out
    # At most the terminal's width, unless even name, status and trials do not fit: then lines
    # as long as those three need (the terminal wraps them), never a cut name.
    narrowest = max(map(len, LONG_NAMES)) + len("running") + len("trials") + 3 * 3 + 1
    assert max(len(line) for line in lines if line.startswith(("┃", "│"))) <= max(
        columns, narrowest
    )

    for command in (("study", "trials"), ("study", "best"), ("study", "show")):
        code, out, _ = invoke(runner, *command, LONG_NAMES[0], "--url", api, columns=columns)
        assert code == 0, out
        text = "".join(line.strip("│┃ ") for line in out.splitlines())  # wrapped cells joined
        for key in LONG_PARAMS:
            assert key in text, (command, key, out)
        value = f"{asked['params']['weight_decay']:.4g}"
        assert value in text.replace(" ", ""), (command, value, out)
        for line in out.splitlines():  # the tables fit (the Python line stays one line)
            if columns >= 60 and line.startswith(("┃", "│", "┏", "└")):
                assert len(line) <= columns, (command, line)


def test_best_for_a_task_over_all_studies(runner: CliRunner, api: str) -> None:
    with HPTClient(api) as client:
        for name, value in (("first-study", 0.5), ("second-study", 0.25)):
            client.create_study(
                name=name, task="external", metric="loss", direction="minimize",
                optimizers=["sgd", "adam"], n_trials=1, seed=0, model="demo",
                confirm={"top_k": 0},
            )  # fmt: skip
            asked = client.ask(name)
            optimizer, number = asked["optimizer"], asked["number"]
            client.tell(name, optimizer, number, value=value, lease=asked["lease"])
    code, _, err = invoke(runner, "best", "--task", "external", "--model", "demo", "--url", api)
    assert code == 1 and "metric" in err, err  # external studies name their own metric
    code, _, err = invoke(runner, "best", "--task", "external", "--metric", "loss", "--url", api)
    assert code == 1 and "model" in err, err  # and their model: configs are shared only within it
    code, out, _ = invoke(
        runner, "best", "--task", "external", "--model", "demo", "--metric", "loss", "--url", api
    )
    assert code == 0, out
    # Across studies there is no verdict: the best known config, not a "winner".
    assert "over 2 studies" in out and "Best known:" in out and "from study second-study" in out
    assert "Winner" not in out, out
    code, out, _ = invoke(
        runner, "best", "--task", "external", "--model", "demo", "--metric", "loss",
        "--optimizer", "adam", "--json", "--url", api,
    )  # fmt: skip
    answer = json.loads(out)
    assert {row["optimizer"] for row in answer["optimizers"]} <= {"adam"}, answer
    assert set(answer["studies"]) == {"first-study", "second-study"}, answer
    code, out, _ = invoke(runner, "best", "--task", "digits_mlp", "--url", api)
    assert code == 0 and "No complete trial of task digits_mlp" in out, out
    code, _, err = invoke(runner, "best", "--url", api)
    assert code == 2 and "--task" in err, err


def test_delete_without_a_terminal_says_use_yes(runner: CliRunner, api: str) -> None:
    with HPTClient(api) as client:
        client.create_study(
            name="keep-me", task="external", metric="loss", direction="minimize",
            optimizers=["sgd"], n_trials=1,
        )  # fmt: skip
    code, out, err = invoke(runner, "study", "delete", "keep-me", "--url", api, input="")
    assert code == 1, (out, err)
    assert "use --yes" in err and "Aborted" not in out + err, (out, err)
    code, out, _ = invoke(runner, "study", "delete", "keep-me", "--url", api, input="y\n")
    assert code == 0 and "deleted" in out
    code, out, _ = invoke(runner, "study", "delete", "--help")
    assert "--yes" in out


def test_api_errors_print_the_servers_message(runner: CliRunner, api: str) -> None:
    base = ("study", "create", "--name", "dup", *EXTERNAL, "--optimizers", "sgd", "--n-trials", "1")
    assert invoke(runner, *base, "--url", api)[0] == 0
    code, out, err = invoke(runner, *base, "--url", api)
    assert code == 1 and out == "" and "already exists" in err
    code, _, err = invoke(
        runner, "study", "create", "--name", "bad", *EXTERNAL, "--optimizers", "sgd,adamm",
        "--n-trials", "1", "--url", api,
    )  # fmt: skip
    assert code == 1 and "optimizers.1: unknown optimizer 'adamm'" in err


def test_tasks_and_optimizers_tables(runner: CliRunner, api: str) -> None:
    code, out, _ = invoke(runner, "tasks", "--url", api)
    assert code == 0 and "digits_mlp" in out and "val_accuracy (max)" in out
    code, out, _ = invoke(runner, "optimizers", "--url", api)
    assert code == 0 and "adam" in out and "lr [1e-05, 0.1] log" in out
    code, out, _ = invoke(runner, "optimizers", "--json", "--url", api)
    assert {spec["name"] for spec in json.loads(out)} >= {"sgd", "adam"}


def test_mutations_need_the_servers_api_key(
    runner: CliRunner, start_server: Callable[..., Server], sqlite_url: str
) -> None:
    url = start_server(sqlite_url, api_key="k3y").base_url
    create = ("study", "create", "--name", "k", *EXTERNAL, "--optimizers", "sgd", "--n-trials", "1")
    code, _, err = invoke(runner, *create, "--url", url)
    assert code == 1 and "API key" in err
    assert invoke(runner, *create, "--url", url, "--api-key", "k3y")[0] == 0
    # The same, with the URL and the key before the command (as for every API command).
    other = ("study", "create", "--name", "k2", *create[4:])
    assert invoke(runner, "--url", url, *other)[0] == 1
    assert invoke(runner, "--url", url, "--api-key", "k3y", *other)[0] == 0
    code, out, _ = invoke(runner, "--url", url, "study", "list", "--json")
    assert code == 0 and {row["name"] for row in json.loads(out)["items"]} == {"k", "k2"}


# --------------------------------------------------------------------------- hpt serve


def test_serve_runs_a_study_to_completion_and_stops_on_sigterm(
    processes: Processes, sqlite_url: str, runner: CliRunner
) -> None:
    port = free_port()
    serve = processes.start(
        "serve",
        hpt_command("serve", "--port", str(port), "--workers", "1"),
        {"HPT_DATABASE_URL": sqlite_url},
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, message="hpt serve")
    code, _, err = invoke(
        runner, "study", "create", "--name", "rosen", "--task", "rosenbrock",
        "--optimizers", "sgd,adam", "--n-trials", "2", "--epochs", "3", "--sampler", "random",
        "--confirm-top-k", "0", "--url", url,
    )  # fmt: skip
    assert code == 0, err
    code, out, err = invoke(runner, "study", "watch", "rosen", "--interval", "0.2", "--url", url)
    assert code == 0, err
    assert "rosen completed: 4/4 trials finished" in out and "Winner:" in out
    log = serve.log()
    assert f"{url}/docs" in log and "hpt dashboard" in log
    assert "worker 1 started" in log

    serve.send(signal.SIGTERM)
    assert serve.wait(timeout=60) == 0
    assert "stopping 1 worker(s)" in serve.log()


# --------------------------------------------------------------------------- devices


def test_a_bad_device_stops_a_worker_and_serve_at_start(runner: CliRunner, sqlite_url: str) -> None:
    for command in ("worker", "serve"):
        code, _, err = invoke(runner, command, "--device", "gpu", "--database-url", sqlite_url)
        assert code == 1 and "unknown device 'gpu'; use auto, cpu, cuda or cuda:N" in err, err


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="this machine has a CUDA device"
)
def test_a_gpu_device_on_a_machine_without_one_says_so(runner: CliRunner, sqlite_url: str) -> None:
    code, _, err = invoke(runner, "worker", "--device", "cuda:1", "--database-url", sqlite_url)
    assert code == 1 and "torch sees no CUDA device here" in err, err
    code, _, err = invoke(runner, "serve", "--device", "cuda", "--database-url", sqlite_url)
    assert code == 1 and "torch sees no CUDA device here" in err, err
