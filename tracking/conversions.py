"""Offline conversion files for ad platforms: which calls from an ad click became conversions.

An agency uploads these files to Google Ads or Microsoft Advertising so that bidding learns
which clicks made the phone ring.  A call is exported when its website visit carried a click
id the platform knows (``gclid``/``gbraid``/``wbraid`` for Google, ``msclkid`` for Microsoft),
it ended, it was long enough (talk time) and, with ``qualified_only``, it is a qualified lead
as reports count one (``tracking/qualification.py``: a person's word in the dashboard first, else
the lead rules'); its value is the person's, else the rules', else the export's ``value``.  Each platform accepts clicks only for a while (its import window, counted
from the click to the upload): older calls are skipped and counted with the reason.

Every exported call is marked (``conversion_exports``: call, platform, conversion name), so a
call counts once per conversion name on a platform whatever the overlap of later exports'
dates; ``again=True`` exports marked calls once more (a lost file).

The layouts follow the platforms' published templates, pinned cell by cell by the reference
files in ``tests/fixtures/conversions/`` (their README names the documentation).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from schema.models import Call, ConversionExport, Source, VisitorSession, utcnow
from tracking import csv_cells, qualification
from tracking.accounts import get_account
from tracking.calls import BLOCKED
from tracking.errors import InvalidInput

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass(frozen=True)
class Platform:
    name: str
    #: the visit's click ids this platform can attribute, in order of preference
    click_ids: tuple[str, ...]
    #: days from the click to the upload that the platform accepts
    window_days: int | None


GOOGLE = Platform("google", ("gclid", "gbraid", "wbraid"), 90)
#: enhanced conversions for leads: Google matches the hashed caller to the ad click within 63 days
GOOGLE_LEADS = Platform("google", ("gclid", "gbraid", "wbraid"), 63)
MICROSOFT = Platform("microsoft", ("msclkid",), 90)
GENERIC = Platform("generic", ("gclid", "gbraid", "wbraid", "msclkid"), None)


@dataclass(frozen=True)
class Conversion:
    """One exported call, in the terms every format draws from."""

    call_id: int
    started_at: dt.datetime
    click_kind: str
    click_id: str
    gclid: str | None
    gbraid: str | None
    wbraid: str | None
    msclkid: str | None
    caller_number: str | None
    source: str | None
    campaign: str | None
    talk_time: float | None
    value: float | None


@dataclass(frozen=True)
class ExportRequest:
    account: str
    format: str
    since: dt.datetime
    until: dt.datetime | None = None
    #: seconds of conversation (talk time) a call needs to count
    min_duration: float = 60.0
    qualified_only: bool = False
    conversion_name: str = "Phone call"
    #: the value of a conversion whose call has no value of its own; None leaves it to the platform
    value: float | None = None
    currency: str = "USD"
    #: also calls exported before (with this platform and conversion name)
    again: bool = False
    #: the export's time, from which import windows are counted
    now: dt.datetime | None = None


@dataclass
class ExportResult:
    #: the file's rows, preamble and header included
    lines: list[list[str]]
    conversions: list[Conversion]
    #: reason -> number of calls left out
    skipped: Counter[str] = field(default_factory=Counter)

    def text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        # click ids, campaigns and sources come from visitors' URLs: no cell starts a formula
        writer.writerows(csv_cells.row(line) for line in self.lines)
        return out.getvalue()


SKIP_WINDOW = "outside the platform's import window"
SKIP_SHORT = "shorter than the minimum talk time"
SKIP_EXPORTED = "exported before"
SKIP_UNQUALIFIED = "not qualified as a lead"
SKIP_NO_NUMBER = "no caller number to match"
SKIP_LIVE = "not ended yet"
SKIP_SPAM = "flagged as spam"

NO_VERDICT = qualification.Verdict()


def hash_phone(e164: str) -> str:
    """SHA-256 (lower-case hex) of a number in E.164, as Google's enhanced conversions want it."""
    if not _E164.match(e164):
        raise InvalidInput(f"{e164!r} is not an E.164 number")
    return hashlib.sha256(e164.encode("ascii")).hexdigest()


def _value(req: ExportRequest, c: Conversion) -> list[str]:
    value = c.value if c.value is not None else req.value
    if value is None:
        return ["", ""]
    return [f"{value:.2f}", req.currency]


def _google_time(when: dt.datetime, zone: ZoneInfo) -> str:
    # "yyyy-MM-dd HH:mm:ss" in the zone named on the Parameters:TimeZone= line
    return when.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def _microsoft_time(when: dt.datetime) -> str:
    # M/d/yyyy h:mm:ss AM/PM, UTC (Parameters:TimeZone=+0000)
    u = when.astimezone(dt.UTC)
    hour = u.hour % 12 or 12
    return f"{u.month}/{u.day}/{u.year} {hour}:{u.minute:02d}:{u.second:02d} {'AM' if u.hour < 12 else 'PM'}"


