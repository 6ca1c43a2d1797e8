"""Blocked callers and closed business hours, through both writers of a call and into the reports.

The route (the real ``CallRouter`` on the real database) refuses a blocked caller and
decides business hours; the AMI listener (correlator and writer) then records the call
from Asterisk's events, built from the recorded ``classic`` capture: a call whose
dialplan ends after the AGI without dialling anyone, which is what the sample dialplan
does to a blocked caller (``Hangup(21)``).  On SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ami_listener.correlator import Correlator, RawEvent
from ami_listener.parser import parse_buffer
from ami_listener.sink import CallWriter
from config import RecorderSettings, Settings
from schema.models import Call
from tests.conftest import Cli
from tests.fakes.ami_server import call_frames, load_capture
from tracking.phone import try_normalize
from tracking.routing import CallRouter, Decision, RouteRequest, RouteStore

SYSTEM = "pbx1"
CAPTURE_LINKEDID = "1795915198.34"  # the classic capture's call
T0 = dt.datetime(2026, 11, 30, 15, 0, tzinfo=dt.UTC)  # a Monday, 10:00 in New York


def blocked_call_events(traffic: Path, *, varset: bool) -> list[RawEvent]:
    """The classic capture as Asterisk sends it for a blocked caller.

    The recording server's ``CT_DEST`` becomes the route's ``CALLTRACK_STATUS=blocked`` (a
    SET VARIABLE from the AGI shows as a VarSet on the channel); the dialplan then hangs up
    with cause 21 (call rejected).  Without *varset*: the listener missed that VarSet (a
    manager.conf filter, a reconnect).
    """
    data = b"".join(f.data for f in call_frames(load_capture("classic", traffic)))
    assert b"Variable: CT_DEST\r\nValue: Local/100@agents\r\n" in data
    if varset:
        data = data.replace(
            b"Variable: CT_DEST\r\nValue: Local/100@agents\r\n", b"Variable: CALLTRACK_STATUS\r\nValue: blocked\r\n"
        )
    else:
        data = data.replace(b"Variable: CT_DEST\r\nValue: Local/100@agents\r\n", b"Variable: CT_DEST\r\nValue: \r\n")
    data = data.replace(b"Cause: 16\r\nCause-txt: Normal Clearing", b"Cause: 21\r\nCause-txt: Call Rejected")
    messages, rest = parse_buffer(data)
    assert rest == b""
    return [RawEvent(i + 1, T0 + dt.timedelta(milliseconds=10 * i), m) for i, m in enumerate(messages)]


class Listener:
    """The listener's work: correlate, then write what changed (after every event, as a live feed does)."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.factory = session_factory
        self.correlator = Correlator(lambda raw: try_normalize(raw, "US"))
        self.writer = CallWriter(SYSTEM)

    def feed(self, events: list[RawEvent], *, each: bool = True) -> None:
        for event in events:
            self.correlator.feed(event)
            if each:
                self.write()
        self.write()

    def write(self) -> None:
        with self.factory() as s, s.begin():
            self.writer.write(s, self.correlator.take_changed())


def listen(session_factory: sessionmaker[Session], events: list[RawEvent], *, each: bool = True) -> None:
    Listener(session_factory).feed(events, each=each)


def route(router: CallRouter, linkedid: str, caller: str = "+14045551234", at: dt.datetime = T0) -> Decision:
    return router.run(
        RouteRequest(
            dialled="8005550100",
            caller_number=caller,
            caller_name="Jane Doe",
            system=SYSTEM,
            linkedid=linkedid,
            uniqueid=linkedid,
            at=at,
        )
    )


@pytest.fixture
def router(settings: Settings, tmp_path: Path) -> Any:
    cfg = settings.replace(recorder=RecorderSettings(spool_dir=tmp_path / "monitor"))
    store = RouteStore(cfg.database.url)
    yield CallRouter(cfg, store)
    store.close()


@pytest.fixture
def acme(cli: Cli, make_account: Callable[..., None]) -> None:
    make_account()  # Acme (America/New_York) with source Google Ads
    cli.ok("sources", "add", "Radio", "--account", "Acme")  # a source that gets no calls
    cli.ok(
        "numbers", "add", "800-555-0100", "--account", "Acme", "--source", "Google Ads",
        "--forward-to", "PJSIP/100", "--hours", "mon-fri 09:00-17:00", "--after-hours", "PJSIP/voicemail",
    )  # fmt: skip


def calls(session_factory: sessionmaker[Session]) -> dict[str, Call]:
    with session_factory() as s:
        return {c.linkedid: c for c in s.scalars(select(Call))}


def report(cli: Cli, kind: str = "sources") -> dict[str, dict[str, Any]]:
    rows = json.loads(cli.ok("reports", kind, "--format", "json").output)
    return {r["source" if kind == "sources" else "number"]: r for r in rows}


