"""`calltrack agi serve` as a real process (SIGHUP reload, SIGTERM stop) and `calltrack agi replay`."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from config import load_settings
from tests.conftest import Cli
from tests.fakes.fastagi_peer import FakeFastAGIPeer
from tests.integration.test_agi_route import World, acme_fixture, world_fixture  # noqa: F401 (fixtures)
from tracking.routing import CallSpool, spool_folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, tmp_path: Path, fallback: str) -> None:
    path.write_text(
        textwrap.dedent(
            f"""
            [general]
            data_dir = "{tmp_path / "data"}"
            [agi]
            fallback_dial = "{fallback}"
            # generous: a loaded machine must not turn a found number into a fallback (not what is tested here)
            db_deadline_ms = 5000
            [recorder]
            spool_dir = "{tmp_path / "monitor"}"
            """
        )
    )


def wait_state(pid: int, state: str) -> None:
    """Until the process is in *state* (``T``: stopped), from /proc."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == state:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never reached state {state}")


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "calltrack agi serve exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("calltrack agi serve did not listen")


async def test_agi_serve_reloads_on_sighup_and_stops_on_sigterm(
    database_url: str,
    tmp_path: Path,
    world: World,
    acme: dict[str, int],
) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"], forward_to="PJSIP/100")
    config = tmp_path / "calltrack.toml"
    write_config(config, tmp_path, "PJSIP/day")
    port = free_port()
    env = {**os.environ, "CALLTRACK_CONFIG": str(config), "CALLTRACK_DATABASE_URL": database_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "calltrack.main", "agi", "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        await asyncio.to_thread(wait_listening, port, proc)
        known = await FakeFastAGIPeer("127.0.0.1", port, linkedid="k").session()
        unknown = await FakeFastAGIPeer("127.0.0.1", port, linkedid="u1").session(extension="8005559999")
        assert (known.status, known.side.set_vars["CALLTRACK_DIAL"]) == ("ok", "PJSIP/100")
        assert unknown.side.set_vars["CALLTRACK_DIAL"] == "PJSIP/day"

        write_config(config, tmp_path, "PJSIP/night")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while True:  # the reload is asynchronous to this test: ask again until the new fallback answers
            again = await FakeFastAGIPeer("127.0.0.1", port, linkedid="u2").session(extension="8005559999")
            if again.side.set_vars["CALLTRACK_DIAL"] == "PJSIP/night":
                break
            assert again.side.set_vars["CALLTRACK_DIAL"] == "PJSIP/day"  # the old settings until then
            assert time.monotonic() < deadline, "the settings were not reloaded"
            await asyncio.sleep(0.1)

        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = err.decode()
    assert proc.returncode == 0, stderr
    assert "settings reloaded" in stderr
    assert "stopped; sessions=" in stderr
    assert "Traceback" not in stderr
    assert {c.linkedid for c in world.calls()} == {"k", "u1", "u2"}


def test_agi_serve_refuses_a_bad_listen_address(cli: Cli) -> None:
    result = cli.fails("agi", "serve", "--listen", "nowhere")
    assert "HOST:PORT" in result.output


def test_agi_replay_writes_spooled_calls(
    cli: Cli, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(environ={"CALLTRACK_DATA_DIR": str(tmp_path / "home" / "calltrack")})
    spool = CallSpool(spool_folder(settings))
    spool.append(
        "asterisk", "L9", {"route_status": "fallback", "dial": "PJSIP/operator", "started_at": dt.datetime.now(dt.UTC)}
    )
    monkeypatch.setenv("CALLTRACK_DATA_DIR", str(tmp_path / "home" / "calltrack"))
    result = cli.ok("agi", "replay")
    assert "wrote 1 spooled call row(s); 0 waiting" in result.output
    [call] = world.calls()
    assert (call.linkedid, call.route_status, call.dial) == ("L9", "fallback", "PJSIP/operator")
    assert cli.ok("agi", "replay").output.startswith("wrote 0")


async def test_calltrack_serve_runs_the_agi_service(
    database_url: str, tmp_path: Path, world: World, acme: dict[str, int]
) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"], forward_to="PJSIP/100")
    config = tmp_path / "calltrack.toml"
    write_config(config, tmp_path, "PJSIP/day")
    port = free_port()
    config.write_text(config.read_text().replace("[agi]\n", f'[agi]\nlisten = "127.0.0.1:{port}"\n'))
    env = {**os.environ, "CALLTRACK_CONFIG": str(config), "CALLTRACK_DATABASE_URL": database_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "calltrack.main", "serve", "--only", "agi"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        await asyncio.to_thread(wait_listening, port, proc)
        result = await FakeFastAGIPeer("127.0.0.1", port, linkedid="s1").session()
        assert (result.status, result.side.set_vars["CALLTRACK_DIAL"]) == ("ok", "PJSIP/100")
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert "FastAGI server stopped: sessions=1" in err.decode()


def test_agi_serve_refuses_a_bad_fallback_dial(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[agi]\nfallback_dial = "PJSIP/100,tT"\n')
    result = cli.fails("--config", str(config), "agi", "serve")
    assert "agi.fallback_dial" in result.output


async def test_a_stopped_server_stops_feeding_the_systemd_watchdog(
    database_url: str, tmp_path: Path, world: World, acme: dict[str, int]
) -> None:
    """Issue 9, item 9: SIGSTOP freezes the event loop, so systemd (WatchdogSec) sees the pings stop and restarts."""
    from tests.unit.test_systemd import Systemd

    world.number(acme["account"], "+18005550100", source_id=acme["google"], forward_to="PJSIP/100")
    config = tmp_path / "calltrack.toml"
    write_config(config, tmp_path, "PJSIP/day")
    manager = Systemd(tmp_path / "notify")
    port = free_port()
    env = {
        **os.environ,
        "CALLTRACK_CONFIG": str(config),
        "CALLTRACK_DATABASE_URL": database_url,
        "NOTIFY_SOCKET": manager.address,
        "WATCHDOG_USEC": "1000000",  # a ping every 0.25 s
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "calltrack.main", "agi", "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # READY=1 means calls are taken: the port is open then, not before
        ready = await asyncio.to_thread(manager.until, "READY=1", 60)
        assert "STATUS=serving: agi" in ready[-1]
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        await asyncio.to_thread(manager.until, "WATCHDOG=1")
        proc.send_signal(signal.SIGSTOP)
        await asyncio.to_thread(wait_state, proc.pid, "T")  # stopped: whatever it sent is in the socket now
        manager.drain()
        assert await asyncio.to_thread(manager.receive, 2.0) is None  # eight intervals without a ping
        proc.send_signal(signal.SIGCONT)
        await asyncio.to_thread(manager.until, "WATCHDOG=1")
        known = await FakeFastAGIPeer("127.0.0.1", port).dialplan(linkedid="after")
        assert known.status == "ok"
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(manager.until, "STOPPING=1")
        _, err = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
        manager.sock.close()
    assert proc.returncode == 0, err.decode()
