"""`calltrack serve` as an administrator starts it: where it listens, and a log without alembic chatter."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.integration.test_serve_end_to_end import free_port, port_open, wait_for


async def test_serve_on_a_new_embedded_database_logs_no_alembic_lines(tmp_path: Path) -> None:
    web_port = free_port()
    spool = tmp_path / "spool"
    spool.mkdir()
    config = tmp_path / "calltrack.toml"
    config.write_text(
        f'[general]\ndata_dir = "{tmp_path / "data"}"\nlog_level = "INFO"\n'
        f'[web]\nlisten = "127.0.0.1:{web_port}"\n[recorder]\nspool_dir = "{spool}"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLTRACK_")}
    env["CALLTRACK_CONFIG"] = str(config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "calltrack.main", "serve", "--only", "web"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_for("the web port", lambda: port_open(web_port))
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = output.decode()
    assert proc.returncode == 0, text
    assert f"calltrack: creating the database at sqlite:///{tmp_path / 'data' / 'calltrack.sqlite3'}" in text
    assert f"running web (http://127.0.0.1:{web_port}/)" in text
    assert "alembic" not in text and "Context impl" not in text and "Running upgrade" not in text, text


async def test_serve_refuses_a_recorder_spool_that_does_not_exist(tmp_path: Path) -> None:
    config = tmp_path / "calltrack.toml"
    missing = tmp_path / "no-such-spool"
    config.write_text(f'[general]\ndata_dir = "{tmp_path / "data"}"\n[recorder]\nspool_dir = "{missing}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLTRACK_")}
    env["CALLTRACK_CONFIG"] = str(config)
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "calltrack.main", "serve"], env=env, capture_output=True, timeout=60
    )
    err = done.stderr.decode()
    assert done.returncode == 1
    assert (
        err.startswith(f"Error: the recorder's spool folder {missing} does not exist: create it")
        and err.count("\n") == 1
    )
    assert not (tmp_path / "data").exists()  # refused before anything was created
