"""From raw AMI events to calls: pure interpretation, no I/O and no clock.

Events go in in arrival order (:meth:`Correlator.feed`); call snapshots come out
(:meth:`Correlator.take_changed`).  The same events always give the same calls,
which is what lets ``calltrack calls rebuild`` regenerate them from
``ami_events`` and makes a database outage invisible in the result.

* Channels are grouped by ``Linkedid``; when a channel turns up under a second
  linkedid (an attended transfer, a channel moved by a bridge), the two groups
  are merged into the call that started first.
* Each event type is interpreted by one function of :data:`DISPATCH`.
* A call is closed when every one of its legs has hung up.  After a reconnect,
  the listener asks Asterisk for its live channels (``CoreShowChannels``); a leg
  that Asterisk no longer has is ended at the time of that answer, and its call
  is closed with a ``lost`` line in the timeline saying why.
* Times come from the event's ``Timestamp`` header when Asterisk sends one
  (``timestampevents = yes``), else from the time the listener received it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ami_listener.parser import unescape

#: answered, missed, busy, abandoned, failed
DISPOSITIONS = ("answered", "missed", "busy", "abandoned", "failed")
#: the ActionID prefix of the listener's resynchronisation requests
RESYNC_PREFIX = "calltrack-resync-"
#: the channel Asterisk runs texts on (``Message/ast_msg_queue``): one for every text, never hung up
MESSAGE_CHANNEL = "Message/"
#: the event the listener stores when a connection ends (``LastHeard``: when Asterisk last sent anything)
CONNECTION_LOST = "CalltrackConnectionLost"
_UNKNOWN = {"", "<unknown>", "unknown"}
_CHANNEL_SUFFIX = re.compile(r"-[0-9a-fA-F]+(;[12])?$")


class RawEvent(NamedTuple):
    """One stored AMI message: arrival order, arrival time (UTC), headers."""

    seq: int
    received_at: dt.datetime
    payload: dict[str, Any]


@dataclass
class Leg:
    uniqueid: str
    channel: str
    role: str = "other"
    caller_number: str | None = None
    caller_name: str | None = None
    exten: str | None = None
    context: str | None = None
    created_at: dt.datetime | None = None
    answered_at: dt.datetime | None = None
    hungup_at: dt.datetime | None = None
    hangup_cause: int | None = None
    last_seq: int = 0


@dataclass
class TimelineEntry:
    at: dt.datetime
    kind: str
    detail: dict[str, Any]


@dataclass
class CallState:
    linkedid: str
    first_seq: int
    linkedids: set[str] = field(default_factory=set)
    legs: dict[str, Leg] = field(default_factory=dict)
    timeline: list[TimelineEntry] = field(default_factory=list)
    dialplan_uid: str | None = None
    caller_number: str | None = None
    caller_name: str | None = None
    dialled: str | None = None
    started_at: dt.datetime | None = None
    ringing_at: dt.datetime | None = None
    dial_end_at: dt.datetime | None = None
    answered_at: dt.datetime | None = None
    answered_uid: str | None = None
    answered_by: str | None = None
    answered_exten: str | None = None
    talk_end_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    dial_status: str | None = None
    caller_hung_up_first: bool | None = None
    hangup_cause: int | None = None
    recording: str | None = None
    transfers: int = 0
    #: a transfer succeeded: the caller talks on after the agent who answered has left
    transferred: bool = False
    #: who the caller was transferred to: the channel that answered after it, else the target
    transferred_to: str | None = None
    #: when the caller's side (an inbound leg) first hung up after the answer
    caller_left_at: dt.datetime | None = None
    connected: str | None = None
    #: answers inside the call (a Local channel's own Dial): dialling uniqueid -> the channel that answered
    inner_answers: dict[str, str] = field(default_factory=dict)
    lost: str | None = None
    #: the route set CALLTRACK_STATUS=blocked
    blocked: bool = False
    closed: bool = False
    #: the time of the latest event that named one of the call's channels
    last_at: dt.datetime | None = None
    #: how its end was known: None from the events themselves; "estimated" (closed at the last moment it
    #: was known alive, its channels gone while calltrack was not looking); "cdr" (Asterisk's own records)
    times_source: str | None = None
    #: what the channel pairing said when the call was forgotten (a late CDR may correct it after that)
    frozen_uid: str | None = None
    frozen_answering: frozenset[str | None] | None = None


@dataclass(frozen=True)
class CallSnapshot:
    """What the correlator knows of one call; ``closed`` once every leg hung up."""

    linkedid: str
    closed: bool
    values: dict[str, Any]
    legs: tuple[dict[str, Any], ...]
    timeline: tuple[dict[str, Any], ...]
    #: set when this call turned out to be part of another (an attended transfer's consultation):
    #: its own row, if one was written while it looked separate, is to be removed
    merged_into: str | None = None


def _clean(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return None if value in _UNKNOWN else value


def _name(value: Any) -> str | None:
    """A name or value AMI sent C-escaped (see :func:`ami_listener.parser.unescape`), as Asterisk holds it."""
    if not isinstance(value, str):
        return None
    return _clean(unescape(value))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def channel_base(channel: str) -> str:
    """``PJSIP/100-0000000a`` -> ``PJSIP/100``; ``Local/100@agents-00000001;1`` -> ``Local/100@agents``."""
    return _CHANNEL_SUFFIX.sub("", channel)


def channel_exten(channel: str) -> str | None:
    """The extension or peer named by a channel: ``PJSIP/100-...`` and ``Local/100@agents-...`` give ``100``."""
    base = channel_base(channel)
    _, _, resource = base.partition("/")
    resource = resource.partition("@")[0]
    return resource or None


def _seconds(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    if a is None or b is None:
        return None
    return round(max((b - a).total_seconds(), 0.0), 3)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _naive(value: Any) -> dt.datetime | None:
    """A CDR time, ``YYYY-MM-DD HH:MM:SS`` in Asterisk's local time (cdr_csv, cdr_manager); None when empty."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return dt.datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None


