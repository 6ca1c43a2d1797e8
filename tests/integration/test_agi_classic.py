"""Classic AGI: `calltrack-agi route` as a real subprocess, Asterisk played over its stdin/stdout."""

from __future__ import annotations

import array
import fcntl
import os
import signal
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest

from config import Settings
from tests.fakes.fastagi_peer import AsteriskSide, environment_bytes, run_classic
from tests.integration.test_agi_route import World, acme_fixture, world_fixture  # noqa: F401 (fixtures)

ENTRY = Path(sys.executable).parent / "calltrack-agi"


def command() -> list[str]:
    if ENTRY.exists():
        return [str(ENTRY)]
    return [sys.executable, "-m", "asterisk_agi.classic"]


@pytest.fixture(name="environ")
def environ_fixture(settings: Settings, database_url: str, tmp_path: Path) -> dict[str, str]:
    """The process environment Asterisk gives the script, with calltrack's settings file."""
    config = tmp_path / "calltrack.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [general]
            data_dir = "{tmp_path / "data"}"
            system_name = "pbx1"
            [agi]
            fallback_dial = "PJSIP/operator"
            fallback_timeout = 40
            db_deadline_ms = 5000
            [recorder]
            spool_dir = "{tmp_path / "monitor"}"
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLTRACK_")}
    env.update(
        {
            "CALLTRACK_CONFIG": str(config),
            "CALLTRACK_DATABASE_URL": database_url,
            "AST_AGI_DIR": "/var/lib/asterisk/agi-bin",
        }
    )
    return env


def classic(
    environ: dict[str, str],
    *,
    args: tuple[str, ...] = ("8005550100",),
    script: str = "route",
    side: AsteriskSide | None = None,
    **fields: object,
) -> tuple[int, str, AsteriskSide]:
    side = side or AsteriskSide({"CHANNEL(linkedid)": "1795915198.34"})
    side.channel.uniqueid = "1795915198.35"
    side.channel.caller_num = str(fields.get("callerid", "+14045551234"))
    side.channel.caller_name = str(fields.get("calleridname", "Jane Doe"))
    # as Asterisk runs AGI(calltrack-agi,route,${EXTEN}): the script name is the first argument too
    env = environment_bytes(classic=True, args=(script, *args), uniqueid="1795915198.35", **fields)  # type: ignore[arg-type]
    code, stderr = run_classic([*command(), script, *args], env, side, environ=environ)
    return code, stderr, side


def test_classic_route_sets_the_contract(
    environ: dict[str, str], world: World, acme: dict[str, int], tmp_path: Path
) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"], forward_to="PJSIP/100&PJSIP/101")
    code, stderr, side = classic(environ)
    assert code == 0, stderr
    [call] = world.calls()
    got = side.set_vars
    assert got["CALLTRACK_STATUS"] == "ok"
    assert got["CALLTRACK_CALL_ID"] == str(call.id)
    assert got["CALLTRACK_DIAL"] == "PJSIP/100&PJSIP/101"
    assert got["CALLTRACK_RECORDING_FILE"] == str(tmp_path / "monitor" / f"{call.id}.wav")
    assert got["CALLTRACK_SOURCE"] == "Google Ads"
    assert (call.system, call.linkedid, call.uniqueid) == ("pbx1", "1795915198.34", "1795915198.35")
    # no linkedid in argv: one synchronisation reads it (and the caller ID) from the channel
    assert side.commands[0].startswith("GET FULL VARIABLE") and len(side.commands) == 11


def test_classic_and_fastagi_runs_of_one_call_share_the_row(
    environ: dict[str, str], world: World, acme: dict[str, int]
) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    _, _, first = classic(environ)
    _, _, second = classic(environ)
    assert first.set_vars["CALLTRACK_CALL_ID"] == second.set_vars["CALLTRACK_CALL_ID"]
    assert len(world.calls()) == 1


def test_classic_unknown_number_and_unknown_script(environ: dict[str, str], world: World) -> None:
    _, _, unknown = classic(environ, args=("8005559999",))
    assert unknown.set_vars["CALLTRACK_STATUS"] == "unknown-number"
    assert unknown.set_vars["CALLTRACK_DIAL"] == "PJSIP/operator"
    code, stderr, wrong = classic(environ, script="rout")
    assert code == 0
    assert wrong.set_vars["CALLTRACK_STATUS"] == "fallback"
    assert "unknown script 'rout'" in stderr
    assert "Traceback" not in stderr


def test_classic_caller_name_with_quotes_and_utf8(environ: dict[str, str], world: World, acme: dict[str, int]) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    code, stderr, side = classic(environ, calleridname='Zoë "Z" \\ Ñúñez')
    assert code == 0, stderr
    assert world.calls()[0].caller_name == 'Zoë "Z" \\ Ñúñez'


def test_classic_database_unavailable_falls_back_and_spools(environ: dict[str, str], tmp_path: Path) -> None:
    environ = {**environ, "CALLTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'missing' / 'db.sqlite3'}"}
    code, stderr, side = classic(environ)
    assert code == 0
    assert side.set_vars["CALLTRACK_STATUS"] == "fallback"
    assert side.set_vars["CALLTRACK_DIAL"] == "PJSIP/operator"
    assert "routed by fallback" in stderr and "Traceback" not in stderr
    spooled = (tmp_path / "data" / "agi-spool" / "pending.jsonl").read_text()
    assert '"linkedid": "1795915198.34"' in spooled


