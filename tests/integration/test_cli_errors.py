"""Errors a new user hit: each is one clear line on stderr, a non-zero exit and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from calltrack.main import cli as calltrack
from schema.models import AuditEntry
from tests.conftest import Cli


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    base = {"CALLTRACK_CONFIG": "", "CALLTRACK_DATABASE_URL": ""}
    return CliRunner().invoke(calltrack, list(args), env={**base, **(env or {})})


def one_line_error(result: Result) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error: ")
    return result.output


def test_settings_file_that_is_not_utf8(tmp_path: Path) -> None:
    cfg = tmp_path / "calltrack.toml"
    cfg.write_bytes('[general]\nsystem_name = "Zürich"\n'.encode("latin-1"))
    out = one_line_error(run("--config", str(cfg), "accounts", "list"))
    assert f"settings: {cfg}: not UTF-8 text" in out and "save the file as UTF-8" in out


def test_unknown_log_level_is_refused_at_load(tmp_path: Path) -> None:
    cfg = tmp_path / "calltrack.toml"
    cfg.write_text('[general]\nlog_level = "LOUD"\n')
    out = one_line_error(run("--config", str(cfg), "web", "serve"))
    assert out == (
        f"Error: settings: {cfg}: general.log_level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not 'LOUD'\n"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/calltrack", "mysql databases are not supported (mysql://...)"),
        ("mysql+pymysql://root@localhost/ct", "mysql databases are not supported"),
        ("not a url", "'not a url' is not a database URL"),
        ("sqlite:relative.db", "is not a database URL"),
    ],
)
def test_unsupported_or_malformed_database_urls(url: str, message: str) -> None:
    out = one_line_error(run("--database", url, "accounts", "list"))
    assert message in out and "use sqlite:///PATH or postgresql://USER@HOST/DATABASE" in out
    assert out.startswith("Error: --database (or CALLTRACK_DATABASE_URL): ")


def test_bad_database_url_in_the_settings_file(tmp_path: Path) -> None:
    cfg = tmp_path / "calltrack.toml"
    cfg.write_text('[database]\nurl = "mysql://x@y/z"\n')
    assert f"settings: {cfg}: database.url: mysql databases" in one_line_error(
        run("--config", str(cfg), "db", "current")
    )


def test_sqlite_in_a_missing_folder_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "dir"
    url = f"sqlite:///{missing / 'x.db'}"
    out = one_line_error(run("--database", url, "accounts", "list"))
    assert f"no database at {missing / 'x.db'}: create it with `calltrack db upgrade`" in out
    out = one_line_error(run("--database", url, "db", "upgrade"))
    assert f"the folder {missing} does not exist" in out
    assert not (tmp_path / "nonexistent").exists()


def test_a_new_sqlite_file_is_made_by_db_upgrade_only(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    url = f"sqlite:///{path}"
    assert "no database at" in one_line_error(run("--database", url, "numbers", "list"))
    assert not path.exists()
    result = run("--database", url, "db", "upgrade")
    assert result.exit_code == 0 and "upgraded from empty" in result.output
    assert run("--database", url, "accounts", "list").exit_code == 0


def test_uk_national_number_with_default_region_us(cli: Cli, make_account) -> None:  # type: ignore[no-untyped-def]
    make_account()
    result = cli.fails(
        "numbers", "add", "020 7946 0018", "--account", "Acme", "--source", "Google Ads", "--forward-to", "PJSIP/1"
    )
    assert result.output.count("\n") == 1
    assert "invalid phone number '020 7946 0018': not a valid number in region US" in result.output
    assert "(numbers.default_region)" in result.output
    assert "such as +44 20 7946 0018 if it is a GB number" in result.output
    assert "plus-sign" not in result.output


def test_privacy_export_to_a_missing_folder(cli: Cli, tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    target = tmp_path / "nonexistent" / "dir" / "x.json"
    result = cli.fails("privacy", "export", "+14045551234", "--to", str(target))
    assert result.output == f"Error: cannot write {target}: the folder {target.parent} does not exist\n"
    # A folder that exists but cannot take the file: said, and no audit line for an export that did not happen.
    # (/proc refuses new files even to root)
    result = cli.fails("privacy", "export", "+14045551234", "--to", "/proc/x.json")
    assert result.output.startswith("Error: cannot write /proc/x.json: ") and result.output.count("\n") == 1
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "privacy.export")) == 0
    cli.ok("privacy", "export", "+14045551234", "--to", str(tmp_path / "ok.json"))
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "privacy.export")) == 1
