"""Fixtures shared by every test package: one database per test, on SQLite and PostgreSQL alike.

Storage-facing tests take ``database_url`` and run twice, like Optuna's storage tests:

- ``[sqlite]``: a fresh SQLite file in the test's ``tmp_path``;
- ``[postgres]``: a fresh database ``hpt_t_<hex>`` created on the server of
  ``HPT_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``) and
  dropped after the test.

Its schema is up to date: the migrations run once per test process into a template (a SQLite file,
a PostgreSQL database ``hpt_t_template_<hex>`` dropped at the end of the session), and each test
gets a copy of it (a file copy; ``CREATE DATABASE ... TEMPLATE``), as a database migrated from
empty would be, without paying every migration again. Tests of the migrations themselves take
``empty_database_url`` (or ``empty_sqlite_url`` / ``empty_postgres_url``): a database with
nothing in it.

The PostgreSQL half is marked ``postgres`` (``-m "not postgres"`` deselects it). Outside CI an
unreachable server skips it with the reason; under ``CI=true`` it fails, so a broken CI database
can never pass as green.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
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


@pytest.fixture(autouse=True)
def isolated_logging() -> Iterator[None]:
    """Each test starts with the root logger as the session left it: a command a test runs in
    process (``hpt ...`` through typer's runner) configures logging onto a stream that is
    closed once the test ends, and a later test's log lines would land on it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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


def _create_postgres_database(
    admin_url: URL, *, template: str | None = None, kind: str = ""
) -> str:
    """A new database ``hpt_t_<kind><hex>`` (a copy of ``template`` when given); returns its
    name."""
    import psycopg
    from psycopg import sql

    name = f"{DATABASE_PREFIX}{kind}{secrets.token_hex(6)}"
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(_psycopg_conninfo(admin_url), autocommit=True) as conn:
        conn.execute(statement)
    return name


def _drop_postgres_database(admin_url: URL, name: str) -> None:
    import psycopg
    from psycopg import sql

    # FORCE ends the sessions of any process the test left behind.
    with psycopg.connect(_psycopg_conninfo(admin_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _postgres_url_of(admin_url: URL, name: str) -> str:
    return admin_url.set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False
    )


def _migrate(url: str) -> None:
    """Every migration from empty, as a process of the service does at its first start."""
    from service.store.database import Database
    from service.store.migrate import upgrade_database

    db = Database.connect(url)
    try:
        upgrade_database(db)
    finally:
        db.dispose()


@pytest.fixture(scope="session")
def migrated_postgres_template(postgres_admin_url: URL) -> Iterator[str]:
    """Name of a PostgreSQL database migrated to the newest revision, copied by ``postgres_url``.

    One per test process (xdist workers each make their own), dropped at the end of the session.
    Nobody connects to it once migrated: ``CREATE DATABASE ... TEMPLATE`` needs it unused.
    """
    name = _create_postgres_database(postgres_admin_url, kind="template_")
    try:
        _migrate(_postgres_url_of(postgres_admin_url, name))
        yield name
    finally:
        _drop_postgres_database(postgres_admin_url, name)


@pytest.fixture
def postgres_url(postgres_admin_url: URL, migrated_postgres_template: str) -> Iterator[str]:
    """SQLAlchemy URL of a fresh PostgreSQL database, its schema up to date, dropped after the
    test."""
    name = _create_postgres_database(postgres_admin_url, template=migrated_postgres_template)
    try:
        yield _postgres_url_of(postgres_admin_url, name)
    finally:
        _drop_postgres_database(postgres_admin_url, name)


@pytest.fixture
def empty_postgres_url(postgres_admin_url: URL) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty PostgreSQL database, dropped after the test."""
    name = _create_postgres_database(postgres_admin_url)
    try:
        yield _postgres_url_of(postgres_admin_url, name)
    finally:
        _drop_postgres_database(postgres_admin_url, name)


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to the newest revision, copied by ``sqlite_url`` (one per process)."""
    path = tmp_path_factory.mktemp("template") / "hpt.db"
    _migrate(f"sqlite:///{path}")
    # Every connection is closed, so SQLite has folded its write-ahead log into the file: the
    # file alone is the whole database.
    assert not path.with_name(f"{path.name}-wal").exists(), "the template's WAL was left behind"
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, migrated_sqlite_template: Path) -> str:
    """SQLAlchemy URL of a fresh SQLite file in the test's directory, its schema up to date."""
    path = tmp_path / "hpt.db"
    shutil.copyfile(migrated_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def empty_sqlite_url(tmp_path: Path) -> str:
    """SQLAlchemy URL of a SQLite file not yet created, in the test's directory."""
    return f"sqlite:///{tmp_path / 'hpt.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh database of each backend in turn, its schema up to date (the test runs once per
    backend)."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database of each backend in turn: for the tests of the migrations."""
    return request.getfixturevalue(f"empty_{request.param}_url")


@pytest.fixture
def backend(database_url: str) -> str:
    """``"sqlite"`` or ``"postgres"``: the backend of this run of the test."""
    return "sqlite" if database_url.startswith("sqlite") else "postgres"
