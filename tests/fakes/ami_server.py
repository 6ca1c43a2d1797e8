"""A fake Asterisk AMI server on a real TCP socket, replaying recorded streams.

The streams are the byte-for-byte captures in tests/fixtures/asterisk/ami/.  The
server sends the banner, answers Login (accepting or refusing), Ping,
CoreShowChannels, Status and Logoff like Asterisk 22, and replays the recorded
events after a successful login:

* at full speed, or cut at random byte boundaries (also inside UTF-8 text);
* with a ``Timestamp`` header (as ``timestampevents = yes`` does) taken from
  the capture's timeline, so call durations are the real ones;
* several captures interleaved (two calls at once), or thousands of copies
  with fresh uniqueids (:func:`multiply`);
* dropping the connection after some frames and accepting the next one, whose
  ``CoreShowChannels`` answer lists the channels still alive at that point of
  the recording (:class:`Plan`); or as a restarted Asterisk (new
  ``FullyBooted`` with a small uptime, no channel alive);
* with malformed frames mixed in;
* with the manager user's rights as manager.conf gives them (``read``/``write`` classes):
  ``ListCommands`` lists only the actions those classes permit, any other action is
  answered ``Permission denied``, ``FullyBooted`` follows the Login reply only with the
  ``system`` read class, and ``CoreSettings`` / ``ShowDialPlan`` answer like
  Asterisk 22's manager.c and pbx.c (:class:`Rights`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fixtures import ASTERISK

SHARED = ASTERISK
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
CRLF = b"\r\n"
END = b"\r\n\r\n"

#: every call shape captured in tests/fixtures/asterisk/ami/ (ami-<scenario>.txt)
SCENARIOS = [
    "answered",
    "noanswer",
    "busy",
    "earlyhangup",
    "origtimeout",
    "agihangup",
    "mixstop",
    "iax-answered",
    "classic",
    "agidown",
]

#: actions of Asterisk 22 with the classes that permit them (manager.c, pbx.c, app_mixmonitor.c
#: registrations) and their synopsis (manager_doc.xml); an empty tuple needs no right
ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "Ping": ((), "Keepalive command."),
    "Events": ((), "Control Event Flow."),
    "Logoff": ((), "Logoff Manager."),
    "Login": ((), "Login Manager."),
    "Challenge": ((), "Generate Challenge for MD5 Auth."),
    "Hangup": (("system", "call"), "Hangup channel."),
    "Status": (("system", "call", "reporting"), "List channel status."),
    "Originate": (("originate",), "Originate a call."),
    "Command": (("command",), "Execute Asterisk CLI Command."),
    "ListCommands": ((), "List available manager commands."),
    "WaitEvent": ((), "Wait for an event to occur."),
    "CoreSettings": (("system", "reporting"), "Show PBX core settings (version etc)."),
    "CoreShowChannels": (("system", "reporting"), "List currently active channels."),
    "ShowDialPlan": (("config", "reporting"), "Show dialplan contexts and extensions"),
    "MixMonitorMute": (("system", "call"), "Mute / unMute a Mixmonitor recording."),
    "MessageSend": (("message",), "Send an out of call message to an endpoint."),
}


@dataclass
class Rights:
    """The manager user's classes (manager.conf ``read =`` / ``write =``) and what Asterisk tells about itself."""

    read: frozenset[str] = frozenset({"system", "call", "dialplan", "cdr"})
    write: frozenset[str] = frozenset({"reporting"})
    #: CoreSettings' CoreRunUser / CoreRunGroup
    run_user: str = "asterisk"
    run_group: str = "asterisk"
    #: the dialplan ShowDialPlan lists: (context, extension, priority, application, data) and (context, included)
    extensions: tuple[tuple[str, str, int, str, str], ...] = ()
    includes: tuple[tuple[str, str], ...] = ()

    def allows(self, action: str) -> bool:
        needed = ACTIONS.get(action, ((), ""))[0]
        return not needed or "all" in self.write or bool(set(needed) & self.write)

    def reads(self, cls: str) -> bool:
        return "all" in self.read or cls in self.read


