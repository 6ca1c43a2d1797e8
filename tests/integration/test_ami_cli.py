"""`calltrack calls list/show/rebuild` and `calltrack ami listen`, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from config import Settings
from schema.db import make_engine, make_session_factory
from schema.models import Account, Call, Source
from tests.conftest import Cli
from tests.fakes.ami_server import FakeAmiServer, Plan, interleave
from tests.integration.ami_harness import SCENARIOS, Harness, calls_of, frames, stored_payloads, wait_for
from tracking.calls import upsert_call

JSON_FIELDS = {
    "id",
    "system",
    "linkedid",
    "caller_number",
    "caller_name",
    "tracking_number",
    "source",
    "started_at",
    "answered_at",
    "ended_at",
    "duration",
    "talk_time",
    "disposition",
    "recording",
}


async def record_all(settings: Settings, database_url: str, tmp_path: Path, traffic: Path) -> None:
    secret = tmp_path / "ami.secret"
    secret.write_text("s3cret")
    stream = interleave(*(frames(s, traffic) for s in SCENARIOS))
    async with FakeAmiServer([Plan(frames=stream)]) as fake, Harness(settings, database_url, fake, secret) as h:
        await wait_for(
            lambda: sum(1 for c in calls_of(h.engine, h.system).values() if c["ended_at"]) == 10, what="ten calls"
        )


def route_creates_the_row(database_url: str, linkedid: str) -> None:
    """What the AGI route handler does first: the call row with account, source, route status."""
    engine = make_engine(database_url)
    with make_session_factory(engine)() as session, session.begin():
        account = session.scalar(select(Account).where(Account.name == "Acme"))
        source = session.scalar(select(Source).where(Source.name == "Google Ads"))
        assert account is not None and source is not None
        upsert_call(
            session,
            "pbx1",
            linkedid,
            {"account_id": account.id, "source_id": source.id, "route_status": "ok", "tracking_number": "+18005550100"},
        )
    engine.dispose()


def calls_json(cli: Cli, *args: str) -> list[dict[str, Any]]:
    return json.loads(cli.ok("calls", "list", "--format", "json", *args).output)


async def test_calls_list_show_and_filters(
    cli: Cli,
    make_account: Callable[..., None],
    settings: Settings,
    database_url: str,
    tmp_path: Path,
    asterisk_traffic: Path,
) -> None:
    make_account()
    route_creates_the_row(database_url, "1795915078.0")  # the route ran before the AMI events arrived
    await record_all(settings, database_url, tmp_path, asterisk_traffic)

    rows = calls_json(cli)
    assert len(rows) == 10
    assert all(JSON_FIELDS <= set(r) for r in rows)
    by_linkedid = {r["linkedid"]: r for r in rows}
    answered = by_linkedid["1795915078.0"]
    assert answered["source"] == "Google Ads" and answered["account"] == "Acme"
    assert answered["disposition"] == "answered" and answered["system"] == "pbx1"
    assert answered["caller_name"] == "Jane Doe" and answered["recording"].endswith("1795915078.1.wav")
    assert isinstance(answered["duration"], float) and isinstance(answered["talk_time"], float)
    assert str(answered["started_at"]).startswith("2026-11-29T01:17:58")
    assert [r["started_at"] for r in rows] == sorted((r["started_at"] for r in rows), reverse=True)

    assert {r["linkedid"] for r in calls_json(cli, "--status", "missed")} == {"1795915093.4"}
    assert len(calls_json(cli, "--status", "abandoned")) == 3
    assert calls_json(cli, "--status", "live") == []
    assert [r["linkedid"] for r in calls_json(cli, "--account", "Acme")] == ["1795915078.0"]
    assert [r["linkedid"] for r in calls_json(cli, "--source", "Google Ads")] == ["1795915078.0"]
    since = {r["linkedid"] for r in calls_json(cli, "--since", "2026-11-29T01:20:00")}
    assert since == {"1795915222.41", "1795915335.44"}  # iax-answered (01:20:22), agidown (01:22:15)
    assert calls_json(cli, "--since", "2026-11-29T01:20:00+05:00") != []

    table = cli.ok("calls", "list").output
    assert "Jane Doe" in table and "DISPOSITION" in table
    rows_csv = list(csv.DictReader(io.StringIO(cli.ok("calls", "list", "--format", "csv").output)))
    assert len(rows_csv) == 10 and "recording" in rows_csv[0]

    shown = cli.ok("calls", "show", str(answered["id"])).output
    assert "route_status" in shown and "ok" in shown  # the route's column survived the listener's update
    assert "timeline:" in shown and "answered" in shown and "by=Local/100@agents" in shown
    assert "Local/100@agents-00000001;1" in shown
    full = json.loads(cli.ok("calls", "show", "1795915078.0", "--format", "json").output)
    assert [e["kind"] for e in full["timeline"]][0] == "started"
    assert len(full["legs"]) == 4


async def test_rebuild_regenerates_the_same_calls(
    cli: Cli, settings: Settings, database_url: str, tmp_path: Path, asterisk_traffic: Path
) -> None:
    await record_all(settings, database_url, tmp_path, asterisk_traffic)
    engine = make_engine(database_url)
    try:
        before = calls_of(engine, "pbx1")
        with engine.begin() as conn:
            conn.execute(delete(Call))
        assert calls_of(engine, "pbx1") == {}
        out = cli.ok("calls", "rebuild").output
        assert "rebuilt 10 calls" in out
        assert calls_of(engine, "pbx1") == before
        # again, over existing rows, and for a window only: still the same
        cli.ok("calls", "rebuild", "--since", "2026-11-29T01:19:00")
        assert calls_of(engine, "pbx1") == before
    finally:
        engine.dispose()


def test_bad_input_is_told_in_one_line(cli: Cli) -> None:
    assert "no account named 'Nope'" in cli.fails("calls", "list", "--account", "Nope").output
    assert "no source named 'Nope'" in cli.fails("calls", "list", "--source", "Nope").output
    assert "is not a date" in cli.fails("calls", "list", "--since", "yesterday-ish").output
    assert "no call '424242'" in cli.fails("calls", "show", "424242").output
    assert "(none)" in cli.ok("calls", "list").output
    assert "rebuilt 0 calls" in cli.ok("calls", "rebuild").output


def test_ami_listen_needs_a_server_and_a_readable_secret(cli: Cli, tmp_path: Path) -> None:
    out = cli.fails("ami", "listen").output
    assert "no AMI server to listen to" in out
    out = cli.fails("ami", "listen", "--host", "127.0.0.1", "--secret-file", str(tmp_path / "missing")).output
    assert "cannot read the secret file" in out and "missing" in out
    out = cli.fails("ami", "listen", "--host", "127.0.0.1").output
    assert "no secret" in out


async def test_rebuild_in_small_chunks_gives_the_same_calls(
    settings: Settings, database_url: str, tmp_path: Path, asterisk_traffic: Path
) -> None:
    from ami_listener.sink import rebuild
    from tracking.phone import try_normalize

    await record_all(settings, database_url, tmp_path, asterisk_traffic)
    engine = make_engine(database_url)
    try:
        before = calls_of(engine, "pbx1")
        with engine.begin() as conn:
            conn.execute(delete(Call))
        with make_session_factory(engine)() as session, session.begin():
            assert rebuild(session, "pbx1", normalize=try_normalize, chunk=7) == 10
        assert calls_of(engine, "pbx1") == before
    finally:
        engine.dispose()


async def test_ami_listen_command_records_calls_and_stops_on_sigterm(
    database_url: str, tmp_path: Path, asterisk_traffic: Path
) -> None:
    import os
    import signal
    import sys

    secret = tmp_path / "ami.secret"
    secret.write_text("s3cret\n")
    stream = interleave(frames("answered", asterisk_traffic), frames("noanswer", asterisk_traffic))
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "home"), "CALLTRACK_CONFIG": "", "CALLTRACK_DATABASE_URL": ""}
    async with FakeAmiServer([Plan(frames=stream)]) as fake:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "calltrack.main", "--database", database_url,
            "ami", "listen", "--name", "pbx1", "--host", "127.0.0.1", "--port", str(fake.port),
            "--username", "calltrack", "--secret-file", str(secret),
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        engine = make_engine(database_url)
        try:
            await wait_for(
                lambda: sum(1 for c in calls_of(engine, "pbx1").values() if c["ended_at"]) == 2, what="two calls"
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            engine.dispose()
    assert proc.returncode == 0, err.decode()
    text = err.decode()
    assert "listening to pbx1 (127.0.0.1:" in text and "logged in as 'calltrack'" in text
    assert "Traceback" not in text


async def test_do_not_track_callers_leave_no_trace(
    cli: Cli, settings: Settings, database_url: str, tmp_path: Path, asterisk_traffic: Path
) -> None:
    cli.ok("callers", "do-not-track", "+1 404 555 1234")
    await record_all(settings, database_url, tmp_path, asterisk_traffic)
    engine = make_engine(database_url)
    try:
        calls = calls_of(engine, "pbx1")
        payloads = [p for p in stored_payloads(engine, "pbx1") if "Linkedid" in p or "UniqueID" in p]
    finally:
        engine.dispose()
    assert len(calls) == 10  # the calls are counted (the route still needs them)...
    for call in calls.values():  # ...but nothing says who called
        assert (call["caller_number"], call["caller_name"], call["caller_location"]) == (None, None, None)
        assert all(leg["caller_number"] is None and leg["caller_name"] is None for leg in call["legs"])
    assert calls["1795915078.0"]["disposition"] == "answered"
    # the raw events of the finished calls are gone; what is left belongs to the IAX2 capture's carrier
    # side, an outgoing originate (exten s) that is not an inbound call
    assert {p.get("Linkedid") or p.get("UniqueID") for p in payloads} == {"1795915222.40"}


def test_a_consultation_merged_into_a_transferred_call_leaves_no_stray_live_row(cli: Cli, database_url: str) -> None:
    import datetime as dt

    from ami_listener.correlator import Correlator, RawEvent
    from ami_listener.sink import CallWriter

    t0 = dt.datetime(2026, 11, 29, 9, 0, tzinfo=dt.UTC)
    first = {"Linkedid": "1.1", "Channel": "PJSIP/carrier-1", "Uniqueid": "1.1", "Exten": "4045550100"}
    agent = {"Linkedid": "1.1", "Channel": "PJSIP/100-2", "Uniqueid": "1.2", "Exten": "s"}
    consult = {"Linkedid": "2.1", "Channel": "PJSIP/100-3", "Uniqueid": "2.1", "Exten": "101"}
    target = {"Linkedid": "2.1", "Channel": "PJSIP/101-4", "Uniqueid": "2.2", "Exten": "101"}
    steps = [
        {"Event": "Newchannel", **first, "CallerIDNum": "+14045551234"},
        {"Event": "Newchannel", **agent},
        {"Event": "Newchannel", **consult},
        {"Event": "Newchannel", **target},
        {"Event": "AttendedTransfer", "OrigTransfererUniqueid": "1.2", "OrigTransfererLinkedid": "1.1",
         "SecondTransfererUniqueid": "2.1", "SecondTransfererLinkedid": "2.1", "Result": "Success",
         "OrigTransfererChannel": "PJSIP/100-2", "TransferTargetChannel": "PJSIP/101-4"},
        *({"Event": "Hangup", **leg, "Cause": "16"} for leg in (agent, consult, target, first)),
    ]  # fmt: skip
    engine = make_engine(database_url)
    correlator, writer = Correlator(), CallWriter("pbx1")
    try:
        for i, payload in enumerate(steps):
            correlator.feed(RawEvent(i + 1, t0 + dt.timedelta(seconds=i), payload))
            with make_session_factory(engine)() as session, session.begin():
                writer.write(session, correlator.take_changed())
            if i == 3:
                assert set(calls_of(engine, "pbx1")) == {"1.1", "2.1"}  # the consultation looked like a call
        calls = calls_of(engine, "pbx1")
    finally:
        engine.dispose()
    assert set(calls) == {"1.1"}
    assert calls["1.1"]["disposition"] is not None
    assert "PJSIP/101-4" in {leg["channel"] for leg in calls["1.1"]["legs"]}
    assert [kind for _, kind, _ in calls["1.1"]["timeline"]].count("transfer") == 1
    assert "(none)" in cli.ok("calls", "list", "--status", "live").output  # no stray live call
