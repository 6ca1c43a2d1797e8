"""Stopping `calltrack serve` loses nothing: the FastAGI server drains first, the AMI listener stops last.

A call whose AGI is running when SIGTERM arrives is routed, then dialled and answered by
Asterisk after its AGI returned; the listener must still be there to record the answer.
Real FastAGI server and AMI listener, fakes playing Asterisk 22 from the recorded traffic,
a real database (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from ami_listener.listener import AmiListener
from asterisk_agi.service import AgiService
from calltrack.services import run_services
from config import AgiSettings, AmiServer, AmiSettings, GeneralSettings, RecorderSettings, Settings
from schema.db import make_engine, make_session_factory
from tests.conftest import Cli
from tests.fakes.ami_server import FakeAmiServer, Plan
from tests.fakes.fastagi_peer import FakeFastAGIPeer, environment_bytes
from tests.integration.ami_harness import calls_of, frames, wait_for


def refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) != 0


async def test_an_answered_call_routed_during_shutdown_is_stored_answered(
    cli: Cli,
    make_account: Callable[..., None],
    settings: Settings,
    tmp_path: Path,
    asterisk_traffic: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ami_listener.listener")
    make_account()
    cli.ok("numbers", "add", "800-555-0100", "--account", "Acme", "--source", "Google Ads",
           "--forward-to", "Local/100@agents")  # fmt: skip
    stream = frames("answered", asterisk_traffic)
    dialling = next(i for i, f in enumerate(stream) if f.data.startswith(b"Event: DialBegin"))
    answer = next(i for i, f in enumerate(stream) if b"DialStatus: ANSWER" in f.data)
    call_in = asyncio.Event()  # the call's channels, as the listener hears of them while its AGI runs
    after_agi = asyncio.Event()  # Asterisk dials once the AGI has returned
    picked_up = asyncio.Event()  # the agent answers a while later
    secret = tmp_path / "ami.secret"
    secret.write_text("s3cret\n")
    async with FakeAmiServer(
        [Plan(frames=stream, gates=[(0, call_in), (dialling, after_agi), (answer, picked_up)])]
    ) as fake:
        server = AmiServer(name="pbx1", port=fake.port, username="calltrack", secret_file=str(secret))
        settings = settings.replace(
            general=GeneralSettings(data_dir=tmp_path / "data", system_name="pbx1"),
            agi=AgiSettings(listen="127.0.0.1:0"),
            ami=AmiSettings(servers=(server,)),
            recorder=RecorderSettings(spool_dir=tmp_path / "spool"),
        )
        engine = make_engine(settings.database_url)
        agi = AgiService(settings)
        listener = AmiListener(settings, make_session_factory(engine), reconnect_min=0.05, spool_fsync=False)
        stop = asyncio.Event()
        serving = asyncio.create_task(run_services([agi, listener], stop))
        try:
            await asyncio.wait_for(agi.started.wait(), 10)
            assert agi.address is not None
            port = agi.address[1]
            await wait_for(lambda: listener.connections[0].client.resyncs == 1, what="the listener connected")

            # the AGI session is under way when the stop comes
            peer = FakeFastAGIPeer("127.0.0.1", port, linkedid="1795915078.0")
            env = environment_bytes(uniqueid="1795915078.1", extension="8005550100")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(env[: len(env) // 2])
            await writer.drain()
            stop.set()
            await wait_for(lambda: refused(port), what="the FastAGI server to stop accepting")
            # the listener, stopped last, still hears of the call while its AGI runs
            call_in.set()
            await wait_for(lambda: "1795915078.0" in calls_of(engine, "pbx1"), 5, "the call seen ringing in")
            writer.write(env[len(env) // 2 :])
            assert await peer._answer(reader, writer, 10)
            routed = peer.side.set_vars
            assert routed["CALLTRACK_STATUS"] == "ok" and routed["CALLTRACK_DIAL"] == "Local/100@agents"
            after_agi.set()  # the dialplan goes on: Dial; the agent's phone rings
            await wait_for(lambda: "stopping once 1 ringing call(s)" in caplog.text, 10, "the listener to wait")
            picked_up.set()  # the agent answers, talks, hangs up
            assert await asyncio.wait_for(serving, 30) == 0
            calls = calls_of(engine, "pbx1")
        finally:
            stop.set()
            if not serving.done():
                serving.cancel()
            engine.dispose()
    assert list(calls) == ["1795915078.0"]  # one row: the route's, completed by the listener
    call = calls["1795915078.0"]
    assert call["route_status"] == "ok"
    assert call["disposition"] == "answered" and call["answered_by"] == "Local/100@agents"
    assert call["ended_at"] is not None and call["talk_time"] > 5
