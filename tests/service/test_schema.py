"""Schema migrations on SQLite and PostgreSQL: a database written by the first release is upgraded
by ``hpt db upgrade`` (the real console script), upgraded again to no effect, and read back
through a real API server; several processes upgrading at once all succeed; the models match the
migrations.

The first release's database is built the way it was made then: its tables as revision ``0001``
describes them, without a version table (``create_all`` made them), its rows as its code wrote
them (Python UTC times, ``lease_token``), and its Optuna studies and trials through Optuna's own
API.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from service.store import optuna_bridge
from service.store.database import Database
from service.store.migrate import VERSION_TABLE, head_revision
from service.store.tables import Base
from tests.service.conftest import _test_environment, hpt_command
from tests.service.support import Server

UPGRADE_TIMEOUT = 120.0

SGD = {"lr": 0.05, "batch_size": 32}
ADAM = {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "batch_size": 64}


# --------------------------------------------------------------------------- the first release


def _utcnow(seconds: float = 0.0) -> datetime:
    # The first release's clock: Python's, in naive UTC.
    return datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=seconds)


def create_first_release_tables(url: str) -> None:
    """Our tables exactly as revision 0001 (= the first release's ``create_all``) makes them."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(files("service.store") / "migrations"))
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
            connection.execute(sa.text(f"DROP TABLE {VERSION_TABLE}"))
    finally:
        engine.dispose()


def _old_trial(
    study: optuna.Study,
    value: float | None,
    values: dict[str, Any],
    state: optuna.trial.TrialState = optuna.trial.TrialState.COMPLETE,
) -> optuna.trial.FrozenTrial:
    # As the first release's worker recorded a trial: user-facing values and the test figure.
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)})
    trial.set_user_attr("hyperparameters", values)
    if state == optuna.trial.TrialState.COMPLETE:
        trial.set_user_attr("test_value", round(value - 0.02, 6))
        trial.set_user_attr("test_metrics", {"test_accuracy": round(value - 0.02, 6)})
        study.tell(trial, value)
    elif state != optuna.trial.TrialState.RUNNING:
        study.tell(trial, state=state)
    return next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)


