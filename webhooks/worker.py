"""The delivery worker: dispatch new outbox events, claim due deliveries, send them, record what happened.

One loop, each round one short database transaction (in a thread): the outcomes of
the attempts that finished, the fan-out of new events, and claims for the free
slots. Sends run concurrently (``[webhooks] concurrency`` in all,
``per_endpoint`` to one endpoint). An endpoint that fails is held back for a growing
while (its consecutive failures' backoff), so a dead receiver gets one probe at a
time instead of its whole backlog, and its due deliveries never take the slots of
the others. On stop, sends in flight get a few seconds; those cut short are given
back to the queue (due again at once), so nothing waits for a lease to run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tracking import outbox
from tracking.outbox import Job, Outcome
from webhooks.guard import Guard
from webhooks.sender import Sender

logger = logging.getLogger(__name__)

#: a claim holds a delivery this much longer than the send's timeout (at least): a worker that died
#: mid-send leaves deliveries that are due again this soon after
LEASE_MARGIN_SECONDS = 5.0
#: on stop, sends in flight get this long to finish
STOP_GRACE_SECONDS = 5.0
PURGE_EVERY_SECONDS = 3600.0


@dataclass
class Counters:
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    dispatched: int = 0
    rounds: int = 0
    db_errors: int = 0
    #: seconds from an event to its delivery, the last few thousand (for the benchmark and the log)
    latencies: list[float] = field(default_factory=list)


class Worker:
    def __init__(
        self,
        settings: Any,
        session_factory: sessionmaker[Session],
        *,
        guard: Guard | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        #: the whole Settings (``settings.webhooks`` is read)
        self.settings = settings
        self.cfg = settings.webhooks
        self.session_factory = session_factory
        self.guard = guard or Guard(self.cfg.allow_networks)
        self.clock = clock
        self.rng = rng or random.Random()
        self.counters = Counters()
        self._outcomes: list[Outcome] = []
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._in_flight: dict[int, int] = {}
        self._failures: dict[int, int] = {}
        self._held: dict[int, float] = {}
        self._wake: asyncio.Event | None = None
        self._last_purge = 0.0

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    # -- the database round (in a thread) ------------------------------------------------

    def _round(self, outcomes: list[Outcome], slots: int, in_flight: dict[int, int], held: set[int]) -> list[Job]:
        cfg = self.cfg
        now = self._now()
        with self.session_factory() as session, session.begin():
            if outcomes:
                after = outbox.record(session, outcomes, now, cfg, self.rng)
                self.counters.dead += sum(1 for due in after.values() if due is None)
            self.counters.dispatched += outbox.dispatch(session, cfg, now)
            jobs: list[Job] = []
            if slots > 0:
                jobs = outbox.claim(
                    session,
                    now,
                    slots=slots,
                    per_endpoint=cfg.per_endpoint,
                    in_flight=in_flight,
                    held=held,
                    lease_seconds=cfg.timeout_seconds + max(LEASE_MARGIN_SECONDS, cfg.timeout_seconds),
                )
            if cfg.keep_days and self.clock() - self._last_purge > PURGE_EVERY_SECONDS:
                self._last_purge = self.clock()
                purged = outbox.purge(session, now, cfg.keep_days)
                if purged:
                    logger.info("webhooks: %d finished deliveries older than %d days removed", purged, cfg.keep_days)
        return jobs

    def _release(self, delivery_ids: list[int], outcomes: list[Outcome]) -> None:
        now = self._now()
        with self.session_factory() as session, session.begin():
            if outcomes:
                outbox.record(session, outcomes, now, self.cfg, self.rng)
            outbox.release(session, delivery_ids, now)

    # -- sending -----------------------------------------------------------------------------

    async def _send(self, sender: Sender, job: Job) -> None:
        try:
            outcome = await sender.send(job)
        finally:
            self._in_flight[job.endpoint_id] -= 1
            self._tasks.pop(job.delivery_id, None)
        self._outcomes.append(outcome)
        self._note(job, outcome)
        if self._wake is not None:
            self._wake.set()

    def _note(self, job: Job, outcome: Outcome) -> None:
        endpoint = job.endpoint_id
        if outcome.ok:
            self.counters.delivered += 1
            if self._failures.pop(endpoint, 0):
                logger.info("webhooks: endpoint %d answers again", endpoint)
            self._held.pop(endpoint, None)
            return
        self.counters.failed += 1
        count = self._failures.get(endpoint, 0) + 1
        self._failures[endpoint] = count
        wait = outbox.backoff_seconds(count, self.cfg.retry_base_seconds, self.cfg.retry_max_seconds, self.rng)
        if outcome.retry_after is not None:
            wait = max(wait, min(outcome.retry_after, self.cfg.retry_max_seconds))
        self._held[endpoint] = self.clock() + wait
        log = logger.warning if count == 1 else logger.info
        log(
            "webhooks: delivery %d of %s %s to endpoint %d failed (attempt %d): %s; endpoint held back %.0f s",
            job.delivery_id,
            job.type,
            job.event_id,
            endpoint,
            job.attempt,
            outcome.error,
            wait,
        )

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._wake = asyncio.Event()
        cfg = self.cfg
        async with Sender(self.guard, cfg.timeout_seconds, cfg.ca_file, self.clock) as sender:
            failing_since: float | None = None
            while not stop.is_set():
                now = self.clock()
                held = {e for e, until in self._held.items() if until > now}
                outcomes, self._outcomes = self._outcomes, []
                slots = cfg.concurrency - len(self._tasks)
                try:
                    jobs = await asyncio.to_thread(self._round, outcomes, slots, dict(self._in_flight), held)
                except Exception as exc:
                    self._outcomes = outcomes + self._outcomes  # recorded at the next round that works
                    self.counters.db_errors += 1
                    if failing_since is None:
                        failing_since = now
                        logger.error("webhooks: database unavailable, deliveries wait: %s", str(exc).splitlines()[0])
                    jobs = []
                else:
                    if failing_since is not None:
                        logger.info("webhooks: database back")
                        failing_since = None
                self.counters.rounds += 1
                for job in jobs:
                    self._in_flight[job.endpoint_id] = self._in_flight.get(job.endpoint_id, 0) + 1
                    self._tasks[job.delivery_id] = asyncio.create_task(self._send(sender, job))
                if jobs and len(self._tasks) < cfg.concurrency:
                    continue  # more may be due right away
                self._wake.clear()
                if self._outcomes:
                    continue
                waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waiters, timeout=cfg.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waiters:
                    waiter.cancel()
            await self._stop()

    async def _stop(self) -> None:
        tasks = dict(self._tasks)
        if tasks:
            await asyncio.wait(list(tasks.values()), timeout=STOP_GRACE_SECONDS)
        cut = [delivery_id for delivery_id, task in tasks.items() if not task.done()]
        for delivery_id in cut:
            tasks[delivery_id].cancel()
        for task in tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        outcomes, self._outcomes = self._outcomes, []
        try:
            await asyncio.to_thread(self._release, cut, outcomes)
        except Exception as exc:  # their claims run out and they are retried then
            logger.error("webhooks: cannot record the last deliveries at stop: %s", str(exc).splitlines()[0])
        logger.info(
            "webhooks: stopped (%d delivered, %d failed attempts, %d dead)",
            self.counters.delivered,
            self.counters.failed,
            self.counters.dead,
        )
