"""CSV import of tracking numbers: all or nothing, every bad line named by its line number.

Columns (header row required): ``number``, ``account``, ``source`` or ``pool``,
``forward_to``; optional ``timeout``, ``record``, ``whisper``, ``label``, ``hours``
(business hours, as ``mon-fri 09:00-17:00``), ``after_hours`` (a dial string) and
``status`` (``active``, the default, or ``released``).  These are the columns
``numbers list --format csv`` writes, so an export can be edited and imported back.
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
OPTIONAL = ("source", "pool", "timeout", "record", "whisper", "label", "hours", "after_hours", "status")
BATCH = 2_000
#: bad lines listed in the error; the others are counted
MAX_REPORTED = 20


class CsvLineError(InvalidInput):
    """A problem with the file as a whole (its header, its encoding); nothing was imported."""

    def __init__(self, path: str, line: int, message: str) -> None:
        self.line = line
        super().__init__(f"{path}, line {line}: {message}; nothing was imported")


class CsvLinesError(InvalidInput):
    """Bad rows, each with its line number, in file order; nothing was imported."""

    def __init__(self, path: str, problems: list[tuple[int, str]], limit: int = MAX_REPORTED) -> None:
        self.problems = sorted(problems)
        self.lines = [line for line, _ in self.problems]
        shown = [f"{path}, line {line}: {message}" for line, message in self.problems[:limit]]
        more = len(self.problems) - limit
        if more > 0:
            shown.append(f"... and {more} more bad line{'s' if more != 1 else ''}")
        count = len(self.problems)
        head = f"{path}: {count} bad line{'s' if count != 1 else ''}; nothing was imported"
        super().__init__("\n".join([head, *shown]) if count > 1 else f"{shown[0]}; nothing was imported")


class _RowProblem(Exception):
    """A row that cannot be read (wrong field count); the reader carries on with the next one."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.message = message


@dataclass(frozen=True)
class ImportResult:
    added: int
    updated: int


def _rows(fh: IO[str], path: str) -> Iterator[tuple[int, dict[str, str] | _RowProblem]]:
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
            yield start, _RowProblem(start, f"expected {len(columns)} fields, found {len(cells)}")
            continue
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


def _status(value: str | None) -> str:
    """The optional status column: empty or ``active`` routes the number, ``released`` keeps it for history."""
    text = (value or "").strip().lower()
    if text in ("", "active"):
        return "active"
    if text == "released":
        return "released"
    raise InvalidInput(f"invalid status {value!r}: active or released")


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
    """Import the file in the current transaction; raise CsvLinesError naming every bad line.

    Two passes over the file keep memory flat for large files: the first reads and
    normalises every number (duplicates in the file are found here), then the
    numbers already in the database are looked up before anything is written; the
    second validates the other fields and writes in batches.  Every bad line is
    collected (writing stops at the first one) and reported in file order; the
    caller commits on success and rolls back on error, so nothing is half-written.
    *progress* gets (rows just written, rows in the file).
    """
    shown = str(path)
    region = settings.numbers.default_region
    seen: dict[str, int] = {}
    # line -> E.164 for the rows whose number is good; the second pass skips the others
    order: dict[int, str] = {}
    problems: list[tuple[int, str]] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            for line, row in _rows(fh, shown):
                if isinstance(row, _RowProblem):
                    problems.append((row.line, row.message))
                    continue
                try:
                    e164 = phone.normalize(row["number"], region)
                except TrackingError as exc:
                    problems.append((line, str(exc)))
                    continue
                if e164 in seen:
                    problems.append((line, f"number {e164} already appears on line {seen[e164]}"))
                    continue
                seen[e164] = line
                order[line] = e164
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{shown}: not UTF-8 text ({exc.reason} at byte {exc.start}); nothing was imported"
        ) from None
    except OSError as exc:
        raise InvalidInput(f"{shown}: cannot be read: {exc.strerror}") from None
    if not order and not problems:
        raise InvalidInput(f"{shown}: no rows to import")
    del seen
    existing = _existing(session, list(order.values()))

    resolver = Resolver(session, settings)
    total = len(order)
    now = utcnow()
    new_rows: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    added = updated = 0

    def flush() -> None:
        if not problems:
            if new_rows:
                session.execute(insert(TrackingNumber), new_rows)
            if changes:
                session.execute(update(TrackingNumber), changes)
            if progress:
                progress(len(new_rows) + len(changes), total)
        new_rows.clear()
        changes.clear()

    with open(path, encoding="utf-8-sig", newline="") as fh:
        for line, row in _rows(fh, shown):
            good = order.get(line)
            if good is None or isinstance(row, _RowProblem):
                continue  # reported by the first pass
            e164 = good
            current = existing.get(e164)
            try:
                if current is not None and not update_existing:
                    raise Conflict(f"number {e164} already exists (use --update to change existing numbers)")
                values = resolver.new_number_values(_fields(row), e164)
                status = _status(row.get("status"))
            except TrackingError as exc:
                problems.append((line, str(exc)))
                continue
            values["status"] = status
            if current is None:
                values.update(created_at=now, updated_at=now, released_at=now if status == "released" else None)
                new_rows.append(values)
                added += 1
            else:
                values.update(id=current[0], updated_at=now)
                if status == "active" and current[1] == "released":
                    values["released_at"] = None
                elif status == "released" and current[1] != "released":
                    values["released_at"] = now
                changes.append(values)
                updated += 1
            if len(new_rows) + len(changes) >= BATCH:
                flush()
    flush()
    if problems:
        raise CsvLinesError(shown, problems)
    session.expire_all()
    return ImportResult(added=added, updated=updated)
