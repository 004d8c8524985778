"""Throughput of the service, end to end, against its two anchors. One run prints both ratios.

(a) A study of N digits_mlp trials (Adam, batch size 32, 20 epochs, random learning rate, no
    pruning) through ``hpt serve --workers 1`` (a real subprocess on a SQLite file), timed from the
    POST to the study's "completed", against a bare in-memory Optuna script doing the same trials
    with ``torch.optim.Adam`` in a plain textbook loop. Goal: the service >= 1.2x as fast (its
    faster trial loop pays for the storage, the API and the worker around it).
(b) ``hpt serve --workers 0`` with one ``hpt worker`` against two, on a fresh PostgreSQL database
    (created and dropped here). Goal: two workers >= 1.8x as fast as one.

Run: ``.venv/bin/python bench/service_throughput.py [--quick]``. Workers are started, and seen
registered, before the clock starts: the times are of trials, not of process start-up.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import _processes
import httpx
import numpy as np
import optuna
import sqlalchemy as sa
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from service.client import HPTClient
from service.store.database import make_engine
from service.store.tables import WorkerRow

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
GOAL_SERVICE_VS_BARE = 1.2
GOAL_TWO_VS_ONE_WORKER = 1.8
LR_RANGE = (1e-4, 1e-2)  # narrow enough that Adam never diverges (no early stops either side)
BATCH_SIZE = 32
START_TIMEOUT = 120.0
STUDY_TIMEOUT = 1800.0
STATUS_POLL = 0.5


@dataclass(frozen=True)
class BenchConfig:
    trials_a: int = 12
    trials_b: int = 16
    epochs: int = 20
    seed: int = 0
    worker_poll_interval: float = 0.1

    def study_request(self, name: str, n_trials: int) -> dict[str, object]:
        """The service's version of the study the bare script runs."""
        return {
            "name": name,
            "task": "digits_mlp",
            "optimizers": ["adam"],
            "n_trials": n_trials,
            "epochs": self.epochs,
            "sampler": "random",
            "pruner": "none",
            "seed": self.seed,
            "search_space": {
                "adam": {
                    "lr": {"low": LR_RANGE[0], "high": LR_RANGE[1], "log": True},
                    "batch_size": BATCH_SIZE,
                    "beta1": 0.9,
                    "beta2": 0.999,
                }
            },
        }


@dataclass(frozen=True)
class StudyTiming:
    """How long a study took, and how much of that its trials' own run times account for."""

    seconds: float
    trial_seconds: list[float]
    best: float

    def describe(self) -> str:
        inside = sum(self.trial_seconds)
        first, median = self.trial_seconds[0], statistics.median(self.trial_seconds)
        return (
            f"{self.seconds:7.2f} s  (trials' own time {inside:.2f} s: first {first:.2f} s, "
            f"median {median:.2f} s; best {self.best:.4f})"
        )


# --------------------------------------------------------------------------- (a) the anchor


def bare_optuna_seconds(n_trials: int, epochs: int, seed: int) -> StudyTiming:
    """The anchor: in-memory Optuna, torch.optim.Adam, a textbook hand-indexed mini-batch loop.

    Same data split (60/20/20 stratified, seed 0, features scaled on train), same MLP, batch size,
    epochs and learning-rate range as the service's study.
    """
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()

    x, y = load_digits(return_X_y=True)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.4, random_state=0, stratify=y
    )
    x_val, _, y_val, _ = train_test_split(
        x_rest, y_rest, test_size=0.5, random_state=0, stratify=y_rest
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    x_train = torch.tensor((x_train - mean) / std, dtype=torch.float32)
    x_val = torch.tensor((x_val - mean) / std, dtype=torch.float32)
    y_train = torch.tensor(y_train, dtype=torch.int64)
    y_val = torch.tensor(y_val, dtype=torch.int64)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", *LR_RANGE, log=True)
        torch.manual_seed(trial.number)
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        accuracy = 0.0
        for epoch in range(epochs):
            model.train()
            permutation = torch.randperm(len(x_train))
            for i in range(0, len(x_train), BATCH_SIZE):
                index = permutation[i : i + BATCH_SIZE]
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x_train[index]), y_train[index])
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                accuracy = (model(x_val).argmax(dim=1) == y_val).float().mean().item()
            trial.report(accuracy, epoch)
        return accuracy

    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed)
    )
    study.optimize(objective, n_trials=n_trials)
    seconds = time.perf_counter() - start
    trial_seconds = [trial.duration.total_seconds() for trial in study.trials if trial.duration]
    return StudyTiming(seconds, trial_seconds, study.best_value)


