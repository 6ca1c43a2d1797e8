"""Benchmark of the DNI session API: 50 concurrent clients, a pool of 20 numbers.

    .venv/bin/python bench/dni_bench.py [--seconds 10] [--clients 50] [--speed 300] [--no-postgres | --no-sqlite]

The web service runs in its own process under uvicorn (as `calltrack web serve`
does), on SQLite and then on PostgreSQL (127.0.0.1:5432, or
CALLTRACK_TEST_POSTGRES_URL; skipped when unreachable).  Each client keeps one
HTTP/1.1 connection and loops: a new visitor's session, then one heartbeat for
it (a second run sends sessions only).  Time runs *speed* times faster inside
the service so the pool's one-minute hold ends within the run and numbers are
leased again (leases/s).  After each run the database is checked: no number may
have two leases that overlap.  The server runs as `calltrack web serve` runs it
(calltrack.services.serve_blocking: uvloop where installed, the heap settled once
it serves).

The baseline, measured in the same run with the same client: the same
framework and server answering a static JSON response.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import scratch_postgres

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ORIGIN = "https://bench.example"
POOL_SIZE = 20
HOLD_MINUTES = 1


# --- the server process -------------------------------------------------------------------------


def serve(database_url: str, port: int, speed: float, static: bool) -> None:
    """Run in the child process: the DNI app (or the static baseline) as `calltrack web serve` runs it."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from calltrack.services import serve_blocking
    from config import DatabaseSettings, GeneralSettings, Settings, WebSettings
    from schema.db import make_engine
    from web.app import create_app
    from web.service import WebService

    settings = Settings(
        general=GeneralSettings(log_level="WARNING"),
        database=DatabaseSettings(url=database_url),
        web=WebSettings(rate_limit_per_minute=10_000_000),
    )
    if static:
        body = json.dumps({"number": "+14045550100", "display": "(404) 555-0100", "session": "x" * 22}).encode()

        async def answer(request: object) -> Response:
            return Response(body, media_type="application/json")

        app: object = Starlette(routes=[Route("/dni/v1/session", answer, methods=["POST"])])
    else:
        start_real = time.monotonic()
        start = max(dt.datetime.now(dt.UTC), latest_lease_end(database_url))  # after the previous run's leases

        def clock() -> dt.datetime:
            return start + dt.timedelta(seconds=(time.monotonic() - start_real) * speed)

        app = create_app(settings, make_engine(database_url), clock=clock, sqlite_inline=True)

    class Service(WebService):
        def build_app(self) -> object:
            return app

    # as `calltrack web serve` runs it: the only service in its process, on the same event loop
    # (uvloop where installed) and with the same start-up (calltrack.services.serve_blocking)
    raise SystemExit(serve_blocking([Service(settings, None, f"127.0.0.1:{port}", alone=True)]))


# --- the client ---------------------------------------------------------------------------------


@dataclass
class Stats:
    session: list[float] = field(default_factory=list)
    heartbeat: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


