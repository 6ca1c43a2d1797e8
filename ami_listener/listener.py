"""The AMI listener: one client and one sink per configured Asterisk server."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from ami_listener.cdr_csv import CdrFile
from ami_listener.client import AmiClient, read_secret
from ami_listener.correlator import Correlator
from ami_listener.sink import CallWriter, EventSink
from ami_listener.spool import Spool
from config import AmiServer, Settings
from tracking.phone import try_normalize

if TYPE_CHECKING:
    from prometheus_client.core import Metric

logger = logging.getLogger(__name__)


@dataclass
class Connection:
    server: AmiServer
    client: AmiClient
    sink: EventSink


class AmiListener:
    """Runs until stopped; on stop, everything received is stored or spooled."""

    name = "ami"

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        servers: tuple[AmiServer, ...] | None = None,
        *,
        reconnect_min: float = 0.5,
        ping_interval: float = 20.0,
        spool_fsync: bool = True,
    ) -> None:
        self.settings = settings
        self.connections: list[Connection] = []
        ami = settings.ami
        region = settings.numbers.default_region
        spool_dir = Path(settings.ami_spool_dir)
        grace = dt.timedelta(seconds=settings.tracking.attribution_grace_seconds)
        for server in servers if servers is not None else ami.servers:
            sink = EventSink(
                server.name,
                session_factory,
                Spool(spool_dir / f"{_safe(server.name)}.jsonl", fsync=spool_fsync),
                correlator=Correlator(functools.partial(_normalize, region=region)),
                writer=CallWriter(server.name, region, settings.privacy.geocode, grace),
                queue_size=ami.queue_size,
                batch_size=ami.batch_size,
                cdr=CdrFile(server.cdr_csv) if server.cdr_csv else None,
            )
            client = AmiClient(
                server.name,
                server.host,
                server.port,
                server.username,
                read_secret(server.secret, server.secret_file),
                sink.put,
                new_connection=sink.new_connection,
                tls=server.tls,
                ca_file=server.ca_file,
                reconnect_min=reconnect_min,
                reconnect_max=ami.reconnect_max_seconds,
                ping_interval=ping_interval,
            )
            self.connections.append(Connection(server, client, sink))

    def metrics(self) -> Iterable[Metric]:
        """Event counts, backlog and spool per Asterisk system, for ``/metrics`` (read when scraped)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        events = CounterMetricFamily(
            "calltrack_ami_events",
            "AMI events by what became of them (received; of those: filtered, stored, spooled)",
            labels=["system", "outcome"],
        )
        backlog = GaugeMetricFamily(
            "calltrack_ami_backlog", "Events received and waiting for the database writer", labels=["system"]
        )
        spool = GaugeMetricFamily(
            "calltrack_ami_spool_bytes", "Bytes of events waiting in the AMI spool file", labels=["system"]
        )
        failures = CounterMetricFamily(
            "calltrack_ami_database_failures", "Event batches the database refused", labels=["system"]
        )
        for c in self.connections:
            name, sink = c.server.name, c.sink
            for outcome, count in (
                ("received", sink.received),
                ("filtered", sink.filtered),
                ("stored", sink.stored),
                ("spooled", sink.spooled),
            ):
                events.add_metric([name, outcome], float(count))
            backlog.add_metric([name], float(sink.backlog + sink.held_for_retry))
            spool.add_metric([name], float(sink.spool.pending_bytes))
            failures.add_metric([name], float(sink.db_failures))
        return [events, backlog, spool, failures]

    async def run(self, stop: asyncio.Event) -> None:
        from tracking import metrics

        metrics.watch("ami", self.metrics)
        try:
            await self._run(stop)
        finally:
            metrics.unwatch("ami")

    async def _run(self, stop: asyncio.Event) -> None:
        hang_up = asyncio.Event()
        reading = asyncio.Event()
        tasks = [asyncio.create_task(c.client.run(hang_up), name=f"ami-read-{c.server.name}") for c in self.connections]
        writers = [
            asyncio.create_task(c.sink.run(reading), name=f"ami-write-{c.server.name}") for c in self.connections
        ]
        lingering = asyncio.create_task(self._stop_when_settled(stop, hang_up), name="ami-stop")
        try:
            await asyncio.gather(*tasks)
        finally:
            lingering.cancel()
            for task in tasks:
                task.cancel()
            # the sockets are closed: let the writers store (or spool) what was read, then stop
            reading.set()
            await asyncio.gather(*writers, return_exceptions=True)
            for c in self.connections:
                c.sink.spool.close()

    async def _stop_when_settled(self, stop: asyncio.Event, hang_up: asyncio.Event) -> None:
        """After *stop*, keep reading while calls ring or are being routed (at most ``stop_wait_seconds``).

        A call routed while calltrack stops is answered a few seconds after its AGI returned: the
        listener, stopped last, is still there to see it.
        """
        await stop.wait()
        wait = self.settings.ami.stop_wait_seconds
        deadline = time.monotonic() + wait
        # only the calls ringing now: on a busy server new calls would never let it stop
        ringing = [(c.sink, c.sink.unsettled) for c in self.connections]

        def waiting() -> int:
            return sum(len(calls & sink.unsettled) for sink, calls in ringing)

        if wait > 0 and waiting():
            logger.info(
                "AMI listener: stopping once %d ringing call(s) are answered or end (at most %g s)", waiting(), wait
            )
            while waiting() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        hang_up.set()

    def reload(self) -> None:
        logger.info("AMI listener: settings changes need a restart (servers are read at start)")


@functools.lru_cache(maxsize=4096)
def _normalize(raw: str, region: str) -> str | None:
    # every snapshot of a call normalises its dialled number: a handful of tracking numbers, remembered
    return try_normalize(raw, region)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "asterisk"