def _cdr_time(value: Any, offset: dt.timedelta) -> dt.datetime | None:
    local = _naive(value)
    return None if local is None else (local - offset).replace(tzinfo=dt.UTC)


def _whole_offset(diff: dt.timedelta, tolerance: dt.timedelta) -> dt.timedelta | None:
    """*diff* as a time-zone offset (a whole number of quarter hours, at most 14 h), if it is one within *tolerance*."""
    quarter = 900
    seconds = diff.total_seconds()
    offset = round(seconds / quarter) * quarter
    if abs(offset) > 14 * 3600 or abs(seconds - offset) > tolerance.total_seconds():
        return None
    return dt.timedelta(seconds=offset)


def _parse_duration(value: Any) -> float:
    """``HH:MM:SS`` (CoreShowChannel's Duration) as seconds; 0 when unreadable."""
    if not isinstance(value, str):
        return 0.0
    try:
        parts = [int(p) for p in value.split(":")]
    except ValueError:
        return 0.0
    total = 0
    for part in parts:
        total = total * 60 + part
    return float(total)


class Correlator:
    """Turns one Asterisk system's events into calls.  Feed events in arrival order."""

    #: how many recently closed linkedids are remembered to ignore their late events
    CLOSED_MEMORY = 20_000

    def __init__(self, normalize_number: Callable[[str], str | None] | None = None) -> None:
        self._normalize = normalize_number or (lambda raw: None)
        self.calls_by_linkedid: dict[str, CallState] = {}
        self.calls_by_channel: dict[str, CallState] = {}
        self._partners: dict[str, str] = {}
        self._local_halves: dict[str, str] = {}
        self._changed: dict[int, CallState] = {}
        self._merged: list[tuple[str, str]] = []
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._resync: dict[str, tuple[int, set[str]]] = {}
        self._booted_at: dt.datetime | None = None
        self._uptime: float | None = None
        #: the latest event time seen, and the last moment the previous connection was heard from
        self._latest: dt.datetime | None = None
        self._heard: dt.datetime | None = None
        #: when this connection began, the last moment Asterisk was known to be heard (see on_fullybooted)
        self._alive_until: dt.datetime | None = None
        #: legs closed at a resync by estimate, by uniqueid and by channel, for Asterisk's CDRs to correct
        self._lost_legs: OrderedDict[str, tuple[CallState, Leg, dt.datetime]] = OrderedDict()
        self._lost_channels: dict[str, list[str]] = {}
        self._lost_taken: list[dict[str, Any]] = []
        #: Asterisk's local time minus UTC, as its CDR times show it (learnt from the CDRs themselves)
        self._cdr_offset: dt.timedelta | None = None
        #: the text the Message channel runs now (its CALLTRACK_SMS_ID once the sms handler set it, and
        #: whether it has a destination), and the forwards' outcomes not yet taken (see on_message_channel)
        self._text_id: str | None = None
        self._text_dest = False
        self._forwards: list[tuple[int, str]] = []
        self.last_seq = 0
        self.events_seen = 0

    # -- input -----------------------------------------------------------------

    def feed_many(self, events: Iterable[RawEvent]) -> None:
        for event in events:
            self.feed(event)

    def feed(self, event: RawEvent) -> None:
        """Interpret one event; an event already seen (by seq) is ignored."""
        if event.seq <= self.last_seq:
            return
        self.last_seq = event.seq
        self.events_seen += 1
        payload = event.payload
        name = payload.get("Event")
        if name is None:
            action_id = payload.get("ActionID")
            if isinstance(action_id, str) and action_id.startswith(RESYNC_PREFIX):
                self._resync.setdefault(action_id, (event.seq, set()))
            return
        handler = DISPATCH.get(name)
        channel = payload.get("Channel")
        if isinstance(channel, str) and channel.startswith(MESSAGE_CHANNEL):
            # Asterisk's Message channel runs the dialplan of every text (PJSIP messaging) and is
            # never hung up: it is no call. Texts are tracked by the sms AGI handler; the raw
            # events stay stored, and what MessageSend said of a forward is kept for the text.
            if name == "VarSet":
                self.on_message_channel(str(payload.get("Variable", "")), str(payload.get("Value", "")))
            return
        stamp = payload.get("Timestamp")
        at = event.received_at
        if stamp:
            try:
                at = dt.datetime.fromtimestamp(float(stamp), dt.UTC)
            except (TypeError, ValueError, OverflowError):
                pass
        if handler is not None:
            handler(self, payload, at, event.seq)
        if self._latest is None or at > self._latest:
            self._latest = at

    def on_message_channel(self, variable: str, value: str) -> None:
        """The variables of a text's dialplan (config/samples/asterisk/extensions_calltrack_sms.conf).

        Asterisk runs one text at a time on its Message channel: the sample context clears
        CALLTRACK_SMS_DEST first, the sms handler sets CALLTRACK_SMS_ID and the destination, and
        MessageSend then sets MESSAGE_SEND_STATUS (SUCCESS, FAILURE, INVALID_URI,
        INVALID_PROTOCOL). The first status after a destination is the forward's; a later one
        (the answer to STOP or HELP), or one with no text id (calltrack did not answer), is not.
        """
        if variable == "CALLTRACK_SMS_DEST":
            if value:
                self._text_dest = True
            else:  # the start of the next text
                self._text_id, self._text_dest = None, False
        elif variable == "CALLTRACK_SMS_ID":
            self._text_id = value if value.isdigit() else None
        elif variable == "MESSAGE_SEND_STATUS":
            if self._text_id is not None and self._text_dest:
                self._forwards.append((int(self._text_id), value))
            self._text_id, self._text_dest = None, False

    # -- output ----------------------------------------------------------------

    def take_forwards(self) -> list[tuple[int, str]]:
        """(text id, MESSAGE_SEND_STATUS) of the texts forwarded since the last call."""
        out, self._forwards = self._forwards, []
        return out

    def take_changed(self) -> list[CallSnapshot]:
        """Snapshots of the calls changed since the last call; closed calls are then forgotten."""
        out = [CallSnapshot(gone, True, {}, (), (), merged_into=keep) for gone, keep in self._merged]
        self._merged.clear()
        for call in self._changed.values():
            if call.dialled is not None and call.started_at is not None:
                out.append(self._snapshot(call))
            if call.closed:
                self._forget(call)
        self._changed.clear()
        return out

    def take_lost(self) -> list[dict[str, Any]]:
        """Legs closed by estimate since the last call (channel, uniqueid, created, estimated end).

        The listener looks them up in Asterisk's CDR file and feeds what it finds back as ``Cdr``
        events, which correct these calls (see :meth:`on_cdr`).
        """
        out, self._lost_taken = self._lost_taken, []
        return out

    def open_calls(self) -> list[str]:
        return sorted({c.linkedid for c in self.calls_by_linkedid.values() if not c.closed})

    def unsettled(self, horizon: dt.timedelta = dt.timedelta(minutes=2)) -> frozenset[str]:
        """Linkedids of calls still open and not answered (ringing, in the dialplan) with an event within *horizon*.

        Times are the events' own: *horizon* counts back from the latest event of any call, so
        a channel that never hangs up (Asterisk's Message channel) does not count forever.
        """
        calls = {id(c): c for c in self.calls_by_linkedid.values()}.values()
        latest = max((c.last_at for c in calls if c.last_at is not None), default=None)
        if latest is None:
            return frozenset()
        return frozenset(
            c.linkedid
            for c in calls
            if not c.closed
            and c.dialled is not None
            and _answered_at(c) is None
            and c.last_at is not None
            and latest - c.last_at <= horizon
        )

    # -- grouping --------------------------------------------------------------

    def _call_for(self, uniqueid: str | None, linkedid: str | None, seq: int, create: bool = True) -> CallState | None:
        by_chan = self.calls_by_channel.get(uniqueid) if uniqueid else None
        by_link = self.calls_by_linkedid.get(linkedid) if linkedid else None
        if by_chan is not None and by_link is not None and by_chan is not by_link:
            return self._merge(by_chan, by_link)
        call = by_chan or by_link
        if call is None:
            if not create or not linkedid or linkedid in self._closed:
                return None
            call = CallState(linkedid=linkedid, first_seq=seq)
            call.linkedids.add(linkedid)
            self.calls_by_linkedid[linkedid] = call
        elif linkedid and linkedid not in call.linkedids and linkedid not in self._closed:
            call.linkedids.add(linkedid)
            self.calls_by_linkedid[linkedid] = call
        return call

    def _merge(self, a: CallState, b: CallState) -> CallState:
        """Two groups share a channel: the call that started first absorbs the other."""
        keep, gone = (a, b) if a.first_seq <= b.first_seq else (b, a)
        for uid, leg in gone.legs.items():
            if uid not in keep.legs:
                if leg.role == "inbound":  # the consultation's own caller is the agent, not ours
                    leg.role = "agent"
                keep.legs[uid] = leg
            self.calls_by_channel[uid] = keep
        for lid in gone.linkedids:
            keep.linkedids.add(lid)
            self.calls_by_linkedid[lid] = keep
        keep.timeline.extend(gone.timeline)
        keep.timeline.sort(key=lambda e: e.at)
        keep.transfers += gone.transfers
        keep.transferred = keep.transferred or gone.transferred
        keep.transferred_to = keep.transferred_to or gone.transferred_to
        if gone.ended_at and (keep.ended_at is None or gone.ended_at > keep.ended_at):
            keep.ended_at = gone.ended_at
        keep.closed = False
        keep.timeline.append(TimelineEntry(keep.timeline[-1].at, "merged", {"linkedid": gone.linkedid}))
        self._changed.pop(id(gone), None)
        self._changed[id(keep)] = keep
        self._merged.append((gone.linkedid, keep.linkedid))
        return keep

    def _answering(self, call: CallState) -> frozenset[str | None]:
        """The channels that answered: the dialled one and its Local partner."""
        if call.frozen_answering is not None:
            return call.frozen_answering
        return frozenset({call.answered_uid, self._partners.get(call.answered_uid or "")})

    def _route_uid(self, call: CallState) -> str:
        """The channel that ran the dialplan (AGI, MixMonitor, the main Cdr use its uniqueid)."""
        if call.frozen_uid is not None:
            return call.frozen_uid
        return call.dialplan_uid or self._partners.get(call.linkedid) or call.linkedid

    def _forget(self, call: CallState) -> None:
        call.frozen_uid = self._route_uid(call)
        call.frozen_answering = self._answering(call)
        for uid in call.legs:
            if self.calls_by_channel.get(uid) is call:
                del self.calls_by_channel[uid]
            self._partners.pop(uid, None)
        for lid in call.linkedids:
            if self.calls_by_linkedid.get(lid) is call:
                del self.calls_by_linkedid[lid]
            self._closed[lid] = None
        while len(self._closed) > self.CLOSED_MEMORY:
            self._closed.popitem(last=False)

    def _leg(self, call: CallState, p: dict[str, Any], at: dt.datetime, seq: int, prefix: str = "") -> Leg | None:
        uid = p.get(prefix + "Uniqueid")
        if not isinstance(uid, str) or not uid:
            return None
        leg = call.legs.get(uid)
        if leg is None:
            channel = p.get(prefix + "Channel") or ""
            leg = Leg(uniqueid=uid, channel=channel, created_at=at)
            call.legs[uid] = leg
            self.calls_by_channel[uid] = call
            self._pair_local(uid, channel)
            if uid == call.linkedid or (call.dialplan_uid is None and len(call.legs) == 1):
                leg.role = "inbound"
            elif self._partners.get(uid) in call.legs and call.legs[self._partners[uid]].role == "inbound":
                leg.role = "inbound"
            if call.started_at is None or at < call.started_at:
                call.started_at = at
            exten = _clean(p.get(prefix + "Exten"))
            leg.exten = exten
            leg.context = _clean(p.get(prefix + "Context"))
            self._take_caller(call, leg, p, prefix)
            if leg.role == "inbound" and call.dialled is None and exten and exten != "s":
                call.dialled = exten
        leg.last_seq = seq
        if call.last_at is None or at > call.last_at:
            call.last_at = at
        return leg

    def _pair_local(self, uid: str, channel: str) -> None:
        if channel.startswith("Local/") and channel[-2:] in (";1", ";2"):
            base = channel[:-2]
            other = self._local_halves.pop(base, None)
            if other is None:
                self._local_halves[base] = uid
            else:
                self._partners[uid] = other
                self._partners[other] = uid
            if len(self._local_halves) > 10_000:  # halves whose partner never came
                self._local_halves.clear()

    def _inbound_side(self, call: CallState, uid: str | None) -> bool:
        leg = call.legs.get(uid) if uid else None
        return leg is not None and leg.role == "inbound"

    def _take_caller(self, call: CallState, leg: Leg, p: dict[str, Any], prefix: str = "") -> None:
        number = _clean(p.get(prefix + "CallerIDNum"))
        name = _name(p.get(prefix + "CallerIDName"))
        if number:
            leg.caller_number = number
        if name:
            leg.caller_name = name
        if leg.role != "inbound":
            return
        changed = False
        if number and number != call.caller_number:
            changed = call.caller_number is not None
            call.caller_number = number
        if name and name != call.caller_name:
            changed = changed or call.caller_name is not None
            call.caller_name = name
        if changed:
            detail = {"number": call.caller_number, "name": call.caller_name}
            self._note(call, leg.created_at if leg.created_at else call.started_at, "caller-id", detail)

    def _note(self, call: CallState, at: dt.datetime | None, kind: str, detail: dict[str, Any]) -> None:
        if at is not None:
            call.timeline.append(TimelineEntry(at, kind, detail))

    def _touch(self, call: CallState) -> None:
        self._changed[id(call)] = call

    # -- interpretation (DISPATCH) ----------------------------------------------

    def on_channel(self, p: dict[str, Any], at: dt.datetime, seq: int) -> CallState | None:
        call = self._call_for(p.get("Uniqueid"), p.get("Linkedid"), seq)
        if call is None:
            return None
        fresh = call.started_at is None
        leg = self._leg(call, p, at, seq)
        if fresh and leg is not None:
            self._note(call, at, "started", {"channel": leg.channel, "exten": leg.exten})
        self._touch(call)
        return call

    def on_newcallerid(self, p: dict[str, Any], at: dt.datetime, seq: int) -> None:
        call = self.on_channel(p, at, seq)
        if call is None:
            return
        leg = call.legs.get(p.get("Uniqueid", ""))
        if leg is None:
            return
        before = (call.caller_number, call.caller_name)
        number, name = _clean(p.get("CallerIDNum")), _name(p.get("CallerIDName"))
        if leg.role == "inbound":
            if number:
                call.caller_number = leg.caller_number = number
            if name:
                call.caller_name = leg.caller_name = name
            if before != (call.caller_number, call.caller_name) and before != (None, None):
                self._note(call, at, "caller-id", {"number": call.caller_number, "name": call.caller_name})
        else:
            if number:
                leg.caller_number = number
            if name:
                leg.caller_name = name

    def on_connectedline(self, p: dict[str, Any], at: dt.datetime, seq: int) -> None:
        call = self.on_channel(p, at, seq)
        if call is None or call.answered_at is None:
            return
        if p.get("Uniqueid") != call.dialplan_uid:
            return
        connected = _clean(p.get("ConnectedLineNum"))
        name = _name(p.get("ConnectedLineName"))
        label = f"{name} <{connected}>" if name and connected else (connected or name)
        if label and label != call.connected:
            if call.connected is not None:
                self._note(call, at, "connected-line", {"connected": label})
            call.connected = label

    def on_dialbegin(self, p: dict[str, Any], at: dt.datetime, seq: int) -> None:
        source = p.get("Uniqueid")
        call = self._call_for(source, p.get("Linkedid"), seq) if source else None
        if call is None:
            # An originate dialling its first leg, with no calling channel: nothing rings for an agent.
            dest_call = self._call_for(p.get("DestUniqueid"), p.get("DestLinkedid"), seq)
            if dest_call is not None:
                self._leg(dest_call, p, at, seq, "Dest")
                self._touch(dest_call)
            return
        self._leg(call, p, at, seq)
        if not self._inbound_side(call, source):
            self._leg(call, p, at, seq, "Dest")
            self._touch(call)
            return
        if call.dialplan_uid is None:
            call.dialplan_uid = source
        dest = self._leg(call, p, at, seq, "Dest")
        if dest is not None:
            dest.role = "agent"
            partner = self._partners.get(dest.uniqueid)
            if partner in call.legs:
                call.legs[partner].role = "agent"
        if call.ringing_at is None:
            call.ringing_at = at
        self._note(call, at, "ringing", {"channel": p.get("DestChannel"), "dialstring": p.get("DialString")})
        self._touch(call)

    def on_dialend(self, p: dict[str, Any], at: dt.datetime, seq: int) -> None:
        source = p.get("Uniqueid")
        call = self._call_for(source, p.get("Linkedid"), seq) if source else None
        if call is None:
            return
        status = p.get("DialStatus") or ""
        dest_channel = p.get("DestChannel") or ""
        if not self._inbound_side(call, source):
            # e.g. Local/group@agents;2 dialling the phones: remember who picked up
            if status == "ANSWER" and source:
                call.inner_answers[source] = dest_channel
            return
        call.dial_end_at = at
        if status == "ANSWER":
            if call.answered_at is not None and call.transferred:
                # the caller, transferred, is answered again: that is who the call went to
                inner = call.inner_answers.get(self._partners.get(p.get("DestUniqueid") or "", ""))
                to = channel_base(inner or dest_channel) or None
                if to and to != call.transferred_to:
                    call.transferred_to = to
                    self._note(call, at, "transfer-answered", {"by": to, "exten": channel_exten(inner or dest_channel)})
            if call.answered_at is None:
                call.answered_at = at
                call.answered_uid = p.get("DestUniqueid")
                inner = call.inner_answers.get(self._partners.get(call.answered_uid or "", ""))
                if inner:  # the Local channel answered because a phone behind it did
                    dest_channel = inner
                call.answered_by = channel_base(dest_channel) or None
                call.answered_exten = channel_exten(dest_channel)
                self._note(call, at, "answered", {"by": call.answered_by, "exten": call.answered_exten})
            call.dial_status = status
        else:
            if call.answered_at is None:
                call.dial_status = status
            self._note(call, at, "dial-end", {"channel": dest_channel, "status": status})
        self._touch(call)

    def on_newstate(self, p: dict[str, Any], at: dt.datetime, seq: int) -> None:
        call = self.on_channel(p, at, seq)
        if call is None:
            return
        leg = call.legs.get(p.get("Uniqueid", ""))
        if leg is not None and p.get("ChannelStateDesc") == "Up" and leg.answered_at is None:
            leg.answered_at = at

    def on_varset(self, p: dict[str, Any], at: dt.datetime, seq: int) -> None:
        variable = p.get("Variable")
        if variable == "CALLTRACK_STATUS":
            # the route refused a blocked caller: the call ends as blocked, not as failed
            if _clean(p.get("Value")) == "blocked":
                call = self.on_channel(p, at, seq)
                if call is not None:
                    call.blocked = True
            return
        if variable != "MIXMONITOR_FILENAME":
            return
        call = self.on_channel(p, at, seq)
        value = _name(p.get("Value"))
        if call is not None and value and value != call.recording:
            call.recording = value
            self._note(call, at, "recording", {"file": value})

    def on_mixmonitorstop(self, p: dict[str, Any], at: dt.datetime, seq: int) -> None:
        call = self.on_channel(p, at, seq)
        if call is not None:
            self._note(call, at, "recording-stopped", {})

    def on_blindtransfer(self, p: dict[str, Any], at: dt.datetime, seq: int) -> None:
        call = self._call_for(p.get("TransfererUniqueid"), p.get("TransfererLinkedid"), seq, create=False)
        if call is None:
            return
        call.transfers += 1
        target = f"{p.get('Extension', '')}@{p.get('Context', '')}".strip("@")
        detail = {
            "type": "blind",
            "by": channel_base(p.get("TransfererChannel") or ""),
            "to": target,
            "result": p.get("Result"),
        }
        if p.get("Result") == "Success":
            # the transferee goes on in the dialplan at Extension@Context; whoever answers there
            # (a DialEnd of the caller's channel after this) is named instead
            call.transferred = True
            call.transferred_to = target or None
        self._note(call, at, "transfer", detail)
        self._touch(call)

    def on_attendedtransfer(self, p: dict[str, Any], at: dt.datetime, seq: int) -> None:
        first = self._call_for(p.get("OrigTransfererUniqueid"), p.get("OrigTransfererLinkedid"), seq, create=False)
        second = self._call_for(p.get("SecondTransfererUniqueid"), p.get("SecondTransfererLinkedid"), seq, create=False)
        call = first or second
        if call is None:
            return
        if first is not None and second is not None and first is not second:
            call = self._merge(first, second)
        call.transfers += 1
        target = p.get("TransferTargetChannel") or p.get("SecondTransfererConnectedLineNum") or ""
        to = channel_base(target) if "/" in target else target
        detail = {
            "type": "attended",
            "by": channel_base(p.get("OrigTransfererChannel") or ""),
            "to": to,
            "result": p.get("Result"),
        }
        if p.get("Result") == "Success":
            call.transferred = True
            # a Local channel in front of the phone: the phone that answered it, when known
            inner = call.inner_answers.get(self._partners.get(p.get("TransferTargetUniqueid") or "", ""))
            call.transferred_to = (channel_base(inner) if inner else to) or None
        self._note(call, at, "transfer", detail)
        self._touch(call)

    def on_hangup_request(self, p: dict[str, Any], at: dt.datetime, seq: int) -> None:
        call = self.on_channel(p, at, seq)
        if call is None or call.caller_hung_up_first is not None:
            return
        # On an inbound leg, HangupRequest means the far end (the caller) asked;
        # SoftHangupRequest means Asterisk itself ended it (dialplan Hangup(), a bridge peer).
        if self._inbound_side(call, p.get("Uniqueid")):
            call.caller_hung_up_first = p.get("Event") == "HangupRequest"

    def on_hangup(self, p: dict[str, Any], at: dt.datetime, seq: int) -> None:
        call = self.on_channel(p, at, seq)
        if call is None:
            return
        leg = call.legs.get(p.get("Uniqueid", ""))
        if leg is None or leg.hungup_at is not None:
            return
        self._end_leg(call, leg, at, _int(p.get("Cause")))
        self._note(call, at, "hangup", {"channel": leg.channel, "cause": leg.hangup_cause, "text": p.get("Cause-txt")})
        self._maybe_close(call)

    def _end_leg(self, call: CallState, leg: Leg, at: dt.datetime, cause: int | None) -> None:
        leg.hungup_at = at
        leg.hangup_cause = cause
        if call.caller_hung_up_first is None and leg.role == "inbound":
            call.caller_hung_up_first = False
        if leg.uniqueid == call.linkedid:
            call.hangup_cause = cause
        if call.answered_at is not None and at >= call.answered_at:
            answering = self._answering(call)
            if call.talk_end_at is None and (leg.role == "inbound" or leg.uniqueid in answering):
                call.talk_end_at = at
            if call.caller_left_at is None and leg.role == "inbound":
                call.caller_left_at = at

    def _maybe_close(self, call: CallState) -> None:
        if call.legs and all(leg.hungup_at is not None for leg in call.legs.values()):
            call.closed = True
            call.ended_at = max(leg.hungup_at for leg in call.legs.values() if leg.hungup_at)
            self._note(call, call.ended_at, "ended", {"disposition": _disposition(call)})
        self._touch(call)

    # -- resynchronisation -----------------------------------------------------

    def on_connection_lost(self, p: dict[str, Any], at: dt.datetime, seq: int) -> None:
        """The listener's own marker: its connection ended; Asterisk was last heard at ``LastHeard``."""
        try:
            heard = dt.datetime.fromtimestamp(float(p.get("LastHeard", "")), dt.UTC)
        except (TypeError, ValueError, OverflowError):
            return
        if self._heard is None or heard > self._heard:
            self._heard = heard

    def on_fullybooted(self, p: dict[str, Any], at: dt.datetime, seq: int) -> None:
        # A new connection (Asterisk sends FullyBooted after every login): until this moment calltrack
        # was not looking; what it saw last, of any call, is when the calls still open were known alive.
        known = [t for t in (self._latest, self._heard) if t is not None]
        self._alive_until = max(known) if known else None
        self._booted_at = at
        try:
            self._uptime = float(p.get("Uptime", ""))
        except ValueError:
            self._uptime = None

    def on_coreshowchannel(self, p: dict[str, Any], at: dt.datetime, seq: int) -> None:
        action_id = p.get("ActionID") or ""
        started, live = self._resync.setdefault(action_id, (seq, set()))
        uid = p.get("Uniqueid")
        if not isinstance(uid, str):
            return
        live.add(uid)
        call = self._call_for(uid, p.get("Linkedid"), seq)
        if call is None:
            return
        if uid not in call.legs:
            # A channel born while we were away: it has lived Duration seconds.
            born = at - dt.timedelta(seconds=_parse_duration(p.get("Duration")))
            fresh = call.started_at is None
            leg = self._leg(call, p, born, seq)
            if leg is not None:
                if fresh:
                    self._note(call, born, "started", {"channel": leg.channel, "exten": leg.exten, "resync": True})
                if p.get("ChannelStateDesc") == "Up":
                    leg.answered_at = born
                    if (
                        leg.role == "inbound"
                        and call.answered_at is None
                        and (p.get("Application") in ("Dial", "Queue") or p.get("BridgeId"))
                    ):
                        call.answered_at = born
            self._touch(call)

    def on_coreshowchannelscomplete(self, p: dict[str, Any], at: dt.datetime, seq: int) -> None:
        action_id = p.get("ActionID") or ""
        started, live = self._resync.pop(action_id, (seq, set()))
        restarted_before = None
        if self._booted_at is not None and self._uptime is not None:
            restarted_before = self._booted_at - dt.timedelta(seconds=self._uptime)
        for call in list({id(c): c for c in self.calls_by_linkedid.values()}.values()):
            if call.closed:
                continue
            vanished = [
                leg
                for leg in call.legs.values()
                if leg.hungup_at is None and leg.uniqueid not in live and leg.last_seq < started
            ]
            if not vanished:
                continue
            restart = restarted_before is not None and all(
                leg.created_at is not None and leg.created_at < restarted_before for leg in vanished
            )
            reason = "asterisk-restart" if restart else "gone-while-disconnected"
            # Never stretch the call over the time calltrack was not looking: it ended at some point after
            # it was last known alive; take that moment, say so, and let Asterisk's CDRs correct it.
            end = self._alive_until if self._alive_until is not None and self._alive_until < at else at
            for leg in sorted(vanished, key=lambda lg: lg.uniqueid):
                known = max(t for t in (leg.created_at, call.last_at, end) if t is not None)
                self._end_leg(call, leg, min(known, at), None)
                self._lost_legs[leg.uniqueid] = (call, leg, at)
                self._lost_channels.setdefault(leg.channel, []).append(leg.uniqueid)
                self._lost_taken.append(
                    {"uniqueid": leg.uniqueid, "channel": leg.channel, "created_at": leg.created_at, "until": at}
                )
            while len(self._lost_legs) > self.CLOSED_MEMORY:
                _, (_, old_leg, _) = self._lost_legs.popitem(last=False)
                uids = self._lost_channels.get(old_leg.channel, [])
                if old_leg.uniqueid in uids:
                    uids.remove(old_leg.uniqueid)
                if not uids:
                    self._lost_channels.pop(old_leg.channel, None)
            call.lost = reason
            call.times_source = "estimated"
            self._note(
                call,
                at,
                "lost",
                {"reason": reason, "channels": [leg.channel for leg in vanished], "ended_estimated": _iso(end)},
            )
            self._maybe_close(call)

    def on_cdr(self, p: dict[str, Any], at: dt.datetime, seq: int) -> None:
        """Asterisk's own record of a channel (AMI ``Cdr``, or a line of cdr_csv's Master.csv the listener read).

        Only calls closed by estimate at a resync are changed: their vanished legs take the CDR's end
        (and a Dial's answer, if calltrack never saw it), and the call's times say ``cdr``. Times in a
        CDR are Asterisk's local time to the second; the offset from UTC is learnt from the CDRs
        themselves (the AMI event's Timestamp, or a first CDR's start against its channel's birth).
        """
        if not self._lost_legs:
            return
        channel, dest = p.get("Channel") or "", p.get("DestinationChannel") or ""
        uid = p.get("UniqueID") or ""
        matches: list[tuple[CallState, Leg, dt.datetime, str]] = []
        for side, name in (("a", channel), ("b", dest)):
            for lost_uid in self._lost_channels.get(name, []) if name else []:
                call, leg, resync_at = self._lost_legs[lost_uid]
                if side == "a" and uid and uid != lost_uid:
                    continue
                if side == "b" and not any(
                    other.channel == channel and (not uid or uid == other.uniqueid) for other in call.legs.values()
                ):
                    continue  # the same channel name in another call (names repeat after a restart)
                matches.append((call, leg, resync_at, side))
        if not matches:
            return
        offset = self._learn_cdr_offset(p, at)
        if offset is None:
            return
        end = _cdr_time(p.get("EndTime"), offset)
        answer = _cdr_time(p.get("AnswerTime"), offset)
        if end is None:
            return
        for call, leg, resync_at, side in matches:
            if leg.created_at is None:
                continue
            # a CDR ends after its channel was born and before the resync that found the channel gone
            if not (leg.created_at - dt.timedelta(seconds=2) <= end <= resync_at + dt.timedelta(seconds=1)):
                continue
            leg.hungup_at = min(max(end, leg.created_at), resync_at)
            if side == "a" and leg.role == "inbound" and call.answered_at is None:
                if answer is not None and dest and p.get("Disposition") == "ANSWERED":
                    # a Dial answered while calltrack was not looking
                    call.answered_at = answer
                    call.answered_by = channel_base(dest) or None
                    call.answered_exten = channel_exten(dest)
                    call.dial_status = "ANSWER"
                    self._note(call, answer, "answered", {"by": call.answered_by, "exten": call.answered_exten})
                else:
                    status = {"NO ANSWER": "NOANSWER", "BUSY": "BUSY"}.get(str(p.get("Disposition")))
                    if status and call.dial_status is None:
                        call.dial_status = status
            call.times_source = "cdr"
            self._recount(call)
            self._touch(call)

    def _learn_cdr_offset(self, p: dict[str, Any], at: dt.datetime) -> dt.timedelta | None:
        end = _naive(p.get("EndTime"))
        if p.get("Timestamp") and end is not None:
            # an AMI Cdr is sent as the record is written: its Timestamp is the end, in UTC (unless
            # cdr.conf batches them; then the start below tells)
            guess = _whole_offset(end - at.replace(tzinfo=None), dt.timedelta(seconds=3))
            if guess is not None:
                self._cdr_offset = guess
                return guess
        if self._cdr_offset is None:
            # a CDR read from the file: its start, against the birth of the channel it names
            start = _naive(p.get("StartTime"))
            uid = p.get("UniqueID") or ""
            for lost_uid in self._lost_channels.get(p.get("Channel") or "", []):
                leg = self._lost_legs[lost_uid][1]
                if start is None or leg.created_at is None or (uid and uid != lost_uid):
                    continue
                guess = _whole_offset(start - leg.created_at.replace(tzinfo=None), dt.timedelta(seconds=2))
                if guess is not None:
                    self._cdr_offset = guess
                    break
        return self._cdr_offset

    def _recount(self, call: CallState) -> None:
        """Times derived from the legs' ends, after some of them were corrected."""
        ends = [leg.hungup_at for leg in call.legs.values() if leg.hungup_at is not None]
        if ends and call.closed:
            call.ended_at = max(ends)
        call.talk_end_at = call.caller_left_at = None
        if call.answered_at is None:
            return
        answering = self._answering(call)
        after = [leg for leg in call.legs.values() if leg.hungup_at is not None and leg.hungup_at >= call.answered_at]
        talk = [
            leg.hungup_at for leg in after if leg.hungup_at and (leg.role == "inbound" or leg.uniqueid in answering)
        ]
        caller = [leg.hungup_at for leg in after if leg.hungup_at and leg.role == "inbound"]
        call.talk_end_at = min(talk) if talk else None
        call.caller_left_at = min(caller) if caller else None

    # -- snapshot --------------------------------------------------------------

    def _snapshot(self, call: CallState) -> CallSnapshot:
        tracking = None
        if call.dialled:
            tracking = self._normalize(call.dialled) or call.dialled
        uniqueid = self._route_uid(call)
        answered_at = _answered_at(call) if call.closed else call.answered_at
        ring_end = call.answered_at or call.dial_end_at or call.ended_at
        # after a transfer the caller talks on with someone else: talk time runs until the caller leaves
        talk_end = (call.caller_left_at if call.transferred else call.talk_end_at) or call.ended_at
        values: dict[str, Any] = {
            "uniqueid": uniqueid,
            "tracking_number": tracking,
            "caller_number": call.caller_number,
            "caller_name": call.caller_name,
            "started_at": call.started_at,
            "ringing_at": call.ringing_at,
            "answered_at": answered_at,
            "ended_at": call.ended_at if call.closed else None,
            "duration": _seconds(call.started_at, call.ended_at) if call.closed else None,
            "ring_time": _seconds(call.ringing_at, ring_end) if call.ringing_at and (call.closed or ring_end) else None,
            "talk_time": _seconds(answered_at, talk_end) if answered_at and call.closed else None,
            "answered_by": call.answered_by,
            "transferred_to": call.transferred_to,
            "times_source": call.times_source,
            "hangup_cause": call.hangup_cause,
            "disposition": _disposition(call) if call.closed else None,
            "recording_file": call.recording,
        }
        legs = tuple(
            {
                "uniqueid": leg.uniqueid,
                "channel": leg.channel,
                "role": leg.role,
                "caller_number": leg.caller_number,
                "caller_name": leg.caller_name,
                "exten": channel_exten(leg.channel) if leg.role == "agent" else leg.exten,
                "created_at": leg.created_at,
                "answered_at": leg.answered_at,
                "hungup_at": leg.hungup_at,
                "hangup_cause": leg.hangup_cause,
            }
            for leg in call.legs.values()
        )
        timeline = tuple({"at": e.at, "kind": e.kind, "detail": e.detail} for e in call.timeline)
        return CallSnapshot(call.linkedid, call.closed, values, legs, timeline)


