"""PostgreSQL: the new visitor sessions waiting at one moment share one statement and one commit.

Each new session on its own cost PostgreSQL a transaction: 820-890 µs of its CPU under
load (bench/dni_bench.py, 50 clients), against 243 µs for the same statement on one
connection, most of it the commit and the backends contending for the same rows (the
pool's numbers, its overflow slots).  Here the new sessions that arrive while the
previous batch is being written are written together, one statement per pool
(tracking.leases.start_sessions), on a worker thread.  Numbers go in order of arrival.

One request's values that the database refuses (the statement then wrote nothing) cost
the others of its pool a retry, each alone, never their answer.  A database that is away
(``OperationalError``) fails the pool's requests with that error: the API answers 503.
Heartbeats are batched too (:class:`Heartbeats`), in one transaction that locks their numbers'
rows before the clock is read.  Continuing sessions run alone: they lock rows across statements.
"""

from __future__ import annotations

import concurrent.futures
import logging

from sqlalchemy.exc import OperationalError

from web.dni import AccountInfo, Answer, Dni, NewSession
from web.group_commit import MAX_BATCH, Batcher

logger = logging.getLogger(__name__)


class NewSessions(Batcher[NewSession]):
    """Writes the new sessions waiting at one moment together, one statement per pool."""

    def __init__(self, dni: Dni, executor: concurrent.futures.Executor, max_batch: int = MAX_BATCH) -> None:
        super().__init__(executor, max_batch)
        self.dni = dni

    def _outcomes(self, items: list[NewSession]) -> list[Answer | BaseException]:
        out: list[Answer | BaseException | None] = [None] * len(items)
        by_pool: dict[int | None, list[int]] = {}
        for i, item in enumerate(items):
            by_pool.setdefault(item.pool_id, []).append(i)
        for places in by_pool.values():
            try:
                answers: list[Answer | BaseException] = list(self.dni.write_new_sessions([items[i] for i in places]))
            except OperationalError as exc:
                logger.error("DNI: new sessions cannot be written: %s", exc.orig or exc)
                answers = [exc] * len(places)
            except Exception as exc:  # nothing was written: each request of the pool runs alone
                logger.warning("DNI: a new session of a batch of %d failed (%s); each runs alone", len(places), exc)
                answers = [self._alone(items[i]) for i in places]
            for i, answer in zip(places, answers, strict=True):
                out[i] = answer
        return [o for o in out if o is not None]

    def _alone(self, item: NewSession) -> Answer | BaseException:
        try:
            return self.dni.write_new_sessions([item])[0]
        except Exception as exc:
            return exc


class Heartbeats(Batcher[tuple[AccountInfo, str]]):
    """The heartbeats waiting at one moment in one transaction (tracking.leases.pg_heartbeats).

    Each heartbeat of PostgreSQL was a transaction of its own, locking its number's row: under
    load they ran at 0.025 of the static JSON rate.  A batch locks its numbers in the order of
    their ids, so two batches (two web workers) never wait for each other in a circle.
    """

    def __init__(self, dni: Dni, executor: concurrent.futures.Executor, max_batch: int = MAX_BATCH) -> None:
        super().__init__(executor, max_batch)
        self.dni = dni

    def _outcomes(self, items: list[tuple[AccountInfo, str]]) -> list[Answer | BaseException]:
        try:
            return self.dni.beat_batch(items)
        except OperationalError as exc:
            logger.error("DNI: heartbeats cannot be written: %s", exc.orig or exc)
            return [exc] * len(items)
        except Exception as exc:  # the transaction was rolled back: each heartbeat runs alone
            logger.warning("DNI: a heartbeat of a batch of %d failed (%s); each runs alone", len(items), exc)
            return [self._alone(item) for item in items]

    def _alone(self, item: tuple[AccountInfo, str]) -> Answer | BaseException:
        try:
            return self.dni.beat_batch([item])[0]
        except Exception as exc:
            return exc
