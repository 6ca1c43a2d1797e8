"""The FastAGI service as `calltrack serve` and `calltrack agi serve` run it.

Wires the server, the router of handlers, the database threads and the spool of
call rows: the spool is replayed at start and every ``SPOOL_EVERY`` seconds.
SIGHUP (:meth:`AgiService.reload`) re-reads the settings and the number cache.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from asterisk_agi.fastagi import FastAGIServer, PeerPolicy, Router, Stats, parse_listen
from asterisk_agi.handlers import route, sms
from tracking.messages import TextRouter
from tracking.route_async import AsyncRouteStore
from tracking.routing import CallRouter, RouteStore

if TYPE_CHECKING:
    from config import Settings

logger = logging.getLogger(__name__)

SPOOL_EVERY = 10.0
CHECKPOINT_EVERY = 1.0
SWITCH_INTERVAL = 0.0002
#: the longest the server waits for the database while warming up before it listens anyway
WARM_LIMIT = 10.0


def check_settings(settings: Settings) -> None:
    """Refuse settings the server could not work with (ValueError naming the key)."""
    from tracking.dialstring import validate
    from tracking.errors import InvalidInput

    if settings.agi.fallback_dial:
        try:
            validate(settings.agi.fallback_dial, "agi.fallback_dial")
        except InvalidInput as exc:
            raise ValueError(str(exc)) from None
    if settings.agi.db_deadline_ms <= 0 or settings.agi.read_timeout <= 0:
        raise ValueError("agi.db_deadline_ms and agi.read_timeout must be positive")
    PeerPolicy(settings)


def db_threads(settings: Settings) -> int:
    if settings.agi.db_threads > 0:
        return settings.agi.db_threads
    return 1 if settings.database_url.startswith("sqlite") else 4


class AgiService:
    """The FastAGI server with its route handler; ``run(stop)`` serves until *stop* is set."""

    name = "agi"

    def __init__(
        self,
        settings: Settings,
        *,
        reload_settings: Callable[[], Settings] | None = None,
        listen: str | None = None,
        stats_every: float = 60.0,
    ) -> None:
        self.settings = settings
        self.reload_settings = reload_settings
        self.listen = listen or settings.agi.listen
        parse_listen(self.listen)
        check_settings(settings)
        self.stats_every = stats_every
        self.executor = ThreadPoolExecutor(max_workers=db_threads(settings), thread_name_prefix="agi-db")
        self.store = RouteStore(settings.database_url, connect_timeout=settings.database.connect_timeout)
        self.call_router = CallRouter(settings, self.store)
        self.inline: RouteStore | None = None
        if self.store.dialect == "sqlite":
            self.inline = RouteStore(
                settings.database_url, connect_timeout=settings.database.connect_timeout, inline=True
            )
        #: PostgreSQL: the route's statements go from the event loop, not the threads (tracking/route_async.py)
        self.on_loop: AsyncRouteStore | None = None
        if self.store.dialect == "postgresql":
            self.on_loop = AsyncRouteStore(
                settings.database_url, size=db_threads(settings), connect_timeout=settings.database.connect_timeout
            )
        self.router = Router()
        self.route_handler = route.register(self.router, self.call_router, self.executor, self.inline, self.on_loop)
        self.text_router = TextRouter(settings, self.store)
        sms.register(self.router, self.text_router, self.executor, self.inline)
        self.stats = Stats()
        self.server = FastAGIServer(settings, self.router, stats=self.stats)
        self.address: tuple[str, int] | None = None
        self.started = asyncio.Event()

    def health(self) -> str:
        """ "" while healthy (before start-up counts as healthy), else what is wrong (for the watchdog)."""
        if self.started.is_set() and not self.server.listening:
            return "the FastAGI server is not listening"
        return ""

    async def _in_db_thread(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def _warm(self) -> None:
        """Before accepting calls: what the first burst would otherwise pay on its deadline.

        The number cache (and the imports and time zones it needs), a database
        connection with its statements prepared in every database thread, and the
        inline SQLite connection. Bounded: a database that does not answer is left to
        the calls (they route by fallback) rather than keeping the port closed.
        """
        started = time.monotonic()
        try:
            count = await asyncio.wait_for(self._in_db_thread(self.call_router.warm), WARM_LIMIT)
            logger.info("FastAGI: %d active tracking numbers cached for fallback routing", count)
        except Exception as exc:
            self.store.discard()
            logger.warning(
                "FastAGI: cannot load the tracking numbers yet (%s); will route by fallback", exc or "timeout"
            )
            return
        threads = db_threads(self.settings)
        barrier = threading.Barrier(threads, timeout=WARM_LIMIT)

        def connect() -> None:
            try:
                barrier.wait()  # one task per thread: each opens its own connection
            except threading.BrokenBarrierError:
                pass
            try:
                self.store.warm()
            except Exception as exc:
                self.store.discard()
                logger.warning("FastAGI: a database thread could not connect yet: %s", exc)

        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(self.executor, connect) for _ in range(threads)]
        try:
            await asyncio.wait_for(asyncio.gather(*jobs), WARM_LIMIT)
        except TimeoutError:
            logger.warning("FastAGI: database threads still connecting after %g s", WARM_LIMIT)
        if self.on_loop is not None:
            try:
                await asyncio.wait_for(self.on_loop.warm(), WARM_LIMIT)
            except Exception as exc:
                logger.warning("FastAGI: the route's database connections not warmed: %s", exc or "timeout")
        if self.inline is not None:
            try:
                self.inline.warm()
            except Exception as exc:
                self.inline.discard()
                logger.info("FastAGI: inline SQLite connection not warmed: %s", exc)
        logger.info("FastAGI: warmed up in %.0f ms", (time.monotonic() - started) * 1000)

    async def replay_spool(self) -> int:
        try:
            written = int(await self._in_db_thread(self.call_router.replay_spool))
        except Exception as exc:
            logger.warning("FastAGI: spooled call rows wait for the database: %s", exc)
            return 0
        if written:
            logger.info("FastAGI: wrote %d spooled call row(s) to the database", written)
        try:
            texts = int(await self._in_db_thread(self.text_router.replay_spool))
        except Exception as exc:
            self.store.discard()
            logger.warning("FastAGI: spooled texts wait for the database: %s", exc)
            return written
        if texts:
            logger.info("FastAGI: wrote %d spooled text(s) to the database", texts)
        return written + texts

    async def run(self, stop: asyncio.Event) -> None:
        # The database threads and the event loop pass the GIL back and forth for every call; at
        # the default 5 ms switch interval a waiting thread can sit out a whole interval.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        host, port = parse_listen(self.listen)
        await self._warm()
        self.address = await self.server.start(host, port)
        self.started.set()
        await self.replay_spool()
        ticker = asyncio.create_task(self._background(stop))
        try:
            await self.server.serve(stop, stats_every=self.stats_every)
        finally:
            ticker.cancel()
            # the sessions are done; let jobs that outlived their deadline write their rows
            if self.route_handler.pending:
                await asyncio.wait(set(self.route_handler.pending))
            if self.on_loop is not None:
                await self.on_loop.close()
            await asyncio.get_running_loop().run_in_executor(None, self.executor.shutdown, True)
            await asyncio.get_running_loop().run_in_executor(None, self.call_router.replay_spool_quietly)
            self.store.close()
            if self.inline is not None:
                self.inline.close()

    async def _background(self, stop: asyncio.Event) -> None:
        ticks = 0
        while not stop.is_set():
            await asyncio.sleep(CHECKPOINT_EVERY)
            ticks += 1
            if self.inline is not None:
                # the inline connection leaves checkpoints to this thread
                try:
                    await self._in_db_thread(self.store.checkpoint)
                except Exception as exc:
                    self.store.discard()
                    logger.debug("checkpoint skipped: %s", exc)
            if ticks * CHECKPOINT_EVERY >= SPOOL_EVERY:
                ticks = 0
                await self.replay_spool()

    def reload(self) -> None:
        """SIGHUP: new settings for new sessions, and a fresh number cache."""
        if self.reload_settings is not None:
            try:
                settings = self.reload_settings()
                check_settings(settings)
                self.server.reload(settings)
            except Exception as exc:
                logger.error("FastAGI: settings not reloaded, keeping the old ones: %s", exc)
                return
            self.settings = settings
            self.call_router.settings = settings
            self.text_router.settings = settings
        self.call_router.clear()
        self.executor.submit(self._warm_quietly)
        logger.info("FastAGI: settings reloaded")

    def _warm_quietly(self) -> None:
        try:
            self.call_router.warm()
        except Exception as exc:
            self.store.discard()
            logger.warning("FastAGI: cannot reload the tracking numbers: %s", exc)