def write_first_release_studies(url: str) -> dict[str, Any]:
    """Two studies as the first release left them; returns what a reader should find."""
    storage = optuna.storages.RDBStorage(url)
    # Each statement commits at once: on SQLite, Optuna's writes in between need the lock.
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    meta = sa.MetaData()
    meta.reflect(engine, only=["hpt_studies", "hpt_study_optimizers", "hpt_trial_slots"])
    studies, pairs, slots = (
        meta.tables["hpt_studies"],
        meta.tables["hpt_study_optimizers"],
        meta.tables["hpt_trial_slots"],
    )
    expected: dict[str, Any] = {}
    try:
        with engine.connect() as conn:
            # 1. A completed study of a trained task: 2 trials per optimizer, one failed trial.
            digits = conn.execute(
                sa.insert(studies)
                .values(
                    name="old-digits",
                    task="digits_mlp",
                    metric="val_accuracy",
                    direction="maximize",
                    epochs=3,
                    n_trials=2,
                    sampler="tpe",
                    pruner="median",
                    seed=0,
                    status="completed",
                    created_at=_utcnow(-600),
                    updated_at=_utcnow(-60),
                    finished_at=_utcnow(-60),
                )
                .returning(studies.c.id)
            ).scalar_one()
            for position, (optimizer, values, results) in enumerate(
                [("sgd", SGD, [0.91, None, 0.95]), ("adam", ADAM, [0.97, 0.93])]
            ):
                study = optuna.create_study(
                    storage=storage, study_name=f"old-digits/{optimizer}", direction="maximize"
                )
                finished = sum(r is not None for r in results)
                failed = len(results) - finished
                pair = conn.execute(
                    sa.insert(pairs)
                    .values(
                        study_id=digits,
                        position=position,
                        optimizer=optimizer,
                        optuna_study_name=f"old-digits/{optimizer}",
                        search_space={"lr": {"low": 1e-4, "high": 1.0, "log": True}},
                        n_trials=2,
                        claimed=finished,
                        issued=len(results),
                        finished=finished,
                        failed=failed,
                        last_claimed_at=_utcnow(-120),
                    )
                    .returning(pairs.c.id)
                ).scalar_one()
                for ordinal, result in enumerate(results, start=1):
                    state = (
                        optuna.trial.TrialState.COMPLETE
                        if result is not None
                        else optuna.trial.TrialState.FAIL
                    )
                    frozen = _old_trial(
                        study, result, {**values, "lr": values["lr"] * ordinal}, state
                    )
                    conn.execute(
                        sa.insert(slots).values(
                            study_optimizer_id=pair,
                            holder="old-worker-1",
                            state="finished" if result is not None else "released",
                            ordinal=ordinal,
                            trial_id=optuna_bridge.trial_id(frozen),
                            trial_number=frozen.number,
                            claimed_at=_utcnow(-300 + ordinal),
                            ended_at=_utcnow(-200 + ordinal),
                        )
                    )
            expected["old-digits"] = {
                "sgd": {"value": 0.95, "params": {**SGD, "lr": SGD["lr"] * 3}, "failed": 1},
                "adam": {"value": 0.97, "params": ADAM, "failed": 0},
            }

            # 2. A running ask/tell study: one trial told, one released (its lease ran out),
            #    one still leased to a client that will tell it after the upgrade.
            ext = conn.execute(
                sa.insert(studies)
                .values(
                    name="old-ext",
                    task="external",
                    metric="loss",
                    direction="minimize",
                    epochs=None,
                    n_trials=3,
                    sampler="random",
                    pruner="none",
                    seed=1,
                    status="running",
                    created_at=_utcnow(-500),
                    updated_at=_utcnow(-400),
                )
                .returning(studies.c.id)
            ).scalar_one()
            study = optuna.create_study(
                storage=storage, study_name="old-ext/adam", direction="minimize"
            )
            pair = conn.execute(
                sa.insert(pairs)
                .values(
                    study_id=ext,
                    position=0,
                    optimizer="adam",
                    optuna_study_name="old-ext/adam",
                    search_space={},
                    n_trials=3,
                    claimed=2,
                    issued=3,
                    finished=1,
                    failed=1,
                    last_claimed_at=_utcnow(-100),
                )
                .returning(pairs.c.id)
            ).scalar_one()
            told = _old_trial(study, 0.25, ADAM)
            expired = _old_trial(study, None, ADAM, optuna.trial.TrialState.FAIL)
            leased = _old_trial(study, None, {**ADAM, "lr": 0.002}, optuna.trial.TrialState.RUNNING)
            for ordinal, (frozen, state, token, expires) in enumerate(
                [
                    (told, "finished", "told-token", _utcnow(-100)),
                    (expired, "released", "expired-token", _utcnow(-50)),
                    (leased, "running", "live-token", _utcnow(3600)),
                ],
                start=1,
            ):
                conn.execute(
                    sa.insert(slots).values(
                        study_optimizer_id=pair,
                        holder="ask/tell",
                        state=state,
                        ordinal=ordinal,
                        trial_id=optuna_bridge.trial_id(frozen),
                        trial_number=frozen.number,
                        lease_token=token,
                        lease_expires_at=expires,
                        claimed_at=_utcnow(-300 + ordinal),
                        ended_at=None if state == "running" else _utcnow(-60),
                    )
                )
            expected["old-ext"] = {"told": told.number, "leased": leased.number}
    finally:
        engine.dispose()
        storage.engine.dispose()
    return expected


def hpt_db_upgrade(url: str) -> subprocess.CompletedProcess[str]:
    env = {**_test_environment(), "HPT_DATABASE_URL": url}
    return subprocess.run(
        hpt_command("db", "upgrade"),
        env=env,
        capture_output=True,
        text=True,
        timeout=UPGRADE_TIMEOUT,
        check=False,
    )


def our_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of our tables, to compare before and after."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        meta = sa.MetaData()
        meta.reflect(engine, only=lambda name, _: name.startswith("hpt_"))
        with engine.connect() as conn:
            return {
                name: [
                    tuple(row)
                    for row in conn.execute(sa.select(table).order_by(*table.primary_key.columns))
                ]
                for name, table in sorted(meta.tables.items())
            }
    finally:
        engine.dispose()


