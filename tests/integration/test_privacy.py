"""Privacy: export and erase by phone number, retention windows; on both databases."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

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
from tracking.calls import upsert_call

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
