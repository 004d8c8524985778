"""Fixtures shared by every test package: one database per test, on SQLite and PostgreSQL alike.

Storage-facing tests take ``database_url`` and run twice, like Optuna's storage tests:

- ``[sqlite]``: a fresh SQLite file in the test's ``tmp_path``;
- ``[postgres]``: a fresh database ``hpt_t_<hex>`` created on the server of
  ``HPT_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``) and
  dropped after the test.

The PostgreSQL half is marked ``postgres`` (``-m "not postgres"`` deselects it). Outside CI an
unreachable server skips it with the reason; under ``CI=true`` it fails, so a broken CI database
can never pass as green.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL, make_url

from tests.processes import PROCESSES_KEY

POSTGRES_URL_ENV = "HPT_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE_PREFIX = "hpt_t_"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    # A failing test shows what its processes (servers, workers ...) logged: that is what makes
    # a CI failure debuggable without rerunning it. Fixtures leave them under PROCESSES_KEY.
    report = yield
    processes = item.stash.get(PROCESSES_KEY, None)
    if report.failed and processes is not None:
        for process in processes.started:
            report.sections.append((f"log of {process.describe()}", process.tail() or "(empty)"))
    return report


# Fixtures that start real processes (servers, workers, compose services): such a test takes
# seconds to a minute, most of the suite's time.
PROCESS_FIXTURES = frozenset({"processes", "local_processes"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Longest first: `make test` has xdist hand tests out in this order, two queued per worker
    # at most (--maxschedchunk=1; without it each worker takes a quarter of its share in one
    # block), so the slow process tests start at once, side by side, and the many quick ones fill
    # the gaps instead of a slow one coming last and running alone. The order is the same in
    # every xdist worker (a stable sort).
    items.sort(
        key=lambda item: (
            item.get_closest_marker("slow") is None,
            not PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())),
        )
    )


def running_under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _psycopg_conninfo(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_admin_url() -> URL:
    """URL of a database on the test PostgreSQL server from which test databases are created.

    Checked once per session; skips (fails under CI) when the server cannot be reached.
    """
    import psycopg

    url = make_url(os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL))
    try:
        with psycopg.connect(_psycopg_conninfo(url), connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        where = url.render_as_string(hide_password=True)
        message = (
            f"PostgreSQL at {where} is unreachable ({type(exc).__name__}: {exc}). "
            f"Start it (pg_ctlcluster <version> main start) or point {POSTGRES_URL_ENV} at one."
        )
        if running_under_ci():
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_url(postgres_admin_url: URL) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty PostgreSQL database, dropped after the test."""
    import psycopg
    from psycopg import sql

    name = f"{DATABASE_PREFIX}{secrets.token_hex(6)}"
    conninfo = _psycopg_conninfo(postgres_admin_url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield postgres_admin_url.set(
            drivername="postgresql+psycopg", database=name
        ).render_as_string(hide_password=False)
    finally:
        # FORCE ends the sessions of any process the test left behind.
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """SQLAlchemy URL of a fresh SQLite file in the test's directory."""
    return f"sqlite:///{tmp_path / 'hpt.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database of each backend in turn (the test runs once per backend)."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def backend(database_url: str) -> str:
    """``"sqlite"`` or ``"postgres"``: the backend of this run of the test."""
    return "sqlite" if database_url.startswith("sqlite") else "postgres"
