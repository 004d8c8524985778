"""GET latency of the API while workers train, against the same with the workers idle.

For SQLite and PostgreSQL: a real API server (uvicorn) and two real `hpt worker` processes on one
database. The reads a person and a dashboard make (study detail, a page of trials, /metrics) are
timed from a client, first with no worker running (idle), then while both workers train trials
back to back (busy). Printed: p50 and p99 of each, and the busy/idle ratio of the p99.

Goal: p99 under load within 3x of idle on both backends (reads never wait for the workers'
writes: under SQLite's WAL they run beside the writer).

    .venv/bin/python bench/api_latency.py [--requests 300] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import _processes as processes
import httpx

ROOT = Path(__file__).resolve().parent.parent
PATHS = {
    "study detail": "/api/v1/studies/latency",
    "trials page": "/api/v1/studies/latency/trials?limit=50",
    "/metrics": "/metrics",
}
POSTGRES_ADMIN = os.environ.get(
    "HPT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ENV = {
    "HPT_HEARTBEAT_INTERVAL": "1",
    "HPT_GRACE_PERIOD": "5",
    "HPT_POLL_INTERVAL": "0.2",
    "HPT_LOG_LEVEL": "warning",
    "OMP_NUM_THREADS": "1",
}


@contextmanager
def _postgres_database() -> Iterator[str]:
    import psycopg

    name = f"hpt_bench_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        yield f"sqlite:///{directory}/hpt.db"


def _latencies(client: httpx.Client, path: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    return times


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def measure(url: str, requests: int, logs: Path) -> dict[str, dict[str, list[float]]]:
    env = {**os.environ, **ENV, "HPT_DATABASE_URL": url, "HPT_WORKERS": "0"}
    workers: list[subprocess.Popen[bytes]] = []
    results: dict[str, dict[str, list[float]]] = {}
    with processes.api_server(env, logs / "api.log", client_timeout=60) as client:
        try:
            client.post(
                "/api/v1/studies",
                json={
                    "name": "latency",
                    "task": "digits_mlp",
                    "optimizers": ["sgd", "adam"],
                    "n_trials": 400,
                    "epochs": 8,
                    "sampler": "random",
                    "pruner": "none",
                    "seed": 0,
                },
            ).raise_for_status()
            hpt = str(Path(sys.executable).with_name("hpt"))
            # Some history first, so the pages are full; then the workers stop.
            workers = [
                processes.start([hpt, "worker"], env, logs / f"worker{i}.log") for i in range(2)
            ]
            processes.wait_for(
                lambda: client.get(PATHS["study detail"]).json()["progress"]["finished"] >= 60,
                300,
                "history",
            )
            for worker in workers:
                processes.stop(worker)
            results["idle"] = {
                name: _latencies(client, path, requests) for name, path in PATHS.items()
            }
            workers = [
                processes.start([hpt, "worker"], env, logs / f"worker{i}b.log") for i in range(2)
            ]
            processes.wait_for(
                lambda: (
                    sum(
                        o["running"] for o in client.get(PATHS["study detail"]).json()["optimizers"]
                    )
                    >= 2
                ),
                120,
                "both workers to train",
            )
            results["busy"] = {
                name: _latencies(client, path, requests) for name, path in PATHS.items()
            }
            busy = client.get(PATHS["study detail"]).json()
            assert busy["status"] == "running", "the workers must still be training when measured"
        finally:
            for worker in workers:
                processes.stop(worker)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    backends = {"sqlite": _sqlite_database, "postgres": _postgres_database}
    chosen = list(backends) if args.backend == "both" else [args.backend]
    print(
        f"{'backend':<9} {'endpoint':<13} {'idle p50':>9} {'idle p99':>9} {'busy p50':>9} "
        f"{'busy p99':>9} {'p99 busy/idle':>14}"
    )
    for backend in chosen:
        try:
            database = backends[backend]()
            url = database.__enter__()
        except Exception as exc:  # no PostgreSQL here: say so, measure the rest
            print(f"{backend:<9} skipped: {exc}")
            continue
        try:
            with tempfile.TemporaryDirectory() as logs:
                results = measure(url, args.requests, Path(logs))
        finally:
            database.__exit__(None, None, None)
        for name in PATHS:
            idle, busy = results["idle"][name], results["busy"][name]
            ratio = _p(busy, 0.99) / _p(idle, 0.99)
            print(
                f"{backend:<9} {name:<13} {_p(idle, 0.5):8.1f}ms {_p(idle, 0.99):8.1f}ms "
                f"{_p(busy, 0.5):8.1f}ms {_p(busy, 0.99):8.1f}ms {ratio:13.2f}x"
            )


if __name__ == "__main__":
    main()