def _answered_at(call: CallState) -> dt.datetime | None:
    """When the call was answered: by a dialled agent, else (no Dial at all) by the dialplan itself.

    A dialplan may Answer() before it dials (a greeting); then the Dial's outcome decides, so the
    inbound leg going Up counts only for calls that never dialled anyone (IVR, voicemail).
    """
    if call.answered_at is not None or call.ringing_at is not None:
        return call.answered_at
    ups = [leg.answered_at for leg in call.legs.values() if leg.role == "inbound" and leg.answered_at]
    return min(ups) if ups else None


def _disposition(call: CallState) -> str:
    """answered, missed, busy, abandoned or failed, from what the call went through; blocked when refused."""
    if call.blocked:
        return "blocked"
    if _answered_at(call) is not None:
        return "answered"
    status = call.dial_status
    if status == "BUSY":
        return "busy"
    if status == "NOANSWER":
        return "missed"
    if status == "CANCEL":
        return "abandoned"
    if status in ("CONGESTION", "CHANUNAVAIL", "INVALIDARGS", "DONTCALL", "TORTURE"):
        return "failed"
    if call.lost is not None:
        return "failed"
    if call.hangup_cause == 17:
        return "busy"
    if call.caller_hung_up_first:
        return "abandoned"
    return "failed"


