"""Cost that does not grow with history: the API's reads and ask/report/tell at 1,000, 10,000 and
100,000 stored trials, on SQLite and PostgreSQL.

For each backend, one database grows step by step to each size. It is filled through the
product's own bulk write path, in-process and without HTTP: the trial import of external studies
(:func:`service.trial_import.import_trials`, what ``POST .../trials/import`` runs), which takes a
slot per trial (:func:`service.lifecycle.claim_slot`), adds the finished Optuna trial (guarded by
its slot) and starts and finishes the slot (:func:`service.lifecycle.finish_slot`, which keeps
the counters and the best), exactly the rows ask/tell leaves behind. Each trial has random
hyperparameters inside its space, a value that depends on them, and five per-epoch values; one in
ten is pruned. The trials are those of external studies, as users would have them: one big study
(8 optimizers, up to 7,200 trials, so that it still takes asks) and studies of 4 optimizers x
1,000 trials. Several processes fill several studies at once.

At each size a real API server (uvicorn) on that database answers every read endpoint
(``--requests`` times each; median and p95), then ``--requests`` ask, report and tell cycles on
the big study (random sampler) through HTTP. The sampler's own work is timed apart, in-process, on
the big study's largest Optuna study: reading its history from the storage plus drawing one
config, for the random, TPE and QMC samplers (only this part may grow with history: the cap of
1,000 trials per optimizer bounds it).

Printed per backend: each figure at each size and its ratio to the figure at the first size, and
the database size per trial. Goal: every read and the service's part of ask/report/tell within
2x of its 1,000 figure at 100,000.

    .venv/bin/python bench/growth.py [--sizes 1000,10000,100000] [--backend sqlite|postgres|both]
        [--requests 30] [--processes 2]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import optuna
import sqlalchemy as sa

from optim_core.registry import OPTIMIZERS
from optim_core.spaces import sample_space, space_from_json
from service import optuna_bridge
from service.ask_tell import AskTell
from service.config import Settings
from service.database import Database, make_optuna_storage
from service.schema import upgrade_database
from service.schemas import MAX_IMPORTED_TRIALS
from service.slot_guard import SlotGuard
from service.study_admin import create_study
from service.study_requests import StudyRequest
from service.tables import StudyOptimizerRow, StudyRow
from service.trial_import import TrialToImport, import_trials
from studies.samplers import make_sampler

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN = os.environ.get(
    "HPT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BIG = "big"
METRIC = "loss"
ALL_OPTIMIZERS = sorted(OPTIMIZERS)
FILLER_OPTIMIZERS = ["sgd", "momentum", "adam", "adamw"]
PER_OPTIMIZER = 1000  # HPT_MAX_TRIALS' default
# The big study keeps this many free slots per optimizer for the ask/tell measurements.
BIG_HEADROOM = 100
BIG_CAPACITY = len(ALL_OPTIMIZERS) * (PER_OPTIMIZER - BIG_HEADROOM)
SAMPLERS = ("random", "tpe", "qmc")
# Trials one fill process imports in one go.
FILL_CHUNK = 2000


# --------------------------------------------------------------------------- databases


@contextmanager
def postgres_database() -> Iterator[str]:
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
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        yield f"sqlite:///{directory}/hpt.db"


BACKENDS: dict[str, Callable[[], contextmanager]] = {
    "sqlite": sqlite_database,
    "postgres": postgres_database,
}


def database_bytes(db: Database) -> int:
    with db.reader.connect() as conn:
        if db.reader.dialect.name == "sqlite":
            # The pages of the database as its readers see it (WAL included).
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
            return pages * conn.exec_driver_sql("PRAGMA page_size").scalar_one()
        return conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()


@contextmanager
def unsynced_commits(db: Database) -> Iterator[None]:
    """PostgreSQL: the fill's sessions commit without waiting for the WAL flush (the fill writes
    what the product writes; only its durability against a crash is lowered). The setting is
    back to the server's default before anything is measured. SQLite already syncs only at
    checkpoints (service.database)."""
    if db.writer.dialect.name != "postgresql":
        yield
        return
    with db.writer.connect() as conn:
        name = conn.exec_driver_sql("SELECT current_database()").scalar_one()
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        conn.commit()
    try:
        yield
    finally:
        with db.writer.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" RESET synchronous_commit')
            conn.commit()


# --------------------------------------------------------------------------- the fill


@dataclass
class Filler:
    """Grows the database through the product's write path (see the module's docstring)."""

    db: Database
    storage: optuna.storages.RDBStorage
    settings: Settings
    processes: int
    stored: int = 0
    studies: list[tuple[str, int]] = field(default_factory=list)  # (name, capacity)
    filled: dict[str, int] = field(default_factory=dict)

    def new_study(self, name: str, optimizers: list[str]) -> None:
        create_study(
            db=self.db,
            storage=self.storage,
            settings=self.settings,
            request=StudyRequest(
                name=name,
                task="external",
                optimizers=optimizers,
                n_trials=PER_OPTIMIZER,
                sampler="random",
                pruner="none",
                seed=len(self.studies),
                metric=METRIC,
                direction="minimize",
            ),
        )
        capacity = BIG_CAPACITY if name == BIG else len(optimizers) * PER_OPTIMIZER
        self.studies.append((name, capacity))
        self.filled[name] = 0

    def grow_to(self, size: int) -> None:
        """Add trials until ``size`` are stored: the big study first, then filler studies."""
        if not self.studies:
            self.new_study(BIG, ALL_OPTIMIZERS)
        plan: list[tuple[str, int]] = []
        missing = size - self.stored
        for name, capacity in self.studies:
            take = min(missing, capacity - self.filled[name])
            if take > 0:
                plan.append((name, take))
                missing -= take
        while missing > 0:
            name = f"history-{len(self.studies):04d}"
            self.new_study(name, FILLER_OPTIMIZERS)
            take = min(missing, len(FILLER_OPTIMIZERS) * PER_OPTIMIZER)
            plan.append((name, take))
            missing -= take
        # Chunks of a study run side by side, as several clients of one study would.
        chunks = [
            (self.db.url, name, min(FILL_CHUNK, count - start))
            for name, count in plan
            for start in range(0, count, FILL_CHUNK)
        ]
        context = multiprocessing.get_context("spawn")  # engines are never shared across a fork
        with unsynced_commits(self.db), context.Pool(self.processes) as pool:
            pool.starmap(fill_study, chunks, chunksize=1)
        for name, count in plan:
            self.filled[name] += count
        self.stored = size


def fill_study(url: str, name: str, count: int) -> None:
    """Import ``count`` trials into study ``name`` (one process), a request's worth at a time."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = Database.connect(url)
    storage = make_optuna_storage(url)
    at = AskTell(db, storage, SlotGuard.install(storage.engine))
    try:
        with db.read() as session:
            study_id = session.scalar(sa.select(StudyRow.id).where(StudyRow.name == name))
            free = {
                pair.optimizer: (pair.n_trials - pair.claimed, dict(pair.search_space))
                for pair in session.scalars(
                    sa.select(StudyOptimizerRow).where(StudyOptimizerRow.study_id == study_id)
                )
            }
        draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=count + study_id))
        left = count
        while left:
            batch = []
            for _ in range(min(left, MAX_IMPORTED_TRIALS)):
                optimizer = max(free, key=lambda o: free[o][0])  # the emptiest, as claims go
                room, raw_space = free[optimizer]
                free[optimizer] = (room - 1, raw_space)
                batch.append(random_trial(draw, optimizer, raw_space))
            import_trials(at, name, batch)
            left -= len(batch)
    finally:
        storage.engine.dispose()
        db.dispose()


