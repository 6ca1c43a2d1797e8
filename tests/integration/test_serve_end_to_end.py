"""The whole product in one `calltrack serve` process, against fakes that talk like Asterisk 22.

One call goes through every part: the FastAGI route answers the dialplan, the AMI
listener records what happened from the real event stream, the recorder archives
the real MixMonitor WAV, the web service serves dni.js; then SIGTERM stops it all.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Cli
from tests.fakes.ami_server import FakeAmiServer, Plan, call_frames, epoch_of, load_capture, with_timestamps
from tests.fakes.fastagi_peer import FakeFastAGIPeer
from tests.integration.metrics_helpers import samples

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def calls_json(cli: Cli) -> list[dict[str, object]]:
    return json.loads(cli.ok("calls", "list", "--format", "json").output)


async def test_one_call_through_every_service(cli: Cli, tmp_path: Path, asterisk_traffic: Path) -> None:
    cli.ok("accounts", "add", "Acme", "--timezone", "America/New_York")
    cli.ok("sources", "add", "Google Ads", "--account", "Acme")
    cli.ok(
        "numbers",
        "add",
        "800-555-0100",
        "--account",
        "Acme",
        "--source",
        "Google Ads",
        "--forward-to",
        "Local/100@agents",
    )

    captured = load_capture("answered", asterisk_traffic)
    # Timestamp headers (timestampevents=yes) carry the capture's real timing into a full-speed replay.
    frames = with_timestamps(call_frames(captured), epoch_of(captured))
    gate = asyncio.Event()
    ami = FakeAmiServer([Plan(frames=frames, gate=(0, gate))], username="calltrack", secret="s3cret")
    await ami.start()
    agi_port, web_port = free_port(), free_port()
    spool = tmp_path / "spool"
    spool.mkdir()
    config = tmp_path / "calltrack.toml"
    config.write_text(
        f"""
[general]
data_dir = "{tmp_path / "data"}"
[agi]
listen = "127.0.0.1:{agi_port}"
# generous: a loaded machine must not turn the routed call into a fallback (not what is tested here)
db_deadline_ms = 5000
[web]
listen = "127.0.0.1:{web_port}"
metrics_networks = ["127.0.0.1"]
[recorder]
spool_dir = "{spool}"
archive_dir = "{tmp_path / "archive"}"
quiet_seconds = 0
settle_seconds = 3600
poll_seconds = 0.2
# README's own example: no general.system_name, so the route keys calls by this server's name too
[[ami.servers]]
name = "pbx1"
host = "127.0.0.1"
port = {ami.port}
username = "calltrack"
secret = "s3cret"
""",
        encoding="utf-8",
    )
    env = {**os.environ, "CALLTRACK_DATABASE_URL": cli.database_url, "CALLTRACK_CONFIG": str(config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "calltrack.main", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_for("the FastAGI and web ports", lambda: port_open(agi_port) and port_open(web_port))

        # 1. Asterisk runs AGI(agi://.../route) for the inbound leg of the recorded call.
        peer = FakeFastAGIPeer("127.0.0.1", agi_port, linkedid="1795915078.0")
        result = await peer.session(uniqueid="1795915078.1", extension="8005550100")
        got = result.side.set_vars
        assert got["CALLTRACK_STATUS"] == "ok"
        assert got["CALLTRACK_DIAL"] == "Local/100@agents"
        assert got["CALLTRACK_SOURCE"] == "Google Ads"
        call_id = got["CALLTRACK_CALL_ID"]
        recording = Path(got["CALLTRACK_RECORDING_FILE"])
        assert recording == spool / f"{call_id}.wav"

        # 2. MixMonitor writes the recording; the AMI stream tells what happened on the call.
        shutil.copyfile(asterisk_traffic / "recordings" / "answered-1795915078.1.wav", recording)
        gate.set()

        def answered() -> bool:
            rows = calls_json(cli)
            return len(rows) == 1 and rows[0]["disposition"] == "answered"

        await wait_for("the AMI listener to complete the call", answered)
        (call,) = calls_json(cli)
        assert str(call["id"]) == call_id  # the row the route created, completed by the listener
        assert (call["system"], call["linkedid"]) == ("pbx1", "1795915078.0")
        assert (call["caller_number"], call["caller_name"]) == ("+14045551234", "Jane Doe")
        assert call["tracking_number"] == "+18005550100" and call["source"] == "Google Ads"
        assert float(call["talk_time"]) > 4  # type: ignore[arg-type]

        # 3. The recorder archives the WAV once the call has ended.
        def archived() -> bool:
            rows = json.loads(cli.ok("recordings", "list", "--format", "json").output)
            return len(rows) == 1 and rows[0]["state"] == "archived"

        await wait_for("the recorder to archive the recording", archived)
        (rec,) = json.loads(cli.ok("recordings", "list", "--format", "json").output)
        assert str(rec["call"]) == call_id
        assert not recording.exists()  # the spool copy goes once the archive is verified

        # 4. The web service serves the website script.
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/dni.js", timeout=5) as response:
            assert response.status == 200
            assert b"dni" in response.read()

        # 5. Prometheus reads what happened from /metrics.
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            exposition = response.read().decode()
        scraped = samples(exposition)
        assert scraped['calltrack_routes_total{status="ok"}'] == 1
        assert scraped["calltrack_route_seconds_count"] == 1
        assert 0 < scraped['calltrack_ami_events_total{outcome="stored",system="pbx1"}']
        received = scraped['calltrack_ami_events_total{outcome="received",system="pbx1"}']
        filtered = scraped['calltrack_ami_events_total{outcome="filtered",system="pbx1"}']
        assert received == filtered + scraped['calltrack_ami_events_total{outcome="stored",system="pbx1"}']
        assert scraped['calltrack_ami_backlog{system="pbx1"}'] == 0
        assert scraped['calltrack_recordings{state="archived"}'] == 1
        assert scraped['calltrack_spool_files{spool="recorder"}'] == 0
        for service in ("agi", "ami", "recorder", "web"):
            assert scraped[f'calltrack_service_up{{service="{service}"}}'] == 1, service
        assert scraped["calltrack_database_up"] == 1
        # the sample Grafana dashboard asks only for metrics that exist
        families = {re.sub(r"_total$", "", n) for n in re.findall(r"^# TYPE (calltrack_\w+)", exposition, re.M)}
        dashboard = (ROOT / "config" / "samples" / "grafana-dashboard.json").read_text()
        wanted = {re.sub(r"_(total|bucket)$", "", name) for name in re.findall(r"calltrack_\w+", dashboard)}
        assert wanted - {"calltrack"} <= families, wanted - families

        # 6. SIGTERM stops every service cleanly.
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        text = output.decode("utf-8", "replace")
        assert proc.returncode == 0, text
        assert "calltrack serve: stopped" in text
        assert "Traceback" not in text
        # The start-up line says where each service listens.
        assert f"agi (FastAGI on 127.0.0.1:{agi_port})" in text
        assert f"web (http://127.0.0.1:{web_port}/)" in text
        assert f"ami (pbx1 at 127.0.0.1:{ami.port})" in text
        assert f"recorder (spool {spool})" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        await ami.stop()
