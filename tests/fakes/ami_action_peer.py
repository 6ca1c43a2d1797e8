"""A small fake Asterisk AMI peer for one-shot actions (MixMonitorMute, MessageSend).

It speaks with the real bytes of Asterisk 22 from tests/fixtures/asterisk/ami/ami-answered.txt:
the banner line, the Login reply (its ActionID swapped for the client's) and the
FullyBooted event; an action's reply is built like the recorded StopMixMonitor
reply (``Response: Success`` / ``ActionID``), and errors use Asterisk's own
messages ("Authentication failed", "No such channel").

``MessageSend`` is answered as Asterisk 22 did in tests/fixtures/asterisk/pjsip/ami-sms-out.txt
(the recorded reply frames, their ActionID swapped): "Message successfully sent" for a
``pjsip:`` destination whose endpoint exists (the dialstring form ``pjsip:PJSIP/user@endpoint``
included), "Message failed to send." for an unknown endpoint, "No 'To' address specified.",
"Message technology not found." for another technology; the class ``message`` is needed.
A text sent is kept in :attr:`ActionPeer.delivered` as the endpoint receives it
(tests/fixtures/asterisk/pjsip/sipp-sms-out-uas.msg): Request-URI, From, the decoded body.
"""

from __future__ import annotations

import asyncio
import base64
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
    #: PJSIP endpoints and their contacts (MessageSend)
    endpoints: dict[str, str] = field(default_factory=lambda: {"agent100": "sip:agent100@127.0.0.1:5081"})
    #: the MessageSend replies of the recording, by outcome (see load_message_replies)
    message_replies: dict[str, bytes] = field(default_factory=dict)
    #: texts Asterisk queued: {"request_uri", "from", "to", "body", "headers"}
    delivered: list[dict[str, object]] = field(default_factory=list)
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
                elif action == "messagesend" and not self.write & {"message"}:
                    writer.write(self._reply("Error", action_id, "Permission denied"))
                elif action == "messagesend":
                    writer.write(self._message_send(headers, action_id))
                else:
                    writer.write(self._reply("Error", action_id, "Invalid/unknown command"))
                await writer.drain()
        finally:
            writer.close()

    def _message_send(self, headers: dict[str, str], action_id: str) -> bytes:
        def recorded(outcome: str, message: str) -> bytes:
            frame = self.message_replies.get(outcome)
            if frame is None:
                return self._reply("Success" if outcome == "success" else "Error", action_id, message)
            return re.sub(rb"ActionID: [^\r]*", b"ActionID: " + action_id.encode(), frame)

        target = headers.get("Destination") or headers.get("To")
        if not target:
            return recorded("no-to", "No 'To' address specified.")
        tech, sep, rest = target.partition(":")
        if not sep or tech.lower() != "pjsip":
            return recorded("no-tech", "Message technology not found.")
        m = re.fullmatch(r"PJSIP/([^@]+)@(.+)", rest)
        endpoint, user = (m.group(2), m.group(1)) if m else (rest.split("/", 1)[0].split("@", 1)[0], None)
        contact = self.endpoints.get(endpoint)
        if contact is None:
            return recorded("failed", "Message failed to send.")
        if user is not None:  # the contact's user replaced by the dialstring's (res_pjsip_messaging)
            contact = re.sub(r"sip:([^@]*@)?", f"sip:{user}@", contact, count=1)
        if "Base64Body" in headers:
            body = base64.b64decode(headers["Base64Body"]).decode("utf-8", "replace")
        else:
            body = headers.get("Body", "")
        extra = dict(pair.split("=", 1) for pair in headers.get("Variable", "").split(",") if "=" in pair)
        self.delivered.append(
            {
                "request_uri": contact,
                "from": headers.get("From", ""),
                "to": headers.get("To"),
                "body": body,
                "headers": extra,
            }
        )
        return recorded("success", "Message successfully sent")

    @staticmethod
    def _reply(response: str, action_id: str, message: str | None) -> bytes:
        lines = [f"Response: {response}", f"ActionID: {action_id}"]
        if message:
            lines.append(f"Message: {message}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


def load_message_replies(capture: Path) -> dict[str, bytes]:
    """The MessageSend reply frames of tests/fixtures/asterisk/pjsip/ami-sms-out.txt, by outcome."""
    frames = capture.read_bytes().split(b"\r\n\r\n")
    by_id = {
        "ms-1-body": "success",
        "ms-4-unknown-endpoint": "failed",
        "ms-5-missing-to": "no-to",
        "ms-6-unknown-tech": "no-tech",
    }
    out: dict[str, bytes] = {}
    for frame in frames:
        m = re.search(rb"ActionID: ([^\r]*)", frame)
        if frame.startswith(b"Response: ") and m and m.group(1).decode() in by_id:
            out[by_id[m.group(1).decode()]] = frame + b"\r\n\r\n"
    return out
