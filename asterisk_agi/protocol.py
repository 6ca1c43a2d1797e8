"""The AGI protocol, without I/O: environment, commands, escaping, replies, hangups.

Both transports (FastAGI over TCP in :mod:`asterisk_agi.fastagi`, classic AGI over
stdin/stdout in :mod:`asterisk_agi.classic`) feed lines into the parsers here and
send what :func:`command` builds, so the protocol is written once.

Only the standard library is imported: the classic script must start fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: the longest line accepted from Asterisk, in bytes (an environment line or a reply)
MAX_LINE = 8192
#: the most environment lines accepted before the blank line
MAX_ENV_LINES = 256

_COMMAND_WORD = re.compile(r"[A-Z][A-Z ]*[A-Z]|[A-Z]")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\([A-Za-z0-9_-]*\))?")
_ENV_KEY = re.compile(r"agi_[a-z0-9_]+")
_REPLY_200 = re.compile(r"200 result=(-?\w*)(?: (.*))?")
_DATA = re.compile(r"\((.*)\)((?: [A-Za-z_]+=\S*)*)")
_EXTRA = re.compile(r"([A-Za-z_]+)=(\S*)")


# --- errors ---------------------------------------------------------------------------


class AGIError(Exception):
    """Base of every AGI failure."""


class AGIProtocolError(AGIError):
    """The peer sent something that is not AGI (garbage, an oversized line, half an environment)."""


class AGITimeout(AGIError):
    """The peer sent nothing within the read deadline."""


class AGIHangup(AGIError):
    """The channel hung up. Handlers need not catch it: the server ends the session quietly."""


class AGINetworkHangup(AGIHangup):
    """FastAGI: Asterisk wrote ``HANGUP`` where a reply was expected."""


class AGIResultHangup(AGIHangup):
    """Asterisk answered ``511``: the command is not permitted on a dead channel."""


class AGIEOFHangup(AGIHangup):
    """The connection (or stdin) closed."""


class AGISIGHUPHangup(AGIHangup):
    """Classic AGI: Asterisk sent SIGHUP (or SIGPIPE: the pipe to Asterisk broke)."""


class AGICommandError(AGIError):
    """Asterisk refused a command."""

    def __init__(self, code: int, message: str, lines: tuple[str, ...] = ()) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.lines = lines


class AGIInvalidCommand(AGICommandError):
    """``510 Invalid or unknown command``."""


class AGIUsageError(AGICommandError):
    """``520`` usage error (a multi-line reply ending with ``520 End of proper usage.``)."""


# --- escaping and commands ----------------------------------------------------------------


def quote(value: object) -> str:
    """*value* as one double-quoted AGI argument.

    Backslash and double quote are escaped with a backslash, as Asterisk's argument
    parser expects. A line break cannot be carried at all: AGI commands are lines and
    the parser has no escape that yields one, so CR, LF and NUL become spaces. The
    result therefore never contains a line break, and caller-controlled text can never
    start a second command.
    """
    text = str(value)
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    if '"' in text:
        text = text.replace('"', '\\"')
    if "\n" in text or "\r" in text or "\0" in text:
        text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\0", " ")
    return f'"{text}"'


class Bare(str):
    """An argument sent without quotes: a checked variable name or a number, as Asterisk shows them."""


def command(name: str, *args: object) -> bytes:
    """The bytes of one AGI command line: *name* (fixed words, checked) and quoted *args*."""
    if not _COMMAND_WORD.fullmatch(name):
        raise ValueError(f"not an AGI command name: {name!r}")
    parts = [name]
    parts.extend(str(arg) if isinstance(arg, Bare) else quote(arg) for arg in args)
    return (" ".join(parts) + "\n").encode("utf-8")


def variable_name(name: str) -> Bare:
    """*name* checked as a channel variable or function name (``CALLERID(num)``, ``CHANNEL(linkedid)``)."""
    if not _VARIABLE.fullmatch(name):
        raise ValueError(f"not a channel variable name: {name!r}")
    return Bare(name)


def decode(raw: bytes) -> str:
    """One complete line from Asterisk as text; invalid UTF-8 is replaced, never dropped silently."""
    return raw.decode("utf-8", errors="replace").rstrip("\r\n")


# --- environment ---------------------------------------------------------------------


@dataclass
class AGIEnv:
    """The ``agi_*`` variables Asterisk sends first, plus the ``agi_arg_N`` arguments in order."""

    values: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    @property
    def args(self) -> list[str]:
        out = []
        n = 1
        while f"agi_arg_{n}" in self.values:
            out.append(self.values[f"agi_arg_{n}"])
            n += 1
        return out

    @property
    def script(self) -> str:
        """The handler name: FastAGI's ``agi_network_script`` without leading slash or query."""
        script = self.values.get("agi_network_script", "")
        return script.split("?", 1)[0].strip("/")

    def known(self, key: str) -> str:
        """The value, or "" for Asterisk's placeholders (``unknown``, empty)."""
        value = self.values.get(key, "").strip()
        return "" if value.lower() in ("unknown", "<unknown>") else value


