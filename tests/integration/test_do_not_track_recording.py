"""A do-not-track caller's call recorded anyway is never archived: both writers of the call mark it,
and the recorder deletes the spool file unheard. Real route, real listener pieces, real ffmpeg, on
SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ami_listener.correlator import Correlator, RawEvent
from ami_listener.parser import parse_buffer
from ami_listener.sink import CallWriter
from config import RecorderSettings, Settings
from recorder.pipeline import Recorder
from schema.models import Call, Recording
from tests.conftest import Cli
from tests.fakes.ami_server import call_frames, load_capture
from tests.integration.recorder_helpers import put_real, recorder_settings
from tracking.phone import try_normalize
from tracking.routing import CallRouter, RouteRequest, RouteStore

T0 = dt.datetime(2026, 11, 30, 15, 0, tzinfo=dt.UTC)


@pytest.fixture
def acme(cli: Cli, make_account: Callable[..., None]) -> None:
    make_account()
    cli.ok("numbers", "add", "800-555-0100", "--account", "Acme", "--source", "Google Ads", "--forward-to", "PJSIP/100")
    cli.ok("callers", "do-not-track", "+1 404 555 1234")


def answered_capture(traffic: Path) -> list[RawEvent]:
    messages, rest = parse_buffer(b"".join(f.data for f in call_frames(load_capture("answered", traffic))))
    assert rest == b""
    return [RawEvent(i + 1, T0 + dt.timedelta(milliseconds=10 * i), m) for i, m in enumerate(messages)]


def listen(session_factory: sessionmaker[Session], events: list[RawEvent]) -> None:
    correlator, writer = Correlator(lambda raw: try_normalize(raw, "US")), CallWriter("pbx1")
    for event in events:
        correlator.feed(event)
        with session_factory() as s, s.begin():
            writer.write(s, correlator.take_changed())


@pytest.mark.parametrize("writer", ["route", "listener"])
def test_recording_of_an_untracked_call_is_deleted_not_archived(
    cli: Cli,
    acme: None,
    settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    asterisk_traffic: Path,
    writer: str,
) -> None:
    if writer == "route":  # the route saw the caller (and the dialplan recorded all the same)
        store = RouteStore(settings.database.url)
        try:
            router = CallRouter(settings.replace(recorder=RecorderSettings(spool_dir=tmp_path / "m")), store)
            router.run(RouteRequest("8005550100", "+14045551234", "Jane Doe", "pbx1", "1795915078.0", "x", T0))
        finally:
            store.close()
        with session_factory() as s:
            assert s.scalars(select(Call.do_not_track)).one() is True  # the route marked it
    listen(session_factory, answered_capture(asterisk_traffic))  # the listener writes it from the events
    with session_factory() as s:
        (call,) = s.scalars(select(Call))
        assert (call.do_not_track, call.caller_number, call.ended_at is not None) == (True, None, True)
        call_id = call.id
    cfg = recorder_settings(settings, tmp_path)
    source = put_real(asterisk_traffic, cfg.recorder.spool_dir, f"{call_id}.wav")

    report = Recorder(cfg, session_factory).run_pass()

    assert (report.archived, report.discarded) == ([], [str(call_id)])
    assert not source.exists()
    assert not (tmp_path / "archive").exists() or not any((tmp_path / "archive").rglob("*.*"))
    with session_factory() as s:
        (rec,) = s.scalars(select(Recording))
        assert (rec.call_id, rec.state, rec.path) == (call_id, "discarded", None)
    (listed,) = json.loads(cli.ok("recordings", "list", "--state", "discarded", "--format", "json").output)
    assert listed["path"] is None and "do-not-track" in listed["note"]
    shown = cli.ok("recordings", "show", str(rec.id)).output
    assert "discarded" in shown and "deleted without being archived" in shown
