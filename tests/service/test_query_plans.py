"""Query plans of the paths whose cost must not grow with history: no full scan of the slot
table (``hpt_trial_slots``) to read a page of trials, the catalogue's best, a claim, the study
detail's held-slot counts or recovery's stale-slot scan.

The SQL is what the real functions send (captured on the Database's engines while they run); each
captured statement that reads the slot table is then explained with its own parameters: SQLite's
``EXPLAIN QUERY PLAN`` must ``SEARCH`` it (never ``SCAN``), PostgreSQL's ``EXPLAIN`` (with
sequential scans disabled, so that the planner reveals whether an index serves the query however
few rows the test holds) must reach it by an index condition, never a sequential scan or a walk
of a whole index.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
import pytest
from sqlalchemy import event

from optim_core.registry import OPTIMIZERS
from service.config import Settings
from service.store import optuna_bridge
from service.store.database import Database, make_optuna_storage
from service.studies import best_configs, progress, trial_list
from service.studies.admin import create_study
from service.studies.requests import StudyRequest
from service.trials import lifecycle, protocol, recovery
from service.trials.lifecycle import Ending
from service.vocabulary import SlotOutcome, TrialState
from tests.service.rows import start_sampled, study_id_of

SLOTS = "hpt_trial_slots"


@dataclass(frozen=True)
class Statement:
    sql: str
    parameters: Any


@contextmanager
def captured(db: Database) -> Iterator[list[Statement]]:
    """Every statement sent on the Database's engines inside the block."""
    statements: list[Statement] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if not executemany:
            statements.append(Statement(statement, parameters))

    engines = {id(e): e for e in (db.writer, db.reader)}.values()
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


def reads_slots(statement: Statement) -> bool:
    sql = statement.sql.lower()
    return SLOTS in sql and not sql.lstrip().startswith("insert")


def explain(db: Database, statement: Statement) -> list[str]:
    """Why ``statement`` would be slow as history grows: one line per offending access to the
    slot table (empty: every access is an index search)."""
    if db.writer.dialect.name == "sqlite":
        with db.reader.connect() as conn:
            rows = conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement.sql}", statement.parameters
            ).all()
        details = [row[-1] for row in rows]
        return [d for d in details if re.match(rf"SCAN (TABLE )?{SLOTS}\b", d)]
    with db.writer.connect() as conn, conn.begin():
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = conn.exec_driver_sql(
            f"EXPLAIN (FORMAT JSON) {statement.sql}", statement.parameters
        ).scalar_one()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return list(_pg_offences(plan[0]["Plan"]))


def _pg_offences(node: dict[str, Any]) -> Iterator[str]:
    if node.get("Relation Name") == SLOTS:
        kind = node["Node Type"]
        if kind == "Seq Scan":
            yield f"Seq Scan on {SLOTS} (filter: {node.get('Filter')})"
        elif kind in ("Index Scan", "Index Only Scan") and "Index Cond" not in node:
            yield f"{kind} of all of {node.get('Index Name')} (filter: {node.get('Filter')})"
    for child in node.get("Plans", []):
        yield from _pg_offences(child)


def index_conditions(db: Database, statement: Statement) -> str:
    """The index conditions used on the slot table, as one text (for what they constrain)."""
    if db.writer.dialect.name == "sqlite":
        with db.reader.connect() as conn:
            rows = conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement.sql}", statement.parameters
            ).all()
        return " | ".join(row[-1] for row in rows if SLOTS in row[-1])
    with db.writer.connect() as conn, conn.begin():
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        rows = conn.exec_driver_sql(f"EXPLAIN {statement.sql}", statement.parameters).all()
    return " | ".join(row[0] for row in rows)


# --------------------------------------------------------------------------- a small history

HISTORY_OPTIMIZERS = ["sgd", "adam"]


