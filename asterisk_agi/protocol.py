"""The AGI protocol, without I/O: environment, commands, escaping, replies, hangups.

Both transports (FastAGI over TCP in :mod:`asterisk_agi.fastagi`, classic AGI over
stdin/stdout in :mod:`asterisk_agi.classic`) feed lines into the parsers here and
send what :func:`command` builds, so the protocol is written once.

**Caller-controlled text in the environment.** Asterisk writes the environment with
``%s`` (res_agi.c ``setup_env``): a caller ID name or number with a line break in it
becomes extra lines, an early blank line (the end of the environment) and lines that
look like replies. The order of the keys is fixed, so :class:`EnvParser` checks it and
records every departure (a key out of place, repeated or unknown, a line that is no
``key: value``, an oversized line, the environment ending early) instead of trusting
what it read; :func:`authentic_tail` then recovers what Asterisk wrote after the last
caller-controlled line, reading backwards from the real end of the environment, which
a synchronisation (:func:`sync_command`, a ``GET FULL VARIABLE`` with an unguessable
marker) locates: Asterisk answers exactly one reply per command, and only once it has
written the whole environment.

Only the standard library is imported: the classic script must start fast.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

#: the longest line accepted from Asterisk, in bytes (an environment line or a reply)
MAX_LINE = 8192
#: the most environment lines accepted before the blank line
MAX_ENV_LINES = 256
#: the most bytes read from Asterisk before the reply to the first command (oversized lines included)
MAX_ENV_BYTES = 256 * 1024

_COMMAND_WORD = re.compile(r"[A-Z][A-Z ]*[A-Z]|[A-Z]")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\([A-Za-z0-9_-]*\))?")
_ENV_KEY = re.compile(r"agi_[a-z0-9_]+")
_ARG_KEY = re.compile(r"agi_arg_([1-9][0-9]*)")
_REPLY_200 = re.compile(r"200 result=(-?\w*)(?: (.*))?")
_DATA = re.compile(r"\((.*)\)((?: [A-Za-z_]+=\S*)*)")
_EXTRA = re.compile(r"([A-Za-z_]+)=(\S*)")
_INT = re.compile(r"-?[0-9]+")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")

#: FastAGI only (launch_netscript), before the rest: the URL's path is trusted, nothing a caller sets precedes it
NETWORK_KEYS = ("agi_network", "agi_network_script")
#: what setup_env writes, in its order; then agi_arg_1, agi_arg_2... and a blank line
ENV_KEYS = (
    "agi_request",
    "agi_channel",
    "agi_language",
    "agi_type",
    "agi_uniqueid",
    "agi_version",
    "agi_callerid",
    "agi_calleridname",
    "agi_callingpres",
    "agi_callingani2",
    "agi_callington",
    "agi_callingtns",
    "agi_dnid",
    "agi_rdnis",
    "agi_context",
    "agi_extension",
    "agi_priority",
    "agi_enhanced",
    "agi_accountcode",
    "agi_threadid",
)
#: written with %d by Asterisk
_INT_KEYS = frozenset(
    ("agi_callingpres", "agi_callingani2", "agi_callington", "agi_callingtns", "agi_priority", "agi_threadid")
)
#: setup_env's keys after the caller ID, from agi_threadid back (how authentic_tail reads them)
_TAIL_BACKWARDS = tuple(reversed(ENV_KEYS[ENV_KEYS.index("agi_callingpres") :]))
#: how an oversized line is kept in AGIEnv.lines (never taken for a value)
OVERSIZED = "\x00oversized"


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
    """The ``agi_*`` variables Asterisk sends first, plus the ``agi_arg_N`` arguments in order.

    ``anomalies`` says how the stream departed from what Asterisk writes (empty for a
    clean session); ``lines`` keeps every line as received, for :func:`authentic_tail`.
    """

    values: dict[str, str] = field(default_factory=dict)
    anomalies: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

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

    @property
    def query(self) -> dict[str, str]:
        """The parameters after ``?`` in the AGI address (``agi://host/route?number=...``), raw.

        Asterisk writes the address (``agi_network_script``) before anything a caller
        controls, so these are the values a poisoned environment cannot forge. Values
        are not URL-decoded: the sample dialplan sends digits and base64 (whose ``+`` a
        form decoder would turn into a space).
        """
        script = self.values.get("agi_network_script", "")
        _, sep, query = script.partition("?")
        out: dict[str, str] = {}
        if sep:
            for part in query.split("&"):
                key, _, value = part.partition("=")
                if key and key not in out:
                    out[key] = value
        return out

    def known(self, key: str) -> str:
        """The value, or "" for Asterisk's placeholders (``unknown``, empty)."""
        value = self.values.get(key, "").strip()
        return "" if value.lower() in ("unknown", "<unknown>") else value


class EnvParser:
    """Fed one line at a time until the blank line.

    Garbage where the environment should start is refused (not an AGI peer). After
    that nothing is refused: whatever departs from the order Asterisk writes (see
    :data:`ENV_KEYS`) is recorded in ``env.anomalies`` and the first value of a key
    is kept, so the handler can decide what it still trusts and route the call.
    """

    def __init__(self) -> None:
        self.env = AGIEnv()
        self.done = False
        self._count = 0
        self._bytes = 0
        # where the order check stands: the keys allowed next (None once it is broken)
        self._allowed: tuple[str, ...] | None = ("agi_network", "agi_request")
        self._last = ""

    def _anomaly(self, text: str) -> None:
        if len(self.env.anomalies) < 8:
            self.env.anomalies.append(text)

    def feed(self, line: str, oversized: int = 0) -> bool:
        """Take one line (without its newline); True once the environment is complete.

        *oversized*: the line was that many bytes long and *line* is only its start.
        """
        self._bytes += (oversized or len(line)) + 1
        if self._bytes > MAX_ENV_BYTES:
            raise AGIProtocolError(f"AGI environment larger than {MAX_ENV_BYTES} bytes")
        if line == "" and not oversized:
            if self._count == 0:
                raise AGIProtocolError("empty AGI environment")
            self.done = True
            if self._allowed is not None and "agi_threadid" not in self.env.values:
                self._anomaly(f"the environment ended after {self._last} (no {self._allowed[0]})")
            return True
        self._count += 1
        if self._count > MAX_ENV_LINES:
            raise AGIProtocolError(f"AGI environment longer than {MAX_ENV_LINES} lines")
        self.env.lines.append(OVERSIZED if oversized else line)
        key, sep, value = line.partition(":")
        if not sep or not _ENV_KEY.fullmatch(key):
            if self._count == 1:
                raise AGIProtocolError(f"not an AGI environment line: {line[:80]!r}")
            self._anomaly(f"a line that is not an AGI variable: {line[:40]!r}")
            self._allowed = None
            return False
        if oversized:
            self._anomaly(f"{key} of {oversized} bytes (longer than {MAX_LINE})")
        if key in self.env.values:
            # Asterisk never repeats a key: a caller ID with a line break in it does
            self._anomaly(f"{key} sent twice")
            self._allowed = None
            return False
        self._check_order(key)
        # Asterisk writes "key: value"; an empty value keeps the space ("agi_accountcode: ").
        value = value[1:] if value.startswith(" ") else value
        if key in _INT_KEYS and not _INT.fullmatch(value):
            self._anomaly(f"{key} is not a number: {value[:40]!r}")
        if not oversized:
            self.env.values[key] = value
        return False

    def _check_order(self, key: str) -> None:
        allowed = self._allowed
        self._last = key
        if allowed is None:
            return
        if key not in allowed:
            known = key in ENV_KEYS or key in NETWORK_KEYS or _ARG_KEY.fullmatch(key)
            if known:
                self._anomaly(f"{key} where {allowed[0]} was expected")
            else:
                self._anomaly(f"unknown key {key} (a newer Asterisk?)")
            self._allowed = None
            return
        m = _ARG_KEY.fullmatch(key)
        if m:
            self._allowed = (f"agi_arg_{int(m.group(1)) + 1}",)
        elif key == "agi_network":
            self._allowed = ("agi_network_script", "agi_request")
        elif key == "agi_network_script":
            self._allowed = ("agi_request",)
        elif key == "agi_threadid":
            self._allowed = ("agi_arg_1",)
        else:
            self._allowed = (ENV_KEYS[ENV_KEYS.index(key) + 1],)


def _split(line: str) -> tuple[str, str]:
    key, sep, value = line.partition(": ")
    if not sep:
        key, sep, value = line.partition(":")
    return (key, value) if sep and _ENV_KEY.fullmatch(key) else ("", "")


def authentic_tail(lines: Sequence[str]) -> dict[str, str]:
    """What Asterisk itself wrote at the end of the environment, read backwards from the real end.

    *lines* are every line received before the reply to the first command, the
    environment's blank lines included. Caller text sits in the middle (the caller ID
    fields, maybe the DNID or redirecting number); Asterisk's own lines after it, down
    to ``agi_threadid`` and the ``agi_arg_N`` arguments, end the stream. Reading from
    the end, each line must be the key Asterisk writes there; the first that is not
    ends what can be trusted. Arguments are returned only when the whole run from
    ``agi_threadid`` to the blank line is consistent.
    """
    i = len(lines) - 1
    while i >= 0 and lines[i] == "HANGUP":  # the channel hung up after the environment
        i -= 1
    if i < 0 or lines[i] != "":
        return {}
    i -= 1
    args: list[tuple[int, str]] = []
    while i >= 0:
        key, value = _split(lines[i])
        m = _ARG_KEY.fullmatch(key)
        if m is None:
            break
        args.append((int(m.group(1)), value))
        i -= 1
    args.reverse()
    if [n for n, _ in args] != list(range(1, len(args) + 1)):
        return {}
    out: dict[str, str] = {}
    for key in _TAIL_BACKWARDS:
        if i < 0:
            break
        got, value = _split(lines[i])
        if got != key or (key in _INT_KEYS and not _INT.fullmatch(value)):
            break
        out[key] = value
        i -= 1
    if "agi_threadid" not in out:
        return {}
    out.update((f"agi_arg_{n}", value) for n, value in args)
    return out


# --- synchronisation ------------------------------------------------------------------------

SYNC_MARK = "calltrack-sync-"


def new_nonce() -> str:
    """A marker no caller can have written into the environment beforehand."""
    return secrets.token_hex(12)


def base64_of(expression: str) -> str:
    """An Asterisk expression whose value travels base64-encoded (one line, whatever it holds)."""
    return "${BASE64_ENCODE(" + expression + ")}"


def sync_command(nonce: str, fetch: Sequence[str] = ()) -> bytes:
    """``GET FULL VARIABLE`` answering the marker and each *fetch* expression, ``|``-separated.

    Each expression must give text without ``|``, ``(`` or a line break: wrap caller
    text in :func:`base64_of`.
    """
    return command("GET FULL VARIABLE", "|".join((SYNC_MARK + nonce, *fetch)))


def parse_sync(line: str, nonce: str, count: int) -> list[str] | None:
    """The *count* values of the reply to :func:`sync_command`, or None when *line* is not that reply."""
    head = f"200 result=1 ({SYNC_MARK}{nonce}"
    if not line.startswith(head) or not line.endswith(")"):
        return None
    parts = line[len(head) : -1].split("|")
    if parts[0] != "" or len(parts) != count + 1:
        return None
    return parts[1:]


def values_command(nonce: str, expressions: Sequence[str]) -> bytes:
    """``GET FULL VARIABLE`` answering each of *expressions*' values raw, between markers of *nonce*.

    Asterisk substitutes the expressions and copies their values into the reply as they
    are (a value is never parsed as an expression again), so caller text may stand here
    unencoded, line breaks and all, as long as it is not inside another function's
    argument (``${BASE64_ENCODE(${MESSAGE(body)})}`` parses the substituted text: an
    unbalanced ``)`` and a colon cut it). Nothing a caller writes can hold the markers,
    so :class:`ValuesReply` finds the reply's end and each value's bounds exactly.
    """
    mark = SYNC_MARK + nonce
    return command("GET FULL VARIABLE", f"{mark}|" + f"|{mark}|".join(expressions) + f"|{mark}-end")


class ValuesReply:
    """Reads the reply to :func:`values_command` line by line (lines with their ``\\n``).

    :meth:`feed` returns the values once the end marker has come, None before; it raises
    when the first line is not the reply's start (a ``HANGUP`` of Asterisk's before it is
    noted in :attr:`hangup` and skipped) or the reply outgrows MAX_ENV_BYTES.
    """

    def __init__(self, nonce: str, count: int) -> None:
        self.count = count
        self.head = f"200 result=1 ({SYNC_MARK}{nonce}|".encode()
        self.tail = f"|{SYNC_MARK}{nonce}-end)\n".encode()
        self.separator = f"|{SYNC_MARK}{nonce}|".encode()
        self.raw = b""
        self.hangup = False

    def feed(self, line: bytes) -> list[bytes] | None:
        if not self.raw:
            if line == b"HANGUP\n":  # Asterisk's, between commands
                self.hangup = True
                return None
            if not line.startswith(self.head):
                raise AGIProtocolError(f"unexpected reply to GET FULL VARIABLE: {decode(line[:80])!r}")
        self.raw += line
        if len(self.raw) >= len(self.head) + len(self.tail) and self.raw.endswith(self.tail):
            values = self.raw[len(self.head) : -len(self.tail)].split(self.separator)
            if len(values) != self.count:
                raise AGIProtocolError(f"GET FULL VARIABLE answered {len(values)} values, not {self.count}")
            return values
        if len(self.raw) > MAX_ENV_BYTES:
            raise AGIProtocolError(f"reply to GET FULL VARIABLE longer than {MAX_ENV_BYTES} bytes")
        return None


def unbase64(value: str) -> str | None:
    """Text sent base64-encoded (BASE64_ENCODE); None when *value* is not base64."""
    value = value.strip()
    if not _BASE64.fullmatch(value) or len(value) % 4 == 1:
        return None
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.decode("utf-8", errors="replace")


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