_GOOGLE_COLUMNS = ["Conversion Name", "Conversion Time", "Conversion Value", "Conversion Currency"]


def _google_click_header(conversions: Sequence[Conversion]) -> list[str]:
    header = ["Google Click ID", *_GOOGLE_COLUMNS]
    # iOS app and web clicks without a gclid: the template's GBRAID / WBRAID columns, only when needed
    if any(c.click_kind == "gbraid" for c in conversions):
        header.append("GBRAID")
    if any(c.click_kind == "wbraid" for c in conversions):
        header.append("WBRAID")
    return header


def _google_click_row(req: ExportRequest, c: Conversion, zone: ZoneInfo, header: list[str]) -> list[str]:
    row = [c.gclid or "", req.conversion_name, _google_time(c.started_at, zone), *_value(req, c)]
    if "GBRAID" in header:
        row.append((c.gbraid or "") if c.click_kind == "gbraid" else "")
    if "WBRAID" in header:
        row.append((c.wbraid or "") if c.click_kind == "wbraid" else "")
    return row


_LEADS_HEADER = ["Google Click ID", "Email", "Phone Number", *_GOOGLE_COLUMNS]


def _google_leads_row(req: ExportRequest, c: Conversion, zone: ZoneInfo) -> list[str]:
    assert c.caller_number is not None
    return [
        c.gclid or "",
        "",
        hash_phone(c.caller_number),
        req.conversion_name,
        _google_time(c.started_at, zone),
        *_value(req, c),
    ]


_MICROSOFT_HEADER = [
    "Microsoft Click ID",
    "Conversion Name",
    "Conversion Time",
    "Conversion Value",
    "Conversion Currency",
]


def _microsoft_row(req: ExportRequest, c: Conversion, zone: ZoneInfo) -> list[str]:
    return [c.msclkid or "", req.conversion_name, _microsoft_time(c.started_at), *_value(req, c)]


_GENERIC_HEADER = [
    "call_id",
    "conversion_name",
    "conversion_time",
    "conversion_value",
    "currency",
    "click_id_type",
    "click_id",
    "gclid",
    "gbraid",
    "wbraid",
    "msclkid",
    "source",
    "campaign",
    "talk_time",
    "caller_phone_sha256",
]


def _generic_row(req: ExportRequest, c: Conversion, zone: ZoneInfo) -> list[str]:
    when = c.started_at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return [
        str(c.call_id),
        req.conversion_name,
        when,
        *_value(req, c),
        c.click_kind,
        c.click_id,
        c.gclid or "",
        c.gbraid or "",
        c.wbraid or "",
        c.msclkid or "",
        c.source or "",
        c.campaign or "",
        "" if c.talk_time is None else f"{c.talk_time:g}",
        hash_phone(c.caller_number) if c.caller_number and _E164.match(c.caller_number) else "",
    ]


@dataclass(frozen=True)
class Format:
    name: str
    platform: Platform
    description: str
    #: the calls need a caller number (matched by its hash)
    needs_number: bool = False


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("google-click", GOOGLE, "Google Ads offline click conversions (gclid, else gbraid/wbraid)"),
        Format(
            "google-leads",
            GOOGLE_LEADS,
            "Google Ads enhanced conversions for leads (caller's number in E.164, SHA-256 hashed)",
            needs_number=True,
        ),
        Format("microsoft", MICROSOFT, "Microsoft Advertising offline conversions (msclkid)"),
        Format("csv", GENERIC, "generic CSV: every click id, source, campaign, UTC times"),
    )
}


def _lines(req: ExportRequest, fmt: Format, zone_name: str, conversions: Sequence[Conversion]) -> list[list[str]]:
    zone = ZoneInfo(zone_name)
    if fmt.name == "google-click":
        header = _google_click_header(conversions)
        return [
            [f"Parameters:TimeZone={zone_name}"],
            header,
            *(_google_click_row(req, c, zone, header) for c in conversions),
        ]
    if fmt.name == "google-leads":
        return [
            [f"Parameters:TimeZone={zone_name}"],
            _LEADS_HEADER,
            *(_google_leads_row(req, c, zone) for c in conversions),
        ]
    if fmt.name == "microsoft":
        return [["Parameters:TimeZone=+0000"], _MICROSOFT_HEADER, *(_microsoft_row(req, c, zone) for c in conversions)]
    return [_GENERIC_HEADER, *(_generic_row(req, c, zone) for c in conversions)]


def _check(req: ExportRequest) -> Format:
    fmt = FORMATS.get(req.format)
    if fmt is None:
        raise InvalidInput(f"unknown format {req.format!r} (known: {', '.join(FORMATS)})")
    if not _CURRENCY.match(req.currency):
        raise InvalidInput(f"{req.currency!r} is not a currency code: use three capital letters (USD, EUR)")
    name = req.conversion_name.strip()
    if not name or len(name) > 200 or any(not ch.isprintable() for ch in name):
        raise InvalidInput("the conversion name must be 1 to 200 printable characters, as named on the ad platform")
    if req.min_duration < 0:
        raise InvalidInput("--min-duration cannot be negative")
    if req.value is not None and (req.value < 0 or req.value != req.value or req.value == float("inf")):
        raise InvalidInput("--value must be a positive number")
    if req.until is not None and req.until <= req.since:
        raise InvalidInput("--until must be after --since")
    return fmt


