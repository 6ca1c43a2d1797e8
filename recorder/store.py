"""The `recordings` rows: claiming work, recording failures with backoff, archiving.

A row is created the first time a spool file is seen and is keyed by the spool
path (unique), so a restart finds the same row again: nothing is lost and
nothing is archived twice.  Work on a row is *claimed* by one conditional UPDATE
that also counts the attempt and sets a lease in ``next_attempt_at``; a process
that dies mid-work leaves the lease, which runs out, and the recording is
retried (the attempt it died in counts, so a file that kills ffmpeg every time
still ends as failed).
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from schema.models import Recording

logger = logging.getLogger(__name__)

#: how long a claim holds a recording for the process working on it
CLAIM_SECONDS = 600
#: the longest wait between two attempts
MAX_BACKOFF_SECONDS = 6 * 3600


def backoff_seconds(attempts: int, first: int) -> int:
    """Wait after the *attempts*-th failed attempt: first, 2*first, 4*first... up to 6 hours."""
    return int(min(first * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS))


def get_or_create(session: Session, source_path: str, call_id: int | None, account_id: int | None) -> Recording:
    """The row of a spool file, created pending on first sight."""
    row = session.scalar(select(Recording).where(Recording.source_path == source_path))
    if row is not None:
        if row.call_id is None and call_id is not None and row.state == "pending":
            # the call arrived after the file was first seen as an orphan
            row.call_id, row.account_id = call_id, account_id
        return row
    try:
        with session.begin_nested():
            row = Recording(
                source_path=source_path, call_id=call_id, account_id=account_id, state="pending", attempts=0
            )
            session.add(row)
    except IntegrityError:  # another process created it first
        row = session.scalars(select(Recording).where(Recording.source_path == source_path)).one()
    return row


def claim(session: Session, rec_id: int, now: dt.datetime) -> bool:
    """Take *rec_id* for work if it is pending and due; counts the attempt. True when taken."""
    result = session.execute(
        update(Recording)
        .where(
            Recording.id == rec_id,
            Recording.state == "pending",
            (Recording.next_attempt_at.is_(None)) | (Recording.next_attempt_at <= now),
        )
        .values(attempts=Recording.attempts + 1, next_attempt_at=now + dt.timedelta(seconds=CLAIM_SECONDS))
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def fail(session: Session, rec_id: int, reason: str, now: dt.datetime, max_attempts: int, retry_seconds: int) -> str:
    """Record a failed attempt; the row waits for its retry, or is failed for good. Returns the new state."""
    row = session.get(Recording, rec_id)
    assert row is not None
    row.last_error = reason[:2000]
    if row.attempts >= max_attempts:
        row.state = "failed"
        row.next_attempt_at = None
        row.path = None  # nothing was archived
    else:
        row.next_attempt_at = now + dt.timedelta(seconds=backoff_seconds(row.attempts, retry_seconds))
    return row.state


def release(session: Session, rec_id: int, now: dt.datetime, wait_seconds: float, reason: str) -> None:
    """Give a claim back without counting the attempt (the file was still being written)."""
    row = session.get(Recording, rec_id)
    assert row is not None
    row.attempts = max(row.attempts - 1, 0)
    row.last_error = reason
    row.next_attempt_at = now + dt.timedelta(seconds=wait_seconds)


def empty(session: Session, rec_id: int, reason: str) -> None:
    """The recording holds no audio: kept as a row (state empty) so the call shows why it has none."""
    row = session.get(Recording, rec_id)
    assert row is not None
    row.state = "empty"
    row.path = None
    row.last_error = reason
    row.next_attempt_at = None


def discarded(session: Session, rec_id: int, reason: str) -> None:
    """The recording was deleted unheard (a do-not-track caller): no archive, a row that says why."""
    row = session.get(Recording, rec_id)
    assert row is not None
    row.state = "discarded"
    row.path = None
    row.format = None
    row.note = reason
    row.last_error = None
    row.next_attempt_at = None


def archived(
    session: Session,
    rec_id: int,
    *,
    path: str,
    fmt: str,
    size: int,
    duration: float,
    sha256: str,
    now: dt.datetime,
    note: str | None = None,
) -> None:
    row = session.get(Recording, rec_id)
    assert row is not None
    row.state = "archived"
    row.path = path
    row.format = fmt
    row.bytes = size
    row.duration = round(duration, 3)
    row.sha256 = sha256
    row.archived_at = now
    row.last_error = None
    row.note = note
    row.next_attempt_at = None


def path_taken(session: Session, path: str, rec_id: int) -> bool:
    """Whether another recording already uses (or plans to use) archive *path*."""
    other = session.scalar(select(Recording.id).where(Recording.path == path, Recording.id != rec_id).limit(1))
    return other is not None
