"""Cost that does not grow with history: the API's reads and ask/report/tell at 1,000, 10,000 and
100,000 stored trials, on SQLite and PostgreSQL.

For each backend, one database grows step by step to each size and is copied there (a snapshot
per size: SQLite's backup API, PostgreSQL's ``CREATE DATABASE ... TEMPLATE``). It is filled
through the product's own bulk write path, in-process and without HTTP: the trial import of
external studies (:func:`service.trials.imports.import_trials`, what ``POST .../trials/import``
runs), which takes a slot per trial (:func:`service.trials.lifecycle.claim_slot`), adds the finished
Optuna trial (guarded by its slot) and starts and finishes the slot
(:func:`service.trials.lifecycle.finish_slot`, which keeps the counters and the best), exactly the
rows
ask/tell leaves behind. Each trial has random hyperparameters inside its space, a value that
depends on them, and five per-epoch values; one in ten is pruned. The trials are those of
external studies, as users would have them: one big study (8 optimizers, up to 7,200 trials, so
that it still takes asks) and studies of 4 optimizers x 1,000 trials. Several processes fill
several studies at once.

Then every size is measured side by side, so that the ratios hold on a noisy machine: one real
API server (uvicorn) per snapshot, all up at once, taking turns request by request. Each read
endpoint is asked ``--requests`` times per size (median and p95), then ``--requests`` ask,
report and tell cycles run on the big study (random sampler) through HTTP. The sampler's own work
is timed apart, in-process, on the big study's largest Optuna study: reading its history from
the storage plus drawing one config, for the random, TPE and QMC samplers (only this part may
grow with history: the cap of 1,000 trials per optimizer bounds it).

Printed per backend: each figure at each size and its ratio to the figure at the first size, and
the database size per trial. Goal: every read and the service's part of ask/report/tell within
2x of its 1,000 figure at 100,000.

Filling 100,000 trials takes about an hour per backend here (Optuna's own trial writes are most
of it). ``--keep DIR`` keeps the databases (SQLite files under DIR, PostgreSQL databases
``hpt_growth_*``), so a fill can be done once (``--fill-only``, resumed where it stopped) and
measured by later runs with the same ``--keep``.

    .venv/bin/python bench/growth.py [--sizes 1000,10000,100000] [--backend sqlite|postgres|both]
        [--requests 30] [--processes 2] [--keep DIR] [--fill-only]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import secrets
import shutil
import sqlite3
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import _processes as processes
import httpx
import optuna
import sqlalchemy as sa

from optim_core.registry import OPTIMIZERS
from optim_core.spaces import sample_space, space_from_json
from service.api.schemas import MAX_IMPORTED_TRIALS
from service.config import Settings
from service.errors import Conflict
from service.store import optuna_bridge
from service.store.database import Database, make_optuna_storage
from service.store.migrate import upgrade_database
from service.store.tables import StudyOptimizerRow, StudyRow
from service.studies.admin import create_study
from service.studies.requests import StudyRequest
from service.trials.ask_tell import AskTell
from service.trials.guard import SlotGuard
from service.trials.imports import TrialToImport, import_trials
from studies.samplers import make_sampler

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


def _admin():
    import psycopg

    return psycopg.connect(POSTGRES_ADMIN, autocommit=True)


def _pg_url(name: str) -> str:
    base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}"


def _copy_sqlite(source: Path, target: Path) -> None:
    """SQLite's backup API (a consistent copy, WAL included) into a file that gets its name only
    once it is whole: an interrupted copy never passes for a snapshot."""
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    reader = sqlite3.connect(source)
    writer = sqlite3.connect(partial)
    try:
        reader.backup(writer)
    finally:
        writer.close()
        reader.close()
    os.replace(partial, target)


@dataclass(frozen=True)
class SqliteStore:
    """The growing database and its snapshots: files in ``directory``."""

    directory: Path
    name = "sqlite"

    def fill_url(self) -> str:
        return f"sqlite:///{self.directory}/fill.db"

    def snapshot(self, size: int) -> None:
        _copy_sqlite(self.directory / "fill.db", self.directory / f"at-{size}.db")

    def snapshot_url(self, size: int) -> str | None:
        path = self.directory / f"at-{size}.db"
        return f"sqlite:///{path}" if path.exists() else None

    @contextmanager
    def scratch(self, size: int) -> Iterator[str]:
        """A copy of the snapshot at ``size`` to measure on (the asks and tells write to it),
        removed after: the snapshot stays as it was filled."""
        path = self.directory / f"scratch-{size}.db"
        _copy_sqlite(self.directory / f"at-{size}.db", path)
        try:
            yield f"sqlite:///{path}"
        finally:
            for leftover in self.directory.glob(f"scratch-{size}.db*"):
                leftover.unlink()

    def drop(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(frozen=True)
class PostgresStore:
    """The growing database and its snapshots: databases ``<prefix>_fill``, ``<prefix>_<size>``."""

    prefix: str
    name = "postgres"

    def _names(self) -> set[str]:
        with _admin() as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{self.prefix}_%",)
            ).fetchall()
        return {row[0] for row in rows}

    def fill_url(self) -> str:
        name = f"{self.prefix}_fill"
        if name not in self._names():
            with _admin() as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        return _pg_url(name)

    def _copy(self, source: str, name: str) -> None:
        # A copy of the whole database (nobody may be connected to the source meanwhile).
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')

    def snapshot(self, size: int) -> None:
        self._copy(f"{self.prefix}_fill", f"{self.prefix}_{size}")

    def snapshot_url(self, size: int) -> str | None:
        name = f"{self.prefix}_{size}"
        return _pg_url(name) if name in self._names() else None

    @contextmanager
    def scratch(self, size: int) -> Iterator[str]:
        """A copy of the snapshot at ``size`` to measure on, dropped after."""
        name = f"{self.prefix}_scratch_{size}"
        self._copy(f"{self.prefix}_{size}", name)
        try:
            yield _pg_url(name)
        finally:
            with _admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop(self) -> None:
        with _admin() as conn:
            for name in self._names():
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def open_store(backend: str, keep: Path | None) -> SqliteStore | PostgresStore:
    """Where a backend's databases live: kept under ``keep`` (and a fixed PostgreSQL prefix) to
    be measured again or filled further by a later run, else somewhere that is removed after."""
    if backend == "sqlite":
        directory = (keep / "sqlite") if keep else Path(tempfile.mkdtemp(prefix="hpt-growth-"))
        directory.mkdir(parents=True, exist_ok=True)
        return SqliteStore(directory)
    return PostgresStore("hpt_growth" if keep else f"hpt_bench_{secrets.token_hex(4)}")


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
    checkpoints (service.store.database)."""
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
    studies: list[tuple[str, int]] = field(default_factory=list)  # (name, capacity)
    filled: dict[str, int] = field(default_factory=dict)  # name -> its trials stored

    @property
    def stored(self) -> int:
        """Trials stored in all the studies."""
        return sum(self.filled.values())

    @classmethod
    def resume(
        cls,
        db: Database,
        storage: optuna.storages.RDBStorage,
        settings: Settings,
        processes: int,
    ) -> Filler:
        """A filler that goes on from what the database already holds (nothing, at first)."""
        filler = cls(db, storage, settings, processes)
        with db.read() as session:
            for study in session.scalars(sa.select(StudyRow).order_by(StudyRow.id)):
                claimed = sum(pair.claimed for pair in study.optimizers)
                capacity = (
                    BIG_CAPACITY if study.name == BIG else len(study.optimizers) * PER_OPTIMIZER
                )
                filler.studies.append((study.name, capacity))
                filler.filled[study.name] = claimed
        return filler

    def new_study(self, name: str, optimizers: list[str]) -> None:
        create_study(
            db=self.db,
            storage=self.storage,
            settings=self.settings,
            request=StudyRequest(
                name=name,
                task="external",
                confirm={"top_k": 0},
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
            (self.db.url, name, min(FILL_CHUNK, count - start), self.filled[name] + start)
            for name, count in plan
            for start in range(0, count, FILL_CHUNK)
        ]
        context = multiprocessing.get_context("spawn")  # engines are never shared across a fork
        with unsynced_commits(self.db), context.Pool(self.processes) as pool:
            pool.starmap(fill_study, chunks, chunksize=1)
        for name, count in plan:
            self.filled[name] += count


def fill_study(url: str, name: str, count: int, first: int) -> None:
    """Import ``count`` trials into study ``name`` (one process), a request's worth at a time;
    ``first`` (the study's trials before this chunk's) seeds their hyperparameters.

    Several processes may fill one study: each batch is planned on the free slots read just
    before it, and a batch that another process's import made too big (a 409, nothing imported)
    is planned again.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = Database.connect(url)
    storage = make_optuna_storage(url)
    at = AskTell(db, storage, SlotGuard.install(storage.engine))
    try:
        seed = zlib.crc32(f"{name}/{first}".encode())
        draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        left = count
        while left:
            free = _free_slots(db, name)
            batch = []
            for _ in range(min(left, MAX_IMPORTED_TRIALS, sum(r for r, _ in free.values()))):
                optimizer = max(free, key=lambda o: free[o][0])  # the emptiest, as claims go
                room, raw_space = free[optimizer]
                free[optimizer] = (room - 1, raw_space)
                batch.append(random_trial(draw, optimizer, raw_space))
            if not batch:
                raise SystemExit(f"study {name!r} is full with {left} trials still to import")
            try:
                import_trials(at, name, batch)
            except Conflict:
                continue  # another process took some of those slots first: plan again
            left -= len(batch)
    finally:
        storage.engine.dispose()
        db.dispose()


def _free_slots(db: Database, name: str) -> dict[str, tuple[int, dict]]:
    """Per optimizer of study ``name``: its free slots and its search space."""
    with db.read() as session:
        pairs = session.scalars(
            sa.select(StudyOptimizerRow).join(StudyRow).where(StudyRow.name == name)
        )
        return {
            pair.optimizer: (pair.n_trials - pair.claimed, dict(pair.search_space))
            for pair in pairs
        }


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


@contextmanager
def api_server(url: str, log: Path) -> Iterator[httpx.Client]:
    env = {**os.environ, "HPT_DATABASE_URL": url, "HPT_LOG_LEVEL": "warning"}
    with processes.api_server(env, log) as client:
        yield client


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


def measure_reads(clients: dict[int, httpx.Client], requests: int) -> dict[int, dict]:
    """Every read endpoint on every size's server, a request at a time each in turn, so that a
    noisy moment of the shared machine falls on all sizes and endpoints alike."""
    paths = {size: read_paths(client) for size, client in clients.items()}
    for size, client in clients.items():  # warm: connections, caches, imports
        for path in paths[size].values():
            _timed(lambda path=path, client=client: client.get(path))
    times: dict[int, dict[str, list[float]]] = {
        size: {name: [] for name in paths[size]} for size in clients
    }
    for _ in range(requests):
        for name in paths[next(iter(clients))]:
            for size, client in clients.items():
                path = paths[size][name]
                times[size][name].append(_timed(lambda p=path, c=client: c.get(p))[0])
    return times


def measure_ask_tell(clients: dict[int, httpx.Client], requests: int) -> dict[int, dict]:
    """Ask, report and tell cycles on the big study of every size, the sizes taking turns."""
    base = f"/api/v1/studies/{BIG}/trials"
    times = {size: {"ask": [], "report": [], "tell": []} for size in clients}
    for i in range(requests + 1):
        for size, client in clients.items():
            elapsed, response = _timed(lambda c=client: c.post(f"{base}/ask", json={}))
            asked = response.json()
            trial = f"{base}/{asked['optimizer']}/{asked['number']}"
            report = {"step": 1, "value": 0.5, "lease": asked["lease"]}
            reported, _ = _timed(lambda c=client, t=trial, r=report: c.post(f"{t}/report", json=r))
            tell = {"value": 1.0 + i, "lease": asked["lease"]}
            told, _ = _timed(lambda c=client, t=trial, r=tell: c.post(f"{t}/tell", json=r))
            if i:  # the first cycle warms up
                times[size]["ask"].append(elapsed)
                times[size]["report"].append(reported)
                times[size]["tell"].append(told)
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


def fill_backend(store: SqliteStore | PostgresStore, sizes: list[int], processes: int) -> None:
    """Grow the store's fill database to each size and snapshot it there; a size already
    snapshotted is skipped, and a kept fill is grown on from where it stopped."""
    url = store.fill_url()
    db = Database.connect(url)
    upgrade_database(db)
    storage = make_optuna_storage(url)
    filler = Filler.resume(db, storage, Settings(database_url=url), processes)
    try:
        for size in sizes:
            if store.snapshot_url(size) is not None:
                continue
            if filler.stored > size:
                raise SystemExit(
                    f"{store.name}: the kept fill holds {filler.stored} trials, past {size}; "
                    "measure without that size or start afresh without --keep"
                )
            started = time.monotonic()
            filler.grow_to(size)
            print(
                f"# {store.name}: {size:,} trials stored in {len(filler.studies)} studies "
                f"(filled in {time.monotonic() - started:.0f} s)",
                flush=True,
            )
            storage.engine.dispose()
            db.dispose()
            store.snapshot(size)
    finally:
        storage.engine.dispose()
        db.dispose()


def measure_backend(store: SqliteStore | PostgresStore, sizes: list[int], requests: int) -> None:
    """Measure every size's snapshot side by side: one API server per size, all up at once,
    taking turns request by request; then print the table."""
    missing = [size for size in sizes if store.snapshot_url(size) is None]
    if missing:
        raise SystemExit(f"{store.name}: no snapshot at {missing}")
    per_trial: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as logs, ExitStack() as stack:
        # Measured on copies: the asks and tells write, and a kept snapshot must stay as filled.
        urls = {size: stack.enter_context(store.scratch(size)) for size in sizes}
        for size, url in urls.items():
            db = Database.connect(url)
            try:
                per_trial[size] = database_bytes(db) / _stored(db)
            finally:
                db.dispose()
        with ExitStack() as servers:
            clients = {
                size: servers.enter_context(api_server(url, Path(logs) / f"api-{size}.log"))
                for size, url in urls.items()
            }
            results = measure_reads(clients, requests)
            for size, figures in measure_ask_tell(clients, requests).items():
                results[size].update(figures)
        for size, url in urls.items():
            db = Database.connect(url)
            storage = make_optuna_storage(url)
            try:
                results[size].update(measure_samplers(db, storage, requests))
            finally:
                storage.engine.dispose()
                db.dispose()
    _print_table(store.name, results, per_trial)


def _stored(db: Database) -> int:
    with db.read() as session:
        return session.scalar(sa.select(sa.func.sum(StudyOptimizerRow.claimed))) or 0


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
    parser.add_argument("--requests", type=int, default=30, help="per figure and size")
    parser.add_argument("--processes", type=int, default=2, help="fill processes")
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep the databases (SQLite files here; PostgreSQL databases hpt_growth_*, the same "
        "for every DIR): a later run with --keep fills on from them, or only measures",
    )
    parser.add_argument("--fill-only", action="store_true", help="fill and snapshot; no measuring")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    logging.getLogger("optuna").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    chosen = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in chosen:
        store = open_store(backend, args.keep)
        try:
            fill_backend(store, sizes, args.processes)
            if not args.fill_only:
                measure_backend(store, sizes, args.requests)
        finally:
            if args.keep is None:
                store.drop()


if __name__ == "__main__":
    main()
