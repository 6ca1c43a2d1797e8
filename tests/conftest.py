"""Shared fixtures: a real database on SQLite and on PostgreSQL, settings, the CLI.

Every test that asks for ``database_url`` (or anything built on it) runs twice:
once on a SQLite file and once on PostgreSQL (127.0.0.1:5432, database ``test``;
override with CALLTRACK_TEST_POSTGRES_URL).  Each xdist worker gets its own
PostgreSQL database, emptied before each test and dropped at the end.  Where
PostgreSQL is not reachable the PostgreSQL runs are skipped with the reason, and
the summary names each PostgreSQL-only protection that went untested because of it:
a test marked ``@pytest.mark.postgresql_protection("what it protects")`` is the one
that fails when that protection is removed from the PostgreSQL code path.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from config import DatabaseSettings, GeneralSettings, Settings
from schema import migrate
from schema.db import make_engine
from schema.models import Base
from tests.fixtures import ASTERISK

SHARED = ASTERISK
PG_URL = os.environ.get("CALLTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


PROTECTION = "postgresql_protection"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tag the PostgreSQL runs of protection tests, so the summary can name what a skip left untested.

    Done on the items (in each xdist worker): the reports carry ``user_properties`` to the
    process that prints the summary.
    """
    for item in items:
        marker = item.get_closest_marker(PROTECTION)
        if marker is None:
            continue
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("database_url") if callspec is not None else None
        if backend in (None, "postgresql"):
            item.user_properties.append((PROTECTION, str(marker.args[0])))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Which PostgreSQL-only protections no test checked in this run (PostgreSQL unreachable)."""
    ran: set[str] = set()
    skipped: dict[str, list[str]] = {}
    reasons: set[str] = set()
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            for key, what in getattr(report, "user_properties", ()):
                if key != PROTECTION:
                    continue
                if outcome == "skipped":
                    skipped.setdefault(what, []).append(report.nodeid)
                    if isinstance(report.longrepr, tuple):
                        reasons.add(str(report.longrepr[2]).removeprefix("Skipped: "))
                elif report.when == "call":
                    ran.add(what)
    untested = {what: ids for what, ids in skipped.items() if what not in ran}
    if not untested:
        return
    terminalreporter.section("PostgreSQL-only protections NOT tested", sep="=", red=True, bold=True)
    for reason in sorted(reasons):
        terminalreporter.line(reason)
    for what, ids in sorted(untested.items()):
        terminalreporter.line(f"- {what}")
        for nodeid in sorted(set(ids)):
            terminalreporter.line(f"    {nodeid}")
    terminalreporter.line(
        f"{len(untested)} protection(s) above hold on PostgreSQL only; run with PostgreSQL to test them."
    )


@pytest.fixture(scope="session")
def asterisk_traffic() -> Path:
    """The folder of real Asterisk 22 traffic (tests/fixtures/asterisk)."""
    if not SHARED.is_dir():
        pytest.fail(f"recorded Asterisk traffic not found at {SHARED}")
    return SHARED


def _pg_error() -> str | None:
    try:
        eng = make_engine(PG_URL, connect_timeout=3)
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
        return None
    except Exception as exc:  # any failure means: not reachable here
        return str(exc).splitlines()[0]


@pytest.fixture(scope="session")
def _pg_database(worker_id: str) -> Iterator[str]:
    """A migrated PostgreSQL database of this worker's own, dropped at the end."""
    error = _pg_error()
    if error is not None:
        pytest.skip(f"PostgreSQL not reachable at {make_url(PG_URL).render_as_string()}: {error}")
    name = f"calltrack_test_{worker_id}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    eng = make_engine(url)
    migrate.upgrade(eng)
    eng.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "calltrack.sqlite3"
    eng = make_engine(f"sqlite:///{path}")
    migrate.upgrade(eng)
    eng.dispose()
    return path


TABLES = ", ".join(t.name for t in Base.metadata.sorted_tables)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty, migrated database (SQLite, then PostgreSQL)."""
    if request.param == "sqlite":
        path = tmp_path / "calltrack.sqlite3"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("_pg_database")
    eng = make_engine(url)
    with eng.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
        # A test may have moved the schema's revision (tests of "behind" and "newer" databases).
        conn.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": migrate.head_revision()})
    eng.dispose()
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Default settings pointed at the test database, with a private data folder."""
    return Settings(
        general=GeneralSettings(data_dir=tmp_path / "data"),
        database=DatabaseSettings(url=database_url),
    )


@dataclass
class Cli:
    """Runs `calltrack` in-process against the test database, in an isolated folder."""

    runner: CliRunner
    database_url: str
    home: Path

    def __call__(self, *args: str, input: str | None = None) -> Result:
        from calltrack.main import cli

        env = {"XDG_DATA_HOME": str(self.home), "CALLTRACK_CONFIG": "", "CALLTRACK_DATABASE_URL": ""}
        return self.runner.invoke(
            cli, ["--database", self.database_url, *args], input=input, env=env, catch_exceptions=False
        )

    def ok(self, *args: str, input: str | None = None) -> Result:
        result = self(*args, input=input)
        assert result.exit_code == 0, f"calltrack {' '.join(args)} failed ({result.exit_code}): {result.output}"
        return result

    def fails(self, *args: str, input: str | None = None) -> Result:
        result = self(*args, input=input)
        assert result.exit_code != 0, f"calltrack {' '.join(args)} should have failed: {result.output}"
        assert "Traceback" not in result.output
        return result


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    monkeypatch.chdir(tmp_path)
    yield Cli(CliRunner(), database_url, tmp_path / "home")


@pytest.fixture
def make_account(cli: Cli) -> Callable[..., None]:
    """Creates an account with a source (and optionally a pool) through the CLI."""

    def make(name: str = "Acme", source: str = "Google Ads", pool: str | None = None) -> None:
        cli.ok("accounts", "add", name, "--timezone", "America/New_York")
        cli.ok("sources", "add", source, "--account", name)
        if pool:
            cli.ok("pools", "create", pool, "--account", name, "--hold-minutes", "30")

    return make
