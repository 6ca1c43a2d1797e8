"""The AMI listener against a fake Asterisk (real TCP, recorded streams) and a real database.

Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ami_listener.client import ListenerProtocol
from config import Settings
from schema.db import make_engine
from tests.fakes.ami_server import FakeAmiServer, Plan, interleave, replace_caller_name
from tests.integration.ami_harness import (
    SCENARIOS,
    DatabaseOutage,
    Harness,
    calls_of,
    frames,
    kept_payloads,
    stored_call_events,
    stored_payloads,
    wait_for,
)

# scenario -> (disposition, answered_by, tracking number, hangup cause)
EXPECTED = {
    "answered": ("answered", "Local/100@agents", "+18005550100"),
    "noanswer": ("missed", None, "+18005550200"),
    "busy": ("busy", None, "+18005550300"),
    "earlyhangup": ("abandoned", None, "+18005550400"),
    "origtimeout": ("abandoned", None, "+18005550400"),
    "agihangup": ("abandoned", None, "+18005550500"),
    "mixstop": ("answered", "Local/101@agents", "+18005550600"),
    "iax-answered": ("answered", "Local/100@agents", "+18005550100"),
    "classic": ("failed", None, "+18005550100"),
    "agidown": ("answered", "Local/100@agents", "+18005550100"),
}
LINKEDID = {
    "answered": "1795915078.0",
    "noanswer": "1795915093.4",
    "busy": "1795915122.8",
    "earlyhangup": "1795915131.12",
    "origtimeout": "1795915142.16",
    "agihangup": "1795915169.28",
    "mixstop": "1795915181.30",
    "iax-answered": "1795915222.41",
    "classic": "1795915198.34",
    "agidown": "1795915335.44",
}


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "ami.secret"
    path.write_text("s3cret\n")
    return path


def all_calls(traffic: Path) -> list[Any]:
    """Every recorded scenario at once: ten calls whose events interleave."""
    return interleave(*(frames(s, traffic) for s in SCENARIOS))


def stored_everything(h: Harness, expected: list[dict[str, Any]]) -> bool:
    return len(stored_call_events(h.engine, h.system)) >= len(expected) and not h.sink.backlog


async def test_every_call_shape_is_recorded(
    settings: Settings, database_url: str, secret_file: Path, asterisk_traffic: Path
) -> None:
    stream = all_calls(asterisk_traffic)
    expected = kept_payloads(stream)
    async with FakeAmiServer([Plan(frames=stream)]) as fake, Harness(settings, database_url, fake, secret_file) as h:
        await wait_for(lambda: stored_everything(h, expected), what="all events stored")
        await wait_for(lambda: len(calls_of(h.engine, h.system)) == 10, what="ten calls")
        calls = calls_of(h.engine, h.system)
    assert stored_call_events(h.engine, h.system) == expected  # nothing lost, nothing doubled, in order
    for scenario, (disposition, answered_by, tracking) in EXPECTED.items():
        call = calls[LINKEDID[scenario]]
        assert (call["disposition"], call["answered_by"], call["tracking_number"]) == (
            disposition,
            answered_by,
            tracking,
        ), scenario
        assert call["caller_number"] == "+14045551234"
        assert call["caller_name"] == "Jane Doe"
        assert call["ended_at"] is not None and call["duration"] > 0
    answered = calls[LINKEDID["answered"]]
    # the capture: agent answers at once, audio plays 5.5 s, agent hangs up
    assert 5.5 <= answered["talk_time"] <= 7.0
    assert answered["uniqueid"] == "1795915078.1"  # the ;2 leg that ran the route (AGI, MixMonitor)
    assert answered["recording_file"] == "/var/spool/asterisk/monitor/1795915078.1.wav"
    assert answered["caller_country"] == "US" and answered["caller_location"] == "Georgia"
    kinds = [kind for _, kind, _ in answered["timeline"]]
    assert kinds[:1] == ["started"] and kinds[-1] == "ended"
    assert kinds.index("ringing") < kinds.index("answered") < kinds.index("hangup")
    assert {leg["role"] for leg in answered["legs"]} == {"inbound", "agent"}
    noanswer = calls[LINKEDID["noanswer"]]
    assert 19.5 <= noanswer["ring_time"] <= 21  # Dial timed out after 20 s
    assert noanswer["talk_time"] is None and noanswer["answered_at"] is None
    assert calls[LINKEDID["agihangup"]]["recording_file"] is None  # hung up before MixMonitor
    # the IAX2 capture also holds the carrier's outgoing originate (context default, exten s): not an inbound call
    assert "1795915222.40" not in calls


async def test_random_splits_keep_utf8_caller_names_whole(
    settings: Settings,
    database_url: str,
    secret_file: Path,
    asterisk_traffic: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[bytes] = []
    received = [0]
    receive = ListenerProtocol.data_received

    def recorded(self: ListenerProtocol, data: bytes) -> None:
        reads.append(data)
        received[0] += len(data)
        receive(self, data)

    monkeypatch.setattr(ListenerProtocol, "data_received", recorded)
    name = 'Zoë "Zed" Ñúñez 李小龍'
    stream = interleave(
        replace_caller_name(frames("answered", asterisk_traffic), name),
        replace_caller_name(frames("busy", asterisk_traffic), name),
    )
    expected = kept_payloads(stream)
    # each piece leaves only once the listener has read the one before: the cuts are the listener's reads
    plan = Plan(frames=stream, split_seed=7, delivered=lambda: received[0])
    async with FakeAmiServer([plan]) as fake, Harness(settings, database_url, fake, secret_file) as h:
        await wait_for(lambda: stored_everything(h, expected), what="all events stored")
        await wait_for(lambda: len(calls_of(h.engine, h.system)) == 2, what="two calls")
        calls = calls_of(h.engine, h.system)
    everything, pos, inside_a_character = b"".join(reads), 0, 0
    for chunk in reads[:-1]:
        pos += len(chunk)
        inside_a_character += 0x80 <= everything[pos] < 0xC0  # the next read starts with a continuation byte
    assert inside_a_character >= 10
    assert stored_call_events(h.engine, h.system) == expected
    assert {c["caller_name"] for c in calls.values()} == {name}
    assert calls[LINKEDID["busy"]]["disposition"] == "busy"


async def test_malformed_frames_are_skipped_and_logged(
    settings: Settings,
    database_url: str,
    secret_file: Path,
    asterisk_traffic: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    garbage = (
        b"this line has no colon\r\n\r\n"
        b"\xff\xfe\xfd: not utf-8\r\n\r\n"
        b"Event: Hangup\r\nBroken header line\r\nUniqueid: 1.1\r\nLinkedid: 1.1\r\n\r\n"
        b"\r\n\r\n"
    )
    stream = frames("earlyhangup", asterisk_traffic)
    expected = kept_payloads(stream)
    async with (
        FakeAmiServer([Plan(frames=stream, garbage=garbage)]) as fake,
        Harness(settings, database_url, fake, secret_file) as h,
    ):
        await wait_for(lambda: len(stored_call_events(h.engine, h.system)) >= len(expected) + 1, what="events")
        await wait_for(lambda: bool(calls_of(h.engine, h.system)), what="the call")
        call = calls_of(h.engine, h.system)[LINKEDID["earlyhangup"]]
        assert h.client.connections == 1  # the connection survived the garbage
    assert call["disposition"] == "abandoned"
    assert stored_call_events(h.engine, h.system)[-len(expected) :] == expected
    assert "malformed input skipped: line without a colon skipped: this line has no colon" in caplog.text


async def test_login_refused_is_told_then_retried(
    settings: Settings,
    database_url: str,
    secret_file: Path,
    asterisk_traffic: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    stream = frames("busy", asterisk_traffic)
    plans = [Plan(refuse_login=True), Plan(refuse_login=True), Plan(frames=stream)]
    async with FakeAmiServer(plans) as fake, Harness(settings, database_url, fake, secret_file) as h:
        await wait_for(lambda: bool(calls_of(h.engine, h.system)), what="the call after the retries")
        assert h.client.login_failures == 2
    assert "AMI server 'pbx1' at 127.0.0.1:" in caplog.text
    assert "refused the login of user 'calltrack': Authentication failed" in caplog.text
    assert calls_of(h.engine, h.system)[LINKEDID["busy"]]["disposition"] == "busy"


@pytest.mark.parametrize("while_away", ["call-ended", "call-went-on"])
async def test_drop_mid_call_then_resync_completes_the_call(
    settings: Settings, database_url: str, secret_file: Path, asterisk_traffic: Path, while_away: str
) -> None:
    stream = frames("answered", asterisk_traffic)
    answered_at = next(i for i, f in enumerate(stream) if b"DialStatus: ANSWER" in f.data)
    cut = answered_at + 5  # bridged, talking
    if while_away == "call-ended":
        # the line drops mid-call; by the time we are back, the call is over
        plans = [Plan(frames=stream, drop_after=cut), Plan(history=stream)]
    else:
        # the line drops; ten events are lost; the call is still up when we reconnect
        plans = [Plan(frames=stream, drop_after=cut), Plan(history=stream[: cut + 10], frames=stream[cut + 10 :])]
    async with FakeAmiServer(plans) as fake, Harness(settings, database_url, fake, secret_file) as h:
        await wait_for(
            lambda: calls_of(h.engine, h.system).get(LINKEDID["answered"], {}).get("ended_at") is not None,
            what="the call closed",
        )
        # the resync counter moves only once the CoreShowChannels reply is complete: wait for it, not for the call
        await wait_for(
            lambda: h.client.resyncs >= 2 and [a.get("Action") for a in fake.actions].count("CoreShowChannels") >= 2,
            what="a resync on each connection",
        )
        assert fake.connections == 2
    call = calls_of(h.engine, h.system)[LINKEDID["answered"]]
    assert call["disposition"] == "answered"
    assert call["answered_by"] == "Local/100@agents"
    lost = [detail for _, kind, detail in call["timeline"] if kind == "lost"]
    if while_away == "call-ended":
        assert lost and lost[0]["reason"] == "gone-while-disconnected"
        assert all(leg["hungup_at"] is not None for leg in call["legs"])
    else:
        assert not lost  # the rest of the call arrived normally
        assert call["hangup_cause"] == 16


async def test_asterisk_restart_closes_vanished_calls(
    settings: Settings, database_url: str, secret_file: Path, asterisk_traffic: Path
) -> None:
    first = frames("answered", asterisk_traffic)
    cut = next(i for i, f in enumerate(first) if b"DialStatus: ANSWER" in f.data) + 3
    second = frames("noanswer", asterisk_traffic)
    plans = [Plan(frames=first, drop_after=cut), Plan(uptime=2, history=(), frames=second)]
    async with FakeAmiServer(plans) as fake, Harness(settings, database_url, fake, secret_file) as h:
        await wait_for(lambda: len(calls_of(h.engine, h.system)) == 2, what="two calls")
        await wait_for(
            lambda: all(c["ended_at"] for c in calls_of(h.engine, h.system).values()), what="both calls closed"
        )
    calls = calls_of(h.engine, h.system)
    lost = calls[LINKEDID["answered"]]
    assert lost["disposition"] == "answered"  # it was answered before Asterisk went away
    reasons = [d["reason"] for _, kind, d in lost["timeline"] if kind == "lost"]
    assert reasons == ["asterisk-restart"]
    assert calls[LINKEDID["noanswer"]]["disposition"] == "missed"


async def test_database_outage_mid_stream_loses_and_doubles_nothing(
    settings: Settings, database_url: str, secret_file: Path, asterisk_traffic: Path, tmp_path: Path
) -> None:
    stream = all_calls(asterisk_traffic)
    expected = kept_payloads(stream)
    third = len(stream) // 3

    # the reference: the same stream, uninterrupted, under another system name
    async with (
        FakeAmiServer([Plan(frames=stream)]) as fake,
        Harness(settings, database_url, fake, secret_file, system="reference") as ref,
    ):
        await wait_for(lambda: stored_everything(ref, expected), what="reference stored")
        await wait_for(
            lambda: sum(1 for c in calls_of(ref.engine, "reference").values() if c["ended_at"]) == 10,
            what="reference calls",
        )

    outage = DatabaseOutage(database_url)
    url = await outage.start()
    gate1, gate2 = asyncio.Event(), asyncio.Event()
    try:
        plan = Plan(frames=stream, gate=(third, gate1))
        async with FakeAmiServer([plan]) as fake, Harness(settings.replace(), url, fake, secret_file) as h:
            # a third arrives with the database up
            first_third = len(kept_payloads(stream[:third]))
            await wait_for(
                lambda: len(stored_call_events(h.engine, h.system)) == first_third and not h.sink.backlog,
                what="first third stored",
            )
            outage.down()
            gate1.set()
            rest = len(expected) - first_third
            await wait_for(
                lambda: h.sink.spooled + h.sink.held_for_retry >= rest and not h.sink.backlog,
                what="the rest spooled or held for a retry",
            )
            gate2.set()
            outage.up()
            await wait_for(lambda: stored_everything(h, expected) and not h.sink.spool.pending, what="spool replayed")
            await wait_for(
                lambda: sum(1 for c in calls_of(h.engine, h.system).values() if c["ended_at"]) == 10,
                what="all calls closed",
            )
            assert h.sink.db_failures >= 1
    finally:
        await outage.close()

    engine = make_engine(database_url)
    try:
        assert stored_call_events(engine, "pbx1") == expected  # zero lost, zero duplicates, in order
        assert calls_of(engine, "pbx1") == calls_of(engine, "reference")
    finally:
        engine.dispose()


async def test_restarted_listener_replays_its_spool(
    settings: Settings, database_url: str, secret_file: Path, asterisk_traffic: Path
) -> None:
    stream = interleave(frames("answered", asterisk_traffic), frames("noanswer", asterisk_traffic))
    expected = kept_payloads(stream)
    outage = DatabaseOutage(database_url)
    url = await outage.start()
    try:
        outage.down()
        async with FakeAmiServer([Plan(frames=stream)]) as fake, Harness(settings, url, fake, secret_file) as h:
            # everything read; the first batch waits in memory for a retry, the rest in the spool
            await wait_for(
                lambda: h.sink.received - h.sink.filtered >= len(expected) and not h.sink.backlog,
                what="everything read",
            )
            assert h.sink.spooled > 0 and h.sink.stored == 0
        # stopping with the database still away: the batch held for a retry joins the spool, in order
        assert h.sink.spooled - len(expected) >= 0
        spool_file = h.sink.spool.path
        assert spool_file.stat().st_size > 0  # stopped with the database still away
        outage.up()
        # a new listener process: Asterisk has nothing new; the spool is replayed
        async with FakeAmiServer([Plan()]) as fake, Harness(settings, url, fake, secret_file) as h2:
            await wait_for(lambda: not h2.sink.spool.pending and h2.sink.stored > 0, what="spool replayed")
            await wait_for(lambda: len(calls_of(h2.engine, h2.system)) == 2, what="calls")
    finally:
        await outage.close()
    engine = make_engine(database_url)
    try:
        assert stored_call_events(engine, "pbx1") == expected
        dispositions = {c["disposition"] for c in calls_of(engine, "pbx1").values()}
        payloads = stored_payloads(engine, "pbx1")
    finally:
        engine.dispose()
    assert spool_file.stat().st_size == 0
    assert dispositions == {"answered", "missed"}
    assert sum(1 for p in payloads if p.get("Event") == "FullyBooted") == 2  # one per connection


async def test_a_burst_larger_than_the_queue_goes_through_the_spool_in_order(
    settings: Settings, database_url: str, secret_file: Path, asterisk_traffic: Path
) -> None:
    stream = all_calls(asterisk_traffic)
    expected = kept_payloads(stream)
    async with FakeAmiServer([Plan(frames=stream)]) as fake, Harness(settings, database_url, fake, secret_file) as h:
        h.sink.queue = asyncio.Queue(maxsize=40)  # far smaller than the burst: the reader must spill
        await wait_for(lambda: stored_everything(h, expected) and not h.sink.spool.pending, what="all stored")
        await wait_for(
            lambda: sum(1 for c in calls_of(h.engine, h.system).values() if c["ended_at"]) == 10, what="calls"
        )
        assert h.sink.spooled > 0
        assert h.client.connections == 1  # the socket was never dropped
    engine = make_engine(database_url)
    try:
        assert stored_call_events(engine, "pbx1") == expected
        calls = calls_of(engine, "pbx1")
    finally:
        engine.dispose()
    assert {c["disposition"] for c in calls.values()} == {"answered", "missed", "busy", "abandoned", "failed"}


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "ami.crt", tmp_path / "ami.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_to_a_remote_asterisk(
    settings: Settings, database_url: str, secret_file: Path, asterisk_traffic: Path, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    stream = frames("busy", asterisk_traffic)
    fake = FakeAmiServer([Plan(frames=stream)], ssl=server_ctx)
    async with fake:
        h = Harness(settings, database_url, fake, secret_file)
        h.client.ssl_context = ssl.create_default_context(cafile=str(cert))
        async with h:
            await wait_for(lambda: bool(calls_of(h.engine, h.system)), what="the call over TLS")
            assert h.client.logins == 1
    # without the CA, the certificate is refused and nothing is read
    fake = FakeAmiServer([Plan(frames=stream)], ssl=server_ctx)
    async with fake:
        h = Harness(settings, database_url, fake, secret_file, system="untrusted")
        h.client.ssl_context = ssl.create_default_context()
        async with h:
            await wait_for(lambda: h.client.last_error is not None, what="a refused certificate")
            assert "CERTIFICATE_VERIFY_FAILED" in h.client.last_error
            assert h.client.logins == 0


async def test_restarted_listener_resumes_calls_left_open(
    settings: Settings, database_url: str, secret_file: Path, asterisk_traffic: Path
) -> None:
    stream = frames("mixstop", asterisk_traffic)
    half = next(i for i, f in enumerate(stream) if b"DialStatus: ANSWER" in f.data) + 2
    first = stream[:half]
    async with FakeAmiServer([Plan(frames=first)]) as fake, Harness(settings, database_url, fake, secret_file) as h:
        await wait_for(lambda: len(stored_call_events(h.engine, h.system)) == len(kept_payloads(first)), what="half")
        await wait_for(lambda: bool(calls_of(h.engine, h.system)), what="the live call")
        live = calls_of(h.engine, h.system)[LINKEDID["mixstop"]]
        assert live["disposition"] is None and live["answered_at"] is not None  # live: answered, not ended
    # a new listener process: it knows the call only from the database
    plan = Plan(history=first, frames=stream[half:])
    async with FakeAmiServer([plan]) as fake, Harness(settings, database_url, fake, secret_file) as h:
        await wait_for(lambda: calls_of(h.engine, h.system)[LINKEDID["mixstop"]]["ended_at"] is not None, what="closed")
        call = calls_of(h.engine, h.system)[LINKEDID["mixstop"]]
    assert call["disposition"] == "answered" and call["answered_by"] == "Local/101@agents"
    assert 7.0 <= call["talk_time"] <= 8.5  # answered before the restart, hung up after it
    assert [kind for _, kind, _ in call["timeline"]].count("answered") == 1
    assert not [d for _, kind, d in call["timeline"] if kind == "lost"]


async def test_serve_runs_the_listener_when_servers_are_configured(
    settings: Settings, database_url: str, secret_file: Path, asterisk_traffic: Path, tmp_path: Path
) -> None:
    from calltrack.commands.ami import service
    from calltrack.context import AppContext
    from config import AmiServer, AmiSettings

    app = AppContext(database_url=database_url)
    app._settings = settings
    assert service(app) is None  # no [[ami.servers]]: nothing to run
    async with FakeAmiServer([Plan(frames=frames("busy", asterisk_traffic))]) as fake:
        server = AmiServer(name="pbx1", port=fake.port, username="calltrack", secret_file=str(secret_file))
        app._settings = settings.replace(ami=AmiSettings(servers=(server,)))
        listener = service(app)
        assert listener is not None and listener.name == "ami"
        stop = asyncio.Event()
        task = asyncio.create_task(listener.run(stop))
        engine = make_engine(database_url)
        try:
            await wait_for(
                lambda: bool(calls_of(engine, "pbx1").get(LINKEDID["busy"], {}).get("ended_at")), what="call"
            )
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
            engine.dispose()
            app.close()


async def test_a_busy_asterisk_whose_pong_queues_behind_events_is_not_left(
    settings: Settings, database_url: str, secret_file: Path, asterisk_traffic: Path
) -> None:
    """Events keep arriving, the Pong never does (on a busy server it waits behind the events):
    anything heard is a sign of life, so the listener stays on its one connection."""
    stream = frames("answered", asterisk_traffic)
    # The stream outlasts three Ping intervals and timeouts (a Pong-only watchdog would leave it),
    # while a false "dead" needs 2.3 s with nothing at all: more than a loaded machine stalls a test.
    ping_interval, timeout = 0.3, 2.0
    pace = 3.3 * (ping_interval + timeout) / len(stream)
    assert pace < ping_interval / 2
    async with (
        FakeAmiServer([Plan(frames=stream, pace=pace, answer_ping=False)]) as fake,
        Harness(settings, database_url, fake, secret_file) as h,
    ):
        h.client.ping_interval = ping_interval
        h.client.timeout = timeout
        await wait_for(
            lambda: (calls_of(h.engine, h.system).get(LINKEDID["answered"]) or {}).get("ended_at") is not None,
            what="the call completed",
        )
        assert fake.connections == 1


async def test_a_silent_asterisk_is_detected_by_ping_and_left(
    settings: Settings, database_url: str, secret_file: Path, asterisk_traffic: Path
) -> None:
    stream = frames("answered", asterisk_traffic)
    cut = next(i for i, f in enumerate(stream) if b"DialStatus: ANSWER" in f.data) + 2
    plans = [Plan(frames=stream[:cut], answer_ping=False), Plan(history=stream[:cut], frames=stream[cut:])]
    async with FakeAmiServer(plans) as fake, Harness(settings, database_url, fake, secret_file) as h:
        h.client.ping_interval = 0.2
        h.client.timeout = 0.5
        await wait_for(
            lambda: (calls_of(h.engine, h.system).get(LINKEDID["answered"]) or {}).get("ended_at") is not None,
            what="the call completed on the second connection",
        )
        assert fake.connections == 2
        assert [a.get("Action") for a in fake.actions].count("Ping") >= 1
    assert calls_of(h.engine, h.system)[LINKEDID["answered"]]["disposition"] == "answered"
