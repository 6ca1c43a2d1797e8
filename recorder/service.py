"""`recordings watch` and the "recorder" entry of `calltrack serve`: a pass every poll_seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from recorder.errors import FfmpegMissing

logger = logging.getLogger(__name__)


class RecorderService:
    name = "recorder"

    def __init__(self, settings: Any, session_factory: Any, **recorder_options: Any) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.options = recorder_options
        self.passes = 0

    def _make(self) -> Any:
        from recorder.pipeline import Recorder

        return Recorder(self.settings, self.session_factory, **self.options)

    async def run(self, stop: asyncio.Event) -> None:
        halt = threading.Event()
        recorder = None
        reported = False
        poll = max(self.settings.recorder.poll_seconds, 0.05)
        logger.info("recorder: watching %s", self.options.get("spool_dir") or self.settings.recorder.spool_dir)
        while not stop.is_set():
            if recorder is None:
                try:
                    recorder = self._make()
                except FfmpegMissing as exc:
                    if not reported:  # said once at start, then checked again quietly each poll
                        logger.error("recorder: %s; recordings wait in the spool until it is installed", exc)
                        reported = True
            if recorder is not None:
                waiter = asyncio.ensure_future(stop.wait())
                waiter.add_done_callback(lambda f: None if f.cancelled() else halt.set())
                try:
                    report = await asyncio.to_thread(recorder.run_pass, None, halt.is_set)
                    self.passes += 1
                    if report.archived or report.retrying or report.failed or report.cleaned:
                        logger.info("recorder: %s", report.summary())
                except Exception:
                    logger.exception("recorder: the pass failed; trying again in %.0f s", poll)
                finally:
                    waiter.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll)

    def reload(self) -> None:
        """Nothing to re-read: settings are fixed for the process; ffmpeg is looked up until found."""


def make_service(app: Any) -> RecorderService:
    """Factory for `calltrack serve` (``app`` is the CLI's AppContext)."""
    from sqlalchemy.orm import sessionmaker

    return RecorderService(app.settings, sessionmaker(bind=app.ready_engine(), expire_on_commit=False))
