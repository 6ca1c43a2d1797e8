"""Migrations, `calltrack db`, the refusal to work on a database that is behind, and a database that is away."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import Engine, inspect, text

from calltrack.main import cli as calltrack
from schema import migrate
from schema.db import make_engine
from schema.models import Base
from tests.conftest import Cli


def test_migrations_build_every_model_and_match_them(engine: Engine) -> None:
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert set(inspect(engine).get_table_names()) >= {t.name for t in Base.metadata.sorted_tables}
    migrate.check(engine)  # raises when models and migrations drift apart


def test_downgrade_to_empty_and_upgrade_again(engine: Engine) -> None:
    command.downgrade(migrate.alembic_config(engine), "base")
    assert migrate.current_revision(engine) is None
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_after_hours_migration_keeps_existing_calls(engine: Engine) -> None:
    """Calls stored before the route recorded business hours come through with after_hours unknown."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(migrate.MIGRATIONS))
    (rev,) = [r for r in script.walk_revisions() if r.path.endswith("_call_after_hours.py")]
    cfg = migrate.alembic_config(engine)
    command.downgrade(cfg, str(rev.down_revision))
    assert "after_hours" not in {c["name"] for c in inspect(engine).get_columns("calls")}
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO calls (system, linkedid, disposition, created_at, updated_at) "
                "VALUES ('pbx1', '1795915078.0', 'answered', :t, :t)"
            ),
            {"t": "2026-11-29 01:17:58"},
        )
    migrate.upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT linkedid, disposition, after_hours FROM calls")).all()
    assert [tuple(r) for r in rows] == [("1795915078.0", "answered", None)]
    migrate.check(engine)


def test_recording_notes_migration_widens_the_states(engine: Engine) -> None:
    """A recording row made before 'discarded' existed survives; the new state is accepted, nonsense is not."""
    from alembic.script import ScriptDirectory
    from sqlalchemy.exc import IntegrityError

    script = ScriptDirectory(str(migrate.MIGRATIONS))
    (rev,) = [r for r in script.walk_revisions() if r.path.endswith("_recording_notes.py")]
    cfg = migrate.alembic_config(engine)
    command.downgrade(cfg, str(rev.down_revision))
    insert = text(
        "INSERT INTO recordings (source_path, state, attempts, created_at) VALUES (:p, :state, 0, '2026-11-29 01:00:00')"
    )
    with engine.begin() as conn:
        conn.execute(insert, {"p": "/spool/1.wav", "state": "archived"})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert, {"p": "/spool/2.wav", "state": "discarded"})
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(insert, {"p": "/spool/2.wav", "state": "discarded"})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert, {"p": "/spool/3.wav", "state": "lost"})
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT source_path, state, note FROM recordings ORDER BY source_path")).all()
    assert [tuple(r) for r in rows] == [("/spool/1.wav", "archived", None), ("/spool/2.wav", "discarded", None)]
    migrate.check(engine)


def test_db_commands(cli: Cli) -> None:
    assert "already at revision" in cli.ok("db", "upgrade").output
    out = cli.ok("db", "current").output
    assert "up to date" in out and migrate.head_revision() in out
    assert "matches" in cli.ok("db", "check").output


