"""A fake Asterisk for AGI tests, built from the real Asterisk 22 transcripts in tests/fixtures/asterisk/.

It sends the environment of a recorded session (with the fields a test changes),
the way setup_env writes it (``%s``: a caller name with line breaks becomes extra
lines), or the one the sample dialplan produces (:func:`dialplan_session`, played by
:mod:`tests.fakes.dialplan`); answers ``GET VARIABLE`` from a dict and ``GET FULL
VARIABLE`` by substituting the expression on the channel (``${BASE64_ENCODE(...)}``
and all, as pbx_substitute_variables does), records ``SET VARIABLE`` after parsing the
arguments the way Asterisk's ``parse_args`` does (so escaping is checked against
Asterisk's rules, not ours), and can misbehave: send ``HANGUP`` (then ``511`` to
channel commands, as the ``agihangup`` recording shows), stall, close in the middle
of the environment, send garbage or oversized lines.

:class:`AsteriskSide` is the protocol logic without I/O; :class:`FakeFastAGIPeer`
drives it over TCP against the FastAGI server, :func:`run_classic` over a
subprocess's stdin/stdout against ``calltrack-agi``.
"""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.fakes.dialplan import Channel, route_agi, substitute
from tests.fixtures import ASTERISK

SHARED = ASTERISK
FASTAGI_SESSION = "fastagi-001-8005550100-1795915078.1.from-asterisk.raw"
CLASSIC_ENV = "agi-classic/env.txt"

CHANNEL_COMMANDS_ALLOWED_DEAD = ("GET VARIABLE", "GET FULL VARIABLE", "NOOP", "VERBOSE", "SET VARIABLE")


def recorded_environment(classic: bool = False) -> list[tuple[str, str]]:
    """The environment lines of a real session, as (key, value) in Asterisk's order."""
    if classic:
        raw = (SHARED / CLASSIC_ENV).read_bytes()
    else:
        raw = (SHARED / "fastagi" / FASTAGI_SESSION).read_bytes()
    head = raw.split(b"\n\n", 1)[0].decode("utf-8")
    out = []
    for line in head.split("\n"):
        key, _, value = line.partition(": ")
        out.append((key, value))
    return out


def parse_args(line: str) -> list[str]:
    """Split an AGI command line into arguments exactly as res_agi.c ``parse_args`` does."""
    argv: list[str] = []
    cur: list[str] | None = None
    quoted = escaped = False
    whitespace = True
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and whitespace:
                cur = []
                argv.append("")
                whitespace = False
            escaped = False
            continue
        if ch in " \t" and not quoted and not escaped:
            whitespace = True
            if cur is not None:
                argv[-1] = "".join(cur)
                cur = None
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if whitespace:
            cur = []
            argv.append("")
            whitespace = False
        if cur is None:
            cur = []
        cur.append(ch)
        argv[-1] = "".join(cur)
        escaped = False
    if cur is not None:
        argv[-1] = "".join(cur)
    return argv


@dataclass
class AsteriskSide:
    """What Asterisk answers to each AGI command of one session."""

    variables: dict[str, str] = field(default_factory=dict)
    #: send HANGUP before the reply to the command with this index (0-based); None never
    hangup_at: int | None = None
    #: every command line received, as text
    commands: list[str] = field(default_factory=list)
    #: SET VARIABLE name -> value, as Asterisk would have stored it
    set_vars: dict[str, str] = field(default_factory=dict)
    hung_up: bool = False
    #: the channel GET FULL VARIABLE evaluates on (caller ID, uniqueid; CHANNEL(linkedid) from *variables*)
    channel: Channel = field(default_factory=Channel)

    def evaluate(self, expression: str) -> str:
        channel = self.channel
        channel.linkedid = self.variables.get("CHANNEL(linkedid)", "")
        # the dialplan's variables (a sample-dialplan call), then what the session set, then the test's
        channel.variables = {
            **channel.variables,
            **self.set_vars,
            **{k: v for k, v in self.variables.items() if "(" not in k},
        }
        channel.functions = {k: v for k, v in self.variables.items() if "(" in k}
        return substitute(expression, channel)

    def respond(self, line: str) -> bytes:
        index = len(self.commands)
        self.commands.append(line)
        out = b""
        if self.hangup_at is not None and index == self.hangup_at and not self.hung_up:
            self.hung_up = True
            out += b"HANGUP\n"
        argv = parse_args(line)
        upper = [a.upper() for a in argv]
        name = " ".join(upper[:2])
        if self.hung_up and not any(line.upper().startswith(c) for c in CHANNEL_COMMANDS_ALLOWED_DEAD):
            return out + b"511 Command Not Permitted on a dead channel or intercept routine\n"
        if name == "GET VARIABLE":
            if len(argv) != 3:
                return out + (
                    b"520-Invalid command syntax.  Proper usage follows:\n"
                    b"Returns <literal>0</literal> if <replaceable>variablename</replaceable> is not set.\n"
                    b"520 End of proper usage.\n"
                )
            value = self.variables.get(argv[2], self.set_vars.get(argv[2]))
            if value is None:
                return out + b"200 result=0\n"
            return out + f"200 result=1 ({value})\n".encode()
        if name == "GET FULL":
            if len(argv) not in (4, 5) or upper[2] != "VARIABLE":
                return out + b"520-Invalid command syntax.  Proper usage follows:\n520 End of proper usage.\n"
            return out + f"200 result=1 ({self.evaluate(argv[3])})\n".encode()
        if name == "SET VARIABLE":
            if len(argv) != 4:
                return out + b"520-Invalid command syntax.  Proper usage follows:\n520 End of proper usage.\n"
            self.set_vars[argv[2]] = argv[3]
            return out + b"200 result=1\n"
        if upper and upper[0] in ("VERBOSE", "NOOP", "ANSWER"):
            return out + b"200 result=1\n"
        return out + b"510 Invalid or unknown command\n"


