"""Privacy: export and erase by phone number, retention windows; on both databases."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ami_listener.sink import insert_events, rebuild
from ami_listener.spool import make_event
from config import PrivacySettings, Settings
from schema.models import (
    Account,
    AmiEvent,
    AuditEntry,
    Call,
    CallEvent,
    CallLeg,
    Recording,
    SmsMessage,
    VisitorSession,
    utcnow,
)
from tests.conftest import Cli
from tests.fakes.ami_server import Frame, call_frames, epoch_of, load_capture, with_timestamps
from tests.integration.ami_harness import kept_payloads
from tracking.calls import upsert_call
from tracking.phone import try_normalize
from tracking.privacy import apply_retention

JANE = "+14045551234"
BOB = "+14045559876"


def seed(
    cli: Cli, factory: sessionmaker[Session], tmp_path: Path, started: dt.datetime | None = None
) -> dict[str, Path]:
    cli.ok("accounts", "add", "Acme")
    started = started or utcnow() - dt.timedelta(hours=1)
    files = {}
    with factory() as s, s.begin():
        account_id = s.scalar(select(Account.id))
        for i, (caller, name) in enumerate(((JANE, 'Jane "JD" Doe'), (BOB, "Bob"))):
            call_id = upsert_call(
                s,
                "pbx",
                f"1795915078.{i}",
                {
                    "caller_number": caller,
                    "caller_name": name,
                    "account_id": account_id,
                    "tracking_number": "+18005550100",
                    "started_at": started,
                    "ended_at": started + dt.timedelta(seconds=30),
                    "disposition": "answered",
                },
            )
            s.add(
                CallLeg(call_id=call_id, uniqueid=f"1795915078.{i}", channel=f"PJSIP/trunk-{i}", caller_number=caller)
            )
            s.add(CallEvent(call_id=call_id, at=started, kind="ringing", detail={"caller": caller}))
            archive = tmp_path / f"call-{call_id}.mp3"
            archive.write_bytes(b"ID3 fake mp3 of " + caller.encode())
            files[caller] = archive
            s.add(
                Recording(
                    call_id=call_id,
                    account_id=account_id,
                    source_path=f"/spool/{call_id}.wav",
                    path=str(archive),
                    format="mp3",
                    state="archived",
                    archived_at=started,
                )
            )
            s.add(
                AmiEvent(
                    system="pbx",
                    event_key=f"c1:{i}",
                    seq=i,
                    event="Newchannel",
                    uniqueid=f"1795915078.{i}",
                    linkedid=f"1795915078.{i}",
                    received_at=started,
                    payload={"CallerIDNum": caller},
                )
            )
            s.add(
                SmsMessage(
                    system="pbx",
                    account_id=account_id,
                    direction="in",
                    from_number=caller,
                    to_number="+18005550100",
                    body=f"hi from {name}",
                    received_at=started,
                )
            )
        # a raw event of another call that still names Jane (national digits), e.g. a transfer leg
        s.add(
            AmiEvent(
                system="pbx",
                event_key="c1:9",
                seq=9,
                event="NewCallerid",
                uniqueid="1795915999.1",
                linkedid="1795915999.1",
                received_at=started,
                payload={"CallerIDNum": "4045551234"},
            )
        )
        s.add(VisitorSession(key="v1", account_id=account_id, started_at=started, last_seen_at=started))
    return files


def count(factory: sessionmaker[Session], model: type) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_export_gives_everything_about_one_caller(
    cli: Cli, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    seed(cli, session_factory, tmp_path)
    data = json.loads(cli.ok("privacy", "export", "(404) 555-1234").output)
    assert data["number"] == JANE
    assert [c["caller_name"] for c in data["calls"]] == ['Jane "JD" Doe']
    call = data["calls"][0]
    assert call["legs"][0]["caller_number"] == JANE and call["timeline"][0]["kind"] == "ringing"
    assert call["recordings"][0]["format"] == "mp3"
    assert [m["body"] for m in data["sms"]] == ['hi from Jane "JD" Doe']
    out = tmp_path / "jane.json"
    cli.ok("privacy", "export", JANE, "--to", str(out))
    assert json.loads(out.read_text())["calls"][0]["id"] == call["id"]
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "privacy.export")) == 2


def test_erase_removes_the_caller_and_keeps_others(
    cli: Cli, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    files = seed(cli, session_factory, tmp_path)
    assert cli.fails("privacy", "erase", JANE, input="n\n").exit_code == 1
    assert count(session_factory, Call) == 2
    result = cli.ok("privacy", "erase", "404.555.1234", "--yes")
    assert "1 call(s), 1 recording(s) (1 file(s)), 2 raw event(s), 1 text(s)" in result.output
    assert not files[JANE].exists() and files[BOB].exists()
    with session_factory() as s:
        assert [c.caller_number for c in s.scalars(select(Call))] == [BOB]
        assert [leg.caller_number for leg in s.scalars(select(CallLeg))] == [BOB]
        assert s.scalar(select(func.count()).select_from(CallEvent)) == 1
        assert [e.payload["CallerIDNum"] for e in s.scalars(select(AmiEvent))] == [BOB]
        assert [m.from_number for m in s.scalars(select(SmsMessage))] == [BOB]
        audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "privacy.erase")).one()
        assert audit.target == "caller ending 1234" and "404555" not in json.dumps(audit.detail)
    assert json.loads(cli.ok("privacy", "export", JANE).output)["calls"] == []
    assert "invalid phone number" in cli.fails("privacy", "erase", "12", "--yes").output


def test_retention_windows(cli: Cli, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    files = seed(cli, session_factory, tmp_path, started=utcnow() - dt.timedelta(days=40))
    assert "0 call(s)" in cli.ok("privacy", "retention").output  # nothing set: everything kept
    assert count(session_factory, Call) == 2
    cli.ok("privacy", "set-retention", "Acme", "--recording-days", "30")
    assert "2 recording(s)" in cli.ok("privacy", "retention").output
    assert not files[JANE].exists() and not files[BOB].exists()
    with session_factory() as s:
        assert {r.state for r in s.scalars(select(Recording))} == {"deleted"}
    assert count(session_factory, Call) == 2
    cli.ok("privacy", "set-retention", "Acme", "--days", "60")
    assert "0 call(s)" in cli.ok("privacy", "retention").output
    cli.ok("privacy", "set-retention", "Acme", "--days", "30")
    out = cli.ok("privacy", "retention").output
    assert "2 call(s), 1 visitor session(s)" in out
    assert count(session_factory, Call) == 0 and count(session_factory, VisitorSession) == 0
    assert "invalid retention -1" in cli.fails("privacy", "set-retention", "Acme", "--days", "-1").output
    assert "unknown account" in cli.fails("privacy", "set-retention", "Nobody", "--days", "1").output


# --- raw AMI events, from recorded calls -------------------------------------------------------


def recorded_call(traffic: Path, scenario: str, *, caller: tuple[str, str] | None = None, days_later: int = 0) -> Any:
    """A recorded call's frames; optionally from another caller (national digits, name), some days later."""
    recorded = load_capture(scenario, traffic)
    shift = days_later * 86_400
    out = with_timestamps(call_frames(recorded), epoch_of(recorded) + shift)
    if caller is not None:
        digits, name = caller
        out = [
            Frame(f.at, f.data.replace(b"4045551234", digits.encode()).replace(b"Jane Doe", name.encode())) for f in out
        ]
    return out, dt.datetime.fromtimestamp(epoch_of(recorded) + shift, dt.UTC)


