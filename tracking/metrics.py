"""Prometheus metrics of a calltrack process (served as text by the web service's ``/metrics``).

Three kinds, by where the figure lives:

- counters and the route's latency histogram, counted in this process as things happen
  (:data:`ROUTES`, :data:`ROUTE_SECONDS`, :data:`DNI_SESSIONS`...): a
  Prometheus counter belongs to one process, so these sit in this module's registry;
- figures a running service knows (the AMI listener's event counts, backlog and spool, which
  services are up): the service registers a function with :func:`watch`, called at each
  scrape, so counting costs its hot path nothing more than it counted already;
- figures the database and the spool folders hold (recordings by state, live leases and
  overflows per pool, files waiting in the spools): read at each scrape by
  :class:`StoredState`, the same in every process that serves them.

``prometheus_client`` is imported by the long-running services only: the classic AGI
script and the CLI never import this module.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from config import Settings

logger = logging.getLogger(__name__)

#: the classic text format, which every Prometheus version reads (prometheus_client's latest is 1.0.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REGISTRY = CollectorRegistry(auto_describe=False)

ROUTES = Counter("calltrack_routes", "FastAGI route decisions, by CALLTRACK_STATUS", ["status"], registry=REGISTRY)
ROUTE_FALLBACKS = Counter(
    "calltrack_route_fallbacks",
    "Calls routed to the fallback destination, by cause (deadline: the database did not answer in time)",
    ["cause"],
    registry=REGISTRY,
)
ROUTE_SECONDS = Histogram(
    "calltrack_route_seconds",
    "Time from a FastAGI route request's inputs to its dialplan variables being sent",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
    registry=REGISTRY,
)
DNI_SESSIONS = Counter(
    "calltrack_dni_sessions",
    "DNI session requests answered, by what the visitor was shown (leased, overflow, source, private)",
    ["shown"],
    registry=REGISTRY,
)
DNI_HEARTBEATS = Counter(
    "calltrack_dni_heartbeats", "DNI heartbeats, by result (kept, ended)", ["result"], registry=REGISTRY
)

Source = Callable[[], Iterable[Metric]]


class _Watched(Collector):
    """Figures the running services know, asked for at each scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[str, Source] = {}

    def add(self, name: str, source: Source) -> None:
        with self._lock:
            self._sources[name] = source

    def remove(self, name: str) -> None:
        with self._lock:
            self._sources.pop(name, None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            sources = list(self._sources.items())
        for name, source in sources:
            try:
                yield from source()
            except Exception:  # one broken source must not hide the others
                logger.exception("metrics source %s failed", name)


_WATCHED = _Watched()
REGISTRY.register(_WATCHED)


def watch(name: str, source: Source) -> None:
    """Call *source* at every scrape for its metric families (replaces an earlier one of that name)."""
    _WATCHED.add(name, source)


def unwatch(name: str) -> None:
    _WATCHED.remove(name)


def services_up(states: Callable[[], dict[str, bool]]) -> Source:
    """A source of ``calltrack_service_up{service}`` from a function answering {name: up}."""

    def collect() -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "calltrack_service_up", "1 while the service runs and is healthy", labels=["service"]
        )
        for name, up in sorted(states().items()):
            family.add_metric([name], 1.0 if up else 0.0)
        yield family

    return collect


class StoredState(Collector):
    """What the database and the spool folders hold, read when scraped."""

    def __init__(self, engine: Engine, settings: Settings, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def collect(self) -> Iterator[Metric]:
        yield from self._database()
        yield from self._spools()

    def _database(self) -> Iterator[Metric]:
        from sqlalchemy import func, select

        from schema.models import Account, NumberPool, Recording, TrackingNumber
        from tracking.pools import overflow_counts

        up = GaugeMetricFamily("calltrack_database_up", "1 when the database answered this scrape's queries")
        now = self.clock()
        try:
            with self.engine.connect() as conn:
                states = conn.execute(select(Recording.state, func.count()).group_by(Recording.state)).all()
                pools = conn.execute(
                    select(Account.name, NumberPool.name, NumberPool.id).join(
                        Account, Account.id == NumberPool.account_id
                    )
                ).all()
                overflow = overflow_counts(conn)
                live = dict(
                    conn.execute(
                        select(TrackingNumber.pool_id, func.count())
                        .where(TrackingNumber.pool_id.is_not(None), TrackingNumber.last_leased_at > now)
                        .group_by(TrackingNumber.pool_id)
                    ).all()
                )
        except Exception as exc:
            logger.warning("metrics: the database did not answer: %s", exc)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        recordings = GaugeMetricFamily("calltrack_recordings", "Recordings by state", labels=["state"])
        for state, count in sorted(states):
            recordings.add_metric([state], float(count))
        yield recordings
        leases = GaugeMetricFamily(
            "calltrack_pool_leases_live", "Numbers of the pool leased to a visitor now", labels=["account", "pool"]
        )
        overflows = CounterMetricFamily(
            "calltrack_pool_overflows",
            "Visitors shown the overflow number because every number of the pool was leased",
            labels=["account", "pool"],
        )
        for account, pool, pool_id in sorted(pools):
            leases.add_metric([account, pool], float(live.get(pool_id, 0)))
            overflows.add_metric([account, pool], float(overflow.get(pool_id, 0)))
        yield leases
        yield overflows

    def _spools(self) -> Iterator[Metric]:
        files = GaugeMetricFamily("calltrack_spool_files", "Files waiting in a spool folder", labels=["spool"])
        size = GaugeMetricFamily("calltrack_spool_bytes", "Bytes waiting in a spool folder", labels=["spool"])
        settings = self.settings
        folders = {
            "recorder": Path(settings.recorder.spool_dir),
            "agi": Path(settings.agi.spool_dir) if settings.agi.spool_dir else settings.general.data_dir / "agi-spool",
        }
        for name, folder in folders.items():
            count, total = _folder_size(folder)
            files.add_metric([name], float(count))
            size.add_metric([name], float(total))
        yield files
        yield size


def _folder_size(folder: Path) -> tuple[int, int]:
    """(files, bytes) directly in *folder*; (0, 0) when it is missing or unreadable."""
    count = total = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        count += 1
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    except OSError:
        return 0, 0
    return count, total


def render(stored: StoredState | None = None) -> bytes:
    """The Prometheus text exposition: this process's counters and watched figures, then *stored*."""
    body = generate_latest(REGISTRY)
    if stored is not None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(stored)
        body += generate_latest(registry)
    return body
