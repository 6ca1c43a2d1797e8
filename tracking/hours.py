"""Business hours as text (``mon-fri 09:00-17:00, sat 10:00-14:00``) to a schedule and back.

Its own module so that listings can show hours without importing the ORM models.
"""

from __future__ import annotations

import re
from typing import Any

from tracking.errors import InvalidInput

_DAY_RANGE = re.compile(r"(mon|tue|wed|thu|fri|sat|sun)(?:-(mon|tue|wed|thu|fri|sat|sun))?")


def parse_hours(text: str | None) -> dict[str, Any] | None:
    """Business hours from text: ``mon-fri 09:00-17:00, sat 10:00-14:00``; ``always`` (or empty) is None.

    Several ranges a day are written as ``mon 09:00-12:00 13:00-17:00``; a range
    whose end is before its start runs past midnight (``fri 22:00-02:00``).
    """
    from tracking.routing import DAYS, validate_schedule

    if text is None or text.strip().lower() in ("", "always"):
        return None
    schedule: dict[str, list[list[str]]] = {}
    for part in text.lower().split(","):
        words = part.split()
        if len(words) < 2:
            raise InvalidInput(f"invalid hours {part.strip()!r}: write DAYS HH:MM-HH:MM, such as mon-fri 09:00-17:00")
        match = _DAY_RANGE.fullmatch(words[0])
        if not match:
            raise InvalidInput(f"invalid days {words[0]!r} in hours: use mon..sun or a range such as mon-fri")
        first = DAYS.index(match.group(1))
        last = DAYS.index(match.group(2) or match.group(1))
        days = [DAYS[i % 7] for i in range(first, first + (last - first) % 7 + 1)]
        ranges = []
        for span in words[1:]:
            start, sep, end = span.partition("-")
            if not sep:
                raise InvalidInput(f"invalid time range {span!r} in hours: write HH:MM-HH:MM")
            ranges.append([start, end])
        for day in days:
            schedule.setdefault(day, []).extend(ranges)
    try:
        validate_schedule(schedule)
    except ValueError as exc:
        raise InvalidInput(f"invalid hours {text!r}: {exc}") from None
    return schedule


def format_hours(schedule: dict[str, Any] | None) -> str:
    """The text form of a schedule (what parse_hours reads)."""
    if not schedule:
        return "always"
    from tracking.routing import DAYS

    return ", ".join(f"{day} {' '.join(f'{a}-{b}' for a, b in schedule[day])}" for day in DAYS if schedule.get(day))
