"""CSV import of tracking numbers: all or nothing, the first bad line named by its line number.

Columns (header row required): ``number``, ``account``, ``source`` or ``pool``,
``forward_to``; optional ``timeout``, ``record``, ``whisper``, ``label``, ``hours``
(business hours, as ``mon-fri 09:00-17:00``) and ``after_hours`` (a dial string).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from config import Settings
from schema.models import TrackingNumber, utcnow
from tracking import phone
from tracking.errors import Conflict, InvalidInput, TrackingError
from tracking.numbers import NumberFields, Resolver

REQUIRED = ("number", "account", "forward_to")
OPTIONAL = ("source", "pool", "timeout", "record", "whisper", "label", "hours", "after_hours")
BATCH = 2_000


class CsvLineError(InvalidInput):
    """A problem on one line of the file; nothing was imported."""

    def __init__(self, path: str, line: int, message: str) -> None:
        self.line = line
        super().__init__(f"{path}, line {line}: {message}; nothing was imported")


@dataclass(frozen=True)
class ImportResult:
    added: int
    updated: int


def _rows(fh: IO[str], path: str) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.reader(fh, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise CsvLineError(path, 1, "the file is empty; a header row is required") from None
    except csv.Error as exc:
        raise CsvLineError(path, 1, f"unreadable CSV: {exc}") from None
    columns = [h.strip().lower() for h in header]
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise CsvLineError(
            path, 1, f"unknown column(s) {', '.join(map(repr, unknown))}; known: {', '.join(REQUIRED + OPTIONAL)}"
        )
    missing = [c for c in REQUIRED if c not in columns]
    if "source" not in columns and "pool" not in columns:
        missing.append("source or pool")
    if missing:
        raise CsvLineError(path, 1, f"missing column(s): {', '.join(missing)}")
    repeated = {c for c in columns if columns.count(c) > 1}
    if repeated:
        raise CsvLineError(path, 1, f"column(s) given twice: {', '.join(sorted(repeated))}")
    line = reader.line_num
    while True:
        start = line + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CsvLineError(path, start, f"unreadable CSV: {exc}") from None
        line = reader.line_num
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(columns):
            raise CsvLineError(path, start, f"expected {len(columns)} fields, found {len(cells)}")
        yield start, dict(zip(columns, cells, strict=True))


def _fields(row: dict[str, str]) -> NumberFields:
    return NumberFields(
        number=row["number"],
        account=row.get("account"),
        source=row.get("source"),
        pool=row.get("pool"),
        forward_to=row.get("forward_to"),
        timeout=row.get("timeout"),
        record=row.get("record"),
        whisper=row.get("whisper"),
        label=row.get("label"),
        hours=row.get("hours"),
        after_hours=row.get("after_hours"),
    )


def _existing(session: Session, numbers: list[str]) -> dict[str, tuple[int, str]]:
    """Number -> (id, status) for the numbers already in the database."""
    found: dict[str, tuple[int, str]] = {}
    for start in range(0, len(numbers), 1000):
        chunk = numbers[start : start + 1000]
        query = select(TrackingNumber.number, TrackingNumber.id, TrackingNumber.status).where(
            TrackingNumber.number.in_(chunk)
        )
        for number, id_, status in session.execute(query):
            found[number] = (id_, status)
    return found


def import_numbers(
    session: Session,
    settings: Settings,
    path: str | Path,
    *,
    update_existing: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Import the file in the current transaction; raise CsvLineError on the first bad line.

    Two passes over the file keep memory flat for large files: the first reads and
    normalises every number (duplicates in the file are found here), then the
    numbers already in the database are looked up before anything is written; the
    second validates the other fields and writes in batches.  The caller commits on
    success and rolls back on error, so nothing is half-written.  *progress* gets
    (rows just written, rows in the file).
    """
    shown = str(path)
    region = settings.numbers.default_region
    seen: dict[str, int] = {}
    order: list[str] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            for line, row in _rows(fh, shown):
                try:
                    e164 = phone.normalize(row["number"], region)
                except TrackingError as exc:
                    raise CsvLineError(shown, line, str(exc)) from None
                if e164 in seen:
                    raise CsvLineError(shown, line, f"number {e164} already appears on line {seen[e164]}")
                seen[e164] = line
                order.append(e164)
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{shown}: not UTF-8 text ({exc.reason} at byte {exc.start}); nothing was imported"
        ) from None
    except OSError as exc:
        raise InvalidInput(f"{shown}: cannot be read: {exc.strerror}") from None
    if not order:
        raise InvalidInput(f"{shown}: no rows to import")
    del seen
    existing = _existing(session, order)

    resolver = Resolver(session, settings)
    total = len(order)
    now = utcnow()
    new_rows: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    added = updated = 0

    def flush() -> None:
        if new_rows:
            session.execute(insert(TrackingNumber), new_rows)
        if changes:
            session.execute(update(TrackingNumber), changes)
        if progress:
            progress(len(new_rows) + len(changes), total)
        new_rows.clear()
        changes.clear()

    with open(path, encoding="utf-8-sig", newline="") as fh:
        for (line, row), e164 in zip(_rows(fh, shown), order, strict=True):
            current = existing.get(e164)
            try:
                if current is not None and not update_existing:
                    raise Conflict(f"number {e164} already exists (use --update to change existing numbers)")
                values = resolver.new_number_values(_fields(row), e164)
            except TrackingError as exc:
                raise CsvLineError(shown, line, str(exc)) from None
            if current is None:
                values.update(created_at=now, updated_at=now)
                new_rows.append(values)
                added += 1
            else:
                values.update(id=current[0], updated_at=now)
                if current[1] == "released":
                    values["released_at"] = None
                changes.append(values)
                updated += 1
            if len(new_rows) + len(changes) >= BATCH:
                flush()
    flush()
    session.expire_all()
    return ImportResult(added=added, updated=updated)
