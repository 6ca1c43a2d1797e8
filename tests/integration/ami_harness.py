"""Shared by the AMI listener integration tests: run the listener against the fake server,
read back what reached the database, make the database go away for real."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url

from ami_listener.listener import AmiListener
from ami_listener.parser import parse_buffer
from ami_listener.sink import keep
from config import AmiServer, AmiSettings, Settings
from schema.db import make_engine, make_session_factory
from schema.models import AmiEvent, Call, CallEvent, CallLeg
from tests.fakes.ami_server import (  # noqa: F401  (SCENARIOS is re-exported for the tests)
    SCENARIOS,
    FakeAmiServer,
    Frame,
    call_frames,
    epoch_of,
    load_capture,
    with_timestamps,
)

#: what the listener stores of its own connections (not Asterisk's call events)
RESYNC_EVENTS = {"FullyBooted", "CoreShowChannel", "CoreShowChannelsComplete", "CalltrackConnectionLost"}


def frames(scenario: str, traffic: Path) -> list[Frame]:
    """A capture's events after login, with Timestamp headers from its timeline."""
    recorded = load_capture(scenario, traffic)
    return with_timestamps(call_frames(recorded), epoch_of(recorded))


def kept_payloads(stream: Sequence[Frame]) -> list[dict[str, Any]]:
    """What the listener must store of *stream*: every message the noise filter keeps, in order."""
    messages, rest = parse_buffer(b"".join(f.data for f in stream))
    assert rest == b""
    return [m for m in messages if keep(m)]


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Harness:
    """One listener process (in-process) pointed at a fake server."""

    def __init__(
        self,
        settings: Settings,
        database_url: str,
        fake: FakeAmiServer,
        secret_file: Path,
        system: str = "pbx1",
        cdr_csv: str = "",
    ) -> None:
        self.settings = settings.replace(ami=AmiSettings(batch_size=200, queue_size=5000, reconnect_max_seconds=0.5))
        self.engine = make_engine(database_url, connect_timeout=1)
        self.server = AmiServer(
            name=system,
            host="127.0.0.1",
            port=fake.port,
            username=fake.username,
            secret_file=str(secret_file),
            cdr_csv=cdr_csv,
        )
        self.system = system
        self.listener = AmiListener(
            self.settings,
            make_session_factory(self.engine),
            (self.server,),
            reconnect_min=0.05,
            spool_fsync=False,
        )
        for conn in self.listener.connections:
            conn.sink.retry_seconds = 0.3
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def sink(self) -> Any:
        return self.listener.connections[0].sink

    @property
    def client(self) -> Any:
        return self.listener.connections[0].client

    async def __aenter__(self) -> Harness:
        self.task = asyncio.create_task(self.listener.run(self.stop_event))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        self.stop_event.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)
            self.task = None
        self.engine.dispose()


def stored_payloads(engine: Engine, system: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(AmiEvent.payload).where(AmiEvent.system == system).order_by(AmiEvent.seq)).scalars()
        return list(rows)


def stored_call_events(engine: Engine, system: str) -> list[dict[str, Any]]:
    """Stored payloads minus the listener's own resynchronisation traffic."""
    return [
        p for p in stored_payloads(engine, system) if p.get("Event") is not None and p.get("Event") not in RESYNC_EVENTS
    ]


def calls_of(engine: Engine, system: str) -> dict[str, dict[str, Any]]:
    """Each call of *system* by linkedid, with its legs and timeline, without ids and write times."""
    out: dict[str, dict[str, Any]] = {}
    skip = {"id", "system", "created_at", "updated_at"}
    with engine.connect() as conn:
        for row in conn.execute(select(Call).where(Call.system == system)).mappings():
            call = {k: v for k, v in row.items() if k not in skip}
            legs = conn.execute(
                select(CallLeg).where(CallLeg.call_id == row["id"]).order_by(CallLeg.uniqueid)
            ).mappings()
            call["legs"] = [{k: v for k, v in leg.items() if k not in ("id", "call_id")} for leg in legs]
            events = conn.execute(
                select(CallEvent).where(CallEvent.call_id == row["id"]).order_by(CallEvent.at, CallEvent.id)
            ).mappings()
            call["timeline"] = [(e["at"], e["kind"], e["detail"]) for e in events]
            out[row["linkedid"]] = call
    return out


class DatabaseOutage:
    """Makes the real database unavailable to the listener, and available again.

    PostgreSQL: the listener connects through a TCP relay that this object cuts
    (open connections reset, new ones refused).  SQLite: another connection
    holds an exclusive write lock, so every write waits and fails "database is
    locked".
    """

    def __init__(self, database_url: str) -> None:
        self.url = make_url(database_url)
        self.backend = self.url.get_backend_name()
        self._relay: asyncio.base_events.Server | None = None
        self._down = False
        self._pipes: list[asyncio.StreamWriter] = []
        self._lock: sqlite3.Connection | None = None

    async def start(self) -> str:
        """The URL the listener must use."""
        if self.backend != "postgresql":
            return self.url.render_as_string(hide_password=False)
        self._relay = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        port = self._relay.sockets[0].getsockname()[1]
        return self.url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.url.host or "127.0.0.1", self.url.port or 5432)
        except OSError:
            writer.close()
            return
        self._pipes += [writer, up_writer]

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))

    def down(self) -> None:
        self._down = True
        if self.backend == "postgresql":
            for w in self._pipes:
                w.transport.abort()
            self._pipes.clear()
        else:
            path = self.url.database
            assert path
            self._lock = sqlite3.connect(path, timeout=5, isolation_level=None)
            self._lock.execute("BEGIN EXCLUSIVE")

    def up(self) -> None:
        self._down = False
        if self._lock is not None:
            self._lock.execute("ROLLBACK")
            self._lock.close()
            self._lock = None

    async def close(self) -> None:
        self.up()
        for w in self._pipes:
            w.close()
        if self._relay is not None:
            self._relay.close()
            await self._relay.wait_closed()


@contextlib.contextmanager
def secret(tmp_path: Path, value: str = "s3cret") -> Iterator[Path]:
    path = tmp_path / "ami.secret"
    path.write_text(value + "\n")
    yield path
