"""Column types shared by the ORM models and the Core queries that do without the ORM."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import DateTime, TypeDecorator


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored as naive UTC and read back as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC)


def utc_text(value: dt.datetime) -> str:
    """An aware time as naive UTC text with microseconds (``2026-03-02 15:30:00.000000``).

    The form SQLAlchemy's SQLite DateTime stores, so statements that go to SQLite's driver
    directly write and compare times that agree with the rows SQLAlchemy wrote; and a
    ``timestamp`` that PostgreSQL's json_to_recordset reads.
    """
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def from_utc_text(text: str) -> dt.datetime:
    """A time :func:`utc_text` wrote, as SQLite's driver reads it back: aware UTC."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
