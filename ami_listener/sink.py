"""Between the socket and the database: a bounded queue, batched writes, the spool.

The reader calls :meth:`EventSink.put` for each message; it never waits.  The
writer task takes batches from the queue and, in one transaction per batch,
stores the raw events in ``ami_events`` (``ON CONFLICT DO NOTHING`` on
``(system, event_key)``, so a replay stores nothing twice), feeds them to the
correlator and upserts the calls they changed.  When the database fails or
falls behind, batches go to the spool file instead, and are replayed in order
before anything newer once the database answers again.

Which events are stored: everything except the noise a busy server multiplies
and calltrack never reads (:data:`NOISE`: ``Newexten``, ``AGIExecStart``/``End``,
``DeviceStateChange``, ``RTCP*``, security events, and ``VarSet`` other than
:data:`KEPT_VARIABLES`).  Replies to actions are dropped except those of the
listener's own resynchronisation (``CoreShowChannels``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import orjson
from sqlalchemy import String, bindparam, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ami_listener.cdr_csv import CdrFile
from ami_listener.correlator import CONNECTION_LOST, RESYNC_PREFIX, CallSnapshot, Correlator, RawEvent
from ami_listener.parser import Message
from ami_listener.spool import Spool, StoredEvent, make_event
from schema.models import AmiEvent, Call, CallerListEntry, CallEvent, CallLeg, TrackingNumber
from tracking.attribution import attribute
from tracking.caller_info import UNKNOWN, CallerInfo, describe_number
from tracking.calls import BLOCKED, upsert_calls
from tracking.outbox import CALL_COMPLETED, announce_calls
from tracking.phone import try_normalize
from tracking.routing import caller_key
from tracking.texts import record_forward

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

NOISE = frozenset(
    {
        "Newexten",
        "AGIExecStart",
        "AGIExecEnd",
        "AsyncAGIExec",
        "DeviceStateChange",
        "ExtensionStatus",
        "PresenceStateChange",
        "RTCPSent",
        "RTCPReceived",
        "SuccessfulAuth",
        "ChallengeSent",
        "ChallengeResponseFailed",
        "InvalidPassword",
        "RequestBadFormat",
        "Registry",
        "PeerStatus",
        "ContactStatus",
        "DTMFBegin",
        "DTMFEnd",
        "VarSet",
        "ChannelTalkingStart",
        "ChannelTalkingStop",
    }
)
#: VarSet events kept despite the noise filter
KEPT_VARIABLES = frozenset(
    {
        "MIXMONITOR_FILENAME",
        "DIALSTATUS",
        "ANSWEREDTIME",
        "DIALEDTIME",
        "RINGTIME",
        "BLINDTRANSFER",
        "ATTENDEDTRANSFER",
        "MESSAGE_SEND_STATUS",
    }
)
#: kinds of call_events lines written by the listener (replaced on each write)
TIMELINE_KINDS = (
    "started",
    "caller-id",
    "ringing",
    "dial-end",
    "answered",
    "connected-line",
    "transfer",
    "transfer-answered",
    "recording",
    "recording-stopped",
    "hangup",
    "lost",
    "merged",
    "ended",
)


def keep(message: Message) -> bool:
    """Whether a message is worth storing (see the module docstring)."""
    name = message.get("Event")
    if name is None:
        action_id = message.get("ActionID")
        return isinstance(action_id, str) and action_id.startswith(RESYNC_PREFIX)
    if name in NOISE:
        if name == "VarSet":
            variable = message.get("Variable", "")
            return variable in KEPT_VARIABLES or variable.startswith("CALLTRACK_")
        return False
    return True


# -- database side (synchronous; run in a worker thread by the sink) ----------------


_INSERT_SQL = (
    "INSERT INTO ami_events (system, event_key, seq, event, uniqueid, linkedid, received_at, payload) "
    "VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {json}) ON CONFLICT (system, event_key) DO NOTHING"
)


def _dumps(payload: dict[str, Any]) -> str:
    return orjson.dumps(payload).decode()


def _db_time(at: dt.datetime, pg: bool) -> Any:
    """An aware time as SQLAlchemy's UTC column stores it: naive UTC (PostgreSQL), its text (SQLite)."""
    naive = at.astimezone(dt.UTC).replace(tzinfo=None)
    return naive if pg else naive.isoformat(" ", "microseconds")


