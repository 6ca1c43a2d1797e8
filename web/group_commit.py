"""SQLite group commit for the DNI API: the requests waiting at one moment share one write transaction.

SQLite has one writer at a time, so the DNI API runs its sessions and heartbeats one
after another anyway; each in its own transaction paid a ``BEGIN IMMEDIATE``, a
commit (its WAL frames: the same session, lease and number pages again) and a
connection checkout.  Here the requests that arrive while the writer is busy are
gathered and run, in their order of arrival, in one transaction by one writer
(on the event loop when the web service has its process to itself, else on one
worker thread), and every one of them is answered after that transaction has
committed.

A job's :class:`~web.dni.SessionEnded` is its answer (it writes nothing before it).
A job that fails otherwise rolls the batch back, and each job of the batch then runs
again alone in a transaction of its own, so one bad request costs the others a retry,
never their answer.  A database that cannot be written (``OperationalError``: locked
by another process past the timeout, disk full, gone) fails the whole batch with
that error: the API answers 503 to each.

Never two live leases on one number still holds: the batch's jobs run one after
another under the one write lock, each reading what the earlier ones wrote.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from tracking import leases
from web.dni import Answer, SessionEnded

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
#: a job: one request's reads and writes on the batch's connection, inside its transaction
Job = Callable[[Connection], Answer]
#: at most this many requests in one transaction (a longer queue is served by the next one)
MAX_BATCH = 256


class Batcher(Generic[Item]):
    """Gathers the requests waiting at one moment and runs them together, on the event loop or a thread.

    While a batch runs, the requests that arrive wait; when it is done they form the
    next one, at once.  Each request gets its own outcome: its answer, or the
    exception :meth:`_outcomes` gave it.
    """

    def __init__(self, executor: concurrent.futures.Executor | None, max_batch: int = MAX_BATCH) -> None:
        #: None: run the batch on the event loop itself
        self.executor = executor
        self.max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._busy = False
        #: sizes of the batches run, for the benchmark and the tests
        self.batches = 0
        self.jobs = 0

    async def run(self, item: Item) -> Answer:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._pending.append((item, future))
        if not self._busy:
            self._busy = True
            # not now: the requests that became ready with this one reach run() first, and join it
            loop.call_soon(self._flush, loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        if not batch:
            self._busy = False
            return
        items = [item for item, _ in batch]
        if self.executor is None:
            self._done(loop, batch, self._counted(items))
            return
        work = loop.run_in_executor(self.executor, self._counted, items)
        work.add_done_callback(lambda f: self._done(loop, batch, f))

    def _done(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[Item, asyncio.Future[Answer]]], result: Any
    ) -> None:
        try:
            outcomes = result.result() if isinstance(result, asyncio.Future) else result
        except BaseException as exc:  # the worker thread itself failed: every request hears of it
            outcomes = [exc] * len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its request was cancelled (the client went away)
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        if self._pending:
            loop.call_soon(self._flush, loop)  # what arrived meanwhile, at once
        else:
            self._busy = False

    def _counted(self, items: list[Item]) -> list[Answer | BaseException]:
        self.batches += 1
        self.jobs += len(items)
        return self._outcomes(items)

    def _outcomes(self, items: list[Item]) -> list[Answer | BaseException]:
        """Run *items* together: each one's answer, or the exception its request is to raise."""
        raise NotImplementedError


class GroupCommit(Batcher[Job]):
    """Gathers the DNI requests waiting for SQLite's writer into one transaction each time it is free."""

    def __init__(
        self,
        engine: Engine,
        executor: concurrent.futures.Executor | None,
        write_lock: threading.Lock | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        super().__init__(executor, max_batch)
        self.engine = engine
        #: shared with the other SQLite writers of this process (form leads)
        self.write_lock = write_lock

    def _outcomes(self, items: list[Job]) -> list[Answer | BaseException]:
        """Run the batch in one transaction: each job's answer, or the exception it is to raise."""
        lock = self.write_lock or contextlib.nullcontext()
        with lock:
            try:
                return self._together(items)
            except OperationalError as exc:
                logger.error("DNI: the database cannot be written: %s", exc.orig or exc)
                return [exc] * len(items)
            except Exception as exc:  # a job failed: the batch was rolled back, each runs alone
                logger.warning("DNI: a request of a batch of %d failed (%s); each runs alone", len(items), exc)
                return [self._alone(job) for job in items]

    def _together(self, jobs: list[Job]) -> list[Answer | BaseException]:
        outcomes: list[Answer | BaseException] = []
        with self.engine.connect() as conn:
            if self.executor is None:
                # on the event loop: a checkpoint (the WAL copied back, with fsync) would stop it for
                # 20-40 ms; checkpoint() runs them on a thread instead
                conn.connection.driver_connection.execute("PRAGMA wal_autocheckpoint=0")  # type: ignore[union-attr]
            leases.begin_write(conn)
            for job in jobs:
                try:
                    outcomes.append(_run(job, conn))
                except SessionEnded as exc:  # read-only up to here: the batch goes on
                    outcomes.append(exc)
            conn.commit()
        return outcomes

    def checkpoint(self) -> None:
        """Copy the write-ahead log back into the database file (PASSIVE: waits for no one).

        Run on a thread, never on the event loop: with the batches on the loop (no executor),
        their connection leaves checkpoints to this.
        """
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _alone(self, job: Job) -> Answer | BaseException:
        try:
            with self.engine.connect() as conn:
                leases.begin_write(conn)
                answer = _run(job, conn)
                conn.commit()
                return answer
        except Exception as exc:
            return exc


def _run(job: Job, conn: Connection) -> Answer:
    """*job* on *conn*; an error of SQLite's driver as SQLAlchemy's (an OperationalError stays one).

    The jobs' statements go to the driver directly (web/session_rows.py, tracking/leases.py), so
    SQLAlchemy has not wrapped what they raise; the callers (and the API's 503) expect its types.
    """
    try:
        return job(conn)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(None, None, exc, sqlite3.Error) from exc