def dialplan_of(text: str) -> tuple[tuple[tuple[str, str, int, str, str], ...], tuple[tuple[str, str], ...]]:
    """The extensions and includes of an extensions.conf text, as pbx_config would load them."""
    extensions: list[tuple[str, str, int, str, str]] = []
    includes: list[tuple[str, str]] = []
    context, exten, prio = "", "", 0
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if line.startswith("[") and "]" in line:
            context = line[1 : line.index("]")]
            continue
        key, sep, value = line.partition("=>")
        key, value = key.strip(), value.strip()
        if not sep or not context:
            continue
        if key == "include":
            includes.append((context, value))
        elif key in ("exten", "same"):
            if key == "exten":
                exten, number, command = value.split(",", 2)
            else:
                number, command = value.split(",", 1)
            number = number.split("(", 1)[0]
            prio = 1 if number == "1" else prio + 1 if number == "n" else int(number)
            app, _, data = command.partition("(")
            extensions.append((context, exten, prio, app, data[:-1] if data.endswith(")") else data))
    return tuple(extensions), tuple(includes)


_TIME = re.compile(r"^\[\+\s*([0-9.]+)\] << (.*)$")


@dataclass(frozen=True)
class Frame:
    """One recorded message: seconds since the capture began, its bytes (ending CRLF CRLF)."""

    at: float
    data: bytes

    @property
    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in self.data.decode("utf-8", "replace").split("\r\n"):
            key, sep, value = line.partition(": ")
            if sep and key not in out:
                out[key] = value
        return out

    @property
    def is_event(self) -> bool:
        return self.data.startswith(b"Event: ")


def load_capture(scenario: str, traffic: Path = SHARED) -> list[Frame]:
    """The frames of ``ami-<scenario>.txt`` after the banner, with times from its timeline."""
    raw = (traffic / "ami" / f"ami-{scenario}.txt").read_bytes()
    assert raw.startswith(BANNER)
    chunks = raw[len(BANNER) :].split(END)
    assert chunks[-1] == b""
    times = []
    for line in (traffic / "ami" / f"ami-{scenario}.timeline.txt").read_text().splitlines():
        m = _TIME.match(line)
        if m and (m.group(2).startswith("Event=") or m.group(2).startswith("Response=")):
            times.append(float(m.group(1)))
    chunks.pop()
    assert len(times) == len(chunks), (scenario, len(times), len(chunks))
    return [Frame(t, c + END) for t, c in zip(times, chunks, strict=True)]


_STAMP = re.compile(rb"\r\nTimestamp: ([0-9]+\.[0-9]+)\r\n")


def load_pjsip_capture(scenario: str, traffic: Path = SHARED) -> list[Frame]:
    """The frames of ``pjsip/ami-<scenario>.txt`` (recorded with ``timestampevents = yes``) after the banner.

    Each frame's time is its own ``Timestamp`` since the first one (a reply without one takes the
    time of the message before it).
    """
    raw = (traffic / "pjsip" / f"ami-{scenario}.txt").read_bytes()
    assert raw.startswith(BANNER)
    chunks = raw[len(BANNER) :].split(END)
    assert chunks.pop() == b""
    out: list[Frame] = []
    start: float | None = None
    at = 0.0
    for chunk in chunks:
        m = _STAMP.search(chunk + CRLF)
        if m:
            stamp = float(m.group(1))
            start = stamp if start is None else start
            at = stamp - start
        out.append(Frame(at, chunk + END))
    return out


_CDR_TIME = re.compile(rb"\r\n(StartTime|AnswerTime|EndTime): ([0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8})")


def retime(frames: Sequence[Frame], seconds: int) -> list[Frame]:
    """The recording as if made *seconds* later: Timestamps and Cdr times moved (whole seconds, as CDRs count).

    The pjsip Asterisk ran on UTC, so its Cdr times (local) are UTC too.
    """

    def stamp(m: re.Match[bytes]) -> bytes:
        return b"\r\nTimestamp: %.6f\r\n" % (float(m.group(1)) + seconds)

    def cdr_time(m: re.Match[bytes]) -> bytes:
        when = dt.datetime.strptime(m.group(2).decode(), "%Y-%m-%d %H:%M:%S") + dt.timedelta(seconds=seconds)
        return b"\r\n" + m.group(1) + b": " + when.strftime("%Y-%m-%d %H:%M:%S").encode()

    out = []
    for f in frames:
        data = _STAMP.sub(stamp, f.data)
        if f.data.startswith(b"Event: Cdr\r\n"):
            data = _CDR_TIME.sub(cdr_time, data)
        out.append(Frame(f.at, data))
    return out