async def request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: bytes
) -> tuple[int, bytes]:
    writer.write(
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {ORIGIN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


async def client(port: int, key: str, until: float, stats: Stats, heartbeat: bool) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    url = f"{ORIGIN}/?utm_source=google"
    try:
        while time.perf_counter() < until:
            body = json.dumps({"account": key, "visitor": None, "url": url, "referrer": ""}).encode()
            t0 = time.perf_counter()
            status, answer = await request(reader, writer, "/dni/v1/session", body)
            stats.session.append(time.perf_counter() - t0)
            stats.statuses[status] = stats.statuses.get(status, 0) + 1
            if not heartbeat or status != 200:
                continue
            session = json.loads(answer)["session"]
            beat = json.dumps({"account": key, "session": session}).encode()
            t0 = time.perf_counter()
            status, _ = await request(reader, writer, "/dni/v1/heartbeat", beat)
            stats.heartbeat.append(time.perf_counter() - t0)
            stats.statuses[status] = stats.statuses.get(status, 0) + 1
    finally:
        writer.close()


async def drive(port: int, key: str, clients: int, seconds: float, heartbeat: bool) -> tuple[Stats, float]:
    stats = Stats()
    start = time.perf_counter()
    until = start + seconds
    await asyncio.gather(*(client(port, key, until, stats, heartbeat) for _ in range(clients)))
    return stats, time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# --- set-up and checks --------------------------------------------------------------------------


def prepare(database_url: str, pool_size: int = POOL_SIZE, account: str = "Bench", first: int = 5550200) -> str:
    """Account *account* with a site, a rule and a pool "bench" of *pool_size* numbers from +1404{first}; its key."""
    from sqlalchemy.orm import sessionmaker

    from config import Settings
    from schema import migrate
    from schema.db import make_engine
    from tracking.accounts import add_account, add_source
    from tracking.pools import add_numbers, create_pool
    from tracking.sites import add_site
    from tracking.source_rules import add_rule

    engine = make_engine(database_url)
    migrate.upgrade(engine)
    settings = Settings()
    with sessionmaker(bind=engine).begin() as s:
        key = add_account(s, account).public_key
        add_source(s, account, "Ads")
        create_pool(s, settings, "bench", account, HOLD_MINUTES, source="Ads", overflow="+14045550199")
        add_numbers(
            s, settings, "bench", account, [f"+1404{n:07d}" for n in range(first, first + pool_size)], "PJSIP/1"
        )
        add_site(s, account, ORIGIN)
        add_rule(s, account, "param", "utm_source=google", "Ads")
    engine.dispose()
    return key


def latest_lease_end(database_url: str) -> dt.datetime:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from schema.db import make_engine
    from schema.models import PoolLease

    engine = make_engine(database_url)
    with Session(engine) as s:
        latest = s.scalar(select(func.max(PoolLease.expires_at)))
    engine.dispose()
    return latest or dt.datetime.now(dt.UTC)


def check(database_url: str, account: str = "Bench") -> tuple[int, int, int, int]:
    """(leases, overlapping pairs, overflow count, peak) of *account*'s pool after a run."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from schema.db import make_engine
    from schema.models import Account, NumberPool, PoolLease
    from tracking.leases import find_double_leases
    from tracking.pools import overflow_counts

    engine = make_engine(database_url)
    with Session(engine) as s:
        pool = s.scalars(
            select(NumberPool)
            .join(Account, Account.id == NumberPool.account_id)
            .where(NumberPool.name == "bench", Account.name == account)
        ).one()
        leases = s.scalar(select(func.count()).select_from(PoolLease).where(PoolLease.pool_id == pool.id)) or 0
        doubles = len(find_double_leases(s, pool.id))
        result = (leases, doubles, overflow_counts(s).get(pool.id, 0), pool.peak_leases)
    engine.dispose()
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(database_url: str, speed: float, static: bool) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    args = [sys.executable, __file__, "--serve", database_url, "--port", str(port), "--speed", str(speed)]
    if static:
        args.append("--static")
    proc = subprocess.Popen(args, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the benchmark server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_one(
    label: str,
    database_url: str,
    key: str,
    args: argparse.Namespace,
    *,
    static: bool = False,
    heartbeat: bool = True,
    baseline: float = 0.0,
) -> float:
    """One run; prints its line and returns its sessions/s (beside *baseline*, the static JSON rate)."""
    heartbeat = heartbeat and not static
    proc, port = start_server(database_url, args.speed, static)
    try:
        asyncio.run(drive(port, key, args.clients, 1.0, heartbeat))  # warm-up
        before = check(database_url) if not static else (0, 0, 0, 0)
        stats, elapsed = asyncio.run(drive(port, key, args.clients, args.seconds, heartbeat))
    finally:
        stop_server(proc)
    line = (
        f"{label:<31} sessions {len(stats.session) / elapsed:6.0f}/s p50 {pct(stats.session, 0.5):5.1f} ms"
        f" p99 {pct(stats.session, 0.99):5.1f} ms"
    )
    rate = len(stats.session) / elapsed
    if static:
        print(line + f"  (statuses {stats.statuses})")
        return rate
    leases, doubles, overflows, peak = check(database_url)
    if heartbeat:
        line += (
            f" | heartbeats {len(stats.heartbeat) / elapsed:5.0f}/s p50 {pct(stats.heartbeat, 0.5):5.1f} ms"
            f" p99 {pct(stats.heartbeat, 0.99):5.1f} ms"
        )
    line += f" | leases {(leases - before[0]) / elapsed:5.1f}/s, overflows {overflows - before[2]}, peak {peak}"
    print(line)
    verdict = "OK" if doubles == 0 else f"FAILED: {doubles} overlapping pairs"
    print(f"{'':<31} no number leased twice at once ({leases} leases checked): {verdict}; statuses {stats.statuses}")
    p99 = pct(stats.session, 0.99)
    print(
        f"{'':<31} sessions = {rate / baseline:.3f} of static JSON (target >= 0.25), p99 {p99:.0f} ms (target < 50 ms)"
    )
    return rate


def speed_note(speed: float) -> str:
    """What the clock speed-up changes, said beside the figures it changes."""
    if speed == 1:
        return (
            f"service clock: real time (a {HOLD_MINUTES}-minute hold lasts {HOLD_MINUTES} minutes; once the pool's "
            f"{POOL_SIZE} numbers are leased, every new session gets the overflow number)"
        )
    real = HOLD_MINUTES * 60 / speed
    return (
        f"service clock: {speed:g}x real time, so a {HOLD_MINUTES}-minute hold ends after {real:.2f} s of real time and"
        f" numbers are leased again within the run (leases/s); a number whose hold is shorter than the time a"
        f" heartbeat takes to come back is lost to its visitor (status 410): with --speed 1 holds are real"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--speed", type=float, default=300.0, help="service clock speed-up (300: a 1-minute hold lasts 0.2 s)"
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only (beside the static baseline)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--static", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.speed, args.static)
        return

    import platform

    print(
        f"DNI benchmark: {args.clients} clients, pool of {POOL_SIZE}, {args.seconds:.0f} s per run, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(speed_note(args.speed))
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.sqlite3"
        key = prepare(url)
        static = run_one("baseline: static JSON", url, key, args, static=True)
        if not args.no_sqlite:
            run_one("SQLite, sessions only", url, key, args, heartbeat=False, baseline=static)
            run_one("SQLite, session + heartbeat", url, key, args, baseline=static)
    if args.no_postgres:
        return
    pg_url = os.environ.get("CALLTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(scratch_postgres(pg_url))
        except Exception as exc:  # not reachable: say so and stop
            print(f"PostgreSQL skipped: {str(exc).splitlines()[0]}")
            return
        key = prepare(url)
        run_one("PostgreSQL, sessions only", url, key, args, heartbeat=False, baseline=static)
        run_one("PostgreSQL, session + heartbeat", url, key, args, baseline=static)


if __name__ == "__main__":
    main()
