"""README.md and docs/, run: every command and code example in them works as written, and
every default and path they state is the code's.

The project's rule for its documents: every command in them is exercised by a test or by .ci/run.
This module reads the fenced blocks out of README.md and docs/*.md (never a copy of them) and runs
them for real:

- the README's five-minute tour's bash blocks, through ``bash -euo pipefail -c`` from the
  repository root, against ``hpt serve --workers 2`` on a free port (``127.0.0.1:8000`` is the
  only text rewritten; ``curl`` is wrapped to also print each answer's status), then the tour's
  "other things to try";
- the ``optim_core`` drop-in snippet (docs/optim_core.md), the plugin-task example (module, entry
  point, ``run_study``: docs/tasks.md) and the README's ask/tell script, each in its own
  interpreter, the last two against ``hpt serve --workers 0``; the search-space override
  (docs/optim_core.md) and the import body (docs/ask_tell.md) against the same API;
- ``make run`` (with the deployment section's API-key commands against it) and ``make
  dashboard`` (docs/dashboard_and_report.md), each stopped with a SIGTERM to make;
- the configuration table against ``service.config.Settings``, every ``hpt``/``make``/``docker
  compose`` command line against the real CLI, Makefile and docker-compose.yml;
- every default a document states against the constant the code uses (the confirmation, stated
  once; samplers, pruners, warm starts, tasks, search spaces, the verdict's test), every
  repository path a document names against the tree, docs/architecture.md's tree and slot states
  against the packages, and the README's length and links to each docs/ page.

``EXAMPLES`` says who covers each fenced block; ``test_every_block_is_covered`` fails when one
appears that nobody runs, so a new example comes with its test.
"""

from __future__ import annotations

import ast
import decimal
import functools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import yaml

from service.cli import SERVICE_COMMANDS, build_app
from service.client import DEFAULT_URL
from service.config import Settings
from service.studies.requests import DEFAULT_CONFIRM
from tests.deploy.compose import COMPOSE_FILE, REPO_ROOT, require_tool, venv_script
from tests.deploy.conftest import clean_environment
from tests.helpers import free_port, wait_until
from tests.service.support import (
    Processes,
    Server,
    ServiceProcess,
    assert_exact_trials,
    wait_for_status,
)

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
README_MAX_LINES = 260  # README for users; depth goes to docs/ (issue 21)
README_URL = "http://127.0.0.1:8000"  # where the README's commands expect the API
VENV_BIN = Path(".venv/bin")  # relative to the repository root, as the README and Makefile say
INSTALLED_STAMP = ".venv/.installed"  # the Makefile's "installed" stamp

START_TIMEOUT = 90.0  # a server answering (imports torch; slow on a busy 2-core machine)
STUDY_TIMEOUT = 180.0  # one tour study: 24 trials of 10 epochs on two workers
COMMAND_TIMEOUT = 60.0  # one quick command, or a block of them
SNIPPET_TIMEOUT = 180.0  # a README Python example
STOP_TIMEOUT = 30.0  # SIGTERM to every process gone

