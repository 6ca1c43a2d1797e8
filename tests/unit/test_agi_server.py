"""The FastAGI server with simple handlers (no database): routing by script, broken peers,
hangups, the allow-list and a graceful stop, against the fake Asterisk peer."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from asterisk_agi.fastagi import AsyncAGI, FastAGIServer, PeerPolicy, Router, SessionInfo, Stats
from asterisk_agi.protocol import MAX_ENV_BYTES, MAX_LINE
from config import AgiSettings, GeneralSettings, Settings
from tests.fakes.fastagi_peer import FakeFastAGIPeer, environment_bytes

SETTINGS = Settings(agi=AgiSettings(read_timeout=1.0, fallback_dial="PJSIP/operator", fallback_timeout=40))


async def echo_caller(agi: AsyncAGI, session: SessionInfo) -> str:
    """Sets what it read, so tests see the environment as the server parsed it."""
    linkedid = await agi.get_variable("CHANNEL(linkedid)")
    await agi.set_variables(
        [
            ("SEEN_NAME", agi.env.known("agi_calleridname")),
            ("SEEN_LINKEDID", linkedid or ""),
            ("SEEN_SYSTEM", session.system),
            ("SEEN_ARGS", "|".join(agi.env.args)),
        ]
    )
    return "ok"


Start = Callable[..., Awaitable[tuple[FastAGIServer, int]]]


async def until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Wait for *condition* (checked on every turn of the loop) with a deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    servers: list[FastAGIServer] = []

    async def run(handlers: dict[str, Any] | None = None, settings: Settings = SETTINGS) -> tuple[FastAGIServer, int]:
        router = Router()
        for name, handler in (handlers if handlers is not None else {"route": echo_caller}).items():
            router.add(name, handler)
        server = FastAGIServer(settings, router)
        _, port = await server.start("127.0.0.1", 0)
        servers.append(server)
        return server, port

    yield run
    for server in servers:
        await server.stop(grace=2)


async def test_a_session_reads_the_recorded_environment_and_answers(start: Start) -> None:
    server, port = await start()
    result = await FakeFastAGIPeer("127.0.0.1", port, linkedid="1795915078.0").session(
        args=("8005550100", "second arg")
    )
    assert result.closed_by_server
    assert result.side.set_vars == {
        "SEEN_NAME": "Jane Doe",
        "SEEN_LINKEDID": "1795915078.0",
        "SEEN_SYSTEM": "asterisk",
        "SEEN_ARGS": "8005550100|second arg",
    }
    assert server.stats.counts["sessions"] == 1
    assert server.stats.statuses["ok"] == 1


async def test_many_sessions_at_once(start: Start) -> None:
    server, port = await start()
    results = await asyncio.gather(
        *(FakeFastAGIPeer("127.0.0.1", port, linkedid=f"L{n}").session(calleridname=f"Caller {n}") for n in range(40))
    )
    assert [r.side.set_vars["SEEN_NAME"] for r in results] == [f"Caller {n}" for n in range(40)]
    assert [r.side.set_vars["SEEN_LINKEDID"] for r in results] == [f"L{n}" for n in range(40)]
    assert server.stats.snapshot()["sessions"] == 40


async def test_utf8_split_across_reads_and_invalid_bytes(start: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    _, port = await start()
    reads: list[bytes] = []
    receive = AsyncAGI.data_received

    def recorded(self: AsyncAGI, data: bytes) -> None:
        reads.append(data)
        receive(self, data)

    monkeypatch.setattr(AsyncAGI, "data_received", recorded)
    env = environment_bytes(calleridname="Zoë Ñúñez 北京")
    cut = env.index("北".encode()) + 1  # in the middle of a three-byte character
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer.write(env[:cut])
    await writer.drain()
    # the rest goes only once the server has read the first part: the two can never arrive as one read
    await until(lambda: b"".join(reads) == env[:cut], "the server to read the first part")
    writer.write(env[cut:])
    peer = FakeFastAGIPeer("127.0.0.1", port)
    await peer._answer(reader, writer, 5)
    assert peer.side.set_vars["SEEN_NAME"] == "Zoë Ñúñez 北京"
    assert b"".join(reads).startswith(env) and len(reads) >= 2

    bad = environment_bytes(calleridname="@@").replace(b"@@", b"J\xffane")
    result = await FakeFastAGIPeer("127.0.0.1", port).session(bad)
    assert result.side.set_vars["SEEN_NAME"] == "J\ufffdane"


async def test_unknown_script_routes_by_fallback_and_logs(start: Start, caplog: pytest.LogCaptureFixture) -> None:
    server, port = await start()
    with caplog.at_level(logging.ERROR, logger="asterisk_agi.fastagi"):
        result = await FakeFastAGIPeer("127.0.0.1", port).session(script="rout")
    assert result.side.set_vars["CALLTRACK_STATUS"] == "fallback"
    assert result.side.set_vars["CALLTRACK_DIAL"] == "PJSIP/operator"
    assert result.side.set_vars["CALLTRACK_DIAL_TIMEOUT"] == "40"
    assert "script 'rout' from 127.0.0.1 is unknown" in caplog.text
    assert server.stats.counts["unknown_scripts"] == 1


async def test_a_handler_bug_still_routes_the_call(start: Start, caplog: pytest.LogCaptureFixture) -> None:
    async def broken(agi: AsyncAGI, session: SessionInfo) -> str:
        await agi.get_variable("CHANNEL(linkedid)")
        raise RuntimeError("bug in a handler")

    server, port = await start({"route": broken})
    with caplog.at_level(logging.ERROR):
        result = await FakeFastAGIPeer("127.0.0.1", port).session()
    assert result.side.set_vars["CALLTRACK_STATUS"] == "fallback"
    assert result.side.set_vars["CALLTRACK_DIAL"] == "PJSIP/operator"
    assert "bug in a handler" in caplog.text
    assert server.stats.counts["errors"] == 1


async def test_caller_hangs_up_during_the_session(start: Start) -> None:
    reached: list[str] = []

    async def long_handler(agi: AsyncAGI, session: SessionInfo) -> str:
        await agi.get_variable("CHANNEL(linkedid)")
        await agi.set_variable("FIRST", "1")
        reached.append("first")
        await agi.execute("STREAM FILE", "beep", "")  # answered with HANGUP, as recorded
        reached.append("after hangup")
        return "ok"

    server, port = await start({"route": long_handler})
    result = await FakeFastAGIPeer("127.0.0.1", port, hangup_at=2).session()
    assert result.closed_by_server
    assert reached == ["first"]
    assert server.stats.counts["hangups"] == 1
    assert server.stats.counts["errors"] == 0
    assert server.stats.active == 0


async def test_511_on_a_dead_channel_is_a_hangup(start: Start) -> None:
    async def handler(agi: AsyncAGI, session: SessionInfo) -> str:
        await agi.execute("ANSWER")
        return "ok"

    server, port = await start({"route": handler})
    peer = FakeFastAGIPeer("127.0.0.1", port)
    peer.side.hung_up = True  # every channel command now gets 511
    result = await peer.session()
    assert result.closed_by_server
    assert server.stats.counts["hangups"] == 1


async def test_peer_closes_in_the_middle_of_the_environment(start: Start) -> None:
    server, port = await start()
    env = environment_bytes()
    received, closed, _ = await FakeFastAGIPeer("127.0.0.1", port).raw(env[: len(env) // 2], then_wait=0)
    assert received == b""
    await until(lambda: server.stats.active == 0 and server.stats.counts["connections"] == 1, "the session to end")
    assert server.stats.counts["protocol_errors"] == 1


async def test_peer_stalls_in_the_middle_of_the_environment_and_is_dropped(start: Start) -> None:
    server, port = await start()
    env = environment_bytes()
    received, closed, _ = await FakeFastAGIPeer("127.0.0.1", port).raw(env[: len(env) // 2], then_wait=10)
    assert closed and received == b""
    assert server.stats.counts["timeouts"] == 1
    assert server.stats.active == 0


async def test_peer_stalls_instead_of_answering_a_command(start: Start) -> None:
    server, port = await start()
    received, closed, _ = await FakeFastAGIPeer("127.0.0.1", port).raw(environment_bytes(), then_wait=10)
    assert closed
    assert received == b"GET VARIABLE CHANNEL(linkedid)\n"
    assert server.stats.counts["timeouts"] == 1


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\n\n",
        b"\n",
        b"agi_network: yes\n" + b"A" * (MAX_ENV_BYTES + 10),
    ],
    ids=["http", "binary", "empty-env", "endless-line"],
)
async def test_garbage_and_oversized_lines_are_dropped(start: Start, data: bytes) -> None:
    # A read deadline far beyond the peer's wait: what drops the session is what it sent, never a
    # stalled loop on a loaded machine (256 KiB go through this same event loop).
    patient = SETTINGS.replace(agi=dataclasses.replace(SETTINGS.agi, read_timeout=60.0))
    server, port = await start(settings=patient)
    received, closed, _ = await FakeFastAGIPeer("127.0.0.1", port).raw(data, then_wait=10)
    assert closed and received == b""
    assert server.stats.counts["protocol_errors"] == 1
    # and the server still serves the next caller
    result = await FakeFastAGIPeer("127.0.0.1", port).session()
    assert result.side.set_vars["SEEN_NAME"] == "Jane Doe"


async def test_garbage_reply_to_a_command_ends_the_session(start: Start) -> None:
    server, port = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(environment_bytes())
    assert await reader.readline() == b"GET VARIABLE CHANNEL(linkedid)\n"
    writer.write(b"HTTP/1.1 200 OK\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert server.stats.counts["protocol_errors"] == 1


async def test_allow_list_refuses_other_addresses(start: Start, caplog: pytest.LogCaptureFixture) -> None:
    settings = SETTINGS.replace(agi=AgiSettings(allowed_hosts=("10.1.2.3", "192.168.0.0/16")))
    server, port = await start(settings=settings)
    with caplog.at_level(logging.WARNING):
        received, closed, _ = await FakeFastAGIPeer("127.0.0.1", port).raw(environment_bytes(), then_wait=5)
    assert closed and received == b""
    assert server.stats.counts["refused"] == 1
    assert server.stats.counts["sessions"] == 0
    assert "127.0.0.1 refused" in caplog.text

    allowed = SETTINGS.replace(agi=AgiSettings(allowed_hosts=("127.0.0.0/8",)))
    _, port2 = await start(settings=allowed)
    result = await FakeFastAGIPeer("127.0.0.1", port2).session()
    assert result.side.set_vars["SEEN_NAME"] == "Jane Doe"


def test_peer_policy() -> None:
    settings = Settings(
        general=GeneralSettings(system_name="main"),
        agi=AgiSettings(allowed_hosts=("10.0.0.0/24", "::1"), peer_systems=("10.0.0.5=pbx-east",)),
    )
    policy = PeerPolicy(settings)
    assert policy.allowed("10.0.0.9") and policy.allowed("::1") and policy.allowed("::ffff:10.0.0.7")
    assert not policy.allowed("10.0.1.1") and not policy.allowed("not-an-address")
    assert policy.system("10.0.0.5") == "pbx-east"
    assert policy.system("10.0.0.6") == "main"
    for bad in (AgiSettings(allowed_hosts=("nonsense",)), AgiSettings(peer_systems=("10.0.0.5",))):
        with pytest.raises(ValueError):
            PeerPolicy(Settings(agi=bad))


async def test_peer_system_names_reach_the_handler(start: Start) -> None:
    settings = SETTINGS.replace(agi=AgiSettings(peer_systems=("127.0.0.1=pbx-east",)))
    _, port = await start(settings=settings)
    result = await FakeFastAGIPeer("127.0.0.1", port).session()
    assert result.side.set_vars["SEEN_SYSTEM"] == "pbx-east"


def test_router_refuses_a_name_twice() -> None:
    router = Router()
    router.add("route", echo_caller)
    with pytest.raises(ValueError, match="registered twice"):
        router.add("route", echo_caller)
    with pytest.raises(ValueError):
        router.add("a/b", echo_caller)

    @router.route("sms")
    async def sms(agi: AsyncAGI, session: SessionInfo) -> str:
        return "ok"

    assert router.names == ["route", "sms"]
    assert router.get("sms") is sms and router.get("nope") is None


async def test_graceful_stop_finishes_sessions_in_flight(start: Start, caplog: pytest.LogCaptureFixture) -> None:
    gate = asyncio.Event()

    async def slow(agi: AsyncAGI, session: SessionInfo) -> str:
        await agi.get_variable("CHANNEL(linkedid)")
        await gate.wait()
        await agi.set_variable("DONE", "1")
        return "ok"

    server, port = await start({"route": slow})
    in_flight = asyncio.create_task(FakeFastAGIPeer("127.0.0.1", port).session())
    await until(lambda: server.stats.active == 1, "the session in flight")
    with caplog.at_level(logging.INFO, logger="asterisk_agi.fastagi"):
        stopping = asyncio.create_task(server.stop(grace=10))
        await until(lambda: "waiting for 1 session(s) in flight" in caplog.text, "the server to start stopping")
    with pytest.raises(OSError):  # no longer accepting
        await asyncio.open_connection("127.0.0.1", port)
    assert not stopping.done()
    gate.set()
    result = await in_flight
    await stopping
    assert result.side.set_vars == {"DONE": "1"}
    assert result.closed_by_server


def test_stats_snapshot() -> None:
    stats = Stats()
    for ms in range(1, 101):
        stats.latencies.append(ms / 1000)
    stats.counts["sessions"] = 100
    stats.statuses["fallback"] = 3
    snap = stats.snapshot()
    assert (snap["sessions"], snap["fallbacks"], snap["latency_ms_p50"], snap["latency_ms_p99"]) == (
        100,
        3,
        51.0,
        100.0,
    )
    assert "sessions=100" in stats.line() and "fallbacks=3" in stats.line()


async def test_a_port_probe_is_not_a_session(start: Start) -> None:
    server, port = await start()
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await FakeFastAGIPeer("127.0.0.1", port).session()
    await until(lambda: server.stats.active == 0 and server.stats.counts["connections"] == 2, "both connections to end")
    snap = server.stats.snapshot()
    assert (snap["connections"], snap["sessions"], snap["hangups"]) == (2, 1, 0)
    assert server.stats.counts["probes"] == 1


async def test_a_flood_while_the_handler_works_is_bounded(start: Start) -> None:
    gate = asyncio.Event()
    seen: list[AsyncAGI] = []

    async def busy(agi: AsyncAGI, session: SessionInfo) -> str:
        seen.append(agi)
        await gate.wait()  # the peer floods meanwhile
        await agi.get_variable("CHANNEL(linkedid)")
        return "ok"

    server, port = await start({"route": busy})
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(environment_bytes())
    await until(lambda: bool(seen), "the handler to start")
    flood = b"A" * 65536
    for _ in range(64):  # 4 MiB, far more than the server holds
        writer.write(flood)
        try:
            await asyncio.wait_for(writer.drain(), 0.2)
        except TimeoutError:
            break  # the server stopped reading: TCP pushed back
    assert len(seen[0]._buffer) < 1024 * 1024
    gate.set()
    try:  # the server drops the session (the flood is no AGI reply); unread bytes may reset it
        await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        pass
    writer.close()
    await until(lambda: server.stats.active == 0, "the session to end")
    assert server.stats.counts["protocol_errors"] == 1


@pytest.mark.parametrize("name", ["Jane\nDoe", "x\nagi_extension: 9999", "x\nagi_network_script: other"])
async def test_a_line_break_in_the_caller_name_is_noticed_and_cannot_pick_the_handler(start: Start, name: str) -> None:
    """Asterisk writes the name raw: the server notices, keeps the session (the handler decides what it trusts)."""
    seen: list[tuple[str, list[str]]] = []

    async def record(agi: AsyncAGI, session: SessionInfo) -> str:
        seen.append((agi.env.script, list(agi.env.anomalies)))
        await agi.set_variables([("X", "1")])
        return "ok"

    async def other(agi: AsyncAGI, session: SessionInfo) -> str:
        raise AssertionError("caller text chose the handler")

    server, port = await start({"route": record, "other": other})
    result = await FakeFastAGIPeer("127.0.0.1", port).session(calleridname=name)
    assert result.closed_by_server and result.side.set_vars == {"X": "1"}
    [(script, anomalies)] = seen
    assert script == "route" and anomalies
    assert server.stats.counts["out_of_step"] == 1


async def test_an_oversized_caller_id_line_does_not_end_the_session(start: Start) -> None:
    server, port = await start()
    result = await FakeFastAGIPeer("127.0.0.1", port).session(callerid="9" * (MAX_LINE + 10))
    assert result.side.set_vars["SEEN_NAME"] == "Jane Doe"
    assert server.stats.counts["out_of_step"] == 1 and server.stats.counts["protocol_errors"] == 0


async def test_stray_lines_between_replies_do_not_stop_the_variables(start: Start) -> None:
    """A HANGUP or a reply nobody asked for (caller text in a poisoned stream): every variable is still set."""
    server, port = await start()
    peer = FakeFastAGIPeer("127.0.0.1", port)
    original = peer.side.respond

    def respond(line: str) -> bytes:
        out = original(line)
        if line.startswith("SET VARIABLE SEEN_NAME"):
            return b"HANGUP\n" + out + b"200 result=1\nagi_callingpres: 0\n"
        return out

    peer.side.respond = respond  # type: ignore[method-assign]
    result = await peer.session()
    assert set(result.side.set_vars) == {"SEEN_NAME", "SEEN_LINKEDID", "SEEN_SYSTEM", "SEEN_ARGS"}
    assert any(c.startswith("GET FULL VARIABLE") for c in result.side.commands)  # it synchronised
