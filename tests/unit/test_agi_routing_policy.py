"""The routing policy without a database: business hours, destinations, blocked callers, fallback."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from config import AgiSettings, RecorderSettings, Settings
from tracking.routing import (
    NumberInfo,
    Visit,
    caller_key,
    decide,
    dialled_key,
    fallback,
    is_open,
    recording_path,
    unknown,
    validate_schedule,
)

WEEKDAYS = {d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}
NY = "America/New_York"


def at(text: str, tz: str = NY) -> dt.datetime:
    """A local wall-clock time in *tz*, as aware UTC."""
    from zoneinfo import ZoneInfo

    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).astimezone(dt.UTC)


def number(**values: object) -> NumberInfo:
    base = NumberInfo(
        id=7,
        number="+18005550100",
        account_id=3,
        source_id=11,
        pool_id=None,
        forward_to="PJSIP/100&PJSIP/101",
        ring_timeout=25,
        record=True,
        whisper="calltrack/google",
        schedule=None,
        after_hours_forward_to=None,
        status="active",
        timezone=NY,
        source_name="Google Ads",
    )
    return dataclasses.replace(base, **values)  # type: ignore[arg-type]


SETTINGS = Settings(
    agi=AgiSettings(fallback_dial="PJSIP/operator", fallback_timeout=40),
    recorder=RecorderSettings(spool_dir=Path("/var/spool/asterisk/monitor/calltrack")),
)


# --- business hours ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("2026-11-30 09:00", True),  # Monday, opening minute
        ("2026-11-30 16:59", True),
        ("2026-11-30 17:00", False),  # closing minute is closed
        ("2026-11-30 08:59", False),
        ("2026-11-29 12:00", False),  # Sunday: not in the schedule
        ("2026-07-06 10:00", True),  # summer time: still read in New York time
    ],
)
def test_business_hours_are_read_in_the_accounts_timezone(local: str, expected: bool) -> None:
    assert is_open(WEEKDAYS, NY, at(local)) is expected


def test_the_same_instant_is_open_in_one_timezone_and_closed_in_another() -> None:
    instant = at("2026-11-30 10:00", NY)  # 15:00 UTC, 07:00 in Los Angeles
    assert is_open(WEEKDAYS, NY, instant)
    assert not is_open(WEEKDAYS, "America/Los_Angeles", instant)


def test_overnight_ranges_run_past_midnight() -> None:
    schedule = {"fri": [["22:00", "02:00"]]}
    assert is_open(schedule, NY, at("2026-12-04 23:30"))  # Friday night
    assert is_open(schedule, NY, at("2026-12-05 01:59"))  # early Saturday, from Friday's range
    assert not is_open(schedule, NY, at("2026-12-05 02:00"))
    assert not is_open(schedule, NY, at("2026-12-04 21:59"))


def test_whole_day_and_no_schedule() -> None:
    assert is_open({"sun": [["00:00", "24:00"]]}, NY, at("2026-11-29 23:59"))
    assert is_open(None, NY, at("2026-11-29 03:00"))
    assert is_open({}, NY, at("2026-11-29 03:00"))


@pytest.mark.parametrize(
    "schedule",
    [
        {"monday": [["09:00", "17:00"]]},
        {"mon": [["9am", "5pm"]]},
        {"mon": [["09:00"]]},
        {"mon": "09:00-17:00"},
        {"mon": [["24:30", "25:00"]]},
        {"mon": [[9, "17:00"]]},  # JSON written by hand into the database: a number, not "HH:MM"
    ],
)
def test_malformed_schedules_are_refused(schedule: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        validate_schedule(schedule)


def test_a_broken_schedule_routes_as_open_rather_than_failing() -> None:
    decision = decide(
        number(schedule={"mon": [["nine", "five"]]}, after_hours_forward_to="PJSIP/vm"), at("2026-11-30 20:00")
    )
    assert decision.status == "ok"
    assert decision.dial == "PJSIP/100&PJSIP/101"


# --- decisions ---------------------------------------------------------------------------------


def test_a_source_number_rings_its_destinations() -> None:
    decision = decide(number(), at("2026-11-30 10:00"), first_time=True)
    assert (decision.status, decision.dial, decision.timeout) == ("ok", "PJSIP/100&PJSIP/101", 25)
    assert (decision.source_id, decision.source_name, decision.whisper) == (11, "Google Ads", "calltrack/google")
    assert decision.record and decision.first_time and not decision.after_hours


def test_after_hours_goes_to_the_after_hours_destination() -> None:
    info = number(schedule=WEEKDAYS, after_hours_forward_to="PJSIP/voicemail")
    closed = decide(info, at("2026-11-30 19:00"))
    assert (closed.dial, closed.after_hours) == ("PJSIP/voicemail", True)
    opened = decide(info, at("2026-11-30 11:00"))
    assert (opened.dial, opened.after_hours) == ("PJSIP/100&PJSIP/101", False)


def test_after_hours_without_an_after_hours_destination_keeps_the_normal_one() -> None:
    decision = decide(number(schedule=WEEKDAYS), at("2026-11-30 19:00"))
    assert (decision.dial, decision.after_hours) == ("PJSIP/100&PJSIP/101", True)


def test_a_blocked_caller_gets_no_destination() -> None:
    decision = decide(number(), at("2026-11-30 10:00"), blocked=True)
    assert (decision.status, decision.dial, decision.record) == ("blocked", "", False)
    assert decision.source_name == "Google Ads"  # still attributed, for the reports


def test_a_pool_number_takes_the_visits_source_else_the_pools() -> None:
    pool_number = number(source_id=None, source_name=None, pool_id=5, pool_source_id=12, pool_source_name="Website")
    visit = Visit(id=99, source_id=13, source_name="Facebook", gclid="abc")
    with_visit = decide(pool_number, at("2026-11-30 10:00"), visit=visit)
    assert (with_visit.source_id, with_visit.source_name, with_visit.visit) == (13, "Facebook", visit)
    sourceless = decide(
        pool_number, at("2026-11-30 10:00"), visit=dataclasses.replace(visit, source_id=None, source_name=None)
    )
    assert (sourceless.source_id, sourceless.source_name) == (12, "Website")
    assert sourceless.visit is not None  # the visit (landing page, gclid) is still the call's
    without = decide(pool_number, at("2026-11-30 10:00"))
    assert (without.source_id, without.source_name, without.visit) == (12, "Website", None)


def test_fallback_prefers_the_numbers_own_destination() -> None:
    known = fallback(
        SETTINGS, number(schedule=WEEKDAYS, after_hours_forward_to="PJSIP/vm"), "db down", at("2026-11-30 19:00")
    )
    assert (known.status, known.dial, known.timeout, known.record) == ("fallback", "PJSIP/vm", 25, False)
    nothing = fallback(SETTINGS, None, "db down")
    assert (nothing.status, nothing.dial, nothing.timeout) == ("fallback", "PJSIP/operator", 40)
    released = fallback(SETTINGS, number(status="released"), "db down")
    assert released.dial == "PJSIP/operator"


def test_unknown_numbers_go_to_the_configured_fallback() -> None:
    decision = unknown(SETTINGS, "not a tracking number")
    assert (decision.status, decision.dial, decision.timeout) == ("unknown-number", "PJSIP/operator", 40)


def test_variables_follow_the_dialplan_contract() -> None:
    decision = dataclasses.replace(
        decide(number(), at("2026-11-30 10:00"), first_time=False),
        call_id=42,
        recording_file=recording_path(SETTINGS, 42),
    )
    assert dict(decision.variables()) == {
        "CALLTRACK_STATUS": "ok",
        "CALLTRACK_CALL_ID": "42",
        "CALLTRACK_DIAL": "PJSIP/100&PJSIP/101",
        "CALLTRACK_DIAL_TIMEOUT": "25",
        "CALLTRACK_RECORD": "1",
        "CALLTRACK_RECORDING_FILE": "/var/spool/asterisk/monitor/calltrack/42.wav",
        "CALLTRACK_SOURCE": "Google Ads",
        "CALLTRACK_WHISPER": "calltrack/google",
        "CALLTRACK_FIRST_TIME": "0",
        "CALLTRACK_AFTER_HOURS": "0",
    }
    no_file = dict(dataclasses.replace(decision, recording_file="").variables())
    assert (no_file["CALLTRACK_RECORD"], no_file["CALLTRACK_RECORDING_FILE"]) == ("0", "")


# --- caller and dialled numbers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+14045551234", "+14045551234"),
        ("4045551234", "+14045551234"),
        ("(404) 555-1234", "+14045551234"),
        ("anonymous", None),
        ("", None),
        ("unknown", None),
        ("sip:alice@example.com", "sip:alice@example.com"),
        ("12", "12"),
    ],
)
def test_caller_key(raw: str, expected: str | None) -> None:
    assert caller_key(raw, "US") == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("8005550100", "+18005550100"),
        ("+18005550100", "+18005550100"),
        ("18005550100", "+18005550100"),
        ("s", None),
        ("800555010", None),
        ("8005550100;evil", None),
        ("x" * 100, None),
    ],
)
def test_dialled_key(raw: str, expected: str | None) -> None:
    assert dialled_key(raw, "US") == expected