def insert_events(session: Session, system: str, events: Sequence[StoredEvent]) -> None:
    """Store raw events; one already stored (same system and event key) is left alone.

    The hot path of the listener, so it goes straight to the driver's
    executemany with the JSON already encoded, in the formats SQLAlchemy's
    column types read back (naive UTC times; JSON text).
    """
    if not events:
        return
    conn = session.connection()
    dumps = _dumps
    pg = conn.dialect.name == "postgresql"
    # the events of one read share one arrival time (EventSink.put): convert each time once
    times: dict[dt.datetime, Any] = {}
    for ev in events:
        if ev.received_at not in times:
            times[ev.received_at] = _db_time(ev.received_at, pg)
    sql = _INSERT_SQL.format(p="%s", json="%s::json") if pg else _INSERT_SQL.format(p="?", json="?")
    params = [
        (system, ev.key, ev.seq, ev.event, ev.uniqueid, ev.linkedid, times[ev.received_at], dumps(ev.payload))
        for ev in events
    ]
    conn.exec_driver_sql(sql, params)


_TIMELINE_SQL = "INSERT INTO call_events (call_id, at, kind, detail) VALUES ({p}, {p}, {p}, {json})"


def insert_timeline(session: Session, lines: Sequence[dict[str, Any]]) -> None:
    """Timeline lines (call_id, aware ``at``, kind, detail dict) straight to the driver, as
    :func:`insert_events` does: a burst writes thousands, and SQLAlchemy's per-row binding
    cost more than the insert. Stored as SQLAlchemy's column types store them."""
    conn = session.connection()
    pg = conn.dialect.name == "postgresql"
    sql = _TIMELINE_SQL.format(p="%s", json="%s::json") if pg else _TIMELINE_SQL.format(p="?", json="?")
    params = [(line["call_id"], _db_time(line["at"], pg), line["kind"], _dumps(line["detail"])) for line in lines]
    conn.exec_driver_sql(sql, params)


def _remembered(cache: dict[str, _T], key: str, make: Callable[..., _T], *args: Any) -> _T:
    """``cache[key]``, made by ``make(*args)`` the first time; the cache is emptied past 50,000 entries."""
    try:
        return cache[key]
    except KeyError:
        pass
    if len(cache) > 50_000:
        cache.clear()
    value = cache[key] = make(*args)
    return value


def _list_key(raw: str, region: str) -> str:
    return try_normalize(raw, region) or raw.strip().lower()


