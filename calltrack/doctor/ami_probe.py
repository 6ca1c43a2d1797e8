"""One short AMI session that asks Asterisk what the calltrack user may do.

Only actions a minimal manager user may send are used (manager.c, Asterisk 22):
``Login`` and ``ListCommands`` need no right (ListCommands lists exactly the actions
the user's ``write`` classes permit); ``CoreSettings`` and ``ShowDialPlan`` need
``reporting`` (or system/config), which calltrack's CoreShowChannels needs anyway.
``FullyBooted`` follows the Login reply only when the user may read ``system``
events.  ``Command`` (the CLI) is not used: it needs the ``command`` class.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from typing import Any

from ami_listener.parser import Message, StreamParser

LOGIN_ID = "calltrack-doctor-login"


class ProbeFailed(Exception):
    """The session could not be opened or the login was refused; the message says which and why."""

    def __init__(self, stage: str, message: str) -> None:
        self.stage = stage
        super().__init__(message)


@dataclass
class AmiProbe:
    banner: str = ""
    #: FullyBooted arrived after the Login reply (the user reads "system" events)
    fully_booted: bool = False
    #: action name -> its required classes ("reporting,system"), as ListCommands lists them
    actions: dict[str, str] = field(default_factory=dict)
    #: CoreSettings' answer (AsteriskVersion, CoreRunUser, CoreRunGroup, ...), or None
    core_settings: Message | None = None
    #: ShowDialPlan's ListDialplan events, or None when Asterisk refused it
    dialplan: list[Message] | None = None
    dialplan_error: str | None = None
    #: every event seen during the session (a Timestamp header tells timestampevents = yes)
    events: list[Message] = field(default_factory=list)


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.parser = StreamParser()
        self.pending: list[Message] = []
        self.events: list[Message] = []

    async def next(self) -> Message:
        while not self.pending:
            chunk = await asyncio.wait_for(self.reader.read(65536), self.timeout)
            if not chunk:
                raise ConnectionError("Asterisk closed the connection")
            self.pending.extend(self.parser.feed(chunk))
        return self.pending.pop(0)

    def send(self, **headers: str) -> None:
        self.writer.write("".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n")

    async def reply(self, action_id: str) -> Message:
        """The response to *action_id*; events read meanwhile are kept."""
        while True:
            message = await self.next()
            if message.get("ActionID") == action_id and "Response" in message:
                return message
            if "Event" in message:
                self.events.append(message)

    async def listing(self, action_id: str, complete: str) -> tuple[Message, list[Message]]:
        """The response and the events of a list action, until its *complete* event."""
        head = await self.reply(action_id)
        items: list[Message] = []
        if head.get("Response") != "Success":
            return head, items
        while True:
            message = await self.next()
            if message.get("ActionID") != action_id:
                if "Event" in message:
                    self.events.append(message)
                continue
            if message.get("Event") == complete:
                return head, items
            items.append(message)


def _priv(value: Any) -> str:
    text = str(value)
    start = text.rfind("(Priv: ")
    return text[start + 7 : -1] if start >= 0 and text.endswith(")") else ""


async def probe(
    host: str,
    port: int,
    username: str,
    secret: str,
    *,
    tls: bool = False,
    ca_file: str = "",
    timeout: float = 5.0,
    dialplan: bool = True,
) -> AmiProbe:
    """Log in, ask what is allowed, read the settings and the dialplan, log off."""
    context: ssl.SSLContext | None = None
    if tls:
        try:
            context = ssl.create_default_context(cafile=ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ProbeFailed("tls", f"cannot use the CA file {ca_file}: {exc}") from None
    where = f"{'tls://' if tls else ''}{host}:{port}"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host if tls else None), timeout
        )
    except ssl.SSLCertVerificationError as exc:
        raise ProbeFailed("tls", f"{where}: the TLS certificate does not verify ({exc.verify_message})") from None
    except TimeoutError:
        raise ProbeFailed("connect", f"{where}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise ProbeFailed("connect", f"{where}: cannot connect: {exc.strerror or exc}") from None
    result = AmiProbe()
    session = _Session(reader, writer, timeout)
    try:
        banner = await asyncio.wait_for(reader.readline(), timeout)
        result.banner = banner.decode("utf-8", "replace").strip()
        if not result.banner.startswith("Asterisk Call Manager/"):
            raise ProbeFailed("banner", f"{where}: not an Asterisk manager interface (it said {result.banner[:60]!r})")
        session.send(Action="Login", ActionID=LOGIN_ID, Username=username, Secret=secret, Events="on")
        login = await session.reply(LOGIN_ID)
        if login.get("Response") != "Success":
            raise ProbeFailed("login", f"{where}: login as {username!r} refused: {login.get('Message', 'no reason')}")
        # FullyBooted is written right after the Login reply, in the same handler.
        session.send(Action="Ping", ActionID="calltrack-doctor-ping")
        await session.reply("calltrack-doctor-ping")
        result.fully_booted = any(e.get("Event") == "FullyBooted" for e in session.events)
        session.send(Action="ListCommands", ActionID="calltrack-doctor-commands")
        commands = await session.reply("calltrack-doctor-commands")
        skip = {"Response", "ActionID", "Message", "EventList"}
        result.actions = {k: _priv(v) for k, v in commands.items() if k not in skip}
        if "CoreSettings" in result.actions:
            session.send(Action="CoreSettings", ActionID="calltrack-doctor-settings")
            answer = await session.reply("calltrack-doctor-settings")
            result.core_settings = answer if answer.get("Response") == "Success" else None
        if dialplan and "ShowDialPlan" in result.actions:
            session.send(Action="ShowDialPlan", ActionID="calltrack-doctor-dialplan")
            head, items = await session.listing("calltrack-doctor-dialplan", "ShowDialPlanComplete")
            if head.get("Response") == "Success":
                result.dialplan = [i for i in items if i.get("Event") == "ListDialplan"]
            else:
                result.dialplan_error = str(head.get("Message", "refused"))
        session.send(Action="Logoff", ActionID="calltrack-doctor-logoff")
        with contextlib.suppress(Exception):
            await session.reply("calltrack-doctor-logoff")
    except TimeoutError:
        raise ProbeFailed("session", f"{where}: Asterisk stopped answering (no reply within {timeout:g} s)") from None
    except (ConnectionError, ssl.SSLError) as exc:
        raise ProbeFailed("session", f"{where}: the connection was lost: {exc}") from None
    finally:
        result.events = session.events
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return result