def version_of(url: str) -> str | None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE}
            ).get_current_revision()
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
def test_a_first_release_database_is_upgraded_once_and_read_back_through_the_api(
    empty_database_url: str, start_server: Callable[..., Server]
) -> None:
    database_url = empty_database_url
    create_first_release_tables(database_url)
    expected = write_first_release_studies(database_url)
    assert version_of(database_url) is None, "the first release kept no version"

    upgraded = hpt_db_upgrade(database_url)

    assert upgraded.returncode == 0, upgraded.stderr
    head = head_revision()
    assert f"upgraded the database from revision 0001 to {head}" in upgraded.stdout
    assert "filled in 5 finished trial(s)" in upgraded.stdout, upgraded.stdout
    assert version_of(database_url) == head
    # Upgrading again finds nothing to do and changes no row.
    before = our_rows(database_url)
    again = hpt_db_upgrade(database_url)
    assert again.returncode == 0, again.stderr
    assert f"the database is up to date (revision {head})" in again.stdout
    assert our_rows(database_url) == before

    server = start_server(database_url)
    with server.client() as api:
        listed = api.get("/api/v1/studies").json()
        assert {item["name"]: item["status"] for item in listed["items"]} == {
            "old-digits": "completed",
            "old-ext": "running",
        }

        digits = api.get("/api/v1/studies/old-digits").json()
        assert digits["status"] == "completed"
        assert digits["progress"] == {"finished": 4, "total": 4, "fraction": 1.0}
        for row in digits["optimizers"]:
            want = expected["old-digits"][row["optimizer"]]
            counts = (row["finished"], row["complete"], row["pruned"], row["failed"])
            assert counts == (2, 2, 0, want["failed"]), row
            assert row["running"] == 0
            assert (row["best"]["value"], row["best"]["params"]) == (want["value"], want["params"])
        assert digits["best"]["optimizer"] == "adam"

        best = api.get("/api/v1/studies/old-digits/best").json()
        assert [(b["optimizer"], b["value"]) for b in best["optimizers"]] == [
            ("adam", 0.97),
            ("sgd", 0.95),
        ]
        adam = best["optimizers"][0]
        assert adam["params"] == ADAM
        assert adam["test_value"] == pytest.approx(0.95)
        assert adam["python"] == "optim_core.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999))"
        across = api.get("/api/v1/best", params={"task": "digits_mlp"}).json()
        assert across["winner"]["study"] == "old-digits"
        assert (across["winner"]["optimizer"], across["winner"]["value"]) == ("adam", 0.97)

        trials = api.get("/api/v1/studies/old-digits/trials", params={"optimizer": "sgd"}).json()
        assert [(t["number"], t["state"], t["value"]) for t in trials["items"]] == [
            (0, "complete", 0.91),
            (1, "failed", None),
            (2, "complete", 0.95),
        ]
        assert trials["items"][2]["params"] == expected["old-digits"]["sgd"]["params"]
        assert trials["items"][2]["test_value"] == pytest.approx(0.93)

        ext = api.get("/api/v1/studies/old-ext").json()
        (row,) = ext["optimizers"]
        assert (row["finished"], row["complete"], row["running"], row["failed"]) == (1, 1, 1, 1)
        assert row["best"]["value"] == 0.25
        states = api.get("/api/v1/studies/old-ext/trials").json()["items"]
        assert [t["state"] for t in states] == ["complete", "failed", "running"]

        # The client holding the old lease tells its trial after the upgrade.
        number = expected["old-ext"]["leased"]
        stolen = api.post(
            f"/api/v1/studies/old-ext/trials/adam/{number}/tell",
            json={"value": 0.2, "lease": "told-token"},
        )
        assert stolen.status_code == 409
        told = api.post(
            f"/api/v1/studies/old-ext/trials/adam/{number}/tell",
            json={"value": 0.2, "lease": "live-token"},
        )
        assert told.status_code == 200, told.text
        ext = api.get("/api/v1/studies/old-ext").json()
        (row,) = ext["optimizers"]
        assert (row["finished"], row["running"], row["best"]["value"]) == (2, 0, 0.2)
        # Its third trial is claimed like any new one.
        asked = api.post("/api/v1/studies/old-ext/trials/ask")
        assert asked.status_code == 200, asked.text


def test_processes_upgrading_an_empty_database_at_once_all_succeed(
    empty_database_url: str,
) -> None:
    database_url = empty_database_url
    env = {**_test_environment(), "HPT_DATABASE_URL": database_url}
    upgrades = [
        subprocess.Popen(
            hpt_command("db", "upgrade"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = []
    try:
        for process in upgrades:
            out, err = process.communicate(timeout=UPGRADE_TIMEOUT)
            results.append((process.returncode, out, err))
    finally:
        for process in upgrades:
            if process.poll() is None:
                process.kill()

    assert [code for code, _, _ in results] == [0, 0, 0], results
    head = head_revision()
    said = sorted(
        "upgraded" if f"from revision empty to {head}" in out else "up to date"
        for _, out, _ in results
        if f"from revision empty to {head}" in out or "is up to date" in out
    )
    assert said == ["up to date", "up to date", "upgraded"], results
    assert version_of(database_url) == head
    assert set(our_rows(database_url)) >= {"hpt_studies", "hpt_study_optimizers", "hpt_trial_slots"}


def test_the_models_match_the_migrations(db: Database) -> None:
    # ``db``: a fresh database upgraded by the migrations, as every process does at start.
    engine = sa.create_engine(db.url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_name": lambda name, type_, parent: (
                        type_ != "table" or str(name).startswith("hpt_")
                    ),
                },
            )
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    others = [
        diff
        for diff in differences
        if not (diff[0] == "remove_table" and diff[1].name == VERSION_TABLE)
    ]
    assert others == []