class CallWriter:
    """Writes call snapshots: the call row (shared upsert), its legs and its timeline."""

    def __init__(
        self,
        system: str,
        region: str = "US",
        geocode: bool = True,
        attribution_grace: dt.timedelta = dt.timedelta(seconds=300),
        *,
        announce: bool = True,
    ) -> None:
        self.system = system
        self.region = region
        self.geocode = geocode
        self.attribution_grace = attribution_grace
        #: add call.completed to the outbox for calls that end (not when rebuilding old calls)
        self.announce = announce
        self._info: dict[str, CallerInfo] = {}
        self._callers: dict[str, str | None] = {}
        self._list_keys: dict[str, str] = {}
        #: per live call (linkedid): its row id and the legs and timeline lines written for it, committed
        self._legs: dict[str, tuple[int, dict[str, dict[str, Any]]]] = {}
        self._lines: dict[str, list[dict[str, Any]]] = {}
        self._staged: dict[str, tuple[int, dict[str, dict[str, Any]], list[dict[str, Any]], bool]] = {}

    def write(self, session: Session, snapshots: Iterable[CallSnapshot]) -> int:
        """Upsert every call (one statement), then the legs, timeline and first-time flag of the closed ones.

        First-time callers are judged after every call of the batch is in, so
        the order of the snapshots does not matter (a rebuild writes all calls
        in one batch).
        """
        snaps = list(snapshots)
        merged = [s for s in snaps if s.merged_into is not None]
        if merged:
            snaps = [s for s in snaps if s.merged_into is None]
            for snap in merged:
                self._legs.pop(snap.linkedid, None)
                self._lines.pop(snap.linkedid, None)
            # a consultation call merged into the call it transferred: its row goes, unless the route made it
            table: Any = Call.__table__
            session.execute(
                delete(table).where(
                    table.c.system == self.system,
                    table.c.linkedid.in_([s.linkedid for s in merged]),
                    table.c.route_status.is_(None),
                )
            )
            # one the route made stays, without the legs and lines written while it looked separate
            kept = select(table.c.id).where(
                table.c.system == self.system, table.c.linkedid.in_([s.linkedid for s in merged])
            )
            session.execute(delete(CallLeg).where(CallLeg.call_id.in_(kept)))
            session.execute(delete(CallEvent).where(CallEvent.call_id.in_(kept), CallEvent.kind.in_(TIMELINE_KINDS)))
        if not snaps:
            return len(merged)
        attributed = self._attribute(session, [s for s in snaps if s.closed])
        untracked = self._do_not_track(session, snaps, {lid: a["account_id"] for lid, a in attributed.items()})
        if untracked:
            snaps = [_scrubbed(s) if s.linkedid in untracked else s for s in snaps]
        rows = []
        for snap in snaps:
            values = dict(snap.values)
            # the number as the route stores it: E.164 when it parses, None when withheld
            values["caller_number"] = self.caller(values.get("caller_number"))
            info = self._describe(values["caller_number"])
            values["caller_location"] = info.location
            values["caller_country"] = info.country
            values["caller_line_type"] = info.line_type
            rows.append((snap.linkedid, clipped(values, _CALL_LIMITS)))
        # caller ID the listener has not seen yet (a Local channel's first events say <unknown>) leaves
        # the route's in place: both writers store the same text, so the last one changes nothing
        ids = upsert_calls(
            session, self.system, rows, keep_existing={"tracking_number"}, keep_when_null=CALLER_ID_COLUMNS
        )
        if attributed:
            # only where the route still has not written (it may have, meanwhile, on another connection)
            table__: Any = Call.__table__
            session.execute(
                table__.update()
                .where(
                    table__.c.id == bindparam("call_id"),
                    table__.c.account_id.is_(None),
                    table__.c.route_status.is_(None),
                )
                .values(
                    account_id=bindparam("account_id"),
                    source_id=bindparam("source_id"),
                    tracking_number_id=bindparam("tracking_number_id"),
                    visitor_session_id=bindparam("visitor_session_id"),
                ),
                [{"call_id": ids[lid], **a} for lid, a in attributed.items() if lid in ids],
            )
        if untracked:
            # the recorder must know: a recording of this call is deleted, never archived; and whatever
            # names the caller goes, even what an earlier write left
            table_: Any = Call.__table__
            session.execute(
                table_.update()
                .where(table_.c.id.in_([ids[lid] for lid in untracked if lid in ids]))
                .values(do_not_track=True, **dict.fromkeys(CALLER_ID_COLUMNS))
            )
        self._write_details(session, [(ids[snap.linkedid], snap) for snap in snaps])
        closed = [ids[snap.linkedid] for snap in snaps if snap.closed]
        if closed:
            self._first_time(session, closed)
            if self.announce:
                # in the batch's transaction: a call.completed is announced if and only if the call's end is stored
                announce_calls(session, CALL_COMPLETED, closed)
        gone = [snap for snap in snaps if snap.closed and snap.linkedid in untracked]
        if gone:
            # do-not-track: once the call is over, its raw events (which name the caller) go too
            uids = [leg["uniqueid"] for snap in gone for leg in snap.legs]
            events: Any = AmiEvent.__table__
            session.execute(
                delete(events).where(
                    events.c.system == self.system,
                    events.c.linkedid.in_([s.linkedid for s in gone]) | events.c.uniqueid.in_(uids),
                )
            )
        return len(snaps)

    def _attribute(self, session: Session, snaps: list[CallSnapshot]) -> dict[str, dict[str, Any]]:
        """Account, source (and website visit) of calls the AGI route never saw, from the number dialled.

        With the FastAGI server down the dialplan fails open and the call is answered, but no route
        wrote its row: the listener attributes it the way the route would have (the number's source,
        or for a pool number the visit whose lease covered the call, ``tracking.attribution``), once
        the call has ended. A number that was not active when the call came in attributes nothing,
        as the route would have said ``unknown-number``.
        """
        wanted = {s.linkedid: s for s in snaps if s.values.get("tracking_number") and s.values.get("started_at")}
        if not wanted:
            return {}
        table: Any = Call.__table__
        seen = {
            lid: (account_id, status)
            for lid, account_id, status in session.execute(
                select(table.c.linkedid, table.c.account_id, table.c.route_status).where(
                    table.c.system == self.system, table.c.linkedid.in_(list(wanted))
                )
            )
        }
        todo = [s for lid, s in wanted.items() if seen.get(lid, (None, None)) == (None, None)]
        if not todo:
            return {}
        numbers = {
            n.number: n
            for n in session.scalars(
                select(TrackingNumber).where(TrackingNumber.number.in_({s.values["tracking_number"] for s in todo}))
            )
        }
        out: dict[str, dict[str, Any]] = {}
        for snap in todo:
            number = numbers.get(snap.values["tracking_number"])
            started: dt.datetime = snap.values["started_at"]
            if number is None or not _active_at(number, started):
                continue
            found = attribute(session, number, started, self.attribution_grace)
            out[snap.linkedid] = {
                "account_id": number.account_id,
                "source_id": found.source_id,
                "tracking_number_id": number.id,
                "visitor_session_id": found.session.id if found.session is not None else None,
            }
        return out

    def _do_not_track(
        self, session: Session, snaps: list[CallSnapshot], attributed: dict[str, int] | None = None
    ) -> set[str]:
        """Linkedids of calls from callers on a do-not-track list (global, or of the call's account)."""
        keys: dict[str, str] = {}
        for snap in snaps:
            number = snap.values.get("caller_number")
            if number:
                keys[snap.linkedid] = self._list_key(number)
        if not keys:
            return set()
        entries = session.execute(
            select(CallerListEntry.number, CallerListEntry.account_id).where(
                CallerListEntry.kind == "do-not-track", CallerListEntry.number.in_(set(keys.values()))
            )
        ).all()
        if not entries:
            return set()
        listed: dict[str, set[int | None]] = {}
        for number, account_id in entries:
            listed.setdefault(number, set()).add(account_id)
        suspects = [lid for lid, key in keys.items() if key in listed]
        accounts = dict(
            session.execute(
                select(Call.linkedid, Call.account_id).where(Call.system == self.system, Call.linkedid.in_(suspects))
            ).all()
        )
        for lid, account_id in (attributed or {}).items():
            accounts[lid] = accounts.get(lid) or account_id
        return {lid for lid in suspects if None in listed[keys[lid]] or accounts.get(lid) in listed[keys[lid]]}

    def _list_key(self, raw: str) -> str:
        """A caller number as caller lists hold it (E.164, else as typed, lower case), remembered."""
        return _remembered(self._list_keys, raw, _list_key, raw, self.region)

    def caller(self, raw: str | None) -> str | None:
        """A caller number as both writers store it (``tracking.routing.caller_key``), remembered."""
        if not raw:
            return None
        return _remembered(self._callers, raw, caller_key, raw, self.region)

    def _describe(self, number: str | None) -> CallerInfo:
        if not number or not self.geocode:
            return UNKNOWN
        return _remembered(self._info, number, describe_number, number, self.region)

    def _write_details(self, session: Session, calls: list[tuple[int, CallSnapshot]]) -> None:
        """Legs and timeline of live and ended calls alike: a live call shows who is on it.

        What this writer wrote (and saw committed, :meth:`committed`) is remembered per call, so a
        live call costs only its changed legs and its new timeline lines; a call it knows nothing
        of (after a restart or a failed batch) is rewritten whole.
        """
        whole = [(cid, snap) for cid, snap in calls if self._legs.get(snap.linkedid, (None,))[0] != cid]
        if whole:
            ids = [cid for cid, _ in whole]
            session.execute(delete(CallLeg).where(CallLeg.call_id.in_(ids)))
            session.execute(delete(CallEvent).where(CallEvent.call_id.in_(ids), CallEvent.kind.in_(TIMELINE_KINDS)))
        fresh = {cid for cid, _ in whole}
        legs: list[dict[str, Any]] = []
        lines: list[dict[str, Any]] = []
        rewrite: list[int] = []
        for cid, snap in calls:
            known = {} if cid in fresh else self._legs[snap.linkedid][1]
            rows = {leg["uniqueid"]: clipped({"call_id": cid, **leg}, _LEG_LIMITS) for leg in snap.legs}
            legs.extend(row for uid, row in rows.items() if known.get(uid) != row)
            timeline = [{"call_id": cid, **self._line(line)} for line in snap.timeline]
            done = [] if cid in fresh else self._lines[snap.linkedid]
            if timeline[: len(done)] != done:  # lines re-sorted by a merge: write them again
                rewrite.append(cid)
                done = []
            lines.extend(timeline[len(done) :])
            self._staged[snap.linkedid] = (cid, rows, timeline, snap.closed)
        if rewrite:
            session.execute(delete(CallEvent).where(CallEvent.call_id.in_(rewrite), CallEvent.kind.in_(TIMELINE_KINDS)))
        if legs:
            table: Any = CallLeg.__table__
            dialect = session.get_bind().dialect.name
            stmt: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
            columns = [k for k in legs[0] if k not in ("call_id", "uniqueid")]
            stmt = stmt.on_conflict_do_update(
                index_elements=["call_id", "uniqueid"], set_={k: stmt.excluded[k] for k in columns}
            )
            session.execute(stmt, legs)
        if lines:
            insert_timeline(session, lines)

    def committed(self) -> None:
        """The transaction of the last writes is committed: what they wrote is known to be there."""
        for lid, (cid, rows, timeline, closed) in self._staged.items():
            if closed:
                self._legs.pop(lid, None)
                self._lines.pop(lid, None)
            else:
                self._legs[lid] = (cid, rows)
                self._lines[lid] = timeline
        self._staged.clear()
        if len(self._legs) > 100_000:  # calls that never ended (a channel whose Hangup was never seen)
            self._legs.clear()
            self._lines.clear()

    def rolled_back(self) -> None:
        """The last writes did not happen: their calls are rewritten whole next time."""
        for lid in self._staged:
            self._legs.pop(lid, None)
            self._lines.pop(lid, None)
        self._staged.clear()

    def _first_time(self, session: Session, call_ids: list[int]) -> None:
        # first-time caller: no earlier call (by start) to the same account from the same number;
        # calls without an account (unknown numbers) and blocked calls (spam) have no first time
        table: Any = Call.__table__
        mine = session.execute(
            select(
                table.c.id, table.c.account_id, table.c.caller_number, table.c.started_at, table.c.disposition
            ).where(table.c.id.in_(call_ids))
        ).all()
        numbers = {row.caller_number for row in mine if row.caller_number}
        earliest: dict[tuple[int | None, str], Any] = {}
        if numbers:
            query = (
                select(table.c.account_id, table.c.caller_number, func.min(table.c.started_at))
                .where(
                    table.c.caller_number.in_(numbers),
                    table.c.started_at.is_not(None),
                    table.c.account_id.is_not(None),
                    table.c.disposition.is_(None) | (table.c.disposition != BLOCKED),
                )
                .group_by(table.c.account_id, table.c.caller_number)
            )
            earliest = {(acc, num): first for acc, num, first in session.execute(query)}
        updates = []
        for row in mine:
            first = None
            counted = row.account_id is not None and row.disposition != BLOCKED
            if counted and row.caller_number and row.started_at is not None:
                first = row.started_at <= earliest.get((row.account_id, row.caller_number), row.started_at)
            updates.append({"call_id": row.id, "first": first})
        session.execute(
            table.update().where(table.c.id == bindparam("call_id")).values(first_time=bindparam("first")),
            updates,
        )

    def _line(self, line: dict[str, Any]) -> dict[str, Any]:
        if line["kind"] == "caller-id" and line["detail"].get("number"):
            return {**line, "detail": {**line["detail"], "number": self.caller(line["detail"]["number"])}}
        return line


