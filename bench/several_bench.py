"""Benchmark: one and two processes of each kind on one PostgreSQL, side by side.

    .venv/bin/python bench/several_bench.py [--seconds 5] [--postgres URL]

Each server is a real `calltrack` process with its product defaults, on a scratch database of
the PostgreSQL server (127.0.0.1:5432 unless --postgres or CALLTRACK_TEST_POSTGRES_URL):

- DNI sessions: 50 HTTP clients (dni_bench's), spread over one, then two, `calltrack web
  serve` workers; a pool of 3,000 numbers holding each lease its real minute, so sessions
  lease numbers (no clock speed-up) and the check afterwards finds no number leased twice;
- routes: 20 fake Asterisk clients (agi_bench's, the sample dialplan's address form) spread
  over one, then two, `calltrack agi serve` servers on 200 numbers; every call row must be there
  once;
- AMI listeners: one, then two, `calltrack ami listen` processes, one per Asterisk system, each
  fed by its own fake AMI server (a separate process, real TCP, full speed) replaying the recorded
  Asterisk 22 calls renumbered into --ami-calls calls; the time is until the last call of every
  system is closed in the database, and each system must end with every call closed, once (the time includes each listener's start-up).

The load generators run in this process (one asyncio loop). On a machine with fewer cores than
processes the second process shares the cores of the first, so the figure says what a second
process adds here, not on a larger server.  Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agi_bench import load as agi_load
from agi_bench import make_database
from ami_bench import serve as ami_serve
from benchlib import scratch_postgres
from dni_bench import Stats, check, client, pct, prepare

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def servers(args: list[list[str]], env: dict[str, str], folder: Path) -> Iterator[list[int]]:
    """Start `calltrack ARGS --listen 127.0.0.1:PORT` for each ARGS; yields the ports."""
    procs, ports = [], []
    try:
        for n, argv in enumerate(args):
            port = free_port()
            log = open(folder / f"server{n}.log", "ab")
            procs.append(
                subprocess.Popen(
                    [PY, "-m", "calltrack.main", *argv, "--listen", f"127.0.0.1:{port}"],
                    env=env,
                    stdout=log,
                    stderr=log,
                )
            )
            log.close()
            ports.append(port)
        for port in ports:
            wait_port(port)
        yield ports
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


@dataclass
class AmiRun:
    elapsed: float  # until the last call of every system closed
    sent: int  # events the fake servers sent, in all
    closed: list[int]  # per system: calls with an end
    rows: list[tuple[int, int]]  # per system: call rows, distinct linkedids
    stored: list[int]  # per system: raw AMI events stored
    codes: list[int]  # the listeners' exit codes after SIGTERM

    @property
    def whole(self) -> bool:
        """Every call of every system closed, none twice."""
        return all(
            total == distinct == closed for (total, distinct), closed in zip(self.rows, self.closed, strict=True)
        )


def ami_run(count: int, calls: int, url: str, env: dict[str, str], folder: Path, seq: int) -> AmiRun:
    """*count* listeners, one per system, each fed *calls* calls; figures once every call is closed."""
    from sqlalchemy import func, select

    from schema.db import make_engine
    from schema.models import AmiEvent, Call

    ctx = mp.get_context("fork")
    stop = ctx.Event()
    feeds, streams = [], []
    for _ in range(count):
        ports: mp.Queue[tuple[int, int]] = ctx.Queue()
        feed = ctx.Process(target=ami_serve, args=(calls, ports, stop), daemon=True)
        feed.start()
        feeds.append(feed)
        streams.append(ports.get(timeout=300))
    systems = [f"pbx{seq}{chr(97 + n)}" for n in range(count)]
    secret = folder / "ami-secret"
    secret.write_text("s3cret")
    engine = make_engine(url)
    procs = []
    try:
        started = time.perf_counter()
        for system, (port, _events) in zip(systems, streams, strict=True):
            config = folder / f"{system}.toml"
            config.write_text(
                f'[general]\ndata_dir = "{folder / system}"\nsystem_name = "{system}"\nlog_level = "WARNING"\n'
                f'[[ami.servers]]\nname = "{system}"\nhost = "127.0.0.1"\nport = {port}\n'
                f'username = "calltrack"\nsecret_file = "{secret}"\n'
            )
            log = open(folder / f"{system}.log", "ab")
            procs.append(
                subprocess.Popen(
                    [PY, "-m", "calltrack.main", "ami", "listen"],
                    env={**env, "CALLTRACK_CONFIG": str(config)},
                    stdout=log,
                    stderr=log,
                )
            )
            log.close()
        closed = select(Call.system, func.count()).where(Call.system.in_(systems), Call.ended_at.is_not(None))
        last: dict[str, int] = {}
        changed = time.perf_counter()
        # done when every system has closed calls and none has closed another for 5 s (at most 15 min)
        while len(last) < count or time.perf_counter() - changed < 5.0:
            if time.perf_counter() - started > 900:
                break
            time.sleep(0.1)
            with engine.connect() as conn:
                now = {system: n for system, n in conn.execute(closed.group_by(Call.system))}
            if now != last:
                last, changed = now, time.perf_counter()
        elapsed = changed - started
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(30))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        with engine.connect() as conn:
            per_system = select(Call.system, func.count(), func.count(func.distinct(Call.linkedid)))
            rows = {
                system: (total, distinct)
                for system, total, distinct in conn.execute(
                    per_system.where(Call.system.in_(systems)).group_by(Call.system)
                )
            }
            by_system = select(AmiEvent.system, func.count()).where(AmiEvent.system.in_(systems))
            stored = {system: n for system, n in conn.execute(by_system.group_by(AmiEvent.system))}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        stop.set()
        for feed in feeds:
            feed.join(10)
        engine.dispose()
    return AmiRun(
        elapsed=elapsed,
        sent=sum(events for _port, events in streams),
        closed=[last.get(s, 0) for s in systems],
        rows=[rows.get(s, (0, 0)) for s in systems],
        stored=[stored.get(s, 0) for s in systems],
        codes=codes,
    )


async def dni_load(ports: list[int], key: str, clients: int, seconds: float) -> tuple[Stats, float]:
    stats = Stats()
    warm = time.perf_counter() + 1.0
    await asyncio.gather(*(client(ports[i % len(ports)], key, warm, Stats(), False) for i in range(clients)))
    start = time.perf_counter()
    until = start + seconds
    await asyncio.gather(*(client(ports[i % len(ports)], key, until, stats, False) for i in range(clients)))
    return stats, time.perf_counter() - start


async def route_load(ports: list[int], numbers: list[str], clients: int, seconds: float) -> list[dict[str, object]]:
    per = max(1, clients // len(ports))
    return list(await asyncio.gather(*(agi_load(p, per, seconds, numbers, form="address") for p in ports)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--postgres", default=os.environ.get("CALLTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--ami-calls", type=int, default=1000, help="calls per Asterisk system in the AMI part")
    parser.add_argument(
        "--parts", default="dni,routes,ami", help="which parts to run, comma-separated (default: dni,routes,ami)"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not parts or parts - {"dni", "routes", "ami"}:
        parser.error(f"--parts: choose from dni, routes, ami (got {args.parts!r})")
    print(f"several processes on one PostgreSQL: {args.seconds:g} s per run, {os.cpu_count()} CPUs, product defaults")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        try:
            url = stack.enter_context(scratch_postgres(args.postgres, "calltrack_several"))
        except Exception as exc:
            print(f"PostgreSQL unreachable: {str(exc).splitlines()[0]}")
            return
        config = folder / "calltrack.toml"
        config.write_text(
            f'[general]\ndata_dir = "{folder / "data"}"\nlog_level = "WARNING"\n'
            f'[web]\nrate_limit_per_minute = 10000000\n[agi]\nfallback_dial = "PJSIP/operator"\n'
            f'[recorder]\nspool_dir = "{folder / "monitor"}"\n'
        )
        env = {**os.environ, "CALLTRACK_CONFIG": str(config), "CALLTRACK_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
        _, numbers = make_database(folder, url=url)
        if "dni" in parts:
            dni_part(url, env, folder, args.seconds)
        if "routes" in parts:
            routes_part(numbers, env, folder, args.seconds)
        if "ami" in parts:
            ami_part(url, env, folder, args.ami_calls)


def dni_part(url: str, env: dict[str, str], folder: Path, seconds: float) -> None:
    print(
        "DNI sessions, 50 clients, `calltrack web serve` workers (real-time holds; each run its own account"
        " and a fresh pool of 3000, so both lease the same numbers' worth):"
    )
    dni_rates = []
    for count in (1, 2):
        account = f"Site{count}"
        key = prepare(url, pool_size=3000, account=account, first=5550200 + 10_000 * count)
        before = check(url, account)
        with servers([["web", "serve"]] * count, env, folder) as ports:
            stats, elapsed = asyncio.run(dni_load(ports, key, 50, seconds))
        leases, doubles, overflows, _ = check(url, account)
        rate = len(stats.session) / elapsed
        dni_rates.append(rate)
        print(
            f"  {count} worker{'s' if count > 1 else ' '}: {rate:6.0f} sessions/s  p50 {pct(stats.session, 0.5):6.1f} ms"
            f"  p99 {pct(stats.session, 0.99):6.1f} ms  leases {leases - before[0]} (warm-up included), overflows"
            f" {overflows - before[2]}; numbers leased twice at once: {doubles}; statuses {stats.statuses}"
        )
    print(f"  two workers / one: {dni_rates[1] / dni_rates[0]:.2f}x")


def routes_part(numbers: list[str], env: dict[str, str], folder: Path, seconds: float) -> None:
    print("routes, 20 clients, `calltrack agi serve` servers (address form, 250 numbers):")
    route_rates = []
    for count in (1, 2):
        with servers([["agi", "serve"]] * count, env, folder) as ports:
            results = asyncio.run(route_load(ports, numbers, 20, seconds))
        rate = sum(float(r["rate"]) for r in results)  # type: ignore[arg-type]
        route_rates.append(rate)
        statuses: dict[str, int] = {}
        for r in results:
            for status, n in r["statuses"].items():  # type: ignore[attr-defined]
                statuses[status] = statuses.get(status, 0) + n
        p99 = max(float(r["p99"]) for r in results)  # type: ignore[arg-type]
        print(
            f"  {count} server{'s' if count > 1 else ' '}: {rate:6.0f} routes/s  worst p99 {p99:6.1f} ms  statuses {statuses}"
        )
    print(f"  two servers / one: {route_rates[1] / route_rates[0]:.2f}x")


def ami_part(url: str, env: dict[str, str], folder: Path, calls: int) -> None:
    print(f"AMI listeners, `calltrack ami listen`, one per Asterisk system, {calls:,} calls each:")
    ami_rates = []
    for count in (1, 2):
        got = ami_run(count, calls, url, env, folder, count)
        ami_rates.append(got.sent / got.elapsed)
        print(
            f"  {count} listener{'s' if count > 1 else ' '}: {got.sent / got.elapsed:6.0f} events/s in all"
            f" ({got.sent:,} events in {got.elapsed:.1f} s)  calls closed per system {got.closed},"
            f" call rows (all, distinct) {got.rows}, raw events stored {got.stored};"
            f" every call closed once: {'yes' if got.whole else 'NO'}; exit codes {got.codes}"
        )
    print(f"  two listeners / one: {ami_rates[1] / ami_rates[0]:.2f}x")


if __name__ == "__main__":
    main()
