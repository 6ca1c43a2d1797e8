"""The sample manager user's eventfilter lets through every event the listener acts on.

Asterisk (manager.c) matches each legacy ``eventfilter`` regex against the whole text of an
event; when include filters exist, an event none of them matches is never sent.  A filter
that is too narrow loses data silently, so the sample is checked against real Asterisk 22
streams: every event the correlator dispatches on, and every VarSet the sink keeps, must
match one of the sample's include filters.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ami_listener.correlator import DISPATCH
from ami_listener.parser import parse_buffer
from ami_listener.sink import keep
from tests.fixtures import ASTERISK

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "samples" / "asterisk" / "manager_calltrack.conf"
#: answers to calltrack's own actions, which eventfilter never touches
RESPONSES = {"CoreShowChannel", "CoreShowChannelsComplete"}
STREAMS = sorted(
    p for p in [*ASTERISK.glob("ami/ami-*.txt"), *ASTERISK.glob("pjsip/ami-*.txt")] if p.stem.count(".") == 0
)


def include_filters(text: str) -> list[re.Pattern[str]]:
    found = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "eventfilter" and not value.strip().startswith("!"):
            found.append(re.compile(value.strip()))
    return found


def needed_frames(path: Path) -> list[tuple[str, str]]:
    """(event name, raw frame text) of each event in *path* the listener acts on."""
    data = path.read_bytes()
    out = []
    for frame in data.split(b"\r\n\r\n"):
        messages, _ = parse_buffer(frame + b"\r\n\r\n")
        if not messages:
            continue
        message = messages[0]
        name = message.get("Event")
        if name is None or name in RESPONSES or name not in DISPATCH or not keep(message):
            continue
        out.append(
            (name if name != "VarSet" else f"VarSet {message.get('Variable')}", frame.decode("utf-8", "replace"))
        )
    return out


def test_the_streams_hold_what_is_checked() -> None:
    names = {name for path in STREAMS for name, _ in needed_frames(path)}
    assert {"Newchannel", "Hangup", "DialEnd", "BlindTransfer", "VarSet BLINDTRANSFER", "VarSet DIALSTATUS"} <= names


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.name)
def test_the_sample_filter_passes_every_event_the_listener_needs(path: Path) -> None:
    filters = include_filters(SAMPLE.read_text())
    assert filters, "the sample has no include eventfilter lines"
    dropped = sorted({name for name, text in needed_frames(path) if not any(f.search(text) for f in filters)})
    assert not dropped, f"{SAMPLE.name} would drop {dropped} from {path.name}"
