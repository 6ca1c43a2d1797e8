"""Routing policy for a call to a tracking number, and the database work of the AGI ``route``.

What a call to a tracking number should do is decided here, without sockets: which
number was dialled, which source (and, for a pool number, which website visit) it
belongs to, where it rings (several destinations ring at once: ``PJSIP/100&PJSIP/101``),
for how long, outside business hours where instead, whether it is recorded and
whispered, whether the caller is blocked and whether they call for the first time.
The call row is created in the same step (idempotent on system name + linkedid).

Two transports use it: the FastAGI server (threads of one long-lived process) and
the classic ``calltrack-agi`` script (one short process per call, which must start
fast). So this module talks to the database with plain SQL over the DB-API driver
(stdlib ``sqlite3``, or psycopg), imports only the standard library at import time,
and keeps the semantics of the SQLAlchemy helpers it stands in for on this path:
the lease choice of :func:`tracking.attribution.attribute` and the upsert of
:func:`tracking.calls.upsert_call` (tests check both agree).

Fail open: :meth:`CallRouter.run` never raises. A database error gives
``CALLTRACK_STATUS=fallback`` with the number's destination when it is known
(from this call's lookup or the router's cache of numbers), else the configured
fallback; the call row it could not write goes to a local spool (:class:`CallSpool`)
that is replayed into the database later, so no call row is lost.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tracking.dbapi import DriverConnections, pg_sql

if TYPE_CHECKING:
    from config import Settings

logger = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_UNKNOWN = "unknown-number"
STATUS_BLOCKED = "blocked"
STATUS_FALLBACK = "fallback"


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_HHMM = re.compile(r"([01]?[0-9]|2[0-4]):([0-5][0-9])")

# Column sizes of the calls table (PostgreSQL refuses longer values; peers may send anything).
_LIMITS = {
    "system": 100,
    "linkedid": 152,
    "uniqueid": 152,
    "tracking_number": 40,
    "caller_number": 64,
    "caller_name": 200,
}


def _clip(value: str | None, column: str) -> str | None:
    if value is None:
        return None
    return value[: _LIMITS[column]]


# --- what comes in, what goes out ------------------------------------------------------


@dataclass(frozen=True)
class RouteRequest:
    """One call as the AGI handler saw it."""

    #: the dialled tracking number as Asterisk gave it
    dialled: str
    caller_number: str
    caller_name: str
    #: the Asterisk system name and the inbound channel's linkedid: the call's key
    system: str
    linkedid: str
    uniqueid: str
    #: when the call reached calltrack (aware UTC)
    at: dt.datetime


@dataclass(frozen=True)
class NumberInfo:
    """A tracking number with what routing needs (one row of the lookup)."""

    id: int
    number: str
    account_id: int
    source_id: int | None
    pool_id: int | None
    forward_to: str
    ring_timeout: int
    record: bool
    whisper: str | None
    schedule: dict[str, Any] | None
    after_hours_forward_to: str | None
    status: str
    timezone: str
    source_name: str | None
    pool_source_id: int | None = None
    pool_source_name: str | None = None
    #: whether its account had, when it was looked up, an enabled endpoint taking call.started
    announces_start: bool = False


@dataclass(frozen=True)
class Visit:
    """The website visit whose pool lease covered a call (what it tells about the caller's origin)."""

    id: int
    source_id: int | None
    source_name: str | None
    landing_url: str | None = None
    referrer: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    gclid: str | None = None


@dataclass(frozen=True)
class Decision:
    """What the call does: the ``CALLTRACK_*`` variables and the call row's routing columns."""

    status: str
    dial: str
    timeout: int
    record: bool = False
    whisper: str = ""
    source_id: int | None = None
    source_name: str = ""
    number_id: int | None = None
    account_id: int | None = None
    first_time: bool | None = None
    after_hours: bool = False
    visit: Visit | None = None
    call_id: int | None = None
    recording_file: str = ""
    #: why a fallback, unknown-number or blocked decision was taken (for the log)
    reason: str = ""

    def variables(self) -> list[tuple[str, str]]:
        """The ``CALLTRACK_*`` channel variables of the dialplan contract, as (name, value) pairs."""
        return [
            ("CALLTRACK_STATUS", self.status),
            ("CALLTRACK_CALL_ID", "" if self.call_id is None else str(self.call_id)),
            ("CALLTRACK_DIAL", self.dial),
            ("CALLTRACK_DIAL_TIMEOUT", str(self.timeout)),
            ("CALLTRACK_RECORD", "1" if self.record and self.recording_file else "0"),
            ("CALLTRACK_RECORDING_FILE", self.recording_file if self.record else ""),
            ("CALLTRACK_SOURCE", self.source_name),
            ("CALLTRACK_WHISPER", self.whisper),
            ("CALLTRACK_FIRST_TIME", "" if self.first_time is None else ("1" if self.first_time else "0")),
            ("CALLTRACK_AFTER_HOURS", "1" if self.after_hours else "0"),
        ]


# --- the policy (pure) ------------------------------------------------------------------


def _minutes(text: str) -> int:
    if not isinstance(text, str):
        raise ValueError(f"invalid time {text!r} (use HH:MM)")
    return _clock_minutes(text)


@functools.lru_cache(maxsize=1024)
def _clock_minutes(text: str) -> int:
    """Minutes since midnight of ``HH:MM`` (every call reads its number's schedule: remembered)."""
    m = _HHMM.fullmatch(text.strip())
    if m is None or (m.group(1) == "24" and m.group(2) != "00"):
        raise ValueError(f"invalid time {text!r} (use HH:MM)")
    return int(m.group(1)) * 60 + int(m.group(2))


def _ranges(schedule: dict[str, Any], day: str) -> Iterator[tuple[int, int]]:
    for item in schedule.get(day) or ():
        start, end = item
        yield _minutes(start), _minutes(end)


def validate_schedule(schedule: dict[str, Any]) -> dict[str, Any]:
    """*schedule* checked (``{"mon": [["09:00", "17:00"]], ...}``); raises ValueError naming the problem."""
    for day, ranges in schedule.items():
        if day not in DAYS:
            raise ValueError(f"unknown day {day!r} in schedule (use {', '.join(DAYS)})")
        if not isinstance(ranges, list) or not all(isinstance(r, list | tuple) and len(r) == 2 for r in ranges):
            raise ValueError(f"schedule {day}: a list of [start, end] pairs")
        list(_ranges(schedule, day))
    return schedule


def is_open(schedule: dict[str, Any] | None, timezone: str, at: dt.datetime) -> bool:
    """Whether *at* falls in business hours of *schedule*, read in *timezone*.

    No schedule means always open. A day missing from a schedule is closed. A range
    whose end is not after its start runs past midnight (``["22:00", "02:00"]``);
    ``["00:00", "24:00"]`` is the whole day.
    """
    if not schedule:
        return True
    from zoneinfo import ZoneInfo

    local = at.astimezone(ZoneInfo(timezone))
    day = local.weekday()
    minute = local.hour * 60 + local.minute
    for start, end in _ranges(schedule, DAYS[day]):
        if start < end and start <= minute < end:
            return True
        if end <= start and minute >= start:
            return True
    for start, end in _ranges(schedule, DAYS[(day - 1) % 7]):
        if end <= start and minute < end:
            return True
    return False


def _open_or_fail_open(info: NumberInfo, at: dt.datetime) -> bool:
    try:
        return is_open(info.schedule, info.timezone, at)
    except Exception as exc:  # a broken schedule or timezone must not stop the call
        logger.warning("number %s: cannot read its schedule (%s); treating it as open", info.number, exc)
        return True


def decide(
    info: NumberInfo,
    at: dt.datetime,
    *,
    blocked: bool = False,
    first_time: bool | None = None,
    visit: Visit | None = None,
) -> Decision:
    """The routing of a call to the active number *info* at *at*."""
    source_id: int | None
    source_name: str | None
    if visit is not None and visit.source_id is not None:
        source_id, source_name = visit.source_id, visit.source_name
    elif info.pool_id is not None:
        source_id, source_name = info.pool_source_id, info.pool_source_name
    else:
        source_id, source_name = info.source_id, info.source_name
    common: dict[str, Any] = {
        "source_id": source_id,
        "source_name": source_name or "",
        "number_id": info.id,
        "account_id": info.account_id,
        "first_time": first_time,
        "visit": visit,
    }
    if blocked:
        # spam is nobody's first call: a blocked caller gets no first-time flag
        common["first_time"] = None
        return Decision(STATUS_BLOCKED, "", 0, reason="caller is on the blocked list", **common)
    open_now = _open_or_fail_open(info, at)
    dial = info.forward_to
    if not open_now and info.after_hours_forward_to:
        dial = info.after_hours_forward_to
    return Decision(
        STATUS_OK,
        dial,
        info.ring_timeout,
        record=info.record,
        whisper=info.whisper or "",
        after_hours=not open_now,
        **common,
    )


_WHISPER = re.compile(r"[A-Za-z0-9_./-]+")


def unsafe(decision: Decision) -> str:
    """What makes *decision* unsafe to give Asterisk (a dial string or whisper it would misread), or ""."""
    from tracking.dialstring import validate
    from tracking.errors import InvalidInput

    if decision.dial:
        try:
            validate(decision.dial)
        except InvalidInput as exc:
            return str(exc)
    if decision.whisper and (not _WHISPER.fullmatch(decision.whisper) or ".." in decision.whisper.split("/")):
        return f"invalid whisper file {decision.whisper!r}"
    return ""


def fallback(
    settings: Settings,
    info: NumberInfo | None,
    reason: str,
    at: dt.datetime | None = None,
    *,
    recording_file: str = "",
) -> Decision:
    """Routing when tracking failed: the number's destination if known, else the configured fallback.

    With *recording_file* (the number records, the caller may be recorded and the call
    has a key to name the file by), the call is recorded as the number says.
    """
    if info is not None and info.status == "active" and not unsafe(decide(info, at or dt.datetime.now(dt.UTC))):
        ok = decide(info, at or dt.datetime.now(dt.UTC))
        return Decision(
            STATUS_FALLBACK,
            ok.dial,
            ok.timeout,
            record=info.record and bool(recording_file),
            recording_file=recording_file if info.record else "",
            whisper=ok.whisper,
            source_id=ok.source_id,
            source_name=ok.source_name,
            number_id=info.id,
            account_id=info.account_id,
            after_hours=ok.after_hours,
            reason=reason,
        )
    return Decision(STATUS_FALLBACK, settings.agi.fallback_dial, settings.agi.fallback_timeout, reason=reason)


def unknown(settings: Settings, reason: str, info: NumberInfo | None = None) -> Decision:
    """A number that does not route (unknown, released): the configured fallback destination."""
    return Decision(
        STATUS_UNKNOWN,
        settings.agi.fallback_dial,
        settings.agi.fallback_timeout,
        number_id=info.id if info else None,
        account_id=info.account_id if info else None,
        reason=reason,
    )


def recording_path(settings: Settings, call_id: int) -> str:
    """Where MixMonitor writes the call's audio: the spool folder, named by the call id."""
    return os.path.join(settings.recorder.spool_dir, f"{call_id}.wav")


def key_recording_path(settings: Settings, system: str, linkedid: str) -> str:
    """Where a call routed without its id (fallback) records: named by its key (tracking.recording_names)."""
    from tracking.recording_names import key_stem

    return os.path.join(settings.recorder.spool_dir, key_stem(system, linkedid) + ".wav")


def caller_key(raw: str, region: str) -> str | None:
    """The caller number as stored (E.164 when it parses, else as given); None when withheld."""
    text = raw.strip()
    if not text or text.lower() in ("unknown", "anonymous", "restricted", "<unknown>"):
        return None
    if _E164.fullmatch(text):
        return text
    if len(text) <= 32 and all(ch in "0123456789+-(). " for ch in text):
        from tracking.phone import try_normalize  # phonenumbers only when needed

        return try_normalize(text, region) or text
    return text


def dialled_key(raw: str, region: str) -> str | None:
    """The dialled number as E.164, or None when it is not a phone number."""
    text = raw.strip()
    if _E164.fullmatch(text):
        return text
    if not text or len(text) > 32 or not all(ch in "0123456789+-(). " for ch in text):
        return None
    from tracking.phone import try_normalize

    return try_normalize(text, region)


# --- the database ------------------------------------------------------------------------

# "account_id + 0" keeps SQLite on the caller index (ix_calls_caller): on account_id it would
# scan every call of the account, which grows with the business.
_NUMBER_SQL = """
SELECT tn.id, tn.number, tn.account_id, tn.source_id, tn.pool_id, tn.forward_to, tn.ring_timeout, tn.record,
       tn.whisper, tn.schedule, tn.after_hours_forward_to, tn.status, a.timezone, s.name, np.source_id, ps.name,
       (SELECT count(*) FROM caller_lists cl WHERE cl.kind = 'blocked' AND cl.number IN (:caller, :caller_raw)
          AND (cl.account_id IS NULL OR cl.account_id = tn.account_id)),
       (SELECT count(*) FROM caller_lists cl WHERE cl.kind = 'do-not-track' AND cl.number IN (:caller, :caller_raw)
          AND (cl.account_id IS NULL OR cl.account_id = tn.account_id)),
       CASE WHEN EXISTS (SELECT 1 FROM calls c WHERE c.caller_number = :caller AND c.account_id + 0 = tn.account_id
          AND NOT (c.system = :system AND c.linkedid = :linkedid)
          AND (c.disposition IS NULL OR c.disposition <> 'blocked')) THEN 1 ELSE 0 END,
       CASE WHEN EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.account_id = tn.account_id AND e.enabled
          AND e.events LIKE '%,call.started,%') THEN 1 ELSE 0 END
FROM tracking_numbers tn
JOIN accounts a ON a.id = tn.account_id
LEFT JOIN sources s ON s.id = tn.source_id
LEFT JOIN number_pools np ON np.id = tn.pool_id
LEFT JOIN sources ps ON ps.id = np.source_id
WHERE tn.number = :number
"""

_ALL_NUMBERS_SQL = """
SELECT tn.id, tn.number, tn.account_id, tn.source_id, tn.pool_id, tn.forward_to, tn.ring_timeout, tn.record,
       tn.whisper, tn.schedule, tn.after_hours_forward_to, tn.status, a.timezone, s.name, np.source_id, ps.name
FROM tracking_numbers tn
JOIN accounts a ON a.id = tn.account_id
LEFT JOIN sources s ON s.id = tn.source_id
LEFT JOIN number_pools np ON np.id = tn.pool_id
LEFT JOIN sources ps ON ps.id = np.source_id
WHERE tn.status = 'active'
"""

# The same choice as tracking.attribution.lease_at: the newest lease that started before
# the call and ended no more than the grace window before it.
_VISIT_SQL = """
SELECT vs.id, vs.source_id, s.name, vs.landing_url, vs.referrer, vs.utm_source, vs.utm_medium, vs.utm_campaign,
       vs.utm_term, vs.utm_content, vs.gclid
FROM pool_leases pl
JOIN visitor_sessions vs ON vs.id = pl.session_id
LEFT JOIN sources s ON s.id = vs.source_id
WHERE pl.number_id = :number_id AND pl.leased_at <= :at AND pl.expires_at >= :earliest
ORDER BY pl.leased_at DESC, pl.id DESC
LIMIT 1
"""

#: what the route writes; on a second run for the same call, only columns still empty are filled
CALL_COLUMNS = (
    "uniqueid",
    "account_id",
    "tracking_number_id",
    "tracking_number",
    "source_id",
    "visitor_session_id",
    "caller_number",
    "caller_name",
    "first_time",
    "route_status",
    "dial",
    "started_at",
    "after_hours",
    "disposition",
    "do_not_track",
)

# The route's upsert, built from the constant CALL_COLUMNS only (every value is a bound parameter).
# SQLite: it names the recording file in the same statement. The id of a new row is the one SQLite
# itself would give it (one more than the largest: calls.id has no AUTOINCREMENT), taken explicitly
# so the name can be made from it; the statement holds the write lock from its read to its write.
_SQLITE_RECORDING = (
    "CASE WHEN :recording_file <> '' THEN :recording_file WHEN :recording_dir IS NULL THEN NULL "
    "ELSE :recording_dir || '/' || {id} || '.wav' END"
)
_SQLITE_NEXT_ID = "(COALESCE((SELECT MAX(id) FROM calls), 0) + 1)"
_SQLITE_UPSERT_SQL = (
    "INSERT INTO calls (id, system, linkedid, created_at, updated_at, recording_file, "  # noqa: S608
    + ", ".join(CALL_COLUMNS)
    + f") VALUES ({_SQLITE_NEXT_ID}, :system, :linkedid, :now, :now, "
    + _SQLITE_RECORDING.format(id=_SQLITE_NEXT_ID)
    + ", "
    + ", ".join(":" + c for c in CALL_COLUMNS)
    + ") ON CONFLICT (system, linkedid) DO UPDATE SET updated_at = excluded.updated_at, "
    + ", ".join(f"{c} = COALESCE(calls.{c}, excluded.{c})" for c in CALL_COLUMNS)
    + ", recording_file = COALESCE(calls.recording_file, "
    + _SQLITE_RECORDING.format(id="calls.id")
    + ") RETURNING id"
)
# PostgreSQL: the same upsert, naming the recording file in the same statement (on the
# insert path from the fresh id, on the conflict path from the existing row's id).
PG_UPSERT_SQL = (
    "WITH n AS (SELECT nextval(pg_get_serial_sequence('calls', 'id')) AS id), c AS ("  # noqa: S608
    "INSERT INTO calls (id, system, linkedid, created_at, updated_at, recording_file, "
    + ", ".join(CALL_COLUMNS)
    + ") SELECT n.id, %(system)s, %(linkedid)s, %(now)s, %(now)s, "
    "CASE WHEN %(recording_dir)s::text IS NULL THEN NULL ELSE %(recording_dir)s::text || '/' || n.id || '.wav' END, "
    + ", ".join(f"%({c})s" for c in CALL_COLUMNS)
    + " FROM n ON CONFLICT (system, linkedid) DO UPDATE SET updated_at = excluded.updated_at, "
    + ", ".join(f"{c} = COALESCE(calls.{c}, excluded.{c})" for c in CALL_COLUMNS)
    + ", recording_file = COALESCE(calls.recording_file, CASE WHEN %(recording_dir)s::text IS NULL THEN NULL "
    "ELSE %(recording_dir)s::text || '/' || calls.id || '.wav' END) RETURNING id, account_id, do_not_track), "
    # call.started in the same statement (so the same transaction) as the row; see _ANNOUNCE_SQL
    "ev AS (INSERT INTO outbox_events (event_id, type, account_id, call_id, dedupe_key, occurred_at) "
    "SELECT %(event_id)s, 'call.started', c.account_id, c.id, 'call.started:' || c.id, %(now)s FROM c "
    "WHERE c.account_id IS NOT NULL AND (c.do_not_track IS NULL OR NOT c.do_not_track) AND EXISTS ("
    "SELECT 1 FROM webhook_endpoints e WHERE e.account_id = c.account_id AND e.enabled AND e.events LIKE %(started)s) "
    "ON CONFLICT (dedupe_key) DO NOTHING) "
    "SELECT id FROM c"
)
# The route's outbox event (tracking/outbox.py): call.started, once per call, for an account with an
# enabled endpoint that takes it, never for a do-not-track caller; in the call row's transaction.
_ANNOUNCE_SQL = (
    "INSERT INTO outbox_events (event_id, type, account_id, call_id, dedupe_key, occurred_at) "
    "SELECT :event_id, 'call.started', c.account_id, c.id, 'call.started:' || c.id, :now FROM calls c "
    "WHERE c.id = :call_id AND c.account_id IS NOT NULL AND (c.do_not_track IS NULL OR NOT c.do_not_track) "
    "AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.account_id = c.account_id AND e.enabled "
    "AND e.events LIKE '%,call.started,%') ON CONFLICT (dedupe_key) DO NOTHING"
)
# a bound LIKE pattern would make SQLite prepare its statement anew on every run: literal above
_STARTED_PATTERN = "%,call.started,%"
_RECORDING_SQL = "UPDATE calls SET recording_file = :file WHERE id = :id AND recording_file IS NULL"
_MARK_FALLBACK_SQL = (
    "UPDATE calls SET route_status = :status, dial = :dial, recording_file = :file, updated_at = :now WHERE id = :id"
)
#: the statements as psycopg takes them (tracking/route_async.py sends them from the event loop)
PG_NUMBER_SQL = pg_sql(_NUMBER_SQL)
PG_VISIT_SQL = pg_sql(_VISIT_SQL)
PG_RECORDING_SQL = pg_sql(_RECORDING_SQL)
PG_MARK_FALLBACK_SQL = pg_sql(_MARK_FALLBACK_SQL)

# The statements' parameters and the lookup's result, shared by RouteStore (a thread's connection,
# both databases) and tracking.route_async.AsyncRouteStore (PostgreSQL on the event loop); *ts* is
# the store's time-to-parameter conversion (DriverConnections.ts).
Ts = Callable[[dt.datetime], Any]


def lookup_params(number: str, caller: str | None, caller_raw: str, system: str, linkedid: str) -> dict[str, Any]:
    return {
        "number": number,
        "caller": caller or "",
        "caller_raw": caller_raw or "",
        "system": system,
        "linkedid": linkedid,
    }


def lookup_result(
    row: tuple[Any, ...] | None, caller: str | None, caller_raw: str
) -> tuple[NumberInfo, CallerFacts] | None:
    if row is None:
        return None
    facts = CallerFacts(
        blocked=bool(caller_raw or caller) and row[16] > 0,
        do_not_track=bool(caller_raw or caller) and row[17] > 0,
        seen_before=caller is not None and bool(row[18]),
    )
    return _row_to_number(row, bool(row[19])), facts


def visit_params(ts: Ts, number_id: int, at: dt.datetime, grace: dt.timedelta) -> dict[str, Any]:
    return {"number_id": number_id, "at": ts(at), "earliest": ts(at - grace)}


def call_params(
    ts: Ts, system: str, linkedid: str, values: dict[str, Any], recording_dir: str | None
) -> dict[str, Any]:
    params = {c: values.get(c) for c in CALL_COLUMNS}
    params["system"] = system
    params["linkedid"] = linkedid
    params["now"] = ts(dt.datetime.now(dt.UTC))
    if isinstance(params["started_at"], dt.datetime):
        params["started_at"] = ts(params["started_at"])
    params["recording_dir"] = None if recording_dir is None else recording_dir.rstrip("/")
    return params


def pg_call_params(params: dict[str, Any]) -> dict[str, Any]:
    """*params* (call_params) with what PG_UPSERT_SQL adds: its call.started event's id and pattern."""
    params["event_id"] = "evt_" + uuid.uuid4().hex
    params["started"] = _STARTED_PATTERN
    return params


def mark_fallback_params(ts: Ts, call_id: int, decision: Decision) -> dict[str, Any]:
    return {
        "status": decision.status,
        "dial": decision.dial,
        "file": decision.recording_file if decision.record else None,
        "id": call_id,
        "now": ts(dt.datetime.now(dt.UTC)),
    }


@functools.lru_cache(maxsize=1024)
def _schedule(text: str) -> Any:
    """A schedule as SQLite returns it (JSON text), parsed once for the lookups of every call: read only."""
    return json.loads(text) if text else None


def _row_to_number(row: tuple[Any, ...], announces_start: bool = False) -> NumberInfo:
    schedule = row[9]
    if isinstance(schedule, str):
        schedule = _schedule(schedule)
    return NumberInfo(
        id=row[0],
        number=row[1],
        account_id=row[2],
        source_id=row[3],
        pool_id=row[4],
        forward_to=row[5],
        ring_timeout=row[6],
        record=bool(row[7]),
        whisper=row[8],
        schedule=schedule or None,
        after_hours_forward_to=row[10],
        status=row[11],
        timezone=row[12] or "UTC",
        source_name=row[13],
        pool_source_id=row[14],
        pool_source_name=row[15],
        announces_start=announces_start,
    )


@dataclass(frozen=True)
class CallerFacts:
    blocked: bool
    do_not_track: bool
    seen_before: bool


class RouteStore(DriverConnections):
    """The route's database access: one DB-API connection per thread, plain SQL, both dialects.

    *url* is the SQLAlchemy-style URL of the settings (``sqlite:///path``,
    ``postgresql://...``). A connection that failed is dropped and opened anew on
    the next call, so a database that comes back is used again (tracking/dbapi.py).
    """

    # queries

    def lookup(
        self, number: str, caller: str | None, caller_raw: str, system: str, linkedid: str
    ) -> tuple[NumberInfo, CallerFacts] | None:
        row = self.execute(_NUMBER_SQL, lookup_params(number, caller, caller_raw, system, linkedid)).fetchone()
        return lookup_result(row, caller, caller_raw)

    def not_tracked(self) -> set[tuple[int | None, str]]:
        rows = self.execute("SELECT account_id, number FROM caller_lists WHERE kind = 'do-not-track'").fetchall()
        return {(row[0], row[1]) for row in rows}

    def active_numbers(self) -> list[NumberInfo]:
        return [_row_to_number(row) for row in self.execute(_ALL_NUMBERS_SQL).fetchall()]

    def visit(self, number_id: int, at: dt.datetime, grace: dt.timedelta) -> Visit | None:
        row = self.execute(_VISIT_SQL, visit_params(self.ts, number_id, at, grace)).fetchone()
        return Visit(*row) if row is not None else None

    def save_call(
        self,
        system: str,
        linkedid: str,
        values: dict[str, Any],
        recording_dir: str | None,
        recording_file: str = "",
        *,
        announce: bool = True,
    ) -> int:
        """Upsert the call in one transaction; name its recording file by *recording_dir* (and its id) or
        as *recording_file* (a fallback call's, named by its key), unless the row already names one. Its id.

        With *announce* False (the lookup found no endpoint of the account taking call.started),
        SQLite skips the outbox statement, and the row is one statement, committed on its own.
        """
        params = call_params(self.ts, system, linkedid, values, recording_dir)
        cur = self.connection().cursor()
        if self.dialect == "postgresql":
            # one statement, one round trip: the id comes from the sequence first, so the
            # recording's name can be written with the row (autocommit makes it atomic)
            cur.execute(PG_UPSERT_SQL, pg_call_params(params))
            pg_id: int = cur.fetchone()[0]
            if recording_file:  # only spooled fallback rows: a second statement is fine
                cur.execute(PG_RECORDING_SQL, {"file": recording_file, "id": pg_id})
            return pg_id
        params["recording_file"] = recording_file
        if not announce:
            # fetchall: the statement runs to its end, which commits it (fetchone would hold the lock)
            only: int = cur.execute(_SQLITE_UPSERT_SQL, params).fetchall()[0][0]
            return only
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.execute(_SQLITE_UPSERT_SQL, params)
            call_id: int = cur.fetchall()[0][0]
            cur.execute(
                _ANNOUNCE_SQL,
                {"event_id": "evt_" + uuid.uuid4().hex, "now": params["now"], "call_id": call_id},
            )
            cur.execute("COMMIT")
        except BaseException:
            try:
                cur.execute("ROLLBACK")
            except Exception:
                pass
            raise
        return call_id

    def warm(self) -> None:
        """Open this thread's connection and run the route's statements once (prepared, pages read)."""
        self.lookup("+10000000000", "+10000000000", "+10000000000", "", "")
        self.execute(
            "SELECT 1 FROM calls WHERE system = :system AND linkedid = :linkedid", {"system": "", "linkedid": ""}
        ).fetchall()

    def checkpoint(self) -> None:
        """SQLite: copy the write-ahead log back into the database file (PASSIVE: never waits)."""
        if self.dialect == "sqlite":
            self.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def mark_fallback(self, call_id: int, decision: Decision) -> None:
        self.execute(_MARK_FALLBACK_SQL, mark_fallback_params(self.ts, call_id, decision))


# --- the spool of call rows not yet written ----------------------------------------------


class CallSpool:
    """Call rows the database did not take, kept in a local file until it does.

    One JSON object a line, appended with one write() and fsync'd under an flock, so
    concurrent writers (FastAGI threads, classic AGI processes) never interleave, a
    crash loses nothing that was acknowledged, and no line lands in a file that
    :meth:`replay` has already moved aside. Replay upserts every row (idempotent: a
    row replayed twice is one call); what fails stays for the next attempt. One replay
    at a time, across threads and processes (the server's own, ``calltrack agi replay``):
    a second waits for the first, then finds what is left.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "pending.jsonl"
        self._lock = threading.Lock()
        self._replaying = threading.Lock()

    def append(self, system: str, linkedid: str, values: dict[str, Any]) -> None:
        record = {"system": system, "linkedid": linkedid, "values": _jsonable(values)}
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        import fcntl

        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    # replay() renames the file under the same lock: write only to the current one
                    if os.path.exists(self.path) and os.path.samestat(os.fstat(fd), os.stat(self.path)):
                        os.write(fd, line)
                        os.fsync(fd)
                        return
                finally:
                    os.close(fd)  # also releases the lock

    def pending(self) -> int:
        count = 0
        for path in self._files():
            with open(path, "rb") as fh:
                count += sum(1 for line in fh if line.strip())
        return count

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("replaying-*.jsonl")) + ([self.path] if self.path.exists() else [])

    def replay(self, store: RouteStore) -> int:
        """Write spooled rows into the database; the number written. Raises when the database is away."""
        import fcntl

        if not self.folder.is_dir():
            return 0
        # Two replays at once would both write the rows moved aside and both delete their file (the
        # second deleting nothing, and raising): the whole replay holds this lock, a file's flock
        # for other processes, beside the appenders' lock (never held while the database is asked).
        with self._replaying:
            fd = os.open(self.folder / "replay.lock", os.O_RDWR | os.O_CREAT, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                return self._replay(store)
            finally:
                os.close(fd)  # also releases the flock

    def _replay(self, store: RouteStore) -> int:
        import fcntl

        with self._lock:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                fd = -1
            if fd >= 0:
                try:
                    # no writer is between its check and its write (see append)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
                    os.replace(self.path, self.folder / f"replaying-{stamp}-{os.getpid()}.jsonl")
                finally:
                    os.close(fd)
        written = 0
        for path in self._files():
            if path == self.path:
                continue
            lines = path.read_bytes().splitlines()
            for index, raw in enumerate(lines):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                    values = _from_jsonable(record["values"])
                    recording_file = str(record["values"].get("recording_file") or "")
                    system, linkedid = str(record["system"]), str(record["linkedid"])
                except (ValueError, KeyError, TypeError) as exc:
                    logger.error("agi spool %s line %d unreadable, skipped: %s", path, index + 1, exc)
                    continue
                try:
                    store.save_call(system, linkedid, values, None, recording_file)
                except Exception:
                    store.discard()
                    rest = b"\n".join(lines[index:]) + b"\n"
                    tmp = path.with_suffix(".tmp")
                    tmp.write_bytes(rest)
                    os.replace(tmp, path)
                    raise
                written += 1
            path.unlink()
        return written


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in values.items()}


def _from_jsonable(values: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in values.items() if k in CALL_COLUMNS}
    if isinstance(out.get("started_at"), str):
        out["started_at"] = dt.datetime.fromisoformat(out["started_at"])
    return out


def spool_folder(settings: Settings) -> Path:
    """The AGI spool: ``agi.spool_dir``, else ``data_dir/agi-spool``."""
    return Path(settings.agi.spool_dir) if settings.agi.spool_dir else settings.general.data_dir / "agi-spool"


# --- the router: one call's database work, with its fallback --------------------------------


#: a routing step: a store method's name, its positional and keyword arguments
Step = tuple[str, tuple[Any, ...], dict[str, Any]]


class AsyncStore(Protocol):
    """The route's store with coroutine methods (tracking.route_async.AsyncRouteStore)."""

    async def lookup(
        self, number: str, caller: str | None, caller_raw: str, system: str, linkedid: str
    ) -> tuple[NumberInfo, CallerFacts] | None: ...

    async def visit(self, number_id: int, at: dt.datetime, grace: dt.timedelta) -> Visit | None: ...

    async def save_call(
        self, system: str, linkedid: str, values: dict[str, Any], recording_dir: str | None, *, announce: bool = True
    ) -> int: ...

    async def mark_fallback(self, call_id: int, decision: Decision) -> None: ...


@dataclass
class RouteJob:
    """One call's routing, run in a worker thread; the caller may give up on it at a deadline.

    :meth:`run` does the database work; :meth:`abandon` (from the waiting side) gives
    the fallback decision instead. Whichever comes second sees the other: a job
    abandoned before it finished marks its call row as fallback, so the row says
    what Asterisk was told.
    """

    router: CallRouter
    request: RouteRequest
    number: NumberInfo | None = None
    #: the caller's facts from this call's lookup (do-not-track decides a fallback's recording)
    facts: CallerFacts | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _finished: Decision | None = None
    _abandoned: Decision | None = None

    def run(self) -> Decision:
        router = self.router
        try:
            decision = router.route(self.request, self)
        except Exception as exc:
            router.store.discard()
            decision, told = self._failed(exc)
            router.spool(self.request, told)
            return decision
        abandoned = self._done(decision)
        if abandoned is not None and decision.call_id is not None:
            try:
                router.store.mark_fallback(decision.call_id, abandoned)
            except Exception as exc:
                router.store.discard()
                logger.error("call %s: cannot mark it as routed by fallback: %s", decision.call_id, exc)
        return decision

    async def run_async(self, store: AsyncStore) -> Decision:
        """:meth:`run` on the event loop, its statements sent by *store* (tracking/route_async.py)."""
        import asyncio

        router = self.router
        try:
            decision = await router.route_async(self.request, self, store)
        except Exception as exc:
            decision, told = self._failed(exc)
            # the spool's fsync: not on the event loop
            await asyncio.get_running_loop().run_in_executor(None, router.spool, self.request, told)
            return decision
        abandoned = self._done(decision)
        if abandoned is not None and decision.call_id is not None:
            try:
                await store.mark_fallback(decision.call_id, abandoned)
            except Exception as exc:
                logger.error("call %s: cannot mark it as routed by fallback: %s", decision.call_id, exc)
        return decision

    def _failed(self, exc: Exception) -> tuple[Decision, Decision]:
        """The fallback decision for a routing that raised *exc*, and what Asterisk was told (to spool)."""
        router = self.router
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if type(exc).__module__.split(".")[0] in ("sqlite3", "psycopg"):
            reason = f"database error: {type(exc).__name__}: {detail}"
        else:  # a bug: keep its traceback
            logger.exception("routing %s/%s failed", self.request.system, self.request.linkedid)
            reason = f"routing error: {type(exc).__name__}: {detail}"
        decision = router.fallback(self.request, self.number or router.cached(self.request), reason, self.facts)
        with self._lock:
            self._finished = decision
            told = self._abandoned or decision
        return decision, told

    def _done(self, decision: Decision) -> Decision | None:
        """Record *decision* as finished; the fallback given meanwhile, if the job was abandoned."""
        with self._lock:
            self._finished = decision
            return self._abandoned

    def abandon(self, reason: str) -> Decision:
        """The decision to give now: the job's own if it just finished, else the fallback."""
        with self._lock:
            if self._finished is not None:
                return self._finished
            self._abandoned = self.router.fallback(
                self.request, self.number or self.router.cached(self.request), reason, self.facts
            )
            return self._abandoned


class CallRouter:
    """Routes calls: looks numbers up, attributes, decides and writes the call row.

    Keeps a cache of the active numbers, refreshed by every lookup and by
    :meth:`warm`, used only to route to a number's own destination when the
    database cannot answer in time.
    """

    def __init__(self, settings: Settings, store: RouteStore, spool: CallSpool | None = None) -> None:
        self.settings = settings
        self.store = store
        self.spool_ = spool if spool is not None else CallSpool(spool_folder(settings))
        self._numbers: dict[str, NumberInfo] = {}
        self._dialled: dict[tuple[str, str], str | None] = {}
        #: (account id or None for every account, number) of the do-not-track list, for fallbacks
        self._not_tracked: set[tuple[int | None, str]] = set()

    # caches

    def warm(self) -> int:
        """Load every active number (and the do-not-track list) into the fallback cache; how many numbers.

        Also pays what the first call would otherwise pay on the hot path: the imports of
        phonenumbers and the dial string checks, the time zones of the numbers' accounts.
        """
        numbers = self.store.active_numbers()
        self._numbers = {n.number: n for n in numbers}
        self._not_tracked = self.store.not_tracked()
        caller_key("2025550123", self.settings.numbers.default_region)  # imports phonenumbers, loads the region
        now = dt.datetime.now(dt.UTC)
        for info in {n.timezone: n for n in numbers}.values():
            unsafe(decide(info, now))  # the account's ZoneInfo, tracking.dialstring
        return len(numbers)

    def clear(self) -> None:
        self._numbers = {}
        self._dialled = {}
        self._not_tracked = set()

    def not_tracked(self, request: RouteRequest, account_id: int | None) -> bool:
        """From the cache: whether the caller is on a do-not-track list that covers *account_id*."""
        if not self._not_tracked:
            return False
        caller = caller_key(request.caller_number, self.settings.numbers.default_region)
        raw = request.caller_number.strip().lower()
        return any(
            (account, number) in self._not_tracked
            for account in {None, account_id}
            for number in (caller, raw)
            if number
        )

    def fallback(
        self, request: RouteRequest, info: NumberInfo | None, reason: str, facts: CallerFacts | None = None
    ) -> Decision:
        """The fallback decision for *request*, recorded as *info* says unless the caller is not tracked
        (by this call's lookup when it got that far, else by the cached list)."""
        recording_file = ""
        not_tracked = (
            facts.do_not_track if facts is not None else self.not_tracked(request, info.account_id if info else None)
        )
        if info is not None and info.record and request.linkedid and not not_tracked:
            recording_file = key_recording_path(self.settings, request.system, request.linkedid)
        return fallback(self.settings, info, reason, request.at, recording_file=recording_file)

    def e164(self, dialled: str) -> str | None:
        """The dialled number as E.164 (remembered: phonenumbers is slow and DIDs repeat)."""
        key = (dialled, self.settings.numbers.default_region)
        try:
            return self._dialled[key]
        except KeyError:
            pass
        value = dialled_key(dialled, key[1])
        if len(self._dialled) > 10_000:
            self._dialled = {}
        self._dialled[key] = value
        return value

    def cached(self, request: RouteRequest) -> NumberInfo | None:
        number = self.e164(request.dialled)
        return self._numbers.get(number) if number else None

    # routing

    def job(self, request: RouteRequest) -> RouteJob:
        return RouteJob(self, request)

    def run(self, request: RouteRequest) -> Decision:
        """Route *request* now, in this thread; never raises."""
        return self.job(request).run()

    def route(self, request: RouteRequest, job: RouteJob | None = None, store: RouteStore | None = None) -> Decision:
        """The database work of one call. Raises on database errors (see :meth:`run`)."""
        store = store or self.store
        steps = self._route_steps(request, job)
        try:
            name, args, kwargs = next(steps)
            while True:
                name, args, kwargs = steps.send(getattr(store, name)(*args, **kwargs))
        except StopIteration as done:
            decision: Decision = done.value
            return decision

    async def route_async(self, request: RouteRequest, job: RouteJob | None, store: AsyncStore) -> Decision:
        """:meth:`route` on a store whose methods are coroutines (tracking/route_async.py)."""
        steps = self._route_steps(request, job)
        try:
            name, args, kwargs = next(steps)
            while True:
                name, args, kwargs = steps.send(await getattr(store, name)(*args, **kwargs))
        except StopIteration as done:
            decision: Decision = done.value
            return decision

    def _route_steps(self, request: RouteRequest, job: RouteJob | None) -> Generator[Step, Any, Decision]:
        """One call's routing, its database work as the steps it yields (a store method's name and
        arguments), each sent back its result: :meth:`route` and :meth:`route_async` run them."""
        settings = self.settings
        number = self.e164(request.dialled)
        caller = caller_key(request.caller_number, settings.numbers.default_region)
        found = None
        if number is not None:
            # lists keep phone numbers as E.164 and other caller IDs lowercased ("anonymous")
            raw = request.caller_number.strip().lower()
            found = yield ("lookup", (number, caller, raw, request.system, request.linkedid), {})
        if found is None:
            decision = unknown(settings, f"{request.dialled!r} is not a tracking number")
            info = None
            facts = CallerFacts(False, False, False)
        else:
            info, facts = found
            if job is not None:
                job.number, job.facts = info, facts
            if info.status != "active":
                self._numbers.pop(info.number, None)
                decision = unknown(settings, f"{info.number} is {info.status}", info)
            else:
                self._numbers[info.number] = info
                visit = None
                if info.pool_id is not None:
                    grace = dt.timedelta(seconds=settings.tracking.attribution_grace_seconds)
                    visit = yield ("visit", (info.id, request.at, grace), {})
                first = None if caller is None or facts.do_not_track else not facts.seen_before
                decision = decide(info, request.at, blocked=facts.blocked, first_time=first, visit=visit)
                if facts.do_not_track:
                    decision = replace(decision, record=False)  # a caller who asked not to be tracked is not recorded
                problem = unsafe(decision)
                if problem:
                    # written to the database past the CLI's checks: never hand it to Dial()
                    decision = replace(
                        decision,
                        status=STATUS_FALLBACK,
                        dial=settings.agi.fallback_dial,
                        timeout=settings.agi.fallback_timeout,
                        record=False,
                        whisper="",
                        reason=f"number {info.number}: {problem}",
                    )
        values = self.call_values(request, decision, number, caller, do_not_track=facts.do_not_track)
        record_dir = str(settings.recorder.spool_dir) if decision.record and decision.status == STATUS_OK else None
        call_id = yield (
            "save_call",
            (_clip(request.system, "system") or "", _clip(request.linkedid, "linkedid") or "", values, record_dir),
            {"announce": info is not None and info.announces_start},
        )
        recording = recording_path(settings, call_id) if record_dir is not None else ""
        return replace(decision, call_id=call_id, recording_file=recording, record=bool(recording))

    def try_inline(self, request: RouteRequest, store: RouteStore) -> Decision | None:
        """Route on *store*, a connection that never waits for a lock (see ``RouteStore(inline=True)``).

        None when it could not (the database is busy, or anything else went wrong): the
        caller then routes the call on the worker threads, with the deadline and the
        fallback. Nothing is written unless the whole call is.
        """
        try:
            return self.route(request, store=store)
        except Exception as exc:
            logger.debug("inline routing of %s/%s gave way: %s", request.system, request.linkedid, exc)
            if getattr(exc, "sqlite_errorcode", None) != 5:  # SQLITE_BUSY keeps its connection
                store.discard()
            return None

    def call_values(
        self,
        request: RouteRequest,
        decision: Decision,
        number: str | None,
        caller: str | None,
        *,
        do_not_track: bool = False,
    ) -> dict[str, Any]:
        return {
            "uniqueid": _clip(request.uniqueid, "uniqueid") or None,
            "account_id": decision.account_id,
            "tracking_number_id": decision.number_id,
            "tracking_number": _clip(number or request.dialled.strip(), "tracking_number") or None,
            "source_id": decision.source_id,
            "visitor_session_id": decision.visit.id if decision.visit else None,
            "caller_number": None if do_not_track else _clip(caller, "caller_number"),
            "caller_name": None if do_not_track else (_clip(request.caller_name.strip(), "caller_name") or None),
            "first_time": None if do_not_track else decision.first_time,
            "route_status": decision.status,
            "dial": decision.dial or None,
            "started_at": request.at,
            # only where the number's hours were read; unknown numbers and blocked callers have none
            "after_hours": decision.after_hours
            if decision.number_id is not None and decision.status in (STATUS_OK, STATUS_FALLBACK)
            else None,
            # a blocked call's outcome is known now; the listener's upsert never overwrites it
            "disposition": "blocked" if decision.status == STATUS_BLOCKED else None,
            # the recorder deletes, unheard, a recording the dialplan made of such a call anyway
            "do_not_track": True if do_not_track else None,
        }

    def spool(self, request: RouteRequest, decision: Decision) -> None:
        """Keep the call row of a call routed without the database, to write it later."""
        if not request.linkedid:
            logger.error("call without linkedid routed by fallback; nothing to spool (the AMI listener has it)")
            return
        number = self.e164(request.dialled)
        caller = caller_key(request.caller_number, self.settings.numbers.default_region)
        dnt = self.not_tracked(request, decision.account_id)
        values = self.call_values(request, decision, number, caller, do_not_track=dnt)
        if decision.record and decision.recording_file:
            values["recording_file"] = decision.recording_file
        try:
            self.spool_.append(_clip(request.system, "system") or "", _clip(request.linkedid, "linkedid") or "", values)
        except OSError as exc:
            logger.error("cannot spool the call row of %s/%s: %s", request.system, request.linkedid, exc)

    def replay_spool(self) -> int:
        return self.spool_.replay(self.store)

    def replay_spool_quietly(self) -> int:
        try:
            return self.replay_spool()
        except Exception as exc:
            self.store.discard()
            logger.warning("spooled call rows wait for the database: %s", exc)
            return 0