#: what names the caller on a call row: the listener never blanks what the route stored
CALLER_ID_COLUMNS = frozenset({"caller_number", "caller_name"})


def _limits(table: Any) -> dict[str, int]:
    return {c.name: c.type.length for c in table.columns if isinstance(c.type, String) and c.type.length}


_CALL_LIMITS = _limits(Call.__table__)
_LEG_LIMITS = _limits(CallLeg.__table__)


def clipped(values: dict[str, Any], limits: dict[str, int]) -> dict[str, Any]:
    """*values* with text cut to its column's size, as the route cuts it (PostgreSQL refuses longer text).

    Asterisk takes what a caller or a carrier sends (an 8 KB caller name, an 80-character extension):
    a batch refused for that would hold the listener's events in the spool for ever.
    """
    for key, limit in limits.items():
        value = values.get(key)
        if isinstance(value, str) and len(value) > limit:
            values[key] = value[:limit]
    return values


def _active_at(number: TrackingNumber, at: dt.datetime) -> bool:
    """Whether *number* routed calls at *at*: active now, or released after it."""
    if number.status == "active":
        return True
    return number.released_at is not None and at < number.released_at


def _scrubbed(snap: CallSnapshot) -> CallSnapshot:
    """The call without anything that identifies the caller."""
    values = {**snap.values, "caller_number": None, "caller_name": None}
    legs = tuple({**leg, "caller_number": None, "caller_name": None} for leg in snap.legs)
    timeline = tuple(line for line in snap.timeline if line["kind"] != "caller-id")
    return CallSnapshot(snap.linkedid, snap.closed, values, legs, timeline)