def test_classic_broken_settings_still_route(environ: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[agi]\nno_such_key = 1\n")
    code, stderr, side = classic({**environ, "CALLTRACK_CONFIG": str(bad)})
    assert code == 0
    assert side.set_vars["CALLTRACK_STATUS"] == "fallback"
    assert "no_such_key" in stderr


def test_classic_sighup_is_a_quiet_hangup(environ: dict[str, str], world: World, acme: dict[str, int]) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    side = AsteriskSide({"CHANNEL(linkedid)": "L-hup"})
    env = environment_bytes(classic=True, args=("route", "8005550100"))
    code, stderr = run_classic([*command(), "route", "8005550100"], env, side, environ=environ, sighup_after=2)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert len(side.commands) < 11  # stopped setting variables after the SIGHUP
    [call] = world.calls()  # the routing itself was done and kept
    assert call.linkedid == "L-hup"


def wait_reading(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until the script has installed its SIGHUP handler and read everything written to its stdin."""
    assert proc.stdin is not None
    deadline = time.monotonic() + timeout
    unread = array.array("i", [0])
    while True:
        assert proc.poll() is None, "the script ended early"
        with open(f"/proc/{proc.pid}/status") as status:
            caught = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
        fcntl.ioctl(proc.stdin.fileno(), termios.FIONREAD, unread)  # bytes still in the pipe
        if caught & (1 << (signal.SIGHUP - 1)) and unread[0] == 0:
            return
        assert time.monotonic() < deadline, "the script did not start reading its environment"
        time.sleep(0.01)


@pytest.mark.parametrize("cut", ["stdin-closed-mid-environment", "stalled"])
def test_classic_broken_environment(environ: dict[str, str], cut: str) -> None:
    env = environment_bytes(classic=True)
    proc = subprocess.Popen(
        [*command(), "route"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**environ}
    )
    if cut == "stdin-closed-mid-environment":
        out, err = proc.communicate(env[:150], timeout=20)
        assert b"middle of the AGI environment" in err
        assert proc.returncode == 1
    else:
        assert proc.stdin is not None
        proc.stdin.write(env[:150])
        proc.stdin.flush()
        wait_reading(proc)  # it has started and waits for the rest; then Asterisk hangs up
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=20) == 0  # stdin still open: only the SIGHUP ended it
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.stdin.close()
    assert out == b""
    assert b"Traceback" not in err


def test_classic_broken_pipe_is_a_quiet_hangup(environ: dict[str, str]) -> None:
    """Asterisk gone (its end of our stdout closed): the write fails with EPIPE, the script ends quietly."""
    proc = subprocess.Popen(
        [*command(), "route", "8005550100"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environ,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    proc.stdout.close()
    proc.stdin.write(environment_bytes(classic=True, args=("route", "8005550100")))
    proc.stdin.flush()
    assert proc.wait(timeout=30) == 0
    err = proc.stderr.read()
    proc.stdin.close()
    assert b"Traceback" not in err


def test_classic_reads_the_number_after_the_script_name(
    environ: dict[str, str], world: World, acme: dict[str, int]
) -> None:
    """AGI(calltrack-agi,route,${EXTEN}) gives agi_arg_1=route, agi_arg_2=the number (as recorded)."""
    world.number(acme["account"], "+18005550200", source_id=acme["google"], forward_to="PJSIP/200")
    code, stderr, side = classic(environ, args=("8005550200",), extension="s")
    assert code == 0, stderr
    assert side.set_vars["CALLTRACK_DIAL"] == "PJSIP/200"


def test_classic_without_channel_linkedid_uses_the_uniqueid(
    environ: dict[str, str], world: World, acme: dict[str, int]
) -> None:
    """An Asterisk without CHANNEL(linkedid) substitutes it as empty: the call is keyed by the uniqueid."""
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    code, stderr, side = classic(environ, side=AsteriskSide({}))
    assert code == 0, stderr
    assert side.set_vars["CALLTRACK_STATUS"] == "ok"
    assert world.calls()[0].linkedid == "1795915198.35"


def test_classic_slow_database_answers_by_fallback_then_writes_the_row(
    environ: dict[str, str], world: World, acme: dict[str, int], database_url: str, tmp_path: Path
) -> None:
    from tests.integration.test_agi_route import Lock

    world.number(acme["account"], "+18005550100", source_id=acme["google"], forward_to="PJSIP/100")
    config = Path(environ["CALLTRACK_CONFIG"])
    config.write_text(
        config.read_text().replace(
            "db_deadline_ms = 5000", "db_deadline_ms = 4000"
        )  # the lookup fits even on a loaded machine (1.5 s did not); the write waits for the lock
        + "[database]\nconnect_timeout = 20\n"
    )
    side = AsteriskSide({"CHANNEL(linkedid)": "L-slow"})
    env = environment_bytes(classic=True, args=("route", "8005550100"))
    lock = Lock(database_url)
    lock.take()
    released: list[bool] = []

    def release() -> None:  # Asterisk has its answer; now the database frees up
        lock.release()
        released.append(True)

    try:
        code, stderr = run_classic(
            [*command(), "route", "8005550100"], env, side, environ=environ, on_stdout_closed=release
        )
    finally:
        if not released:
            lock.release()
    assert code == 0, stderr
    assert (side.set_vars["CALLTRACK_STATUS"], side.set_vars["CALLTRACK_DIAL"]) == ("fallback", "PJSIP/100")
    [call] = world.calls()
    assert (call.linkedid, call.route_status, call.dial) == ("L-slow", "fallback", "PJSIP/100")


def test_classic_with_the_linkedid_argument(environ: dict[str, str], world: World, acme: dict[str, int]) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    code, stderr, side = classic(environ, args=("8005550100", "1795915198.30"))
    assert code == 0, stderr
    assert side.set_vars["CALLTRACK_STATUS"] == "ok"
    assert not any(c.startswith("GET VARIABLE") for c in side.commands)
    assert world.calls()[0].linkedid == "1795915198.30"
