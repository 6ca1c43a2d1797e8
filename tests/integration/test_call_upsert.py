"""The batch call upsert both writers share (tracking.calls.upsert_calls), on each database.

PostgreSQL takes the rows as one JSON parameter (json_to_recordset), SQLite as a VALUES list:
the conflict rules and the stored values must come out the same on both.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from schema.models import Call
from tracking.calls import upsert_calls

NY = dt.timezone(dt.timedelta(hours=-5))


def test_a_batch_creates_then_updates_by_the_conflict_rules(session_factory: sessionmaker[Session]) -> None:
    started = dt.datetime(2026, 12, 3, 9, 30, 15, 123456, tzinfo=NY)  # given in local time
    with session_factory() as s, s.begin():
        first = upsert_calls(
            s,
            "pbx1",
            [
                ("1.1", {"caller_number": "+14045550100", "caller_name": 'Zoë "Z" O\'Brien', "disposition": "blocked",
                         "started_at": started, "duration": 1.5, "hangup_cause": 16, "first_time": True}),
                ("1.2", {"caller_number": None, "caller_name": None, "disposition": None,
                         "started_at": None, "duration": None, "hangup_cause": None, "first_time": False}),
            ],
        )  # fmt: skip
    assert set(first) == {"1.1", "1.2"}
    with session_factory() as s, s.begin():
        again = upsert_calls(
            s,
            "pbx1",
            [
                # the listener has not seen the caller ID yet, and its verdict would overwrite the route's
                ("1.1", {"caller_number": None, "caller_name": None, "disposition": "answered",
                         "started_at": started, "duration": 42.25, "hangup_cause": 17, "first_time": None}),
                ("1.2", {"caller_number": "+14045550199", "caller_name": "Second", "disposition": "answered",
                         "started_at": started, "duration": 3.0, "hangup_cause": 16, "first_time": True}),
                ("1.3", {"caller_number": "anonymous", "caller_name": None, "disposition": "missed",
                         "started_at": None, "duration": None, "hangup_cause": None, "first_time": None}),
            ],
            keep_existing={"first_time"},
            keep_when_null={"caller_number", "caller_name"},
        )  # fmt: skip
    assert again["1.1"] == first["1.1"] and again["1.2"] == first["1.2"] and again["1.3"] not in first.values()
    with session_factory() as s:
        calls = {c.linkedid: c for c in s.scalars(select(Call).where(Call.system == "pbx1"))}
    one, two, three = calls["1.1"], calls["1.2"], calls["1.3"]
    # a NULL caller ID leaves the stored one; a blocked call stays blocked; a kept column keeps its first value
    assert (one.caller_number, one.caller_name) == ("+14045550100", 'Zoë "Z" O\'Brien')
    assert one.disposition == "blocked" and one.first_time is True
    # everything else takes the new value, microseconds and UTC included
    assert (one.duration, one.hangup_cause) == (42.25, 17)
    assert one.started_at == started and one.started_at.utcoffset() == dt.timedelta(0)
    assert (two.caller_number, two.caller_name, two.disposition) == ("+14045550199", "Second", "answered")
    assert two.first_time is False  # kept: it was set (False) by the first write
    assert (three.caller_number, three.disposition, three.started_at) == ("anonymous", "missed", None)
    assert one.created_at <= one.updated_at
