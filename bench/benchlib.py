"""What the benchmarks share: a scratch PostgreSQL database, the fake Asterisk side of AGI sessions.

The benchmarks run as scripts (``python bench/NAME.py``), so this folder is on
``sys.path`` and they import this module by its bare name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def scratch_postgres(base: str, prefix: str = "calltrack_bench") -> Iterator[str]:
    """A new empty database on *base*'s server, as a URL; dropped afterwards (even when in use)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(make_url(base).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield (
                make_url(base).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
            )
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextlib.contextmanager
def postgres_or_none(base: str | None, prefix: str = "calltrack_bench") -> Iterator[str | None]:
    """:func:`scratch_postgres` on *base*, or None when no *base* is given or its server refuses (said)."""
    if not base:
        yield None
        return
    with contextlib.ExitStack() as stack:
        try:
            url: str | None = stack.enter_context(scratch_postgres(base, prefix))
        except Exception as exc:
            print(f"\n== PostgreSQL skipped: {str(exc).splitlines()[0]}")
            url = None
        yield url


# --- driving AGI sessions: the load generator plays Asterisk --------------------------------------


class FakeAgiSession(asyncio.Protocol):
    """One FastAGI session as Asterisk plays it, kept cheap so the server is what is measured.

    Sends *env* (the AGI environment) on connect, answers every ``SET VARIABLE`` with
    ``200 result=1`` (noting the value of ``SET VARIABLE {status_variable}`` as the session's
    status, after *status_prefix*), every other command line with :meth:`answer`; the
    session's status resolves *done* when the server hangs up.
    """

    status_variable = "CALLTRACK_STATUS"
    status_prefix = ""

    def __init__(self, env: bytes, done: asyncio.Future[str]) -> None:
        self.env = env
        self.done = done
        self.buffer = b""
        self.status = "none"
        self.transport: asyncio.Transport | None = None
        self._status_line = f"SET VARIABLE {self.status_variable} ".encode()

    def answer(self, line: bytes) -> bytes:
        """The reply to one command line other than SET VARIABLE."""
        return b"510 Invalid or unknown command\n"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.env)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data
        out = []
        while True:
            i = buf.find(b"\n")
            if i < 0:
                break
            line, buf = buf[:i], buf[i + 1 :]
            if line.startswith(b"SET VARIABLE"):
                if line.startswith(self._status_line):
                    self.status = self.status_prefix + line[len(self._status_line) :].strip(b'"').decode()
                out.append(b"200 result=1\n")
            else:
                out.append(self.answer(line))
        self.buffer = buf
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.status)


def load_summary(latencies: list[float], statuses: Counter[str], elapsed: float) -> dict[str, object]:
    """Sessions/s, p50/p99 latency (ms) and statuses of one measured run."""
    lat = sorted(latencies)
    return {
        "rate": len(lat) / elapsed,
        "p50": lat[len(lat) // 2] * 1000 if lat else float("nan"),
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan"),
        "statuses": dict(statuses),
        "elapsed": elapsed,
        "sessions": len(lat),
    }


def warmup_seconds(seconds: float) -> float:
    return min(0.5, seconds / 4)


async def closed_loop(concurrency: int, seconds: float, one: Callable[[int, int], Awaitable[str]]) -> dict[str, object]:
    """*concurrency* clients, each starting a session (``one(n, worker)``, its status) when its last
    one ended; a short warm-up (:func:`warmup_seconds`), then *seconds* measured."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    counter = [0]
    stop_at = [0.0]

    async def worker(wid: int) -> None:
        while time.perf_counter() < stop_at[0]:
            counter[0] += 1
            started = time.perf_counter()
            statuses[await one(counter[0], wid)] += 1
            latencies.append(time.perf_counter() - started)

    stop_at[0] = time.perf_counter() + warmup_seconds(seconds)
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    latencies.clear()
    statuses.clear()
    started = time.perf_counter()
    stop_at[0] = started + seconds
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return load_summary(latencies, statuses, time.perf_counter() - started)


@contextlib.contextmanager
def agi_server(python: str, environ: dict[str, str], log_path: Path) -> Iterator[tuple[int, int]]:
    """``calltrack agi serve`` in a process of its own, stderr to *log_path*: (port, pid) once it listens."""
    port = free_port()
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [python, "-m", "calltrack.main", "agi", "serve", "--listen", f"127.0.0.1:{port}"], env=environ, stderr=log
        )
        try:
            wait_port(port)
            yield port, server.pid
        finally:
            server.terminate()
            server.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process *pid* so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not start")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
