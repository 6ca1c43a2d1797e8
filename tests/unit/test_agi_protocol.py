"""The AGI protocol without I/O: escaping, commands, environment and replies, on the recorded traffic."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from asterisk_agi.protocol import (
    MAX_ENV_LINES,
    AGIInvalidCommand,
    AGINetworkHangup,
    AGIProtocolError,
    AGIResultHangup,
    AGIUsageError,
    Bare,
    EnvParser,
    Reply,
    ReplyParser,
    command,
    parse_200,
    quote,
    variable_name,
)
from tests.fakes.fastagi_peer import parse_args

TRANSCRIPT_LINE = re.compile(r"\[\+\s*[\d.]+\] (A>|S>|--) (b'.*'|b\".*\")$")


def transcript(path: Path) -> list[tuple[str, bytes]]:
    out = []
    for line in path.read_text().splitlines():
        m = TRANSCRIPT_LINE.match(line)
        if m:
            out.append((m.group(1), ast.literal_eval(m.group(2))))
    return out


# --- escaping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "Jane Doe",
        'Jane "JD" Doe',
        "back\\slash",
        "ends with backslash\\",
        '\\"',
        "Zoë Ñúñez 北京",
        "",
        "two  spaces",
        'a" "b',
    ],
)
def test_quoted_values_reach_asterisk_unchanged(value: str) -> None:
    line = command("SET VARIABLE", variable_name("CALLTRACK_SOURCE"), value).decode("utf-8")
    assert line.count("\n") == 1 and line.endswith("\n")
    assert parse_args(line[:-1]) == ["SET", "VARIABLE", "CALLTRACK_SOURCE", value]


@pytest.mark.parametrize(
    "value",
    [
        'x"\nSET VARIABLE CALLTRACK_DIAL "PJSIP/attacker',
        "line one\r\nEXEC Dial PJSIP/999",
        "nul\0byte",
        "trailing newline\n",
    ],
)
def test_line_breaks_can_never_start_a_second_command(value: str) -> None:
    data = command("SET VARIABLE", variable_name("CALLTRACK_SOURCE"), value)
    assert data.count(b"\n") == 1 and data.endswith(b"\n")
    assert b"\r" not in data and b"\0" not in data
    argv = parse_args(data.decode("utf-8")[:-1])
    assert argv[:3] == ["SET", "VARIABLE", "CALLTRACK_SOURCE"]
    assert len(argv) == 4  # the whole value stayed one argument
    assert argv[3] == value.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\0", " ")


def test_quote_matches_the_recorded_server_bytes(asterisk_traffic: Path) -> None:
    sent = [
        data
        for who, data in transcript(asterisk_traffic / "fastagi/fastagi-001-8005550100-1795915078.1.txt")
        if who == "S>"
    ]
    assert command("SET VARIABLE", variable_name("CT_DEST"), "Local/100@agents") in sent
    assert command("GET VARIABLE", variable_name("CALLERID(num)")) in sent
    assert command("VERBOSE", "hello", Bare("1")) in sent
    assert command("STREAM FILE", Bare("beep"), "") in sent
    assert quote("hello") == '"hello"'


@pytest.mark.parametrize("name", ["SET VARIABLE\nEXEC", "get variable", "", "SET  VARIABLE;"])
def test_command_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError):
        command(name)


@pytest.mark.parametrize("name", ["A B", "X\nY", 'X"', "CALLERID(num) x", "1ABC"])
def test_variable_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError):
        variable_name(name)


# --- environment -----------------------------------------------------------------------------


def feed_env(raw: bytes) -> EnvParser:
    parser = EnvParser()
    for line in raw.decode("utf-8").split("\n"):
        if parser.feed(line):
            break
    return parser


def test_environment_of_a_recorded_fastagi_session(asterisk_traffic: Path) -> None:
    raw = (asterisk_traffic / "fastagi/fastagi-001-8005550100-1795915078.1.from-asterisk.raw").read_bytes()
    parser = feed_env(raw)
    env = parser.env
    assert parser.done
    assert env.script == "route"
    assert env.get("agi_extension") == "8005550100"
    assert env.get("agi_callerid") == "+14045551234"
    assert env.get("agi_calleridname") == "Jane Doe"
    assert env.get("agi_accountcode") == ""  # "agi_accountcode: " keeps an empty value
    assert env.get("agi_dnid") == "unknown" and env.known("agi_dnid") == ""
    assert env.args == []


def test_environment_of_the_recorded_classic_session(asterisk_traffic: Path) -> None:
    env = feed_env((asterisk_traffic / "agi-classic/env.txt").read_bytes()).env
    assert env.args == ["first arg", "second"]
    assert env.script == ""
    assert env.get("agi_request") == "/var/lib/asterisk/agi-bin/agi-dump.sh"


def test_network_script_path_and_query_are_stripped() -> None:
    parser = EnvParser()
    parser.feed("agi_network_script: /route?x=1")
    parser.feed("")
    assert parser.env.script == "route"


@pytest.mark.parametrize(
    "line",
    ["GET / HTTP/1.1", "hello", "agi channel: x", "AGI_CHANNEL: x", "x" * 100, "\x00\x01garbage: y"],
)
def test_garbage_in_the_environment_is_refused(line: str) -> None:
    parser = EnvParser()
    parser.feed("agi_network: yes")
    with pytest.raises(AGIProtocolError):
        parser.feed(line)


def test_an_empty_environment_is_refused() -> None:
    with pytest.raises(AGIProtocolError):
        EnvParser().feed("")


def test_an_endless_environment_is_refused() -> None:
    parser = EnvParser()
    with pytest.raises(AGIProtocolError):
        for n in range(MAX_ENV_LINES + 1):
            parser.feed(f"agi_arg_{n + 1}: x")


# --- replies ---------------------------------------------------------------------------------


def read_reply(lines: list[str]) -> Reply:
    parser = ReplyParser()
    for line in lines:
        reply = parser.feed(line)
        if reply is not None:
            return reply
    raise AssertionError("reply not complete")


def test_every_reply_in_the_recorded_sessions_parses(asterisk_traffic: Path) -> None:
    """Walk each recorded session, command by command, as the server would read it."""
    outcomes: list[str] = []
    for path in sorted((asterisk_traffic / "fastagi").glob("*.txt")):
        events = transcript(path)
        after_env = [i for i, (who, data) in enumerate(events) if who == "A>" and data == b"\n"][0]
        lines = [data.decode().rstrip("\n") for who, data in events[after_env + 1 :] if who == "A>"]
        parser = ReplyParser()
        for line in lines:
            try:
                reply = parser.feed(line)
            except AGIInvalidCommand:
                outcomes.append("510")
                parser = ReplyParser()
                continue
            except AGIUsageError as exc:
                outcomes.append("520")
                assert exc.lines[0].startswith("Invalid command syntax")
                assert any("Example return code" in part for part in exc.lines)
                parser = ReplyParser()
                continue
            except AGINetworkHangup:
                outcomes.append("HANGUP")
                parser = ReplyParser()
                continue
            except AGIResultHangup:
                outcomes.append("511")
                parser = ReplyParser()
                continue
            if reply is not None:
                outcomes.append(f"200:{reply.result}:{reply.data}:{reply.extra.get('endpos')}")
    assert "200:1:+14045551234:None" in outcomes
    assert "200:1:None:None" in outcomes
    assert "200:0:None:3404" in outcomes
    assert "200:-1:None:None" in outcomes
    assert {"510", "520", "HANGUP", "511"} <= set(outcomes)


@pytest.mark.parametrize(
    ("line", "result", "data", "extra"),
    [
        ("200 result=1 (Jane (the) Doe) endpos=12", "1", "Jane (the) Doe", {"endpos": "12"}),
        ("200 result=1 ()", "1", "", {}),
        ("200 result=1 (a) b=c d=e", "1", "a", {"b": "c", "d": "e"}),
        ("200 result=0 endpos=3404", "0", None, {"endpos": "3404"}),
        ("200 result=", "", None, {}),
        ("200 result=1 (value with ) paren)", "1", "value with ) paren", {}),
    ],
)
def test_200_replies(line: str, result: str, data: str | None, extra: dict[str, str]) -> None:
    reply = parse_200(line)
    assert (reply.result, reply.data, reply.extra) == (result, data, extra)


@pytest.mark.parametrize("line", ["200 result=1 (unclosed", "200 reslt=1", "404 nope", "", "HANGUPX", "garbage"])
def test_malformed_replies_are_protocol_errors(line: str) -> None:
    with pytest.raises(AGIProtocolError):
        read_reply([line])


def test_single_line_520() -> None:
    with pytest.raises(AGIUsageError):
        read_reply(["520 Invalid command syntax."])


def test_a_repeated_key_is_refused() -> None:
    """A caller ID name with a line break could smuggle in a second agi_extension: the session is refused."""
    parser = EnvParser()
    parser.feed("agi_calleridname: x")
    parser.feed("agi_extension: 9999")
    with pytest.raises(AGIProtocolError, match="repeats agi_extension"):
        parser.feed("agi_extension: 8005550100")