def store_events(factory: sessionmaker[Session], system: str, stream: Any, at: dt.datetime, key: str) -> None:
    """What the AMI listener stores of *stream* (received at *at*), then the calls rebuilt from it."""
    events = [make_event(i, f"{key}:{i}", at, payload) for i, payload in enumerate(kept_payloads(stream))]
    with factory() as s, s.begin():
        insert_events(s, system, events)
        rebuild(s, system, normalize=try_normalize)


def raw_events(factory: sessionmaker[Session]) -> list[tuple[str, dict[str, Any]]]:
    """Stored events as (the call they belong to, payload); "" for those of no call (a bridge, a boot)."""
    with factory() as s:
        rows = s.execute(select(AmiEvent.linkedid, AmiEvent.uniqueid, AmiEvent.payload).order_by(AmiEvent.seq))
        # a capture's channels share the linkedid's epoch second: Cdr events carry only the Uniqueid
        return [(str(lid or uid or "").split(".")[0], payload) for lid, uid, payload in rows]


JANE_CALL = "1795915078.0"  # the answered capture
BOB_CALL = "1795915122.8"  # the busy capture, from Bob
JANES, BOBS = JANE_CALL.split(".")[0], BOB_CALL.split(".")[0]


def names_jane(payload: dict[str, Any]) -> bool:
    text = json.dumps(payload, ensure_ascii=False)
    return "4045551234" in text or "Jane Doe" in text