def export(session: Session, req: ExportRequest) -> ExportResult:
    """The file for *req*; the calls in it are marked exported in *session*'s transaction."""
    fmt = _check(req)
    account = get_account(session, req.account)
    now = req.now or utcnow()
    v = VisitorSession
    click_columns = [getattr(v, name) for name in fmt.platform.click_ids]
    query = (
        select(Call, v, Source.name, Source.campaign)
        .join(v, v.id == Call.visitor_session_id)
        .outerjoin(Source, Source.id == Call.source_id)
        .where(
            Call.account_id == account.id,
            Call.started_at >= req.since,
            or_(Call.do_not_track.is_(None), Call.do_not_track.is_(False)),
            or_(Call.disposition.is_(None), Call.disposition != BLOCKED),
            or_(*[and_(c.is_not(None), c != "") for c in click_columns]),
        )
        .order_by(Call.started_at, Call.id)
    )
    if req.until is not None:
        query = query.where(Call.started_at < req.until)
    rows = session.execute(query).all()
    exported: set[int] = set()
    if rows and not req.again:
        exported = set(
            session.scalars(
                select(ConversionExport.call_id).where(
                    ConversionExport.account_id == account.id,
                    ConversionExport.platform == fmt.platform.name,
                    ConversionExport.conversion_name == req.conversion_name,
                )
            )
        )
    verdicts = qualification.of_calls(session, [row[0].id for row in rows])
    skipped: Counter[str] = Counter()
    conversions: list[Conversion] = []
    window = dt.timedelta(days=fmt.platform.window_days) if fmt.platform.window_days else None
    for call, visit, source, campaign in rows:
        started = call.started_at
        assert started is not None  # the query's start bound keeps calls with a start only
        verdict = verdicts.get(call.id, NO_VERDICT)
        if call.ended_at is None:
            skipped[SKIP_LIVE] += 1
        elif (call.talk_time or 0.0) < req.min_duration:
            skipped[SKIP_SHORT] += 1
        elif verdict.spam:
            skipped[SKIP_SPAM] += 1
        elif req.qualified_only and not verdict.qualified:
            skipped[SKIP_UNQUALIFIED] += 1
        elif window is not None and now - (visit.started_at or started) > window:
            skipped[SKIP_WINDOW] += 1
        elif fmt.needs_number and not (call.caller_number and _E164.match(call.caller_number)):
            skipped[SKIP_NO_NUMBER] += 1
        elif call.id in exported:
            skipped[SKIP_EXPORTED] += 1
        else:
            kind = next(name for name in fmt.platform.click_ids if getattr(visit, name))
            conversions.append(
                Conversion(
                    call_id=call.id,
                    started_at=started,
                    click_kind=kind,
                    click_id=getattr(visit, kind),
                    gclid=visit.gclid,
                    gbraid=visit.gbraid,
                    wbraid=visit.wbraid,
                    msclkid=visit.msclkid,
                    caller_number=call.caller_number,
                    source=source,
                    campaign=campaign or visit.utm_campaign,
                    talk_time=call.talk_time,
                    value=verdict.value,
                )
            )
    lines = _lines(req, fmt, account.timezone or "UTC", conversions)
    _mark(session, account.id, fmt, req.conversion_name, [c.call_id for c in conversions], exported, now)
    return ExportResult(lines, conversions, skipped)


def _mark(
    session: Session,
    account_id: int,
    fmt: Format,
    name: str,
    call_ids: Sequence[int],
    exported: set[int],
    now: dt.datetime,
) -> None:
    if not call_ids:
        return
    known = exported or set(
        session.scalars(
            select(ConversionExport.call_id).where(
                ConversionExport.platform == fmt.platform.name,
                ConversionExport.conversion_name == name,
                ConversionExport.call_id.in_(list(call_ids)),
            )
        )
    )
    table: Any = ConversionExport.__table__
    fresh = [i for i in call_ids if i not in known]
    if fresh:
        session.execute(
            table.insert(),
            [
                {
                    "account_id": account_id,
                    "call_id": i,
                    "platform": fmt.platform.name,
                    "conversion_name": name,
                    "format": fmt.name,
                    "exported_at": now,
                }
                for i in fresh
            ],
        )
    again = [i for i in call_ids if i in known]
    if again:
        session.execute(
            table.update()
            .where(
                table.c.call_id.in_(again),
                table.c.platform == fmt.platform.name,
                table.c.conversion_name == name,
            )
            .values(exported_at=now, format=fmt.name)
        )
