"""Reports from call rows: per source and per number, filtered by account and time."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from schema.models import Account, Source, TrackingNumber
from tests.conftest import Cli
from tracking.calls import upsert_call

T0 = dt.datetime(2026, 11, 2, 15, 0, tzinfo=dt.UTC)


def seed(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    cli.ok("accounts", "add", "Acme")
    cli.ok("accounts", "add", "Beta")
    cli.ok("sources", "add", "Google Ads", "--account", "Acme")
    cli.ok("sources", "add", "Flyer", "--account", "Acme")
    cli.ok("sources", "add", "Yelp", "--account", "Beta")
    cli.ok("sources", "add", "Radio", "--account", "Beta")  # no calls
    for number, account, source in (
        ("4045550100", "Acme", "Google Ads"),
        ("4045550101", "Acme", "Flyer"),
        ("4045550102", "Beta", "Yelp"),
    ):
        cli.ok(
            "numbers",
            "add",
            number,
            "--account",
            account,
            "--source",
            source,
            "--forward-to",
            "PJSIP/100",
            "--label",
            f"{source} line",
        )
    with session_factory() as s, s.begin():
        ids = {n.number: (n.id, n.account_id, n.source_id) for n in s.scalars(select(TrackingNumber))}
        calls = [
            # number, minutes after T0, disposition, talk seconds, first time, after hours
            ("+14045550100", 0, "answered", 120.0, True, False),
            ("+14045550100", 5, "answered", 60.0, False, False),
            ("+14045550100", 10, "missed", None, True, True),
            ("+14045550100", 15, "abandoned", None, False, True),
            # spam: refused by the route (a row written before blocked calls lost their first-time flag)
            ("+14045550100", 16, "blocked", None, True, True),
            ("+14045550100", 17, "blocked", None, None, False),
            ("+14045550101", 20, "busy", None, True, False),
            ("+14045550101", 60 * 24 * 3, "answered", 30.0, True, None),  # three days later
            ("+14045550102", 30, "answered", 90.0, True, False),
            ("+14045550102", 35, None, None, True, False),  # still live
        ]
        for i, (number, minutes, disposition, talk, first, after_hours) in enumerate(calls):
            tn_id, account_id, source_id = ids[number]
            upsert_call(
                s,
                "pbx",
                f"1795915000.{i}",
                {
                    "tracking_number": number,
                    "tracking_number_id": tn_id,
                    "account_id": account_id,
                    "source_id": source_id,
                    "started_at": T0 + dt.timedelta(minutes=minutes),
                    "disposition": disposition,
                    "talk_time": talk,
                    "first_time": first,
                    "after_hours": after_hours,
                },
            )
        # a call to a number calltrack does not know (first-time as an older listener wrote it)
        upsert_call(
            s,
            "pbx",
            "1795915000.99",
            {
                "tracking_number": "8005550999",
                "started_at": T0,
                "disposition": "answered",
                "talk_time": 10.0,
                "first_time": True,
            },
        )
        assert s.scalar(select(Account.id).where(Account.name == "Acme")) and s.scalar(
            select(Source.id).where(Source.name == "Flyer")
        )


def report(cli: Cli, kind: str, *args: str) -> list[dict[str, object]]:
    return json.loads(cli.ok("reports", kind, "--format", "json", *args).output)


def test_sources_report(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    seed(cli, session_factory)
    rows = {(r["account"], r["source"]): r for r in report(cli, "sources")}
    google = rows[("Acme", "Google Ads")]
    # blocked calls are counted apart: not calls, not first-time callers, not in the answer rate
    assert (google["calls"], google["answered"], google["missed"], google["abandoned"]) == (4, 2, 1, 1)
    assert (google["blocked"], google["first_time"], google["after_hours"]) == (2, 2, 2)
    assert (google["answer_rate"], google["avg_talk_seconds"], google["talk_minutes"]) == (50.0, 90.0, 3.0)
    flyer = rows[("Acme", "Flyer")]
    assert (flyer["calls"], flyer["busy"], flyer["answered"], flyer["blocked"]) == (2, 1, 1, 0)
    yelp = rows[("Beta", "Yelp")]
    # the live call is neither answered nor missed yet: the rate is over the call that ended
    assert (yelp["calls"], yelp["live"], yelp["answered"], yelp["answer_rate"]) == (2, 1, 1, 100.0)
    radio = rows[("Beta", "Radio")]  # a source without calls has its row of zeros
    assert (radio["calls"], radio["blocked"], radio["answer_rate"], radio["talk_minutes"]) == (0, 0, None, 0.0)
    unknown = rows[("(unknown)", "(none)")]
    assert (unknown["calls"], unknown["first_time"]) == (1, 0)  # no account: nobody's first-time caller
    table = cli.ok("reports", "sources").output.splitlines()
    assert "ABANDONED" in table[0] and "BLOCKED" in table[0] and "AFTER_HOURS" in table[0]
    assert any(line.startswith("Beta") and "Radio" in line for line in table)


def test_sources_report_filters(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    seed(cli, session_factory)
    acme = report(cli, "sources", "--account", "Acme")
    assert [(r["source"], r["calls"]) for r in acme] == [("Google Ads", 4), ("Flyer", 2)]
    first_day = report(cli, "sources", "--account", "Acme", "--since", "2026-11-02", "--until", "2026-11-03")
    assert [(r["source"], r["calls"]) for r in first_day] == [("Google Ads", 4), ("Flyer", 1)]
    later = report(cli, "sources", "--since", "2026-11-05T00:00+00:00")
    assert [(r["account"], r["source"], r["calls"], r["answer_rate"]) for r in later] == [
        ("Acme", "Flyer", 1, 100.0),
        ("Acme", "Google Ads", 0, None),
        ("Beta", "Radio", 0, None),
        ("Beta", "Yelp", 0, None),
    ]
    assert "is not a date" in cli.fails("reports", "sources", "--since", "yesterday").output


def test_numbers_report(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    seed(cli, session_factory)
    rows = report(cli, "numbers", "--account", "Acme")
    assert [(r["number"], r["label"], r["calls"], r["answered"], r["abandoned"], r["blocked"]) for r in rows] == [
        ("+14045550100", "Google Ads line", 4, 2, 1, 2),
        ("+14045550101", "Flyer line", 2, 1, 0, 0),
    ]
    cli.ok("numbers", "add", "4045550109", "--account", "Acme", "--source", "Flyer", "--forward-to", "PJSIP/100")
    quiet = {r["number"]: r for r in report(cli, "numbers", "--account", "Acme")}["+14045550109"]
    assert (quiet["calls"], quiet["answer_rate"]) == (0, None)  # an active number that never rang
    table = cli.ok("reports", "numbers").output
    assert "8005550999" in table and "ANSWER_RATE" in table


def test_empty_report(cli: Cli) -> None:
    assert report(cli, "sources") == []
    assert cli.ok("reports", "sources").output.strip() == "(none)"
