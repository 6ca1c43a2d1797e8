"""Option types shared by several command groups."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import click

_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")


def parse_time(value: str, now: dt.datetime | None = None) -> dt.datetime:
    """``2026-11-29``, ``2026-11-29T10:00``, ``2026-11-29 10:00+01:00`` or relative ``30m``/``12h``/``7d``/``2w``.

    A time without an offset is UTC; relative times count back from now.
    """
    text = value.strip()
    m = _RELATIVE.match(text)
    if m:
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
        return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(**{unit: int(m.group(1))})
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date: use 2026-11-29, 2026-11-29T10:00 (UTC unless an offset is given) or 12h / 7d"
        ) from None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


class TimeType(click.ParamType):
    """A point in time given as a date, a date and time, or a duration back from now."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        return parse_time(str(value))


def check_period(since: dt.datetime | None, until: dt.datetime | None) -> None:
    """Refuse an empty period (``--until`` at or before ``--since``) instead of listing nothing."""
    if since is not None and until is not None and until <= since:
        raise click.BadParameter(
            f"--until ({until.isoformat(timespec='seconds')}) must be after --since "
            f"({since.isoformat(timespec='seconds')})",
            param_hint="'--until'",
        )
