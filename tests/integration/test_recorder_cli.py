"""`calltrack recordings ...` end to end: real ffmpeg, real database, a fake AMI peer for pause."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from schema.db import make_engine
from schema.models import AuditEntry, Call, CallLeg, Recording
from tests.conftest import Cli
from tests.fakes.ami_action_peer import ActionPeer, RealBytes
from tests.integration.recorder_helpers import add_call, age, put_real

CHANNEL = "Local/8005550100@from-pstn-00000000;2"


@pytest.fixture
def factory(cli: Cli) -> Iterator[sessionmaker]:
    engine = make_engine(cli.database_url)
    yield sessionmaker(bind=engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    path = tmp_path / "spool"
    path.mkdir()
    return path


def process(cli: Cli, tmp_path: Path, *extra: str) -> str:
    return cli.ok(
        "recordings", "process", "--spool", str(tmp_path / "spool"), "--archive", str(tmp_path / "archive"), *extra
    ).output


def test_process_list_show_verify_export_delete(
    cli: Cli,
    factory: sessionmaker,
    tmp_path: Path,
    spool: Path,
    asterisk_traffic: Path,
) -> None:
    call_id, _ = add_call(factory)
    put_real(asterisk_traffic, spool, f"{call_id}.wav")
    put_real(asterisk_traffic, spool, "unknown-call.wav", "mixstop-1795915181.31.wav")

    out = process(cli, tmp_path, "--format", "opus")
    assert "2 archived" in out

    listed = json.loads(cli.ok("recordings", "list", "--format", "json").output)
    by_call = {r["call"]: r for r in listed}
    assert set(by_call) == {call_id, "orphan"}
    assert by_call[call_id]["account"] == "Acme" and by_call[call_id]["format"] == "opus"
    assert by_call["orphan"]["account"] is None and by_call["orphan"]["duration"] == pytest.approx(3.22, abs=0.1)
    table = cli.ok("recordings", "list", "--orphans").output
    assert "orphan" in table and "unknown-call" in table and f"/{call_id}.ogg" not in table
    assert [
        r["call"] for r in json.loads(cli.ok("recordings", "list", "--account", "Acme", "--format", "json").output)
    ] == [call_id]
    assert json.loads(cli.ok("recordings", "list", "--since", "2999-01-01", "--format", "json").output) == []
    assert "--since" in cli.fails("recordings", "list", "--since", "last tuesday").output

    rec_id = by_call[call_id]["id"]
    shown = cli.ok("recordings", "show", str(rec_id)).output
    archive = Path(by_call[call_id]["path"])
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert digest in shown and str(spool / f"{call_id}.wav") in shown

    assert "2 of 2 archives match" in cli.ok("recordings", "verify").output

    export_dir = tmp_path / "out"
    export_dir.mkdir()
    cli.ok("recordings", "export", str(rec_id), "--to", str(export_dir))
    assert hashlib.sha256((export_dir / archive.name).read_bytes()).hexdigest() == digest
    assert "exists already" in cli.fails("recordings", "export", str(rec_id), "--to", str(export_dir)).output

    archive.write_bytes(archive.read_bytes()[:-10] + b"x" * 10)  # bit rot
    result = cli.fails("recordings", "verify")
    assert f"recording {rec_id}: MISMATCH" in result.output and "1 of 2 archives match" in result.output
    assert (
        "does not match its checksum"
        in cli.fails("recordings", "export", str(rec_id), "--to", str(tmp_path / "x.ogg")).output
    )
    assert not (tmp_path / "x.ogg").exists()

    cli.fails("recordings", "delete", str(rec_id), input="n\n")
    assert archive.exists()
    cli.ok("recordings", "delete", str(rec_id), "--yes")
    assert not archive.exists()
    assert json.loads(cli.ok("recordings", "show", str(rec_id), "--format", "json").output)["state"] == "deleted"
    assert "deleted already" in cli.fails("recordings", "delete", str(rec_id), "--yes").output
    assert "unknown recording 999" in cli.fails("recordings", "show", "999").output
    with factory() as s:
        actions = [a.action for a in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert actions == ["recording.export", "recording.delete"]


def test_process_reports_bad_files_and_keeps_them(cli: Cli, factory: sessionmaker, tmp_path: Path, spool: Path) -> None:
    (spool / "broken.wav").write_bytes(b"")
    import os

    os.utime(spool / "broken.wav", (0, 0))

    result = cli("recordings", "process", "--spool", str(spool), "--archive", str(tmp_path / "archive"))

    assert result.exit_code == 1
    assert "broken.wav: empty file (0 bytes) (will retry)" in result.output
    assert "Traceback" not in result.output
    assert (spool / "broken.wav").exists()
    with factory() as s:
        rec = s.scalars(select(Recording)).one()
    assert (rec.state, rec.last_error) == ("pending", "empty file (0 bytes)")


def test_retry_after_failing_for_good(
    cli: Cli, factory: sessionmaker, tmp_path: Path, spool: Path, asterisk_traffic: Path
) -> None:
    config = tmp_path / "one-attempt.toml"
    config.write_text("[recorder]\nmax_attempts = 1\n")
    source = put_real(asterisk_traffic, spool, "3.wav")
    source.write_bytes(source.read_bytes()[:30])  # a copy interrupted inside the header
    age(source, 3600)
    cli.fails("--config", str(config), "recordings", "process", "--spool", str(spool), "--archive", str(tmp_path / "a"))
    (rec,) = json.loads(cli.ok("recordings", "list", "--state", "failed", "--format", "json").output)
    assert rec["error"].startswith("corrupt WAV")
    assert "is failed" not in cli.fails("recordings", "retry").output
    put_real(asterisk_traffic, spool, "3.wav")  # the full file, copied again

    assert "1 recording(s)" in cli.ok("recordings", "retry", "--all-failed").output
    out = cli.ok(
        "--config", str(config), "recordings", "process", "--spool", str(spool), "--archive", str(tmp_path / "a")
    ).output
    assert "1 archived" in out
    assert "archived, not failed" in cli.fails("recordings", "retry", str(rec["id"])).output


def test_missing_ffmpeg_is_reported_with_the_package(
    cli: Cli, tmp_path: Path, spool: Path, asterisk_traffic: Path
) -> None:
    config = tmp_path / "ffmpeg-missing.toml"
    config.write_text('[recorder]\nffmpeg = "/opt/nowhere/ffmpeg"\n')
    source = put_real(asterisk_traffic, spool, "1.wav")

    result = cli.fails("--config", str(config), "recordings", "process", "--spool", str(spool))

    assert "apt-get install ffmpeg" in result.output
    assert source.exists()


def test_nothing_to_do(cli: Cli, tmp_path: Path, spool: Path) -> None:
    assert "nothing to do" in cli.ok("recordings", "process", "--spool", str(spool)).output


# --- pause / resume --------------------------------------------------------------------


@pytest.fixture
def ami_peer(asterisk_traffic: Path) -> Iterator[ActionPeer]:
    """The fake AMI peer in a thread of its own (the CLI runs its own event loop)."""
    loop = asyncio.new_event_loop()
    peer = ActionPeer(RealBytes.load(asterisk_traffic / "ami" / "ami-answered.txt"), channels={CHANNEL})
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(peer.start(), loop).result(5)
    yield peer
    asyncio.run_coroutine_threadsafe(peer.close(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def ami_config(tmp_path: Path, port: int, secret: str = "ctsecret") -> str:
    etc = tmp_path / f"etc-{secret}"  # not ./calltrack.toml, which every command would read
    etc.mkdir(exist_ok=True)
    (etc / "ami.secret").write_text(secret + "\n")
    path = etc / "calltrack.toml"
    path.write_text(
        f'[[ami.servers]]\nname = "asterisk"\nport = {port}\nusername = "ctadmin"\nsecret_file = "{etc / "ami.secret"}"\n'
    )
    return str(path)


def live_call(factory: sessionmaker) -> int:
    call_id, _ = add_call(factory, ended=False)
    with factory() as s, s.begin():
        s.add(CallLeg(call_id=call_id, uniqueid="1795915078.1", channel=CHANNEL, role="inbound"))
    return call_id


def test_pause_and_resume(cli: Cli, factory: sessionmaker, tmp_path: Path, ami_peer: ActionPeer) -> None:
    call_id = live_call(factory)
    config = ami_config(tmp_path, ami_peer.port)

    assert "paused" in cli.ok("--config", config, "recordings", "pause", str(call_id)).output
    cli.ok("--config", config, "recordings", "resume", str(call_id), "--direction", "read")

    mutes = [m for m in ami_peer.received if m.get("Action") == "MixMonitorMute"]
    assert [(m["Channel"], m["Direction"], m["State"]) for m in mutes] == [
        (CHANNEL, "both", "1"),
        (CHANNEL, "read", "0"),
    ]
    login = next(m for m in ami_peer.received if m.get("Action") == "Login")
    assert (login["Username"], login["Secret"]) == ("ctadmin", "ctsecret")
    with factory() as s:
        assert [a.action for a in s.scalars(select(AuditEntry))] == ["recording.pause", "recording.resume"]


def test_pause_errors(cli: Cli, factory: sessionmaker, tmp_path: Path, ami_peer: ActionPeer) -> None:
    call_id = live_call(factory)
    config = ami_config(tmp_path, ami_peer.port)

    out = cli.fails("--config", config, "recordings", "pause", str(call_id), "--channel", "PJSIP/gone-00000001").output
    assert "refused MixMonitorMute on PJSIP/gone-00000001: No such channel" in out
    assert "unknown call 4242" in cli.fails("--config", config, "recordings", "pause", "4242").output
    assert (
        "login refused: Authentication failed"
        in cli.fails(
            "--config", ami_config(tmp_path, ami_peer.port, "wrong"), "recordings", "pause", str(call_id)
        ).output
    )
    assert "no [[ami.servers]] entry" in cli.fails("recordings", "pause", str(call_id)).output
    ended_id, _ = add_call(factory, ended=True, account="Other")
    with factory() as s, s.begin():
        s.add(CallLeg(call_id=ended_id, uniqueid="1795915078.1", channel=CHANNEL, role="inbound"))
    assert "has ended" in cli.fails("--config", config, "recordings", "pause", str(ended_id)).output
    with factory() as s:
        assert s.get(Call, call_id) is not None


async def test_mute_without_an_answer_or_a_listener(asterisk_traffic: Path, tmp_path: Path) -> None:
    from calltrack.ami_action import AmiActionFailed, mixmonitor_mute
    from config.settings import AmiServer

    peer = await ActionPeer(RealBytes.load(asterisk_traffic / "ami" / "ami-answered.txt"), answer_actions=False).start()
    server = AmiServer(port=peer.port, username="ctadmin", secret="ctsecret")
    with pytest.raises(AmiActionFailed, match="no reply to MixMonitorMute within 0.3 s"):
        await mixmonitor_mute(server, CHANNEL, True, timeout=0.3)
    await peer.close()
    with pytest.raises(AmiActionFailed, match="cannot connect"):
        await mixmonitor_mute(AmiServer(port=peer.port, secret="x"), CHANNEL, True, timeout=2)


def test_process_refuses_a_spool_folder_that_does_not_exist(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "typo-spool"
    result = cli.fails("recordings", "process", "--spool", str(missing))
    assert f"the recorder's spool folder {missing} does not exist" in result.output
    assert result.output.count("\n") == 1 and "nothing to do" not in result.output
    config = tmp_path / "calltrack.toml"
    config.write_text(f'[recorder]\nspool_dir = "{missing}"\n')
    assert f"spool folder {missing} does not exist" in cli.fails("--config", str(config), "recordings", "watch").output


def test_a_repaired_header_is_told_by_process_list_and_show(
    cli: Cli, factory: sessionmaker, tmp_path: Path, spool: Path, asterisk_traffic: Path
) -> None:
    call_id, _ = add_call(factory)
    source = put_real(asterisk_traffic, spool, f"{call_id}.wav")
    data = bytearray(source.read_bytes())
    data[4:8] = data[40:44] = b"\0\0\0\0"  # as Asterisk leaves it when it dies mid-call
    source.write_bytes(bytes(data))
    age(source, 3600)

    out = process(cli, tmp_path)

    assert "1 archived, 1 of them with a repaired WAV header" in out
    (listed,) = json.loads(cli.ok("recordings", "list", "--format", "json").output)
    assert listed["state"] == "archived" and listed["duration"] == pytest.approx(5.5, abs=0.1)
    assert listed["note"].startswith(f"WAV header repaired ({call_id}.wav: data size 0")
    assert "NOTE" in cli.ok("recordings", "list").output.splitlines()[0]
    assert "WAV header repaired" in cli.ok("recordings", "show", str(listed["id"])).output
