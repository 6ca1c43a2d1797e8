"""Shared by the webhook tests: real calls through the route and the listener, a running worker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ami_listener.correlator import Correlator, RawEvent
from ami_listener.parser import parse_buffer
from ami_listener.sink import CallWriter
from config import RecorderSettings, Settings, WebhookSettings
from schema.models import OutboxEvent, WebhookDelivery
from tests.fakes.ami_server import call_frames, load_capture, renumber
from tracking.phone import try_normalize
from tracking.routing import CallRouter, RouteRequest, RouteStore
from webhooks.guard import Guard
from webhooks.worker import Worker

T0 = dt.datetime(2026, 11, 30, 15, 0, tzinfo=dt.UTC)
#: the receivers of these tests live on 127.0.0.1 (and only there)
LOOPBACK_ONLY = ("127.0.0.1/32",)


def fast(settings: Settings, **changes: Any) -> Settings:
    """Settings whose retries come within a fraction of a second (the receivers are local)."""
    values: dict[str, Any] = {
        "timeout_seconds": 3.0,  # a local "ok" may take over a second on a loaded machine: no false timeouts
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2,
        "poll_seconds": 0.02,
        "allow_networks": LOOPBACK_ONLY,
    }
    values.update(changes)
    return settings.replace(webhooks=dataclasses.replace(WebhookSettings(), **values))


def write_config(folder: Path, **webhooks: Any) -> None:
    """A calltrack.toml in *folder* (the CLI's working folder) allowing the loopback receiver."""
    lines = ["[webhooks]"]
    values = {"allow_networks": list(LOOPBACK_ONLY), **webhooks}
    for key, value in values.items():
        if isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in value)}]")
        else:
            lines.append(f"{key} = {value!r}")
    (folder / "calltrack.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def answered_calls(traffic: Path, copies: int, start: dt.datetime = T0) -> list[tuple[str, list[RawEvent]]]:
    """*copies* distinct answered calls from the recorded capture: (linkedid, its events)."""
    base = call_frames(load_capture("answered", traffic))
    out = []
    for copy in range(copies):
        frames = renumber(base, copy)
        messages, rest = parse_buffer(b"".join(f.data for f in frames))
        assert rest == b""
        linkedid = next(m["Linkedid"] for m in messages if m.get("Linkedid"))
        at = start + dt.timedelta(minutes=copy)
        events = [RawEvent(i + 1, at + dt.timedelta(milliseconds=10 * i), m) for i, m in enumerate(messages)]
        out.append((linkedid, events))
    return out


def route(settings: Settings, linkedid: str, at: dt.datetime = T0, caller: str = "+14045551234") -> int:
    """The real AGI route for a call to 800-555-0100 (writes the call row and its call.started)."""
    store = RouteStore(settings.database_url)
    try:
        router = CallRouter(settings.replace(recorder=RecorderSettings(spool_dir=Path("/nonexistent-spool"))), store)
        decision = router.run(RouteRequest("8005550100", caller, "Jane Doe", "pbx1", linkedid, linkedid, at))
    finally:
        store.close()
    assert decision.call_id is not None, decision
    return decision.call_id


def listen(session_factory: sessionmaker[Session], events: list[RawEvent], writer: CallWriter | None = None) -> None:
    """The listener's correlator and writer, one transaction per event (as small batches)."""
    correlator = Correlator(lambda raw: try_normalize(raw, "US"))
    writer = writer or CallWriter("pbx1")
    for event in events:
        correlator.feed(event)
        with session_factory() as s, s.begin():
            writer.write(s, correlator.take_changed())


def outbox_ids(session_factory: sessionmaker[Session]) -> list[str]:
    with session_factory() as s:
        return list(s.scalars(select(OutboxEvent.event_id).order_by(OutboxEvent.id)))


def states(session_factory: sessionmaker[Session]) -> list[str]:
    with session_factory() as s:
        return list(s.scalars(select(WebhookDelivery.state).order_by(WebhookDelivery.id)))


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(
    settings: Settings, session_factory: sessionmaker[Session], guard: Guard | None = None, **kwargs: Any
) -> AsyncIterator[Worker]:
    """The delivery worker, running in this event loop until the block ends."""
    worker = Worker(settings, session_factory, guard=guard, **kwargs)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