def random_trial(draw: optuna.Study, optimizer: str, raw_space: dict) -> TrialToImport:
    """A finished trial with random hyperparameters inside the space: a value that depends on
    them and five per-epoch values, as a training run reports; one in ten pruned."""
    space = space_from_json(raw_space, OPTIMIZERS[optimizer].domains)
    trial = draw.ask()
    values = sample_space(trial, space)
    draw.tell(trial, state=optuna.trial.TrialState.FAIL)  # in memory, only to draw
    value = sum(abs(float(v)) for v in trial.params.values()) + 0.01 * (trial.number % 97)
    curve = {epoch: value * (1 + 1 / epoch) for epoch in range(1, 6)}
    if trial.number % 10 == 9:
        return TrialToImport(optimizer, values, state="pruned", intermediate_values=curve)
    return TrialToImport(optimizer, values, value=value, intermediate_values=curve)


# --------------------------------------------------------------------------- the API


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def api_server(url: str, log: Path) -> Iterator[httpx.Client]:
    env = {
        **os.environ,
        "HPT_DATABASE_URL": url,
        "HPT_WORKERS": "0",
        "HPT_LOG_LEVEL": "warning",
        "PYTHONPATH": str(ROOT),
    }
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "service.app:create_app",
        "--factory",
        "--port",
        str(port),
        "--no-access-log",
    ]
    with log.open("ab") as out:
        api = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or api.poll() is not None:
                raise SystemExit(f"the API did not start; see {log}")
            time.sleep(0.2)
        yield client
    finally:
        client.close()
        if api.poll() is None:
            os.killpg(api.pid, signal.SIGTERM)
            try:
                api.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(api.pid, signal.SIGKILL)
                api.wait()


