"""Conversion exports: each platform's file checked cell by cell against its reference file.

The reference files (tests/fixtures/conversions/, README there names the documentation) were
written by hand; the calls are real rows on SQLite and PostgreSQL; the CLI runs in-process.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from config import RecorderSettings, Settings
from schema.models import Call, CallOutcome, CallQualification, ConversionExport, VisitorSession
from tests.conftest import Cli
from tests.fixtures import ASTERISK
from tracking.accounts import add_account, add_source
from tracking.conversions import ExportRequest, export, hash_phone
from tracking.errors import InvalidInput
from tracking.pools import add_numbers, create_pool
from tracking.routing import CallRouter, RouteRequest, RouteStore
from tracking.sites import add_site
from tracking.source_rules import add_rule
from web.app import create_app

REFERENCE = ASTERISK.parent / "conversions"
NOW = dt.datetime(2026, 3, 20, 12, 0, tzinfo=dt.UTC)
SINCE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
UNTIL = dt.datetime(2026, 3, 15, tzinfo=dt.UTC)


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


# label: (call start, visit start, click ids, caller, talk seconds, source, extra)
CALLS: dict[str, dict[str, Any]] = {
    "A": {"at": "2026-03-02 15:28:10", "visit": "2026-03-02 15:20:00", "gclid": "CjwKCAiA-gclid-A",
          "caller": "+14045551234", "talk": 120, "utm_campaign": "spring"},
    "B": {"at": "2026-03-04 21:30:00", "visit": "2026-01-05 12:00:00", "gclid": "CjwKCAiA-gclid-B",
          "caller": "+447911123456", "talk": 65},
    "G": {"at": "2026-03-05 10:00:00", "gclid": "gclid-G-short", "caller": "+14045551234", "talk": 30},
    "H": {"at": "2026-03-06 10:00:00", "visit": "2025-11-01 10:00:00", "gclid": "gclid-H-old",
          "caller": "+14045551234", "talk": 100},
    "C": {"at": "2026-03-09 18:00:00", "visit": "2026-03-09 17:50:00", "gbraid": "gb-C", "caller": "+14045552222",
          "talk": 75},
    "D": {"at": "2026-03-10 09:05:07", "msclkid": "ms-D", "caller": "+14045551234", "talk": 90, "source": "Bing Ads"},
    "F": {"at": "2026-03-11 13:07:08", "msclkid": "ms-F", "caller": "+14045552222", "talk": 200, "source": "Bing Ads"},
    "E": {"at": "2026-03-11 23:59:59", "wbraid": "wb-E", "caller": None, "talk": 61},
    "K": {"at": "2026-03-12 10:00:00", "gclid": "gclid-K-live", "caller": "+14045551234", "talk": None, "live": True},
    "I": {"at": "2026-03-12 11:00:00", "caller": "+14045551234", "talk": 300, "utm_campaign": "no-click"},
    "J": {"at": "2026-03-12 12:00:00", "gclid": "gclid-J-dnt", "caller": None, "talk": 300, "dnt": True},
    "L": {"at": "2026-03-12 13:00:00", "gclid": "gclid-L-blocked", "caller": "+14045559999", "talk": 0,
          "disposition": "blocked"},
    "M": {"at": "2026-02-20 10:00:00", "gclid": "gclid-M-before", "caller": "+14045551234", "talk": 300},
}  # fmt: skip


def build_calls(session: Session, calls: dict[str, dict[str, Any]] = CALLS, account: str = "Acme") -> dict[str, int]:
    """The calls above, each with its website visit; label -> call id."""
    acct = add_account(session, account, "America/New_York")
    sources = {name: add_source(session, account, name) for name in ("Google Ads", "Bing Ads")}
    ids = {}
    for label, c in calls.items():
        at = _utc(c["at"])
        visit = VisitorSession(
            key=f"{account}-{label}",
            account_id=acct.id,
            started_at=_utc(c["visit"]) if "visit" in c else at - dt.timedelta(minutes=5),
            last_seen_at=at,
            landing_url="https://www.acme.test/",
            utm_campaign=c.get("utm_campaign"),
            **{k: c.get(k) for k in ("gclid", "gbraid", "wbraid", "msclkid")},
        )
        session.add(visit)
        session.flush()
        live = c.get("live", False)
        call = Call(
            system="pbx1",
            linkedid=f"{account}.{label}",
            account_id=acct.id,
            source_id=sources[c.get("source", "Google Ads")].id,
            visitor_session_id=visit.id,
            caller_number=c["caller"],
            do_not_track=c.get("dnt"),
            started_at=at,
            answered_at=None if live else at + dt.timedelta(seconds=5),
            ended_at=None if live else at + dt.timedelta(seconds=5 + (c["talk"] or 0)),
            talk_time=c["talk"],
            duration=None if live else 5 + (c["talk"] or 0),
            disposition=None if live else c.get("disposition", "answered"),
        )
        session.add(call)
        session.flush()
        ids[label] = call.id
    return ids


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _request(fmt: str, **kw: Any) -> ExportRequest:
    return ExportRequest(account="Acme", format=fmt, since=SINCE, until=UNTIL, value=50.0, now=NOW, **kw)


@pytest.mark.parametrize(
    ("fmt", "reference", "skipped"),
    [
        (
            "google-click",
            "google-click.csv",
            {"outside the platform's import window": 1, "shorter than the minimum talk time": 1, "not ended yet": 1},
        ),
        (
            "google-leads",
            "google-leads.csv",
            {
                "outside the platform's import window": 2,
                "shorter than the minimum talk time": 1,
                "not ended yet": 1,
                "no caller number to match": 1,
            },
        ),
        ("microsoft", "microsoft.csv", {}),
        ("csv", "generic.csv", {"shorter than the minimum talk time": 1, "not ended yet": 1}),
    ],
)
def test_each_format_matches_its_reference_file_cell_by_cell(
    engine: Engine, fmt: str, reference: str, skipped: dict[str, int]
) -> None:
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory.begin() as s:
        ids = build_calls(s)
        result = export(s, _request(fmt))
    labels = {str(v): k for k, v in ids.items()}
    got = _rows(result.text())
    want = _rows((REFERENCE / reference).read_text(encoding="utf-8"))
    if fmt == "csv":
        got = [got[0]] + [[labels[row[0]], *row[1:]] for row in got[1:]]
    assert len(got) == len(want), result.text()
    for n, (got_row, want_row) in enumerate(zip(got, want, strict=True), start=1):
        assert len(got_row) == len(want_row), f"line {n}: {got_row}"
        for col, (g, w) in enumerate(zip(got_row, want_row, strict=True)):
            assert g == w, f"line {n} column {want[1 if fmt != 'csv' else 0][col] if n > 1 else col}: {g!r} != {w!r}"
    assert dict(result.skipped) == skipped
    # the platform's file ends its lines as the templates do (CRLF), and never holds a number in clear
    assert result.text().endswith("\r\n")
    for c in CALLS.values():
        if c["caller"]:
            assert c["caller"] not in result.text() and c["caller"].lstrip("+") not in result.text()


def test_the_hash_is_sha256_of_the_e164_text_computed_independently() -> None:
    assert hash_phone("+14045551234") == hashlib.sha256(b"+14045551234").hexdigest()
    for bad in ("4045551234", "+1 404 555 1234", "", "+0123456789"):
        with pytest.raises(InvalidInput):
            hash_phone(bad)


def test_a_call_counts_once_per_conversion_name_across_overlapping_exports(engine: Engine) -> None:
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory.begin() as s:
        ids = build_calls(s)
    with factory.begin() as s:
        first = export(s, _request("google-click"))
    assert [c.call_id for c in first.conversions] == [ids[k] for k in ("A", "B", "C", "E")]
    # a later, overlapping period: the four are marked and left out; a call new in the range is not
    with factory.begin() as s:
        wider = ExportRequest(
            account="Acme", format="google-click", since=SINCE - dt.timedelta(days=30), until=UNTIL, now=NOW
        )
        second = export(s, wider)
    assert [c.call_id for c in second.conversions] == [ids["M"]]
    assert second.skipped["exported before"] == 4
    # the same platform in its other format: the calls already counted under this name stay out
    with factory.begin() as s:
        leads = export(s, _request("google-leads"))
    assert leads.conversions == [] and leads.skipped["exported before"] == 2
    # another conversion name, or another platform, counts them again
    with factory.begin() as s:
        other = export(s, _request("google-click", conversion_name="Qualified call"))
        generic = export(s, _request("csv"))
    assert len(other.conversions) == 4 and len(generic.conversions) == 7
    # --again: the same four once more, still one mark each
    with factory.begin() as s:
        again = export(s, _request("google-click", again=True))
    assert [c.call_id for c in again.conversions] == [ids[k] for k in ("A", "B", "C", "E")]
    with factory() as s:
        marks = s.execute(
            select(ConversionExport.call_id).where(
                ConversionExport.platform == "google", ConversionExport.conversion_name == "Phone call"
            )
        ).all()
    assert sorted(m[0] for m in marks) == sorted(ids[k] for k in ("A", "B", "C", "E", "M"))


def test_qualified_only_takes_the_lead_rules_word_and_spam_never_counts(engine: Engine) -> None:
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory.begin() as s:
        ids = build_calls(s)
        s.add_all(
            [
                CallOutcome(call_id=ids["A"], lead="qualified", value=320.0),
                CallOutcome(call_id=ids["B"], lead="not-lead"),
                CallOutcome(call_id=ids["C"], lead="qualified", spam=True, spam_reason="silence only"),
            ]
        )
    with factory.begin() as s:
        qualified = export(s, _request("csv", qualified_only=True))
    assert [c.call_id for c in qualified.conversions] == [ids["A"]]
    assert qualified.skipped["not qualified as a lead"] == 5  # B, H, D, F, E: no rule said "qualified"
    assert qualified.skipped["flagged as spam"] == 1
    # the call's own value wins over --value
    assert _rows(qualified.text())[1][3] == "320.00"
    with factory.begin() as s:
        everyone = export(s, _request("csv"))
    assert ids["C"] not in [c.call_id for c in everyone.conversions]  # spam: not even without --qualified-only
    assert [r[3] for r in _rows(everyone.text())[1:]] == ["50.00"] * 5  # A went out in the first file


def test_qualified_only_takes_a_persons_word_first_as_reports_count_leads(engine: Engine) -> None:
    """A person's qualification (the dashboard's form writes call_qualifications) overrules the rules,
    in the export and in `reports`: one definition (tracking/qualification.py)."""
    from tracking.reports import by_source

    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory.begin() as s:
        ids = build_calls(s)
        s.add_all(
            [
                # the rules said qualified, a person said no: not a lead
                CallOutcome(call_id=ids["A"], lead="qualified", value=320.0),
                CallQualification(call_id=ids["A"], lead=False, updated_by="mia"),
                # nobody said: the rules decide (no value of theirs: the export's --value)
                CallOutcome(call_id=ids["B"], lead="qualified"),
                # no rule said, a person said yes with a value
                CallQualification(call_id=ids["D"], lead=True, value=999.0, updated_by="mia"),
                # a person gave a value and left the lead to the rules: the person's value
                CallOutcome(call_id=ids["F"], lead="qualified", value=10.0),
                CallQualification(call_id=ids["F"], lead=None, value=75.0, updated_by="mia"),
                # the rules said not a lead, a person said yes
                CallOutcome(call_id=ids["C"], lead="not-lead", value=5.0),
                CallQualification(call_id=ids["C"], lead=True, updated_by="mia"),
            ]
        )
    with factory.begin() as s:
        result = export(s, _request("csv", qualified_only=True))
        report = by_source(s, account="Acme", since=SINCE, until=UNTIL)
    labels = {v: k for k, v in ids.items()}
    assert [labels[c.call_id] for c in result.conversions] == ["B", "C", "D", "F"]
    assert [r[3] for r in _rows(result.text())[1:]] == ["50.00", "5.00", "999.00", "75.00"]
    assert result.skipped["not qualified as a lead"] == 3  # A (a person's no), H, E
    assert sum(r["qualified"] for r in report) == 4
    assert sum(r["value"] for r in report) == 5.0 + 999.0 + 75.0  # B has no value of its own


def test_an_export_that_rolls_back_marks_nothing(engine: Engine) -> None:
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory.begin() as s:
        build_calls(s)
    with pytest.raises(RuntimeError), factory.begin() as s:
        assert len(export(s, _request("google-click")).conversions) == 4
        raise RuntimeError("the file could not be written")
    with factory.begin() as s:
        assert len(export(s, _request("google-click")).conversions) == 4


def test_other_accounts_calls_are_never_exported(engine: Engine) -> None:
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory.begin() as s:
        build_calls(s)
        other = {
            "Z": {"at": "2026-03-03 10:00:00", "gclid": "gclid-other-account", "caller": "+14045550000", "talk": 99}
        }
        build_calls(s, other, account="Globex")
        text = export(s, _request("csv")).text()
    assert "gclid-other-account" not in text


def test_bad_requests_are_refused_with_the_reason(engine: Engine) -> None:
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory.begin() as s:
        build_calls(s)
    cases = [
        (_request("google-click", currency="usd"), "currency"),
        (_request("google-click", currency="US"), "currency"),
        (_request("google-click", conversion_name=" "), "conversion name"),
        (_request("google-click", conversion_name="a\nb"), "conversion name"),
        (_request("google-click", min_duration=-1), "min-duration"),
        (ExportRequest(account="Acme", format="tiktok", since=SINCE), "unknown format"),
        (ExportRequest(account="Acme", format="csv", since=UNTIL, until=SINCE), "--until"),
        (ExportRequest(account="Nobody", format="csv", since=SINCE), "Nobody"),
        (ExportRequest(account="Acme", format="csv", since=SINCE, value=-5), "--value"),
        (ExportRequest(account="Acme", format="csv", since=SINCE, value=float("nan")), "--value"),
    ]
    for req, words in cases:
        with factory.begin() as s, pytest.raises(Exception) as info:
            export(s, req)
        assert words in str(info.value), (req, info.value)
    with factory() as s:
        assert s.scalar(select(ConversionExport.id).limit(1)) is None


# --- the command ---------------------------------------------------------------------------------


def _recent(engine: Engine) -> dict[str, int]:
    """Three calls of the last days (the command counts import windows from now)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    fmt = "%Y-%m-%d %H:%M:%S"
    calls = {
        "A": {"at": (now - dt.timedelta(days=2)).strftime(fmt), "gclid": "gclid-recent-A", "caller": "+14045551234",
              "talk": 120},
        "B": {"at": (now - dt.timedelta(days=1)).strftime(fmt), "gclid": "gclid-recent-B", "caller": "+14045551234",
              "talk": 20},
        "C": {"at": (now - dt.timedelta(days=1)).strftime(fmt), "msclkid": "ms-recent-C", "caller": "+14045551234",
              "talk": 120},
    }  # fmt: skip
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory.begin() as s:
        return build_calls(s, calls)


