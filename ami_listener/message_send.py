"""AMI ``MessageSend``: one text out through Asterisk's PJSIP messaging, one short AMI session.

The body travels as ``Base64Body`` (a ``Body`` header cannot hold a line break: it would
end the AMI header). Asterisk answers ``Message successfully sent`` as soon as it has
queued the MESSAGE, whether or not anyone receives it (it retransmits for 32 s, then
gives up without an event): "sent" is all calltrack can know. Its errors, as Asterisk
22 words them: ``Message failed to send.`` (no such endpoint), ``No 'To' address
specified.``, ``Message technology not found.``; ``Permission denied`` when the manager
user lacks the ``message`` write class.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class MessageSendFailed(Exception):
    """Asterisk could not be reached, refused the login, or refused the text."""


def _secret(server: Any) -> str:
    if server.secret_file:
        try:
            return Path(server.secret_file).read_text().strip()
        except OSError as exc:
            raise MessageSendFailed(
                f"AMI server {server.name!r}: cannot read secret_file {server.secret_file}: {exc.strerror}"
            ) from None
    return str(server.secret)


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
    from panoramisk import Manager

    where = f"AMI server {server.name!r} at {server.host}:{server.port}"
    manager = Manager(
        loop=asyncio.get_running_loop(),
        host=server.host,
        port=server.port,
        username=server.username,
        secret=_secret(server),
        events="off",
        ssl=bool(server.tls),
        ping_delay=3600,
        reconnect_timeout=3600,
    )
    try:
        try:
            await asyncio.wait_for(manager.connect(), timeout)
        except OSError as exc:
            raise MessageSendFailed(f"{where}: cannot connect: {exc.strerror or exc}") from None
        except TimeoutError:
            raise MessageSendFailed(f"{where}: no connection within {timeout:g} s") from None
        login = manager.authenticated_future
        if login is not None:
            try:
                reply = await asyncio.wait_for(asyncio.shield(login), timeout)
            except TimeoutError:
                raise MessageSendFailed(f"{where}: no reply to Login within {timeout:g} s") from None
            if not reply.success:
                raise MessageSendFailed(f"{where}: login refused: {reply.get('Message', 'no reason given')}")
        action: dict[str, Any] = {
            "Action": "MessageSend",
            "Destination": destination,
            "From": from_header,
            "Base64Body": base64.b64encode(body.encode("utf-8")).decode("ascii"),
        }
        if variables:
            action["Variable"] = ",".join(f"{k}={v}" for k, v in variables.items())
        try:
            reply = await asyncio.wait_for(manager.send_action(action), timeout)
        except TimeoutError:
            raise MessageSendFailed(f"{where}: no reply to MessageSend within {timeout:g} s") from None
        message = str(reply.get("Message", "") or "")
        if not reply.success:
            hint = ""
            if message == "Permission denied":
                hint = (
                    f" (the manager user {server.username!r} needs the message write class: "
                    'write = reporting,call,message in manager.conf; README, "Text messages")'
                )
            raise MessageSendFailed(f"{where}: Asterisk refused the text: {message or 'error'}{hint}")
        return message
    finally:
        manager.close()
