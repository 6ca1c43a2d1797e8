"""Which channel to pause a call's recording on (the AMI action is `calltrack/ami_action.py`'s).

While a caller reads out card details the agent pauses the recording: MixMonitor
then writes silence, so the archive keeps its length and the timeline stays true.
The action goes to the Asterisk server the call came through ([[ami.servers]]
whose ``name`` is the call's system).
"""

from __future__ import annotations

from typing import Any

from recorder.errors import RecorderError


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
        raise RecorderError(f"call {call_id}: its channel is not known yet; give it with --channel")
    if leg.hungup_at is not None or call.ended_at is not None:
        raise RecorderError(f"call {call_id} has ended: there is no recording to pause")
    return call.system, leg.channel