def raw(ev: StoredEvent) -> RawEvent:
    return RawEvent(ev.seq, ev.received_at, ev.payload)


def iter_events(
    session: Session, system: str, *, linkedids: Iterable[str] | None = None, since: dt.datetime | None = None
) -> Iterator[RawEvent]:
    """Stored events of *system* in arrival order, for whole calls, read in chunks.

    With *since*, every event of each call that has an event at or after it (so
    a call is never cut in half; calls that ended before are left out); with
    *linkedids*, those calls only.
    """
    table = AmiEvent.__table__
    base = select(table.c.seq, table.c.received_at, table.c.payload).where(table.c.system == system)
    if since is not None:
        touched = (
            select(table.c.linkedid)
            .where(table.c.system == system, table.c.received_at >= since, table.c.linkedid.is_not(None))
            .distinct()
        )
        first = select(func.min(table.c.seq)).where(table.c.system == system, table.c.linkedid.in_(touched))
        start = session.scalar(first)
        if start is None:
            return
        base = base.where(table.c.seq >= start, table.c.linkedid.in_(touched) | table.c.linkedid.is_(None))
    if linkedids is not None:
        ids = list(linkedids)
        if not ids:
            return
        base = base.where(table.c.linkedid.in_(ids))
    rows = session.execute(base.order_by(table.c.seq).execution_options(yield_per=5000))
    for seq, received_at, payload in rows:
        if received_at.tzinfo is None:
            received_at = received_at.replace(tzinfo=dt.UTC)
        yield RawEvent(seq, received_at, payload)


