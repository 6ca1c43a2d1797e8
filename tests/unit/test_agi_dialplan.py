"""The sample dialplan follows the route's contract."""

from __future__ import annotations

import re
from pathlib import Path

from config import Settings
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
    assert used <= set(names)


def test_sample_dialplan_calls_the_default_listen_address() -> None:
    text = SAMPLE.read_text()
    assert f"AGI(agi://{Settings().agi.listen}/route,${{ARG1}},${{CHANNEL(linkedid)}})" in text
    assert "AGI(calltrack-agi,route," in text  # the classic form is shown too
    assert "[calltrack-fallback]" in text and "calltrack-fallback,s,1" in text


def test_sample_dual_channel_option_names_the_files_the_recorder_merges() -> None:
    from recorder.spool import AGENT_SUFFIX, CALLER_SUFFIX

    text = SAMPLE.read_text()
    line = next(x for x in text.splitlines() if "MixMonitor(" in x and ",br(" in x)
    assert f"r(${{CALLTRACK_RECORDING_FILE:0:-4}}{CALLER_SUFFIX}.wav)" in line  # what the caller says
    assert f"t(${{CALLTRACK_RECORDING_FILE:0:-4}}{AGENT_SUFFIX}.wav)" in line  # what the caller hears
