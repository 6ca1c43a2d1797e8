"""Texts as Asterisk 22 hands them to FastAGI on its Message channel, from the recorded PJSIP sessions.

``tests/fixtures/asterisk/pjsip/fastagi-NNN-sms-<scenario>.*`` are real ``sms`` sessions
of a message context: the environment (``agi_channel: Message/ast_msg_queue``, caller ID
``unknown``) and Asterisk's answers to ``GET VARIABLE MESSAGE(...)`` and
``MESSAGE_DATA(...)``. :func:`recorded_text` turns one into the environment bytes and
the variables a :class:`tests.fakes.fastagi_peer.FakeFastAGIPeer` answers with; the
body comes from the recorded ``BASE64_ENCODE`` reply (the plain reply spans two lines
when the text has a line break), the Content-Length from the MESSAGE SIPp sent.
:func:`text_variables` builds the same for a text of the test's own.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

from tests.fixtures import ASTERISK

PJSIP = ASTERISK / "pjsip"

SESSIONS = {
    "sms-in": "fastagi-007-sms-sms-in",
    "sms-in-newline": "fastagi-008-sms-sms-in-newline",
    "sms-in-long": "fastagi-014-sms-sms-in-long",
    "sms-in-1023bytes": "fastagi-015-sms-sms-in-1023bytes",
}

_LINE = re.compile(r"^\s*[0-9.]+ (A|S)> (.*)$")


@dataclass
class RecordedText:
    env: bytes
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> str:
        return self.variables["MESSAGE(body)"]


def _env(name: str) -> bytes:
    raw = (PJSIP / f"{name}.A.raw").read_bytes()
    return raw.split(b"\n\n", 1)[0] + b"\n\n"


def _content_length(scenario: str) -> str | None:
    path = PJSIP / f"sipp-{scenario}-uac.msg"
    if not path.exists():
        return None
    m = re.search(r"^Content-Length:\s*([0-9]+)", path.read_text(encoding="utf-8"), re.M)
    return m.group(1) if m else None


def recorded_text(scenario: str) -> RecordedText:
    """The recorded session of *scenario* (a key of :data:`SESSIONS`)."""
    name = SESSIONS[scenario]
    variables: dict[str, str] = {}
    command = ""
    for line in (PJSIP / f"{name}.txt").read_text(encoding="utf-8").splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        who, text = m.groups()
        if who == "S":
            command = text
            continue
        if not command or not text.startswith("200 result=1 (") or not text.endswith(")"):
            command = ""  # the second line of a reply a line break split, or no value
            continue
        value = text[len("200 result=1 (") : -1]
        if command == "GET FULL VARIABLE ${BASE64_ENCODE(${MESSAGE(body)})}":
            variables["MESSAGE(body)"] = base64.b64decode(value).decode("utf-8")
        elif command.startswith("GET VARIABLE ") and command != "GET VARIABLE MESSAGE(body)":
            variables[command[len("GET VARIABLE ") :]] = value
        command = ""
    length = _content_length(scenario)
    if length is not None:
        variables["MESSAGE_DATA(Content-Length)"] = length
    return RecordedText(_env(name), variables)


def text_variables(
    body: str,
    *,
    call_id: str = "1-99999@127.0.0.1",
    sender: str = "+14045551234",
    name: str = "Jane Doe",
    to: str = "+18005550100",
    raw_from: str | None = None,
) -> dict[str, str]:
    """The message variables of a text of the test's own, shaped like the recorded ones."""
    encoded = body.encode("utf-8")
    # as res_pjsip_messaging: a body of MAX_BODY_SIZE (1024) bytes or more reaches the dialplan empty
    shown = body if len(encoded) < 1024 else ""
    from_data = raw_from if raw_from is not None else f'"{name}" <sip:{sender}@127.0.0.1>;tag=1234SIPpTag01'
    return {
        "MESSAGE(body)": shown,
        "MESSAGE(from)": f'"{name}" <sip:{sender}@127.0.0.1>',
        "MESSAGE(to)": f"pjsip:{to}@127.0.0.1",
        "MESSAGE_DATA(Call-ID)": call_id,
        "MESSAGE_DATA(From)": from_data,
        "MESSAGE_DATA(To)": f"<sip:{to}@127.0.0.1>",
        "MESSAGE_DATA(Content-Type)": "text/plain;charset=UTF-8",
        "MESSAGE_DATA(Content-Length)": str(len(encoded) + 2),  # the carrier's trailing CRLF
    }


def message_env(to: str = "+18005550100", *, args: tuple[str, ...] | None = None) -> bytes:
    """The recorded Message channel environment with the extension (and argument) *to*."""
    lines = []
    for line in _env(SESSIONS["sms-in"]).decode("utf-8").split("\n"):
        if not line:
            continue
        key, _, value = line.partition(": ")
        if key == "agi_extension":
            value = to
        if key.startswith("agi_arg_"):
            continue
        lines.append(f"{key}: {value}")
    for n, arg in enumerate((to,) if args is None else args, 1):
        lines.append(f"agi_arg_{n}: {arg}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")