# Every process of these tests: quick polling; one torch thread (several processes, 2 cores).
TEST_ENV = {
    "HPT_POLL_INTERVAL": "0.2",
    "PYTHONUNBUFFERED": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

# Each curl of a block also prints its answer's status on a line of its own.
HTTP_MARK = "@@http-status@@"
CURL_WITH_STATUS = (
    f"curl() {{ command curl --write-out '\\n{HTTP_MARK} %{{http_code}}\\n' \"$@\"; }}\n"
)


# --------------------------------------------------------------------------- reading the documents


def documents() -> list[Path]:
    """README.md, then every page of docs/, as paths relative to the repository root."""
    return [Path("README.md"), *sorted(p.relative_to(REPO_ROOT) for p in DOCS.glob("*.md"))]


@dataclass(frozen=True)
class Block:
    """One fenced code block of a document, under the nearest heading above it."""

    document: str
    language: str
    heading: str
    code: str
    line: int

    def where(self) -> str:
        return f"{self.document}:{self.line} ({self.language} block under {self.heading!r})"


@dataclass(frozen=True)
class Document:
    blocks: tuple[Block, ...]
    prose: dict[str, str]  # text outside fences, by heading
    headings: tuple[str, ...]
    lines: int


@functools.cache
def parse(document: str) -> Document:
    """The fenced blocks of ``document`` (a path relative to the repository root), and the prose
    (text outside fences) of each heading."""
    blocks: list[Block] = []
    prose: dict[str, list[str]] = {}
    headings: list[str] = []
    heading, fence, body = "", None, []
    text = (REPO_ROOT / document).read_text()
    for number, line in enumerate(text.splitlines(), 1):
        if fence is not None:
            if line.startswith("```"):
                code = "".join(f"{x}\n" for x in body)
                blocks.append(Block(document, fence[0], heading, code, fence[1]))
                fence, body = None, []
            else:
                body.append(line)
        elif line.startswith("```"):
            fence = (line[3:].strip(), number)
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
            headings.append(heading)
        else:
            prose.setdefault(heading, []).append(line)
    assert fence is None, f"{document}:{fence[1]}: a code fence is never closed"
    return Document(
        blocks=tuple(blocks),
        prose={key: "\n".join(lines) for key, lines in prose.items()},
        headings=tuple(headings),
        lines=len(text.splitlines()),
    )


def all_blocks() -> list[Block]:
    return [block for document in documents() for block in parse(str(document)).blocks]


def readme_blocks() -> tuple[Block, ...]:
    return parse("README.md").blocks


def prose_of(document: str, heading: str) -> str:
    prose = parse(document).prose
    assert heading in prose, f"{document} has no section {heading!r}: {sorted(prose)}"
    return prose[heading]


def readme_prose(heading: str) -> str:
    return prose_of("README.md", heading)


def document_prose(document: str) -> str:
    """All the prose of a document, its headings' texts joined."""
    return "\n".join(parse(document).prose.values())


def inline_code() -> list[str]:
    """Every `inline code` span of the documents' prose."""
    return [
        span
        for document in documents()
        for text in parse(str(document)).prose.values()
        for span in re.findall(r"`([^`]+)`", text)
    ]


def join_continuations(code: str) -> str:
    return code.replace("\\\n", " ")


@dataclass(frozen=True)
class Example:
    """A fenced block, found by its document, its language, its heading and a fragment of its
    text."""

    language: str
    heading: str
    marker: str
    covered_by: str
    document: str = "README.md"

    def matches(self, block: Block) -> bool:
        return (
            block.document == self.document
            and block.language == self.language
            and block.heading == self.heading
            and self.marker in block.code
        )

    def block(self) -> Block:
        found = [block for block in parse(self.document).blocks if self.matches(block)]
        assert len(found) == 1, (
            f"expected one {self.language} block containing {self.marker!r} under "
            f"{self.heading!r} in {self.document}, found {[b.where() for b in found]}"
        )
        return found[0]


TOUR = "A five-minute tour"
DEPLOY = "Deploying with docker compose"
OWN_TASK = "Adding your own task"
OPTIM_CORE_DOC = "docs/optim_core.md"
TASKS_DOC = "docs/tasks.md"
ARCHITECTURE_DOC = "docs/architecture.md"

TWO_COMMANDS = Example("bash", "Two commands", "make run", "test_make_run; make test: .ci/run")
TOUR_CREATE = Example("bash", TOUR, '"name": "digits-compare"', "test_five_minute_tour")
TOUR_FOLLOW = Example("bash", TOUR, "/studies/digits-compare/best", "test_five_minute_tour")
TOUR_BEST_CONFIG = Example("json", TOUR, '"python":', "test_five_minute_tour")
TOUR_CLI = Example("bash", TOUR, "hpt study watch", "test_five_minute_tour")
TOUR_BEST_KNOWN = Example("bash", TOUR, "/api/v1/best?task=", "test_five_minute_tour")
TOUR_MISTAKE = Example("bash", TOUR, '"adamm"', "test_five_minute_tour")
DASHBOARD = Example(
    "bash", "optuna-dashboard", "make dashboard", "test_make_dashboard",
    document="docs/dashboard_and_report.md",
)  # fmt: skip
OPTIM_CORE = Example(
    "python",
    "`optim_core`: drop-in twins of `torch.optim`, and what a study searches",
    "optim_core.Adam(",
    "test_optim_core_drop_in_example",
    document=OPTIM_CORE_DOC,
)
SEARCH_SPACE = Example(
    "json", "What a study searches by default", '"search_space"', "test_search_space_example",
    document=OPTIM_CORE_DOC,
)  # fmt: skip
TASK_MODULE = Example(
    "python", OWN_TASK, "# my_tasks/iris.py", "test_own_task_example", document=TASKS_DOC
)
TASK_ENTRY_POINT = Example(
    "toml", OWN_TASK, '"hpt.tasks"', "test_own_task_example", document=TASKS_DOC
)
TASK_RUN = Example("python", OWN_TASK, "run_study(", "test_own_task_example", document=TASKS_DOC)
COMPOSE = Example(
    "bash",
    DEPLOY,
    "docker compose up",
    "tests/deploy (compose config, topology); test_deployment_commands_name_what_exists",
)
API_KEY = Example("bash", DEPLOY, "Bearer $HPT_API_KEY", "test_make_run")
MORE_MACHINES = Example(
    "bash",
    "Adding machines",
    "hpt worker",
    "tests/deploy/test_topology.py (workers on PostgreSQL); "
    "test_deployment_commands_name_what_exists",
)
ASK_TELL = Example(
    "python", "Tuning your own model (ask/tell)", "client.optimize(", "test_ask_tell_example"
)
IMPORT = Example(
    "json", "Bringing trials you ran before", '"trials":', "test_import_example",
    document="docs/ask_tell.md",
)  # fmt: skip
ARCHITECTURE_TREE = Example(
    "text", "The tree", "optim_core/", "test_architecture_tree_is_the_code",
    document=ARCHITECTURE_DOC,
)  # fmt: skip
SLOT_STATES = Example(
    "text", "The slot state machine", "claimed", "test_slot_state_diagram_is_the_lifecycle",
    document=ARCHITECTURE_DOC,
)  # fmt: skip

EXAMPLES = (
    TWO_COMMANDS,
    TOUR_CREATE,
    TOUR_FOLLOW,
    TOUR_BEST_CONFIG,
    TOUR_CLI,
    TOUR_BEST_KNOWN,
    TOUR_MISTAKE,
    DASHBOARD,
    OPTIM_CORE,
    SEARCH_SPACE,
    TASK_MODULE,
    TASK_ENTRY_POINT,
    TASK_RUN,
    COMPOSE,
    API_KEY,
    MORE_MACHINES,
    ASK_TELL,
    IMPORT,
    ARCHITECTURE_TREE,
    SLOT_STATES,
)


def command_lines(code: str) -> list[str]:
    """The commands of a shell block: continuations joined, comments and blank lines dropped."""
    lines = (
        re.sub(r"(^|\s+)#\s.*$", "", line).strip() for line in join_continuations(code).splitlines()
    )
    return [line for line in lines if line]


def at_url(code: str, base_url: str) -> str:
    """``code`` talking to ``base_url`` instead of the README's 127.0.0.1:8000."""
    assert README_URL in code, f"expected {README_URL} in:\n{code}"
    return code.replace(README_URL, base_url)


# --------------------------------------------------------------------------- running things


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without HPT_* (the tests decide those), plus ``extra``."""
    return {**clean_environment(), **TEST_ENV, **extra}


def describe(result: subprocess.CompletedProcess[str]) -> str:
    command = result.args if isinstance(result.args, str) else shlex.join(result.args)
    return (
        f"$ {command[:2000]}\nexit {result.returncode}\n"
        f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
    )


def run(
    args: Sequence[str],
    *,
    env: dict[str, str],
    timeout: float,
    cwd: Path = REPO_ROOT,
    stdin: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end; past ``timeout`` it is killed (with all it started) and fails."""
    with subprocess.Popen(
        list(args),
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as popen:
        try:
            stdout, stderr = popen.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)  # not reaped yet: the group is still ours
            stdout, stderr = popen.communicate()
            result = subprocess.CompletedProcess(list(args), -9, stdout, stderr)
            message = f"still running after {timeout:.0f}s:\n{describe(result)}"
            raise AssertionError(message) from None
    return subprocess.CompletedProcess(list(args), popen.returncode, stdout, stderr)


def run_bash(code: str, *, env: dict[str, str], timeout: float = COMMAND_TIMEOUT):
    """A README shell block as a user pastes it, from the repository root (``curl`` also prints
    each answer's status: see ``http_answers``)."""
    return run(
        ["bash", "-euo", "pipefail", "-c", CURL_WITH_STATUS + code], env=env, timeout=timeout
    )


def http_answers(result: subprocess.CompletedProcess[str]) -> list[tuple[int, Any]]:
    """(status, JSON body) of each curl of a block run by ``run_bash``, in order."""
    parts = re.split(rf"\n{HTTP_MARK} (\d{{3}})\n", result.stdout)
    answers = []
    for body, status in zip(parts[:-1:2], parts[1::2], strict=True):
        try:
            answers.append((int(status), json.loads(body)))
        except json.JSONDecodeError:
            raise AssertionError(f"an answer is not JSON: {body!r}\n{describe(result)}") from None
    return answers


def after_answers(result: subprocess.CompletedProcess[str]) -> str:
    """What a block printed after its last curl's answer."""
    return re.split(rf"\n{HTTP_MARK} \d{{3}}\n", result.stdout)[-1]


def hpt_script() -> str:
    return require_tool(venv_script("hpt"), "the hpt command", "make test installs the project")


def print_logs(processes: Sequence[ServiceProcess]) -> None:
    for process in processes:
        print(f"===== log of {process.name} (pid {process.pid}, exit {process.popen.poll()}): "
              f"{shlex.join(process.args)}")  # fmt: skip
        print(process.tail() or "(empty)")


@pytest.fixture
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Processes]:
    """Starts the test's long-running processes; SIGKILLs what is left of them when it ends, and
    prints their logs when it failed (pytest shows them under "Captured stdout teardown")."""
    directory = tmp_path / "processes"
    directory.mkdir()
    group = Processes(directory=directory, base_env=child_env())
    failed_before = request.session.testsfailed
    try:
        yield group
    finally:
        group.kill_all()
        if request.session.testsfailed > failed_before:
            print_logs(group.started)


def wait_for_http(process: ServiceProcess, url: str, timeout: float = START_TIMEOUT):
    """Poll ``url`` until it answers 200; fails at once, with the log, if ``process`` exits."""

    def answered() -> httpx.Response | None:
        if not process.alive():
            raise AssertionError(
                f"{process.name} exited with {process.popen.poll()} before {url} answered:\n"
                f"{process.tail()}"
            )
        response = httpx.get(url, timeout=5)
        return response if response.status_code == 200 else None

    def waiting_for() -> str:
        return f"{url} to answer 200; log of {process.name} so far:\n{process.tail()}"

    return wait_until(answered, timeout, 0.2, message=waiting_for)


def serve(processes: Processes, database_url: str, *args: str, **env: str) -> Server:
    """``hpt serve ARGS`` on a free port of 127.0.0.1, answering /healthz when it returns."""
    port = free_port()
    process = processes.start(
        "serve",
        [hpt_script(), "serve", "--port", str(port), *args],
        {"HPT_DATABASE_URL": database_url, **env},
    )
    server = Server(process=process, base_url=f"http://127.0.0.1:{port}", database_url=database_url)
    health = wait_for_http(process, f"{server.base_url}/healthz").json()
    assert health["status"] == "ok", health
    return server


