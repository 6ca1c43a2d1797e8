"""The ``route`` handler: ``AGI(agi://127.0.0.1:4573/route?number=...)`` or ``AGI(calltrack-agi,route?number=...)``.

Reads the dialled tracking number, the caller and the channel's linkedid, lets
:class:`tracking.routing.CallRouter` decide and write the call row within the
database deadline, and sets the ``CALLTRACK_*`` variables of the dialplan contract.
Whatever goes wrong, the variables say ``fallback`` and name a destination.

Where the inputs come from, and why they can be trusted: :mod:`asterisk_agi.handlers.inputs`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from asterisk_agi.handlers.inputs import (
    FETCH,
    SAVED_NAME,
    CallInputs,
    from_address,
    from_environment,
    needs_saved_name,
    saved_name,
)
from asterisk_agi.protocol import AGIEnv
from tracking.routing import STATUS_FALLBACK, CallRouter, Decision, RouteRequest, RouteStore

if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import Executor

    from asterisk_agi.fastagi import AsyncAGI, Router, SessionInfo
    from tracking.routing import AsyncStore

logger = logging.getLogger(__name__)


async def read_inputs(agi: AsyncAGI) -> CallInputs:
    """The route's inputs over FastAGI (at most one round trip; two for a session out of step whose
    caller name the dialplan left out of the address)."""
    inputs = from_address(agi.env.query, agi.env)
    if inputs is None:
        fetched, drained = await agi.synchronise(FETCH)
        inputs = from_environment(agi.env, fetched, drained)
    elif needs_saved_name(agi.env.query):
        if not agi.in_step:
            await agi.synchronise()
        (name,) = await agi.get_values(SAVED_NAME)
        inputs = replace(inputs, caller_name=saved_name(name))
    return inputs


def log_anomalies(peer: str, env: AGIEnv, inputs: CallInputs) -> None:
    if inputs.anomalies:
        logger.warning(
            "AGI session from %s (channel %r) is out of step: %s; routing the call to %r by %s",
            peer or "stdin",
            env.get("agi_channel")[:80],
            "; ".join(inputs.anomalies),
            inputs.dialled,
            inputs.origin,
        )


def build_request(inputs: CallInputs, system: str, at: dt.datetime | None = None) -> RouteRequest:
    """The call as the route sees it; the linkedid falls back to the channel's uniqueid."""
    return RouteRequest(
        dialled=inputs.dialled,
        caller_number=_known(inputs.caller_number),
        caller_name=_known(inputs.caller_name),
        system=system,
        linkedid=inputs.linkedid.strip() or inputs.uniqueid,
        uniqueid=inputs.uniqueid,
        at=at or dt.datetime.now(dt.UTC),
    )


def _known(value: str) -> str:
    return "" if value.strip().lower() in ("unknown", "<unknown>") else value


def log_decision(request: RouteRequest, decision: Decision) -> None:
    if decision.status == STATUS_FALLBACK:
        logger.warning(
            "call %s/%s to %s routed by fallback to %r: %s",
            request.system,
            request.linkedid,
            request.dialled,
            decision.dial,
            decision.reason,
        )
    elif decision.reason:
        logger.info(
            "call %s/%s to %s: %s (%s)",
            request.system,
            request.linkedid,
            request.dialled,
            decision.status,
            decision.reason,
        )


