"""systemd's service notifications and watchdog (sd_notify(3)), with the standard library.

Under ``Type=notify`` the serve commands send ``READY=1`` once every service accepts
work (the FastAGI server listens only after it warmed up), ``STOPPING=1`` when a stop
begins, and with ``WatchdogSec=`` a ``WATCHDOG=1`` ping every quarter of the interval
from a task on the event loop. Every service runs on that one loop, so a loop that
is blocked, or a process stopped by SIGSTOP, stops the pings, and systemd kills the
service with WatchdogSignal (SIGABRT: :mod:`faulthandler` prints every thread's stack
first) and restarts it (``Restart=on-failure``). A ping is also skipped while a
service says it is unhealthy (the FastAGI server not listening).

The protocol is one datagram per message, ``KEY=VALUE`` lines, to the AF_UNIX socket
named by ``$NOTIFY_SOCKET`` (a leading ``@`` is an abstract socket); the watchdog
interval comes in ``$WATCHDOG_USEC`` and applies when ``$WATCHDOG_PID`` is unset or
this process. Written here rather than taken from a library: the one pure-Python
package (sdnotify) is unmaintained since 2017 and swallows every error, and
systemd-python needs libsystemd's headers to build.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; does nothing when the process was not started by systemd with a socket."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if address.startswith("@"):
            self.address = b"\0" + address[1:].encode()
        elif address.startswith("/"):
            self.address = address
        self.watchdog_seconds = 0.0
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_seconds = int(usec) / 1_000_000
        self._socket: socket.socket | None = None
        self._failed = False
        #: STOPPING=1 was sent
        self.stopping = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send one message (``READY=1``, ``STATUS=...``); False when there is nowhere to send it or it failed."""
        if self.address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(lines).encode("utf-8"), self.address)
        except OSError as exc:
            if not self._failed:  # said once: systemd restarting the socket must not flood the log
                logger.warning("systemd notification to %r failed: %s", self.address, exc)
                self._failed = True
            return False
        self._failed = False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


async def watchdog(notifier: Notifier, stop: asyncio.Event, healthy: Callable[[], str]) -> None:
    """Ping systemd's watchdog from the event loop until *stop*; *healthy* returns "" or what is wrong."""
    interval = notifier.watchdog_seconds / 4
    if interval <= 0:
        return
    logger.info("systemd watchdog: pinging every %.1f s (WatchdogSec=%g)", interval, notifier.watchdog_seconds)
    complaint = ""
    while not stop.is_set():
        problem = healthy()
        if not problem:
            notifier.notify("WATCHDOG=1")
        elif problem != complaint:
            logger.error("systemd watchdog: not pinging, %s", problem)
        complaint = problem
        started = time.monotonic()
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass
        late = time.monotonic() - started - interval
        if late > interval:  # the loop was held up: say where the time went before systemd acts
            logger.warning("systemd watchdog: the event loop was blocked for %.1f s", late + interval)