def get_until_closed(port: int, path: str) -> bytes:
    """GET ``path`` over HTTP/1.0 from 127.0.0.1:``port``, reading until the server closes the
    connection; returns the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def stop_make(process: ServiceProcess) -> int:
    """SIGTERM ``make``, which passes it on to its recipe; returns make's exit code once every
    process it started (the program, and the workers of ``hpt serve``) is gone.

    Only make is signalled, not its whole process group: make passes a SIGTERM on, so the group's
    members would get two, and a second SIGTERM that lands while ``hpt dashboard`` is already
    stopping makes it exit with 130 (reported; not what this test is about).
    """
    os.kill(process.pid, signal.SIGTERM)
    code = process.wait(STOP_TIMEOUT)

    def group_gone() -> bool:
        # A process group outlives its leader while a member is left (and its id is not reused).
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(group_gone, STOP_TIMEOUT, 0.2, message=f"every process of {process.name} to exit")
    return code


def assert_stopped_cleanly(process: ServiceProcess, code: int, last_words: str) -> None:
    """Stopped, with no error on the way out."""
    # make dies of the SIGTERM it got (it re-raises it once its recipe has ended), so its own
    # code says nothing about the recipe's; a recipe that failed shows as "make: *** [...] Error".
    log = process.log()
    assert code in (0, -signal.SIGTERM), f"{process.name} exited with {code}:\n{process.tail()}"
    assert not re.search(r"make: \*\*\* .* Error", log), f"the recipe failed:\n{process.tail()}"
    assert "Traceback" not in log, f"{process.name} logged a traceback:\n{process.tail()}"
    assert last_words in log, f"{process.name} did not say {last_words!r}:\n{process.tail()}"


def make_command(target: str, args: str) -> list[str]:
    """``make TARGET ARGS="..."`` as the README runs it, from the repository root. The install
    stamp counts as up to date: installing is .ci/run's (``make test``) job, and tests never pip
    install."""
    make = require_tool(shutil.which("make"), "make", "apt-get install make")
    return [make, "-C", str(REPO_ROOT), "--no-print-directory",
            f"--assume-old={INSTALLED_STAMP}", target, f"ARGS={args}"]  # fmt: skip


def assert_make_runs(target: str, args: str, expected: str) -> list[str]:
    """``make -n`` of the target: it runs exactly ``expected`` and nothing else."""
    command = make_command(target, args)
    dry = run([command[0], "-n", *command[1:]], env=child_env(), timeout=COMMAND_TIMEOUT)
    assert dry.returncode == 0, describe(dry)
    assert dry.stdout.splitlines() == [expected], describe(dry)
    return command


# --------------------------------------------------------------------------- every block covered


def test_every_block_is_covered() -> None:
    assert readme_blocks(), "README.md has no code blocks?"
    for block in all_blocks():
        claims = [example for example in EXAMPLES if example.matches(block)]
        assert claims, (
            f"{block.where()} is run by no test: add it to EXAMPLES in tests/test_readme.py "
            f"with a test that runs or checks it (the documents' rule):\n{block.code}"
        )
        assert len(claims) == 1, f"{block.where()} is claimed twice: {claims}"
    for example in EXAMPLES:
        example.block()  # exactly one block each: no stale entries


# --------------------------------------------------------------------------- the five-minute tour


def tour_blocks() -> list[Block]:
    """The tour's shell blocks in README order; each is one of the five this test knows."""
    blocks = [b for b in readme_blocks() if b.heading == TOUR and b.language == "bash"]
    known = [TOUR_CREATE, TOUR_FOLLOW, TOUR_CLI, TOUR_BEST_KNOWN, TOUR_MISTAKE]
    assert blocks == [example.block() for example in known], (
        "the tour's shell blocks changed (added, removed or reordered): update "
        f"test_five_minute_tour; found {[b.where() for b in blocks]}"
    )
    return blocks


def expected_output(block: Block) -> re.Pattern[str]:
    """The output a block shows as ``# ...`` comments after its command, as a pattern: ``[...]``
    stands for any list and a trailing ``...`` for the rest."""
    lines = join_continuations(block.code).splitlines()
    shown = [line[1:].strip() for line in lines if line.startswith("#")]
    assert shown, f"{block.where()} shows no output"
    pieces = re.split(r"(\[\.\.\.\]|\s*\.\.\.)", " ".join(shown))
    pattern = "".join(
        r"\[[^\]]*\]" if piece == "[...]" else ".*" if piece.strip() == "..." else re.escape(piece)
        for piece in pieces
    )
    return re.compile(pattern, re.DOTALL)


def assert_shown_as(shown: Any, actual: Any, where: str = "") -> None:
    """``actual`` (an API answer) is what the README shows: the same keys and items, the same
    strings and integers, and floats equal to the decimals the README shows of them."""
    if isinstance(shown, dict):
        assert isinstance(actual, dict) and set(shown) == set(actual), (where, shown, actual)
        for key in shown:
            assert_shown_as(shown[key], actual[key], f"{where}.{key}")
    elif isinstance(shown, list):
        assert isinstance(actual, list) and len(shown) == len(actual), (where, shown, actual)
        for index, (item, real) in enumerate(zip(shown, actual, strict=True)):
            assert_shown_as(item, real, f"{where}[{index}]")
    elif isinstance(shown, decimal.Decimal):
        places = -shown.as_tuple().exponent
        assert isinstance(actual, float) and round(actual, places) == float(shown), (
            f"README shows {where} = {shown}, the run gave {actual}"
        )
    else:
        assert shown == actual, f"README shows {where} = {shown!r}, the run gave {actual!r}"


