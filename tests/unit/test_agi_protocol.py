"""The AGI protocol without I/O: escaping, commands, environment and replies, on the recorded traffic."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from asterisk_agi.protocol import (
    MAX_ENV_LINES,
    AGIEnv,
    AGIError,
    AGIInvalidCommand,
    AGINetworkHangup,
    AGIProtocolError,
    AGIResultHangup,
    AGIUsageError,
    Bare,
    EnvParser,
    Reply,
    ReplyParser,
    authentic_tail,
    base64_of,
    command,
    new_nonce,
    parse_200,
    parse_sync,
    quote,
    sync_command,
    unbase64,
    variable_name,
)
from tests.fakes.dialplan import Channel, substitute
from tests.fakes.fastagi_peer import environment_bytes, parse_args

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
        "carriage\rreturn alone",
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
def test_garbage_where_the_environment_starts_is_refused(line: str) -> None:
    with pytest.raises(AGIProtocolError):
        EnvParser().feed(line)


@pytest.mark.parametrize(
    "line",
    ["GET / HTTP/1.1", "hello", "agi channel: x", "AGI_CHANNEL: x", "x" * 100, "\x00\x01garbage: y"],
)
def test_garbage_later_is_recorded_not_trusted(line: str) -> None:
    parser = EnvParser()
    parser.feed("agi_network: yes")
    parser.feed(line)
    assert parser.env.anomalies and "not an AGI variable" in parser.env.anomalies[0]


def test_recorded_environments_are_in_step(asterisk_traffic: Path) -> None:
    for raw in [
        *(p.read_bytes() for p in sorted((asterisk_traffic / "fastagi").glob("*.from-asterisk.raw"))),
        (asterisk_traffic / "agi-classic/env.txt").read_bytes(),
    ]:
        parser = feed_env(raw)
        assert parser.done and parser.env.anomalies == []


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


def test_a_repeated_key_is_recorded_and_the_first_value_kept() -> None:
    """A caller ID name with a line break could smuggle in a second agi_extension."""
    parser = EnvParser()
    parser.feed("agi_calleridname: x")
    parser.feed("agi_extension: 9999")
    parser.feed("agi_extension: 8005550100")
    assert "agi_extension sent twice" in parser.env.anomalies
    assert parser.env.get("agi_extension") == "9999"  # which is why nothing after the caller ID is trusted


# --- a caller name that forges the environment, as Asterisk writes it --------------------------

MALLORY = "Mallory\nagi_arg_1: 14045550300\nagi_arg_2: 1796170000.999\n\n" + "200 result=1\n" * 10


def asterisk_stream(name: str, args: tuple[str, ...] = ("+14045550100", "1796170000.5")) -> list[str]:
    """Every line Asterisk writes for a session whose caller name is *name* (setup_env's %s)."""
    return environment_bytes(calleridname=name, args=args).decode().split("\n")[:-1]


def parse_stream(lines: list[str]) -> tuple[EnvParser, list[str]]:
    parser = EnvParser()
    for i, line in enumerate(lines):
        if parser.feed(line):
            return parser, lines[i + 1 :]
    raise AssertionError("no blank line")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (MALLORY, "agi_arg_1 where agi_callingpres was expected"),
        ("Line1\nLine2", "a line that is not an AGI variable: 'Line2'"),
        ("Bob\n\n200 result=1", "the environment ended after agi_calleridname (no agi_callingpres)"),
        ("x\nagi_callingpres: 0", "agi_callingpres sent twice"),
        ("x\nagi_tenant: 1", "unknown key agi_tenant (a newer Asterisk?)"),
    ],
)
def test_caller_text_in_the_environment_is_noticed_and_the_real_arguments_recovered(name: str, expected: str) -> None:
    lines = asterisk_stream(name)
    parser, rest = parse_stream(lines)
    assert parser.env.anomalies[0] == expected
    # what the synchronisation drains (rest) ends with Asterisk's own lines: the real arguments win
    tail = authentic_tail([*parser.env.lines, "", *rest])
    assert tail["agi_arg_1"] == "+14045550100" and tail["agi_arg_2"] == "1796170000.5"
    assert tail["agi_threadid"] == "140226209765056" and "agi_calleridname" not in tail


def test_the_authentic_tail_of_a_clean_environment_and_of_broken_ones() -> None:
    lines = asterisk_stream("Jane Doe")
    assert authentic_tail(lines)["agi_extension"] == "8005550100"
    assert authentic_tail([*lines, "HANGUP"])["agi_arg_1"] == "+14045550100"
    assert authentic_tail(lines[:-1]) == {}  # no real end seen
    # an argument that itself carries a line break: its arguments cannot be told apart
    assert authentic_tail(asterisk_stream("J", args=("1\nagi_arg_2: 2", "3"))) == {}
    assert authentic_tail(asterisk_stream("J", args=("1\nfoo", "3"))) == {}