def load_events(
    session: Session, system: str, *, linkedids: Iterable[str] | None = None, since: dt.datetime | None = None
) -> list[RawEvent]:
    return list(iter_events(session, system, linkedids=linkedids, since=since))


def warm_start(session: Session, system: str, correlator: Correlator) -> int:
    """Feed the correlator the stored events of calls still open; return the events fed."""
    open_ids = session.scalars(
        select(Call.linkedid).where(Call.system == system, Call.ended_at.is_(None), Call.started_at.is_not(None))
    ).all()
    events = load_events(session, system, linkedids=open_ids) if open_ids else []
    # and what tells when Asterisk was last heard from (the newest event of any call, the listener's
    # last connection-lost marker), so calls found gone at the next resync are closed as a rebuild would
    table = AmiEvent.__table__
    newest = select(table.c.seq, table.c.received_at, table.c.payload).where(table.c.system == system)
    for query in (
        # not a resync answer: without its request it would read as "no channel is alive"
        newest.where(table.c.event.not_in(("Response", "?", "CoreShowChannel", "CoreShowChannelsComplete"))),
        newest.where(table.c.event == CONNECTION_LOST),
    ):
        row = session.execute(query.order_by(table.c.seq.desc()).limit(1)).first()
        if row is not None and all(ev.seq != row.seq for ev in events):
            at = row.received_at if row.received_at.tzinfo else row.received_at.replace(tzinfo=dt.UTC)
            events.append(RawEvent(row.seq, at, row.payload))
    events.sort(key=lambda ev: ev.seq)
    correlator.feed_many(events)
    correlator.take_changed()
    correlator.take_lost()
    top = session.scalar(select(func.max(AmiEvent.seq)).where(AmiEvent.system == system))
    if top is not None and top > correlator.last_seq:
        correlator.last_seq = top
    return len(events)


# -- the sink --------------------------------------------------------------------


#: batches taken at once from a queue holding two batches or more, and replayed at once from the spool
BACKLOG_BATCHES = 4

#: at stop, seconds spent replaying the spool into the database before leaving the rest for the next start
STOP_REPLAY_SECONDS = 2.0


