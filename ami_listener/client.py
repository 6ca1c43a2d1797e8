"""The AMI connection: panoramisk's protocol and actions, with its weak spots covered.

What panoramisk gives: :class:`panoramisk.ami_protocol.AMIProtocol` (the
asyncio protocol, actions as futures keyed by ActionID, list responses gathered
until their ``...Complete`` event) and :class:`panoramisk.actions.Action`.
What this module changes:

* ``data_received`` uses :mod:`ami_listener.parser` on bytes, so a UTF-8
  caller name split across two reads arrives whole and malformed frames are
  logged and skipped instead of dropping the connection;
* events are handed to the sink synchronously, in order, in the same call:
  no fire-and-forget callback task whose exception would vanish;
* an action reply that panoramisk's bookkeeping chokes on fails that action's
  future only, never the connection;
* the supervisor reconnects with exponential backoff and jitter, says clearly
  when a login is refused (naming the server), and resynchronises with
  ``CoreShowChannels`` after every (re)connect and on ``FullyBooted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message as PanoMessage

from ami_listener.correlator import CONNECTION_LOST, RESYNC_PREFIX
from ami_listener.parser import Message, StreamParser

logger = logging.getLogger(__name__)


class LoginRefused(Exception):
    """Asterisk answered the Login action with an error."""


class ListenerProtocol(AMIProtocol):
    """panoramisk's AMI protocol reading with calltrack's parser."""

    def __init__(self, name: str, on_message: Callable[[Message, float], None]) -> None:
        super().__init__()
        self.name = name
        self.on_message = on_message
        self.parser = StreamParser()
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.fully_booted: Callable[[], None] | None = None
        #: when Asterisk last sent anything (an event, a reply to Ping)
        self.last_heard = 0.0
        #: set by any data from Asterisk while the watchdog waits for a sign of life
        self.heard: asyncio.Event | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.log = logger

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.last_heard = now
        if self.heard is not None:
            self.heard.set()
        for message in self.parser.feed(data):
            self.handle(message, now)
        if self.parser.problems:
            for problem in self.parser.take_problems():
                logger.warning("AMI %s: malformed input skipped: %s", self.name, problem)

    def handle(self, message: Message, now: float) -> None:
        action_id = message.get("ActionID")
        if isinstance(action_id, str) and action_id in self.responses:
            action = self.responses[action_id]
            try:
                if action.add_message(PanoMessage({k: v for k, v in message.items()})):
                    self.responses.pop(action_id, None)
            except Exception as exc:  # a reply panoramisk cannot digest fails that action only
                logger.warning("AMI %s: unexpected reply to %s: %s", self.name, action_id, exc)
                self.responses.pop(action_id, None)
                if not action.future.done():
                    action.future.set_exception(exc)
        event = message.get("Event")
        if event is not None or (isinstance(action_id, str) and action_id.startswith(RESYNC_PREFIX)):
            self.on_message(message, now)
        if event == "FullyBooted" and self.fully_booted is not None:
            self.fully_booted()
        elif event == "Shutdown":
            logger.warning("AMI %s: Asterisk is shutting down (%s)", self.name, message.get("Shutdown", ""))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        for action in list(self.responses.values()):
            if not action.future.done():
                action.future.set_exception(ConnectionError("AMI connection lost"))
        self.responses.clear()
        if not self.lost.done():
            self.lost.set_result(exc)


def backoff(attempt: int, *, base: float = 0.5, cap: float = 60.0, rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect *attempt* (0-based): exponential, capped, with jitter.

    Half the delay is fixed and half random ("equal jitter"), so many listeners
    restarted together do not reconnect in step, and none waits less than half.
    """
    delay = min(cap, base * (2 ** min(attempt, 30)))
    return delay / 2 + (rng or random).uniform(0, delay / 2)


def read_secret(secret: str, secret_file: str) -> str:
    if secret_file:
        return Path(secret_file).read_text(encoding="utf-8").strip()
    return secret


