"""Pause and resume a call's recording (AMI ``MixMonitorMute``), one action per command.

While a caller reads out card details the agent pauses the recording: MixMonitor
then writes silence, so the archive keeps its length and the timeline stays true.
The action goes to the Asterisk server the call came through ([[ami.servers]]
whose ``name`` is the call's system).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from recorder.errors import RecorderError

logger = logging.getLogger(__name__)

DIRECTIONS = ("both", "read", "write")


class AmiActionFailed(RecorderError):
    """Asterisk could not be reached, refused the login, or refused the action."""


def read_secret(server: Any) -> str:
    if server.secret_file:
        try:
            return Path(server.secret_file).read_text().strip()
        except OSError as exc:
            raise AmiActionFailed(
                f"AMI server {server.name!r}: cannot read secret_file {server.secret_file}: {exc.strerror}"
            ) from None
    return str(server.secret)


async def mixmonitor_mute(server: Any, channel: str, mute: bool, direction: str = "both", timeout: float = 5.0) -> str:
    """Send MixMonitorMute for *channel* to *server* (an AmiServer); returns Asterisk's message."""
    from panoramisk import Manager

    if direction not in DIRECTIONS:
        raise AmiActionFailed(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    where = f"AMI server {server.name!r} at {server.host}:{server.port}"
    manager = Manager(
        loop=asyncio.get_running_loop(),
        host=server.host,
        port=server.port,
        username=server.username,
        secret=read_secret(server),
        events="off",
        ssl=bool(server.tls),
        ping_delay=3600,
        reconnect_timeout=3600,
    )
    try:
        try:
            await asyncio.wait_for(manager.connect(), timeout)
        except OSError as exc:
            raise AmiActionFailed(f"{where}: cannot connect: {exc.strerror or exc}") from None
        except TimeoutError:
            raise AmiActionFailed(f"{where}: no connection within {timeout:g} s") from None
        login = manager.authenticated_future
        if login is not None:
            try:
                reply = await asyncio.wait_for(asyncio.shield(login), timeout)
            except TimeoutError:
                raise AmiActionFailed(f"{where}: no reply to Login within {timeout:g} s") from None
            if not reply.success:
                raise AmiActionFailed(f"{where}: login refused: {reply.get('Message', 'no reason given')}")
        action = {
            "Action": "MixMonitorMute",
            "Channel": channel,
            "Direction": direction,
            "State": "1" if mute else "0",
        }
        try:
            reply = await asyncio.wait_for(manager.send_action(action), timeout)
        except TimeoutError:
            raise AmiActionFailed(f"{where}: no reply to MixMonitorMute within {timeout:g} s") from None
        message = str(reply.get("Message", "") or "")
        if not reply.success:
            hint = ""
            if message == "Permission denied":
                # MixMonitorMute is registered with the system and call classes (app_mixmonitor.c)
                hint = (
                    f" (the manager user {server.username!r} needs the call write class: "
                    'write = reporting,call in manager.conf; README, "AMI listener")'
                )
            raise AmiActionFailed(f"{where}: Asterisk refused MixMonitorMute on {channel}: {message or 'error'}{hint}")
        logger.info("recording on %s %s (%s)", channel, "paused" if mute else "resumed", direction)
        return message
    finally:
        manager.close()


def call_channel(session: Any, call_id: int) -> tuple[str, str]:
    """(system, channel name) of the leg MixMonitor records for *call_id*."""
    from sqlalchemy import select

    from schema.models import Call, CallLeg
    from tracking.errors import NotFound

    call = session.get(Call, call_id)
    if call is None:
        raise NotFound(f"unknown call {call_id} (see `calltrack calls list`)")
    legs = list(session.scalars(select(CallLeg).where(CallLeg.call_id == call_id).order_by(CallLeg.id)))
    leg = next((lg for lg in legs if call.uniqueid and lg.uniqueid == call.uniqueid), None)
    leg = leg or next((lg for lg in legs if lg.role == "inbound" and lg.hungup_at is None), None)
    if leg is None:
        raise AmiActionFailed(f"call {call_id}: its channel is not known yet; give it with --channel")
    if leg.hungup_at is not None or call.ended_at is not None:
        raise AmiActionFailed(f"call {call_id} has ended: there is no recording to pause")
    return call.system, leg.channel