@pytest.fixture
def history(db: Database) -> Iterator[optuna.storages.RDBStorage]:
    """Two external studies of two optimizers: finished, pruned and still running trials,
    written through the product's ask/tell path."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_optuna_storage(db.url)
    settings = Settings(database_url=db.url)
    for name in ("older", "newer"):
        create_study(
            db=db,
            storage=storage,
            settings=settings,
            request=StudyRequest(
                name=name,
                task="external",
                model="history",
                confirm={"top_k": 0},
                optimizers=HISTORY_OPTIMIZERS,
                n_trials=20,
                sampler="random",
                pruner="none",
                seed=0,
                metric="loss",
                direction="minimize",
            ),
        )
        study_id = study_id_of(db, name)
        for i in range(6):
            claim = lifecycle.claim_slot(
                db, holder="test", study_id=study_id, external=True, lease_seconds=600
            )
            assert claim is not None
            trial, _ = start_sampled(db, storage, claim)
            trial.report(1.0 + i, step=1)  # a curve, as a training run reports it
            trial.set_user_attr("epochs_run", 1)
            if i >= 4:
                continue  # left running
            study = optuna_bridge.load_study(storage, claim.optuna_study_name)
            if i == 3:
                frozen = study.tell(trial.number, state=optuna.trial.TrialState.PRUNED)
            else:
                frozen = study.tell(trial.number, float(i))
            assert lifecycle.finish_slot(
                db, claim.slot_id, protocol.ending_of(frozen), token=claim.claim_token
            )
    yield storage
    storage.engine.dispose()


# --------------------------------------------------------------------------- the paths


def _trials_by_optimizer(db: Database, storage: Any) -> None:
    page = trial_list.list_trials(db, storage, name="older", optimizer="adam", limit=2, offset=1)
    assert page.total == 3 and len(page.items) == 2


def _trials_by_state(db: Database, storage: Any) -> None:
    page = trial_list.list_trials(
        db, storage, name="older", state=TrialState.COMPLETE, limit=2, offset=1
    )
    assert page.total == 3 and len(page.items) == 2


def _trials_unfiltered(db: Database, storage: Any) -> None:
    page = trial_list.list_trials(db, storage, name="older", limit=4, offset=3)
    assert page.total == 6 and len(page.items) == 3


def _catalogue_best(db: Database, storage: Any) -> None:
    found = best_configs.best_for_task(db, task="external", model="history", metric="loss", limit=1)
    assert {b.optimizer for b in found.optimizers} == {"sgd", "adam"}
    assert found.studies == ["newer"]


def _study_best(db: Database, storage: Any) -> None:
    assert best_configs.study_best(db, "older").optimizers[0].value == 0.0


def _study_detail(db: Database, storage: Any) -> None:
    view = progress.study_view(db, "newer", heartbeat_interval=1)
    assert sum(o.running for o in view.optimizers) == 2


def _claim(db: Database, storage: Any) -> None:
    assert lifecycle.claim_slot(db, holder="test", external=True, lease_seconds=600) is not None


def _stale_slot_scan(db: Database, storage: Any) -> None:
    recovery.recover(db, storage, grace_period=3600)


def _finish(db: Database, storage: Any) -> None:
    claim = lifecycle.claim_slot(
        db, holder="test", study_id=study_id_of(db, "newer"), external=True, lease_seconds=600
    )
    _, values = start_sampled(db, storage, claim)
    assert lifecycle.finish_slot(
        db,
        claim.slot_id,
        Ending(SlotOutcome.COMPLETE, value=-1.0, params=values),
        token=claim.claim_token,
    )


PATHS: dict[str, Callable[[Database, Any], None]] = {
    "trials page by optimizer": _trials_by_optimizer,
    "trials page by state": _trials_by_state,
    "trials page": _trials_unfiltered,
    "catalogue best": _catalogue_best,
    "study best": _study_best,
    "study detail": _study_detail,
    "claim": _claim,
    "recovery's stale-slot scan": _stale_slot_scan,
    "claim, start and finish": _finish,
}


def test_no_full_scan_of_the_slot_table(db: Database, history: Any) -> None:
    offences: dict[str, dict[str, list[str]]] = {}
    for path, run in PATHS.items():
        with captured(db) as statements:
            run(db, history)
        slot_reads = [s for s in statements if reads_slots(s)]
        assert slot_reads or path in ("catalogue best", "study best", "claim"), path
        found = {s.sql: why for s in slot_reads if (why := explain(db, s))}
        if found:
            offences[path] = found
    assert not offences, json.dumps(offences, indent=1)


# A page of one study's trials must be found by its (study, optimizer) pairs: an index on the
# state alone would also be a "search", but over the finished slots of every study ever run.
PAGE_KEY = "study_optimizer_id"


def test_pages_and_best_lookups_search_by_their_key(db: Database, history: Any) -> None:
    for path in ("trials page by optimizer", "trials page by state", "trials page"):
        with captured(db) as statements:
            PATHS[path](db, history)
        pages = [s for s in statements if reads_slots(s)]
        # The count and the page's ids, found by the study's pairs; then the page's rows, by id.
        assert len(pages) == 3, path
        for statement in pages[:2]:
            conditions = index_conditions(db, statement)
            assert PAGE_KEY in conditions, (path, conditions)
            if db.writer.dialect.name == "sqlite":
                # The count and the ids come from the index alone, never from slot rows (a row
                # carries its record): the cost of a page does not grow with the study's rows.
                # (PostgreSQL picks an index-only scan by its visibility map, not by the query:
                # not pinned there.)
                assert "COVERING INDEX" in conditions, (path, conditions)
        rows = index_conditions(db, pages[2])
        assert "PRIMARY KEY" in rows or "_pkey" in rows, (path, rows)
    # The study detail's recent durations (its ETA): each optimizer's latest finished slots,
    # a walk of that optimizer's own index entries.
    with captured(db) as statements:
        _study_detail(db, history)
    recent = [s for s in statements if reads_slots(s) and "ORDER BY" in s.sql]
    assert len(recent) == len(HISTORY_OPTIMIZERS)
    for statement in recent:
        conditions = index_conditions(db, statement)
        assert PAGE_KEY in conditions, ("study detail", conditions)
    # The catalogue: one lookup per optimizer, each an index search of the optimizer rows by
    # the optimizer's name (not a walk of every study's best values).
    with captured(db) as statements:
        _catalogue_best(db, history)
    lookups = [s for s in statements if "best_value" in s.sql and "ORDER BY" in s.sql]
    assert len(lookups) == len(OPTIMIZERS)
    for statement in lookups:
        searched = index_conditions_of(db, statement, "hpt_study_optimizers")
        assert any("optimizer" in line for line in searched), (statement.sql, searched)


def index_conditions_of(db: Database, statement: Statement, table: str) -> list[str]:
    """Plan lines that search ``table`` by an index (not a scan of all of it)."""
    if db.writer.dialect.name == "sqlite":
        with db.reader.connect() as conn:
            rows = conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement.sql}", statement.parameters
            ).all()
        return [row[-1] for row in rows if row[-1].startswith(f"SEARCH {table} ")]
    with db.writer.connect() as conn, conn.begin():
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = conn.exec_driver_sql(
            f"EXPLAIN (FORMAT JSON) {statement.sql}", statement.parameters
        ).scalar_one()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    found: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Relation Name") == table and "Index Cond" in node:
            found.append(node["Index Cond"])
        if node.get("Node Type") == "Bitmap Heap Scan" and node.get("Relation Name") == table:
            found.append(node.get("Recheck Cond", ""))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return found


def test_the_migrations_build_exactly_the_models_indexes(db: Database) -> None:
    """The indexes these plans rely on exist in a migrated database, not only in the models."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from service.store.tables import Base

    with db.writer.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    ours = [d for d in diff if _table_of(d).startswith("hpt_") and _table_of(d) != VERSION_TABLE]
    assert ours == []


