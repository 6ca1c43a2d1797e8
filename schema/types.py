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


def sqlite_time(value: dt.datetime) -> str:
    """An aware time as SQLAlchemy's SQLite DateTime stores it (naive UTC, microseconds), for the driver.

    Statements that go to SQLite's driver directly write and compare their times in this
    form, so they agree with the rows SQLAlchemy wrote.
    """
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def from_sqlite_time(text: str) -> dt.datetime:
    """A time SQLite's driver read back (:func:`sqlite_time`'s form), as aware UTC."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