@pytest.mark.slow
def test_five_minute_tour(processes: Processes, sqlite_url: str, tmp_path: Path) -> None:
    scratch_dir = tmp_path / "cwd"
    scratch_dir.mkdir()
    create, follow, cli, best_known, mistake = tour_blocks()
    # One worker: trials then run in one order, so the numbers the README shows are the run's.
    server = serve(processes, sqlite_url, "--workers", "1")
    env = child_env(HPT_URL=server.base_url)
    with server.client() as client:
        # "compare plain SGD, heavy-ball momentum and Adam": the answer (201) is the study.
        result = run_bash(at_url(create.code, server.base_url), env=env)
        assert result.returncode == 0, describe(result)
        [(status, study)] = http_answers(result)
        assert status == 201, study
        assert study["name"] == "digits-compare"
        assert study["status"] in ("queued", "running"), study
        assert [o["optimizer"] for o in study["optimizers"]] == ["sgd", "momentum", "adam"]
        assert {"progress", "best", "eta"} <= set(study), sorted(study)

        # "Follow it, then read the best configuration of each optimizer and the overall winner."
        final = wait_for_status(client, "digits-compare", STUDY_TIMEOUT, processes=[server.process])
        assert final["status"] == "completed", final
        result = run_bash(at_url(follow.code, server.base_url), env=env)
        assert result.returncode == 0, describe(result)
        (s1, study), (s2, trials), (s3, best) = http_answers(result)
        assert (s1, s2, s3) == (200, 200, 200), describe(result)
        assert study["status"] == "completed"
        # 8 search trials per optimizer, then its best configs x 10 seeds of confirmation.
        assert study["progress"]["finished"] == study["progress"]["total"] > 24, study["progress"]
        assert study["phase"] == "completed"
        assert 0 < len(trials["items"]) <= 3, trials
        assert {trial["optimizer"] for trial in trials["items"]} == {"adam"}, trials
        assert {o["optimizer"] for o in best["optimizers"]} == {"sgd", "momentum", "adam"}, best
        # A winner only beyond seed noise; otherwise tied leaders, each with its line of Python.
        assert best["leaders"], best
        if best["winner"] is not None:
            assert best["winner"]["python"].startswith("optim_core."), best["winner"]
            assert best["leaders"] == [best["winner"]["optimizer"]], best

        # The README's sample best config is this run's, its numbers shortened as shown.
        sample = json.loads(TOUR_BEST_CONFIG.block().code, parse_float=decimal.Decimal)
        adam = next(o for o in best["optimizers"] if o["optimizer"] == sample["optimizer"])
        assert set(sample) <= set(adam), (
            f"README shows keys the API lacks: {set(sample) - set(adam)}"
        )
        assert_shown_as(sample, {key: adam[key] for key in sample})
        # 'The verdict of this study reads: "..."': this run's verdict, word for word.
        verdict = re.search(
            r'The\s+verdict\s+of\s+this\s+study\s+reads:\s+"([^"]+)"', readme_prose(TOUR)
        )
        assert verdict, "the sentence of the verdict is gone"
        assert " ".join(verdict[1].split()) == best["verdict"]["sentence"], best["verdict"]
        for row in best["optimizers"]:
            assert row["confirmed"]["value"]["n"] == DEFAULT_CONFIRM[1], row

        # The same from the command line: create, watch until it completes, best, list.
        result = run_bash(cli.code, env=env, timeout=STUDY_TIMEOUT)
        assert result.returncode == 0, describe(result)
        assert "Study digits-cli completed" in result.stdout, describe(result)
        assert "Winner:" in result.stdout or "Tied:" in result.stdout, describe(result)
        lines = [line.strip() for line in result.stdout.splitlines()]
        assert any(line.startswith("optim_core.") for line in lines), describe(result)
        assert "Studies (2)" in result.stdout, describe(result)
        study = client.get("/api/v1/studies/digits-cli").json()
        assert study["status"] == "completed", study
        # 8 search trials, then up to 2 distinct complete configs x 10 seeds each.
        assert all(
            o["search_trials"] == 8 and o["finished"] == o["n_trials"] and o["confirm_trials"] > 0
            for o in study["optimizers"]
        ), study["optimizers"]

        # The best known config for a task across all studies.
        result = run_bash(at_url(best_known.code, server.base_url), env=env)
        assert result.returncode == 0, describe(result)
        [(status, known)] = http_answers(result)
        assert status == 200, known
        assert {"digits-compare", "digits-cli"} <= set(known["studies"]), known["studies"]
        assert known["winner"]["python"].startswith("optim_core."), known["winner"]

        # A mistake comes back as a 4xx saying what to fix, as the block shows.
        result = run_bash(at_url(mistake.code, server.base_url), env=env)
        assert result.returncode == 0, describe(result)
        [(status, error)] = http_answers(result)
        assert status == 422, error
        assert "unknown optimizer 'adamm'" in json.dumps(error), error
        shown = expected_output(mistake)
        assert shown.match(json.dumps(error)), (
            f"the answer does not look like the README says:\n{json.dumps(error)}\n"
            f"README shows: {shown.pattern}"
        )

        # "Other things to try": each inline command of the tour's prose.
        scratch = {"name": "scratch", "task": "rosenbrock", "optimizers": ["sgd"], "n_trials": 500}
        study_for = {
            "trials": "digits-compare",
            "report": "digits-compare",
            "stop": "scratch",
            "delete": "scratch",
        }
        tried = []
        for span in re.findall(r"`((?:hpt|GET) [^`]+)`", readme_prose(TOUR)):
            if span.startswith("GET "):
                answer = client.get(span.removeprefix("GET "))
                assert answer.status_code == 200 and answer.json(), (span, answer.text)
            else:
                args = shlex.split(span)[1:]
                args = [study_for[args[1]] if arg == "NAME" else arg for arg in args]
                if args[:2] == ["study", "stop"]:  # something running to stop and delete
                    assert client.post("/api/v1/studies", json=scratch).status_code == 201
                # `hpt study delete NAME --yes` asks nothing: no input. The report is written
                # where the command runs: a scratch folder, not the repository.
                result = run(
                    [hpt_script(), *args], env=env, timeout=COMMAND_TIMEOUT, cwd=scratch_dir
                )
                if args[:2] == ["study", "report"]:
                    page = scratch_dir / "digits-compare-report.html"
                    assert 'class="plotly-graph-div"' in page.read_text(), describe(result)
                assert result.returncode == 0, describe(result)
                if args[:2] == ["study", "stop"]:
                    assert client.get("/api/v1/studies/scratch").json()["status"] == "stopped"
                if args[0] == "best":  # the best known config of the task: the winner's line
                    winner = client.get("/api/v1/best", params={"task": "digits_mlp"}).json()
                    assert winner["winner"]["python"] in result.stdout, describe(result)
            tried.append(span.split(" NAME")[0])
        assert tried == [
            "hpt tasks", "hpt optimizers", "GET /api/v1/tasks", "GET /api/v1/optimizers",
            "hpt study trials", "hpt study report", "hpt study stop", "hpt study delete",
            "hpt best --task digits_mlp",
        ]  # fmt: skip
        assert client.get("/api/v1/studies/scratch").status_code == 404


# --------------------------------------------------------------------------- optim_core

# Runs the snippet in two parts in one namespace (setup, then the training loop) to look at the
# model's loss before and after the loop.
SNIPPET_PROBE = """
import json, sys
import torch

lines = sys.argv[1].splitlines(keepends=True)
loop = next(i for i, line in enumerate(lines) if line.startswith("for "))
namespace = {"__name__": "__main__"}


def state():
    model, x, y, optimizer = (namespace[name] for name in ("model", "x", "y", "optimizer"))
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(x), y).item()
    return {
        "loss": loss,
        "lr": optimizer.param_groups[0]["lr"],
        "class": f"{type(optimizer).__module__}.{type(optimizer).__name__}",
        "torch_optimizer": isinstance(optimizer, torch.optim.Optimizer),
    }


exec(compile("".join(lines[:loop]), "README.md", "exec"), namespace)
before = state()
exec(compile("".join(lines[loop:]), "README.md", "exec"), namespace)
print(json.dumps({"before": before, "after": state()}))
"""


def test_optim_core_drop_in_example(tmp_path: Path) -> None:
    code = OPTIM_CORE.block().code
    result = run(
        [sys.executable, "-c", SNIPPET_PROBE, code],
        env=child_env(),
        cwd=tmp_path,
        timeout=SNIPPET_TIMEOUT,
    )
    assert result.returncode == 0, describe(result)
    probe = json.loads(result.stdout.splitlines()[-1])
    before, after = probe["before"], probe["after"]
    assert after["class"].startswith("optim_core.") and after["torch_optimizer"], probe
    assert after["loss"] < 0.95 * before["loss"], f"the loss did not go down: {probe}"
    assert after["lr"] < before["lr"], f"the scheduler did not act on the optimizer: {probe}"


# --------------------------------------------------------------------------- an API-only server


@pytest.fixture(scope="module")
def task_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory to put on PYTHONPATH holding the README's my_tasks package, "installed": its
    module and a distribution whose entry points are the README's pyproject.toml table."""
    root = tmp_path_factory.mktemp("site-packages")
    module = TASK_MODULE.block().code
    relative = module.splitlines()[0].removeprefix("#").strip()
    assert relative == "my_tasks/iris.py", module.splitlines()[0]
    (root / "my_tasks").mkdir()
    (root / "my_tasks" / "__init__.py").write_text("")
    (root / relative).write_text(module)

    pyproject = tomllib.loads(TASK_ENTRY_POINT.block().code)
    groups = pyproject["project"]["entry-points"]
    dist_info = root / "my_tasks-0.0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: my_tasks\nVersion: 0.0.0\n")
    (dist_info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items())
            for group, points in groups.items()
        )
    )
    return root


@pytest.fixture(scope="module")
def _api_only_server(
    tmp_path_factory: pytest.TempPathFactory, task_package: Path
) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("api-only")
    group = Processes(directory=directory, base_env=child_env())
    try:
        yield serve(
            group,
            f"sqlite:///{directory / 'hpt.db'}",
            "--workers",
            "0",
            PYTHONPATH=str(task_package),  # the README's task "installed" next to hpt
        )
    finally:
        group.kill_all()


