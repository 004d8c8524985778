"""The ``database_url`` fixture itself: both backends, fresh databases (migrated, or empty for
``empty_database_url``), and no silent skip in CI.

Runs a small test file in a nested pytest session (``pytester``) with the real top-level
conftest, so what is checked is what every storage test gets.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()
UNREACHABLE = "postgresql://postgres@127.0.0.1:9/postgres"  # the discard port: nobody listens

USES_BOTH_BACKENDS = """
import sqlalchemy as sa

from service.store.migrate import VERSION_TABLE, head_revision

PREFIXES = {"sqlite": "sqlite:///", "postgres": "postgresql+psycopg://"}

def test_fresh_database(database_url, backend, request):
    with open("urls.txt", "a") as seen:
        seen.write(database_url + "\\n")
    assert database_url.startswith(PREFIXES[backend])
    if backend == "postgres":
        assert sa.engine.make_url(database_url).database.startswith("hpt_t_")
        with open("templates.txt", "a") as seen:
            seen.write(request.getfixturevalue("migrated_postgres_template") + "\\n")
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE marker (id INTEGER)")  # fails if not fresh
        version = conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalar_one()
    engine.dispose()
    assert version == head_revision()  # migrated: the schema is up to date

def test_empty_database(empty_database_url):
    with open("urls.txt", "a") as seen:
        seen.write(empty_database_url + "\\n")
    engine = sa.create_engine(empty_database_url)
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == []
    engine.dispose()
"""


@pytest.fixture
def nested(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makeini(
        "[pytest]\naddopts = -p no:cacheprovider\nmarkers =\n    postgres: needs PostgreSQL\n"
    )
    pytester.makepyfile(test_backends=USES_BOTH_BACKENDS)
    return pytester


@pytest.mark.postgres
def test_both_backends_run_on_fresh_databases_and_postgres_ones_are_dropped(
    nested: pytest.Pytester, postgres_admin_url: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    monkeypatch.delenv("CI", raising=False)
    nested.runpytest().assert_outcomes(passed=4)

    urls = (nested.path / "urls.txt").read_text().split()
    assert sorted(url.split(":")[0] for url in urls) == [
        "postgresql+psycopg",
        "postgresql+psycopg",
        "sqlite",
        "sqlite",
    ]
    postgres = [make_url(url).database for url in urls if url.startswith("postgresql")]
    assert len(set(postgres)) == 2, postgres
    (template,) = (nested.path / "templates.txt").read_text().split()
    assert template.startswith("hpt_t_template_") and template not in postgres
    conninfo = postgres_admin_url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as conn:
        for name in [*postgres, template]:
            left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchall()
            assert not left, f"{name} was not dropped after the test (or the session)"


def test_unreachable_postgres_skips_with_its_reason_outside_ci(
    nested: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("HPT_TEST_POSTGRES_URL", UNREACHABLE)
    result = nested.runpytest("-rs")
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(["*PostgreSQL at *127.0.0.1:9* is unreachable*"])


def test_unreachable_postgres_fails_under_ci(
    nested: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("HPT_TEST_POSTGRES_URL", UNREACHABLE)
    result = nested.runpytest()
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 2 and not outcomes.get("skipped"), outcomes
    assert outcomes.get("errors", 0) + outcomes.get("failed", 0) == 2, outcomes
    result.stdout.fnmatch_lines(["*CI=true and PostgreSQL at * is unreachable*"])


def test_postgres_half_carries_the_postgres_marker(
    nested: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPT_TEST_POSTGRES_URL", UNREACHABLE)
    monkeypatch.setenv("CI", "true")  # deselected tests must not even try to connect
    result = nested.runpytest("-m", "not postgres")
    result.assert_outcomes(passed=2, deselected=2)
