"""Caller ID text that tries to forge the AGI session (issue 9, item 1), on SQLite and PostgreSQL.

Asterisk writes agi_calleridname and agi_callerid with %s (res_agi.c setup_env): a name
with line feeds becomes lines of the environment, an early blank line and fake replies.
The fake Asterisk writes them exactly so, after the real lines that precede them and
before the real ones that follow (agi_callingpres ... agi_threadid, agi_arg_N).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.fakes.fastagi_peer import AsteriskSide, dialplan_session, environment_bytes, run_classic
from tests.integration.test_agi_classic import command, environ_fixture  # noqa: F401 (fixture)
from tests.integration.test_agi_route import (  # noqa: F401 (fixtures)
    Running,
    World,
    agi_settings_fixture,
    server_fixture,
    start_server_fixture,
    world_fixture,
)

#: the name sent over a real IAX2 trunk in the report: forged arguments, an early end, ten fake replies
MALLORY = "Mallory\nagi_arg_1: 14045550300\nagi_arg_2: 1796170000.999\n\n" + "200 result=1\n" * 10
OTHER_NAMES = {
    "two-lines": "Line1\nLine2",
    "blank-and-reply": "Bob\n\n200 result=1",
    "8KB": "N" * 8192,
}
REAL_LINKEDID = "1796170000.5"
UNIQUEID = "1796170000.6"


@pytest.fixture(name="numbers")
def numbers_fixture(world: World) -> dict[str, int]:
    """+14045550100 (Google Ads, Local/100) is called; +14045550300 (Bing, Local/300) is what Mallory wants."""
    account = world.account("Acme")
    google = world.source(account, "Google Ads")
    bing = world.source(account, "Bing")
    return {
        "account": account,
        "google": google,
        "target": world.number(account, "+14045550100", source_id=google, forward_to="Local/100@agents"),
        "decoy": world.number(account, "+14045550300", source_id=bing, forward_to="Local/300@agents"),
    }


def assert_routed_by_the_number(world: World, set_vars: dict[str, str], numbers: dict[str, int]) -> None:
    assert set_vars["CALLTRACK_STATUS"] == "ok"
    assert set_vars["CALLTRACK_DIAL"] == "Local/100@agents"
    assert set_vars["CALLTRACK_SOURCE"] == "Google Ads"
    [call] = world.calls()
    assert call.linkedid == REAL_LINKEDID
    assert call.tracking_number_id == numbers["target"] and call.source_id == numbers["google"]
    assert set_vars["CALLTRACK_CALL_ID"] == str(call.id)


def legacy_env(name: str, **fields: Any) -> bytes:
    """What Asterisk sends for AGI(agi://127.0.0.1:4573/route,${EXTEN},${CHANNEL(linkedid)}) (the older sample)."""
    return environment_bytes(
        extension="+14045550100", calleridname=name, uniqueid=UNIQUEID, args=("+14045550100", REAL_LINKEDID), **fields
    )


# --- FastAGI ----------------------------------------------------------------------------------


@pytest.mark.parametrize("line_by_line", [False, True], ids=["one-write", "line-by-line"])
async def test_mallorys_name_cannot_steer_a_dialplan_that_passes_arguments(
    server: Running, world: World, numbers: dict[str, int], caplog: pytest.LogCaptureFixture, line_by_line: bool
) -> None:
    caplog.set_level(logging.WARNING)
    peer = server.peer(linkedid=REAL_LINKEDID)
    peer.side.channel.caller_name = MALLORY
    result = await peer.session(legacy_env(MALLORY), line_by_line=line_by_line, uniqueid=UNIQUEID, calleridname=MALLORY)

    assert_routed_by_the_number(world, result.side.set_vars, numbers)
    [call] = world.calls()
    assert call.caller_name == MALLORY.strip()  # the real name, read base64-encoded from the channel
    assert server.service.stats.counts["out_of_step"] == 1
    [warning] = [r for r in caplog.records if "out of step" in r.getMessage()]
    # the administrator is told where the session came from, what was wrong and how the call was routed
    text = warning.getMessage()
    assert text.startswith(
        "AGI session from 127.0.0.1 (channel 'Local/8005550100@from-pstn-00000000;2') is out of step: "
        "agi_arg_1 where agi_callingpres was expected; "
    )
    assert text.endswith(
        "; routing the call to '+14045550100' by the dialplan's argument, read from the end of the environment"
    )


@pytest.mark.parametrize("name", list(OTHER_NAMES.values()), ids=list(OTHER_NAMES))
async def test_other_broken_names_still_reach_the_numbers_destination(
    server: Running, world: World, numbers: dict[str, int], name: str
) -> None:
    peer = server.peer(linkedid=REAL_LINKEDID)
    peer.side.channel.caller_name = name
    result = await peer.session(legacy_env(name), uniqueid=UNIQUEID, calleridname=name)
    assert_routed_by_the_number(world, result.side.set_vars, numbers)
    assert server.service.stats.counts["out_of_step"] == 1


async def test_a_forged_complete_environment_is_caught_by_the_synchronisation(
    server: Running, world: World, numbers: dict[str, int]
) -> None:
    """A name that forges every remaining key in order and the blank line: only the real lines after it tell."""
    forged = [f"{k}: {v}" for k, v in (("agi_callingpres", 0), ("agi_callingani2", 0), ("agi_callington", 0))]
    forged += ["agi_callingtns: 0", "agi_dnid: unknown", "agi_rdnis: unknown", "agi_context: from-pstn"]
    forged += ["agi_extension: 14045550300", "agi_priority: 3", "agi_enhanced: 0.0", "agi_accountcode: "]
    forged += ["agi_threadid: 1", "agi_arg_1: 14045550300", "agi_arg_2: 1796170000.999", ""]
    name = "Mallory\n" + "\n".join(forged)
    peer = server.peer(linkedid=REAL_LINKEDID)
    result = await peer.session(legacy_env(name), line_by_line=True, uniqueid=UNIQUEID, calleridname=name)
    assert_routed_by_the_number(world, result.side.set_vars, numbers)


async def test_the_sample_dialplan_keeps_the_name_out_of_the_environment(
    server: Running, world: World, numbers: dict[str, int]
) -> None:
    result = await server.peer().dialplan(
        exten="+14045550100", calleridname=MALLORY, linkedid=REAL_LINKEDID, uniqueid=UNIQUEID
    )
    assert_routed_by_the_number(world, result.side.set_vars, numbers)
    assert b"Mallory" not in dialplan_session(calleridname=MALLORY).env  # cleared for the AGI, sent base64
    assert world.calls()[0].caller_name == MALLORY.strip()
    assert server.service.stats.counts["out_of_step"] == 0
    # the name has colons: the dialplan leaves it to the route, which reads it in one framed command
    assert "readname=1" in dialplan_session(calleridname=MALLORY).url
    [read] = [c for c in result.side.commands if c.startswith("GET")]
    assert read.startswith('GET FULL VARIABLE "calltrack-sync-') and "${CALLTRACK_SAVED_NAME:0:800}" in read


async def test_a_dialplan_that_forgets_to_hide_the_name_still_routes_by_the_address(
    server: Running, world: World, numbers: dict[str, int]
) -> None:
    call = dialplan_session(exten="+14045550100", linkedid=REAL_LINKEDID, uniqueid=UNIQUEID)
    env = call.env.replace(
        b"agi_callerid: \nagi_calleridname: \n", f"agi_callerid: +1404\nagi_calleridname: {MALLORY}\n".encode()
    )
    peer = server.peer(linkedid=REAL_LINKEDID)
    result = await peer.session(env, uniqueid=UNIQUEID)
    assert_routed_by_the_number(world, result.side.set_vars, numbers)
    assert server.service.stats.counts["out_of_step"] == 1
    # the ten fake replies were drained before the first SET VARIABLE was trusted
    assert result.side.commands[0].startswith("GET FULL VARIABLE")


# --- classic AGI ----------------------------------------------------------------------------------


def classic_run(environ: dict[str, str], env: bytes, argv: list[str], name: str) -> tuple[int, str, AsteriskSide]:
    side = AsteriskSide({"CHANNEL(linkedid)": REAL_LINKEDID})
    side.channel.uniqueid, side.channel.caller_name = UNIQUEID, name
    code, stderr = run_classic([*command(), *argv], env, side, environ=environ)
    return code, stderr, side


@pytest.mark.parametrize("name", [MALLORY, *OTHER_NAMES.values()], ids=["mallory", *OTHER_NAMES])
def test_classic_with_arguments_routes_by_argv(
    environ: dict[str, str], world: World, numbers: dict[str, int], name: str
) -> None:
    """AGI(calltrack-agi,route,${EXTEN},${CHANNEL(linkedid)}): argv is out of the caller's reach."""
    args = ("route", "+14045550100", REAL_LINKEDID)
    env = environment_bytes(classic=True, calleridname=name, uniqueid=UNIQUEID, args=args)
    code, stderr, side = classic_run(environ, env, list(args), name)
    assert code == 0, stderr
    assert_routed_by_the_number(world, side.set_vars, numbers)
    assert "out of step" in stderr


def test_classic_with_the_sample_dialplan(environ: dict[str, str], world: World, numbers: dict[str, int]) -> None:
    call = dialplan_session(
        exten="+14045550100", calleridname=MALLORY, linkedid=REAL_LINKEDID, uniqueid=UNIQUEID, classic=True
    )
    side = AsteriskSide({"CHANNEL(linkedid)": REAL_LINKEDID})
    side.channel = call.channel  # the dialplan's: CALLTRACK_SAVED_NAME holds the name, CALLERID(name) is cleared
    code, stderr = run_classic([*command(), *call.argv], call.env, side, environ=environ)
    assert code == 0, stderr
    assert_routed_by_the_number(world, side.set_vars, numbers)
    # the name has colons: left out of argv by the dialplan, read in one framed command
    [read] = [c for c in side.commands if c.startswith("GET")]
    assert read.startswith('GET FULL VARIABLE "calltrack-sync-') and "${CALLTRACK_SAVED_NAME:0:800}" in read
    assert world.calls()[0].caller_name == MALLORY.strip()


def test_classic_sample_form_with_the_name_left_in_the_environment(
    environ: dict[str, str], world: World, numbers: dict[str, int]
) -> None:
    call = dialplan_session(exten="+14045550100", linkedid=REAL_LINKEDID, uniqueid=UNIQUEID, classic=True)
    env = call.env.replace(b"agi_calleridname: \n", f"agi_calleridname: {MALLORY}\n".encode())
    code, stderr, side = classic_run(environ, env, call.argv, MALLORY)
    assert code == 0, stderr
    assert_routed_by_the_number(world, side.set_vars, numbers)
    assert "out of step" in stderr