@pytest.mark.parametrize("first", ["route", "listener"], ids=["route-wrote-first", "listener-wrote-first"])
@pytest.mark.parametrize("varset", [True, False], ids=["listener-saw-the-varset", "listener-missed-it"])
def test_a_blocked_call_stays_blocked_and_out_of_the_counts(
    cli: Cli,
    acme: None,
    router: CallRouter,
    session_factory: sessionmaker[Session],
    asterisk_traffic: Path,
    varset: bool,
    first: str,
) -> None:
    cli.ok("callers", "block", "+1 404 555 1234", "--reason", "spam")
    events = blocked_call_events(asterisk_traffic, varset=varset)
    listener = Listener(session_factory)
    # the channels are born and their caller ID known before the AGI runs
    born = next(i for i, e in enumerate(events) if e.payload.get("Event") == "LocalBridge")
    if first == "listener":
        listener.feed(events[:born])
        live = calls(session_factory)[CAPTURE_LINKEDID]
        assert (live.disposition, live.route_status, live.ended_at) == (None, None, None)
        events = events[born:]

    decision = route(router, CAPTURE_LINKEDID)

    assert (decision.status, decision.dial, decision.source_name) == ("blocked", "", "Google Ads")
    variables = dict(decision.variables())
    assert variables["CALLTRACK_FIRST_TIME"] == ""  # spam is nobody's first call
    routed = calls(session_factory)[CAPTURE_LINKEDID]
    assert (routed.disposition, routed.first_time) == ("blocked", None)

    # the listener follows the call live, then closes it when Asterisk hangs up
    listener.feed(events)

    call = calls(session_factory)[CAPTURE_LINKEDID]
    assert call.ended_at is not None and call.hangup_cause == 21
    assert (call.disposition, call.first_time, call.route_status) == ("blocked", None, "blocked")
    listed = json.loads(cli.ok("calls", "list", "--status", "blocked", "--format", "json").output)
    assert [c["linkedid"] for c in listed] == [CAPTURE_LINKEDID]
    assert json.loads(cli.ok("calls", "list", "--status", "failed", "--format", "json").output) == []

    google = report(cli)["Google Ads"]
    assert (google["calls"], google["blocked"], google["first_time"], google["failed"]) == (0, 1, 0, 0)
    assert google["answer_rate"] is None  # not 0 %: nobody was refused an answer
    assert report(cli, "numbers")["+18005550100"]["blocked"] == 1

    # unblocked, the same caller's next call is their first real one
    cli.ok("callers", "remove", "+1 404 555 1234")
    later = route(router, "1795915999.1", at=T0 + dt.timedelta(minutes=5))
    assert (later.status, dict(later.variables())["CALLTRACK_FIRST_TIME"]) == ("ok", "1")


def test_a_rebuild_keeps_a_blocked_call_blocked(
    cli: Cli, acme: None, router: CallRouter, session_factory: sessionmaker[Session], asterisk_traffic: Path
) -> None:
    """``calls rebuild`` re-reads the events over the existing rows: the verdict survives."""
    from ami_listener.sink import insert_events, keep
    from ami_listener.spool import StoredEvent

    cli.ok("callers", "block", "+14045551234")
    route(router, CAPTURE_LINKEDID)
    events = blocked_call_events(asterisk_traffic, varset=False)
    listen(session_factory, events, each=False)
    with session_factory() as s, s.begin():
        stored = [
            StoredEvent(e.seq, f"c1:{e.seq}", e.received_at, e.payload["Event"], e.payload.get("Uniqueid"),
                        e.payload.get("Linkedid"), e.payload)
            for e in events
            if keep(e.payload)
        ]  # fmt: skip
        insert_events(s, SYSTEM, stored)

    cli.ok("calls", "rebuild")

    call = calls(session_factory)[CAPTURE_LINKEDID]
    assert (call.disposition, call.first_time) == ("blocked", None)


def test_after_hours_is_stored_shown_filtered_and_counted(
    cli: Cli, acme: None, router: CallRouter, session_factory: sessionmaker[Session]
) -> None:
    monday_night = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)  # 21:00 Monday in New York
    open_call = route(router, "1.1", at=T0)
    closed_call = route(router, "2.1", caller="+14045550000", at=monday_night)
    assert dict(open_call.variables())["CALLTRACK_AFTER_HOURS"] == "0"
    assert (closed_call.dial, dict(closed_call.variables())["CALLTRACK_AFTER_HOURS"]) == ("PJSIP/voicemail", "1")
    unknown = router.run(
        RouteRequest("8005550999", "+14045551111", "", SYSTEM, "3.1", "3.1", T0)
    )  # not a tracking number: no business hours to judge
    assert unknown.status == "unknown-number"

    stored = calls(session_factory)
    assert {k: c.after_hours for k, c in stored.items()} == {"1.1": False, "2.1": True, "3.1": None}

    def listed(*args: str) -> list[str]:
        out = json.loads(cli.ok("calls", "list", "--format", "json", *args).output)
        return sorted(c["linkedid"] for c in out)

    assert listed("--after-hours") == ["2.1"]
    assert listed("--in-hours") == ["1.1"]
    assert listed() == ["1.1", "2.1", "3.1"]
    shown = json.loads(cli.ok("calls", "show", "2.1", "--format", "json").output)
    assert shown["after_hours"] is True
    assert "after_hours" in cli.ok("calls", "show", "2.1").output
    assert report(cli)["Google Ads"]["after_hours"] == 1
    assert report(cli, "numbers")["+18005550100"]["after_hours"] == 1


def test_a_call_to_an_unknown_number_has_no_first_time(
    cli: Cli, acme: None, router: CallRouter, session_factory: sessionmaker[Session], asterisk_traffic: Path
) -> None:
    """No account, so nobody to be a first-time caller of: neither writer says so."""
    data = b"".join(f.data for f in call_frames(load_capture("classic", asterisk_traffic)))
    data = data.replace(b"8005550100", b"8005550999")  # the same call, to a number calltrack does not know
    messages, _ = parse_buffer(data)
    router.run(RouteRequest("8005550999", "+14045551234", "Jane Doe", SYSTEM, CAPTURE_LINKEDID, "x", T0))

    listen(session_factory, [RawEvent(i + 1, T0, m) for i, m in enumerate(messages)])

    call = calls(session_factory)[CAPTURE_LINKEDID]
    assert (call.account_id, call.ended_at is not None, call.first_time) == (None, True, None)
    unknown = {
        (r["account"], r["source"]): r for r in json.loads(cli.ok("reports", "sources", "--format", "json").output)
    }
    assert unknown[("(unknown)", "(none)")]["first_time"] == 0