def test_erase_removes_every_raw_event_of_the_callers_calls(
    cli: Cli, session_factory: sessionmaker[Session], asterisk_traffic: Path
) -> None:
    jane, jane_at = recorded_call(asterisk_traffic, "answered")
    bob, bob_at = recorded_call(asterisk_traffic, "busy", caller=("4045559876", "Bob Roe"))
    store_events(session_factory, "pbx", jane, jane_at, "a")
    store_events(session_factory, "pbx", bob, bob_at, "b")
    before = raw_events(session_factory)
    bobs = [e for e in before if e[0] == BOBS]
    # what makes the by-call delete necessary: the agent leg's events do not name her number
    assert any("4045551234" not in json.dumps(p) for call, p in before if call == JANES)

    cli.ok("privacy", "erase", JANE, "--yes")
    after = raw_events(session_factory)
    assert [p for call, p in after if call == JANES] == []
    assert [p for _, p in after if names_jane(p)] == []
    assert [e for e in after if e[0] == BOBS] == bobs  # the other caller's call is untouched
    assert [e for e in after if e[0] == ""] == [e for e in before if e[0] == ""]

    # rebuilding calls from the raw events cannot bring any part of her call back
    cli.ok("calls", "rebuild")
    with session_factory() as s:
        assert list(s.scalars(select(Call.linkedid))) == [BOB_CALL]
        assert not [leg for leg in s.scalars(select(CallLeg)) if "Jane" in (leg.caller_name or "")]


def test_retention_removes_old_raw_events_by_call_and_by_the_global_window(
    cli: Cli, session_factory: sessionmaker[Session], settings: Settings, asterisk_traffic: Path
) -> None:
    cli.ok("accounts", "add", "Acme")
    jane, jane_at = recorded_call(asterisk_traffic, "answered")  # 45 days before "now"
    bob, bob_at = recorded_call(asterisk_traffic, "busy", caller=("4045559876", "Bob Roe"), days_later=40)
    with session_factory() as s, s.begin():
        account_id = s.scalar(select(Account.id))
        for linkedid in (JANE_CALL, BOB_CALL):  # the route made the rows: the calls belong to the account
            upsert_call(s, "pbx", linkedid, {"account_id": account_id, "route_status": "ok"})
    store_events(session_factory, "pbx", jane, jane_at, "a")
    store_events(session_factory, "pbx", bob, bob_at, "b")
    booted = {"Event": "FullyBooted", "Privilege": "system,all", "Status": "Fully Booted"}
    with session_factory() as s, s.begin():  # events of no call: each connection's FullyBooted
        insert_events(s, "pbx", [make_event(0, "a:boot", jane_at, booted), make_event(10**9, "b:boot", bob_at, booted)])
    now = jane_at + dt.timedelta(days=45)
    before = raw_events(session_factory)
    bobs = [e for e in before if e[0] == BOBS]
    no_call = [e for e in before if e[0] == ""]
    assert len(no_call) > 2  # bridges too

    # the account keeps calls 30 days, no global window: the old call goes with every raw event of it
    cli.ok("privacy", "set-retention", "Acme", "--days", "30")
    with session_factory() as s, s.begin():
        assert apply_retention(s, settings, "test", now=now).calls == 1
    after = raw_events(session_factory)
    assert [p for call, p in after if call == JANES] == []
    assert [p for _, p in after if names_jane(p)] == []  # Cdr events name her and have no linkedid
    assert [e for e in after if e[0] == BOBS] == bobs
    assert [e for e in after if e[0] == ""] == no_call  # events of no call wait for the global window
    kept = len(after)

    # privacy.retention_days: raw events older than it go, whichever call they belong to (or none)
    window = settings.replace(privacy=PrivacySettings(retention_days=30))
    with session_factory() as s, s.begin():
        erased = apply_retention(s, window, "test", now=now)
    with session_factory() as s:
        old = s.scalar(
            select(func.count()).select_from(AmiEvent).where(AmiEvent.received_at < jane_at + dt.timedelta(days=1))
        )
        assert old == 0
    after = raw_events(session_factory)
    assert erased.raw_events == kept - len(after) > 0
    assert [e for e in after if e[0] == BOBS] == bobs  # 5 days old: kept
    assert [p["Event"] for call, p in after if call == ""].count("FullyBooted") == 1  # the recent one
    with session_factory() as s:
        assert list(s.scalars(select(Call.linkedid))) == [BOB_CALL]


