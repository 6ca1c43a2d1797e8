"""The call row, shared by the AGI route (which usually creates it) and the AMI listener.

A call is keyed by (Asterisk system name, linkedid of the inbound channel).  Both
writers use :func:`upsert_call`, an idempotent INSERT ... ON CONFLICT DO UPDATE
that sets only the columns the writer knows, so either may arrive first and a
retried AGI never creates a second call.

A ``blocked`` disposition is the route's verdict on a caller it refused; it
sticks: the listener's later writes (live, then ``failed`` when the caller is
hung up) never replace it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Text, bindparam, case, cast, column, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from schema.models import Call, utcnow
from schema.types import UTCDateTime

_COLUMNS = {c.name for c in Call.__table__.columns} - {"id", "system", "linkedid", "created_at"}
BLOCKED = "blocked"


def _update(
    table: Any,
    excluded: Any,
    key: str,
    keep_existing: frozenset[str] | set[str],
    keep_when_null: frozenset[str] | set[str] = frozenset(),
) -> Any:
    """What column *key* becomes when the row exists already."""
    if key in keep_existing:
        return func.coalesce(table.c[key], excluded[key])
    if key in keep_when_null:
        return func.coalesce(excluded[key], table.c[key])
    if key == "disposition":
        return case((table.c.disposition == BLOCKED, table.c.disposition), else_=excluded.disposition)
    return excluded[key]


def upsert_call(
    session: Session,
    system: str,
    linkedid: str,
    values: dict[str, Any],
    *,
    keep_existing: frozenset[str] | set[str] = frozenset(),
) -> int:
    """Create or update the call (system, linkedid) with *values*; return its id.

    Columns named in *keep_existing* are only filled when still empty (NULL): a
    second AGI run for the same call does not overwrite what the first decided.
    """
    unknown = set(values) - _COLUMNS
    if unknown:
        raise ValueError(f"not columns of calls: {', '.join(sorted(unknown))}")
    now = utcnow()
    row = {"system": system, "linkedid": linkedid, "created_at": now, "updated_at": now, **values}
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(Call).values(row)
    elif dialect == "sqlite":
        stmt = sqlite.insert(Call).values(row)
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise RuntimeError(f"unsupported database {dialect}")
    table = Call.__table__
    updates: dict[str, Any] = {"updated_at": now}
    for key in values:
        updates[key] = _update(table, stmt.excluded, key, keep_existing)
    stmt = stmt.on_conflict_do_update(index_elements=["system", "linkedid"], set_=updates).returning(table.c.id)
    call_id: int = session.execute(stmt).scalar_one()
    return call_id


def upsert_calls(
    session: Session,
    system: str,
    rows: Sequence[tuple[str, dict[str, Any]]],
    *,
    keep_existing: frozenset[str] | set[str] = frozenset(),
    keep_when_null: frozenset[str] | set[str] = frozenset(),
) -> dict[str, int]:
    """:func:`upsert_call` for many calls in one statement (executemany); linkedid -> id.

    Every values dict must name the same columns.  Same conflict rules as
    :func:`upsert_call`: only the given columns change, *keep_existing* ones
    only while still NULL; *keep_when_null* ones keep their value when the new one is NULL.
    """
    if not rows:
        return {}
    columns = set(rows[0][1])
    unknown = columns - _COLUMNS
    if unknown:
        raise ValueError(f"not columns of calls: {', '.join(sorted(unknown))}")
    if any(set(values) != columns for _, values in rows):
        raise ValueError("upsert_calls: every row must name the same columns")
    now = utcnow()
    params = [
        {"system": system, "linkedid": linkedid, "created_at": now, "updated_at": now, **values}
        for linkedid, values in rows
    ]
    dialect = session.get_bind().dialect.name
    table: Any = Call.__table__
    if dialect == "postgresql":
        return _pg_upsert_calls(session, params, sorted(columns), keep_existing, keep_when_null)
    stmt = _on_conflict(sqlite.insert(table), sorted(columns), keep_existing, keep_when_null).returning(
        table.c.linkedid, table.c.id, sort_by_parameter_order=True
    )
    return {linkedid: call_id for linkedid, call_id in session.execute(stmt, params)}


_UTC = UTCDateTime()


def _json_cell(value: Any) -> Any:
    # a time as its UTC column binds it (naive UTC; a naive one is refused)
    return _UTC.process_bind_param(value, None) if isinstance(value, dt.datetime) else value


def _on_conflict(
    stmt: Any,
    columns: Sequence[str],
    keep_existing: frozenset[str] | set[str],
    keep_when_null: frozenset[str] | set[str],
) -> Any:
    """*stmt* (an insert into calls) with the upsert's conflict rules (:func:`_update` per column)."""
    table: Any = Call.__table__
    updates: dict[str, Any] = {"updated_at": stmt.excluded.updated_at}
    for key in columns:
        updates[key] = _update(table, stmt.excluded, key, keep_existing, keep_when_null)
    return stmt.on_conflict_do_update(index_elements=["system", "linkedid"], set_=updates)


def _pg_upsert_calls(
    session: Session,
    params: list[dict[str, Any]],
    columns: list[str],
    keep_existing: frozenset[str] | set[str],
    keep_when_null: frozenset[str] | set[str],
) -> dict[str, int]:
    """PostgreSQL: every row as one JSON parameter, unpacked by ``json_to_recordset``.

    A multi-row VALUES list has a placeholder per cell, which psycopg parses again on every batch
    (it caches queries of at most 50 parameters): the listener's bursts spent a tenth of their
    time there. This statement has one parameter, and the same text for every batch.
    """
    table: Any = Call.__table__
    names = ["system", "linkedid", "created_at", "updated_at", *columns]
    rows = orjson.dumps([{k: _json_cell(row[k]) for k in names} for row in params]).decode()
    record = (
        func.json_to_recordset(cast(bindparam("rows", type_=Text), postgresql.JSON))
        .table_valued(*(column(name, table.c[name].type) for name in names))
        .render_derived(name="r", with_types=True)
    )
    insert = postgresql.insert(table).from_select(names, select(*(record.c[name] for name in names)))
    stmt = _on_conflict(insert, columns, keep_existing, keep_when_null).returning(table.c.linkedid, table.c.id)
    return {linkedid: call_id for linkedid, call_id in session.execute(stmt, {"rows": rows})}