def test_the_command_writes_the_file_and_says_what_it_skipped(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    _recent(engine)
    out = tmp_path / "google.csv"
    run = cli.ok("conversions", "export", "--account", "Acme", "--since", "7d", "--format", "google-click",
                 "--to", str(out), "--value", "80", "--currency", "EUR")  # fmt: skip
    rows = _rows(out.read_text(encoding="utf-8"))
    assert rows[0] == ["Parameters:TimeZone=America/New_York"]
    assert [r[0] for r in rows[2:]] == ["gclid-recent-A"] and rows[2][3:5] == ["80.00", "EUR"]
    assert "1 conversion(s) exported" in run.output
    assert "skipped 1 call(s): shorter than the minimum talk time" in run.output
    # to stdout; --min-duration 0 takes the short one, the other is exported already
    again = cli.ok("conversions", "export", "--account", "Acme", "--since", "7d", "--format", "google-click",
                   "--min-duration", "0")  # fmt: skip
    assert "gclid-recent-B" in again.output and "gclid-recent-A" not in again.output
    assert "skipped 1 call(s): exported before" in again.output
    ms = cli.ok("conversions", "export", "--account", "Acme", "--since", "7d", "--format", "microsoft")
    assert "ms-recent-C,Phone call," in ms.output


def test_the_command_refuses_bad_input_and_marks_nothing(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    _recent(engine)
    base = ["conversions", "export", "--account", "Acme", "--since", "7d"]
    assert "Invalid value for '--format'" in cli.fails(*base, "--format", "facebook").output
    assert "Missing option '--format'" in cli.fails(*base).output
    assert "--min-duration" in cli.fails(*base, "--format", "csv", "--min-duration", "-5").output
    assert "currency" in cli.fails(*base, "--format", "csv", "--currency", "dollars").output
    assert "--until" in cli.fails(*base, "--format", "csv", "--until", "8d").output
    assert "is not a date" in cli.fails("conversions", "export", "--account", "Acme", "--since", "March",
                                        "--format", "csv").output  # fmt: skip
    assert "Nobody" in cli.fails("conversions", "export", "--account", "Nobody", "--since", "7d",
                                 "--format", "csv").output  # fmt: skip
    missing = tmp_path / "no-such-folder" / "out.csv"
    assert "cannot write" in cli.fails(*base, "--format", "csv", "--to", str(missing)).output
    # nothing was marked by the failed runs: the next export has both calls
    assert "2 conversion(s) exported" in cli.ok(*base, "--format", "csv").output


async def test_msclkid_from_the_landing_page_reaches_the_microsoft_file(
    cli: Cli, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    """The real DNI API stores msclkid from the landing URL; the real route ties the call to the visit."""
    site = "https://www.acme.test"
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory.begin() as s:
        account = add_account(s, "Acme", "America/New_York")
        add_source(s, "Acme", "Bing Ads")
        create_pool(s, settings, "ads", "Acme", 30, source="Bing Ads")
        add_numbers(s, settings, "ads", "Acme", ["+14045550151"], "PJSIP/100")
        add_site(s, "Acme", site)
        add_rule(s, "Acme", "param", "msclkid", "Bing Ads")
        key = account.public_key
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    app = create_app(settings, engine, clock=lambda: start, cache_seconds=0)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://dni.test") as client:
        answer = await client.post(
            "/dni/v1/session",
            json={"account": key, "visitor": None, "url": f"{site}/?msclkid=7f3a9e0c1b2d4e5f", "referrer": ""},
            headers={"Origin": site},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["source"] == "Bing Ads"
    cfg = settings.replace(recorder=RecorderSettings(spool_dir=tmp_path / "monitor"))
    store = RouteStore(cfg.database.url)
    try:
        at = start + dt.timedelta(minutes=1)
        decision = CallRouter(cfg, store).run(
            RouteRequest("4045550151", "+14045551234", "Jane", "pbx1", "9.1", "9.1", at)
        )
    finally:
        store.close()
    with factory.begin() as s:  # the listener's part: the call was answered and talked for 95 s
        s.execute(
            update(Call)
            .where(Call.id == decision.call_id)
            .values(answered_at=at, ended_at=at + dt.timedelta(seconds=95), talk_time=95.0, disposition="answered")
        )
    shown = json.loads(cli.ok("calls", "show", str(decision.call_id), "--format", "json").output)
    assert shown["visit"]["msclkid"] == "7f3a9e0c1b2d4e5f"
    out = cli.ok("conversions", "export", "--account", "Acme", "--since", "1d", "--format", "microsoft").output
    assert _rows(out)[2][0] == "7f3a9e0c1b2d4e5f"
