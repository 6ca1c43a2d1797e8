"""Benchmark: one and two processes of each kind on one PostgreSQL, side by side.

    .venv/bin/python bench/several_bench.py [--seconds 5] [--postgres URL]

Each server is a real `calltrack` process with its product defaults, on a scratch database of
the PostgreSQL server (127.0.0.1:5432 unless --postgres or CALLTRACK_TEST_POSTGRES_URL):

- DNI sessions: 50 HTTP clients (dni_bench's), spread over one, then two, `calltrack web
  serve` workers; a pool of 3,000 numbers holding each lease its real minute, so sessions
  lease numbers (no clock speed-up) and the check afterwards finds no number leased twice;
- routes: 20 fake Asterisk clients (agi_bench's, the sample dialplan's address form) spread
  over one, then two, `calltrack agi serve` servers on 200 numbers; every call row must be there
  once.

The load generators run in this process (one asyncio loop). On a machine with fewer cores than
processes the second process shares the cores of the first, so the figure says what a second
process adds here, not on a larger server.  Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from agi_bench import load as agi_load
from agi_bench import make_database
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
    args = parser.parse_args()
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
        key = prepare(url, pool_size=3000, account="Site")

        print("DNI sessions, 50 clients, `calltrack web serve` workers (real-time holds, pool of 3000):")
        dni_rates = []
        for count in (1, 2):
            before = check(url)
            with servers([["web", "serve"]] * count, env, folder) as ports:
                stats, elapsed = asyncio.run(dni_load(ports, key, 50, args.seconds))
            leases, doubles, overflows, _ = check(url)
            rate = len(stats.session) / elapsed
            dni_rates.append(rate)
            print(
                f"  {count} worker{'s' if count > 1 else ' '}: {rate:6.0f} sessions/s  p50 {pct(stats.session, 0.5):6.1f} ms"
                f"  p99 {pct(stats.session, 0.99):6.1f} ms  leases {leases - before[0]} (warm-up included), overflows"
                f" {overflows - before[2]}; numbers leased twice at once: {doubles}; statuses {stats.statuses}"
            )
        print(f"  two workers / one: {dni_rates[1] / dni_rates[0]:.2f}x")

        print("routes, 20 clients, `calltrack agi serve` servers (address form, 250 numbers):")
        route_rates = []
        for count in (1, 2):
            with servers([["agi", "serve"]] * count, env, folder) as ports:
                results = asyncio.run(route_load(ports, numbers, 20, args.seconds))
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


if __name__ == "__main__":
    main()
