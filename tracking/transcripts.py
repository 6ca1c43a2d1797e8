"""Transcripts: the transcriber's queue (a row per archived recording) and what it stores.

The queue is the ``transcripts`` table itself, so it survives restarts: a row is made once per
archived recording (``recording_id`` is unique: a call is transcribed once), ``pending`` until a
pass transcribes it, retried with a doubling wait after a failure, ``failed`` after
``max_attempts``, ``skipped`` (with the reason in ``last_error``) when it must not be transcribed:
a do-not-track caller, an account with transcription switched off, a full queue.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from schema.models import Account, AuditEntry, Call, Recording, Transcript, TranscriptSegment, utcnow

SPEAKERS = ("caller", "agent", "mono")


@dataclass(frozen=True)
class Segment:
    speaker: str
    start: float
    end: float
    text: str


@dataclass
class Enqueued:
    queued: list[int] = field(default_factory=list)
    #: (recording id, reason)
    skipped: list[tuple[int, str]] = field(default_factory=list)


def waiting(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Transcript).where(Transcript.state == "pending")) or 0


def enqueue(session: Session, queue_limit: int, limit: int | None = None) -> Enqueued:
    """A transcript row for each archived recording that has none yet."""
    rows = session.execute(
        select(Recording.id, Recording.call_id, Recording.account_id, Call.do_not_track, Account.transcription)
        .outerjoin(Transcript, Transcript.recording_id == Recording.id)
        .outerjoin(Call, Call.id == Recording.call_id)
        .outerjoin(Account, Account.id == Recording.account_id)
        .where(Recording.state == "archived", Transcript.id.is_(None))
        .order_by(Recording.id)
        .limit(limit)
    ).all()
    done = Enqueued()
    room = queue_limit - waiting(session)
    for rec_id, call_id, account_id, do_not_track, account_on in rows:
        reason = None
        if do_not_track:
            reason = "the caller is on a do-not-track list"
        elif account_on is False:
            reason = "transcription is switched off for the account"
        elif room <= 0:
            reason = f"the queue was full ({queue_limit} waiting, [transcription] queue_limit); `transcripts retry`"
        state = "skipped" if reason else "pending"
        session.add(
            Transcript(recording_id=rec_id, call_id=call_id, account_id=account_id, state=state, last_error=reason)
        )
        if reason:
            done.skipped.append((rec_id, reason))
        else:
            done.queued.append(rec_id)
            room -= 1
    session.flush()
    return done


def due(session: Session, now: dt.datetime, limit: int) -> list[tuple[Transcript, Recording]]:
    """Pending transcripts whose time has come, oldest first, with their recordings."""
    rows = session.execute(
        select(Transcript, Recording)
        .join(Recording, Recording.id == Transcript.recording_id)
        .where(
            Transcript.state == "pending",
            or_(Transcript.next_attempt_at.is_(None), Transcript.next_attempt_at <= now),
        )
        .order_by(Transcript.id)
        .limit(limit)
    ).all()
    return [(t, r) for t, r in rows]


def still_wanted(session: Session, transcript: Transcript) -> str | None:
    """Why a queued transcript must not be made after all (the caller asked not to be tracked since), or None."""
    row = session.execute(
        select(Call.do_not_track, Account.transcription, Recording.state)
        .select_from(Recording)
        .outerjoin(Call, Call.id == Recording.call_id)
        .outerjoin(Account, Account.id == Recording.account_id)
        .where(Recording.id == transcript.recording_id)
    ).first()
    if row is None:
        return "the recording is gone"
    if row[0]:
        return "the caller is on a do-not-track list"
    if row[1] is False:
        return "transcription is switched off for the account"
    if row[2] != "archived":
        return f"the recording is {row[2]}"
    return None


def store(
    session: Session,
    transcript: Transcript,
    segments: Sequence[Segment],
    *,
    model: str,
    language: str | None,
    channels: int,
    seconds: float,
    redactions: Sequence[dict[str, Any]],
    now: dt.datetime | None = None,
) -> None:
    """Keep a finished (already redacted) transcript; an audit entry names what was redacted, never the digits."""
    now = now or utcnow()
    for old in transcript.segments:
        session.delete(old)
    session.flush()
    ordered = sorted(segments, key=lambda s: (s.start, s.speaker))
    for seg in ordered:
        if seg.speaker not in SPEAKERS:
            raise ValueError(f"unknown speaker {seg.speaker!r}")
        session.add(
            TranscriptSegment(
                transcript_id=transcript.id, speaker=seg.speaker, start=seg.start, end=seg.end, text=seg.text
            )
        )
    transcript.text = "\n".join(s.text.strip() for s in ordered if s.text.strip())
    transcript.state = "done"
    transcript.model = model
    transcript.language = language
    transcript.channels = channels
    transcript.seconds = seconds
    transcript.redactions = list(redactions)
    transcript.transcribed_at = now
    transcript.last_error = None
    transcript.next_attempt_at = None
    if redactions:
        kinds: dict[str, int] = {}
        for r in redactions:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        session.add(
            AuditEntry(
                actor="transcriber",
                action="transcript.redacted",
                target=f"recording:{transcript.recording_id}",
                detail={
                    "call_id": transcript.call_id,
                    "kinds": kinds,
                    "spans": [[r["start"], r["end"]] for r in redactions],
                },
            )
        )


def fail(
    session: Session,
    transcript: Transcript,
    reason: str,
    *,
    max_attempts: int,
    retry_seconds: float,
    now: dt.datetime | None = None,
    count: bool = True,
) -> None:
    """Record why a transcription failed; retried after retry_seconds * 2^(attempts-1), failed for good at max_attempts.

    ``count=False`` keeps the attempt (the model could not be loaded: nothing was tried on this recording).
    """
    now = now or utcnow()
    transcript.last_error = reason[:2000]
    if not count:
        return
    transcript.attempts += 1
    if transcript.attempts >= max_attempts:
        transcript.state = "failed"
        transcript.next_attempt_at = None
    else:
        transcript.next_attempt_at = now + dt.timedelta(seconds=retry_seconds * 2 ** (transcript.attempts - 1))


def skip(transcript: Transcript, reason: str) -> None:
    transcript.state = "skipped"
    transcript.last_error = reason


def retry(session: Session, ids: Sequence[int] = (), *, every_failed: bool = False) -> int:
    """Queue failed (or skipped) transcripts again with a fresh set of attempts; how many."""
    query = select(Transcript)
    if every_failed:
        query = query.where(
            or_(
                Transcript.state == "failed",
                and_(Transcript.state == "skipped", Transcript.last_error.like("the queue was full%")),
            )
        )
    else:
        query = query.where(Transcript.id.in_(list(ids)), Transcript.state.in_(("failed", "skipped")))
    count = 0
    for t in session.scalars(query):
        t.state, t.attempts, t.next_attempt_at, t.last_error = "pending", 0, None, None
        count += 1
    return count


def for_call(session: Session, call_id: int) -> list[Transcript]:
    return list(session.scalars(select(Transcript).where(Transcript.call_id == call_id).order_by(Transcript.id)))