@pytest.fixture
def api_only(request: pytest.FixtureRequest, _api_only_server: Server) -> Iterator[Server]:
    """``hpt serve --workers 0`` (one per module), with the README's task package installed."""
    failed_before = request.session.testsfailed
    yield _api_only_server
    if request.session.testsfailed > failed_before:
        print_logs([_api_only_server.process])


def test_ask_tell_example(api_only: Server, tmp_path: Path) -> None:
    """The optimize example, run twice in a row as a user reruns a script: the first run tunes
    the study to completion (search, then confirmation), the second finds it complete and prints
    the same answer: the verdict's sentence, then the leaders' lines of Python."""
    code = at_url(ASK_TELL.block().code, api_only.base_url)
    printed = []
    for run_number in (1, 2):
        result = run(
            [sys.executable, "-c", code], env=child_env(), cwd=tmp_path, timeout=SNIPPET_TIMEOUT
        )
        assert result.returncode == 0, f"run {run_number}:\n{describe(result)}"
        assert "Traceback" not in result.stderr, f"run {run_number}:\n{describe(result)}"
        printed.append(result.stdout.splitlines()[-2:])
        with api_only.client() as client:
            study = client.get("/api/v1/studies/my-model").json()
            best = client.get("/api/v1/studies/my-model/best").json()
        assert study["status"] == "completed", study
        assert study["n_trials"] == 5, study
        assert study["model"] == "linear-demo", study
        optimizers = [row["optimizer"] for row in study["optimizers"]]
        assert optimizers == ["sgd", "adam"], study
        confirmed = DEFAULT_CONFIRM.top_k * DEFAULT_CONFIRM.seeds
        for row in study["optimizers"]:
            assert row["search_trials"] == 5 and 0 < row["confirm_trials"] <= confirmed, row
            assert (row["finished"], row["running"], row["waiting"]) == (row["n_trials"], 0, 0)
        assert best["basis"] == "verdict", best
        leaders = [r["python"] for r in best["optimizers"] if r["optimizer"] in best["leaders"]]
        assert printed[-1] == [best["answer"], " ".join(leaders)], describe(result)
    assert printed[0][1].startswith("optim_core."), printed
    assert printed[1] == printed[0], "the second run did not find the same answer"
    # Every trial of the second run's study is the first run's: nothing ran twice.
    totals = [row["n_trials"] for row in study["optimizers"]]
    for optimizer, total in zip(optimizers, totals, strict=True):
        assert_exact_trials(api_only.database_url, "my-model", [optimizer], total)


def test_import_example(api_only: Server) -> None:
    """The import body, sent as shown to an external study of those optimizers: each trial is
    imported with origin ``import``, the pruned one without a value."""
    body = json.loads(IMPORT.block().code)
    optimizers = sorted({trial["optimizer"] for trial in body["trials"]})
    request = {
        "name": "my-model-imported", "task": "external", "metric": "val_loss",
        "confirm": {"top_k": 0},
        "direction": "minimize", "optimizers": optimizers, "n_trials": 2,
    }  # fmt: skip
    with api_only.client() as client:
        assert client.post("/api/v1/studies", json=request).status_code == 201
        imported = client.post("/api/v1/studies/my-model-imported/trials/import", json=body)
        assert imported.status_code == 200, imported.text
        assert len(imported.json()["imported"]) == len(body["trials"])
        trials = client.get("/api/v1/studies/my-model-imported/trials").json()["items"]
    assert {t["origin"] for t in trials} == {"import"}
    assert sorted((t["optimizer"], t["state"]) for t in trials) == sorted(
        (t["optimizer"], t.get("state", "complete")) for t in body["trials"]
    )


def test_search_space_example(api_only: Server) -> None:
    override = json.loads("{" + SEARCH_SPACE.block().code + "}")["search_space"]
    request = {
        "name": "search-space-example", "task": "digits_mlp", "optimizers": list(override),
        "n_trials": 1, "search_space": override,
    }  # fmt: skip
    with api_only.client() as client:
        defaults = {o["name"]: o["default_space"] for o in client.get("/api/v1/optimizers").json()}
        created = client.post("/api/v1/studies", json=request)
        assert created.status_code == 201, created.text
        assert client.delete(f"/api/v1/studies/{request['name']}").status_code in (200, 204)

    for row in created.json()["optimizers"]:
        name, space, asked = row["optimizer"], row["search_space"], override[row["optimizer"]]
        assert set(space) == set(defaults[name]) | set(asked), (name, space)
        for param, value in space.items():
            default = defaults[name].get(param)
            if param not in asked:
                assert value == default, (name, param, value)
            elif not isinstance(asked[param], dict):
                assert value == asked[param], (name, param, value)  # a fixed value
            else:
                assert value | asked[param] == value, (name, param, value, asked[param])
                if "low" in asked[param] and "log" not in asked[param]:
                    # "a range without "log" keeps the default's scale"
                    assert value["log"] == default.get("log", False), (name, param, value)
                if isinstance(default, dict) and default.get("one_minus"):
                    # "A range for momentum, betas or alpha ... is still searched as 1 - value"
                    assert value["one_minus"] == asked[param].get("one_minus", True), value


def test_own_task_example(api_only: Server, task_package: Path, tmp_path: Path) -> None:
    env = child_env(PYTHONPATH=str(task_package), HPT_URL=api_only.base_url)
    result = run(
        [sys.executable, "-c", TASK_RUN.block().code],
        env=env,
        cwd=tmp_path,
        timeout=SNIPPET_TIMEOUT,
    )
    assert result.returncode == 0, describe(result)
    value, hyperparameters = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert float(value) > 0.8, describe(result)  # iris: far above chance (1/3)
    assert {"lr", "batch_size"} <= set(ast.literal_eval(hyperparameters)), describe(result)

    # "restart them, and iris_mlp appears in GET /api/v1/tasks": this server started with it.
    result = run([hpt_script(), "tasks"], env=env, timeout=COMMAND_TIMEOUT)
    assert result.returncode == 0, describe(result)
    assert re.search(r"\biris_mlp\b", result.stdout), describe(result)
    with api_only.client() as client:
        names = [task["name"] for task in client.get("/api/v1/tasks").json()]
    assert "iris_mlp" in names, names


# --------------------------------------------------------------------------- configuration


def subcommands(command: Any) -> dict[str, Any]:
    """The subcommands of a command group of ``hpt`` (typer's click), by name; {} for a command."""
    return dict(getattr(command, "commands", {}))


def test_configuration_table_is_the_settings() -> None:
    rows = {}
    for line in readme_prose("Configuration").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`HPT_"):
            rows[cells[0].strip("`")] = (cells[1].strip("`"), cells[2])
    assert Settings.model_config["env_prefix"] == "HPT_"
    fields = {f"HPT_{name.upper()}": field for name, field in Settings.model_fields.items()}
    assert list(rows) == list(fields), "the table's variables are not the Settings' fields"
    for variable, field in fields.items():
        default, what = rows[variable]
        if field.default_factory is not None:
            # Computed at start-up ("one per core"): the setting's own description says so.
            assert default in (field.description or ""), (variable, default, field.description)
        else:
            assert default == ("unset" if field.default is None else str(field.default)), variable
        assert what == field.description, (variable, what, field.description)

    # `hpt study ...` reads HPT_URL (default ...) and HPT_API_KEY.
    match = re.search(
        r"`hpt study \.\.\.` reads `(\w+)` \(default `([^`]+)`\) and `(\w+)`",
        readme_prose("Configuration"),
    )
    assert match, "the sentence on what `hpt study ...` reads is gone"
    url_variable, url_default, key_variable = match.groups()
    assert url_default == DEFAULT_URL
    study = subcommands(typer.main.get_command(build_app()))["study"]
    for command in subcommands(study).values():
        envvars = {param.name: param.envvar for param in command.params}
        assert envvars["url"] == url_variable, (command.name, envvars)
        assert envvars["api_key"] == key_variable, (command.name, envvars)


# --------------------------------------------------------------------------- stated defaults


