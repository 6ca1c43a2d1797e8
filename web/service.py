"""Running the web application under uvicorn, alone or inside `calltrack serve`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from sqlalchemy import Engine

from config import Settings

logger = logging.getLogger(__name__)


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"listen address must be HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the caller decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def uvicorn_config(app: Any, listen: str, *, log_level: str = "info") -> uvicorn.Config:
    host, port = split_listen(listen)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        # X-Forwarded-* are read by the application, and only from web.trusted_proxies
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_level=log_level.lower(),
        # calltrack's own logging format for uvicorn's lines too (set up by the command)
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )


class WebService:
    """The DNI script and API as a `calltrack serve` service."""

    name = "web"

    def __init__(
        self, settings: Settings, engine: Engine | None = None, listen: str | None = None, *, alone: bool = False
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.listen = listen or settings.web.listen
        #: the only service on its event loop (`calltrack web serve`), so SQLite work may run on it
        self.alone = alone
        self.server: _Server | None = None
        self.sock: socket.socket | None = None
        #: set once uvicorn serves (its application built and started)
        self.started = asyncio.Event()

    def build_app(self) -> Any:
        from web.app import create_app

        return create_app(self.settings, self.engine, sqlite_inline=self.alone)

    def bind(self) -> socket.socket:
        """The listening socket (made here, so a busy port is an OSError, not uvicorn's sys.exit)."""
        if self.sock is None:
            host, port = split_listen(self.listen)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(2048)
            except OSError:
                sock.close()
                raise
            sock.setblocking(False)
            self.sock = sock
        return self.sock

    async def run(self, stop: asyncio.Event) -> None:
        try:
            sock = self.bind()
        except OSError as exc:
            raise RuntimeError(f"the web service cannot listen on {self.listen}: {exc.strerror or exc}") from None
        config = uvicorn_config(self.build_app(), self.listen, log_level=self.settings.general.log_level)
        self.server = _Server(config)
        task = asyncio.create_task(self.server.serve(sockets=[sock]), name="web-uvicorn")
        while not self.server.started and not task.done() and not stop.is_set():
            await asyncio.sleep(0.02)
        if self.server.started:
            self.started.set()
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            self.server.should_exit = True
            await task
        else:
            stopper.cancel()
            task.result()
            if not self.server.started:
                raise RuntimeError(f"the web service could not start on {self.listen}")
        sock.close()
        self.sock = None

    def reload(self) -> None:
        logger.info("web: nothing to reload (site and rule changes are read within seconds)")

    @property
    def port(self) -> int | None:
        """The port actually bound (useful with port 0), once started."""
        if self.server is None or not self.server.started:
            return None
        for server in getattr(self.server, "servers", ()):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return None


def factory(app: Any) -> WebService:
    """`calltrack serve` entry: the web service always runs (it listens on web.listen)."""
    return WebService(app.settings, app.engine)
