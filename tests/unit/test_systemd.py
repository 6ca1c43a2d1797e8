"""systemd notifications and the watchdog (issue 9, item 9), on a real unix datagram socket as systemd binds it."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from calltrack.services import run_services
from calltrack.systemd import Notifier, watchdog


class Systemd:
    """The manager's end: a bound AF_UNIX datagram socket, as $NOTIFY_SOCKET names it."""

    def __init__(self, path: Path | None = None, abstract: str = "") -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            self.sock.bind("\0" + abstract)
            self.address = "@" + abstract
        else:
            assert path is not None
            self.sock.bind(str(path))
            self.address = str(path)

    def environ(self, watchdog_usec: int = 0, pid: int | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": self.address}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
            env["WATCHDOG_PID"] = str(os.getpid() if pid is None else pid)
        return env

    def receive(self, timeout: float = 10.0) -> str | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except TimeoutError:
            return None

    def until(self, text: str, timeout: float = 10.0) -> list[str]:
        """Messages up to and including the first holding *text*."""
        seen = []
        while True:
            message = self.receive(timeout)
            assert message is not None, f"no {text!r} from the service; saw {seen}"
            seen.append(message)
            if text in message:
                return seen

    def drain(self) -> None:
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(4096)
        except BlockingIOError:
            pass


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[Systemd]:
    manager = Systemd(tmp_path / "notify")
    yield manager
    manager.sock.close()


def test_notify_sends_datagrams_to_the_socket(systemd: Systemd) -> None:
    notifier = Notifier(systemd.environ())
    assert notifier.notify("READY=1", "STATUS=serving")
    assert systemd.receive() == "READY=1\nSTATUS=serving"


def test_abstract_socket_names() -> None:
    manager = Systemd(abstract=f"calltrack-test-{os.getpid()}")
    try:
        assert Notifier(manager.environ()).notify("WATCHDOG=1")
        assert manager.receive() == "WATCHDOG=1"
    finally:
        manager.sock.close()


def test_without_systemd_nothing_is_sent_and_nothing_fails(tmp_path: Path) -> None:
    assert not Notifier({}).enabled and not Notifier({}).notify("READY=1")
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert gone.enabled and not gone.notify("READY=1")  # logged once, no exception


def test_watchdog_interval_only_for_this_process(systemd: Systemd) -> None:
    assert Notifier(systemd.environ(watchdog_usec=4_000_000)).watchdog_seconds == 4.0
    assert Notifier(systemd.environ(watchdog_usec=4_000_000, pid=os.getpid() + 1)).watchdog_seconds == 0


async def test_no_ping_while_a_service_is_unhealthy(systemd: Systemd) -> None:
    notifier = Notifier(systemd.environ(watchdog_usec=200_000))
    stop = asyncio.Event()
    problem = ["the FastAGI server is not listening"]
    task = asyncio.create_task(watchdog(notifier, stop, lambda: problem[0]))
    try:
        assert await asyncio.to_thread(systemd.receive, 0.5) is None  # 10 intervals of silence
        problem[0] = ""
        assert await asyncio.to_thread(systemd.receive) == "WATCHDOG=1"
    finally:
        stop.set()
        await task


class LoopBlocker:
    """A service that, when asked, blocks the event loop it runs on (as a stuck call would)."""

    name = "blocker"

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.block = threading.Event()
        self.blocking = threading.Event()
        self.release = threading.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self.started.set()
        while not stop.is_set():
            if self.block.is_set():
                self.block.clear()
                self.blocking.set()
                self.release.wait(30)  # the loop itself waits here: nothing else runs
                self.blocking.clear()
            await asyncio.sleep(0.01)

    def reload(self) -> None:
        pass


def test_ready_pings_and_a_blocked_loop_stops_them(systemd: Systemd, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in systemd.environ(watchdog_usec=400_000).items():  # a ping every 0.1 s
        monkeypatch.setenv(key, value)
    service = LoopBlocker()
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=lambda: loop.run_until_complete(run_services([service], stop)))
    thread.start()
    try:
        assert "READY=1" in systemd.until("READY=1")[-1]
        systemd.until("WATCHDOG=1")
        systemd.until("WATCHDOG=1")
        service.block.set()
        assert service.blocking.wait(10)
        systemd.drain()  # pings sent before the loop stopped
        assert systemd.receive(1.0) is None  # ten intervals, no ping: systemd would act
        service.release.set()
        systemd.until("WATCHDOG=1")  # the loop runs again, so do the pings
    finally:
        service.release.set()
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
    assert "STOPPING=1" in systemd.until("STOPPING=1")[-1]
