"""Driver-level database access: one DB-API connection per thread, plain SQL, both dialects.

The hot paths (the AGI route, the DNI API's new sessions on PostgreSQL) send their
statements to the driver without SQLAlchemy: its statement machinery (parameters
matched to the compiled statement, every value's type processed, a result object
built, a pooled connection checked out and its isolation level set and reset) cost
two to three times the driver's own work per statement.  Statements are written
with ``:name`` parameters and run on SQLite as they are, on PostgreSQL (psycopg, in
autocommit) with ``%(name)s``.  Times go in as :meth:`DriverConnections._ts` gives
them, the form each database's SQLAlchemy type stores.

A connection that failed is dropped (:meth:`DriverConnections.discard`) and opened
anew on the next call, so a database that comes back is used again.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from typing import Any

#: PostgreSQL: the longest a statement may run (a lock wait, say)
STATEMENT_TIMEOUT_MS = 30_000


def pg_sql(sql: str) -> str:
    """*sql*'s ``:name`` parameters as psycopg's ``%(name)s`` (a literal ``%`` doubled)."""
    return re.sub(r"(?<!:):([a-z_]+)", r"%(\1)s", sql.replace("%", "%%"))


def pg_ts(value: dt.datetime) -> dt.datetime:
    """An aware time as PostgreSQL's parameter: naive UTC."""
    return value.astimezone(dt.UTC).replace(tzinfo=None)


class DriverConnections:
    """One DB-API connection per thread to the database of *url* (SQLAlchemy-style, as in the settings)."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0, inline: bool = False) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        #: SQLite only: never wait for a lock and leave checkpoints to others (see CallRouter.try_inline)
        self.inline = inline
        scheme = url.split(":", 1)[0]
        self.dialect = scheme.split("+", 1)[0]
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database URL {url.split(':', 1)[0]}: (use sqlite or postgresql)")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Any] = []
        #: bumped by close(): a thread's connection from before is not used again
        self._generation = 0
        self._sql: dict[str, str] = {}

    # connections

    def _connect(self) -> Any:
        if self.dialect == "sqlite":
            import sqlite3

            rest = self.url.split(":///", 1)[1] if ":///" in self.url else ""
            path = rest.split("?", 1)[0]
            if not path or path == ":memory:":
                raise ValueError("the AGI route needs a database file, not an in-memory SQLite database")
            # mode=rw: a missing file is an error, not a new empty database.
            quoted = path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
            conn = sqlite3.connect(
                f"file:{quoted}?mode=rw",
                uri=True,
                timeout=0 if self.inline else max(self.connect_timeout, 0.1),
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            if self.inline:
                # a checkpoint writes the WAL back with fsync: not on the event loop
                conn.execute("PRAGMA wal_autocheckpoint=0")
            return conn
        import psycopg

        conninfo = "postgresql" + self.url[self.url.index(":") :]
        # a lock held elsewhere must not keep a routing thread forever: the job errors, and
        # its call row goes to the spool
        return psycopg.connect(
            conninfo,
            autocommit=True,
            connect_timeout=max(int(self.connect_timeout), 1),
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        )

    def connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "generation", -1) != self._generation:
            conn = self._connect()
            self._local.conn, self._local.generation = conn, self._generation
            with self._lock:
                self._all.append(conn)
        return conn

    def current(self) -> Any:
        """This thread's open connection, or None (none is opened)."""
        conn = getattr(self._local, "conn", None)
        return conn if getattr(self._local, "generation", -1) == self._generation else None

    def discard(self) -> None:
        """Drop this thread's connection (after an error)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            try:
                conn.close()
            except Exception:  # closing a broken connection may fail too
                pass

    def close(self) -> None:
        """Close every thread's connection (each opens a new one on its next use)."""
        with self._lock:
            conns, self._all = self._all, []
            self._generation += 1
        for conn in conns:
            try:
                conn.close()
            except Exception:
                pass

    def _q(self, sql: str) -> str:
        if self.dialect == "sqlite":
            return sql
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = pg_sql(sql)
        return out

    def ts(self, value: dt.datetime) -> Any:
        """An aware time as a parameter: naive UTC (PostgreSQL), the text SQLAlchemy writes (SQLite)."""
        naive = pg_ts(value)
        if self.dialect == "sqlite":
            # the format SQLAlchemy's SQLite DateTime stores, so comparisons agree
            return naive.isoformat(" ", "microseconds")
        return naive

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        cur = self.connection().cursor()
        cur.execute(self._q(sql), params or {})
        return cur
