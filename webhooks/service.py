"""The "webhooks" entry of `calltrack serve`: the delivery worker on a thread and event loop of its own.

Sends, TLS handshakes and JSON work then never delay the AMI listener's reads or
the FastAGI and web requests sharing `serve`'s event loop; the database work of the
worker runs in threads of its own loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from webhooks.guard import Guard
from webhooks.worker import Worker

logger = logging.getLogger(__name__)


class WebhookService:
    name = "webhooks"

    def __init__(self, settings: Any, session_factory: Any, *, guard: Guard | None = None) -> None:
        self.settings = settings
        self.worker = Worker(settings, session_factory, guard=guard)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inner_stop: asyncio.Event | None = None
        self._started = threading.Event()

    async def _inner(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._inner_stop = asyncio.Event()
        self._started.set()
        await self.worker.run(self._inner_stop)

    def _stop_inner(self) -> None:
        self._started.wait(timeout=10)
        if self._loop is not None and self._inner_stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._inner_stop.set)
            except RuntimeError:  # that loop has ended already
                pass

    async def run(self, stop: asyncio.Event) -> None:
        outer = asyncio.get_running_loop()
        finished: asyncio.Future[None] = outer.create_future()

        def settle(exc: BaseException | None) -> None:
            if finished.done():
                return
            if exc is None:
                finished.set_result(None)
            else:
                finished.set_exception(exc)

        def main() -> None:
            try:
                asyncio.run(self._inner())
            except BaseException as exc:
                self._started.set()
                outer.call_soon_threadsafe(settle, exc)
            else:
                outer.call_soon_threadsafe(settle, None)

        threading.Thread(target=main, name="webhooks", daemon=True).start()
        logger.info("webhooks: delivering the outbox")
        stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        await asyncio.wait([finished, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        await asyncio.to_thread(self._stop_inner)
        await finished

    def reload(self) -> None:
        logger.info("webhooks: nothing to reload (endpoints are read from the database at every round)")


def factory(app: Any) -> WebhookService:
    """`calltrack serve` entry: always runs (it idles while no endpoint exists)."""
    from sqlalchemy.orm import sessionmaker

    return WebhookService(app.settings, sessionmaker(bind=app.ready_engine(), expire_on_commit=False))