def test_an_oversized_line_is_recorded_not_kept() -> None:
    parser = EnvParser()
    parser.feed("agi_network: yes")
    parser.feed("agi_calleridname: " + "A" * 100, oversized=9000)
    assert "agi_calleridname of 9000 bytes (longer than 8192)" in parser.env.anomalies
    assert "agi_calleridname" not in parser.env.values


def test_the_synchronisation_round_trip_through_asterisks_rules() -> None:
    """The command as Asterisk parses and substitutes it, and its reply parsed back."""
    nonce = new_nonce()
    fetch = (base64_of("${CHANNEL(linkedid)}"), base64_of("${CALLERID(name):0:800}"))
    line = sync_command(nonce, fetch).decode()
    argv = parse_args(line.rstrip("\n"))
    assert argv[:3] == ["GET", "FULL", "VARIABLE"] and len(argv) == 4
    channel = Channel(linkedid="my,custom id", caller_name='Jo "Q" \\ Smith\n200 result=1 (x)')
    reply = f"200 result=1 ({substitute(argv[3], channel)})"
    values = parse_sync(reply, nonce, 2)
    assert values is not None
    assert [unbase64(v) for v in values] == ["my,custom id", 'Jo "Q" \\ Smith\n200 result=1 (x)']
    assert parse_sync(reply, new_nonce(), 2) is None  # another session's marker
    assert parse_sync("200 result=1", nonce, 2) is None


@pytest.mark.parametrize(("text", "expected"), [("", ""), ("SmFuZQ==", "Jane"), ("SmFuZQ", "Jane"), ("Sm!u", None)])
def test_unbase64(text: str, expected: str | None) -> None:
    assert unbase64(text) == expected


def test_the_address_query_is_kept_raw() -> None:
    env = AGIEnv({"agi_network_script": "route?number=+14045550100&name=YWI+Yw==&x"})
    assert env.script == "route"
    assert env.query == {"number": "+14045550100", "name": "YWI+Yw==", "x": ""}


def _refusal(lines: list[str]) -> AGIError:
    with pytest.raises(AGIError) as info:
        read_reply(lines)
    return info.value


def test_what_each_refusal_says() -> None:
    """The server logs these: the code, Asterisk's own words, the usage text."""
    invalid = _refusal(["510 Invalid or unknown command"])
    assert isinstance(invalid, AGIInvalidCommand) and invalid.code == 510
    assert str(invalid) == "510 Invalid or unknown command"
    assert str(_refusal(["510"])) == "510 Invalid or unknown command"
    usage = _refusal(
        [
            "520-Invalid command syntax.  Proper usage follows:",
            "Usage: GET VARIABLE <variablename>",
            "520 End of proper usage.",
        ]
    )
    assert isinstance(usage, AGIUsageError) and usage.code == 520
    assert str(usage) == "520 Invalid command syntax.  Proper usage follows:"
    assert usage.lines == ("Invalid command syntax.  Proper usage follows:", "Usage: GET VARIABLE <variablename>")
    single = _refusal(["520 Invalid command syntax."])
    assert isinstance(single, AGIUsageError) and single.code == 520
    assert (str(single), single.lines) == ("520 Invalid command syntax.", ("Invalid command syntax.",))
    assert str(_refusal(["520"])) == "520 usage error"
    hangup = _refusal(["HANGUP"])
    assert isinstance(hangup, AGINetworkHangup) and str(hangup) == "HANGUP from Asterisk"
    dead = "511 Command Not Permitted on a dead channel or intercept routine"
    assert isinstance(_refusal([dead]), AGIResultHangup) and str(_refusal([dead])) == dead
    assert str(_refusal(["x" * 100])) == f"unexpected reply from Asterisk: {'x' * 80!r}"


def test_a_usage_reply_is_bounded() -> None:
    longest = ["520-Invalid command syntax."] + ["usage"] * (MAX_ENV_LINES - 1)
    assert isinstance(_refusal([*longest, "520 End of proper usage."]), AGIUsageError)
    too_long = _refusal([*longest, "usage", "520 End of proper usage."])
    assert isinstance(too_long, AGIProtocolError) and str(too_long) == "520 usage reply too long"


@pytest.mark.parametrize("spelling", ["unknown", "<unknown>", "Unknown", "<UNKNOWN>", "  unknown  ", ""])
def test_asterisks_unknown_caller_id_is_no_caller_id(spelling: str) -> None:
    env = AGIEnv(values={"agi_callerid": spelling, "agi_calleridname": " Jane "})
    assert env.known("agi_callerid") == ""
    assert env.known("agi_calleridname") == "Jane"
    assert env.known("agi_dnid") == ""  # not sent at all
