"""`calltrack serve` wiring: services run together and stop together."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

from calltrack.services import run_services


class Worker:
    def __init__(self, name: str, fail_after: float | None = None) -> None:
        self.name = name
        self.fail_after = fail_after
        self.finished_cleanly = False
        self.started = False
        self.reloads = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.started = True
        if self.fail_after is not None:
            await asyncio.sleep(self.fail_after)
            raise RuntimeError(f"{self.name} broke")
        await stop.wait()
        await asyncio.sleep(0.01)  # work in flight finishes after the stop
        self.finished_cleanly = True

    def reload(self) -> None:
        self.reloads += 1


async def until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def test_sighup_reloads_and_sigterm_stops_every_service_cleanly() -> None:
    services = [Worker("a"), Worker("b")]

    async def administrator() -> None:
        # signals only once every service runs (the handlers are in place by then), one after the other
        try:
            await until(lambda: all(s.started for s in services), "the services to start")
            os.kill(os.getpid(), signal.SIGHUP)
            await until(lambda: all(s.reloads for s in services), "the reload")
            assert not any(s.finished_cleanly for s in services)  # a reload is not a stop
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    signals = asyncio.create_task(administrator())
    assert await run_services(services) == 0
    await signals
    assert all(s.finished_cleanly for s in services)
    assert [s.reloads for s in services] == [1, 1]


async def test_one_failing_service_stops_the_others_and_fails() -> None:
    healthy = Worker("healthy")
    assert await run_services([healthy, Worker("broken", fail_after=0.01)]) == 1
    assert healthy.finished_cleanly


class BusyPort(Worker):
    async def run(self, stop: asyncio.Event) -> None:
        raise OSError(98, "Address already in use")


async def test_an_expected_failure_is_one_line_without_traceback(caplog) -> None:  # type: ignore[no-untyped-def]
    healthy = Worker("healthy")
    assert await run_services([healthy, BusyPort("web")]) == 1
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.getMessage() == "service web stopped: [Errno 98] Address already in use"
    assert record.exc_info is None
    assert healthy.finished_cleanly


class Draining(Worker):
    """Takes a while to finish after its stop (the FastAGI server finishing the calls in flight)."""

    def __init__(self, name: str, log: list[str], drain: asyncio.Event | None = None) -> None:
        super().__init__(name)
        self.log = log
        self.drain = drain

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.log.append(f"{self.name} told to stop")
        if self.drain is not None:
            await self.drain.wait()
        self.log.append(f"{self.name} stopped")


async def test_stop_order_agi_drains_first_and_the_listener_stops_last() -> None:
    log: list[str] = []
    drained = asyncio.Event()
    services = [Draining("ami", log), Draining("web", log), Draining("agi", log, drained), Draining("recorder", log)]
    stop = asyncio.Event()
    runner = asyncio.create_task(run_services(services, stop))
    stop.set()
    while "agi told to stop" not in log:
        await asyncio.sleep(0)
    for _ in range(20):
        await asyncio.sleep(0)
    assert log == ["agi told to stop"]  # web, recorder and the listener keep running while calls are routed
    drained.set()
    assert await runner == 0
    assert log.index("agi stopped") < log.index("web told to stop")
    assert log.index("web stopped") < log.index("ami told to stop")
    assert log.index("recorder stopped") < log.index("ami told to stop")
    assert log[-2:] == ["ami told to stop", "ami stopped"]


class Starting:
    """A service that builds what it keeps for its whole life, then says it has started."""

    name = "starting"

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.kept: list[object] = []
        self.made_later: list[object] = []

    async def run(self, stop: asyncio.Event) -> None:
        self.kept.append([Worker("compiled") for _ in range(10)])
        await asyncio.sleep(0.01)
        self.started.set()
        await asyncio.sleep(0.2)  # serving
        self.made_later.append([Worker("request")])
        await stop.wait()

    def reload(self) -> None:
        pass


async def test_what_the_services_hold_once_started_is_left_out_of_full_collections() -> None:
    """A full collection walked every module, cache and compiled statement again (30-60 ms with the
    loop stopped, bench/dni_bench.py's p99); once every service has started they are frozen."""
    import gc

    service = Starting()
    stop = asyncio.Event()
    task = asyncio.create_task(run_services([service], stop))
    try:
        await until(lambda: bool(service.made_later), "the service to serve")
        tracked = {id(o) for o in gc.get_objects()}
        assert id(service.kept[0]) not in tracked, "what the service built before it started is frozen"
        assert id(service.made_later[0]) in tracked, "what it makes while serving is collected as usual"
    finally:
        stop.set()
        assert await task == 0
        gc.unfreeze()