Handler = Callable[[Correlator, dict[str, Any], dt.datetime, int], Any]

#: AMI event name -> interpretation
DISPATCH: dict[str, Handler] = {
    "Newchannel": Correlator.on_channel,
    "NewCallerid": Correlator.on_newcallerid,
    "NewConnectedLine": Correlator.on_connectedline,
    "Newstate": Correlator.on_newstate,
    "DialBegin": Correlator.on_dialbegin,
    "DialEnd": Correlator.on_dialend,
    "VarSet": Correlator.on_varset,
    "MixMonitorStart": Correlator.on_channel,
    "MixMonitorStop": Correlator.on_mixmonitorstop,
    "BridgeEnter": Correlator.on_channel,
    "BridgeLeave": Correlator.on_channel,
    "BlindTransfer": Correlator.on_blindtransfer,
    "AttendedTransfer": Correlator.on_attendedtransfer,
    "HangupRequest": Correlator.on_hangup_request,
    "SoftHangupRequest": Correlator.on_hangup_request,
    "Hangup": Correlator.on_hangup,
    "FullyBooted": Correlator.on_fullybooted,
    CONNECTION_LOST: Correlator.on_connection_lost,
    "Cdr": Correlator.on_cdr,
    "CoreShowChannel": Correlator.on_coreshowchannel,
    "CoreShowChannelsComplete": Correlator.on_coreshowchannelscomplete,
}
