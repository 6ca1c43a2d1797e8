"""A transferred call: talk time runs until the caller leaves, and the call names who it went to.

The real blind transfer recorded on Asterisk 22 (pjsip/ami-sip-call-blind-transfer.txt: the agent
REFERs the caller to +18005550111 after 3 s; the caller stays 30 s more) through the listener over
TCP into the database, read back with `calls list` and `calls show`. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text

from config import Settings
from schema import migrate
from tests.conftest import Cli
from tests.fakes.ami_server import FakeAmiServer, Plan, call_frames, load_pjsip_capture
from tests.integration.ami_harness import Harness, calls_of, wait_for

LINKEDID = "1796175718.17"


async def test_blind_transfer_through_the_listener(
    cli: Cli, settings: Settings, database_url: str, tmp_path: Path, asterisk_traffic: Path
) -> None:
    secret = tmp_path / "ami.secret"
    secret.write_text("s3cret\n")
    stream = call_frames(load_pjsip_capture("sip-call-blind-transfer", asterisk_traffic))
    async with FakeAmiServer([Plan(frames=stream)]) as fake, Harness(settings, database_url, fake, secret) as h:
        await wait_for(lambda: bool(calls_of(h.engine, h.system).get(LINKEDID, {}).get("ended_at")), what="the call")
    (call,) = json.loads(cli.ok("calls", "list", "--format", "json").output)
    assert call["linkedid"] == LINKEDID and call["disposition"] == "answered"
    assert call["answered_by"] == "PJSIP/agent100"
    assert call["transferred_to"] == "+18005550111@from-agent"
    # answered 01:41:59.155, the caller hung up 01:42:32.452 (Asterisk's CDRs: billable 3 s + 30 s)
    assert call["talk_time"] == pytest.approx(33.297, abs=0.001)
    shown = json.loads(cli.ok("calls", "show", str(call["id"]), "--format", "json").output)
    assert shown["transferred_to"] == "+18005550111@from-agent"
    (transfer,) = [line["detail"] for line in shown["timeline"] if line["kind"] == "transfer"]
    assert transfer["to"] == "+18005550111@from-agent" and transfer["by"] == "PJSIP/agent100"


def test_transfer_migration_keeps_existing_calls(engine: Engine) -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(migrate.MIGRATIONS))
    (rev,) = [r for r in script.walk_revisions() if r.path.endswith("_call_transfer.py")]
    command.downgrade(migrate.alembic_config(engine), str(rev.down_revision))
    assert "transferred_to" not in {c["name"] for c in inspect(engine).get_columns("calls")}
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO calls (system, linkedid, disposition, created_at, updated_at) "
                "VALUES ('pbx1', '1796175718.17', 'answered', :t, :t)"
            ),
            {"t": "2026-12-02 01:41:58"},
        )
    migrate.upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT linkedid, disposition, transferred_to FROM calls")).all()
    assert [tuple(r) for r in rows] == [("1796175718.17", "answered", None)]
    migrate.check(engine)
