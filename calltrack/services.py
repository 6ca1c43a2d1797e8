"""Long-running services that `calltrack serve` runs together in one process.

Each entry names a factory ``factory(app) -> Service | None``; a factory returns
None when its service is not configured (no AMI server, say).  The list is
explicit: a service is added here by the issue that builds it.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from calltrack.context import AppContext

from calltrack.systemd import Notifier, watchdog
from tracking.errors import TrackingError

logger = logging.getLogger(__name__)


class Service(Protocol):
    name: str

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until *stop* is set, then finish the work in flight and return."""

    def reload(self) -> None:
        """Re-read what can change without a restart (SIGHUP)."""


# name -> "module:factory"
SERVICES: dict[str, str] = {
    "agi": "calltrack.commands.agi:service",
    "ami": "calltrack.commands.ami:service",
    "web": "web.service:factory",
    "recorder": "recorder.service:make_service",
    "lookup": "lookups.service:factory",
    "webhooks": "webhooks.service:factory",
    "transcriber": "transcriber.service:make_service",
    "leads": "calltrack.leads_service:make_service",
}


def build_services(app: AppContext, only: Sequence[str] = ()) -> list[Service]:
    unknown = [name for name in only if name not in SERVICES]
    if unknown:
        raise ValueError(f"unknown service(s): {', '.join(unknown)}; known: {', '.join(SERVICES) or 'none'}")
    services = []
    for name, target in SERVICES.items():
        if only and name not in only:
            continue
        module, _, attr = target.partition(":")
        factory = getattr(importlib.import_module(module), attr)
        service = factory(app)
        if service is not None:
            services.append(service)
    return services


def describe(service: Service) -> str:
    """What a service listens on or watches, for the start-up line of `calltrack serve`."""
    name = service.name
    listen = getattr(service, "listen", None)
    if name == "agi" and listen:
        return f"agi (FastAGI on {listen})"
    if name == "web" and listen:
        return f"web (http://{listen}/)"
    if name == "ami":
        servers = [c.server for c in getattr(service, "connections", ())]
        if servers:
            where = [f"{s.name} at {'tls://' if s.tls else ''}{s.host}:{s.port}" for s in servers]
            return f"ami ({', '.join(where)})"
    if name == "lookup":
        provider = getattr(service, "provider", None)
        return f"lookup ({getattr(provider, 'name', '?')}, HTTPS)"
    if name == "recorder":
        settings = getattr(service, "settings", None)
        if settings is not None:
            return f"recorder (spool {settings.recorder.spool_dir})"
    return name


def serve_blocking(services: Sequence[Service]) -> int:
    """Run *services* in this thread until they stop; on uvloop when it is installed.

    uvloop's event loop roughly halves the CPU per FastAGI session and per web request.
    """
    import faulthandler

    # systemd's watchdog kills a stalled service with SIGABRT: say where every thread was
    faulthandler.enable()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(run_services(services))


def loop_factory() -> Any:
    """The event loop the services run on: uvloop's where it is installed, else asyncio's (None)."""
    try:
        import uvloop
    except ImportError:  # not on every platform
        return None
    return uvloop.new_event_loop


def _reload_all(services: Sequence[Service]) -> None:
    for service in services:
        try:
            service.reload()
        except Exception:
            logger.exception("service %s failed to reload", service.name)


#: the order services stop in on SIGTERM: each stage has finished before the next is told to stop.
#: The FastAGI server drains first (calls being routed get their answer and their row), the AMI
#: listener last, so it still records what those calls do next; unknown services stop in the middle.
STOP_ORDER: dict[str, int] = {"agi": 0, "web": 1, "recorder": 1, "ami": 2}


def stop_stage(service: Service) -> int:
    return STOP_ORDER.get(service.name, 1)


