"""The AGI route and the AMI listener store the same caller ID for a call, whichever writes last.

The route reads the caller as CALLERID(name)/(num) (the AGI environment or the base64 the sample
dialplan passes: the same text); AMI sends the name through ``ast_escape_c`` and the number as the
carrier gave it. Both writers store the name exactly as Asterisk holds it (CALLERID(name): for a
SIP display name that is what chan_pjsip kept, backslash escapes included) and the number in E.164
(None when withheld). Real recorded traffic (pjsip/), real writers, SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ami_listener.correlator import Correlator, RawEvent
from ami_listener.parser import parse_buffer
from ami_listener.sink import CallWriter
from asterisk_agi.handlers.inputs import CallInputs
from asterisk_agi.handlers.route import build_request
from config import GeneralSettings, RecorderSettings, Settings
from schema.db import make_engine, make_session_factory
from schema.models import Call
from tests.conftest import Cli
from tests.fakes.ami_server import (
    Frame,
    call_frames,
    epoch_of,
    load_capture,
    load_pjsip_capture,
    replace_caller_name,
    with_timestamps,
)
from tracking.phone import try_normalize
from tracking.routing import CallRouter, RouteStore

T0 = dt.datetime(2026, 12, 2, 1, 39, tzinfo=dt.UTC)

#: pjsip capture -> its FastAGI session, and what both writers must store (CALLERID(name), E.164 number)
CAPTURES = {
    "sip-call-answered": ("fastagi-001-route-sip-call-answered", "Jane Doe", "+14045551234"),
    "sip-call-quotes": ("fastagi-002-route-sip-call-quotes", 'Zoë \\"JJ\\" O\'Brien \\\\ x', "+14045551234"),
    "sip-call-quotes-comma": ("fastagi-003-route-sip-call-quotes-comma", "Doe, Jane; Dr. (100%) <x>", "+14045551234"),
    "sip-call-privacy-pai": ("fastagi-004-route-sip-call-privacy-pai", "Jane Doe", "+14045551234"),
    "sip-call-anonymous": ("fastagi-005-route-sip-call-anonymous", "Anonymous", None),
    "sip-call-no-display": ("fastagi-006-route-sip-call-no-display", None, "+14045551234"),
}


def agi_environment(traffic: Path, session: str) -> dict[str, str]:
    head = (traffic / "pjsip" / f"{session}.A.raw").read_bytes().split(b"\n\n", 1)[0].decode("utf-8")
    return dict(line.split(": ", 1) if ": " in line else (line.rstrip(":"), "") for line in head.split("\n"))


def route(settings: Settings, env: dict[str, str], system: str = "pbx1") -> None:
    """The route's write for this call, from the caller ID as the route reads it."""
    inputs = CallInputs(
        dialled=env["agi_arg_1"],
        linkedid=env["agi_arg_2"],
        uniqueid=env["agi_uniqueid"],
        caller_number=env["agi_callerid"],
        caller_name=env["agi_calleridname"],
    )
    store = RouteStore(settings.database_url)
    try:
        CallRouter(settings, store).run(build_request(inputs, system, T0))
    finally:
        store.close()


def listen(settings: Settings, frames: list[Frame], system: str = "pbx1") -> None:
    """The listener's writes for these frames (the real correlator and writer, one batch)."""
    messages, rest = parse_buffer(b"".join(f.data for f in frames))
    assert rest == b""
    correlator = Correlator(lambda raw: try_normalize(raw, "US"))
    correlator.feed_many(RawEvent(i + 1, T0, m) for i, m in enumerate(messages))
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            CallWriter(system).write(session, correlator.take_changed())
    finally:
        engine.dispose()


def stored(settings: Settings) -> list[dict[str, Any]]:
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Call.linkedid, Call.caller_number, Call.caller_name, Call.route_status))
            return [dict(r._mapping) for r in rows]
    finally:
        engine.dispose()


@pytest.fixture
def routed(settings: Settings, cli: Cli, make_account: Callable[..., None], tmp_path: Path) -> Settings:
    make_account()
    cli.ok(
        "numbers",
        "add",
        "+18005550100",
        "--account",
        "Acme",
        "--source",
        "Google Ads",
        "--forward-to",
        "PJSIP/agent100",
    )
    return settings.replace(
        general=GeneralSettings(data_dir=tmp_path / "data", system_name="pbx1"),
        recorder=RecorderSettings(spool_dir=tmp_path / "spool"),
    )


@pytest.mark.parametrize("order", ["route-first", "listener-first"])
@pytest.mark.parametrize("capture", list(CAPTURES))
def test_both_writers_store_the_same_caller_id(
    routed: Settings, asterisk_traffic: Path, capture: str, order: str
) -> None:
    session, name, number = CAPTURES[capture]
    env = agi_environment(asterisk_traffic, session)
    frames = call_frames(load_pjsip_capture(capture, asterisk_traffic))
    steps = [lambda: route(routed, env), lambda: listen(routed, frames)]
    for step in steps if order == "route-first" else reversed(steps):
        step()
        (row,) = stored(routed)
        assert (row["caller_number"], row["caller_name"]) == (number, name), f"after {step}"
    assert row["linkedid"] == env["agi_arg_2"] and row["route_status"] == "ok"


@pytest.mark.parametrize("order", ["route-first", "listener-first"])
def test_names_with_line_breaks_quotes_and_utf8_and_national_numbers(
    routed: Settings, asterisk_traffic: Path, order: str
) -> None:
    # CALLERID(name) with what AMI escapes (quote, apostrophe, backslash, tab, line feed, ?) and UTF-8,
    # from a carrier that sends the national number (AMI CallerIDNum 4045551234)
    name = 'Zoë "Zed" O\'Brien\\Ñ\tx\nsecond line? 李'
    recorded = load_capture("answered", asterisk_traffic)
    frames = with_timestamps(call_frames(recorded), epoch_of(recorded))
    frames = replace_caller_name(frames, name)
    frames = [Frame(f.at, f.data.replace(b"+14045551234", b"4045551234")) for f in frames]
    env = {
        "agi_arg_1": "8005550100",
        "agi_arg_2": "1795915078.0",
        "agi_uniqueid": "1795915078.1",
        "agi_callerid": "4045551234",
        "agi_calleridname": name,
    }
    steps = [lambda: route(routed, env), lambda: listen(routed, frames)]
    for step in steps if order == "route-first" else reversed(steps):
        step()
        (row,) = stored(routed)
        assert (row["caller_number"], row["caller_name"]) == ("+14045551234", name)


def test_a_caller_name_longer_than_the_column_is_cut_alike(routed: Settings, asterisk_traffic: Path) -> None:
    # an 8 KB name (a CNAM lookup, a trunk): PostgreSQL refuses the whole batch if the listener does not cut it
    name = "Ä" * 300
    recorded = load_capture("answered", asterisk_traffic)
    frames = replace_caller_name(with_timestamps(call_frames(recorded), epoch_of(recorded)), name)
    listen(routed, frames)
    (row,) = stored(routed)
    assert row["caller_name"] == "Ä" * 200
    route(
        routed,
        {"agi_arg_1": "8005550100", "agi_arg_2": "1795915078.0", "agi_uniqueid": "1795915078.1",
         "agi_callerid": "+14045551234", "agi_calleridname": name},
    )  # fmt: skip
    (row,) = stored(routed)
    assert row["caller_name"] == "Ä" * 200
