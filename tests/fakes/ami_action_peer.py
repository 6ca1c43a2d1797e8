"""A small fake Asterisk AMI peer for one-shot actions (MixMonitorMute).

It speaks with the real bytes of Asterisk 22 from tests/fixtures/asterisk/ami/ami-answered.txt:
the banner line, the Login reply (its ActionID swapped for the client's) and the
FullyBooted event; an action's reply is built like the recorded StopMixMonitor
reply (``Response: Success`` / ``ActionID``), and errors use Asterisk's own
messages ("Authentication failed", "No such channel").
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RealBytes:
    banner: bytes
    login_reply: bytes
    fully_booted: bytes

    @classmethod
    def load(cls, capture: Path) -> RealBytes:
        raw = capture.read_bytes()
        banner, _, rest = raw.partition(b"\r\n")
        frames = rest.split(b"\r\n\r\n")
        login = next(f for f in frames if f.startswith(b"Response: Success") and b"-login" in f)
        booted = next(f for f in frames if f.startswith(b"Event: FullyBooted"))
        return cls(banner + b"\r\n", login + b"\r\n\r\n", booted + b"\r\n\r\n")


@dataclass
class ActionPeer:
    real: RealBytes
    secret: str = "ctsecret"
    #: channels that have a MixMonitor running
    channels: set[str] = field(default_factory=set)
    #: when False, actions other than Login get no reply at all
    answer_actions: bool = True
    #: the manager user's write classes (manager.conf ``write =``); an action needs one of its own
    write: frozenset[str] = frozenset({"system", "call", "reporting"})
    received: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.AbstractServer | None = None

    async def start(self) -> ActionPeer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.real.banner)
        try:
            while True:
                try:
                    block = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                headers = {}
                for line in block.decode("utf-8", "replace").split("\r\n"):
                    key, sep, value = line.partition(":")
                    if sep:
                        headers[key.strip()] = value.strip()
                self.received.append(headers)
                action = headers.get("Action", "").lower()
                action_id = headers.get("ActionID", "")
                if action == "login":
                    if headers.get("Secret") == self.secret:
                        reply = re.sub(rb"ActionID: [^\r]*", b"ActionID: " + action_id.encode(), self.real.login_reply)
                        writer.write(reply + self.real.fully_booted)
                    else:
                        writer.write(self._reply("Error", action_id, "Authentication failed"))
                elif action == "logoff":
                    writer.write(self._reply("Goodbye", action_id, "Thanks for all the fish."))
                    await writer.drain()
                    return
                elif not self.answer_actions:
                    pass
                elif action == "mixmonitormute" and not self.write & {"system", "call"}:
                    # app_mixmonitor.c registers it with EVENT_FLAG_SYSTEM | EVENT_FLAG_CALL; manager.c
                    # runs an action only when the user's writeperm shares a class with it
                    writer.write(self._reply("Error", action_id, "Permission denied"))
                elif action == "mixmonitormute":
                    if headers.get("Channel") in self.channels:
                        writer.write(self._reply("Success", action_id, None))
                    else:
                        writer.write(self._reply("Error", action_id, "No such channel"))
                else:
                    writer.write(self._reply("Error", action_id, "Invalid/unknown command"))
                await writer.drain()
        finally:
            writer.close()

    @staticmethod
    def _reply(response: str, action_id: str, message: str | None) -> bytes:
        lines = [f"Response: {response}", f"ActionID: {action_id}"]
        if message:
            lines.append(f"Message: {message}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()
