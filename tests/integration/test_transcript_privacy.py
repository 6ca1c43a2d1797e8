"""Transcripts follow privacy: exported and erased with the caller, gone with the recording's retention."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from schema.models import AuditEntry, Recording, Transcript, TranscriptSegment
from tests.conftest import Cli
from tests.integration.test_privacy import BOB, JANE, seed
from tracking import transcripts
from tracking.transcript_search import search


def transcribe_all(factory: sessionmaker[Session]) -> None:
    """A done transcript for every recording, naming its caller's words."""
    with factory() as s, s.begin():
        for rec in s.scalars(select(Recording)):
            t = Transcript(recording_id=rec.id, call_id=rec.call_id, account_id=rec.account_id)
            s.add(t)
            s.flush()
            segs = [transcripts.Segment("caller", 0.0, 2.0, f"this is call {rec.call_id} about my leaking boiler")]
            transcripts.store(s, t, segs, model="m", language="en", channels=1, seconds=2.0, redactions=[])


def test_export_holds_the_callers_transcript(cli: Cli, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    seed(cli, session_factory, tmp_path)
    transcribe_all(session_factory)
    data = json.loads(cli.ok("privacy", "export", JANE).output)
    (call,) = data["calls"]
    assert [seg["text"] for seg in call["transcript"]] == [f"this is call {call['id']} about my leaking boiler"]
    assert call["transcript"][0]["speaker"] == "caller"


def test_erase_removes_the_callers_transcripts_and_keeps_others(
    cli: Cli, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    seed(cli, session_factory, tmp_path)
    transcribe_all(session_factory)
    cli.ok("privacy", "erase", JANE, "--yes")
    with session_factory() as s:
        left = s.scalars(select(Transcript)).all()
        assert len(left) == 1
        assert len(s.scalars(select(TranscriptSegment)).all()) == 1
        assert [h.call_id for h in search(s, "boiler")] == [left[0].call_id]  # the search index forgot Jane's
        audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "privacy.erase")).one()
        assert audit.detail is not None and audit.detail["transcripts"] == 1
    assert json.loads(cli.ok("privacy", "export", BOB).output)["calls"][0]["transcript"]


def test_a_recordings_retention_takes_its_transcript(
    cli: Cli, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    seed(cli, session_factory, tmp_path, started=dt.datetime.now(dt.UTC) - dt.timedelta(days=40))
    transcribe_all(session_factory)
    cli.ok("privacy", "set-retention", "Acme", "--recording-days", "60")
    cli.ok("privacy", "retention")
    with session_factory() as s:
        assert len(s.scalars(select(Transcript)).all()) == 2
    cli.ok("privacy", "set-retention", "Acme", "--recording-days", "30")
    cli.ok("privacy", "retention")
    with session_factory() as s:
        assert s.scalars(select(Transcript)).all() == [] and s.scalars(select(TranscriptSegment)).all() == []
        assert search(s, "boiler") == []
        audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "privacy.retention")).all()[-1]
        assert audit.detail is not None and audit.detail["transcripts"] == 2