def _timed(call: Callable[[], httpx.Response]) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, response


def read_paths(client: httpx.Client) -> dict[str, str]:
    """Every read endpoint, on the big study; the deep page is its last one."""
    study = f"/api/v1/studies/{BIG}"
    total = client.get(f"{study}/trials?limit=1").json()["total"]
    adam = client.get(f"{study}/trials?limit=1&optimizer=adam").json()["total"]
    return {
        "study detail": study,
        "trials page": f"{study}/trials?limit=50",
        "trials deep page": f"{study}/trials?limit=50&offset={max(0, total - 50)}",
        "trials ?optimizer": f"{study}/trials?limit=50&optimizer=adam&offset={adam // 2}",
        "trials ?state": f"{study}/trials?limit=50&state=complete",
        "trials ?state=running": f"{study}/trials?limit=50&state=running",
        "study best": f"{study}/best",
        "catalogue best": f"/api/v1/best?task=external&metric={METRIC}",
        "study list": "/api/v1/studies?limit=50",
        "/metrics": "/metrics",
    }


def measure_reads(client: httpx.Client, requests: int) -> dict[str, list[float]]:
    paths = read_paths(client)
    for path in paths.values():  # warm: connections, caches, imports
        _timed(lambda path=path: client.get(path))
    times: dict[str, list[float]] = {name: [] for name in paths}
    # Interleaved, so a noisy moment of the shared machine spreads over all of them.
    for _ in range(requests):
        for name, path in paths.items():
            times[name].append(_timed(lambda path=path: client.get(path))[0])
    return times


def measure_ask_tell(client: httpx.Client, requests: int) -> dict[str, list[float]]:
    base = f"/api/v1/studies/{BIG}/trials"
    times: dict[str, list[float]] = {"ask": [], "report": [], "tell": []}
    for i in range(requests + 1):
        elapsed, response = _timed(lambda: client.post(f"{base}/ask", json={}))
        asked = response.json()
        trial = f"{base}/{asked['optimizer']}/{asked['number']}"
        report = {"step": 1, "value": 0.5, "lease": asked["lease"]}
        reported, _ = _timed(lambda t=trial, r=report: client.post(f"{t}/report", json=r))
        tell = {"value": 1.0 + i, "lease": asked["lease"]}
        told, _ = _timed(lambda t=trial, r=tell: client.post(f"{t}/tell", json=r))
        if i:  # the first cycle warms up
            times["ask"].append(elapsed)
            times["report"].append(reported)
            times["tell"].append(told)
    return times


# --------------------------------------------------------------------------- the samplers


