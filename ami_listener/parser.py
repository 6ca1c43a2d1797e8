"""The AMI wire format, parsed without I/O.

An AMI message is ``Key: Value`` lines ending with an empty line, every line
ending in CRLF.  :func:`parse_buffer` takes the bytes read so far and returns
the complete messages plus the bytes of the incomplete one, which the caller
keeps and prepends to the next read.  Working on bytes and decoding whole
messages only means a UTF-8 character split across two reads (a caller name,
say) is never damaged, unlike panoramisk, which decodes each TCP chunk on its
own with ``errors='ignore'``.

Malformed input never raises: a line without a colon is skipped (the banner
``Asterisk Call Manager/11.0.0`` is such a line, arriving without its own empty
line), a message with no header at all is skipped, and bytes that are not
UTF-8 are replaced.  What was skipped is reported through *problems*.
"""

from __future__ import annotations

import re
from typing import Any

#: one AMI message: headers in arrival order; a repeated header becomes a list
Message = dict[str, Any]

_SEP = b"\r\n\r\n"
_LF_SEP = b"\n\n"


def parse_buffer(data: bytes, problems: list[str] | None = None) -> tuple[list[Message], bytes]:
    """Complete messages in *data*, and the unfinished rest to keep for the next read.

    *problems*, when given, receives one line per skipped frame or line.
    """
    end = data.rfind(_SEP)
    if end >= 0:
        complete, rest = data[:end], data[end + 4 :]
        sep = "\r\n"
    elif _LF_SEP in data and b"\r" not in data:
        # Some proxies and test tools send bare LF; accept them too.
        end = data.rfind(_LF_SEP)
        complete, rest = data[:end], data[end + 2 :]
        sep = "\n"
    else:
        return [], data
    try:
        frames = complete.decode("utf-8").split(sep + sep)
    except UnicodeDecodeError:
        frames = [_decode(frame, problems) for frame in complete.split(sep.encode() * 2)]
    messages: list[Message] = []
    append = messages.append
    for frame in frames:
        lines = frame.split(sep)
        # Fast path: every line "Key: Value", no repeated key, no odd key.
        try:
            message: Message | None = dict([line.split(": ", 1) for line in lines])
        except ValueError:
            message = None
        if message is None or len(message) != len(lines) or "" in message or " " in "".join(message):
            message = _parse_frame(frame, problems)
        if message:
            append(message)
    return messages, rest


def _decode(frame: bytes, problems: list[str] | None) -> str:
    try:
        return frame.decode("utf-8")
    except UnicodeDecodeError:
        text = frame.decode("utf-8", "replace")
        if problems is not None:
            problems.append(f"invalid UTF-8 replaced in: {_preview(text)}")
        return text


def _parse_frame(text: str, problems: list[str] | None) -> Message:
    """The careful path: odd lines skipped and reported, repeated keys gathered in a list."""
    message: Message = {}
    reported = len(problems) if problems is not None else 0
    for line in text.split("\n"):
        key, sep, value = line.partition(": ")
        if not sep:
            key, sep, value = line.partition(":")
            if not sep:
                line = line.strip()
                if line and problems is not None:
                    problems.append(f"line without a colon skipped: {_preview(line)}")
                continue
            value = value.lstrip(" ")
        key = key.strip()
        if not key or " " in key:
            if problems is not None:
                problems.append(f"line with a bad header name skipped: {_preview(line)}")
            continue
        if value.endswith("\r"):
            value = value[:-1]
        old = message.get(key)
        if old is None:
            message[key] = value
        elif isinstance(old, list):
            old.append(value)
        else:
            message[key] = [old, value]
    if not message and text.strip() and problems is not None and len(problems) == reported:
        problems.append(f"frame without any header skipped: {_preview(text)}")
    return message


def _preview(text: str, limit: int = 80) -> str:
    text = text.strip().replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit] + "..."


#: ast_escape_c (main/utils.c) writes these characters as a backslash and this letter
_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
              "\\": "\\", "'": "'", '"': '"', "?": "?"}  # fmt: skip
_C_ESCAPED = re.compile(r"\\([abfnrtv\\'\"?])")


def unescape(value: str) -> str:
    """Undo Asterisk's ``ast_escape_c`` (main/utils.c): the exact text Asterisk holds.

    AMI runs caller and connected-line names (``CallerIDName``, ``ConnectedLineName`` and
    their ``Dest``/``Transferer``... prefixed forms, ast_manager_build_channel_state_string
    in main/manager_channels.c), ``ChanVariable`` and ``VarSet``'s ``Value``
    (main/stasis_channels.c) through it: ``Jo "Q" Smith`` arrives as ``Jo \\"Q\\" Smith``,
    a line feed as the two characters backslash and ``n``.  Only those headers are escaped;
    the ``Cdr`` event's ``CallerID`` and the AGI environment are not.  ast_escape_c escapes
    every backslash, so a backslash not followed by one of its letters cannot come from it and
    is kept as it is.
    """
    if "\\" not in value:
        return value
    return _C_ESCAPED.sub(lambda m: _C_ESCAPES[m.group(1)], value)


class StreamParser:
    """Keeps the unfinished rest between reads; counts what was skipped."""

    #: refuse to buffer more than this without a message end (a peer that never ends a frame)
    MAX_PENDING = 4 * 1024 * 1024

    def __init__(self) -> None:
        self._rest = b""
        self.problems: list[str] = []
        self.skipped = 0
        self.banner: str | None = None

    def feed(self, data: bytes) -> list[Message]:
        buf = self._rest + data if self._rest else data
        if self.banner is None:
            buf = self._take_banner(buf)
        problems: list[str] = []
        messages, self._rest = parse_buffer(buf, problems)
        if problems:
            self.skipped += len(problems)
            self.problems.extend(problems)
            del self.problems[:-50]
        if len(self._rest) > self.MAX_PENDING:
            self.skipped += 1
            self.problems.append(f"dropped {len(self._rest)} bytes without a message end")
            self._rest = b""
        return messages

    def _take_banner(self, buf: bytes) -> bytes:
        end = buf.find(b"\n")
        if end < 0:
            return buf
        first = buf[:end].strip().decode("utf-8", "replace")
        if first.startswith("Asterisk Call Manager/"):
            self.banner = first
            return buf[end + 1 :]
        self.banner = ""
        return buf

    def take_problems(self) -> list[str]:
        out, self.problems = self.problems, []
        return out
