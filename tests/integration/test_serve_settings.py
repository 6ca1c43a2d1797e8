"""What `calltrack serve` (and `agi serve`, `ami listen`) say at start about the AMI side of the settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.integration.test_serve_end_to_end import free_port, port_open

MISMATCH = """
[general]
system_name = "asterisk"
[[ami.servers]]
name = "pbx1"
secret = "s3cret"
"""


@pytest.mark.parametrize("command", [("serve",), ("agi", "serve"), ("ami", "listen")])
def test_system_names_that_would_store_every_call_twice_refuse_to_start(
    cli: Cli, tmp_path: Path, command: tuple[str, ...]
) -> None:
    config = tmp_path / "calltrack.toml"
    config.write_text(MISMATCH, encoding="utf-8")
    result = cli.fails("--config", str(config), *command)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "ami.servers[0].name: 'pbx1' is not a system name the AGI route uses" in lines[0]
    assert "set general.system_name = 'pbx1'" in lines[0]


def test_one_off_listener_name_is_warned_about(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `ami listen --name N --host ...` runs without settings (README): a name the route does not use is said
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    monkeypatch.setattr(
        "calltrack.services.serve_blocking", lambda services: 0
    )  # the listening itself is not tested here
    result = cli.ok("ami", "listen", "--name", "pbx9", "--host", "127.0.0.1", "--secret-file", str(secret))
    warning = [line for line in result.output.splitlines() if "warning" in line]
    assert warning == [
        "calltrack ami: warning: --name: 'pbx9' is not a system name the AGI route uses (general.system_name = "
        "'asterisk', agi.peer_systems: none), so every call would be stored twice; set general.system_name = "
        "'pbx9' (or map that Asterisk's address to it in agi.peer_systems)"
    ]


def test_serve_without_ami_servers_says_calls_will_not_be_completed(cli: Cli, tmp_path: Path) -> None:
    agi_port, web_port = free_port(), free_port()
    config = tmp_path / "calltrack.toml"
    config.write_text(
        f'[general]\ndata_dir = "{tmp_path / "data"}"\n[agi]\nlisten = "127.0.0.1:{agi_port}"\n'
        f'[web]\nlisten = "127.0.0.1:{web_port}"\n[recorder]\nspool_dir = "{tmp_path / "spool"}"\n',
        encoding="utf-8",
    )
    (tmp_path / "spool").mkdir()
    env = {**os.environ, "CALLTRACK_DATABASE_URL": cli.database_url, "CALLTRACK_CONFIG": str(config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "calltrack.main", "serve"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while not (port_open(agi_port) and port_open(web_port)):
            assert time.monotonic() < deadline and proc.poll() is None, "serve did not start"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    said = [line for line in err.splitlines() if "[[ami.servers]]" in line]
    assert said == [
        "calltrack serve: no [[ami.servers]] in the settings, so the AMI listener is off and calls are routed but "
        'never completed (no answer, end, duration or disposition); add an [[ami.servers]] table (README, "AMI '
        'listener")'
    ]
    assert proc.returncode == 0 and "Traceback" not in err
