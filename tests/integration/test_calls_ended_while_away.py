"""A call that ends while calltrack is not looking is never stretched over the time it was away.

The issue's case: `calltrack serve` stopped a few seconds into a call and started again later; the
call was closed at the reconnect with hours (here: seconds) of talk time it never had. Now it is
closed at the last moment it was known alive and marked estimated, or, with Asterisk's cdr_csv
file configured, takes its end from Asterisk's own record. The call is the real SIP call recorded
on Asterisk 22 (pjsip/ami-sip-call-answered.txt), moved to the present so Asterisk's clock and
calltrack's agree; Master.csv is written as cdr_csv writes it. SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text

from config import Settings
from schema import migrate
from schema.db import make_engine
from tests.conftest import Cli
from tests.fakes import cdr_csv
from tests.fakes.ami_server import FakeAmiServer, Plan, call_frames, load_pjsip_capture, retime
from tests.integration.ami_harness import Harness, calls_of, kept_payloads, stored_call_events, wait_for

LINKEDID = "1796175587.0"


@pytest.mark.parametrize("records", ["none", "gmt-with-uniqueid", "local-time-plain"])
async def test_a_call_that_ended_while_calltrack_was_stopped(
    cli: Cli, settings: Settings, database_url: str, tmp_path: Path, asterisk_traffic: Path, records: str
) -> None:
    recorded = call_frames(load_pjsip_capture("sip-call-answered", asterisk_traffic))
    talking = next(i for i, f in enumerate(recorded) if f.data.startswith(b"Event: BridgeEnter")) + 2
    # moved so that the agent answered a moment ago: the rest of the call happens while calltrack is stopped
    stream = retime(recorded, int(time.time() - float(recorded[talking - 1].headers["Timestamp"])))
    ends = max(float(f.headers["Timestamp"]) for f in stream if "Timestamp" in f.headers)
    secret = tmp_path / "ami.secret"
    secret.write_text("s3cret\n")

    # 1. calltrack hears the call ring and be answered, then stops
    async with (
        FakeAmiServer([Plan(frames=stream[:talking])]) as fake,
        Harness(settings, database_url, fake, secret) as h,
    ):
        seen = kept_payloads(stream[:talking])
        await wait_for(lambda: len(stored_call_events(h.engine, h.system)) >= len(seen), what="the call heard")
    stopped = dt.datetime.now(dt.UTC)

    # 2. meanwhile Asterisk finishes the call and writes its CDR (cdr_csv appends one line to Master.csv)
    (cdr,) = [f.headers for f in stream[talking:] if f.headers.get("Event") == "Cdr"]
    master = tmp_path / "cdr-csv" / "Master.csv"
    master.parent.mkdir()
    older = {**cdr, "StartTime": "2026-11-30 10:00:00", "AnswerTime": "", "EndTime": "2026-11-30 10:00:09",
             "Disposition": "NO ANSWER", "UniqueID": "1796032800.3"}  # the same channel name, days ago  # fmt: skip
    if records == "gmt-with-uniqueid":  # Debian's cdr.conf: usegmtime, loguniqueid, loguserfield
        master.write_text(cdr_csv.line(older) + cdr_csv.line(cdr))
    elif records == "local-time-plain":  # Asterisk in New York, cdr_csv's defaults
        master.write_text(cdr_csv.line(older, shift_hours=-5, uniqueid=False, userfield=False)
                          + cdr_csv.line(cdr, shift_hours=-5, uniqueid=False, userfield=False))  # fmt: skip

    # 3. calltrack starts again, once the call is over: Asterisk has no channel of that call left
    await wait_for(lambda: time.time() > ends + 1, what="the call to end in Asterisk")
    async with (
        FakeAmiServer([Plan(history=stream)]) as fake,
        Harness(settings, database_url, fake, secret, cdr_csv=str(master) if records != "none" else "") as h,
    ):
        want = "estimated" if records == "none" else "cdr"
        await wait_for(
            lambda: calls_of(h.engine, h.system).get(LINKEDID, {}).get("times_source") == want, what="the call closed"
        )
        call = calls_of(h.engine, h.system)[LINKEDID]
    listed = {c["linkedid"]: c for c in json.loads(cli.ok("calls", "list", "--format", "json").output)}[LINKEDID]
    assert call["disposition"] == "answered" and listed["disposition"] == "answered"
    answered = call["answered_at"]
    if records == "none":
        # closed when Asterisk was last heard (the listener's stop), not when calltrack came back
        last_event = max(dt.datetime.fromtimestamp(float(f.headers["Timestamp"]), dt.UTC) for f in stream[:talking])
        assert last_event <= call["ended_at"] <= stopped
        assert (listed["times_estimated"], listed["times_source"]) == (True, "estimated")
        lost = [d for _, kind, d in call["timeline"] if kind == "lost"]
        assert lost and lost[0]["ended_estimated"] == call["ended_at"].isoformat()
    else:
        end = dt.datetime.strptime(cdr["EndTime"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
        assert call["ended_at"] == end
        assert call["talk_time"] == pytest.approx((end - answered).total_seconds(), abs=0.001)
        assert (listed["times_estimated"], listed["times_source"]) == (False, "cdr")
        # the record is stored with the raw events: a rebuild closes the call the same way
        cli.ok("calls", "rebuild")
        engine = make_engine(database_url)
        try:
            assert calls_of(engine, "pbx1")[LINKEDID] == call
        finally:
            engine.dispose()
    assert call["talk_time"] < (stopped - answered).total_seconds() + 6  # never stretched over the restart


def test_times_source_migration_keeps_existing_calls(engine: Engine) -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(migrate.MIGRATIONS))
    (rev,) = [r for r in script.walk_revisions() if r.path.endswith("_call_times_source.py")]
    command.downgrade(migrate.alembic_config(engine), str(rev.down_revision))
    assert "times_source" not in {c["name"] for c in inspect(engine).get_columns("calls")}
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO calls (system, linkedid, disposition, created_at, updated_at) "
                "VALUES ('pbx1', '1796175587.0', 'answered', :t, :t)"
            ),
            {"t": "2026-12-02 01:39:47"},
        )
    migrate.upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT linkedid, disposition, times_source FROM calls")).all()
    assert [tuple(r) for r in rows] == [("1796175587.0", "answered", None)]
    migrate.check(engine)