def measure_samplers(
    db: Database, storage: optuna.storages.RDBStorage, requests: int
) -> dict[str, list[float]]:
    """Optuna's own work for one ask on the big study's largest Optuna study: its history read
    from the storage (what a sampler that learns from it needs) and one config drawn from a copy
    of it in memory (so that nothing is written)."""
    name = optuna_bridge.optuna_study_name(BIG, "adam")
    study_id = storage.get_study_id_from_name(name)
    space = space_from_json(
        next(
            s.search_space
            for s in _pairs(db)
            if s.optuna_study_name == name  # the resolved space the study stores
        ),
        OPTIMIZERS["adam"].domains,
    )
    times: dict[str, list[float]] = {}
    read: list[float] = []
    for _ in range(requests):
        started = time.perf_counter()
        storage.get_all_trials(study_id, deepcopy=False)
        read.append(time.perf_counter() - started)
    times["history read"] = read
    memory = optuna.storages.InMemoryStorage()
    optuna.copy_study(
        from_study_name=name, from_storage=storage, to_storage=memory, to_study_name=name
    )
    for sampler in SAMPLERS:
        study = optuna.load_study(
            study_name=name, storage=memory, sampler=make_sampler(sampler, seed=0, space=space)
        )
        drawn = []
        for _ in range(requests):
            started = time.perf_counter()
            trial = study.ask()
            sample_space(trial, space)
            drawn.append(time.perf_counter() - started)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)  # in memory only
        times[f"sampler {sampler}"] = drawn
    return times


def _pairs(db: Database) -> list:
    with db.read() as session:
        return list(session.scalars(sa.select(StudyOptimizerRow)))


# --------------------------------------------------------------------------- the report


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if q == 0.5:
        return statistics.median(ordered) * 1000
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def run_backend(backend: str, sizes: list[int], requests: int, processes: int) -> None:
    results: dict[int, dict[str, list[float]]] = {}
    per_trial: dict[int, float] = {}
    fill_seconds: dict[int, float] = {}
    with BACKENDS[backend]() as url, tempfile.TemporaryDirectory() as logs:
        db = Database.connect(url)
        upgrade_database(db)
        storage = make_optuna_storage(url)
        filler = Filler(db, storage, Settings(database_url=url), processes)
        try:
            for size in sizes:
                started = time.monotonic()
                filler.grow_to(size)
                fill_seconds[size] = time.monotonic() - started
                per_trial[size] = database_bytes(db) / size
                print(
                    f"# {backend}: {size} trials stored in {len(filler.studies)} studies "
                    f"(filled in {fill_seconds[size]:.0f} s); measuring",
                    flush=True,
                )
                with api_server(url, Path(logs) / f"api-{size}.log") as client:
                    figures = measure_reads(client, requests)
                    figures.update(measure_ask_tell(client, requests))
                figures.update(measure_samplers(db, storage, requests))
                results[size] = figures
                # The asks and tells just measured added trials; they count from now on.
                filler.stored += requests + 1
                filler.filled[BIG] += requests + 1
                _print_table(backend, results, per_trial)
        finally:
            storage.engine.dispose()
            db.dispose()


def _print_table(
    backend: str, results: dict[int, dict[str, list[float]]], per_trial: dict[int, float]
) -> None:
    sizes = sorted(results)
    first = sizes[0]
    head = f"{backend:<9}{'':<24}" + "".join(f"{size:>24,}" for size in sizes)
    print(head)
    print(f"{'':<33}" + "".join(f"{'p50 ms  p95 ms  p50 ratio':>24}" for _ in sizes))
    for name in results[first]:
        cells = []
        for size in sizes:
            values = results[size][name]
            ratio = _ms(values, 0.5) / _ms(results[first][name], 0.5)
            cells.append(f"{_ms(values, 0.5):8.1f}{_ms(values, 0.95):8.1f}{ratio:7.2f}x")
        print(f"{'':<9}{name:<24}" + "".join(f"{cell:>24}" for cell in cells))
    print(
        f"{'':<9}{'bytes per trial':<24}" + "".join(f"{per_trial[size]:>24,.0f}" for size in sizes),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    logging.getLogger("optuna").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    chosen = list(BACKENDS) if args.backend == "both" else [args.backend]
    for backend in chosen:
        run_backend(backend, sizes, args.requests, args.processes)


if __name__ == "__main__":
    main()
