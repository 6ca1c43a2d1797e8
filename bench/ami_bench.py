"""AMI listener benchmark: parse, store and correlate a large recorded stream.

    .venv/bin/python bench/ami_bench.py [--calls 3000] [--postgres URL] [--no-postgres]

The stream is built from the real Asterisk 22 captures in tests/fixtures/asterisk/ami
(every scenario, renumbered so each copy is its own call, started 50 ms apart so
many calls overlap).  Figures printed, all measured in this run:

* parsing: calltrack's parser against panoramisk 1.4's own ``data_received``
  (with a no-op event callback) on the same bytes, in the same 64 KiB reads;
* end-to-end: the fake AMI server (a separate process, real TCP, full speed)
  feeding the listener, which stores raw events and calls in SQLite, then in
  PostgreSQL; events/s counts every event Asterisk sent, until the last call
  is written;
* peak memory (max RSS) of the listener process.

Targets: parsing >= 2x panoramisk (issue 4); end-to-end >= 0.4 of the parse-only rate of the
same run, with the listener's default settings (issue 15).
Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import scratch_postgres

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from ami_listener.listener import AmiListener  # noqa: E402
from ami_listener.parser import StreamParser  # noqa: E402
from calltrack.services import loop_factory, run_services  # noqa: E402
from config import AmiServer, AmiSettings, DatabaseSettings, GeneralSettings, Settings  # noqa: E402
from schema import migrate  # noqa: E402
from schema.db import make_engine, make_session_factory  # noqa: E402
from schema.models import AmiEvent, Call  # noqa: E402
from tests.fakes.ami_server import (  # noqa: E402
    SCENARIOS,
    FakeAmiServer,
    Frame,
    Plan,
    call_frames,
    epoch_of,
    load_capture,
    multiply,
    with_timestamps,
)

CHUNK = 65536


def build_stream(calls: int) -> list[Frame]:
    captures = []
    for s in SCENARIOS:
        recorded = load_capture(s)
        captures.append(with_timestamps(call_frames(recorded), epoch_of(recorded)))
    return multiply(captures, calls, spacing=0.05)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- parsing ---------------------------------------------------------------------


def bench_parsing(data: bytes, rounds: int = 5) -> tuple[float, float, int]:
    from panoramisk.ami_protocol import AMIProtocol

    class NoOpFactory:
        save_stream = None

        def dispatch(self, message: object) -> None:
            pass

    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]

    def pano() -> int:
        proto = AMIProtocol()
        proto.connection_made(None)
        proto.factory = NoOpFactory()
        proto.encoding = "utf8"
        count = 0
        original = proto.handle_message

        def handle(message: object) -> None:
            nonlocal count
            count += 1
            original(message)

        proto.handle_message = handle
        for c in chunks:
            proto.data_received(c)
        return count

    def ours() -> int:
        parser = StreamParser()
        count = 0
        for c in chunks:
            count += len(parser.feed(c))
        return count

    # alternate the two, so a neighbour's load hits both alike; keep each one's best round
    t_pano = t_ours = float("inf")
    n_pano = n_ours = 0
    for _ in range(rounds):
        gc.collect()
        t = time.perf_counter()
        n_pano = pano()
        t_pano = min(t_pano, time.perf_counter() - t)
        gc.collect()
        t = time.perf_counter()
        n_ours = ours()
        t_ours = min(t_ours, time.perf_counter() - t)
    if n_pano != n_ours:
        print(f"  note: panoramisk saw {n_pano} messages, calltrack {n_ours}")
    return t_pano, t_ours, n_ours


# -- end to end ----------------------------------------------------------------------


def serve(calls: int, port_queue: Any, stop: Any) -> None:
    stream = build_stream(calls)

    async def main() -> None:
        async with FakeAmiServer([Plan(frames=stream)]) as fake:
            port_queue.put((fake.port, sum(1 for f in stream if f.is_event)))
            while not stop.is_set():
                await asyncio.sleep(0.05)

    asyncio.run(main())


async def run_listener(
    url: str, port: int, events: int, workdir: Path, queue_size: int = AmiSettings.queue_size
) -> tuple[float, int, int, int]:
    # the product's defaults (batch_size, the Ping watchdog, spool fsync); only queue_size may be changed
    settings = Settings(
        general=GeneralSettings(data_dir=workdir),
        database=DatabaseSettings(url=url),
        ami=AmiSettings(queue_size=queue_size),
    )
    engine = make_engine(url)
    secret = workdir / "secret"
    secret.write_text("s3cret")
    server = AmiServer(name="bench", host="127.0.0.1", port=port, username="calltrack", secret_file=str(secret))
    listener = AmiListener(settings, make_session_factory(engine), (server,))
    sink = listener.connections[0].sink
    stop = asyncio.Event()
    started = time.perf_counter()
    # as `calltrack ami listen` runs it (calltrack.services.serve_blocking runs run_services)
    task = asyncio.create_task(run_services([listener], stop))
    while True:
        await asyncio.sleep(0.02)
        if (
            sink.received >= events
            and not sink.backlog
            and sink.stored + sink.filtered >= sink.received
            and not sink.spool.pending
        ):
            break
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    with engine.connect() as conn:
        stored = conn.scalar(select(func.count()).select_from(AmiEvent))
        calls = conn.scalar(select(func.count()).select_from(Call).where(Call.ended_at.is_not(None)))
    engine.dispose()
    return elapsed, sink.received, int(stored or 0), int(calls or 0)


def end_to_end(url: str, calls: int, workdir: Path, queue_size: int) -> tuple[float, int, int, int]:
    ctx = mp.get_context("fork")
    ports: Any = ctx.Queue()
    stop = ctx.Event()
    proc = ctx.Process(target=serve, args=(calls, ports, stop), daemon=True)
    proc.start()
    try:
        port, events = ports.get(timeout=120)
        # on the event loop `calltrack ami listen` runs on (calltrack.services.serve_blocking)
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(run_listener(url, port, events, workdir, queue_size))
    finally:
        stop.set()
        proc.join(10)


def default_settings(queue_size: int) -> str:
    ami = AmiSettings()
    queue = f"queue_size {queue_size}" + ("" if queue_size == ami.queue_size else " (changed by --queue-size)")
    loop = "uvloop" if loop_factory() is not None else "asyncio"
    return f"batch_size {ami.batch_size}, {queue}, Ping after 20 s of silence, spool fsync, {loop} as in the product"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=3000, help="calls in the stream (default 3000)")
    ap.add_argument(
        "--postgres", default=os.environ.get("CALLTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument(
        "--queue-size", type=int, default=AmiSettings.queue_size, help="[ami] queue_size (memory vs. spooling)"
    )
    args = ap.parse_args()

    # End to end first, while this process holds nothing but the listener: its peak RSS is the listener's.
    targets: list[tuple[str, str | None]] = [("SQLite", None)]
    if not args.no_postgres:
        targets.append(("PostgreSQL", args.postgres))
    results: list[tuple[str, float, str]] = []
    for label, base in targets:
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            work = Path(tmp)
            if base is None:
                url = f"sqlite:///{work / 'bench.sqlite3'}"
            else:
                try:
                    url = stack.enter_context(scratch_postgres(base))
                except Exception as exc:
                    results.append((label, 0.0, f"skipped ({str(exc).splitlines()[0]})"))
                    continue
            engine = make_engine(url)
            migrate.upgrade(engine)
            engine.dispose()
            elapsed, received, stored, calls = end_to_end(url, args.calls, work, args.queue_size)
            results.append(
                (
                    label,
                    received / elapsed,
                    f"({received} events in {elapsed:.2f} s; {stored} stored after the noise filter; {calls} calls closed)",
                )
            )
    listener_rss = rss_mb()

    stream = build_stream(args.calls)
    data = b"Asterisk Call Manager/11.0.0\r\n" + b"".join(f.data for f in stream)
    n_events = sum(1 for f in stream if f.is_event)
    print(f"stream: {args.calls} calls, {len(stream)} messages ({n_events} events), {len(data) / 1e6:.1f} MB")
    del stream
    t_pano, t_ours, n = bench_parsing(data)
    print("parsing (same bytes, 64 KiB reads, best of 5 alternating rounds):")
    print(f"  panoramisk 1.4 data_received, no-op callback: {n / t_pano:12,.0f} messages/s  ({t_pano:.2f} s)")
    print(f"  calltrack parse_buffer:                       {n / t_ours:12,.0f} messages/s  ({t_ours:.2f} s)")
    print(f"  ratio: {t_pano / t_ours:.2f}x panoramisk (target >= 2x)")
    print("end-to-end (fake Asterisk in another process over TCP -> parse -> store -> correlate -> calls),")
    print(
        f"  the listener's default settings ({default_settings(args.queue_size)}); beside the parse-only rate (target >= 0.4 of it):"
    )
    for label, rate, detail in results:
        if rate:
            print(f"  {label:10s}: {rate:10,.0f} events/s = {rate / (n / t_ours):.2f} of parse-only  {detail}")
        else:
            print(f"  {label:10s}: {detail}")
    print(
        f"peak memory of the listener process (max RSS, end-to-end runs, queue_size {args.queue_size}): {listener_rss:.0f} MB"
    )
    print(f"peak memory after the parsing benchmark (whole stream held in memory): {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