class EnvParser:
    """Fed one line at a time until the blank line; refuses anything that is not AGI."""

    def __init__(self) -> None:
        self.env = AGIEnv()
        self.done = False
        self._count = 0

    def feed(self, line: str) -> bool:
        """Take one line (without its newline); True once the environment is complete."""
        if line == "":
            if self._count == 0:
                raise AGIProtocolError("empty AGI environment")
            self.done = True
            return True
        self._count += 1
        if self._count > MAX_ENV_LINES:
            raise AGIProtocolError(f"AGI environment longer than {MAX_ENV_LINES} lines")
        key, sep, value = line.partition(":")
        if not sep or not _ENV_KEY.fullmatch(key):
            raise AGIProtocolError(f"not an AGI environment line: {line[:80]!r}")
        if key in self.env.values:
            # Asterisk never repeats a key; a caller ID name with a line break in it could
            raise AGIProtocolError(f"AGI environment repeats {key}")
        # Asterisk writes "key: value"; an empty value keeps the space ("agi_accountcode: ").
        self.env.values[key] = value[1:] if value.startswith(" ") else value
        return False


# --- replies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A ``200`` reply: ``result`` as sent, the parenthesised ``data`` and extras such as ``endpos``."""

    result: str
    data: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def value(self) -> int:
        try:
            return int(self.result)
        except ValueError:
            return 0


class ReplyParser:
    """Reads the reply to one command, line by line.

    :meth:`feed` returns the :class:`Reply` once complete, None while a ``520-``
    usage block continues, and raises for ``510``, ``520``, ``511``, a ``HANGUP``
    line and anything unparseable.
    """

    def __init__(self) -> None:
        self._usage: list[str] | None = None

    def feed(self, line: str) -> Reply | None:
        if self._usage is not None:
            if line.startswith("520 "):
                lines = tuple(self._usage)
                self._usage = None
                raise AGIUsageError(520, lines[0] if lines else "usage error", lines)
            self._usage.append(line)
            if len(self._usage) > MAX_ENV_LINES:
                raise AGIProtocolError("520 usage reply too long")
            return None
        if line.startswith("200 "):
            return parse_200(line)
        if line == "HANGUP":
            raise AGINetworkHangup("HANGUP from Asterisk")
        if line.startswith("511"):
            raise AGIResultHangup(line)
        if line.startswith("510"):
            raise AGIInvalidCommand(510, line[4:] or "Invalid or unknown command")
        if line.startswith("520-"):
            self._usage = [line[4:]]
            return None
        if line.startswith("520"):
            raise AGIUsageError(520, line[4:] or "usage error", (line[4:],))
        raise AGIProtocolError(f"unexpected reply from Asterisk: {line[:80]!r}")


def parse_200(line: str) -> Reply:
    """Parse ``200 result=1 (data) endpos=3404`` and its shorter forms."""
    m = _REPLY_200.fullmatch(line)
    if m is None:
        raise AGIProtocolError(f"malformed reply: {line[:80]!r}")
    result, rest = m.group(1), m.group(2) or ""
    data: str | None = None
    extra: dict[str, str] = {}
    if rest.startswith("("):
        dm = _DATA.fullmatch(rest)
        if dm is None:
            raise AGIProtocolError(f"malformed reply data: {line[:80]!r}")
        data, rest = dm.group(1), dm.group(2)
    for km in _EXTRA.finditer(rest):
        extra[km.group(1)] = km.group(2)
    return Reply(result, data, extra)
