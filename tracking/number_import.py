"""CSV import of tracking numbers: all or nothing, the first bad line named by its line number.

Columns (header row required): ``number``, ``account``, ``source`` or ``pool``,
``forward_to``; optional ``timeout``, ``record``, ``whisper``, ``label``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from config import Settings
from schema.models import TrackingNumber, utcnow
from tracking import phone
from tracking.errors import Conflict, InvalidInput, TrackingError
from tracking.numbers import NumberFields, Resolver, existing_numbers

REQUIRED = ("number", "account", "forward_to")
OPTIONAL = ("source", "pool", "timeout", "record", "whisper", "label")
BATCH = 5_000


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


def import_numbers(
    session: Session,
    settings: Settings,
    path: str | Path,
    *,
    update_existing: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Import the file in the current transaction; raise CsvLineError on the first bad line.

    The caller commits on success and rolls back on error, so nothing is half-written.
    """
    shown = str(path)
    resolver = Resolver(session, settings)
    region = settings.numbers.default_region
    parsed: list[tuple[int, NumberFields, str]] = []
    seen: dict[str, int] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            for line, row in _rows(fh, shown):
                fields = NumberFields(
                    number=row["number"],
                    account=row.get("account"),
                    source=row.get("source"),
                    pool=row.get("pool"),
                    forward_to=row.get("forward_to"),
                    timeout=row.get("timeout"),
                    record=row.get("record"),
                    whisper=row.get("whisper"),
                    label=row.get("label"),
                )
                try:
                    e164 = phone.normalize(fields.number, region)
                except TrackingError as exc:
                    raise CsvLineError(shown, line, str(exc)) from None
                if e164 in seen:
                    raise CsvLineError(shown, line, f"number {e164} already appears on line {seen[e164]}")
                seen[e164] = line
                parsed.append((line, fields, e164))
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{shown}: not UTF-8 text ({exc.reason} at byte {exc.start}); nothing was imported"
        ) from None
    except OSError as exc:
        raise InvalidInput(f"{shown}: cannot be read: {exc.strerror}") from None
    if not parsed:
        raise InvalidInput(f"{shown}: no rows to import")

    existing = existing_numbers(session, seen)
    new_rows: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    now = utcnow()
    for line, fields, e164 in parsed:
        try:
            current = existing.get(e164)
            if current is None:
                values = resolver.new_number_values(fields)
                values.update(number=e164, created_at=now, updated_at=now)
                new_rows.append(values)
            elif not update_existing:
                raise Conflict(f"number {e164} already exists (use --update to change existing numbers)")
            else:
                values = resolver.new_number_values(fields)
                values.update(id=current.id, number=e164, updated_at=now)
                if current.status == "released":
                    values["released_at"] = None
                changes.append(values)
        except TrackingError as exc:
            raise CsvLineError(shown, line, str(exc)) from None

    total = len(new_rows) + len(changes)
    for start in range(0, len(new_rows), BATCH):
        batch = new_rows[start : start + BATCH]
        session.execute(insert(TrackingNumber), batch)
        if progress:
            progress(len(batch), total)
    for start in range(0, len(changes), BATCH):
        batch = changes[start : start + BATCH]
        session.execute(update(TrackingNumber), batch)
        if progress:
            progress(len(batch), total)
    session.expire_all()
    return ImportResult(added=len(new_rows), updated=len(changes))
