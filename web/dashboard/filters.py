"""Filters read from a page's query string, each checked; a value that cannot mean anything is a 400."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from web.dashboard.core import BadInput

PRESETS = ("today", "7d", "30d", "month", "custom")
DISPOSITIONS = ("answered", "missed", "abandoned", "busy", "failed")
PER_PAGE = 50
MAX_PAGE = 100_000
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _int(params: Mapping[str, str], name: str, low: int = 1, high: int = 2**31 - 1) -> int | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadInput(name, f"{name} must be a whole number from {low} to {high}, not {raw[:40]!r}")
    return int(raw)


def _yes_no(params: Mapping[str, str], name: str) -> bool | None:
    raw = params.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in ("yes", "1", "true"):
        return True
    if raw in ("no", "0", "false"):
        return False
    raise BadInput(name, f"{name} must be yes or no, not {raw[:40]!r}")


def _date(params: Mapping[str, str], name: str) -> dt.date | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    if not _DATE.match(raw):
        raise BadInput(name, f"{name} must be a date as YYYY-MM-DD, not {raw[:40]!r}")
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise BadInput(name, f"{name}: {raw} is not a date") from None


@dataclass(frozen=True)
class Period:
    """A date range in one timezone, as UTC bounds [since, until)."""

    preset: str
    first: dt.date
    last: dt.date
    timezone: str
    since: dt.datetime
    until: dt.datetime

    @property
    def days(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=n) for n in range((self.last - self.first).days + 1)]


def period(params: Mapping[str, str], timezone: str, now: dt.datetime, default: str = "30d") -> Period:
    preset = params.get("range", "").strip() or default
    if preset not in PRESETS:
        raise BadInput("range", f"range must be one of {', '.join(PRESETS)}, not {preset[:40]!r}")
    tz = zoneinfo.ZoneInfo(timezone)
    today = now.astimezone(tz).date()
    if preset == "today":
        first = last = today
    elif preset == "7d":
        first, last = today - dt.timedelta(days=6), today
    elif preset == "30d":
        first, last = today - dt.timedelta(days=29), today
    elif preset == "month":
        first, last = today.replace(day=1), today
    else:
        start, end = _date(params, "from"), _date(params, "to")
        if start is None or end is None:
            raise BadInput("from", "a custom range needs from and to (YYYY-MM-DD)")
        if end < start:
            raise BadInput("to", "to must not be before from")
        if (end - start).days > 731:
            raise BadInput("to", "a range may span at most two years")
        first, last = start, end
    since = dt.datetime.combine(first, dt.time(), tz).astimezone(dt.UTC)
    until = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tz).astimezone(dt.UTC)
    return Period(preset, first, last, timezone, since, until)


@dataclass(frozen=True)
class CallFilters:
    account: int | None = None
    source: int | None = None
    number: str | None = None
    disposition: str | None = None
    first_time: bool | None = None
    after_hours: bool | None = None
    recording: bool | None = None
    caller: str | None = None
    #: only the blocked callers (they are not leads: listed apart)
    blocked: bool = False
    page: int = 1

    def query(self, **changes: Any) -> dict[str, str]:
        """These filters as query parameters (for links: the next page, the CSV export)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = changes.get(f.name, getattr(self, f.name))
            if value is None or value is False or (f.name == "page" and value == 1):
                continue
            out[f.name] = "yes" if value is True else str(value)
        return out


def call_filters(params: Mapping[str, str]) -> CallFilters:
    disposition = params.get("disposition", "").strip() or None
    if disposition is not None and disposition not in DISPOSITIONS:
        raise BadInput("disposition", f"disposition must be one of {', '.join(DISPOSITIONS)}")
    caller = params.get("caller", "").strip() or None
    if caller is not None and (len(caller) > 40 or not any(ch.isdigit() for ch in caller)):
        raise BadInput("caller", "caller must be (part of) a phone number, in any spelling")
    number = params.get("number", "").strip() or None
    if number is not None and len(number) > 40:
        raise BadInput("number", "number too long")
    return CallFilters(
        account=_int(params, "account"),
        source=_int(params, "source"),
        number=number,
        disposition=disposition,
        first_time=_yes_no(params, "first_time"),
        after_hours=_yes_no(params, "after_hours"),
        recording=_yes_no(params, "recording"),
        caller=caller,
        blocked=bool(_yes_no(params, "blocked")),
        page=_int(params, "page", 1, MAX_PAGE) or 1,
    )
