"""The "lookup" service of `calltrack serve`: asks the provider about recent callers, off the route.

Each pass (every ``[lookup] poll_seconds``) deletes expired answers, finds the callers of
calls started within ``recent_minutes`` that have no answer yet (do-not-track callers
never), and asks the provider one number at a time in a worker thread.  No database
transaction is open while the provider is asked, so a slow provider never holds a lock
the route or the listener waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

from config import Settings
from tracking import caller_lookup
from tracking.caller_lookup import Provider

logger = logging.getLogger(__name__)


class LookupService:
    name = "lookup"

    def __init__(self, settings: Settings, session_factory: Any, provider: Provider) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.provider = provider
        self.passes = 0
        cfg = settings.lookup
        self.ttl = dt.timedelta(days=cfg.ttl_days)
        self.retry = dt.timedelta(minutes=cfg.retry_minutes)

    def run_pass(self, now: dt.datetime | None = None) -> int:
        """One pass; how many numbers were asked about."""
        now = now or caller_lookup.utcnow()
        since = now - dt.timedelta(minutes=self.settings.lookup.recent_minutes)
        with self.session_factory() as session, session.begin():
            purged = caller_lookup.purge_expired(session, now)
            numbers = caller_lookup.due(session, self.provider.name, since=since, now=now)
        if purged:
            logger.info("lookup: %d expired answer(s) deleted", purged)
        asked = 0
        for number in numbers:
            with self.session_factory() as session:
                if caller_lookup.do_not_track(session, number):  # listed since the query above
                    continue
            result = self.provider.lookup(number)  # no transaction open meanwhile
            asked += 1
            with self.session_factory() as session, session.begin():
                caller_lookup.store(session, self.provider.name, result, ttl=self.ttl, retry=self.retry, now=now)
        self.passes += 1
        return asked

    async def run(self, stop: asyncio.Event) -> None:
        logger.info("lookup: asking %s about recent callers", self.provider.name)
        poll = self.settings.lookup.poll_seconds
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.run_pass)
            except Exception:
                logger.exception("lookup: the pass failed; trying again in %.0f s", poll)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll)
        close = getattr(self.provider, "close", None)
        if close is not None:
            close()

    def reload(self) -> None:
        """Nothing to re-read: the provider's settings are fixed for the process."""


def factory(app: Any) -> LookupService | None:
    """`calltrack serve` entry: None unless [lookup] enabled = true."""
    settings: Settings = app.settings
    if not settings.lookup.enabled:
        return None
    from sqlalchemy.orm import sessionmaker

    from lookups.https import HttpsProvider

    provider = HttpsProvider(settings.lookup)
    return LookupService(settings, sessionmaker(bind=app.ready_engine(), expire_on_commit=False), provider)