async def run_services(services: Sequence[Service], stop: asyncio.Event | None = None) -> int:
    """Run *services* until SIGTERM/SIGINT (or *stop*); 0 on a clean stop, 1 if one failed.

    Stopping goes by :data:`STOP_ORDER`: each service gets its own stop event, set once every
    service of the earlier stages has returned.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        loop.add_signal_handler(signal.SIGHUP, _reload_all, services)
        installed.append(signal.SIGHUP)
    except (NotImplementedError, RuntimeError):
        pass
    failed = False
    stages = sorted({stop_stage(s) for s in services})
    stage_stop = {stage: asyncio.Event() for stage in stages}
    tasks = {asyncio.create_task(s.run(stage_stop[stop_stage(s)]), name=s.name): s for s in services}
    sequencer = asyncio.create_task(_stop_in_order(stop, tasks, stage_stop), name="stop-in-order")
    notifier = Notifier()
    _watch_services(tasks)
    helpers = [
        sequencer,
        asyncio.create_task(_tell_systemd(notifier, services, stop)),
        asyncio.create_task(watchdog(notifier, stop, lambda: _health(services))),
    ]
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.cancelled():
                    continue
                exc = task.exception()
                if exc is not None:
                    failed = True
                    if isinstance(exc, OSError | TrackingError):  # a busy port, a missing folder: said in one line
                        logger.error("service %s stopped: %s", task.get_name(), exc)
                    else:
                        logger.error("service %s failed: %s", task.get_name(), exc, exc_info=exc)
                elif not stop.is_set():
                    logger.info("service %s ended", task.get_name())
                if failed:
                    stop.set()
    finally:
        _unwatch_services()
        for helper in helpers:
            helper.cancel()
        if not notifier.stopping:  # a service failed before any stop was asked
            notifier.notify("STOPPING=1")
        notifier.close()
        for sig in installed:
            loop.remove_signal_handler(sig)
    return 1 if failed else 0


def _watch_services(tasks: dict[asyncio.Task[None], Service]) -> None:
    """``calltrack_service_up`` for /metrics: 1 while a service runs and says it is healthy."""
    from tracking import metrics

    def states() -> dict[str, bool]:
        out = {}
        for task, service in list(tasks.items()):
            health = getattr(service, "health", None)
            out[service.name] = not task.done() and not (health() if callable(health) else "")
        return out

    metrics.watch("services", metrics.services_up(states))


def _unwatch_services() -> None:
    from tracking import metrics

    metrics.unwatch("services")


async def _tell_systemd(notifier: Notifier, services: Sequence[Service], stop: asyncio.Event) -> None:
    """READY=1 once every service accepts work (those with a ``started`` event have set it), STOPPING=1 at stop."""
    for service in services:
        started = getattr(service, "started", None)
        if isinstance(started, asyncio.Event):
            await started.wait()
    settle_heap()
    notifier.notify("READY=1", f"STATUS=serving: {', '.join(s.name for s in services)}")
    await stop.wait()
    notifier.stopping = True
    notifier.notify("STOPPING=1", "STATUS=stopping: finishing the work in flight")


def settle_heap() -> None:
    """Once the services have started: what the process holds by then is kept out of Python's collector.

    Modules, settings, caches and compiled statements live as long as the process, yet every
    full collection walked them again: 30-60 ms with the event loop stopped, several times a
    second under load (bench/dni_bench.py's p99 was those pauses).  Frozen (``gc.freeze``),
    a full collection walks only what was made since, a few ms.  Nothing is leaked: frozen
    objects are still freed by reference counting; only a cycle among them would stay.
    """
    gc.collect()
    gc.freeze()


def _health(services: Sequence[Service]) -> str:
    """ "" when every service that can tell says it is healthy, else what is wrong."""
    for service in services:
        health = getattr(service, "health", None)
        problem = health() if callable(health) else ""
        if problem:
            return f"{service.name}: {problem}"
    return ""


async def _stop_in_order(
    stop: asyncio.Event, tasks: dict[asyncio.Task[None], Service], stage_stop: dict[int, asyncio.Event]
) -> None:
    await stop.wait()
    stages = sorted(stage_stop)
    if len(stages) > 1:
        logger.info(
            "stopping %s",
            ", then ".join(" and ".join(s.name for s in tasks.values() if stop_stage(s) == stage) for stage in stages),
        )
    for stage in stages:
        stage_stop[stage].set()
        running = [task for task, service in tasks.items() if stop_stage(service) == stage]
        if running:
            await asyncio.wait(running)
