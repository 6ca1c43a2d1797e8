"""One AMI action in a short session of its own: connect, log in, send, read the reply, close.

The commands that ask Asterisk for one thing (`recordings pause/resume`: MixMonitorMute,
`sms send`: MessageSend) share this client; the listener's long-lived session is
`ami_listener/client.py`, the doctor's questions `calltrack/doctor/ami_probe.py`.

MessageSend: the body travels as ``Base64Body`` (a ``Body`` header cannot hold a line
break: it would end the AMI header). Asterisk answers ``Message successfully sent`` as
soon as it has queued the MESSAGE, whether or not anyone receives it (it retransmits for
32 s, then gives up without an event): "sent" is all calltrack can know. Its errors, as
Asterisk 22 words them: ``Message failed to send.`` (no such endpoint), ``No 'To' address
specified.``, ``Message technology not found.``; ``Permission denied`` when the manager
user lacks the ``message`` write class.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path
from typing import Any

from tracking.errors import TrackingError

logger = logging.getLogger(__name__)

DIRECTIONS = ("both", "read", "write")


class AmiActionFailed(TrackingError):
    """Asterisk could not be reached, refused the login, or refused the action."""


class MessageSendFailed(AmiActionFailed):
    """Asterisk could not be reached, refused the login, or refused the text."""


def read_secret(server: Any) -> str:
    if server.secret_file:
        try:
            return Path(server.secret_file).read_text().strip()
        except OSError as exc:
            raise AmiActionFailed(
                f"AMI server {server.name!r}: cannot read secret_file {server.secret_file}: {exc.strerror}"
            ) from None
    return str(server.secret)


async def ami_action(
    server: Any,
    action: dict[str, Any],
    *,
    refused: str,
    write_class: str,
    readme: str,
    timeout: float = 5.0,
    error: type[AmiActionFailed] = AmiActionFailed,
) -> str:
    """Send *action* to *server* (an AmiServer) in a session of its own; Asterisk's message.

    A refusal raises *error* with ``{where}: {refused}: {Asterisk's message}``, and names
    *write_class* (``write = ...`` in manager.conf) and the README's section *readme* when
    Asterisk said ``Permission denied``.
    """
    from panoramisk import Manager

    name = action["Action"]
    where = f"AMI server {server.name!r} at {server.host}:{server.port}"
    try:
        secret = read_secret(server)
    except AmiActionFailed as exc:
        raise error(str(exc)) from None
    manager = Manager(
        loop=asyncio.get_running_loop(),
        host=server.host,
        port=server.port,
        username=server.username,
        secret=secret,
        events="off",
        ssl=bool(server.tls),
        ping_delay=3600,
        reconnect_timeout=3600,
    )
    try:
        try:
            await asyncio.wait_for(manager.connect(), timeout)
        except OSError as exc:
            raise error(f"{where}: cannot connect: {exc.strerror or exc}") from None
        except TimeoutError:
            raise error(f"{where}: no connection within {timeout:g} s") from None
        login = manager.authenticated_future
        if login is not None:
            try:
                reply = await asyncio.wait_for(asyncio.shield(login), timeout)
            except TimeoutError:
                raise error(f"{where}: no reply to Login within {timeout:g} s") from None
            if not reply.success:
                raise error(f"{where}: login refused: {reply.get('Message', 'no reason given')}")
        try:
            reply = await asyncio.wait_for(manager.send_action(action), timeout)
        except TimeoutError:
            raise error(f"{where}: no reply to {name} within {timeout:g} s") from None
        message = str(reply.get("Message", "") or "")
        if not reply.success:
            hint = ""
            if message == "Permission denied":
                hint = (
                    f" (the manager user {server.username!r} needs the {write_class.split(',')[-1]} write class: "
                    f'write = {write_class} in manager.conf; README, "{readme}")'
                )
            raise error(f"{where}: {refused}: {message or 'error'}{hint}")
        return message
    finally:
        manager.close()


async def mixmonitor_mute(server: Any, channel: str, mute: bool, direction: str = "both", timeout: float = 5.0) -> str:
    """Pause (or resume) MixMonitor's recording of *channel*; Asterisk's message.

    MixMonitorMute is registered with the system and call classes (app_mixmonitor.c).
    """
    if direction not in DIRECTIONS:
        raise AmiActionFailed(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    action = {"Action": "MixMonitorMute", "Channel": channel, "Direction": direction, "State": "1" if mute else "0"}
    message = await ami_action(
        server,
        action,
        refused=f"Asterisk refused MixMonitorMute on {channel}",
        write_class="reporting,call",
        readme="AMI listener",
        timeout=timeout,
    )
    logger.info("recording on %s %s (%s)", channel, "paused" if mute else "resumed", direction)
    return message


async def message_send(
    server: Any,
    destination: str,
    from_header: str,
    body: str,
    *,
    variables: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> str:
    """Send *body* to *destination* from *from_header* through *server* (an AmiServer); Asterisk's message."""
    action: dict[str, Any] = {
        "Action": "MessageSend",
        "Destination": destination,
        "From": from_header,
        "Base64Body": base64.b64encode(body.encode("utf-8")).decode("ascii"),
    }
    if variables:
        action["Variable"] = ",".join(f"{k}={v}" for k, v in variables.items())
    return await ami_action(
        server,
        action,
        refused="Asterisk refused the text",
        write_class="reporting,call,message",
        readme="Text messages",
        timeout=timeout,
        error=MessageSendFailed,
    )
