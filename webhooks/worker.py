"""The delivery worker: dispatch new outbox events, claim due deliveries, send them, record what happened.

One loop, each round one short database transaction (in a thread): the outcomes of
the attempts that finished, the fan-out of new events, and claims.  Sends run
concurrently (``[webhooks] concurrency`` in all, ``per_endpoint`` to one endpoint).
A round claims ahead: up to ``PREFETCH_DEPTH`` times an endpoint's share, kept in a
local queue and sent as its slots free up, and outcomes are recorded together (a
round once ``RECORD_BATCH`` have finished, or ``RECORD_DELAY`` after the first), so a
healthy receiver costs one transaction per batch of deliveries, not one per delivery.
The claim's lease covers the wait in that queue. An endpoint that fails is held back for a growing
while (its consecutive failures' backoff), so a dead receiver gets one probe at a
time instead of its whole backlog, and its due deliveries never take the slots of
the others. On stop, sends in flight get a few seconds; those cut short are given
back to the queue (due again at once), so nothing waits for a lease to run out.
"""

from __future__ import annotations

import asyncio
import collections
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
#: a round claims up to this many times ``per_endpoint`` deliveries per endpoint (and ``concurrency`` in all)
PREFETCH_DEPTH = 4
#: outcomes are recorded in one round once this many have finished...
RECORD_BATCH = 64
#: ...or this long after the first of them finished
RECORD_DELAY = 0.05


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
        #: claimed, not sent yet: per endpoint, in claim order
        self._queued: dict[int, collections.deque[Job]] = {}
        self._first_outcome_at: float | None = None
        self._wake: asyncio.Event | None = None
        self._last_purge = 0.0

    @property
    def lease_seconds(self) -> float:
        """How long a claim holds a delivery: its wait in the local queue (PREFETCH_DEPTH sends of
        the endpoint before it, each at most the timeout), its own send, and a margin."""
        timeout = self.cfg.timeout_seconds
        return timeout * (PREFETCH_DEPTH + 1) + max(LEASE_MARGIN_SECONDS, timeout)

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    # -- the database round (in a thread) ------------------------------------------------

    def _round(
        self,
        outcomes: list[Outcome],
        slots: int,
        in_flight: dict[int, int],
        held: set[int],
        release: list[int] | None = None,
    ) -> list[Job]:
        cfg = self.cfg
        now = self._now()
        with self.session_factory() as session, session.begin():
            if outcomes:
                after = outbox.record(session, outcomes, now, cfg, self.rng)
                self.counters.dead += sum(1 for due in after.values() if due is None)
            if release:  # claimed for an endpoint that failed meanwhile: not attempted, due again
                outbox.release(session, release, now)
            self.counters.dispatched += outbox.dispatch(session, cfg, now)
            jobs: list[Job] = []
            if slots > 0:
                jobs = outbox.claim(
                    session,
                    now,
                    slots=slots,
                    per_endpoint=cfg.per_endpoint * PREFETCH_DEPTH,
                    in_flight=in_flight,
                    held=held,
                    lease_seconds=self.lease_seconds,
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
        if not self._outcomes:
            self._first_outcome_at = self.clock()
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

    def _start_sends(self, sender: Sender) -> None:
        """Send queued jobs while their endpoints and the worker have free slots."""
        cfg = self.cfg
        for endpoint, queue in list(self._queued.items()):
            while queue and len(self._tasks) < cfg.concurrency and self._in_flight.get(endpoint, 0) < cfg.per_endpoint:
                job = queue.popleft()
                self._in_flight[endpoint] = self._in_flight.get(endpoint, 0) + 1
                self._tasks[job.delivery_id] = asyncio.create_task(self._send(sender, job))
            if not queue:
                del self._queued[endpoint]

    def _outcomes_due(self, now: float) -> bool:
        if not self._outcomes:
            return False
        if len(self._outcomes) >= RECORD_BATCH or not self._tasks:
            return True
        return self._first_outcome_at is not None and now - self._first_outcome_at >= RECORD_DELAY

    async def run(self, stop: asyncio.Event) -> None:
        self._wake = asyncio.Event()
        cfg = self.cfg
        capacity = cfg.concurrency * PREFETCH_DEPTH
        async with Sender(self.guard, cfg.timeout_seconds, cfg.ca_file, self.clock) as sender:
            failing_since: float | None = None
            next_poll = 0.0
            more = True  # the last round may have left due deliveries behind
            release: list[int] = []
            while not stop.is_set():
                now = self.clock()
                held = {e for e, until in self._held.items() if until > now}
                for endpoint in [e for e in self._queued if e in held]:  # failing: give its queue back
                    release.extend(job.delivery_id for job in self._queued.pop(endpoint))
                self._start_sends(sender)
                queued = sum(len(q) for q in self._queued.values())
                room = capacity - queued - len(self._tasks)
                # claim when due deliveries may wait and an endpoint's queue runs low (or at each poll)
                low = not self._queued or any(len(q) < cfg.per_endpoint for q in self._queued.values())
                claim = room > 0 and (now >= next_poll or (more and low))
                if release or claim or self._outcomes_due(now) or now >= next_poll:
                    outcomes, self._outcomes = self._outcomes, []
                    self._first_outcome_at = None
                    busy = dict(self._in_flight)
                    for endpoint, queue in self._queued.items():
                        busy[endpoint] = busy.get(endpoint, 0) + len(queue)
                    slots = room if claim or now >= next_poll else 0
                    dispatched = self.counters.dispatched
                    try:
                        jobs = await asyncio.to_thread(self._round, outcomes, slots, busy, held, release)
                    except Exception as exc:
                        self._outcomes = outcomes + self._outcomes  # recorded at the next round that works
                        self.counters.db_errors += 1
                        if failing_since is None:
                            failing_since = now
                            logger.error(
                                "webhooks: database unavailable, deliveries wait: %s", str(exc).splitlines()[0]
                            )
                        jobs = []
                        more = False
                    else:
                        release = []
                        if failing_since is not None:
                            logger.info("webhooks: database back")
                            failing_since = None
                        # something was due (or new events fanned out): claim again once the queue runs low
                        more = bool(jobs) or self.counters.dispatched > dispatched
                    next_poll = self.clock() + cfg.poll_seconds
                    self.counters.rounds += 1
                    for job in jobs:
                        self._queued.setdefault(job.endpoint_id, collections.deque()).append(job)
                    self._start_sends(sender)
                    if jobs and len(self._tasks) < cfg.concurrency and room - len(jobs) > 0:
                        continue  # more may be due right away
                self._wake.clear()
                timeout = max(next_poll - self.clock(), 0.0)
                if self._outcomes and self._first_outcome_at is not None:
                    timeout = min(timeout, max(self._first_outcome_at + RECORD_DELAY - self.clock(), 0.0))
                if self._outcomes_due(self.clock()):
                    continue
                waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
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
        # claimed but never sent: given back too (due again at once, the attempt not counted)
        cut += [job.delivery_id for queue in self._queued.values() for job in queue]
        self._queued.clear()
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
