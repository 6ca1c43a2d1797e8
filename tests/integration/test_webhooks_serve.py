"""The outbox survives `calltrack serve` dying in the middle of its deliveries (a real process, SIGKILL):
after the restart, every event, those from before the crash and those written while it was down, reaches
the receiver exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from tests.conftest import Cli
from tests.fakes.webhook_receiver import Receiver
from tests.integration.webhook_helpers import answered_calls, listen, outbox_ids, route, states, until, write_config


def start_serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLTRACK_")}
    env["CALLTRACK_CONFIG"] = str(config)
    return subprocess.Popen(
        [sys.executable, "-m", "calltrack.main", "serve", "--only", "webhooks"],
        cwd=config.parent,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def test_deliveries_survive_a_killed_serve_and_arrive_exactly_once(
    cli: Cli,
    make_account: Callable[..., None],
    settings: Settings,
    session_factory: sessionmaker[Session],
    asterisk_traffic: Path,
    tmp_path: Path,
) -> None:
    make_account()
    cli.ok("numbers", "add", "800-555-0100", "--account", "Acme", "--source", "Google Ads", "--forward-to", "PJSIP/100")
    write_config(tmp_path, timeout_seconds=3.0, retry_base_seconds=0.05, retry_max_seconds=0.3, poll_seconds=0.05)
    config = tmp_path / "calltrack.toml"
    config.write_text(
        config.read_text()
        + f'[general]\ndata_dir = "{tmp_path / "data"}"\n[database]\nurl = "{settings.database_url}"\n',
        encoding="utf-8",
    )
    log = tmp_path / "serve.log"
    calls = answered_calls(asterisk_traffic, 5)
    async with Receiver() as crm:
        crm.default = "error"  # the CRM is down when serve starts
        secret = cli.ok("webhooks", "add", "Acme", crm.url).stdout.strip()
        crm.secrets = [secret]
        for linkedid, _ in calls[:3]:
            route(settings, linkedid)
        proc = start_serve(config, log)
        try:
            await until(
                lambda: len({s.headers["calltrack-event-id"] for s in crm.seen}) == 3, "attempts at every event"
            )
            proc.send_signal(signal.SIGKILL)  # dies with deliveries claimed and in flight
            await asyncio.to_thread(proc.wait, 30)
            # while it is down, calls go on: two more start, all five end
            for linkedid, _ in calls[3:]:
                route(settings, linkedid)
            for _, events in calls:
                listen(session_factory, events)
            crm.default = "ok"  # the CRM is back
            proc = start_serve(config, log)
            await until(lambda: states(session_factory) == ["delivered"] * 10, "every delivery", timeout=60)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            print(log.read_text())  # shown when the test fails
    assert code == 0, log.read_text()
    expected = outbox_ids(session_factory)
    assert len(expected) == 10
    assert sorted(crm.accepted) == sorted(expected)
    assert set(Counter(crm.accepted).values()) == {1}
    assert crm.problems() == []
    assert "running webhooks" in log.read_text()