# --------------------------------------------------------------------------- processes


def hpt_command(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("hpt")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "service.cli", *args]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (a running trial finishes), then SIGKILL the whole group if it hangs."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                print(f"  {self.name} ignored SIGTERM for {timeout:.0f} s; killing it")
        with suppress(ProcessLookupError, PermissionError):  # already gone, with its group
            os.killpg(self.popen.pid, signal.SIGKILL)  # and whatever it started
        self.popen.wait()


@contextmanager
def processes(directory: Path, env: dict[str, str]) -> Iterator[Callable[..., Process]]:
    """``start(name, argv)``: processes with ``env`` and a log file each, all stopped at the end."""
    started: list[Process] = []

    def start(name: str, argv: Sequence[str]) -> Process:
        log_path = directory / f"{len(started):02d}-{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                list(argv),
                env=env,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = Process(name, popen, log_path)
        started.append(process)
        return process

    try:
        yield start
    except BaseException:
        for process in started:
            print(f"----- log of {process.name} (exit {process.popen.poll()}):\n{process.tail()}")
        raise
    finally:
        for process in reversed(started):
            process.stop()


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll until ``predicate`` is true; the server or the database not up yet counts as not yet."""
    _processes.wait_for(
        predicate, timeout, what, retry_on=(httpx.HTTPError, sa.exc.SQLAlchemyError)
    )


def start_serve(start: Callable[..., Process], workers: int) -> tuple[Process, str]:
    port = _processes.free_port()
    server = start("serve", hpt_command("serve", "--port", str(port), "--workers", str(workers)))
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if server.popen.poll() is not None:
            raise RuntimeError(f"hpt serve exited with {server.popen.returncode}")
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200

    wait_for(up, START_TIMEOUT, "hpt serve to answer /healthz")
    return server, url


def registered_workers(engine: sa.Engine, pids: set[int] | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(WorkerRow)
    if pids is not None:
        query = query.where(WorkerRow.pid.in_(pids))
    with engine.connect() as conn:
        return conn.scalar(query) or 0


def timed_study(url: str, request: dict[str, object]) -> StudyTiming:
    """Seconds from the POST to the study's completion.

    The end is the study's ``finished_at``, stamped on the database's clock when its last slot
    finished, and the start is taken just before the POST on this machine's clock (the database
    runs on this machine, so the two agree). So the status is
    polled only twice a second: a tight poll would steal CPU from the workers on a small machine.
    """
    name = str(request["name"])
    with HPTClient(url) as client:
        start = datetime.now(UTC)
        client.create_study(request)
        status = client.wait_for_study(name, timeout=STUDY_TIMEOUT, poll=STATUS_POLL)
        study = client.get_study(name)
        trials = client.trials(name, limit=500)["items"]
    if status != "completed":
        raise RuntimeError(f"study {name} ended {status}: {study.get('error')}")
    ordered = sorted(trials, key=lambda trial: trial["started_at"])
    return StudyTiming(
        seconds=(datetime.fromisoformat(study["finished_at"]) - start).total_seconds(),
        trial_seconds=[trial["duration_seconds"] for trial in ordered],
        best=study["best"]["value"],
    )


def base_env(config: BenchConfig, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPT_")}
    env.update(
        HPT_DATABASE_URL=database_url,
        HPT_POLL_INTERVAL=str(config.worker_poll_interval),
        HPT_LOG_LEVEL="warning",
        PYTHONPATH=str(REPO_ROOT),
    )
    return env


# --------------------------------------------------------------------------- (a) and (b)


def service_sqlite_seconds(config: BenchConfig, directory: Path) -> StudyTiming:
    """(a): ``hpt serve --workers 1`` on SQLite, POST to completed."""
    database_url = f"sqlite:///{directory / 'bench.db'}"
    with processes(directory, base_env(config, database_url)) as start:
        _, url = start_serve(start, workers=1)
        engine = make_engine(database_url)
        try:
            wait_for(lambda: registered_workers(engine) >= 1, START_TIMEOUT, "the embedded worker")
        finally:
            engine.dispose()
        return timed_study(url, config.study_request("bench-sqlite", config.trials_a))


def service_postgres_seconds(
    config: BenchConfig, directory: Path, database_url: str
) -> dict[int, StudyTiming]:
    """(b): ``hpt serve --workers 0`` and 1, then 2 ``hpt worker`` processes on PostgreSQL."""
    seconds: dict[int, StudyTiming] = {}
    with processes(directory, base_env(config, database_url)) as start:
        _, url = start_serve(start, workers=0)
        engine = make_engine(database_url)
        try:
            for count in (1, 2):
                workers = [start(f"worker{count}-{i}", hpt_command("worker")) for i in range(count)]
                pids = {w.popen.pid for w in workers}
                wait_for(
                    lambda pids=pids: registered_workers(engine, pids) == len(pids),
                    START_TIMEOUT,
                    f"{count} worker(s) to register",
                )
                request = config.study_request(f"bench-pg-{count}w", config.trials_b)
                seconds[count] = timed_study(url, request)
                for process in workers:
                    process.stop()
        finally:
            engine.dispose()
    return seconds


@contextmanager
def fresh_postgres_database(admin_url: str) -> Iterator[str]:
    """A new database on the server of ``admin_url`` (dropped afterwards); yields its URL."""
    import psycopg
    from psycopg import sql

    name = f"hpt_bench_{secrets.token_hex(4)}"
    admin = sa.engine.make_url(admin_url).set(drivername="postgresql")
    conninfo = admin.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin.set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def verdict(ratio: float, goal: float) -> str:
    return f"(goal >= {goal:.1f}x: {'met' if ratio >= goal else 'NOT met'})"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 trials of 5 epochs: a smoke run")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("HPT_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a database of the PostgreSQL server to create the bench database from",
    )
    parser.add_argument("--skip-postgres", action="store_true", help="run (a) only")
    args = parser.parse_args(argv)
    config = BenchConfig(trials_a=4, trials_b=4, epochs=5) if args.quick else BenchConfig()

    print(
        f"service throughput: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, optuna {optuna.__version__}, "
        f"load average {os.getloadavg()[0]:.1f}"
        + ("  [--quick: too short for meaningful ratios]" if args.quick else "")
    )
    print(
        f"study: digits_mlp, Adam, batch {BATCH_SIZE}, {config.epochs} epochs, random lr in "
        f"{LR_RANGE}, no pruning; workers poll every {config.worker_poll_interval} s when idle"
    )

    print(
        f"\n(a) {config.trials_a} trials: hpt serve --workers 1 (SQLite) vs bare in-memory Optuna"
    )
    bare = bare_optuna_seconds(config.trials_a, config.epochs, config.seed)
    print(f"    bare Optuna + torch.optim.Adam, textbook loop  {bare.describe()}")
    with tempfile.TemporaryDirectory(prefix="hpt-bench-") as tmp:
        service = service_sqlite_seconds(config, Path(tmp))
    ratio_a = bare.seconds / service.seconds
    print(f"    hpt serve --workers 1, POST -> completed       {service.describe()}")
    print(
        f"    service speed-up over bare: {ratio_a:.2f}x {verdict(ratio_a, GOAL_SERVICE_VS_BARE)}"
    )

    print(
        f"\n(b) {config.trials_b} trials on PostgreSQL: hpt serve --workers 0 + 1 vs 2 hpt worker"
    )
    if args.skip_postgres:
        print("    skipped (--skip-postgres)")
        return
    with ExitStack() as stack:
        try:
            database_url = stack.enter_context(fresh_postgres_database(args.postgres_url))
        except Exception as exc:  # no server: (a) is still worth having printed
            print(f"    skipped: cannot create a database on {args.postgres_url}: {exc}")
            return
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hpt-bench-")))
        seconds = service_postgres_seconds(config, directory, database_url)
    ratio_b = seconds[1].seconds / seconds[2].seconds
    print(f"    1 worker   {seconds[1].describe()}")
    print(f"    2 workers  {seconds[2].describe()}")
    print(f"    two workers over one: {ratio_b:.2f}x {verdict(ratio_b, GOAL_TWO_VS_ONE_WORKER)}")
    print(
        f"\nratios: service/bare {ratio_a:.2f}x, 2/1 workers {ratio_b:.2f}x "
        f"(load average now {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
