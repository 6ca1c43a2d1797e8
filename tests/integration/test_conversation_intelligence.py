"""End to end: a recorded call is transcribed with the real model, masked, tagged by the account's rules,
found by search and counted as a qualified lead in the source report; spam signals keep calls apart."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from schema.models import Account, Call, CallOutcome, CallTag, Source, TrackingNumber, utcnow
from tests.conftest import Cli
from tests.integration.transcriber_helpers import archived, espeak
from tracking.lead_rules import sweep

CALLER = "Hello, I would like to book an appointment for my water heater. My card number is four two four two, four two four two, four two four two, four two four two."


@pytest.fixture(scope="module")
def booking_call(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return espeak(CALLER, tmp_path_factory.mktemp("speech") / "booking.wav")


def add_call(
    session_factory: sessionmaker[Session],
    *,
    account: str = "Acme",
    source: str = "Google Ads",
    caller: str = "+12025550143",
    number: str = "+18005550100",
    started: dt.datetime | None = None,
    duration: float = 60.0,
    disposition: str = "answered",
) -> int:
    with session_factory() as s, s.begin():
        acc = s.scalars(select(Account).where(Account.name == account)).one()
        src = s.scalars(select(Source).where(Source.account_id == acc.id, Source.name == source)).one()
        started = started or utcnow() - dt.timedelta(minutes=30)
        call = Call(
            system="asterisk",
            linkedid=f"1795915078.{os.urandom(3).hex()}",
            account_id=acc.id,
            source_id=src.id,
            caller_number=caller,
            tracking_number=number,
            started_at=started,
            answered_at=started,
            ended_at=started + dt.timedelta(seconds=duration),
            duration=duration,
            talk_time=duration,
            disposition=disposition,
        )
        s.add(call)
        s.flush()
        return call.id


def test_a_recorded_call_becomes_a_qualified_lead_found_by_search(
    cli: Cli, make_account: object, session_factory: sessionmaker[Session], tmp_path: Path, booking_call: Path
) -> None:
    make_account()  # type: ignore[operator]  # Acme with source Google Ads
    cli.ok("sources", "add", "Radio", "--account", "Acme")
    cli.ok(
        "automations", "add", "booked", "--account", "Acme",
        "--when", 'caller said "appointment" and talk_time > 30',
        "--then", 'tag "booked", qualified, score +10, value 150',
    )  # fmt: skip
    cli.ok(
        "automations",
        "add",
        "heater",
        "--account",
        "Acme",
        "--when",
        'said "water heater"',
        "--then",
        'tag "water heater"',
    )
    archive = tmp_path / "archive"
    archive.mkdir()
    call_id, _ = archived(session_factory, booking_call, archive)
    with session_factory() as s, s.begin():  # the call came from Google Ads and talked a minute
        call = s.get(Call, call_id)
        assert call is not None
        call.source_id = s.scalars(select(Source.id).where(Source.name == "Google Ads")).one()
    # when the call ends the rules run: nothing said is known yet
    with session_factory() as s, s.begin():
        assert sweep(s) == 1
    shown = json.loads(cli.ok("calls", "show", str(call_id), "--format", "json").output)
    assert (shown["lead"], shown["tags"]) == (None, "")
    # the transcript arrives: the rules run again
    assert "1 transcribed" in cli.ok("transcripts", "process").output
    shown = json.loads(cli.ok("calls", "show", str(call_id), "--format", "json").output)
    assert (shown["lead"], shown["score"], shown["value"]) == ("qualified", 10, 150.0)
    assert shown["tags"] == "booked, water heater"
    said = " ".join(seg["text"] for seg in shown["transcript"])
    assert "[card number]" in said and "4242" not in said.replace(" ", "").replace(",", "")
    # found by search, masked
    hits = json.loads(cli.ok("transcripts", "search", "water heater", "--account", "Acme", "--format", "json").output)
    assert [h["call"] for h in hits] == [call_id] and hits[0]["source"] == "Google Ads"
    # counted as a qualified lead of its source, with its value and keywords
    rows = json.loads(cli.ok("reports", "sources", "--account", "Acme", "--format", "json").output)
    google = next(r for r in rows if r["source"] == "Google Ads")
    radio = next(r for r in rows if r["source"] == "Radio")
    assert (google["calls"], google["qualified"], google["lead_rate"], google["value"]) == (1, 1, 100.0, 150.0)
    assert "appointment 1" in google["top_keywords"] and "water" in google["top_keywords"]
    assert (radio["qualified"], radio["lead_rate"], radio["top_keywords"]) == (0, None, "")
    # apply again changes nothing; a rule removed and apply: its tag and lead go
    assert "rules applied to 1 call" in cli.ok("automations", "apply", "--account", "Acme").output
    assert json.loads(cli.ok("calls", "show", str(call_id), "--format", "json").output)["score"] == 10
    rule_id = json.loads(cli.ok("automations", "list", "--format", "json").output)[0]["id"]
    cli.ok("automations", "remove", str(rule_id))
    cli.ok("automations", "apply", "--since", "7d")
    shown = json.loads(cli.ok("calls", "show", str(call_id), "--format", "json").output)
    assert (shown["lead"], shown["score"], shown["tags"]) == (None, 0, "water heater")


def test_automations_cli_checks_rules_when_they_are_added(cli: Cli, make_account: object) -> None:
    make_account()  # type: ignore[operator]
    bad = cli.fails("automations", "add", "x", "--account", "Acme", "--when", "talk_time > soon", "--then", "qualified")
    assert "condition: talk_time: 'soon' at character 13 is not a duration" in bad.output
    bad = cli.fails("automations", "add", "x", "--account", "Acme", "--when", "always", "--then", "promote")
    assert "action: unknown action 'promote'" in bad.output
    assert (
        "unknown account 'Nope'"
        in cli.fails("automations", "add", "x", "--account", "Nope", "--when", "always", "--then", "qualified").output
    )
    assert json.loads(cli.ok("automations", "list", "--format", "json").output) == []
    cli.ok("automations", "add", "x", "--account", "Acme", "--when", "always", "--then", "qualified")
    assert (
        "already"
        in cli.fails("automations", "add", "x", "--account", "Acme", "--when", "always", "--then", "spam").output
    )
    assert "no rule 999" in cli.fails("automations", "remove", "999").output


def test_automations_test_shows_what_a_rule_would_do_without_changing_the_call(
    cli: Cli, make_account: object, session_factory: sessionmaker[Session]
) -> None:
    make_account()  # type: ignore[operator]
    call_id = add_call(session_factory, duration=120)
    cli.ok(
        "automations", "add", "long", "--account", "Acme", "--when", "talk_time > 90", "--then", "qualified, value 80"
    )
    out = cli.ok("automations", "test", str(call_id)).output
    assert "long: matches" in out and "outcome: qualified; value 80" in out
    out = cli.ok("automations", "test", str(call_id), "--when", "talk_time > 5m", "--then", "spam").output
    assert "does not match" in out and "outcome: nothing" in out
    with session_factory() as s:
        assert s.get(CallOutcome, call_id) is None


def test_spam_signals_flag_calls_that_are_kept_out_of_leads(
    cli: Cli, make_account: object, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    make_account()  # type: ignore[operator]
    cli.ok("automations", "add", "all", "--account", "Acme", "--when", "always", "--then", "qualified")
    listed = tmp_path / "spam.csv"
    listed.write_text("number,reason\n(212) 555-0111,robocaller\n+1 212 555 0122,\n", encoding="utf-8")
    assert "2 spam numbers added, 0 known already" in cli.ok("spam", "import", str(listed)).output
    assert "0 spam numbers added, 2 known already" in cli.ok("spam", "import", str(listed)).output
    known = add_call(session_factory, caller="+12125550111")
    now = utcnow() - dt.timedelta(hours=1)
    burst = [
        add_call(session_factory, caller="+13125550199", number=n, started=now + dt.timedelta(minutes=i))
        for i, n in enumerate(("+18005550100", "+18005550101", "+18005550102"))
    ]
    honest = add_call(session_factory, caller="+13125550122")
    cli.ok("automations", "apply")
    rows = {r["call"]: r for r in json.loads(cli.ok("spam", "calls", "--format", "json").output)}
    assert set(rows) == {known, *burst}
    assert "known spam number (robocaller)" in rows[known]["why"]
    assert "rang 3 tracking numbers within 10 minutes" in rows[burst[0]]["why"]
    report = json.loads(cli.ok("reports", "sources", "--account", "Acme", "--format", "json").output)
    google = next(r for r in report if r["source"] == "Google Ads")
    assert (google["calls"], google["spam"], google["qualified"], google["answered"]) == (1, 4, 1, 1)
    # a person clears one flag: it stays cleared when the rules run again
    assert f"call {known}: spam flag cleared" in cli.ok("spam", "clear", str(known)).output
    cli.ok("automations", "apply")
    rows = {r["call"] for r in json.loads(cli.ok("spam", "calls", "--format", "json").output)}
    assert known not in rows and honest not in rows
    assert "is not flagged as spam" in cli.fails("spam", "clear", str(honest)).output
    with session_factory() as s:
        assert s.scalar(select(CallOutcome.lead).where(CallOutcome.call_id == known)) == "qualified"


def test_spam_thresholds_come_from_the_settings(
    cli: Cli, make_account: object, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from calltrack.leads_service import LeadRulesService
    from config import load_settings
    from schema.models import Recording, Transcript

    make_account()  # type: ignore[operator]
    start = utcnow() - dt.timedelta(hours=1)
    quick = [  # two tracking numbers three minutes apart
        add_call(session_factory, caller="+13125550101", number=n, started=start + dt.timedelta(minutes=3 * i))
        for i, n in enumerate(("+18005550100", "+18005550101"))
    ]
    slow = [  # two tracking numbers twenty minutes apart
        add_call(session_factory, caller="+13125550102", number=n, started=start + dt.timedelta(minutes=20 * i))
        for i, n in enumerate(("+18005550100", "+18005550101"))
    ]
    silent = add_call(session_factory, duration=20, caller="+16175550101")
    with session_factory() as s, s.begin():
        rec = Recording(call_id=silent, source_path=f"/s/{silent}.wav", state="archived")
        s.add(rec)
        s.flush()
        s.add(Transcript(recording_id=rec.id, call_id=silent, state="done", text=""))

    def flagged(*config: str) -> dict[int, str]:
        cli.ok(*config, "automations", "apply")
        return {r["call"]: r["why"] for r in json.loads(cli.ok("spam", "calls", "--format", "json").output)}

    assert flagged() == {}  # the defaults: 3 numbers within 10 minutes, silent calls of 10 s at most
    cfg = tmp_path / "calltrack.toml"
    cfg.write_text("[spam]\nburst_numbers = 2\nburst_minutes = 5\nshort_call_seconds = 30\n", encoding="utf-8")
    rows = flagged("--config", str(cfg))
    assert set(rows) == {*quick, silent}, rows
    assert "rang 2 tracking numbers within 5 minutes" in rows[quick[0]]
    assert "silence only in a 20 s call" in rows[silent]
    cfg.write_text("[spam]\nburst_numbers = 2\nburst_minutes = 30\nshort_call_seconds = 0\n", encoding="utf-8")
    rows = flagged("--config", str(cfg))
    assert set(rows) == {*quick, *slow}, rows  # 0 turns the silence signal off
    # the leads service of `calltrack serve` (the sweep after a call ends) reads them too
    late = add_call(session_factory, caller="+13125550103", number="+18005550102", started=start)
    add_call(session_factory, caller="+13125550103", number="+18005550103", started=start + dt.timedelta(minutes=25))
    LeadRulesService(load_settings(cfg, environ={}), session_factory).run_pass()
    assert late in {r["call"] for r in json.loads(cli.ok("spam", "calls", "--format", "json").output)}
    # and the transcriber, whose transcript makes a short call silent
    from transcriber.pipeline import Transcriber

    quiet = add_call(session_factory, duration=25, caller="+16175550104")
    cfg.write_text("[spam]\nshort_call_seconds = 30\n", encoding="utf-8")
    transcriber = Transcriber(load_settings(cfg, environ={}), session_factory)
    try:
        with session_factory() as s, s.begin():
            rec = Recording(call_id=quiet, source_path=f"/s/{quiet}.wav", state="archived")
            s.add(rec)
            s.flush()
            transcript = Transcript(recording_id=rec.id, call_id=quiet, state="done", text="")
            s.add(transcript)
            s.flush()
            assert transcriber.on_stored is not None
            transcriber.on_stored(s, transcript)
    finally:
        transcriber.close()
    rows = {r["call"]: r["why"] for r in json.loads(cli.ok("spam", "calls", "--format", "json").output)}
    assert "silence only in a 25 s call" in rows[quiet], rows


def test_a_bad_spam_csv_changes_nothing(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("number\n5550001111\nnot a number\n", encoding="utf-8")
    assert "line 3: invalid caller 'not a number'" in cli.fails("spam", "import", str(bad)).output
    bad.write_text("phone\n5550001111\n", encoding="utf-8")
    assert "needs a 'number' column" in cli.fails("spam", "import", str(bad)).output
    bad.write_bytes(b"number\n\xff\xfe\n")
    assert "not UTF-8" in cli.fails("spam", "import", str(bad)).output
    assert json.loads(cli.ok("spam", "numbers", "--format", "json").output) == []


def test_a_silent_short_call_is_spam_and_a_blocked_caller_too(
    cli: Cli, make_account: object, session_factory: sessionmaker[Session]
) -> None:
    from schema.models import Recording, Transcript

    make_account()  # type: ignore[operator]
    silent = add_call(session_factory, duration=4, caller="+16175550101")
    talking = add_call(session_factory, duration=4, caller="+16175550102")
    with session_factory() as s, s.begin():
        for call_id, text in ((silent, ""), (talking, "hello is this acme")):
            rec = Recording(call_id=call_id, source_path=f"/s/{call_id}.wav", state="archived")
            s.add(rec)
            s.flush()
            s.add(Transcript(recording_id=rec.id, call_id=call_id, state="done", text=text))
    cli.ok("callers", "block", "+16175550103")
    blocked = add_call(session_factory, caller="+16175550103", disposition="blocked")
    with session_factory() as s, s.begin():
        assert sweep(s) == 3
    rows = {r["call"]: r["why"] for r in json.loads(cli.ok("spam", "calls", "--format", "json").output)}
    assert set(rows) == {silent, blocked}
    assert "silence only in a 4 s call" in rows[silent] and "block list" in rows[blocked]
    with session_factory() as s:
        assert s.scalars(select(CallTag)).all() == []
        assert s.scalar(select(TrackingNumber.id)) is None
