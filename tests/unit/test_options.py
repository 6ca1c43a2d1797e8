"""Times given to --since/--until: dates, times with offsets, spans back from now."""

from __future__ import annotations

import datetime as dt

import click
import pytest

from calltrack.options import parse_time


def test_since_accepts_dates_times_offsets_and_relative_spans() -> None:
    now = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
    assert parse_time("12h", now) == dt.datetime(2026, 11, 29, 0, 0, tzinfo=dt.UTC)
    assert parse_time("7d", now) == dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
    assert parse_time("30m", now) == dt.datetime(2026, 11, 29, 11, 30, tzinfo=dt.UTC)
    assert parse_time("2w", now) == dt.datetime(2026, 11, 15, 12, 0, tzinfo=dt.UTC)
    assert parse_time("2026-11-29") == dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    assert parse_time("2026-11-29T10:00+02:00") == dt.datetime(2026, 11, 29, 8, 0, tzinfo=dt.UTC)
    for bad in ("yesterday", "12x", "", "2026-13-01"):
        with pytest.raises(click.BadParameter):
            parse_time(bad)
