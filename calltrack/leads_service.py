"""The "leads" entry of `calltrack serve`: lead rules and spam signals on calls that just ended.

The AMI listener closes calls; this sweep, every ``[transcription] poll_seconds``, runs each
account's rules on the calls that ended since (rules run again when a transcript arrives, from the
transcriber).  Kept off the listener's batch: a rule never delays or fails the write of events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

logger = logging.getLogger(__name__)


class LeadRulesService:
    name = "leads"

    def __init__(self, settings: Any, session_factory: Any) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.passes = 0

    def run_pass(self) -> int:
        from tracking.lead_rules import sweep

        with self.session_factory() as s, s.begin():
            return sweep(s, spam_settings=self.settings.spam)

    async def run(self, stop: asyncio.Event) -> None:
        poll = max(min(self.settings.transcription.poll_seconds, 15.0), 0.05)
        while not stop.is_set():
            try:
                done = await asyncio.to_thread(self.run_pass)
                self.passes += 1
                if done:
                    logger.info("leads: rules applied to %d ended call(s)", done)
            except Exception:
                logger.exception("leads: the sweep failed; trying again in %g s", poll)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll)

    def reload(self) -> None:
        """Rules are read from the database on every pass."""


def make_service(app: Any) -> LeadRulesService:
    from sqlalchemy.orm import sessionmaker

    return LeadRulesService(app.settings, sessionmaker(bind=app.ready_engine(), expire_on_commit=False))
