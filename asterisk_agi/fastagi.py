"""The FastAGI server: asyncio, many concurrent sessions, handlers chosen by an explicit router.

``AGI(agi://127.0.0.1:4573/route,${EXTEN})`` opens a TCP connection; Asterisk sends
the environment, then the handler named by ``agi_network_script`` runs AGI commands
over the same connection. The dialplan waits in ``AGI()`` until the server closes it.

Every read has a deadline (``agi.read_timeout``): a peer that stalls, sends half an
environment, closes early or sends garbage is logged and dropped; nothing spins.
Stopping (:meth:`FastAGIServer.serve` with its stop event) closes the listening
socket first, then lets the sessions in flight finish.

Caller-controlled text can put lines of its own into the environment (see
:mod:`asterisk_agi.protocol`): :meth:`AsyncAGI.read_env` records what is out of step
instead of refusing the session, :meth:`AsyncAGI.synchronise` finds the real end of
what Asterisk wrote with a marker only this server knows, and
:meth:`AsyncAGI.set_variables` does not let a stray line stop it.

Commands are never pipelined: Asterisk reads them with ``fgets`` on a buffered
stream but waits for the next one by polling the socket, so a second command
already sitting in its buffer would never be read. Each command is one round trip,
and the round trips (system calls) are most of a session's cost; the event loop is
the other part, which is why ``calltrack agi serve`` runs on uvloop when it can.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from asterisk_agi.protocol import (
    MAX_ENV_BYTES,
    MAX_ENV_LINES,
    MAX_LINE,
    AGIEnv,
    AGIEOFHangup,
    AGIError,
    AGIHangup,
    AGIProtocolError,
    AGITimeout,
    Bare,
    EnvParser,
    Reply,
    ReplyParser,
    ValuesReply,
    command,
    decode,
    new_nonce,
    parse_sync,
    sync_command,
    values_command,
    variable_name,
)

if TYPE_CHECKING:
    from config import Settings

logger = logging.getLogger(__name__)

#: bytes held unread before the server stops reading from a peer
MAX_BUFFER = 4 * MAX_LINE


class AsyncAGI(asyncio.Protocol):
    """One FastAGI connection: an asyncio protocol with the environment and the AGI commands.

    Lines are split out of the received bytes here; a coroutine waiting for a line
    parks on one future. The read deadline is one timer per connection, re-armed
    lazily, rather than a timer per read: a session runs a dozen commands and the
    server many sessions at once.
    """

    def __init__(self, read_timeout: float, on_connect: Callable[[AsyncAGI], None] | None = None) -> None:
        self.read_timeout = read_timeout
        self.env = AGIEnv()
        self.hung_up = False
        #: Asterisk wrote HANGUP (the channel is gone; commands allowed on a dead channel still work)
        self.hangup_received = False
        #: False while the stream may hold lines Asterisk did not write as replies (see synchronise)
        self.in_step = True
        #: True once a synchronisation proved the stream in step
        self.verified = False
        self.peer = ""
        self.transport: asyncio.Transport | None = None
        self._on_connect = on_connect
        self._buffer = b""
        self._head = ""
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._paused = False
        self._loop = asyncio.get_running_loop()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        if self._on_connect is not None:
            self._on_connect(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > MAX_BUFFER and self.transport is not None:
            # Asterisk never sends much unasked; stop reading until the handler catches up
            self.transport.pause_reading()
            self._paused = True
        waiter = self._waiter
        if waiter is not None and not waiter.done() and (b"\n" in data or len(self._buffer) > MAX_LINE):
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self.hung_up = True
        self._wake()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        now = self._loop.time()
        if now < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
        else:
            waiter.set_exception(AGITimeout(f"nothing from Asterisk for {self.read_timeout:g} s"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # reading

    async def _readline(self) -> str:
        while True:
            i = self._buffer.find(b"\n")
            if i >= 0:
                raw = self._buffer[:i]
                self._buffer = self._buffer[i + 1 :]
                if len(raw) > MAX_LINE:
                    raise AGIProtocolError(f"line longer than {MAX_LINE} bytes")
                return decode(raw)
            if len(self._buffer) > MAX_LINE:
                raise AGIProtocolError(f"line longer than {MAX_LINE} bytes")
            if self._eof:
                raise AGIEOFHangup("connection closed by Asterisk" + (" mid-line" if self._buffer else ""))
            await self._wait()

    async def _wait(self) -> None:
        """Until more data comes (a newline), the peer closes, or the read deadline passes."""
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        self._deadline = self._loop.time() + self.read_timeout
        if self._timer is None:
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def _readline_tolerant(self) -> tuple[str, int]:
        """The next line, or for a line longer than MAX_LINE its start and its length (the rest is dropped)."""
        skipped = 0
        while True:
            i = self._buffer.find(b"\n")
            if i >= 0:
                raw = self._buffer[:i]
                self._buffer = self._buffer[i + 1 :]
                if skipped or len(raw) > MAX_LINE:
                    return decode(raw[:200]) if not skipped else self._head, skipped + len(raw)
                return decode(raw), 0
            if len(self._buffer) > MAX_LINE:
                if not skipped:
                    self._head = decode(self._buffer[:200])
                skipped += len(self._buffer)
                self._buffer = b""
                if skipped > MAX_ENV_BYTES:
                    raise AGIProtocolError(f"line longer than {MAX_ENV_BYTES} bytes")
            if self._eof:
                raise AGIEOFHangup("connection closed by Asterisk" + (" mid-line" if self._buffer else ""))
            await self._wait()

    async def read_env(self) -> AGIEnv:
        """Read the environment block up to the blank line.

        Garbage where the environment starts is refused at once; after that, what is
        out of step (see :class:`EnvParser`) is recorded in ``env.anomalies``, and bytes
        already waiting after the blank line (Asterisk sends nothing before the first
        command) are one more.
        """
        parser = EnvParser()
        while True:
            try:
                line, oversized = await self._readline_tolerant()
            except AGIEOFHangup:
                if parser.env.values or self._buffer:
                    raise AGIProtocolError("connection closed in the middle of the AGI environment") from None
                raise AGIEOFHangup("connection closed by Asterisk before the environment") from None
            if parser.feed(line, oversized):
                break
        self.env = parser.env
        if self._buffer:
            self.env.anomalies.append(f"{len(self._buffer)} bytes arrived before the first command")
        self.in_step = not self.env.anomalies
        return self.env

    async def synchronise(self, fetch: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
        """Bring the stream in step: one ``GET FULL VARIABLE`` with a marker, lines read up to its reply.

        Returns the values of the *fetch* expressions (evaluated by Asterisk on the
        channel, so nothing in the environment can change them) and the lines read
        before the reply: everything Asterisk wrote that was not yet read (the end of
        the environment) and whatever caller text put in between. Raises
        AGIProtocolError when the reply does not come within MAX_ENV_LINES lines.
        """
        if self.hung_up or self.transport is None or self.transport.is_closing():
            self.hung_up = True
            raise AGIEOFHangup("the channel has hung up")
        nonce = new_nonce()
        self.transport.write(sync_command(nonce, fetch))
        drained: list[str] = []
        while True:
            line, oversized = await self._readline_tolerant()
            if not oversized:
                values = parse_sync(line, nonce, len(fetch))
                if values is not None:
                    self.in_step = self.verified = True
                    while drained and drained[-1] == "HANGUP":  # Asterisk's, once the environment was written
                        drained.pop()
                        self.hangup_received = True
                    return values, drained
                if line.startswith("510") and not drained:
                    raise AGIProtocolError("Asterisk does not know GET FULL VARIABLE")
            drained.append(line if not oversized else "\x00oversized")
            if len(drained) > MAX_ENV_LINES:
                raise AGIProtocolError(f"no answer to the synchronisation within {MAX_ENV_LINES} lines")

    async def get_values(self, expressions: tuple[str, ...]) -> list[bytes]:
        """The raw values of *expressions* (line breaks kept) in one ``GET FULL VARIABLE``
        (:func:`asterisk_agi.protocol.values_command`): the reply is read up to its end marker,
        which nothing the values hold can imitate. The stream must be in step."""
        if self.hung_up or self.transport is None or self.transport.is_closing():
            self.hung_up = True
            raise AGIEOFHangup("the channel has hung up")
        nonce = new_nonce()
        self.transport.write(values_command(nonce, expressions))
        reply = ValuesReply(nonce, len(expressions))
        while True:
            i = self._buffer.find(b"\n")
            if i < 0:
                if len(self._buffer) > MAX_LINE:
                    raise AGIProtocolError(f"line longer than {MAX_LINE} bytes")
                if self._eof:
                    raise AGIEOFHangup("connection closed by Asterisk")
                await self._wait()
                continue
            line, self._buffer = self._buffer[: i + 1], self._buffer[i + 1 :]
            values = reply.feed(line)
            self.hangup_received = self.hangup_received or reply.hangup
            if values is not None:
                return values

    # commands

    async def execute(self, name: str, *args: object) -> Reply:
        """Send one command and read its reply (raises AGIHangup, AGICommandError, AGIProtocolError...)."""
        if self.hung_up or self.transport is None or self.transport.is_closing():
            self.hung_up = True
            raise AGIEOFHangup("the channel has hung up")
        self.transport.write(command(name, *args))
        line = await self._readline()
        if line == "200 result=1":  # the common reply, without a parser
            return _OK
        parser = ReplyParser()
        try:
            while True:
                reply = parser.feed(line)
                if reply is not None:
                    return reply
                line = await self._readline()
        except AGIHangup:
            self.hung_up = True
            raise

    async def get_variable(self, name: str) -> str | None:
        """The value of a channel variable or function, or None when it is not set."""
        reply = await self.execute("GET VARIABLE", variable_name(name))
        if reply.value != 1:
            return None
        return reply.data or ""

    async def set_variable(self, name: str, value: str) -> None:
        await self.execute("SET VARIABLE", variable_name(name), value)

    async def set_variables(self, pairs: list[tuple[str, str]]) -> None:
        """SET VARIABLE each pair, whatever stray lines come between the replies.

        A ``HANGUP`` does not stop it: SET VARIABLE works on a dead channel, and a HANGUP
        line may have been written by caller text into a stream not yet proven in step.
        A line that is no reply puts the stream out of step: it is synchronised and the
        variable set again. Raises only when the connection is gone.
        """
        for name, value in pairs:
            for _attempt in range(3):
                if not self.in_step:
                    await self.synchronise()
                if self.hung_up or self.transport is None or self.transport.is_closing():
                    self.hung_up = True
                    raise AGIEOFHangup("the channel has hung up")
                self.transport.write(command("SET VARIABLE", variable_name(name), value))
                line, oversized = await self._readline_tolerant()
                while line == "HANGUP" and not oversized:
                    self.hangup_received = True
                    line, oversized = await self._readline_tolerant()
                if line.startswith("200 ") and not oversized:
                    if not self.verified and b"\n" in self._buffer and not self._buffer.startswith(b"HANGUP\n"):
                        self.in_step = False  # more than one reply to one command
                    break
                self.in_step = False
                self.env.anomalies.append(f"{line[:40]!r} in reply to SET VARIABLE {name}")
            else:
                raise AGIProtocolError(f"no reply to SET VARIABLE {name} after synchronising")

    async def verbose(self, message: str, level: int = 1) -> None:
        await self.execute("VERBOSE", message, Bare(str(int(level))))


_OK = Reply("1")


Handler = Callable[["AsyncAGI", "SessionInfo"], Awaitable[str | None]]


@dataclass(frozen=True)
class SessionInfo:
    """What the server knows about a session besides the AGI environment."""

    peer: str
    #: the Asterisk system name of the peer (agi.peer_systems, else general.system_name)
    system: str


class Router:
    """Handlers by the script name Asterisk calls (``agi://host/NAME``); a name registered twice is an error."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def add(self, name: str, handler: Handler) -> None:
        if not name or "/" in name:
            raise ValueError(f"invalid AGI script name {name!r}")
        if name in self._handlers:
            raise ValueError(f"AGI script {name!r} is registered twice")
        self._handlers[name] = handler

    def route(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add`."""

        def register(handler: Handler) -> Handler:
            self.add(name, handler)
            return handler

        return register

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    @property
    def names(self) -> list[str]:
        return sorted(self._handlers)


class Stats:
    """Counters of the server: sessions, errors, fallbacks, latency."""

    def __init__(self, keep: int = 10_000) -> None:
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.active = 0
        self.latencies: deque[float] = deque(maxlen=keep)
        self.started = time.time()

    def snapshot(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2)

        return {
            "connections": self.counts["connections"],
            "sessions": self.counts["sessions"],
            "active": self.active,
            "errors": self.counts["errors"],
            "fallbacks": self.statuses["fallback"],
            "hangups": self.counts["hangups"],
            "timeouts": self.counts["timeouts"],
            "protocol_errors": self.counts["protocol_errors"],
            "out_of_step": self.counts["out_of_step"],
            "refused": self.counts["refused"],
            "probes": self.counts["probes"],
            "unknown_scripts": self.counts["unknown_scripts"],
            "statuses": dict(self.statuses),
            "latency_ms_p50": pct(0.50),
            "latency_ms_p99": pct(0.99),
            "uptime_s": round(time.time() - self.started, 1),
        }

    def line(self) -> str:
        s = self.snapshot()
        return (
            f"sessions={s['sessions']} active={s['active']} errors={s['errors']} fallbacks={s['fallbacks']} "
            f"hangups={s['hangups']} timeouts={s['timeouts']} protocol_errors={s['protocol_errors']} "
            f"refused={s['refused']} unknown_scripts={s['unknown_scripts']} out_of_step={s['out_of_step']} "
            + (f"p50={s['latency_ms_p50']}ms p99={s['latency_ms_p99']}ms" if s["sessions"] else "no latency yet")
        )


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"listen address must be HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


class PeerPolicy:
    """Which peers may connect (agi.allowed_hosts: addresses or networks) and their system names."""

    def __init__(self, settings: Settings) -> None:
        self.default_system = settings.general.system_name
        self.networks = []
        for entry in settings.agi.allowed_hosts:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ValueError(f"agi.allowed_hosts: {entry!r} is not an address or network") from None
        self.systems: dict[str, str] = {}
        for entry in settings.agi.peer_systems:
            address, sep, name = entry.partition("=")
            if not sep or not address.strip() or not name.strip():
                raise ValueError(f"agi.peer_systems: {entry!r} must be ADDRESS=NAME")
            try:
                key = str(ipaddress.ip_address(address.strip()))
            except ValueError:
                raise ValueError(f"agi.peer_systems: {address.strip()!r} is not an address") from None
            self.systems[key] = name.strip()

    def allowed(self, host: str) -> bool:
        if not self.networks:
            return True
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.networks)

    def system(self, host: str) -> str:
        return self.systems.get(host, self.default_system)


def fallback_variables(settings: Settings) -> list[tuple[str, str]]:
    """What a session gets when no handler could decide (unknown script, a bug)."""
    from tracking.routing import STATUS_FALLBACK, Decision

    return Decision(STATUS_FALLBACK, settings.agi.fallback_dial, settings.agi.fallback_timeout).variables()


class FastAGIServer:
    """Accepts FastAGI connections and runs one handler per session."""

    def __init__(self, settings: Settings, router: Router, *, stats: Stats | None = None) -> None:
        self.settings = settings
        self.router = router
        self.stats = stats or Stats()
        self.policy = PeerPolicy(settings)
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[Any]] = set()

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    def reload(self, settings: Settings) -> None:
        """Take new settings for the sessions that start from now on (the listen address needs a restart)."""
        policy = PeerPolicy(settings)  # raises before anything changes when the new settings are wrong
        if settings.agi.listen != self.settings.agi.listen:
            logger.warning("agi.listen changed to %s: restart to listen there", settings.agi.listen)
        self.settings, self.policy = settings, policy

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on *host*:*port* (0 picks a free port); the bound address."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: AsyncAGI(self.settings.agi.read_timeout, self._accept), host, port, backlog=1024
        )
        sockname = self._server.sockets[0].getsockname()
        logger.info("FastAGI server listening on %s:%s (scripts: %s)", sockname[0], sockname[1], self.router.names)
        return sockname[0], sockname[1]

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let sessions in flight finish (up to *grace* seconds), then cut the rest."""
        if self._server is not None:
            self._server.close()
        grace = self.settings.agi.read_timeout * 2 if grace is None else grace
        pending = set(self._sessions)
        if pending:
            logger.info("FastAGI server stopping: waiting for %d session(s) in flight", len(pending))
            done, pending = await asyncio.wait(pending, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        logger.info("FastAGI server stopped: %s", self.stats.line())

    async def serve(self, stop: asyncio.Event, *, stats_every: float = 60.0) -> None:
        if self._server is None:
            host, port = parse_listen(self.settings.agi.listen)
            await self.start(host, port)
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=stats_every)
                except TimeoutError:
                    logger.info("FastAGI: %s", self.stats.line())
        finally:
            await self.stop()

    def _accept(self, agi: AsyncAGI) -> None:
        if not self.policy.allowed(agi.peer):
            self.stats.counts["refused"] += 1
            logger.warning("FastAGI connection from %s refused: not in agi.allowed_hosts", agi.peer)
            agi.close()
            return
        task = asyncio.get_running_loop().create_task(self._session(agi))
        self._sessions.add(task)
        task.add_done_callback(self._sessions.discard)

    async def _session(self, agi: AsyncAGI) -> None:
        started = time.perf_counter()
        stats = self.stats
        stats.counts["connections"] += 1
        stats.active += 1
        try:
            await self._run(agi, agi.peer, self.settings)
        finally:
            stats.active -= 1
            stats.latencies.append(time.perf_counter() - started)
            agi.close()

    async def _run(self, agi: AsyncAGI, host: str, settings: Settings) -> None:
        stats = self.stats
        try:
            try:
                env = await agi.read_env()
            except AGIEOFHangup:
                if not agi.env.values:  # a port probe: connected, sent nothing, closed
                    stats.counts["probes"] += 1
                    return
                raise
            stats.counts["sessions"] += 1
            handler = self.router.get(env.script)
            if handler is None:
                stats.counts["unknown_scripts"] += 1
                stats.statuses["fallback"] += 1
                logger.error(
                    "FastAGI script %r from %s is unknown (known: %s); routing by fallback",
                    env.script,
                    host,
                    ", ".join(self.router.names),
                )
                await agi.set_variables(fallback_variables(settings))
                return
            status = await handler(agi, SessionInfo(host, self.policy.system(host)))
            if status:
                stats.statuses[status] += 1
            if agi.env.anomalies:
                stats.counts["out_of_step"] += 1
            if agi.hangup_received:
                stats.counts["hangups"] += 1
                logger.info("FastAGI session from %s: caller hung up while the variables were set", host)
        except AGIHangup as exc:
            stats.counts["hangups"] += 1
            logger.info("FastAGI session from %s: caller hung up (%s)", host, exc)
        except AGITimeout as exc:
            stats.counts["timeouts"] += 1
            logger.warning("FastAGI session from %s dropped: %s", host, exc)
        except AGIProtocolError as exc:
            stats.counts["protocol_errors"] += 1
            logger.warning("FastAGI session from %s dropped: %s", host, exc)
        except AGIError as exc:
            stats.counts["errors"] += 1
            logger.error("FastAGI session from %s: Asterisk refused a command: %s", host, exc)
            await self._fallback_after_error(agi, settings)
        except Exception:
            stats.counts["errors"] += 1
            logger.exception("FastAGI session from %s: handler failed; routing by fallback", host)
            await self._fallback_after_error(agi, settings)

    async def _fallback_after_error(self, agi: AsyncAGI, settings: Settings) -> None:
        if agi.hung_up or not agi.env.values:
            return
        self.stats.statuses["fallback"] += 1
        try:
            await agi.set_variables(fallback_variables(settings))
        except (AGIError, OSError) as exc:
            logger.info("could not set the fallback variables: %s", exc)