def call_frames(frames: Sequence[Frame]) -> list[Frame]:
    """The frames after login: drops the login reply, FullyBooted/SuccessfulAuth and the final Goodbye."""
    out = []
    for f in frames:
        h = f.headers
        action = h.get("ActionID", "")
        if action.endswith("-login") or action.startswith("login-") or h.get("Response") == "Goodbye":
            continue
        if h.get("Event") in ("FullyBooted", "SuccessfulAuth"):
            continue
        out.append(f)
    return out


def epoch_of(frames: Sequence[Frame]) -> float:
    """The capture's wall-clock start: uniqueids begin with the epoch second of the channel's birth."""
    for f in frames:
        uid = f.headers.get("Uniqueid")
        if uid and uid[0].isdigit():
            return float(uid.split(".")[0]) - f.at
    return 1_795_915_000.0


def with_timestamps(frames: Sequence[Frame], epoch: float) -> list[Frame]:
    """Adds ``Timestamp: <epoch seconds>`` after ``Privilege`` to events, as Asterisk does."""
    out = []
    for f in frames:
        if not f.is_event:
            out.append(f)
            continue
        first, _, rest = f.data.partition(CRLF)
        second, _, rest2 = rest.partition(CRLF)
        stamp = f"Timestamp: {epoch + f.at:.6f}".encode()
        if second.startswith(b"Privilege: "):
            data = first + CRLF + second + CRLF + stamp + CRLF + rest2
        else:
            data = first + CRLF + stamp + CRLF + rest
        out.append(Frame(f.at, data))
    return out


def interleave(*streams: Sequence[Frame], offsets: Sequence[float] = ()) -> list[Frame]:
    """Several streams merged by time (each shifted by its offset), stable within a stream."""
    tagged: list[tuple[float, int, int, Frame]] = []
    for i, stream in enumerate(streams):
        shift = offsets[i] if i < len(offsets) else 0.0
        tagged.extend((f.at + shift, i, n, Frame(f.at + shift, f.data)) for n, f in enumerate(stream))
    tagged.sort(key=lambda t: (t[0], t[1], t[2]))
    return [t[3] for t in tagged]


_UID = re.compile(rb"\b1795915\d{3}\.\d+\b")
_CHANID = re.compile(rb"-([0-9a-f]{8})(?=;[12]|\r|\n| |,|$)")
_BRIDGE = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def renumber(frames: Sequence[Frame], copy: int, shift: float = 0.0) -> list[Frame]:
    """A copy of a call with fresh uniqueids, channel and bridge ids (unique per *copy*)."""
    uids: dict[bytes, bytes] = {}
    chans: dict[bytes, bytes] = {}

    def uid(m: re.Match[bytes]) -> bytes:
        old = m.group(0)
        if old not in uids:
            sec = old.split(b".")[0]
            uids[old] = sec + b".%d" % (copy * 1000 + len(uids) + 1_000_000)
        return uids[old]

    def chan(m: re.Match[bytes]) -> bytes:
        old = m.group(1)
        if old not in chans:
            chans[old] = b"%08x" % (copy * 64 + len(chans) + 0x10000000)
        return b"-" + chans[old]

    def bridge(m: re.Match[bytes]) -> bytes:
        return b"%08x-0000-4000-8000-%012x" % (copy, int(m.group(0)[-12:], 16) % 0xFFFFFFFFFFFF)

    out = []
    for f in frames:
        data = _BRIDGE.sub(bridge, _CHANID.sub(chan, _UID.sub(uid, f.data)))
        out.append(Frame(f.at + shift, data))
    return out


