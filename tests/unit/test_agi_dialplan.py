"""The sample dialplan follows the route's contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from asterisk_agi.handlers.inputs import parse_query
from asterisk_agi.protocol import unbase64
from config import Settings
from tests.fakes.dialplan import Channel, route_agi
from tracking.routing import Decision

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "samples" / "asterisk" / "extensions_calltrack.conf"


def test_sample_dialplan_documents_and_uses_the_contract() -> None:
    text = SAMPLE.read_text()
    names = [name for name, _ in Decision("ok", "", 0).variables()]
    for name in names:
        assert name in text, f"{name} is not documented in the sample dialplan"
    used = set(re.findall(r"\$\{(CALLTRACK_[A-Z_]+)\}", text))
    assert {
        "CALLTRACK_DIAL",
        "CALLTRACK_DIAL_TIMEOUT",
        "CALLTRACK_RECORD",
        "CALLTRACK_RECORDING_FILE",
        "CALLTRACK_WHISPER",
        "CALLTRACK_STATUS",
    } <= used
    # the sample's own working variables are set by the sample itself; everything else is the route's
    own = set(re.findall(r"Set\((CALLTRACK_[A-Z_]+)=", text)) - {"CALLTRACK_STATUS", "CALLTRACK_DIAL"}
    assert used - own <= set(names)


def test_sample_dialplan_calls_the_default_listen_address() -> None:
    text = SAMPLE.read_text()
    assert f"AGI(agi://{Settings().agi.listen}/route?${{CALLTRACK_QUERY}})" in text
    assert "AGI(calltrack-agi,route?${CALLTRACK_QUERY})" in text  # the classic form is shown too, same inputs
    assert "[calltrack-fallback]" in text and "calltrack-fallback,s,1" in text


NAMES = [
    "Jane Doe",
    'Jo "Q" \\ Smith, Jr.',
    "Zoë Ñúñez 北京",
    "Mallory\nagi_arg_1: 14045550300\nagi_arg_2: 1796170000.999\n\n" + "200 result=1\n" * 10,
    "${SHELL(id)} $[1+1]",
    "Smith) Jr: CEO",  # ${BASE64_ENCODE(${CALLERID(name)})} gives base64 of "Smith" (pbx_variables.c)
    "Dr. (Jane) Doe: 100%",
    "",
]


@pytest.mark.parametrize("name", NAMES)
def test_the_agi_address_carries_the_caller_and_the_environment_does_not(name: str) -> None:
    channel = Channel(caller_name=name, caller_num="+1 404 555\n1234", linkedid="my id, 1", uniqueid="u.2")
    _run, data = route_agi(channel, "+1404555010\n0")
    query = parse_query(data.partition("?")[2])
    assert query["number"] == "+14045550100"  # digits only, whatever the trunk sent
    if ":" in name:  # ${BASE64_ENCODE(...)} may cut it: left to the route, saved whole on the channel
        assert "name" not in query and query["readname"] == "1" and channel.read("CALLTRACK_SAVED_NAME") == name
    else:
        assert unbase64(query["name"]) == name and "readname" not in query
    assert unbase64(query["caller"]) == "+1 404 555\n1234"
    assert (unbase64(query["linkedid"]), unbase64(query["uniqueid"])) == ("my id, 1", "u.2")
    assert "," not in data and "\n" not in data  # one AGI() argument, one line
    # what setup_env writes for the caller ID while the AGI runs
    assert channel.agi_values()["agi_callerid"] == "" and channel.agi_values()["agi_calleridname"] == ""
    # a stalled calltrack cannot hold the call: Asterisk's AGI stops at the absolute timeout
    assert channel.absolute_timeout == 3 and channel.read("AGIEXITONHANGUP") == "yes"


@pytest.mark.parametrize("valid", [True, False])
def test_after_the_agi_the_caller_id_and_the_timeout_are_as_before(valid: bool) -> None:
    name = "Mallory\nline two"
    channel = Channel(caller_name=name, caller_num="4045551001", name_valid=valid, num_valid=valid, absolute_timeout=0)
    run, _ = route_agi(channel)
    run.skip()  # AGI() returned
    assert run.run_until("GotoIf") is not None
    assert (channel.caller_name if valid else "", channel.name_valid) == (name if valid else "", valid)
    assert (channel.caller_num if valid else "", channel.num_valid) == ("4045551001" if valid else "", valid)
    assert channel.absolute_timeout == 0 and channel.read("AGIEXITONHANGUP") == ""


def test_the_t_extension_restores_the_caller_and_goes_to_the_fallback() -> None:
    channel = Channel(caller_name="Jane Doe", absolute_timeout=120.5)
    run, _ = route_agi(channel)
    assert channel.absolute_timeout == 3
    # the absolute timeout fired in AGI(): pbx.c clears it and runs T in the same context
    channel.absolute_timeout = 0
    run.goto("calltrack-route", "T")
    assert run.run_until("Goto") == "calltrack-fallback,s,1"
    assert channel.caller_name == "Jane Doe" and channel.absolute_timeout == 120.5


def test_sample_dual_channel_option_names_the_files_the_recorder_merges() -> None:
    from recorder.spool import AGENT_SUFFIX, CALLER_SUFFIX

    text = SAMPLE.read_text()
    line = next(x for x in text.splitlines() if "MixMonitor(" in x and ",br(" in x)
    assert f"r(${{CALLTRACK_RECORDING_FILE:0:-4}}{CALLER_SUFFIX}.wav)" in line  # what the caller says
    assert f"t(${{CALLTRACK_RECORDING_FILE:0:-4}}{AGENT_SUFFIX}.wav)" in line  # what the caller hears