class AmiClient:
    """One Asterisk server: connect, log in, resync, read; again after any loss."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        username: str,
        secret: str,
        on_message: Callable[[Message, float], None],
        *,
        new_connection: Callable[[str], None] = lambda _: None,
        tls: bool = False,
        ca_file: str = "",
        ssl_context: ssl.SSLContext | None = None,
        reconnect_min: float = 0.5,
        reconnect_max: float = 60.0,
        timeout: float = 10.0,
        ping_interval: float = 20.0,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.username = username
        self.secret = secret
        self.on_message = on_message
        self.new_connection = new_connection
        if ssl_context is None and tls:
            ssl_context = ssl.create_default_context(cafile=ca_file or None)
        self.ssl_context = ssl_context
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.connections = 0
        self.logins = 0
        self.resyncs = 0
        self.login_failures = 0
        self.last_error: str | None = None
        self.protocol: ListenerProtocol | None = None
        self._rng = random.Random()
        self._resync_n = 0

    @property
    def where(self) -> str:
        return f"{self.name!r} at {self.host}:{self.port}"

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                logged_in = await self._session(stop)
                if logged_in:
                    attempt = 0
                if stop.is_set():
                    return
                logger.warning("AMI server %s: connection lost; reconnecting", self.where)
            except LoginRefused as exc:
                self.login_failures += 1
                self.last_error = f"login refused for user {self.username!r}: {exc}"
                logger.error(
                    "AMI server %s refused the login of user %r: %s (check the username and secret in "
                    "manager.conf and calltrack's settings); retrying",
                    self.where,
                    self.username,
                    exc,
                )
            except (TimeoutError, OSError, ConnectionError) as exc:
                self.last_error = f"cannot connect: {exc or type(exc).__name__}"
                logger.warning("AMI server %s: cannot connect: %s", self.where, exc or type(exc).__name__)
            delay = backoff(attempt, base=self.reconnect_min, cap=self.reconnect_max, rng=self._rng)
            attempt += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _session(self, stop: asyncio.Event) -> bool:
        loop = asyncio.get_running_loop()
        connection_id = f"{int(time.time() * 1000):x}-{secrets.token_hex(4)}"
        self.new_connection(connection_id)
        transport, protocol = await asyncio.wait_for(
            loop.create_connection(
                lambda: ListenerProtocol(self.name, self.on_message),
                self.host,
                self.port,
                ssl=self.ssl_context,
                server_hostname=self.host if self.ssl_context else None,
            ),
            self.timeout,
        )
        self.connections += 1
        self.protocol = protocol
        logged_in = False
        tasks: set[asyncio.Task[Any]] = set()
        try:
            reply = await asyncio.wait_for(
                protocol.send(
                    Action({"Action": "Login", "Username": self.username, "Secret": self.secret, "Events": "on"})
                ),
                self.timeout,
            )
            if reply.get("Response") != "Success":
                raise LoginRefused(reply.get("Message") or reply.get("Response") or "no reason given")
            logged_in = True
            self.logins += 1
            logger.info("AMI server %s: logged in as %r", self.where, self.username)

            def resync_soon() -> None:
                task = asyncio.ensure_future(self._resync(protocol))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

            protocol.fully_booted = resync_soon
            resync_soon()
            stopper = asyncio.ensure_future(stop.wait())
            pinger = asyncio.ensure_future(self._ping(protocol))
            waits: set[asyncio.Future[Any]] = {protocol.lost, stopper, pinger}
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                pinger.cancel()
            if stop.is_set() and not protocol.lost.done():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(protocol.send(Action({"Action": "Logoff"})), 1.0)
        finally:
            for task in list(tasks):
                task.cancel()
            transport.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(protocol.lost), 1.0)
            self.protocol = None
            if logged_in:
                # stored with the events: until then Asterisk was heard, so calls still open were alive
                # (a call found gone at the next resync is closed then, not when calltrack came back)
                heard = f"{protocol.last_heard:.6f}"
                reason = "stopped" if stop.is_set() else "lost"
                self.on_message(
                    {"Event": CONNECTION_LOST, "Timestamp": heard, "Server": self.name, "LastHeard": heard,
                     "Reason": reason},
                    time.time(),
                )  # fmt: skip
        return logged_in

    async def _resync(self, protocol: ListenerProtocol) -> None:
        """Ask for the live channels; the correlator reads the answer from the event stream."""
        if protocol.closed:
            return
        self._resync_n += 1
        action_id = f"{RESYNC_PREFIX}{secrets.token_hex(4)}-{self._resync_n}"
        try:
            await asyncio.wait_for(
                protocol.send(Action({"Action": "CoreShowChannels", "ActionID": action_id}), as_list=True),
                self.timeout * 3,
            )
            self.resyncs += 1
            logger.info("AMI server %s: resynchronised with the live channels", self.where)
        except (TimeoutError, ConnectionError) as exc:
            logger.warning("AMI server %s: resynchronisation did not complete: %s", self.where, exc)

    async def _ping(self, protocol: ListenerProtocol) -> None:
        """A connection on which nothing arrives is dead even if TCP says nothing.

        Anything Asterisk sends is a sign of life, not only the answer to Ping: on a busy server
        the Pong queues behind thousands of events, and waiting for it alone would call a
        connection dead in the middle of a burst.  So Ping is sent only after *ping_interval*
        seconds of silence, and the connection is dropped when nothing at all arrives within
        *timeout* seconds of it.
        """
        while not protocol.closed:
            await asyncio.sleep(max(0.0, protocol.last_heard + self.ping_interval - time.time()))
            if protocol.closed:
                return
            if time.time() - protocol.last_heard < self.ping_interval:
                continue  # heard from meanwhile
            protocol.heard = heard = asyncio.Event()
            ping = asyncio.ensure_future(protocol.send(Action({"Action": "Ping"})))
            ping.add_done_callback(_ignore_result)
            try:
                await asyncio.wait_for(heard.wait(), self.timeout)
            except TimeoutError:
                logger.warning("AMI server %s: nothing heard %g s after a Ping; reconnecting", self.where, self.timeout)
                protocol.transport.abort()
                return
            finally:
                protocol.heard = None


def _ignore_result(future: asyncio.Future[Any]) -> None:
    """The Pong itself does not matter (any data counts); its failure at a disconnect is not news."""
    if not future.cancelled():
        future.exception()
