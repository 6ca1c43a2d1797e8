"""The route's PostgreSQL statements sent from the event loop: no database thread in between.

On PostgreSQL a call's route is two or three round trips (the number's lookup, a pool
number's visit, the call row's upsert).  From a database thread each one costs a hand-off
to the thread and back to the loop, and the GIL passed between them: 100-180 µs of CPU per
call, beside the 116 µs of the statements themselves (psycopg's AsyncConnection on the
loop, measured side by side).  :class:`AsyncRouteStore` keeps a few connections (the
``agi.db_threads`` the threads would have had) and sends each statement from the loop.

The statements and their parameters are tracking.routing's (RouteStore runs the same on a
thread's connection).  A connection taken from the idle ones that turns out dead (the
server restarted, a network cut) is replaced and the statement sent once more on the new
one: every statement here may run twice (the call's upsert is keyed by its system and
linkedid; its call.started event by its dedupe key).  A failure on a new connection is
the caller's: the route falls back and spools the row.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tracking.dbapi import STATEMENT_TIMEOUT_MS, pg_ts
from tracking.routing import (
    PG_MARK_FALLBACK_SQL,
    PG_NUMBER_SQL,
    PG_RECORDING_SQL,
    PG_UPSERT_SQL,
    PG_VISIT_SQL,
    CallerFacts,
    Decision,
    NumberInfo,
    Visit,
    call_params,
    lookup_params,
    lookup_result,
    mark_fallback_params,
    pg_call_params,
    visit_params,
)

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)

T = TypeVar("T")


class AsyncRouteStore:
    """Up to *size* psycopg AsyncConnections to the PostgreSQL database of *url* (autocommit)."""

    def __init__(self, url: str, *, size: int = 4, connect_timeout: float = 5.0) -> None:
        if not url.startswith("postgresql"):
            raise ValueError("AsyncRouteStore is for PostgreSQL")
        self.url = url
        self.size = size
        self.connect_timeout = connect_timeout
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(size)
        self._open: set[psycopg.AsyncConnection[Any]] = set()
        self._closed = False
        #: connections found dead and replaced (the statement sent again on the new one)
        self.reconnects = 0

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        import psycopg

        conn = await psycopg.AsyncConnection.connect(
            "postgresql" + self.url[self.url.index(":") :],
            autocommit=True,
            connect_timeout=max(int(self.connect_timeout), 1),
            # a lock held elsewhere must not hold a call forever: the route falls back and spools
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        )
        self._open.add(conn)
        return conn

    async def _drop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._open.discard(conn)
        try:
            await conn.close()
        except Exception:  # closing a broken connection may fail too
            pass

    async def _run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        import psycopg

        if self._closed:
            raise RuntimeError("the route's database connections are closed")
        async with self._slots:
            reused = bool(self._idle)
            conn = self._idle.pop() if reused else await self._connect()
            try:
                result = await work(conn)
            except psycopg.OperationalError:
                dead = conn.closed
                await self._drop(conn)
                if not reused or not dead:
                    raise  # a new connection failed, or the statement did (a timeout): the caller's
                # an idle connection had died: once more on a new one
                self.reconnects += 1
                logger.info("route: a database connection was found closed; sending again on a new one")
                conn = await self._connect()
                try:
                    result = await work(conn)
                except BaseException:
                    await self._drop(conn)
                    raise
            except BaseException:
                # anything else (an error in the statement, a cancellation mid-way): the connection's
                # state is unknown, so it is not used again
                await self._drop(conn)
                raise
            if self._closed:
                await self._drop(conn)
            else:
                self._idle.append(conn)
            return result

    async def _fetchone(self, sql: str, params: dict[str, Any]) -> Any:
        async def work(conn: psycopg.AsyncConnection[Any]) -> Any:
            cur = await conn.execute(sql, params)
            return await cur.fetchone()

        return await self._run(work)

    # the route's statements (tracking.routing.AsyncStore)

    async def lookup(
        self, number: str, caller: str | None, caller_raw: str, system: str, linkedid: str
    ) -> tuple[NumberInfo, CallerFacts] | None:
        row = await self._fetchone(PG_NUMBER_SQL, lookup_params(number, caller, caller_raw, system, linkedid))
        return lookup_result(row, caller, caller_raw)

    async def visit(self, number_id: int, at: dt.datetime, grace: dt.timedelta) -> Visit | None:
        row = await self._fetchone(PG_VISIT_SQL, visit_params(pg_ts, number_id, at, grace))
        return Visit(*row) if row is not None else None

    async def save_call(
        self,
        system: str,
        linkedid: str,
        values: dict[str, Any],
        recording_dir: str | None,
        recording_file: str = "",
        *,
        announce: bool = True,
    ) -> int:
        """RouteStore.save_call on PostgreSQL: the upsert (and its call.started event) in one statement."""
        params = pg_call_params(call_params(pg_ts, system, linkedid, values, recording_dir))

        async def work(conn: psycopg.AsyncConnection[Any]) -> int:
            cur = await conn.execute(PG_UPSERT_SQL, params)
            row = await cur.fetchone()
            assert row is not None  # the upsert returns its row
            call_id = int(row[0])
            if recording_file:
                await conn.execute(PG_RECORDING_SQL, {"file": recording_file, "id": call_id})
            return call_id

        return await self._run(work)

    async def mark_fallback(self, call_id: int, decision: Decision) -> None:
        params = mark_fallback_params(pg_ts, call_id, decision)

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(PG_MARK_FALLBACK_SQL, params)

        await self._run(work)

    # start and stop

    async def warm(self) -> None:
        """Open every connection and run a lookup on each (RouteStore.warm, for the loop's connections)."""
        await asyncio.gather(
            *(self.lookup("+10000000000", "+10000000000", "+10000000000", "", "") for _ in range(self.size))
        )

    async def reset(self) -> None:
        """Close the idle connections: the next statements open new ones (to ``url``, which may have changed)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._drop(conn)

    async def close(self) -> None:
        """Close every connection; statements after this raise."""
        self._closed = True
        self._idle = []
        for conn in list(self._open):
            await self._drop(conn)