class EventSink:
    """Queue, batches, spool and correlation for one Asterisk system."""

    def __init__(
        self,
        system: str,
        session_factory: sessionmaker[Session],
        spool: Spool,
        *,
        correlator: Correlator | None = None,
        writer: CallWriter | None = None,
        queue_size: int = 50_000,
        batch_size: int = 500,
        retry_seconds: float = 2.0,
        clock: Callable[[], float] = time.time,
        cdr: CdrFile | None = None,
    ) -> None:
        self.system = system
        self.session_factory = session_factory
        self.spool = spool
        self.correlator = correlator or Correlator()
        self.writer = writer or CallWriter(system)
        #: Asterisk's CDR file (cdr_csv's Master.csv), read for calls that ended while calltrack was away
        self.cdr = cdr
        self.batch_size = batch_size
        self.retry_seconds = retry_seconds
        self.queue: asyncio.Queue[StoredEvent] = asyncio.Queue(maxsize=queue_size)
        self._spill_buf: list[StoredEvent] = []
        self._spilling = False
        self._retry: list[StoredEvent] | None = None
        self._clock = clock
        # arrival numbers keep growing across restarts even if the clock steps back
        self._last_seq = spool.last_seq()
        self._db_seq = 0
        self._stamp_for = -1.0
        self._stamp = dt.datetime.fromtimestamp(0, dt.UTC)
        self._conn = "0"
        self._n = 0
        self._pending: dict[str, CallSnapshot] = {}
        self._warm = False
        self._db_ok = True
        self._retry_at = 0.0
        self._stop_at: float | None = None
        self.received = 0
        self.stored = 0
        self.filtered = 0
        self.spooled = 0
        self.calls_written = 0
        self.db_failures = 0
        #: linkedids of the calls still ringing or being routed (Correlator.unsettled), as of the last stored batch
        self.unsettled: frozenset[str] = frozenset()

    # -- reader side (never waits) --

    def new_connection(self, connection_id: str) -> None:
        """Event keys are (connection id, arrival number): unique across reconnects and restarts."""
        self._conn = connection_id
        self._n = 0

    def put(self, message: Message, received: float | None = None) -> None:
        self.received += 1
        self._n += 1
        if not keep(message):
            self.filtered += 1
            return
        now = self._clock() if received is None else received
        seq = max(self._last_seq + 1, int(now * 1_000_000))
        self._last_seq = seq
        if now != self._stamp_for:  # the messages of one read share their arrival time
            self._stamp_for = now
            self._stamp = dt.datetime.fromtimestamp(now, dt.UTC)
        ev = make_event(seq, f"{self._conn}:{self._n}", self._stamp, message)
        if self._spilling:
            self._spill_buf.append(ev)
            if len(self._spill_buf) >= self.batch_size:
                self._spill()
            return
        try:
            self.queue.put_nowait(ev)
        except asyncio.QueueFull:
            # Never block the socket: the queue goes to the spool, in order, and so does what follows
            # until the writer has caught up.
            logger.warning(
                "AMI %s: %d events waiting for the database; spooling to %s",
                self.system,
                self.queue.qsize(),
                self.spool.path,
            )
            self._spilling = True
            self._spill_buf = self._take(self.queue.qsize())
            self._spill_buf.append(ev)
            self._spill()

    def _spill(self) -> None:
        if self._spill_buf:
            batch, self._spill_buf = self._spill_buf, []
            self._to_spool(batch)

    @property
    def held_for_retry(self) -> int:
        """Events of a batch the database refused, kept in memory to be retried before anything newer."""
        return len(self._retry or ())

    @property
    def backlog(self) -> int:
        return self.queue.qsize() + len(self._spill_buf)

    # -- writer side --

    async def run(self, stop: asyncio.Event) -> None:
        """Write until *stop* is set and everything received is stored or spooled."""
        while True:
            batch = await self._next_batch(stop)
            if batch:
                await self._handle(batch)
            if self._spilling:
                self._spill()
            if (self._retry is not None or self.spool.pending) and self._clock() >= self._retry_at:
                await self._catch_up(stop)
            if self._spilling and not self.spool.pending and not self._spill_buf and self._retry is None:
                self._spilling = False
                logger.info("AMI %s: caught up with the spool", self.system)
            if stop.is_set() and not self.queue.qsize():
                self._spill()
                if self._db_ok:
                    # a few seconds of replay at most: a spool left by a burst can take minutes, and
                    # waits as well for the next start
                    await self._catch_up(stop)
                if self._retry is not None:
                    # the database is still away: keep the failed batch, in arrival order, in the spool
                    self.spool.merge(self._retry)
                    self.spooled += len(self._retry)
                    self._retry = None
                elif self.spool.pending:
                    self.spool.compact()
                    logger.info(
                        "AMI %s: %d bytes of spooled events wait in %s for the next start",
                        self.system,
                        self.spool.pending_bytes,
                        self.spool.path,
                    )
                return

    def _take(self, limit: int) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        get = self.queue.get_nowait
        while len(out) < limit:
            try:
                out.append(get())
            except asyncio.QueueEmpty:
                break
        return out

    async def _next_batch(self, stop: asyncio.Event) -> list[StoredEvent]:
        if self.queue.qsize() == 0:
            if stop.is_set():
                return []
            waiter = asyncio.ensure_future(self.queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({waiter, stopper}, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if waiter in done:
                return [waiter.result(), *self._take(self.batch_size - 1)]
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
            if waiter.done() and not waiter.cancelled():  # got one while being cancelled
                return [waiter.result(), *self._take(self.batch_size - 1)]
            return []
        # a backlog goes in bigger transactions (as the spool replay does): a call open across
        # batches is rewritten once per batch, and every commit waits for the disk
        waiting = self.queue.qsize()
        return self._take(self.batch_size * BACKLOG_BATCHES if waiting >= 2 * self.batch_size else self.batch_size)

    async def _handle(self, batch: list[StoredEvent]) -> None:
        if self._retry is not None or self.spool.pending or not self._db_ok:
            # Keep order: while older events wait (failed batch, spool), newer ones go after them.
            self._to_spool(batch)
            return
        if not await self._store(batch):
            self._retry = batch  # retried first, before the spool and anything newer

    def _to_spool(self, batch: list[StoredEvent]) -> None:
        self.spool.append(batch)
        self.spooled += len(batch)

    def _replay_over(self, stop: asyncio.Event | None) -> bool:
        """Whether replaying must end: STOP_REPLAY_SECONDS after *stop* was first seen set."""
        if stop is None or not stop.is_set():
            return False
        if self._stop_at is None:
            self._stop_at = self._clock() + STOP_REPLAY_SECONDS
        return self._clock() >= self._stop_at

    async def _catch_up(self, stop: asyncio.Event | None = None) -> None:
        """Store the failed batch, then the spool in order; stop early for a filling queue, or a
        few seconds after *stop* is set (the rest waits in the spool)."""
        if self._retry is not None:
            if not await self._store(self._retry):
                return
            self._retry = None
        while self.spool.pending:
            if self._replay_over(stop):
                return
            events, offset = self.spool.read_chunk(self.batch_size * BACKLOG_BATCHES)
            if events and not await self._store(events):
                return
            self.spool.commit(offset)
            if self.queue.qsize() > self.queue.maxsize // 2:
                return  # let the socket side breathe; the rest follows

    async def _store(self, events: list[StoredEvent]) -> bool:
        try:
            await asyncio.to_thread(self._store_sync, events)
        except Exception as exc:  # the database, or a bug: either way the events stay safe in the spool
            self.db_failures += 1
            if not isinstance(exc, SQLAlchemyError):
                logger.exception("AMI %s: storing a batch failed; spooling it", self.system)
            if self._db_ok:
                logger.error(
                    "AMI %s: database unavailable, spooling events to %s: %s",
                    self.system,
                    self.spool.path,
                    str(exc).splitlines()[0],
                )
            self._db_ok = False
            self._retry_at = self._clock() + self.retry_seconds
            return False
        if self._db_seq > self._last_seq:
            self._last_seq = self._db_seq
        if not self._db_ok:
            logger.info("AMI %s: database back; spooled events replayed in order", self.system)
        self._db_ok = True
        self.stored += len(events)
        lost = self.correlator.take_lost()
        if lost:
            await self._read_cdrs(lost)
        return True

    async def _read_cdrs(self, lost: list[dict[str, Any]]) -> None:
        """Calls a resync found gone were closed at the last moment known alive; Asterisk's CDRs say when they ended.

        What Master.csv holds for those channels goes in as ``Cdr`` events, after everything received so
        far, so it is stored with the raw events and the correlator corrects the calls (and a rebuild does too).
        """
        if self.cdr is None:
            logger.info(
                "AMI %s: %d channel(s) ended while calltrack was not looking; their calls are closed at the last "
                "moment they were known alive and marked estimated (set cdr_csv for Asterisk's own end times)",
                self.system,
                len(lost),
            )
            return
        records = await asyncio.to_thread(self.cdr.records, lost)
        logger.info(
            "AMI %s: %d channel(s) ended while calltrack was not looking; %d record(s) of theirs in %s",
            self.system,
            len(lost),
            len(records),
            self.cdr.path,
        )
        for record in records:
            self.put(record)

    def _store_sync(self, events: list[StoredEvent]) -> None:
        try:
            self._store_in_transaction(events)
        except BaseException:
            self.writer.rolled_back()
            raise
        self.writer.committed()

    def _store_in_transaction(self, events: list[StoredEvent]) -> None:
        with self.session_factory() as session, session.begin():
            if not self._warm:
                fed = warm_start(session, self.system, self.correlator)
                self._db_seq = self.correlator.last_seq
                logger.info(
                    "AMI %s: resumed %d open calls (%d stored events)",
                    self.system,
                    len(self.correlator.open_calls()),
                    fed,
                )
                self._warm = True
            insert_events(session, self.system, events)
            self.correlator.feed_many(raw(ev) for ev in events)
            for snap in self.correlator.take_changed():
                self._pending[snap.linkedid] = snap
            for text_id, status in self.correlator.take_forwards():
                record_forward(session, self.system, text_id, status)
            # A failed commit leaves the snapshots pending: the next successful batch writes them.
            pending = list(self._pending.values())
            self.calls_written += self.writer.write(session, pending)
            self.unsettled = self.correlator.unsettled()
        self._pending.clear()


def rebuild(
    session: Session,
    system: str,
    *,
    since: dt.datetime | None = None,
    region: str = "US",
    geocode: bool = True,
    normalize: Callable[[str], str | None] | None = None,
    chunk: int = 50_000,
    attribution_grace: dt.timedelta = dt.timedelta(seconds=300),
) -> int:
    """Regenerate the calls of *system* from ``ami_events``; return the calls written.

    Events are read and calls written in chunks, so memory holds the calls in
    progress, not the whole history.
    """
    correlator = Correlator(normalize)
    # a rebuild rewrites history: receivers heard of these calls when they happened (or never wanted them)
    writer = CallWriter(system, region, geocode, attribution_grace, announce=False)
    written: set[str] = set()
    fed = 0
    for event in iter_events(session, system, since=since):
        correlator.feed(event)
        fed += 1
        if fed % chunk == 0:
            snaps = correlator.take_changed()  # calls still open are written live, then again when closed
            written.update(s.linkedid for s in snaps if s.merged_into is None)
            writer.write(session, snaps)
            writer.committed()  # one transaction: what was written is there for the next chunk
    snaps = correlator.take_changed()
    written.update(s.linkedid for s in snaps if s.merged_into is None)
    writer.write(session, snaps)
    return len(written)
