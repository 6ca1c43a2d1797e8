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


def test_the_careful_path_keeps_values_whole_and_skips_only_the_odd_lines() -> None:
    frame = (
        b"Event: VarSet\r\nVariable: a: b\r\nVariable: c\r\nBare:value:with:colons\r\nPadded:   kept  \r\n"
        b"no colon here\r\nValue: after the odd line\r\n\r\n"
    )
    problems: list[str] = []
    assert parse_buffer(frame, problems)[0] == [
        {
            "Event": "VarSet",
            "Variable": ["a: b", "c"],  # a repeated header becomes a list; ": " inside a value stays
            "Bare": "value:with:colons",
            "Padded": "  kept  ",  # the value is what follows ": ", spaces and all
            "Value": "after the odd line",
        }
    ]
    assert problems == ["line without a colon skipped: no colon here"]


def test_bare_lf_messages_in_one_read_all_arrive() -> None:
    messages, rest = parse_buffer(b"Event: A\nX: 1\n\nEvent: B\n\nEvent: C")
    assert [m["Event"] for m in messages] == ["A", "B"]
    assert rest == b"Event: C"


def test_stream_parser_reports_what_it_skipped() -> None:
    parser = StreamParser()
    long_line = "x" * 100
    assert parser.feed(b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\n\r\n") == [{"Response": "Success"}]
    assert parser.banner == "Asterisk Call Manager/11.0.0"
    got = parser.feed(f"{long_line}\r\n\r\nEvent: Bad\r\nName: J\xffane\r\n\r\n".encode("latin-1"))
    assert got == [{"Event": "Bad", "Name": "J\ufffdane"}]
    assert parser.feed(b": no name\r\n\r\n" + b"y" * 80 + b"\r\n\r\n") == []
    assert parser.skipped == 4
    assert (
        parser.take_problems()
        == [
            "invalid UTF-8 replaced in: Event: Bad\\r\\nName: J\ufffdane",  # the read is decoded first
            f"line without a colon skipped: {long_line[:80]}...",
            "line with a bad header name skipped: : no name",
            f"line without a colon skipped: {'y' * 80}",  # 80 characters: shown whole
        ]
    )
    assert parser.problems == []
    for n in range(60):
        parser.feed(f"odd {n}\r\n\r\n".encode())
    assert parser.skipped == 64
    assert parser.problems == [f"line without a colon skipped: odd {n}" for n in range(10, 60)]  # the last 50


def test_stream_parser_without_a_banner_and_with_a_bad_one() -> None:
    parser = StreamParser()
    assert parser.feed(b"Event: FullyBooted\r\n\r\n") == [{"Event": "FullyBooted"}]
    assert parser.banner == ""  # decided once: a later line is never taken for a banner
    assert parser.feed(b"Asterisk Call Manager/11.0.0\r\nEvent: Later\r\n\r\n") == [{"Event": "Later"}]
    assert parser.take_problems() == ["line without a colon skipped: Asterisk Call Manager/11.0.0"]
    broken = StreamParser()
    assert broken.feed(b"Asterisk Call Manager/\xff\r\nEvent: X\r\n\r\n") == [{"Event": "X"}]
    assert broken.banner == "Asterisk Call Manager/\ufffd"


def test_stream_parser_drops_a_frame_that_never_ends() -> None:
    parser = StreamParser()
    parser.MAX_PENDING = 100  # type: ignore[misc]
    assert parser.feed(b"odd\r\n\r\nEvent: X\r\n" + b"a" * 90) == []
    assert parser.skipped == 1  # the odd line; exactly 100 bytes pending: still waiting for the end
    assert parser.feed(b"b") == []
    assert parser.skipped == 2
    assert parser.take_problems() == ["line without a colon skipped: odd", "dropped 101 bytes without a message end"]
    assert parser.feed(b"Event: Y\r\n\r\n") == [{"Event": "Y"}]  # and reading goes on


def test_unescape_undoes_ast_escape_c_exactly() -> None:
    from ami_listener.parser import unescape
    from tests.fakes.ami_server import escape_c

    texts = [
        "".join(chr(c) for c in range(1, 128)),
        'Jo "Quote" Smith',
        "C:\\path\\n is not a line feed",
        "line one\nline two\r\n\ttabbed\a\b\f\v?'",
        'Zoë \\"JJ\\" O\'Brien \\\\ x',
        "\\\\\\",
        "李小龍 😀",
        "",
    ]
    for text in texts:
        assert unescape(escape_c(text)) == text
    # what ast_escape_c cannot have written is left as it is (a lone backslash, an unknown letter)
    assert unescape("a\\qb\\") == "a\\qb\\"
    # the pjsip capture: a SIP display name "Zoë \"JJ\" O'Brien \\ x" as AMI sent it, and as CALLERID(name) holds it
    assert unescape('Zoë \\\\\\"JJ\\\\\\" O\\\'Brien \\\\\\\\ x') == 'Zoë \\"JJ\\" O\'Brien \\\\ x'
