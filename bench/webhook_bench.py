"""Webhook benchmark: completed calls through the outbox to a local receiver.

    .venv/bin/python bench/webhook_bench.py [--calls 10000] [--latency-calls 600] [--postgres URL]

Every call is the recorded Asterisk 22 "answered" call (tests/fixtures/asterisk), renumbered,
fed to the AMI listener's real correlator and call writer in batches of 100 events (as the
listener's sink writes them), on SQLite (and PostgreSQL when given). Figures, all measured in
this run:

* the listener's events/s without any webhook endpoint, and with an endpoint taking
  ``call.completed`` (the outbox rows written in the listener's transactions): the outbox's cost.
  Alternated twice, the best of each kept. Target: under 10 % lost. Also by the listener
  thread's CPU time (``time.thread_time``), which a shared machine's load disturbs less.
* deliveries/s: the real delivery worker (``webhooks.worker.Worker``, default concurrency)
  sending the --calls events to a local aiohttp receiver answering 200, beside the same receiver
  fed by a bare aiohttp client posting the same bodies with the same concurrency (no database, no
  signing): what the outbox, claims and records cost.
* call end to delivery: calls fed at a steady pace while the worker runs; for each call, from the
  commit of the listener's batch that ended it to the receiver getting its event (p50, p99).
  Target: p99 under 2 s with a healthy receiver; the worker's poll interval is printed beside.

Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import scratch_postgres

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiohttp import ClientSession, TCPConnector, web  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from ami_listener.correlator import Correlator, RawEvent  # noqa: E402
from ami_listener.sink import CallWriter  # noqa: E402
from config import DatabaseSettings, GeneralSettings, Settings, WebhookSettings  # noqa: E402
from schema import migrate  # noqa: E402
from schema.db import make_engine, make_session_factory  # noqa: E402
from schema.models import Call, OutboxEvent, WebhookDelivery  # noqa: E402
from tests.fixtures import ASTERISK  # noqa: E402
from tests.integration.webhook_helpers import answered_calls  # noqa: E402
from tracking.accounts import add_account, add_source  # noqa: E402
from tracking.numbers import NumberFields, add_number  # noqa: E402
from tracking.phone import try_normalize  # noqa: E402
from tracking.webhook_endpoints import add_endpoint  # noqa: E402
from webhooks.worker import Worker  # noqa: E402

BATCH = 100


def streams(calls: int) -> list[list[RawEvent]]:
    """*calls* answered calls, each its own events, numbered one sequence across them all."""
    seq = 0
    out = []
    for _, events in answered_calls(ASTERISK, calls):
        renumbered = []
        for e in events:
            seq += 1
            renumbered.append(e._replace(seq=seq))
        out.append(renumbered)
    return out


def prepare(url: str, endpoint: str | None) -> tuple[Settings, sessionmaker[Session]]:
    engine = make_engine(url)
    migrate.upgrade(engine)
    settings = Settings(
        general=GeneralSettings(data_dir=Path(tempfile.mkdtemp(prefix="webhook-bench-"))),
        database=DatabaseSettings(url=url),
        webhooks=dataclasses.replace(WebhookSettings(), allow_networks=("127.0.0.1/32",), poll_seconds=0.25),
    )
    factory = make_session_factory(engine)
    with factory.begin() as s:
        add_account(s, "Acme", "America/New_York")
        add_source(s, "Acme", "Google Ads")
        add_number(s, settings, NumberFields("+18005550100", "Acme", source="Google Ads", forward_to="PJSIP/100"))
        if endpoint:
            add_endpoint(s, "Acme", endpoint, ["call.completed"], "bench receiver")
    return settings, factory


def listen(
    factory: sessionmaker[Session],
    calls: list[list[RawEvent]],
    pace: float | None = None,
    cpu: list[float] | None = None,
) -> tuple[int, float, dict[str, float]]:
    """Feed the calls' events in batches; (events, seconds, linkedid -> commit time of the batch that closed it).

    With *pace* (calls per second), each call's events wait for its turn on the wall clock.
    """
    correlator = Correlator(lambda raw: try_normalize(raw, "US"))
    writer = CallWriter("pbx1")
    closed_at: dict[str, float] = {}
    pending = 0
    count = 0
    start = time.perf_counter()
    cpu_start = time.thread_time()

    def flush() -> None:
        snaps = correlator.take_changed()
        with factory() as s, s.begin():
            writer.write(s, snaps)
        now = time.time()
        for snap in snaps:
            if snap.closed:
                closed_at.setdefault(snap.linkedid, now)

    for n, events in enumerate(calls):
        if pace:
            due = start + n / pace
            while time.perf_counter() < due:
                time.sleep(min(0.005, max(due - time.perf_counter(), 0)))
        for event in events:
            correlator.feed(event)
            pending += 1
            count += 1
            if pending >= BATCH or (pace and event is events[-1]):
                flush()
                pending = 0
    if pending:
        flush()
    if cpu is not None:  # the listener thread's own CPU seconds: steadier than wall time on a shared machine
        cpu.append(time.thread_time() - cpu_start)
    return count, time.perf_counter() - start, closed_at


class Receiver:
    """A CRM that answers 200 at once and notes when each event arrived."""

    def __init__(self) -> None:
        self.got: dict[str, float] = {}
        self.linkedid: dict[str, str] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        event = json.loads(body)
        self.got.setdefault(event["id"], now)
        call = (event.get("data") or {}).get("call") or {}
        if call.get("linkedid"):
            self.linkedid[event["id"]] = call["linkedid"]
        return web.Response(text="ok")

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def worker_thread(settings: Settings, factory: sessionmaker[Session]) -> tuple[threading.Thread, Any]:
    """The delivery worker on a thread and event loop of its own, as `calltrack serve` runs it."""
    box: dict[str, Any] = {}
    ready = threading.Event()

    def main() -> None:
        async def run() -> None:
            box["loop"] = asyncio.get_running_loop()
            box["stop"] = asyncio.Event()
            ready.set()
            await Worker(settings, factory).run(box["stop"])

        asyncio.run(run())

    thread = threading.Thread(target=main, name="webhooks", daemon=True)
    thread.start()
    ready.wait(10)

    def stop() -> None:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(60)

    return thread, stop


def delivered(factory: sessionmaker[Session]) -> int:
    with factory() as s:
        return int(
            s.scalar(select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.state == "delivered")) or 0
        )


async def wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def bare_client(url: str, bodies: list[bytes], concurrency: int) -> float:
    """Deliveries/s of a plain aiohttp client posting *bodies* with *concurrency* requests in flight."""
    queue = list(bodies)
    start = time.perf_counter()
    async with ClientSession(connector=TCPConnector(limit=concurrency)) as client:

        async def one() -> None:
            while queue:
                body = queue.pop()
                async with client.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    await r.read()

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return len(bodies) / (time.perf_counter() - start)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def more_calls(factory: sessionmaker[Session], total: int) -> None:
    """Copies of the completed calls (new linkedids) up to *total*, announced as the listener does.

    ``tracking.outbox.announce_calls`` in batches of 100 calls, each in its own transaction: the
    statement the listener's batch runs, without replaying a million more AMI events.
    """
    from sqlalchemy import insert

    from tracking.outbox import CALL_COMPLETED, announce_calls

    table: Any = Call.__table__
    columns = [c for c in table.c if c.name not in ("id", "linkedid")]
    with factory() as s:
        have = int(s.scalar(select(func.count()).select_from(table)) or 0)
    copy = 0
    while have < total:
        copy += 1
        with factory() as s, s.begin():
            source = select(*columns, (table.c.linkedid + f"-copy{copy}").label("linkedid")).limit(total - have)
            s.execute(insert(table).from_select([c.name for c in columns] + ["linkedid"], source))
            have = int(s.scalar(select(func.count()).select_from(table)) or 0)
    with factory() as s:
        unannounced = list(
            s.scalars(
                select(table.c.id).where(
                    ~table.c.id.in_(select(OutboxEvent.call_id).where(OutboxEvent.call_id.is_not(None)))
                )
            )
        )
    for start in range(0, len(unannounced), 100):
        with factory() as s, s.begin():
            announce_calls(s, CALL_COMPLETED, unannounced[start : start + 100])


async def run_backend(name: str, make_url: Any, calls: int, listener_calls: int, latency_calls: int) -> None:
    print(f"\n== {name}")
    fed = streams(listener_calls)
    events_total = sum(len(c) for c in fed)
    print(
        f"listener: {listener_calls} answered calls, {events_total} AMI events ({events_total // listener_calls} a call)"
    )
    async with Receiver() as crm:
        # listener events/s without and with an endpoint, alternated; the last "with" run fills the outbox
        rates: dict[str, list[float]] = {"without": [], "with": []}
        cpu_rates: dict[str, list[float]] = {"without": [], "with": []}
        factory_with: sessionmaker[Session] | None = None
        settings_with: Settings | None = None
        for _ in range(2):
            for mode in ("without", "with"):
                settings, factory = prepare(make_url(), crm.url if mode == "with" else None)
                cpu: list[float] = []
                count, seconds, _ = await asyncio.to_thread(listen, factory, fed, None, cpu)
                rates[mode].append(count / seconds)
                cpu_rates[mode].append(count / cpu[0])
                if mode == "with":
                    factory_with, settings_with = factory, settings
        assert factory_with is not None and settings_with is not None
        without, with_ = max(rates["without"]), max(rates["with"])
        runs = f"{', '.join(f'{r:,.0f}' for r in rates['without'])} / {', '.join(f'{r:,.0f}' for r in rates['with'])}"
        print(
            f"listener: {without:,.0f} events/s without an endpoint, {with_:,.0f} with one (runs: {runs}); "
            f"outbox cost {100 * (1 - with_ / without):.1f} % (target < 10 %)"
        )
        cpu_without, cpu_with = max(cpu_rates["without"]), max(cpu_rates["with"])
        print(
            f"listener CPU: {cpu_without:,.0f} events per CPU second of its thread without an endpoint, "
            f"{cpu_with:,.0f} with one; outbox cost by CPU {100 * (1 - cpu_with / cpu_without):.1f} %"
        )
        await asyncio.to_thread(more_calls, factory_with, calls)
        with factory_with() as s:
            events = int(s.scalar(select(func.count()).select_from(OutboxEvent)) or 0)
            completed = int(s.scalar(select(func.count()).select_from(Call).where(Call.ended_at.is_not(None))) or 0)
        print(f"outbox: {events} call.completed events for {completed} completed calls")

        # deliveries/s: the worker drains the outbox
        start = time.perf_counter()
        _, stop = worker_thread(settings_with, factory_with)
        done = await wait_for(lambda: delivered(factory_with) >= events, timeout=1200)
        seconds = time.perf_counter() - start
        stop()
        with factory_with() as s:
            bodies = [b.encode() for b in s.scalars(select(OutboxEvent.body)) if b]
        concurrency = settings_with.webhooks.per_endpoint  # one endpoint: per_endpoint requests in flight
        bare = await bare_client(crm.url, bodies, concurrency)
        got = delivered(factory_with)
        print(
            f"deliveries: {got / seconds:,.0f}/s through the outbox ({got} of {events} in {seconds:.1f} s"
            f"{'' if done else ', TIMED OUT'}), beside {bare:,.0f}/s from a bare aiohttp client with the same "
            f"{concurrency} requests in flight: {got / seconds / bare:.2f}x"
        )

        # call end to delivery, the worker running while calls arrive at a steady pace
        settings, factory = prepare(make_url(), crm.url)
        crm.got.clear()
        crm.linkedid.clear()
        paced = streams(latency_calls)
        pace = 20.0
        _, stop = worker_thread(settings, factory)
        _, seconds, closed_at = await asyncio.to_thread(listen, factory, paced, pace)
        await wait_for(lambda: len(crm.got) >= len(closed_at), timeout=120)
        stop()
        lags = [crm.got[e] - closed_at[lid] for e, lid in crm.linkedid.items() if lid in closed_at and e in crm.got]
        if lags:
            print(
                f"call end to delivery ({len(lags)} calls at {pace:.0f} calls/s): "
                f"p50 {1000 * statistics.median(lags):.0f} ms, p99 {1000 * pct(lags, 99):.0f} ms, "
                f"max {1000 * max(lags):.0f} ms (target p99 < 2000 ms; "
                f"the worker polls every {1000 * settings.webhooks.poll_seconds:.0f} ms)"
            )
        else:
            print("call end to delivery: no deliveries arrived")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000, help="completed calls delivered through the outbox")
    parser.add_argument("--listener-calls", type=int, default=1000, help="calls fed to the listener, per run")
    parser.add_argument("--latency-calls", type=int, default=600)
    parser.add_argument("--postgres", help="a PostgreSQL server URL to run on as well")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
    counter = iter(range(1_000_000))
    asyncio.run(
        run_backend(
            "SQLite",
            lambda: f"sqlite:///{folder / f'bench{next(counter)}.sqlite3'}",
            args.calls,
            args.listener_calls,
            args.latency_calls,
        )
    )
    if args.postgres:
        with contextlib.ExitStack() as stack:
            asyncio.run(
                run_backend(
                    "PostgreSQL",
                    lambda: stack.enter_context(scratch_postgres(args.postgres)),
                    args.calls,
                    args.listener_calls,
                    args.latency_calls,
                )
            )


if __name__ == "__main__":
    main()