def test_commands_refuse_a_database_that_is_behind(cli: Cli, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend this calltrack knows a newer revision than the database has.
    monkeypatch.setattr(migrate, "head_revision", lambda: "9999")
    result = cli.fails("accounts", "list")
    assert "calltrack needs 9999: run `calltrack db upgrade`" in result.output
    assert "behind" in cli.fails("db", "current").output


def test_commands_refuse_a_database_from_a_newer_calltrack(cli: Cli, engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
    assert "migrated by a newer version" in cli.fails("numbers", "list").output


def test_a_database_with_foreign_tables_is_not_taken_over(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    eng = make_engine(url)
    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE something_else (x int)"))
    eng.dispose()
    result = CliRunner().invoke(calltrack, ["--database", url, "accounts", "list"])
    assert result.exit_code == 1
    assert "no calltrack schema yet: run `calltrack db upgrade`" in result.output


def test_embedded_database_is_created_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "CALLTRACK_CONFIG": "", "CALLTRACK_DATABASE_URL": ""}
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(calltrack, ["accounts", "list"], env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "xdg" / "calltrack" / "calltrack.sqlite3").is_file()
    assert "creating the database" in result.output


def test_database_away_is_one_clear_line(tmp_path: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:1/nowhere"
    result = CliRunner().invoke(calltrack, ["--database", url, "numbers", "list"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: database unavailable: ")
    assert "Traceback" not in result.output and result.output.count("\n") == 1


def test_bad_settings_file_stops_with_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "calltrack.toml"
    cfg.write_text("[database]\nurll = 'x'\n")
    result = CliRunner().invoke(calltrack, ["--config", str(cfg), "accounts", "list"])
    assert result.exit_code == 1
    assert (
        result.output
        == f"Error: settings: {cfg}: database.urll: unknown key (known here: connect_timeout, echo, url)\n"
    )
    result = CliRunner().invoke(
        calltrack, ["accounts", "list"], env={"CALLTRACK_CONFIG": str(tmp_path / "missing.toml")}
    )
    assert "missing.toml: no such file" in result.output and result.exit_code == 1


def test_the_quick_revision_reading_agrees_with_alembic(engine: Engine) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(migrate.MIGRATIONS))
    assert migrate.head_revision() == script.get_current_head()
    assert migrate.revision_graph() == {r.revision: r.down_revision for r in script.walk_revisions()}
    with engine.connect() as conn:
        assert migrate.current_revision(engine) == MigrationContext.configure(conn).get_current_revision()
    command.downgrade(migrate.alembic_config(engine), "base")
    with engine.connect() as conn:
        assert migrate.current_revision(engine) is None is MigrationContext.configure(conn).get_current_revision()
    migrate.upgrade(engine)


def test_an_ordinary_command_does_not_import_alembic(cli: Cli, database_url: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    probe = (
        "import sys; from calltrack.main import main\n"
        "try:\n    main(['--database', sys.argv[1], 'accounts', 'list'])\n"
        "except SystemExit:\n    pass\n"
        "print('alembic' in sys.modules, 'phonenumbers' in sys.modules, 'sqlalchemy.orm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe, database_url], capture_output=True, text=True, check=True)
    # the migration check, phone numbers and the ORM each cost more than the listing itself
    assert out.stdout.strip().splitlines()[-1] == "False False False", out.stdout + out.stderr


def test_channel_ids_migration_takes_the_longest_linkedid_asterisk_makes(engine: Engine) -> None:
    """Issue 9, item 15: a custom ChannelId of 149 characters plus ";2" fits (PostgreSQL refused more than 64)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(migrate.MIGRATIONS))
    (rev,) = [r for r in script.walk_revisions() if r.path.endswith("_channel_ids.py")]
    cfg = migrate.alembic_config(engine)
    command.downgrade(cfg, str(rev.down_revision))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO calls (system, linkedid, created_at, updated_at) VALUES ('pbx1', '1795915078.0', :t, :t)"
            ),
            {"t": "2026-11-29 01:17:58"},
        )
    migrate.upgrade(engine)
    longest = "c" * 149 + ";2"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO calls (system, linkedid, uniqueid, created_at, updated_at) VALUES ('pbx1', :l, :l, :t, :t)"
            ),
            {"l": longest, "t": "2026-11-29 01:17:58"},
        )
        conn.execute(
            text(
                "INSERT INTO ami_events (system, event_key, seq, event, uniqueid, linkedid, received_at, payload) "
                "VALUES ('pbx1', 'k1', 1, 'Newchannel', :l, :l, :t, '{}')"
            ),
            {"l": longest, "t": "2026-11-29 01:17:58"},
        )
        rows = conn.execute(text("SELECT linkedid FROM calls ORDER BY id")).scalars().all()
    assert rows == ["1795915078.0", longest]
    migrate.check(engine)


def test_the_migrations_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One linear history: every revision but the first comes down from exactly one other, and two
    branches that both added "the next" migration (same revision id) are refused, not merged."""
    graph = migrate.revision_graph()
    downs = [d for d in graph.values() if d]
    assert sorted(downs) == sorted(set(downs)) and len(downs) == len(graph) - 1
    for path in sorted(migrate.VERSIONS.glob("*.py")):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    last = sorted(tmp_path.glob("*.py"))[-1]
    (tmp_path / f"{last.stem}_twin.py").write_bytes(last.read_bytes())
    monkeypatch.setattr(migrate, "VERSIONS", tmp_path)
    migrate.revision_graph.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="is used by another migration too"):
            migrate.revision_graph()
    finally:
        monkeypatch.undo()
        migrate.revision_graph.cache_clear()