VERSION_TABLE = "hpt_alembic_version"


def _table_of(difference: Any) -> str:
    # ("add_index", Index) / ("remove_table", Table) ..., or a list of column modifications
    # ("modify_type", schema, table, column, ...).
    if isinstance(difference, list):
        return _table_of(difference[0])
    kind, subject = difference[0], difference[1]
    if kind.startswith("modify_"):
        return difference[2]
    table = getattr(subject, "table", subject)
    return getattr(table, "name", "")


def test_a_page_of_ended_trials_reads_nothing_of_optuna(db: Database, history: Any) -> None:
    """Ended trials are shown from their slots' records, exactly as Optuna holds them; only a
    trial still running is read from Optuna."""
    storage = history
    optuna_reads: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        optuna_reads.append(statement)

    event.listen(storage.engine, "before_cursor_execute", record)
    try:
        ended = [
            *trial_list.list_trials(
                db, storage, name="older", state=TrialState.COMPLETE, limit=50, offset=0
            ).items,
            *trial_list.list_trials(
                db, storage, name="older", state=TrialState.PRUNED, limit=50, offset=0
            ).items,
        ]
        assert not optuna_reads, optuna_reads
        running = trial_list.list_trials(
            db, storage, name="older", state=TrialState.RUNNING, limit=50, offset=0
        ).items
        assert optuna_reads  # a running trial's progress is Optuna's
    finally:
        event.remove(storage.engine, "before_cursor_execute", record)
    assert len(ended) == 4 and len(running) == 2
    for item in ended + running:
        study = optuna_bridge.load_study(
            storage, optuna_bridge.optuna_study_name("older", item.optimizer)
        )
        frozen = study.trials[item.number]
        assert item.intermediate_values == frozen.intermediate_values
        assert item.epochs_run == frozen.user_attrs.get("epochs_run") == 1