def environment_bytes(
    *,
    script: str = "route",
    extension: str = "8005550100",
    callerid: str = "+14045551234",
    calleridname: str = "Jane Doe",
    uniqueid: str = "1795915078.1",
    dnid: str = "unknown",
    args: tuple[str, ...] = (),
    classic: bool = False,
    extra: list[str] | None = None,
) -> bytes:
    """The recorded environment with these fields changed, ending with the blank line."""
    changes = {
        "agi_network_script": script,
        "agi_request": f"agi://127.0.0.1:4573/{script}",
        "agi_extension": extension,
        "agi_callerid": callerid,
        "agi_calleridname": calleridname,
        "agi_uniqueid": uniqueid,
        "agi_dnid": dnid,
    }
    lines = []
    for key, value in recorded_environment(classic):
        if classic and key == "agi_arg_1":
            break  # the recorded classic session had its own arguments
        if classic and key == "agi_request":
            value = "/var/lib/asterisk/agi-bin/calltrack-agi"
        elif key in changes:
            value = changes[key]
        lines.append(f"{key}: {value}")
    for n, arg in enumerate(args, 1):
        lines.append(f"agi_arg_{n}: {arg}")
    lines.extend(extra or [])
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def environment_from(values: dict[str, str], *, classic: bool = False, args: tuple[str, ...] = ()) -> bytes:
    """The recorded environment with *values* put in, each line written as setup_env does (``%s``)."""
    lines = []
    for key, value in recorded_environment(classic):
        if classic and key == "agi_arg_1":
            break
        if classic and key in ("agi_network", "agi_network_script"):
            continue
        lines.append(f"{key}: {values.get(key, value)}")
    lines.extend(f"agi_arg_{n}: {arg}" for n, arg in enumerate(args, 1))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


@dataclass
class DialplanCall:
    """A call played through the sample dialplan up to its AGI(): what Asterisk sends, and the channel."""

    env: bytes
    #: the classic script's argv (``calltrack-agi route?...``)
    argv: list[str]
    channel: Channel
    url: str


def dialplan_session(
    *,
    exten: str = "8005550100",
    callerid: str = "+14045551234",
    calleridname: str = "Jane Doe",
    uniqueid: str = "1795915078.1",
    linkedid: str = "1795915078.0",
    classic: bool = False,
) -> DialplanCall:
    """The environment of a call that ran the sample dialplan: the address carries the inputs, the caller ID is cleared."""
    channel = Channel(uniqueid=uniqueid, linkedid=linkedid, caller_num=callerid, caller_name=calleridname)
    _run, data = route_agi(channel, exten)
    url = data.split(",", 1)[0]
    assert url.startswith("agi://"), url
    script = url.split("/", 3)[3]
    query = script.partition("?")[2]
    values = {**channel.agi_values(), "agi_network_script": script, "agi_request": url}
    values.update({"agi_extension": "s", "agi_context": "calltrack-route"})
    if classic:
        values["agi_request"] = "/var/lib/asterisk/agi-bin/calltrack-agi"
        return DialplanCall(
            environment_from(values, classic=True, args=(f"route?{query}",)), [f"route?{query}"], channel, url
        )
    return DialplanCall(environment_from(values), [], channel, url)


@dataclass
class PeerResult:
    side: AsteriskSide
    #: True when the server closed the connection (the normal end of a session)
    closed_by_server: bool
    seconds: float

    @property
    def status(self) -> str | None:
        return self.side.set_vars.get("CALLTRACK_STATUS")