def sentences(text: str) -> list[str]:
    """The sentences of some prose: each table row is one, and each paragraph is split after
    its full stops."""
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.splitlines()
        found += [line for line in lines if line.lstrip().startswith("|")]
        flowing = " ".join(line.strip() for line in lines if not line.lstrip().startswith("|"))
        found += [sentence for sentence in re.split(r"(?<=[.!?])\s+", flowing) if sentence]
    return found


def words(text: str) -> str:
    return " ".join(text.split())


# How a document writes a confirmation of K configs x S seeds.
CONFIRM_SHAPES = (
    re.compile(r'"top_k":\s*(\d+),\s*"seeds":\s*(\d+)'),
    re.compile(r"\b(\d+) best configs?\b[^.;]*? on (\d+) (?:fresh )?(?:training )?seeds"),
    re.compile(r"\b(\d+) (?:configs? )?x (\d+)\b"),
)
VERDICT_DOC = "docs/verdict.md"


def test_confirmation_default_is_stated_once() -> None:
    """The confirmation's default is stated in one sentence of one document, as the code's
    ``DEFAULT_CONFIRM``; every other mention of a confirmation's size is a measurement, which
    never calls itself the default. The reasons are headed by the same numbers."""
    statements = []
    for document in map(str, documents()):
        for sentence in sentences(document_prose(document)):
            shapes = {
                tuple(map(int, match.groups()))
                for pattern in CONFIRM_SHAPES
                for match in pattern.finditer(sentence)
            }
            if shapes and re.search(r"\bdefault", sentence, re.IGNORECASE):
                statements.append((document, sentence, shapes))
    assert len(statements) == 1, (
        "the confirmation's default must be stated once, in docs/verdict.md: "
        f"{[(document, sentence) for document, sentence, _ in statements]}"
    )
    [(document, sentence, shapes)] = statements
    assert document == VERDICT_DOC, (document, sentence)
    assert shapes == {DEFAULT_CONFIRM}, f"{sentence!r} states {shapes}, the code {DEFAULT_CONFIRM}"
    top_k, seeds = DEFAULT_CONFIRM
    headings = parse(VERDICT_DOC).headings
    assert f"Why {seeds} seeds" in headings and f"Why {top_k} configs" in headings, headings
    # The README's tour says what confirmation is and sends the reader there for its size.
    assert "(docs/verdict.md)" in readme_prose(TOUR)


def test_api_states_the_confirmation_default() -> None:
    """The API's own description of ``confirm`` (the /docs page) names the same default."""
    from service.api.schemas import StudyCreate

    description = StudyCreate.model_fields["confirm"].description or ""
    match = CONFIRM_SHAPES[0].search(description)
    assert match and tuple(map(int, match.groups())) == DEFAULT_CONFIRM, description


def test_cli_states_the_confirmation_default() -> None:
    """``hpt study create --help`` names the same default as the code and the documents."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(build_app(), ["study", "create", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    top_k, seeds = DEFAULT_CONFIRM
    assert f"(0: no confirmation); default {top_k}." in text, text
    assert f"Fresh seeds per confirmed config; default {seeds}." in text, text


def test_api_fills_a_partial_confirm_from_the_default() -> None:
    """A request naming one key of ``confirm`` gets the other from ``DEFAULT_CONFIRM``, for a
    built-in task and for ``external`` alike."""
    from service.api.schemas import StudyCreate
    from service.config import Settings
    from service.studies.requests import StudyRequest, plan_study

    top_k, seeds = DEFAULT_CONFIRM
    for task in ("digits_mlp", "external"):
        body = {"name": "x", "task": task, "optimizers": ["sgd"], "n_trials": 2}
        if task == "external":
            body |= {"metric": "loss", "direction": "minimize"}

        def plan(confirm: dict[str, int] | None, body: dict = body) -> tuple[int, int]:
            request = StudyCreate(**body, confirm=confirm).model_dump()
            planned = plan_study(StudyRequest(**request), settings=Settings())
            return planned.confirm_top_k, planned.confirm_seeds

        assert plan({"seeds": 7}) == (top_k, 7)
        assert plan({"top_k": 1}) == (1, seeds)
        assert plan(None) == (top_k, seeds)
        assert plan({"top_k": 0}) == (0, 0)


SAMPLERS_DOC = "docs/samplers.md"


def test_samplers_and_pruners_are_the_registrys() -> None:
    from optim_core import OPTIMIZERS
    from studies.samplers import (
        DEFAULT_PRUNER,
        DEFAULT_SAMPLER,
        GRID_POINTS,
        PRUNERS,
        SAMPLERS,
        SOBOL_STARTUP_TRIALS,
        grid_from_space,
    )

    sampler_part = prose_of(SAMPLERS_DOC, "Samplers")
    pruner_part = prose_of(SAMPLERS_DOC, "Pruners")
    named = set(re.findall(r"`(\w+)`", sampler_part)) & (set(SAMPLERS) | set(PRUNERS))
    assert named == set(SAMPLERS), named
    named = set(re.findall(r"`(\w+)`", pruner_part)) & (set(SAMPLERS) | set(PRUNERS))
    assert named == set(PRUNERS), named
    # "`tpe` (the default: ...", "`hyperband` (the default: ...": the code's defaults, once each.
    for part, default in ((sampler_part, DEFAULT_SAMPLER), (pruner_part, DEFAULT_PRUNER)):
        defaults = re.findall(r"`(\w+)` \(the default", part)
        assert defaults == [default], (defaults, default)
    text = words(sampler_part)
    assert f"scrambled Sobol points for the first {SOBOL_STARTUP_TRIALS} trials" in text
    assert f"each continuous range becomes {GRID_POINTS} points" in text
    # "Sgd's default space is then 4 learning rates x 5 batch sizes = 20 configs"
    match = re.search(r"(\d+) learning rates x (\d+) batch sizes = (\d+) configs", text)
    assert match, text
    grid = grid_from_space(OPTIMIZERS["sgd"].space)
    sizes = (len(grid["lr"]), len(grid["batch_size"]), len(grid["lr"]) * len(grid["batch_size"]))
    assert tuple(map(int, match.groups())) == sizes, (match.groups(), grid)


FRACTIONS = {"a half": 1 / 2, "a third": 1 / 3, "a quarter": 1 / 4, "a fifth": 1 / 5,
             "a tenth": 1 / 10}  # fmt: skip


def test_warm_start_defaults_are_the_codes() -> None:
    from service.api.schemas import StudyCreate
    from service.studies.requests import StudyRequest
    from studies.warm_start import CATALOGUE_CONFIGS, MAX_WARM_START, WARM_START_SHARE

    text = words(document_prose("docs/warm_starts.md"))
    [catalogue] = re.findall(r"the best configs \(at most (\d+)\)", text)
    assert int(catalogue) == CATALOGUE_CONFIGS
    [(share, most)] = re.findall(r"(a \w+) of `n_trials`, at most (\d+)", text)
    assert FRACTIONS[share] == WARM_START_SHARE and int(most) == MAX_WARM_START, (share, most)
    [default] = re.findall(r'`"(\w+)"` \(the default', text)
    assert default == StudyRequest.__dataclass_fields__["warm_start"].default
    assert default == StudyCreate.model_fields["warm_start"].default


def test_stated_figures_of_the_code() -> None:
    """Defaults stated in passing: the verdict's test, divergence, the data splits, the
    device, the client's lease."""
    import inspect

    from service.client import HPTClient
    from studies.tasks.supervised import TEST_FRACTION, VAL_FRACTION
    from studies.training import DIVERGENCE_FACTOR
    from studies.verdict.statistics import DEFAULT_ALPHA, DEFAULT_CONFIDENCE

    verdict = words(document_prose(VERDICT_DOC))
    assert f"(adjusted p at most {DEFAULT_ALPHA:g})" in verdict
    assert f"{DEFAULT_CONFIDENCE:.0%} interval" in verdict
    assert f"{DEFAULT_CONFIDENCE:.0%} interval" in words(readme_prose(TOUR))
    tasks = words(document_prose(TASKS_DOC))
    assert f"a loss {DIVERGENCE_FACTOR:g} times its first" in tasks
    train = round(100 * (1 - VAL_FRACTION - TEST_FRACTION))
    assert f"({train}/{VAL_FRACTION:.0%}/{TEST_FRACTION:.0%})".replace("%", "") in tasks
    device = Settings.model_fields["device"].default
    assert f"`{device}`, the default" in words(document_prose("docs/gpu.md")), device
    lease = inspect.signature(HPTClient.optimize).parameters["lease_seconds"].default
    text = words(readme_prose("Tuning your own model (ask/tell)"))
    assert f"renews the trial's lease ({lease:g} s, `lease_seconds=`)" in text


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the markdown tables in ``text``, as lists of cells."""
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and not set("".join(cells)) <= set("-: "):
            rows.append(cells)
    return rows


def test_task_table_is_the_registry() -> None:
    from studies.tasks import BUILTIN_TASKS, available_tasks

    tasks = available_tasks()
    heading = "Tasks: what a trial trains, and adding your own"
    rows = [row for row in table_rows(prose_of(TASKS_DOC, heading)) if row[0].startswith("`")]
    assert [row[0].strip("`") for row in rows] == list(BUILTIN_TASKS)
    for name, _, metrics, epochs, _ in rows:
        task = tasks[name.strip("`")]
        shown = [metric.split(" (")[0] for metric in metrics.split(", ")]
        assert shown[0] == task.default_metric, (name, shown)
        assert sorted(shown) == sorted(task.metrics), (name, shown)
        [direction] = re.findall(r"\((max|min)\)", metrics)
        assert task.metrics[task.default_metric].startswith(direction), (name, metrics)
        assert int(epochs) == task.default_epochs, (name, epochs)


def parse_space_cell(cell: str, spaces: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A cell of the default search space table as the JSON of a space; ``as sgd`` and
    ``adam's`` refer to rows above, a bare ``batch_size`` to sgd's choices."""
    space: dict[str, Any] = {}
    number = r"([0-9.e+-]+)"
    for part in re.split(r";\s*|,?\s*plus\s+", cell):
        part = part.strip()
        if match := re.fullmatch(r"as (\w+)|(\w+)'s", part):
            space.update(spaces[match[1] or match[2]])
        elif match := re.fullmatch(rf"(\w+) with 1 - \w+ in \[{number}, {number}\]( log)?", part):
            low, high = 1 - float(match[3]), 1 - float(match[2])
            space[match[1]] = {"low": low, "high": high, "log": bool(match[4]), "one_minus": True}
        elif match := re.fullmatch(rf"(\w+) \[{number}, {number}\]( log)?", part):
            space[match[1]] = {"low": float(match[2]), "high": float(match[3]),
                               "log": bool(match[4])}  # fmt: skip
        elif match := re.fullmatch(r"(\w+) \{([\d, ]+)\}", part):
            space[match[1]] = {"choices": [int(x) for x in match[2].split(",")]}
        elif part == "batch_size":
            space[part] = spaces["sgd"]["batch_size"]
        else:
            raise AssertionError(f"cannot read {part!r} of {cell!r}")
    return space