def test_retention_keeps_to_each_accounts_window_and_its_recent_recordings(
    cli: Cli, session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    now = utcnow()
    cli.ok("accounts", "add", "Acme")
    cli.ok("accounts", "add", "Other")  # no window of its own; the settings keep everything
    cli.ok("privacy", "set-retention", "Acme", "--days", "30", "--recording-days", "10")
    files: dict[str, Path] = {}
    with session_factory() as s, s.begin():
        ids = dict(s.execute(select(Account.name, Account.id)).all())

        def call(
            name: str, account: str, days_ago: int, recording_days_ago: int | None = None, state: str = "archived"
        ) -> None:
            started = now - dt.timedelta(days=days_ago)
            call_id = upsert_call(s, "pbx", name, {"account_id": ids[account], "started_at": started})
            if recording_days_ago is not None:
                files[name] = tmp_path / f"{name}.mp3"
                files[name].write_bytes(b"ID3")
                archived = now - dt.timedelta(days=recording_days_ago)
                s.add(Recording(call_id=call_id, account_id=ids[account], source_path=f"/spool/{name}.wav",
                                path=str(files[name]), format="mp3", state=state, archived_at=archived))  # fmt: skip

        call("acme-old", "Acme", 40)
        call("acme-15", "Acme", 15, recording_days_ago=15)
        call("acme-2", "Acme", 2, recording_days_ago=2)
        call("acme-waiting", "Acme", 15, recording_days_ago=15, state="pending")
        call("other-old", "Other", 40, recording_days_ago=40)
    with session_factory() as s, s.begin():
        erased = apply_retention(s, settings, "test", now=now)
    assert (erased.calls, erased.recordings) == (1, 1)
    with session_factory() as s:
        assert sorted(s.scalars(select(Call.linkedid))) == ["acme-15", "acme-2", "acme-waiting", "other-old"]
        recordings = {r.source_path: r for r in s.scalars(select(Recording))}
        audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "privacy.retention")).one()
    gone = recordings["/spool/acme-15.wav"]
    assert (gone.state, gone.path, gone.last_error) == ("deleted", None, "removed by the retention window")
    assert not files["acme-15"].exists()
    for kept in ("acme-2", "acme-waiting", "other-old"):  # recent, not archived yet, another account's
        assert recordings[f"/spool/{kept}.wav"].state != "deleted" and files[kept].exists(), kept
    assert audit.detail == erased.as_dict() and audit.target is None


def test_erase_removes_texts_to_the_caller_too(
    cli: Cli, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    seed(cli, session_factory, tmp_path)
    with session_factory() as s, s.begin():
        account_id = s.scalar(select(Account.id))
        s.add(SmsMessage(system="pbx", account_id=account_id, direction="out", from_number="+18005550100",
                         to_number=JANE, body="we called you back", received_at=utcnow()))  # fmt: skip
    assert "2 text(s)" in cli.ok("privacy", "erase", JANE, "--yes").output
    with session_factory() as s:
        assert [(m.from_number, m.to_number) for m in s.scalars(select(SmsMessage))] == [(BOB, "+18005550100")]
        audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "privacy.erase")).one()
    assert audit.detail is not None and audit.detail["sms"] == 2 and audit.detail["calls"] == 1