class FakeFastAGIPeer:
    """Plays Asterisk over TCP against a FastAGI server."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        linkedid: str | None = "1795915078.0",
        variables: dict[str, str] | None = None,
        hangup_at: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        values = dict(variables or {})
        if linkedid is not None:
            values.setdefault("CHANNEL(linkedid)", linkedid)
        self.side = AsteriskSide(values, hangup_at=hangup_at)

    async def session(
        self, env: bytes | None = None, *, timeout: float = 10.0, line_by_line: bool = False, **fields: object
    ) -> PeerResult:
        """Send the environment and answer commands until the server closes the connection.

        *line_by_line*: one write per line, as res_agi does (ast_agi_send), letting the
        event loop run between them, so the server may see the environment in pieces.
        """
        started = time.monotonic()
        side = self.side
        side.channel.uniqueid = str(fields.get("uniqueid", "1795915078.1"))
        side.channel.caller_num = str(fields.get("callerid", "+14045551234"))
        side.channel.caller_name = str(fields.get("calleridname", "Jane Doe"))
        data = env if env is not None else environment_bytes(**fields)  # type: ignore[arg-type]
        reader, writer = await asyncio.open_connection(self.host, self.port)
        if line_by_line:
            for line in data.split(b"\n")[:-1]:
                writer.write(line + b"\n")
                await writer.drain()
                await asyncio.sleep(0)
        else:
            writer.write(data)
        closed = await self._answer(reader, writer, timeout)
        return PeerResult(self.side, closed, time.monotonic() - started)

    async def dialplan(self, *, line_by_line: bool = False, timeout: float = 10.0, **fields: object) -> PeerResult:
        """A call that ran the sample dialplan (see :func:`dialplan_session`)."""
        call = dialplan_session(**fields)  # type: ignore[arg-type]
        self.side.channel = call.channel
        self.side.variables.setdefault("CHANNEL(linkedid)", call.channel.linkedid)
        return await self.session(call.env, timeout=timeout, line_by_line=line_by_line, **_channel_fields(call))

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await reader.readline()
                    if not line:
                        return True
                    if not line.endswith(b"\n"):
                        return True
                    writer.write(self.side.respond(line.decode("utf-8").rstrip("\n")))
                    await writer.drain()
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        finally:
            writer.close()

    async def raw(self, data: bytes, *, then_wait: float = 10.0) -> tuple[bytes, bool, float]:
        """Send *data* as is, keep the connection open; what the server sent, whether it closed, and when."""
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(data)
        await writer.drain()
        received = b""
        closed = False
        try:
            async with asyncio.timeout(then_wait):
                while True:
                    chunk = await reader.read(65536)
                    if not chunk:
                        closed = True
                        break
                    received += chunk
        except TimeoutError:
            pass
        except ConnectionError:
            closed = True
        finally:
            writer.close()
        return received, closed, time.monotonic() - started


def _channel_fields(call: DialplanCall) -> dict[str, object]:
    c = call.channel
    return {"uniqueid": c.uniqueid, "callerid": c.caller_num, "calleridname": c.caller_name}


def run_classic(
    argv: list[str],
    env_bytes: bytes,
    side: AsteriskSide,
    *,
    environ: dict[str, str],
    timeout: float = 30.0,
    sighup_after: int | None = None,
    on_stdout_closed: Callable[[], None] | None = None,
) -> tuple[int, str]:
    """Run ``calltrack-agi`` as Asterisk would: environment on stdin, answers to its commands.

    *sighup_after*: send SIGHUP once this many commands were answered;
    *on_stdout_closed*: called when the script closed its stdout (the dialplan goes on),
    before waiting for it to exit. Returns the exit status and what it wrote to stderr.
    """
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ)
    assert proc.stdin and proc.stdout and proc.stderr
    proc.stdin.write(env_bytes)
    proc.stdin.flush()
    buffer = b""
    deadline = time.monotonic() + timeout
    out_fd = proc.stdout.fileno()
    answered = 0
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([out_fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(out_fd, 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                try:
                    proc.stdin.write(side.respond(line.decode("utf-8")))
                    proc.stdin.flush()
                except BrokenPipeError:
                    pass
                answered += 1
                if sighup_after is not None and answered == sighup_after:
                    proc.send_signal(1)
        if on_stdout_closed is not None:
            on_stdout_closed()
        try:
            proc.stdin.close()
        except BrokenPipeError:  # the script exited first (after a SIGHUP, say)
            pass
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, proc.stderr.read().decode("utf-8", "replace")
