"""Full-text search over transcripts, one function for both databases.

SQLite: the FTS5 table ``transcripts_fts`` (porter stemming), kept by triggers from
``transcripts.text`` (migration 0009).  PostgreSQL: ``to_tsvector('english', text)`` with its GIN
index ``ix_transcripts_search``.  The words of the query are searched as a phrase ("water heater"
finds "my water heaters", not "water ... heater"), with English stemming on both.  What a user types
never reaches either engine's query syntax: only its words are kept, each quoted (FTS5) or handed
to ``phraseto_tsquery`` as a bound value (PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from tracking.errors import TrackingError

_WORD = re.compile(r"\w+", re.UNICODE)
MARK_START, MARK_END = "[", "]"


class BadQuery(TrackingError):
    """A search with no word in it."""


@dataclass(frozen=True)
class Hit:
    call_id: int | None
    transcript_id: int
    account_id: int | None
    started_at: dt.datetime | None
    snippet: str


def words_of(query: str) -> list[str]:
    found = _WORD.findall(query)
    if not found:
        raise BadQuery(f"nothing to search for in {query!r}: give at least one word")
    return found


def fts5_phrase(words: list[str]) -> str:
    """An FTS5 phrase of *words*, each in double quotes (FTS5's operators and columns cannot slip in)."""
    return '"' + " ".join(w.replace('"', '""') for w in words) + '"'


def search(
    session: Session,
    query: str,
    *,
    account_id: int | None = None,
    since: dt.datetime | None = None,
    limit: int = 50,
) -> list[Hit]:
    """Transcripts holding the phrase, best match first on SQLite (FTS5 rank), newest first on PostgreSQL."""
    words = words_of(query)
    dialect = session.get_bind().dialect.name
    filters = ["t.state = 'done'"]
    params: dict[str, object] = {"limit": limit}
    if account_id is not None:
        filters.append("t.account_id = :account")
        params["account"] = account_id
    if since is not None:
        filters.append("c.started_at >= :since")
        params["since"] = since.astimezone(dt.UTC).replace(tzinfo=None)
    where = " AND ".join(filters)  # fixed clauses only: every value is a bound parameter
    if dialect == "sqlite":
        params["q"] = fts5_phrase(words)
        # constants and fixed clauses only; every value is bound
        sql = (
            "SELECT t.id, t.call_id, t.account_id, c.started_at,"  # noqa: S608
            f" snippet(transcripts_fts, 0, '{MARK_START}', '{MARK_END}', '…', 16)"
            " FROM transcripts_fts JOIN transcripts t ON t.id = transcripts_fts.rowid"
            " LEFT JOIN calls c ON c.id = t.call_id"
            f" WHERE transcripts_fts MATCH :q AND {where} ORDER BY transcripts_fts.rank, t.id DESC LIMIT :limit"
        )
    else:
        params["q"] = " ".join(words)
        # constants and fixed clauses only; every value is bound
        sql = (
            "SELECT t.id, t.call_id, t.account_id, c.started_at,"  # noqa: S608
            " ts_headline('english', t.text, phraseto_tsquery('english', :q),"
            f" 'StartSel={MARK_START}, StopSel={MARK_END}, MaxWords=24, MinWords=10, MaxFragments=2')"
            " FROM transcripts t LEFT JOIN calls c ON c.id = t.call_id"
            " WHERE to_tsvector('english', coalesce(t.text, '')) @@ phraseto_tsquery('english', :q)"
            f" AND {where} ORDER BY c.started_at DESC NULLS LAST, t.id DESC LIMIT :limit"
        )
    hits = []
    for tid, call_id, acc, started, snippet in session.execute(text(sql), params):
        if isinstance(started, str):  # SQLite through text(): the stored ISO string
            started = dt.datetime.fromisoformat(started)
        if started is not None and started.tzinfo is None:
            started = started.replace(tzinfo=dt.UTC)
        hits.append(Hit(call_id, tid, acc, started, " ".join(str(snippet or "").split())))
    return hits
