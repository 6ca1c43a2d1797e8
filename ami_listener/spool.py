"""A local append-only file that keeps events while the database is away.

One JSON object per line, appended and flushed a batch at a time.  Events are
read back in the order they were written; a last line cut short by a crash is
ignored.  The file is emptied only once everything in it has reached the
database, so a listener restarted with a non-empty spool replays it first.
Replaying twice does no harm: the database ignores an event it already has
(``(system, event_key)`` is unique).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

import orjson

logger = logging.getLogger(__name__)


class StoredEvent(NamedTuple):
    """A raw event ready for ``ami_events``: arrival order, key, time and headers."""

    seq: int
    key: str
    received_at: dt.datetime
    event: str
    uniqueid: str | None
    linkedid: str | None
    payload: dict[str, Any]


def encode(ev: StoredEvent) -> bytes:
    # orjson: a burst that outruns the database goes through here and back, every event
    return orjson.dumps({"seq": ev.seq, "key": ev.key, "at": ev.received_at, "payload": ev.payload}) + b"\n"


def decode(line: bytes, times: dict[str, dt.datetime]) -> StoredEvent:
    """The event of a spool line; *times* keeps the arrival times read so far (the events of one
    read share theirs)."""
    obj = orjson.loads(line)
    at = obj["at"]
    received = times.get(at)
    if received is None:
        received = times[at] = dt.datetime.fromisoformat(at)
    return make_event(obj["seq"], obj["key"], received, obj["payload"])


def make_event(seq: int, key: str, received_at: dt.datetime, payload: dict[str, Any]) -> StoredEvent:
    name = payload.get("Event") or ("Response" if "Response" in payload else "?")
    uniqueid = payload.get("Uniqueid") or payload.get("UniqueID") or payload.get("DestUniqueid")
    linkedid = payload.get("Linkedid") or payload.get("DestLinkedid") or payload.get("LocalOneLinkedid")
    if not linkedid:
        linkedid = payload.get("TransfererLinkedid") or payload.get("OrigTransfererLinkedid")
    return StoredEvent(
        seq,
        key,
        received_at,
        str(name)[:64],
        uniqueid if isinstance(uniqueid, str) else None,
        linkedid if isinstance(linkedid, str) else None,
        payload,
    )


class Spool:
    """The spool file of one Asterisk system."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "ab")
        self._read_offset = 0
        self.appended = 0

    @property
    def pending(self) -> bool:
        """Whether events wait in the file."""
        return self._fh.tell() > self._read_offset

    @property
    def pending_bytes(self) -> int:
        """Bytes of events waiting in the file."""
        return max(0, self._fh.tell() - self._read_offset)

    def append(self, events: list[StoredEvent]) -> None:
        if not events:
            return
        self._fh.write(b"".join(encode(ev) for ev in events))
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())
        self.appended += len(events)

    def read_chunk(self, limit: int) -> tuple[list[StoredEvent], int]:
        """Up to *limit* events from the replay position, and the offset after them."""
        out: list[StoredEvent] = []
        times: dict[str, dt.datetime] = {}
        offset = self._read_offset
        end = self._fh.tell()
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            while len(out) < limit and offset < end:
                line = fh.readline()
                if not line.endswith(b"\n"):
                    # cut short by a crash while writing: nothing after it is readable
                    logger.warning("spool %s: ignoring an unfinished last line (%d bytes)", self.path, len(line))
                    offset = end
                    break
                offset += len(line)
                try:
                    out.append(decode(line, times))
                except (ValueError, KeyError, TypeError) as exc:
                    logger.error("spool %s: skipping an unreadable line at byte %d: %s", self.path, offset, exc)
        return out, offset

    def commit(self, offset: int) -> None:
        """The events before *offset* are in the database; empty the file once all are."""
        self._read_offset = offset
        if offset >= self._fh.tell():
            self._fh.truncate(0)
            self._fh.seek(0)
            self._read_offset = 0

    def last_seq(self) -> int:
        """The arrival number of the last complete event in the file (0 when empty)."""
        size = self._fh.tell()
        if size == 0:
            return 0
        with open(self.path, "rb") as fh:
            fh.seek(max(0, size - 1_048_576))
            lines = fh.read(size).split(b"\n")
        for line in reversed(lines[1:-1] if len(lines) > 2 else lines[:-1]):
            try:
                return int(orjson.loads(line)["seq"])
            except (ValueError, KeyError, TypeError):
                continue
        return 0

    def merge(self, events: list[StoredEvent]) -> None:
        """Put *events* among those waiting, in arrival (seq) order: the file is rewritten.

        Used at shutdown for a batch that failed while newer events were already
        spooled, so the next start replays everything in the order it arrived.
        """
        waiting, _ = self.read_chunk(10**12)
        merged = sorted({ev.key: ev for ev in [*waiting, *events]}.values(), key=lambda ev: ev.seq)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(b"".join(encode(ev) for ev in merged))
            fh.flush()
            os.fsync(fh.fileno())
        self._fh.close()
        os.replace(tmp, self.path)
        self._fh = open(self.path, "ab")
        self._read_offset = 0

    def compact(self) -> None:
        """Drop the events already replayed from the file, so the next start replays only the rest."""
        if self._read_offset == 0:
            return
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(self.path, "rb") as src, open(tmp, "wb") as dst:
            src.seek(self._read_offset)
            while chunk := src.read(1 << 20):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        self._fh.close()
        os.replace(tmp, self.path)
        self._fh = open(self.path, "ab")
        self._read_offset = 0

    def close(self) -> None:
        self._fh.close()