def multiply(scenarios: Iterable[Sequence[Frame]], copies: int, spacing: float = 0.05) -> list[Frame]:
    """*copies* calls cycling through *scenarios*, started *spacing* seconds apart, interleaved by time."""
    pool = [list(s) for s in scenarios]
    streams = [renumber(pool[i % len(pool)], i, shift=i * spacing) for i in range(copies)]
    return interleave(*streams)


#: ast_escape_c (Asterisk's main/utils.c): these characters become a backslash and the letter
_C_ESCAPE = {"\a": "a", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t", "\v": "v",
             "\\": "\\", "'": "'", '"': '"', "?": "?"}  # fmt: skip


def escape_c(text: str) -> str:
    """What ``ast_escape_c`` makes of *text*: how AMI writes caller and connected-line names."""
    return "".join("\\" + _C_ESCAPE[ch] if ch in _C_ESCAPE else ch for ch in text)


def replace_caller_name(frames: Sequence[Frame], name: str) -> list[Frame]:
    """The captures' caller "Jane Doe" renamed (UTF-8, quotes, line breaks...), written as Asterisk writes it.

    ``...CallerIDName`` and ``...ConnectedLineName`` headers (any prefix) carry it C-escaped
    (``ast_manager_build_channel_state_string``); the ``Cdr`` event's ``CallerID`` is the quoted
    ``"name" <number>`` with backslashes and quotes escaped (as the pjsip capture of a quoted
    name shows); anything else (a Newexten's AppData) as it is.
    """
    escaped = escape_c(name).encode("utf-8")
    quoted = name.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8")
    plain = name.encode("utf-8")
    out = []
    for f in frames:
        lines = []
        for line in f.data.split(CRLF):
            key, sep, value = line.partition(b": ")
            if sep and (key.endswith(b"CallerIDName") or key.endswith(b"ConnectedLineName")):
                line = key + sep + value.replace(b"Jane Doe", escaped)
            elif sep and key == b"CallerID":
                line = key + sep + value.replace(b"Jane Doe", quoted)
            else:
                line = line.replace(b"Jane Doe", plain)
            lines.append(line)
        out.append(Frame(f.at, CRLF.join(lines)))
    return out


def live_channels(frames: Sequence[Frame]) -> list[dict[str, str]]:
    """The channels alive after *frames*: born by Newchannel, not yet hung up; their last known state."""
    alive: dict[str, dict[str, str]] = {}
    for f in frames:
        h = f.headers
        uid = h.get("Uniqueid")
        if not uid:
            continue
        event = h.get("Event")
        if event == "Newchannel":
            alive[uid] = dict(h)
        elif event == "Hangup":
            alive.pop(uid, None)
        elif uid in alive and "ChannelStateDesc" in h:
            alive[uid].update({k: v for k, v in h.items() if k not in ("Event", "Privilege", "Timestamp")})
    return list(alive.values())


@dataclass
class Plan:
    """What one accepted connection gets after login."""

    frames: Sequence[Frame] = ()
    #: Asterisk's state at connect time: these frames have happened (CoreShowChannels lists what they leave alive)
    history: Sequence[Frame] = ()
    #: close the socket after sending this many frames (None: send all, then keep the line open)
    drop_after: int | None = None
    #: cut writes at random byte boundaries (seeded)
    split_seed: int | None = None
    #: with split_seed: how many bytes the client has read so far.  Each piece is then sent only
    #: once the client has read everything before it, so two pieces never arrive as one read.
    delivered: Callable[[], int] | None = None
    #: refuse the login
    refuse_login: bool = False
    #: FullyBooted's Uptime; small after a restart.  The default reaches back before the captures were
    #: made (2026-11-29), so replaying them later never looks like a restart.
    uptime: int = 100_000_000
    #: bytes written before the frames (malformed input)
    garbage: bytes = b""
    #: seconds between frames (0: full speed)
    pace: float = 0.0
    #: answer Ping (False: a hung Asterisk whose TCP connection stays up)
    answer_ping: bool = True
    #: (n, event): after n frames, wait for the event before sending the rest
    gate: tuple[int, asyncio.Event] | None = None
    #: several gates, in order: [(n1, e1), (n2, e2)] sends frames[:n1], waits for e1, sends up to n2, waits for e2...
    gates: Sequence[tuple[int, asyncio.Event]] = ()


