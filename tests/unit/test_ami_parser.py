"""The pure AMI parser: framing, CRLF, UTF-8 split across reads, malformed input."""

from __future__ import annotations

from pathlib import Path

import pytest

from ami_listener.parser import StreamParser, parse_buffer

NAME = 'Zoë "Zed" Ñúñez 李'
FRAME = (
    "Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/trunk-00000001\r\n"
    f"CallerIDNum: +14045551234\r\nCallerIDName: {NAME}\r\nAccountCode: \r\n"
    "Uniqueid: 1795915078.0\r\nLinkedid: 1795915078.0\r\n\r\n"
).encode()


def test_complete_messages_and_the_rest() -> None:
    messages, rest = parse_buffer(FRAME + FRAME[:20])
    assert rest == FRAME[:20]
    assert messages == [
        {
            "Event": "Newchannel",
            "Privilege": "call,all",
            "Channel": "PJSIP/trunk-00000001",
            "CallerIDNum": "+14045551234",
            "CallerIDName": NAME,
            "AccountCode": "",
            "Uniqueid": "1795915078.0",
            "Linkedid": "1795915078.0",
        }
    ]


def test_nothing_complete_returns_everything_as_rest() -> None:
    assert parse_buffer(FRAME[:-2]) == ([], FRAME[:-2])
    assert parse_buffer(b"") == ([], b"")


@pytest.mark.parametrize("cut", range(1, len(FRAME)))
def test_a_split_anywhere_gives_the_same_message(cut: int) -> None:
    parser = StreamParser()
    parser.banner = ""
    got = parser.feed(FRAME[:cut]) + parser.feed(FRAME[cut:])
    assert got == parse_buffer(FRAME)[0]
    assert got[0]["CallerIDName"] == NAME
    assert parser.skipped == 0


def test_one_byte_at_a_time_through_a_recorded_stream(asterisk_traffic: Path) -> None:
    raw = (asterisk_traffic / "ami" / "ami-busy.txt").read_bytes().replace(b"Jane Doe", NAME.encode())
    whole = StreamParser()
    expected = whole.feed(raw)
    parser = StreamParser()
    got = []
    for i in range(len(raw)):
        got += parser.feed(raw[i : i + 1])
    assert got == expected
    assert len(got) == 87  # the summary's count, banner excluded
    assert parser.banner == whole.banner == "Asterisk Call Manager/11.0.0"
    assert got[0] == {"Response": "Success", "ActionID": "busy-login", "Message": "Authentication accepted"}
    names = {m["CallerIDName"] for m in got if "CallerIDName" in m}
    assert names == {NAME, "<unknown>"}


def test_bare_lf_line_ends_are_accepted() -> None:
    messages, rest = parse_buffer(b"Event: Hangup\nUniqueid: 1.2\nCause: 16\n\nEvent: Ha")
    assert messages == [{"Event": "Hangup", "Uniqueid": "1.2", "Cause": "16"}]
    assert rest == b"Event: Ha"


def test_repeated_headers_become_a_list() -> None:
    messages, _ = parse_buffer(b"Event: Status\r\nChanVariable: A=1\r\nChanVariable: B=2\r\nChanVariable: C=\r\n\r\n")
    assert messages[0]["ChanVariable"] == ["A=1", "B=2", "C="]


def test_values_keep_colons_and_spaces() -> None:
    messages, _ = parse_buffer(b"Event: X\r\nData: a: b:c \r\nEventTV: 2026-11-29T01:17:57.594+0000\r\n\r\n")
    assert messages[0]["Data"] == "a: b:c "
    assert messages[0]["EventTV"] == "2026-11-29T01:17:57.594+0000"


def test_malformed_frames_are_skipped_and_reported() -> None:
    problems: list[str] = []
    data = (
        b"no colon here at all\r\n\r\n"
        b"\r\n\r\n"
        b"Bad Header: x\r\nEvent: Hangup\r\nUniqueid: 1.1\r\n\r\n"
        b"Event: Newstate\r\nCallerIDName: \xff\xfeJ\r\n\r\n"
    )
    messages, rest = parse_buffer(data, problems)
    assert rest == b""
    assert messages == [
        {"Event": "Hangup", "Uniqueid": "1.1"},
        {"Event": "Newstate", "CallerIDName": "\ufffd\ufffdJ"},
    ]
    assert len(problems) == 3
    assert "line without a colon skipped: no colon here at all" in problems
    assert sum("bad header name" in p for p in problems) == 1
    assert sum("invalid UTF-8" in p for p in problems) == 1


def test_a_peer_that_never_ends_a_frame_cannot_eat_memory() -> None:
    parser = StreamParser()
    parser.MAX_PENDING = 1000
    assert parser.feed(b"Asterisk Call Manager/11.0.0\r\n") == []
    assert parser.feed(b"X: " + b"y" * 2000) == []
    assert parser.skipped == 1
    assert parser.feed(b"Event: Hangup\r\n\r\n") == [{"Event": "Hangup"}]


def test_banner_is_taken_even_when_split() -> None:
    parser = StreamParser()
    assert parser.feed(b"Asterisk Call Man") == []
    assert parser.feed(b"ager/11.0.0\r\nResponse: Success\r\n\r\n") == [{"Response": "Success"}]
    assert parser.banner == "Asterisk Call Manager/11.0.0"
    assert parser.skipped == 0