class RouteHandler:
    """The FastAGI ``route``: the database work runs on *executor*, bounded by ``agi.db_deadline_ms``.

    With an *inline* store (SQLite), the call is first routed on the event loop itself
    over a connection that never waits for a lock: a local SQLite answers in a fraction
    of a millisecond, and handing each call to a thread and back costs more than that
    under load. When SQLite is busy (another writer holds the lock) the call goes to
    the threads as usual. Inline calls slower than *inline_slow* seconds (a disk that
    stalls) hold up every other call, so after *inline_strikes* of them within
    *inline_window* seconds inline routing is turned off for *inline_pause* seconds and
    the threads, with their deadline, take every call. (One slow call alone, such as
    the first one opening the database, is not enough; nor are the few milliseconds a
    busy machine takes the CPU away, which the threads would suffer more.)

    With an *on_loop* store (PostgreSQL, tracking/route_async.py) the database work runs
    on the event loop instead of the threads, with the same deadline: a call the database
    does not answer in time gets the fallback, and its row, written later, says so.
    """

    def __init__(
        self,
        router: CallRouter,
        executor: Executor,
        inline: RouteStore | None = None,
        *,
        on_loop: AsyncStore | None = None,
        inline_slow: float = 0.1,
        inline_strikes: int = 3,
        inline_window: float = 10.0,
        inline_pause: float = 60.0,
    ) -> None:
        self.router = router
        self.executor = executor
        self.inline = inline
        self.on_loop = on_loop
        #: on-loop jobs still running (a call past its deadline writes its row after its answer)
        self.pending: set[asyncio.Future[Decision]] = set()
        self.inline_slow = inline_slow
        self.inline_strikes = inline_strikes
        self.inline_window = inline_window
        self.inline_pause = inline_pause
        self.inline_off_until = 0.0
        self._slow: list[float] = []
        from tracking import metrics  # here: the classic script imports this module, never prometheus_client

        self._statuses = metrics.ROUTES
        self._seconds = metrics.ROUTE_SECONDS
        self._fallbacks = metrics.ROUTE_FALLBACKS

    async def __call__(self, agi: AsyncAGI, session: SessionInfo) -> str:
        began = time.perf_counter()
        status, cause = await self._route(agi, session)
        self._seconds.observe(time.perf_counter() - began)
        self._statuses.labels(status).inc()
        if status == STATUS_FALLBACK:
            self._fallbacks.labels(cause).inc()
        return status

    async def _route(self, agi: AsyncAGI, session: SessionInfo) -> tuple[str, str]:
        """(status, the cause of a fallback: ``deadline`` or ``error``)."""
        import asyncio

        inputs = await read_inputs(agi)
        log_anomalies(session.peer, agi.env, inputs)
        request = build_request(inputs, session.system)
        if self.inline is not None and time.monotonic() >= self.inline_off_until:
            started = time.monotonic()
            decision = self.router.try_inline(request, self.inline)
            now = time.monotonic()
            if now - started > self.inline_slow:
                self._slow = [t for t in self._slow if now - t < self.inline_window] + [now]
                if len(self._slow) >= self.inline_strikes:
                    self._slow = []
                    self.inline_off_until = now + self.inline_pause
                    logger.warning(
                        "SQLite took %.0f ms on the event loop (%d slow calls in %g s); "
                        "routing on the database thread for %g s",
                        (now - started) * 1000,
                        self.inline_strikes,
                        self.inline_window,
                        self.inline_pause,
                    )
            if decision is not None:
                log_decision(request, decision)
                await agi.set_variables(decision.variables())
                return decision.status, "error"
        job = self.router.job(request)
        deadline = self.router.settings.agi.db_deadline_ms / 1000
        future: asyncio.Future[Decision]
        if self.on_loop is not None:
            future = asyncio.ensure_future(job.run_async(self.on_loop))
            self.pending.add(future)
            future.add_done_callback(self.pending.discard)
        else:
            future = asyncio.get_running_loop().run_in_executor(self.executor, job.run)
        cause = "error"
        try:
            # shield: on timeout the job still runs, writes the row and marks it as fallback
            async with asyncio.timeout(deadline):
                decision = await asyncio.shield(future)
        except TimeoutError:
            decision = job.abandon(f"the database did not answer within {deadline * 1000:g} ms")
            cause = "deadline"
        log_decision(request, decision)
        await agi.set_variables(decision.variables())
        return decision.status, cause


def register(
    router: Router,
    call_router: CallRouter,
    executor: Executor,
    inline: RouteStore | None = None,
    on_loop: AsyncStore | None = None,
) -> RouteHandler:
    handler = RouteHandler(call_router, executor, inline, on_loop=on_loop)
    router.add("route", handler)
    return handler