@dataclass
class FakeAmiServer:
    """Serves one :class:`Plan` per accepted connection (the last plan repeats)."""

    plans: list[Plan]
    username: str = "calltrack"
    secret: str = "s3cret"
    host: str = "127.0.0.1"
    port: int = 0
    connections: int = 0
    actions: list[dict[str, str]] = field(default_factory=list)
    done: list[asyncio.Event] = field(default_factory=list)
    #: serve TLS (Asterisk's tlsbindport) with this context
    ssl: Any = None
    #: the manager user's rights and what CoreSettings / ShowDialPlan tell
    rights: Rights = field(default_factory=Rights)
    _server: asyncio.base_events.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> FakeAmiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_connections(self, n: int, timeout: float = 10.0) -> None:
        async def until() -> None:
            while len(self.done) < n:
                await asyncio.sleep(0.01)
            await self.done[n - 1].wait()

        await asyncio.wait_for(until(), timeout)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        plan = self.plans[min(index, len(self.plans) - 1)]
        finished = asyncio.Event()
        self.done.append(finished)
        self._writers.append(writer)
        rng = random.Random(plan.split_seed) if plan.split_seed is not None else None
        lock = asyncio.Lock()
        resynced = asyncio.Event()

        written = 0
        if plan.delivered is not None:
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        async def delivered(deadline: float = 20.0) -> None:
            assert plan.delivered is not None
            until = time.monotonic() + deadline
            while plan.delivered() < written:
                if time.monotonic() > until:
                    raise AssertionError("the client did not read what the fake server sent")
                await asyncio.sleep(0)

        async def send(data: bytes) -> None:
            nonlocal written
            async with lock:
                if rng is None:
                    writer.write(data)
                    written += len(data)
                    await writer.drain()
                    return
                pos = 0
                while pos < len(data):
                    step = rng.randint(1, 97)
                    writer.write(data[pos : pos + step])
                    written += len(data[pos : pos + step])
                    pos += step
                    await writer.drain()
                    if plan.delivered is not None:
                        await delivered()
                    elif rng.random() < 0.3:
                        await asyncio.sleep(0.0005)

        streamer: asyncio.Task[None] | None = None
        try:
            await send(BANNER)
            buf = b""
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buf += chunk
                while END in buf:
                    raw, buf = buf.split(END, 1)
                    action = _headers(raw)
                    self.actions.append(action)
                    name = action.get("Action", "").lower()
                    aid = action.get("ActionID", "")
                    if name == "login":
                        if (
                            plan.refuse_login
                            or action.get("Username") != self.username
                            or action.get("Secret") != self.secret
                        ):
                            await send(_msg(Response="Error", ActionID=aid, Message="Authentication failed"))
                            continue
                        await send(_msg(Response="Success", ActionID=aid, Message="Authentication accepted"))
                        if self.rights.reads("system"):
                            await send(
                                _msg(
                                    Event="FullyBooted",
                                    Privilege="system,all",
                                    Uptime=str(plan.uptime),
                                    LastReload=str(plan.uptime),
                                    Status="Fully Booted",
                                )
                            )
                        streamer = asyncio.create_task(self._stream(plan, send, writer, finished, resynced))
                    elif (known := _action_name(name)) is not None and not self.rights.allows(known):
                        await send(_msg(Response="Error", ActionID=aid, Message="Permission denied"))
                    elif name == "listcommands":
                        await send(self._list_commands(aid))
                    elif name == "coresettings":
                        await send(self._core_settings(aid))
                    elif name == "showdialplan":
                        await send(self._show_dialplan(aid))
                    elif name == "coreshowchannels":
                        await send(self._core_show_channels(plan, aid))
                        resynced.set()
                    elif name == "ping":
                        if not plan.answer_ping:
                            continue
                        await send(_msg(Response="Success", ActionID=aid, Ping="Pong", Timestamp="0.0"))
                    elif name == "logoff":
                        await send(_msg(Response="Goodbye", ActionID=aid, Message="Thanks for all the fish."))
                        return
                    else:
                        await send(_msg(Response="Error", ActionID=aid, Message="Invalid/unknown command"))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if streamer is not None and not streamer.done():
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(streamer), 0.1)
                streamer.cancel()
            finished.set()
            writer.close()

    async def _stream(
        self,
        plan: Plan,
        send: Callable[[bytes], Awaitable[None]],
        writer: asyncio.StreamWriter,
        finished: asyncio.Event,
        resynced: asyncio.Event,
    ) -> None:
        # The listener sends CoreShowChannels after its login: as on a real Asterisk, the answer (the
        # channels alive before the new events) comes first. A client that never asks gets the events anyway.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(resynced.wait(), 5)
        if plan.garbage:
            await send(plan.garbage)
        frames = list(plan.frames)
        if plan.drop_after is not None:
            frames = frames[: plan.drop_after]
        gates = [plan.gate] if plan.gate is not None else []
        gates.extend(plan.gates)
        bounds = [0, *(n for n, _ in gates), len(frames)]
        parts = [frames[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        for i, part in enumerate(parts):
            if i > 0:
                await gates[i - 1][1].wait()
            if plan.pace == 0 and plan.split_seed is None:
                await send(b"".join(f.data for f in part))
            else:
                for f in part:
                    await send(f.data)
                    if plan.pace:
                        await asyncio.sleep(plan.pace)
        if plan.drop_after is not None:
            writer.transport.abort()
        finished.set()

    def _list_commands(self, aid: str) -> bytes:
        # manager.c action_listcommands: "Action: synopsis (Priv: classes)" per permitted action
        lines = [f"Response: Success\r\nActionID: {aid}\r\n".encode()]
        for action, (needed, synopsis) in ACTIONS.items():
            if self.rights.allows(action):
                lines.append(f"{action}: {synopsis} (Priv: {','.join(needed) or '<none>'})\r\n".encode())
        return b"".join(lines) + CRLF

    def _core_settings(self, aid: str) -> bytes:
        return _msg(
            Response="Success",
            ActionID=aid,
            AMIversion="11.0.0",
            AsteriskVersion="22.6.0",
            SystemName="",
            CoreMaxCalls="0",
            CoreMaxLoadAvg="0.000000",
            CoreRunUser=self.rights.run_user,
            CoreRunGroup=self.rights.run_group,
            CoreMaxFilehandles="0",
            CoreRealTimeEnabled="No",
            CoreCDRenabled="Yes",
            CoreHTTPenabled="No",
            SoundsSearchCustomDir="No",
        )

    def _show_dialplan(self, aid: str) -> bytes:
        # pbx.c manager_show_dialplan: a list ack, one ListDialplan per priority and per include, then the end
        rights = self.rights
        out = [_msg(Response="Success", ActionID=aid, EventList="start", Message="DialPlan list will follow")]
        contexts = list(dict.fromkeys([e[0] for e in rights.extensions] + [i[0] for i in rights.includes]))
        extens: set[tuple[str, str]] = set()
        for context in contexts:
            for ctx, exten, prio, app, data in rights.extensions:
                if ctx == context:
                    extens.add((ctx, exten))
                    out.append(
                        _msg(
                            Event="ListDialplan",
                            ActionID=aid,
                            Context=ctx,
                            Extension=exten,
                            Priority=str(prio),
                            Application=app,
                            AppData=data,
                            Registrar="pbx_config",
                        )
                    )
            for ctx, included in rights.includes:
                if ctx == context:
                    out.append(
                        _msg(
                            Event="ListDialplan",
                            ActionID=aid,
                            Context=ctx,
                            IncludeContext=included,
                            Registrar="pbx_config",
                        )
                    )
        out.append(
            _msg(
                Event="ShowDialPlanComplete",
                ActionID=aid,
                EventList="Complete",
                ListItems=str(len(out) - 1),
                ListExtensions=str(len(extens)),
                ListPriorities=str(len(rights.extensions)),
                ListContexts=str(len(contexts)),
            )
        )
        return b"".join(out)

    def _core_show_channels(self, plan: Plan, aid: str) -> bytes:
        alive = live_channels(plan.history)
        out = [_msg(Response="Success", ActionID=aid, EventList="start", Message="Channels will follow")]
        for h in alive:
            out.append(
                _msg(
                    Event="CoreShowChannel",
                    ActionID=aid,
                    Channel=h.get("Channel", ""),
                    ChannelState=h.get("ChannelState", ""),
                    ChannelStateDesc=h.get("ChannelStateDesc", ""),
                    CallerIDNum=h.get("CallerIDNum", ""),
                    CallerIDName=h.get("CallerIDName", ""),
                    ConnectedLineNum=h.get("ConnectedLineNum", ""),
                    ConnectedLineName=h.get("ConnectedLineName", ""),
                    Language="en",
                    AccountCode="",
                    Context=h.get("Context", ""),
                    Exten=h.get("Exten", ""),
                    Priority=h.get("Priority", "1"),
                    Uniqueid=h.get("Uniqueid", ""),
                    Linkedid=h.get("Linkedid", ""),
                    Application="Dial",
                    ApplicationData="",
                    Duration="00:00:05",
                    BridgeId="",
                )
            )
        out.append(
            _msg(Event="CoreShowChannelsComplete", ActionID=aid, EventList="Complete", ListItems=str(len(alive)))
        )
        return b"".join(out)


def _action_name(lowered: str) -> str | None:
    for action in ACTIONS:
        if action.lower() == lowered:
            return action
    return None


def _msg(**headers: str) -> bytes:
    return b"".join(f"{k}: {v}".encode() + CRLF for k, v in headers.items()) + CRLF


def _headers(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep:
            out[key] = value
    return out


def varset(recorded: Frame, variable: str, value: str) -> Frame:
    """The recorded VarSet *recorded* (the Message channel's) naming *variable* = *value*."""
    data = recorded.data.replace(b"\r\nVariable: CT_TEST\r\n", f"\r\nVariable: {variable}\r\n".encode())
    data = data.replace(b"\r\nValue: ok\r\n", f"\r\nValue: {value}\r\n".encode())
    assert data != recorded.data
    return Frame(recorded.at, data)


def sample_text_frames(
    scenario: str,
    traffic: Path,
    text_id: int | None,
    send_status: str,
    dest: str = "pjsip:agent100",
    reply_status: str | None = None,
) -> list[Frame]:
    """The recorded text *scenario* (``pjsip/ami-sms-*``) as calltrack's sample messages context plays it.

    The recording's dialplan was not the sample: the variables the sample context and the sms
    handler set (CALLTRACK_SMS_DEST cleared, then CALLTRACK_SMS_ID *text_id* and the destination
    *dest*; none when *text_id* is None: calltrack did not answer) are the recorded ``CT_TEST``
    VarSet with their names and values. The recorded MESSAGE_SEND_STATUS (SUCCESS) says
    *send_status*; *reply_status*: a second MessageSend (the answer to STOP or HELP) after it.
    """
    out: list[Frame] = []
    frames = call_frames(load_pjsip_capture(scenario, traffic))
    (ct_test,) = [f for f in frames if f.headers.get("Variable") == "CT_TEST"]
    out.append(varset(ct_test, "CALLTRACK_SMS_DEST", ""))  # the context's first steps
    for f in frames:
        h = f.headers
        if f is ct_test:  # the handler's answers
            if text_id is not None:
                out.append(varset(ct_test, "CALLTRACK_SMS_STATUS", "ok"))
                out.append(varset(ct_test, "CALLTRACK_SMS_ID", str(text_id)))
                out.append(varset(ct_test, "CALLTRACK_SMS_DEST", dest))
            continue
        if h.get("Variable") == "MESSAGE_SEND_STATUS":
            assert h["Value"] == "SUCCESS" and h["Channel"] == "Message/ast_msg_queue"
            out.append(Frame(f.at, f.data.replace(b"\r\nValue: SUCCESS\r\n", f"\r\nValue: {send_status}\r\n".encode())))
            if reply_status is not None:
                out.append(
                    Frame(f.at, f.data.replace(b"\r\nValue: SUCCESS\r\n", f"\r\nValue: {reply_status}\r\n".encode()))
                )
            continue
        out.append(f)
    return out