def test_default_search_space_table_is_the_registry() -> None:
    from optim_core import OPTIMIZERS
    from optim_core.spaces import space_to_json

    spaces: dict[str, dict[str, Any]] = {}
    for names, cell in table_rows(prose_of(OPTIM_CORE_DOC, "What a study searches by default")):
        for name in re.findall(r"`(\w+)`", names):
            spaces[name] = parse_space_cell(cell, spaces)
    assert list(spaces) == list(OPTIMIZERS)
    for name, shown in spaces.items():
        actual = space_to_json(OPTIMIZERS[name].space)
        assert set(shown) == set(actual), (name, shown, actual)
        for key, dimension in actual.items():
            assert set(shown[key]) == set(dimension), (name, key, shown[key], dimension)
            for field, value in dimension.items():
                assert shown[key][field] == pytest.approx(value), (name, key, field, shown[key])


# --------------------------------------------------------------------------- the documents


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_readme_is_short_and_links_every_page() -> None:
    lines = parse("README.md").lines
    assert lines < README_MAX_LINES, (
        f"README.md has {lines} lines: it is for users; move depth to docs/ (issue 21)"
    )
    pages = {str(page) for page in documents()[1:]}
    assert {"docs/verdict.md", "docs/warm_starts.md", "docs/benchmarks.md",
            "docs/architecture.md", "docs/development.md"} <= pages, pages  # fmt: skip
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)(?:#[\w-]*)?\)", README.read_text()))
    assert pages <= linked, f"README.md links no {sorted(pages - linked)}"


def test_links_and_anchors_resolve() -> None:
    for document in documents():
        source = REPO_ROOT / document
        for target in re.findall(r"\]\(([^)\s]+)\)", source.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (source.parent / path).resolve() if path else source
            assert linked.exists(), f"{document}: link to {target}: no such file"
            if anchor:
                headings = parse(str(linked.relative_to(REPO_ROOT))).headings
                anchors = {github_anchor(heading) for heading in headings}
                assert anchor in anchors, f"{document}: link to {target}: no such heading"


REPOSITORY_PATH = re.compile(r"(?:optim_core|studies|service|bench|tests|docs)/[\w./*-]*")


def test_named_paths_exist() -> None:
    """Every repository path a document names in `code` (after the reorganisation into
    folders, a stale path is the first thing to go wrong)."""
    for document in documents():
        for text in parse(str(document)).prose.values():
            for span in re.findall(r"`([^`\s]+)`", text):
                if REPOSITORY_PATH.fullmatch(span):
                    assert list(REPO_ROOT.glob(span.rstrip("/"))), f"{document}: `{span}` is gone"


def test_architecture_tree_is_the_code() -> None:
    """docs/architecture.md's tree names only what exists, and every module and folder of the
    three packages."""
    named: set[Path] = set()
    parent = Path()
    for line in ARCHITECTURE_TREE.block().code.splitlines():
        first = re.split(r" {3,}", line.strip(" "), maxsplit=1)[0] if line.strip() else ""
        if not first or line.startswith(" " * 4):
            continue  # a blank line or a description carried on
        indented = line.startswith("  ")
        for name in first.split():
            path = parent / name if indented else Path(name)
            if not indented and name.endswith("/"):
                parent = Path(name)
            assert (REPO_ROOT / path).exists(), f"{ARCHITECTURE_DOC}: the tree names {path}"
            named.add(path)
    for package in ("optim_core", "studies", "service"):
        for child in (REPO_ROOT / package).iterdir():
            if child.name in ("__init__.py", "__pycache__") or child.name.endswith(".egg-info"):
                continue
            assert Path(package) / child.name in named, f"the tree lacks {package}/{child.name}"


def test_slot_state_diagram_is_the_lifecycle() -> None:
    """docs/architecture.md draws the slot states and their changes as the lifecycle has them;
    the outcomes in parentheses are the vocabulary's."""
    from service.trials.lifecycle import TRANSITIONS
    from service.vocabulary import FINISHING_OUTCOMES, SlotOutcome, SlotState

    diagram = SLOT_STATES.block().code
    states = {str(state) for state in SlotState}
    drawn = " ".join(line.split("(")[0] for line in diagram.splitlines())
    assert {word for word in re.findall(r"[a-z]+", drawn)} == states, drawn
    # The arrows drawn: claimed -> running -> finished, and claimed or running -> released.
    arrows = {("claimed", "running"), ("running", "finished"), ("claimed", "released"),
              ("running", "released")}  # fmt: skip
    legal = {(str(state), str(to)) for state, targets in TRANSITIONS.items() for to in targets}
    assert legal == arrows, f"the lifecycle changed: redraw {ARCHITECTURE_DOC}'s diagram: {legal}"
    finished, released = re.findall(r"\(([^)]*)\)", diagram)
    finishing = {str(outcome) for outcome in FINISHING_OUTCOMES}
    assert {word.lower() for word in re.findall(r"[A-Z]+", finished)} == finishing, finished
    others = {str(outcome) for outcome in SlotOutcome} - finishing
    assert set(re.findall(r"[a-z]+", released.split(":")[0])) == others, released


# --------------------------------------------------------------------------- make run, dashboard


def test_make_run(processes: Processes, sqlite_url: str) -> None:
    assert "make run" in command_lines(TWO_COMMANDS.block().code)
    # `make run ARGS="--port 8001"` ... `export HPT_URL=http://127.0.0.1:8001`: that port, and
    # one worker (this test is about make and the API key).
    prose = readme_prose("Two commands")
    [readme_args] = re.findall(r'`make run ARGS="([^"]+)"`', prose)
    [readme_port] = re.findall(r"--port (\d+)", readme_args)
    assert f"`export HPT_URL=http://127.0.0.1:{readme_port}`" in prose, prose
    port, api_key = free_port(), "readme-test-key"
    args = readme_args.replace(readme_port, str(port)) + " --workers 1"
    command = assert_make_runs("run", args, f"{VENV_BIN}/hpt serve {args}")
    make = processes.start(
        "make-run", command, {"HPT_DATABASE_URL": sqlite_url, "HPT_API_KEY": api_key}
    )
    base_url = f"http://127.0.0.1:{port}"
    assert wait_for_http(make, f"{base_url}/healthz").json()["status"] == "ok"

    # The deployment section's API-key commands, their "..." filled with a tiny study.
    fill = {
        "curl": '-H \'Content-Type: application/json\' -d \'{"name": "key-curl", "task": '
        '"rosenbrock", "optimizers": ["sgd"], "n_trials": 1, "epochs": 2}\'',
        "hpt": "--name key-cli --task rosenbrock --optimizers sgd --n-trials 1 --epochs 2",
    }
    lines = command_lines(API_KEY.block().code)
    assert [line.split()[0] for line in lines] == list(fill), lines
    code = "".join(line.replace(" ...", f" {fill[line.split()[0]]}", 1) + "\n" for line in lines)
    env = child_env(
        HPT_URL=base_url, PATH=f"{REPO_ROOT / VENV_BIN}{os.pathsep}{os.environ['PATH']}"
    )
    refused = run_bash(at_url(code, base_url), env={**env, "HPT_API_KEY": "wrong"})
    # The curl prints the refusal; the hpt line fails with a message, not a traceback.
    assert refused.returncode != 0 and refused.stderr.strip(), describe(refused)
    assert "Traceback" not in refused.stderr, describe(refused)
    [(status, _)] = http_answers(refused)
    assert status in (401, 403), describe(refused)
    accepted = run_bash(at_url(code, base_url), env={**env, "HPT_API_KEY": api_key})
    assert accepted.returncode == 0, describe(accepted)
    [(status, study)] = http_answers(accepted)
    assert (status, study["name"]) == (201, "key-curl"), describe(accepted)
    assert "Created study key-cli" in after_answers(accepted), describe(accepted)
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for name in ("key-curl", "key-cli"):
            # Queued for the embedded worker: that `hpt serve` workers run studies is the tour's
            # business; here, that make runs it with the ARGS and stops it.
            assert client.get(f"/api/v1/studies/{name}").status_code == 200, name

    exit_code = stop_make(make)
    assert_stopped_cleanly(make, exit_code, "hpt serve stopped")


def test_make_dashboard(processes: Processes, sqlite_url: str) -> None:
    [line] = command_lines(DASHBOARD.block().code)
    assert line == "make dashboard", line
    port = free_port()
    args = f"--port {port}"
    command = assert_make_runs("dashboard", args, f"{VENV_BIN}/hpt dashboard {args}")
    make = processes.start("make-dashboard", command, {"HPT_DATABASE_URL": sqlite_url})
    wait_for_http(make, f"http://127.0.0.1:{port}/api/meta")
    # optuna-dashboard's server (wsgiref) swallows a SIGTERM that lands while it still handles a
    # request, and keeps serving (reported; not what this test is about): stop it once it has
    # finished the last one, which a request read to the closing of its connection shows.
    status_line = get_until_closed(port, "/api/meta").split(b"\r\n", 1)[0]
    assert b" 200 " in status_line, status_line
    exit_code = stop_make(make)
    assert_stopped_cleanly(make, exit_code, f"at http://127.0.0.1:{port} (Ctrl-C to stop)")


# --------------------------------------------------------------------------- command lines


def code_texts() -> list[str]:
    """Every piece of code of the documents: fenced blocks (not ``text`` diagrams) and inline
    spans."""
    code = [join_continuations(b.code) for b in all_blocks() if b.language != "text"]
    return code + inline_code()


def test_every_hpt_command_line_parses() -> None:
    """Every ``hpt ...`` of the documents (run or only mentioned) names real commands and
    options; a ``...`` stands for more options."""
    group = typer.main.get_command(build_app())
    seen = []
    for text in code_texts():
        for found in re.findall(r"(?<![\w/.-])hpt( [^`\n#]*)", text):
            args = shlex.split(found)
            command, path = group, ["hpt"]
            while subcommands(command) and args and args[0] != "..." and args[0][0] != "-":
                subcommand = subcommands(command).get(args[0])
                assert subcommand is not None, f"`hpt {found.strip()}`: no command {args[0]!r}"
                command, path, args = subcommand, [*path, args[0]], args[1:]
            if "..." in args:
                args = args[: args.index("...")]
                if not args:
                    seen.append(" ".join(path))
                    continue
            try:
                command.make_context(" ".join(path), list(args), resilient_parsing=False)
            except Exception as exc:  # typer's (vendored) click: UsageError, NoSuchOption ...
                if type(exc).__name__ == "Exit" and getattr(exc, "exit_code", 1) == 0:
                    seen.append(" ".join(path))  # an eager option such as --version
                    continue
                message = getattr(exc, "format_message", exc.__str__)()
                raise AssertionError(f"`hpt {found.strip()}`: {message}") from exc
            seen.append(" ".join(path))
    assert {"hpt serve", "hpt worker", "hpt dashboard", "hpt study create"} <= set(seen), seen


def test_deployment_commands_name_what_exists() -> None:
    """The compose commands and make targets the documents name exist; running them is the job
    of tests/deploy (compose config, the compose topology on local processes) and .ci/run."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([^\s:#=$()]+)\s*:(?!=)", makefile, re.MULTILINE))
    named = {
        target
        for text in code_texts()
        for target in re.findall(r"(?<![\w/.-])make ([\w.][\w.-]*)", text)
    }
    assert {"run", "test", "dashboard", ".env"} <= named, named
    assert named <= targets, f"documents name make targets the Makefile lacks: {named - targets}"
    assert "make test" in command_lines((REPO_ROOT / ".ci" / "run").read_text()), ".ci/run"

    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    compose_lines = [
        line for line in command_lines(COMPOSE.block().code) if line.startswith("docker compose")
    ]
    assert compose_lines, COMPOSE.block().code
    for line in compose_lines:
        args = shlex.split(line)[2:]
        assert args[0] == "up", line  # `up` of the repository's docker-compose.yml
        for i, arg in enumerate(args):
            if arg == "--scale":
                service = args[i + 1].split("=")[0]
                assert service in services, f"{line}: no service {service!r} in {COMPOSE_FILE}"
    assert {"build"} <= set(services["api"]), "`up --build` builds the image"

    # More machines: `HPT_DATABASE_URL=postgresql+psycopg://... hpt worker`.
    [line] = command_lines(MORE_MACHINES.block().code)
    *assignments, program, command = shlex.split(line)
    assert (program, command) == ("hpt", "worker") and command in SERVICE_COMMANDS, line
    settings_variables = {f"HPT_{name.upper()}" for name in Settings.model_fields}
    for assignment in assignments:
        variable, value = assignment.split("=", 1)
        assert variable in settings_variables, variable
        Settings(**{variable.removeprefix("HPT_").lower(): value})  # a valid value
