"""A live call shows who is on it: legs and timeline are written as they appear, not only at the end.

So `calls show` of a call in progress lists its channels, and `recordings pause CALL_ID` finds the
channel MixMonitor records without --channel. The listener runs over TCP against the fake Asterisk
(the recorded `answered` call, held after the agent answered); the pause goes to a fake manager
that answers MixMonitorMute as Asterisk 22 does, permissions included. SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from config import Settings
from schema.models import Call
from tests.conftest import Cli
from tests.fakes.ami_action_peer import ActionPeer, RealBytes
from tests.fakes.ami_server import FakeAmiServer, Plan
from tests.integration.ami_harness import Harness, calls_of, frames, wait_for

LINKEDID = "1795915078.0"
INBOUND = "Local/8005550100@from-pstn-00000000;2"  # the ;2 leg ran the dialplan and MixMonitor


def ami_config(tmp_path: Path, port: int) -> str:
    (tmp_path / "ami.secret").write_text("ctsecret\n")
    path = tmp_path / "pause.toml"
    path.write_text(
        f'[[ami.servers]]\nname = "pbx1"\nport = {port}\nusername = "ctadmin"\n'
        f'secret_file = "{tmp_path / "ami.secret"}"\n'
    )
    return str(path)


def show(cli: Cli, call_id: int) -> dict[str, Any]:
    return json.loads(cli.ok("calls", "show", str(call_id), "--format", "json").output)


async def test_a_live_call_lists_its_legs_and_its_recording_can_be_paused(
    cli: Cli, settings: Settings, database_url: str, tmp_path: Path, asterisk_traffic: Path
) -> None:
    stream = frames("answered", asterisk_traffic)
    talking = next(i for i, f in enumerate(stream) if f.data.startswith(b"Event: BridgeEnter")) + 2
    hang_up = asyncio.Event()
    secret = tmp_path / "listener.secret"
    secret.write_text("s3cret\n")
    real = RealBytes.load(asterisk_traffic / "ami" / "ami-answered.txt")
    peer = await ActionPeer(real, channels={INBOUND}).start()
    denied = await ActionPeer(real, channels={INBOUND}, write=frozenset({"reporting"})).start()
    try:
        async with (
            FakeAmiServer([Plan(frames=stream, gate=(talking, hang_up))]) as fake,
            Harness(settings, database_url, fake, secret) as h,
        ):
            await wait_for(
                lambda: len(calls_of(h.engine, h.system).get(LINKEDID, {}).get("legs", [])) == 4, what="live legs"
            )
            with h.engine.connect() as conn:
                call_id = conn.execute(select(Call.id).where(Call.linkedid == LINKEDID)).scalar_one()
            live = await asyncio.to_thread(show, cli, call_id)
            assert live["disposition"] == "" and live["ended_at"] is None and live["answered_at"]
            legs = {leg["channel"]: (leg["role"], leg["hungup_at"]) for leg in live["legs"]}
            assert legs == {
                "Local/8005550100@from-pstn-00000000;1": ("inbound", None),
                INBOUND: ("inbound", None),
                "Local/100@agents-00000001;1": ("agent", None),
                "Local/100@agents-00000001;2": ("agent", None),
            }
            kinds = [line["kind"] for line in live["timeline"]]
            assert kinds[:1] == ["started"] and "answered" in kinds and "ended" not in kinds

            # the pause finds the recorded channel by itself
            out = await asyncio.to_thread(cli.ok, "--config", ami_config(tmp_path, peer.port), "recordings", "pause",
                                          str(call_id))  # fmt: skip
            assert f"recording of call {call_id} paused ({INBOUND})" in out.output
            mute = [m for m in peer.received if m.get("Action") == "MixMonitorMute"]
            assert [(m["Channel"], m["State"]) for m in mute] == [(INBOUND, "1")]
            # a manager user without the call write class: Asterisk says "Permission denied"; calltrack says what to grant
            failed = await asyncio.to_thread(cli.fails, "--config", ami_config(tmp_path, denied.port), "recordings",
                                             "resume", str(call_id))  # fmt: skip
            assert "refused MixMonitorMute on " + INBOUND + ": Permission denied" in failed.output
            assert "needs the call write class: write = reporting,call" in failed.output

            hang_up.set()
            await wait_for(lambda: calls_of(h.engine, h.system)[LINKEDID]["ended_at"] is not None, what="the end")
        ended = calls_of(h.engine, h.system)[LINKEDID]
    finally:
        await peer.close()
        await denied.close()
    # the same legs, now ended, each once; and the timeline as a rebuild from the raw events makes it
    assert sorted(leg["uniqueid"] for leg in ended["legs"]) == [f"1795915078.{n}" for n in range(4)]
    assert all(leg["hungup_at"] is not None for leg in ended["legs"])
    await asyncio.to_thread(cli.ok, "calls", "rebuild")
    from schema.db import make_engine

    engine = make_engine(database_url)
    try:
        rebuilt = calls_of(engine, "pbx1")[LINKEDID]
    finally:
        engine.dispose()
    assert rebuilt == ended
