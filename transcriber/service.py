"""`transcripts watch` and the "transcriber" entry of `calltrack serve`: a pass every poll_seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

logger = logging.getLogger(__name__)


class TranscriberService:
    name = "transcriber"

    def __init__(self, settings: Any, session_factory: Any, **options: Any) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.options = options
        self.passes = 0
        self.problem = ""

    def _make(self) -> Any:
        from transcriber.pipeline import Transcriber

        return Transcriber(self.settings, self.session_factory, **self.options)

    async def run(self, stop: asyncio.Event) -> None:
        halt = threading.Event()
        transcriber = self._make()
        reported = None
        poll = max(self.settings.transcription.poll_seconds, 0.05)
        logger.info("transcriber: transcribing archived recordings every %g s", poll)
        try:
            while not stop.is_set():
                waiter = asyncio.ensure_future(stop.wait())
                waiter.add_done_callback(lambda f: None if f.cancelled() else halt.set())
                try:
                    report = await asyncio.to_thread(transcriber.run_pass, None, halt.is_set)
                    self.passes += 1
                    if report.model_error:
                        if report.model_error != reported:  # said once, then checked again quietly each poll
                            logger.error("transcriber: %s; recordings wait in the queue", report.model_error)
                            reported = report.model_error
                    elif report.done or report.retrying or report.failed or report.skipped or report.interrupted:
                        logger.info("transcriber: %s", report.summary())
                    self.problem = report.model_error or ""
                except Exception:
                    logger.exception("transcriber: the pass failed; trying again in %g s", poll)
                finally:
                    waiter.cancel()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=poll)
        finally:
            await asyncio.to_thread(transcriber.close)

    def reload(self) -> None:
        """Nothing to re-read: settings are fixed for the process."""


def make_service(app: Any) -> TranscriberService | None:
    """Factory for `calltrack serve` (``app`` is the CLI's AppContext); None when transcription is off."""
    if not app.settings.transcription.enabled:
        return None
    from sqlalchemy.orm import sessionmaker

    return TranscriberService(app.settings, sessionmaker(bind=app.ready_engine(), expire_on_commit=False))
