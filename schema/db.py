"""Engine and session factory for SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    # WAL lets the AMI listener write while the CLI, the AGI server and the web read.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class NoDatabase(Exception):
    """The database named by the URL does not exist and is not to be created here."""


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory ones)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def make_engine(
    url: str, *, connect_timeout: float = 5.0, echo: bool = False, pre_ping: bool = True, pool_size: int | None = None
) -> Engine:
    """An engine for *url*.  Nothing is created on disk before the first connection (the caller decides).

    *pre_ping* (PostgreSQL): test each pooled connection with a round trip when it is checked out.
    A hot path that retries once on a dead connection instead (the DNI API) turns it off.
    *pool_size* (PostgreSQL): connections kept open; more than this many at once are opened and
    closed again for each use (SQLAlchemy's default keeps 5).
    """
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": max(connect_timeout, 1.0)}
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs["connect_args"] = {"connect_timeout": max(int(connect_timeout), 1)}
        kwargs["pool_pre_ping"] = pre_ping
        if pool_size is not None:
            kwargs["pool_size"] = pool_size
    return create_engine(parsed, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    from sqlalchemy.orm import sessionmaker  # here: the read-only CLI listings never import the ORM

    return sessionmaker(bind=engine, expire_on_commit=False)


def redact(url: str) -> str:
    """The URL with its password hidden, for messages."""
    return make_url(url).render_as_string(hide_password=True)
