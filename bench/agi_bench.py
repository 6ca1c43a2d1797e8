"""Benchmark: AGI call routing, with its baselines measured in the same run.

Prints, from one run on this machine:

1. Protocol only (no database): the calltrack FastAGI server running a handler that
   sends the same AGI commands as ``route`` (GET VARIABLE CHANNEL(linkedid), then the
   CALLTRACK_* SET VARIABLEs), beside panoramisk 1.4's ``fast_agi.Application`` serving
   an async handler that sends the same commands. Sessions/s and p50/p99 latency at
   concurrency 1, 10, 50.
2. The full ``route`` through ``calltrack agi serve`` (a real subprocess) on a SQLite
   database with source and pool numbers: number lookup, attribution, caller lists,
   first-time flag, the call row upsert. Sessions/s, p50/p99, and the statuses
   returned (a route that fell back is counted, not hidden).
3. Classic AGI: ``calltrack-agi route`` as Asterisk runs it, one process per call,
   start-up (process start to its first AGI command) and whole session, beside
   ``python -c pass``.

Each server runs in its own process; the load generator (fake Asterisk clients, one
asyncio process) runs in this one, so on a 2-core machine each side has a core.

The route is driven as the sample dialplan calls it (``--form address``: everything in the
AGI address, no round trip before the variables) or as older dialplans do (``--form
arguments``: ``route,${EXTEN},${CHANNEL(linkedid)}``, one synchronisation round trip).

Usage: .venv/bin/python bench/agi_bench.py [--seconds 3] [--levels 1,10,50] [--rate 1000] [--repeat 3]
       [--postgres URL] [--skip-proto] [--skip-classic] [--form address|arguments]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchlib import (
    FakeAgiSession,
    agi_server,
    closed_loop,
    cpu_seconds,
    load_summary,
    postgres_or_none,
    warmup_seconds,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.fastagi_peer import AsteriskSide, environment_bytes  # noqa: E402

PY = sys.executable
CALLTRACK_AGI = str(Path(PY).parent / "calltrack-agi")

# The commands the route sends, for the protocol-only servers.
VARIABLES = [
    ("CALLTRACK_STATUS", "ok"),
    ("CALLTRACK_CALL_ID", "12345"),
    ("CALLTRACK_DIAL", "PJSIP/100&PJSIP/101"),
    ("CALLTRACK_DIAL_TIMEOUT", "25"),
    ("CALLTRACK_RECORD", "1"),
    ("CALLTRACK_RECORDING_FILE", "/var/spool/asterisk/monitor/calltrack/12345.wav"),
    ("CALLTRACK_SOURCE", "Google Ads"),
    ("CALLTRACK_WHISPER", ""),
    ("CALLTRACK_FIRST_TIME", "1"),
    ("CALLTRACK_AFTER_HOURS", "0"),
]

CALLTRACK_PROTO_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from asterisk_agi.fastagi import FastAGIServer, Router
    from calltrack.services import settle_heap
    from config import Settings
    VARIABLES = {variables!r}

    async def proto(agi, session):
        await agi.get_variable("CHANNEL(linkedid)")
        await agi.set_variables(VARIABLES)
        return "ok"

    async def main():
        router = Router()
        router.add("route", proto)
        server = FastAGIServer(Settings(), router)
        host, port = await server.start("127.0.0.1", 0)
        settle_heap()  # as calltrack.services.run_services does once the route's server has started
        print(port, flush=True)
        await asyncio.Event().wait()

    if {uvloop!r}:
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
    """
)

PANORAMISK_SERVER = textwrap.dedent(
    """
    import asyncio
    from panoramisk import fast_agi
    VARIABLES = {variables!r}

    async def proto(request):
        await request.send_command("GET VARIABLE CHANNEL(linkedid)")
        for name, value in VARIABLES:
            await request.send_command('SET VARIABLE %s "%s"' % (name, value))

    async def main():
        app = fast_agi.Application(loop=asyncio.get_running_loop())
        app.add_route("route", proto)
        server = await asyncio.start_server(app.handler, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    if {uvloop!r}:
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
    """
)


# --- the load generator: fake Asterisk clients -------------------------------------------------


class FakeAsterisk(FakeAgiSession):
    """The route's session: the linkedid for GET VARIABLE, the address values for the synchronisation."""

    def __init__(self, env: bytes, linkedid: bytes, done: asyncio.Future[str], fetched: bytes = b"") -> None:
        super().__init__(env, done)
        self.linkedid_reply = b"200 result=1 (" + linkedid + b")\n"
        #: the values part of the answer to the route's synchronisation (GET FULL VARIABLE)
        self.fetched = fetched

    def answer(self, line: bytes) -> bytes:
        if line.startswith(b"GET VARIABLE"):
            return self.linkedid_reply
        if line.startswith(b'GET FULL VARIABLE "'):
            marker = line[19:].split(b"|", 1)[0]
            return b"200 result=1 (" + marker + self.fetched + b")\n"
        return super().answer(line)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def load(
    port: int, concurrency: int, seconds: float, numbers: list[str], rate: float = 0, form: str = "arguments"
) -> dict[str, object]:
    loop = asyncio.get_running_loop()

    # the recorded environment, with the number, uniqueid and caller of each session filled in:
    # "address", as the sample dialplan calls AGI(agi://.../route?number=...&linkedid=<b64>...) with the
    # caller ID cleared; "arguments", AGI(agi://.../route,${EXTEN},${CHANNEL(linkedid)}) (the protocol-only
    # handlers ignore both and ask for the linkedid anyway)
    if form == "address":
        template = environment_bytes(script="route?@Q@", extension="s", uniqueid="@UID@", callerid="", calleridname="")
    else:
        template = environment_bytes(extension="@EXT@", uniqueid="@UID@", callerid="@CID@", args=("@EXT@", "@UID@"))

    async def one(n: int, wid: int) -> str:
        number = numbers[n % len(numbers)]
        uid = f"1795{wid:04d}.{n}"
        cid = f"+1404555{n % 10000:04d}"
        fetched = b""
        if form == "address":
            query = f"number={number}&linkedid={b64(uid)}&uniqueid={b64(uid)}&caller={b64(cid)}&name={b64('Jane Doe')}"
            env = template.replace(b"@Q@", query.encode()).replace(b"@UID@", uid.encode())
        else:
            env = (
                template.replace(b"@EXT@", number.encode())
                .replace(b"@UID@", uid.encode())
                .replace(b"@CID@", cid.encode())
            )
            fetched = f"|{b64(uid)}|{b64(uid)}|{b64(cid)}|{b64('Jane Doe')}".encode()
        done: asyncio.Future[str] = loop.create_future()
        linkedid = uid.encode()
        await loop.create_connection(lambda: FakeAsterisk(env, linkedid, done, fetched), "127.0.0.1", port)
        return await done

    if rate:
        # open loop: sessions start at a fixed rate (as calls arrive), at most `concurrency` at once;
        # latency counts from the scheduled start, so a queue in front of the server is not hidden
        slots = asyncio.Semaphore(concurrency)
        tasks = []
        latencies: list[float] = []
        statuses: Counter[str] = Counter()

        async def timed(n: int, scheduled: float) -> None:
            async with slots:
                statuses[await one(n, n % concurrency)] += 1
            latencies.append(time.perf_counter() - scheduled)

        started = time.perf_counter()
        total = int(rate * seconds)
        n = 0
        while n < total:
            # every 2 ms, start the sessions whose time has come
            now = time.perf_counter()
            while n < total and started + n / rate <= now:
                tasks.append(asyncio.create_task(timed(n, started + n / rate)))
                n += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
        return load_summary(latencies, statuses, time.perf_counter() - started)
    # closed loop: `concurrency` clients, each starting a session when its last one ended
    return await closed_loop(concurrency, seconds, one)


def run_load(
    port: int, concurrency: int, seconds: float, numbers: list[str], pid: int, rate: float = 0, form: str = "arguments"
) -> dict[str, object]:
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # the load generator is only faster with it
        runner = asyncio.run
    cpu_before, wall_before = cpu_seconds(pid), time.perf_counter()
    result = runner(load(port, concurrency, seconds, numbers, rate, form))
    cpu, wall = cpu_seconds(pid) - cpu_before, time.perf_counter() - wall_before
    # the server's CPU per session (warm-up sessions included in both counts)
    sessions = result["sessions"] if rate else result["rate"] * (seconds + warmup_seconds(seconds))  # type: ignore[operator]
    result["server_cpu"] = cpu / wall
    result["cpu_us"] = cpu / max(sessions, 1) * 1e6  # type: ignore[operator]
    return result


def start_script(code: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, port


def write_config(folder: Path, extra: str = "") -> Path:
    """The benchmark's calltrack.toml in *folder* (data and spool below it), with *extra* TOML after it."""
    config = folder / "calltrack.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [general]
            data_dir = "{folder / "data"}"
            log_level = "WARNING"
            [agi]
            fallback_dial = "PJSIP/operator"
            [recorder]
            spool_dir = "{folder / "monitor"}"
            """
        )
        + extra
    )
    return config


# --- the database of the full route ----------------------------------------------------------


def make_database(
    folder: Path, numbers: int = 200, pool_numbers: int = 50, url: str | None = None
) -> tuple[str, list[str]]:
    from sqlalchemy.orm import Session

    from schema import migrate
    from schema.db import make_engine
    from schema.models import Account, NumberPool, PoolLease, Source, TrackingNumber, VisitorSession

    url = url or f"sqlite:///{folder / 'bench.sqlite3'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    dialled = []
    now = dt.datetime.now(dt.UTC)
    with Session(engine) as s, s.begin():
        acct = Account(name="Bench", timezone="America/New_York", public_key="bench")
        s.add(acct)
        s.flush()
        google = Source(account_id=acct.id, name="Google Ads")
        organic = Source(account_id=acct.id, name="Website")
        s.add_all([google, organic])
        s.flush()
        pool = NumberPool(account_id=acct.id, name="site", source_id=organic.id, hold_minutes=30)
        s.add(pool)
        s.flush()
        for i in range(numbers + pool_numbers):
            e164 = f"+1800555{i:04d}"
            is_pool = i >= numbers
            tn = TrackingNumber(
                number=e164,
                account_id=acct.id,
                source_id=None if is_pool else google.id,
                pool_id=pool.id if is_pool else None,
                forward_to="PJSIP/100&PJSIP/101",
                ring_timeout=25,
                record=True,
                schedule={d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
            )
            s.add(tn)
            s.flush()
            if is_pool and i % 2:
                visit = VisitorSession(key=f"k{i}", account_id=acct.id, source_id=google.id, gclid="x")
                s.add(visit)
                s.flush()
                s.add(
                    PoolLease(
                        pool_id=pool.id,
                        number_id=tn.id,
                        session_id=visit.id,
                        leased_at=now - dt.timedelta(minutes=5),
                        expires_at=now + dt.timedelta(hours=2),
                    )
                )
            dialled.append(f"800555{i:04d}")
    engine.dispose()
    return url, dialled


# --- classic AGI ----------------------------------------------------------------------------


def time_process(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def classic_session(environ: dict[str, str], number: str, n: int) -> tuple[float, float, float, str]:
    """One calltrack-agi run: ms to its first AGI command, to its first SET VARIABLE (the route
    decided), to its exit; and the status it set."""
    side = AsteriskSide({"CHANNEL(linkedid)": f"classic.{n}"})
    env = environment_bytes(classic=True, extension=number, uniqueid=f"classic.{n}", args=("route", number))
    started = time.perf_counter()
    proc = subprocess.Popen(
        [CALLTRACK_AGI, "route", number], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=environ
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write(env)
    proc.stdin.flush()
    first = decided = 0.0
    buffer = b""
    while True:
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        if not first:
            first = time.perf_counter() - started
        buffer += chunk
        while b"\n" in buffer:
            line, _, buffer = buffer.partition(b"\n")
            if not decided and line.startswith(b"SET VARIABLE"):
                decided = time.perf_counter() - started
            proc.stdin.write(side.respond(line.decode()))
            proc.stdin.flush()
    proc.stdin.close()
    proc.wait()
    total = time.perf_counter() - started
    return first * 1000, decided * 1000, total * 1000, side.set_vars.get("CALLTRACK_STATUS", "none")


def fmt(r: dict[str, object]) -> str:
    return (
        f"{r['rate']:7.0f} sessions/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms"
        f"  server CPU {r['server_cpu']:4.0%}, {r['cpu_us']:5.0f} us/session"
    )


def route_runs(
    environ: dict[str, str], numbers: list[str], levels: list[int], args: Any, log_path: Path
) -> dict[int, dict[str, object]]:
    """`calltrack agi serve` in its own process: closed-loop levels, then the open-loop runs."""
    closed: dict[int, dict[str, object]] = {}
    with agi_server(PY, environ, log_path) as (port, pid):
        for c in levels:
            closed[c] = r = run_load(port, c, args.seconds, numbers, pid, form=args.form)
            print(f"{'route, closed loop':28s} c={c:<3d} {fmt(r)}   statuses {r['statuses']}")
        # the machine is shared: repeat the open-loop run and show every result and the median
        p99s = []
        for _ in range(args.repeat):
            r = run_load(port, 50, args.seconds, numbers, pid, rate=args.rate, form=args.form)
            p99s.append(float(r["p99"]))  # type: ignore[arg-type]
            label = "route, " + str(int(args.rate)) + "/s offered"
            print(f"{label:28s} c<=50 {fmt(r)}   statuses {r['statuses']}  (load {os.getloadavg()[0]:.1f})")
        print(f"open loop at {int(args.rate)}/s: median p99 {statistics.median(p99s):.2f} ms over {len(p99s)} runs")
    lines = log_path.read_text().splitlines()
    stopped = [line for line in lines if line.startswith("calltrack agi: stopped;")]
    if stopped:
        # the server's own view: accept to close, without the load generator's delays
        print("server-side, last 10,000 sessions: " + stopped[-1].split(";", 1)[1].strip())
    warnings = [line for line in lines if "WARNING" in line or "ERROR" in line]
    print(f"server log: {len(warnings)} warning/error lines" + (f"; first: {warnings[0]}" if warnings else ""))
    return closed


def cpu_ratios(route: dict[int, dict[str, object]], proto: dict[tuple[str, int], dict[str, object]]) -> None:
    """The route's server CPU per session over the protocol-only session's (calltrack, uvloop), per level."""
    parts = [
        f"c={c}: {float(r['cpu_us']) / float(proto['calltrack, uvloop', c]['cpu_us']):.2f}x"  # type: ignore[arg-type]
        for c, r in route.items()
        if ("calltrack, uvloop", c) in proto
    ]
    if parts:
        print(
            "route CPU per session / protocol-only session's (calltrack, uvloop), same run: "
            + "; ".join(parts)
            + " (target <= 2x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per level")
    parser.add_argument("--levels", default="1,10,50", help="concurrency levels")
    parser.add_argument("--rate", type=float, default=1000.0, help="sessions/s offered in the open-loop run")
    parser.add_argument("--repeat", type=int, default=3, help="open-loop runs of the route")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also run the route on a fresh database of this PostgreSQL server (e.g. postgresql://postgres@127.0.0.1/test)",
    )
    parser.add_argument("--skip-classic", action="store_true")
    parser.add_argument(
        "--form",
        choices=("address", "arguments"),
        default="address",
        help="how the route is called: the sample dialplan's address, or the older arguments form",
    )
    parser.add_argument("--skip-proto", action="store_true")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; load generator in its own process")

    results: dict[tuple[str, int], dict[str, object]] = {}
    if not args.skip_proto:
        print("\n== protocol only (same AGI commands as route, no database)")
        variables = VARIABLES
        codes = {
            "calltrack, uvloop": CALLTRACK_PROTO_SERVER.format(root=str(ROOT), variables=variables, uvloop=True),
            "calltrack, asyncio": CALLTRACK_PROTO_SERVER.format(root=str(ROOT), variables=variables, uvloop=False),
            "panoramisk (baseline)": PANORAMISK_SERVER.format(variables=variables, uvloop=False),
            "panoramisk on uvloop": PANORAMISK_SERVER.format(variables=variables, uvloop=True),
        }
        servers = {name: start_script(code) for name, code in codes.items()}
        try:
            # the servers take turns at each level, so a busy moment of the machine hits them alike
            for c in levels:
                for name, (proc, port) in servers.items():
                    results[name, c] = r = run_load(port, c, args.seconds, ["8005550100"], proc.pid)
                    print(f"{name:28s} c={c:<3d} {fmt(r)}")
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait()
        print("ratios (sessions/s; server CPU per session, lower is better):")
        for ours, theirs in (
            ("calltrack, uvloop", "panoramisk (baseline)"),
            ("calltrack, asyncio", "panoramisk (baseline)"),
            ("calltrack, uvloop", "panoramisk on uvloop"),
        ):
            parts = []
            for c in levels:
                a, b = results[ours, c], results[theirs, c]
                parts.append(
                    f"c={c}: {a['rate'] / b['rate']:.2f}x rate, {b['cpu_us'] / a['cpu_us']:.2f}x less CPU"  # type: ignore[operator]
                )
            print(f"  {ours} vs {theirs}: " + "; ".join(parts))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url, numbers = make_database(folder)
        config = write_config(folder)
        environ = {**os.environ, "CALLTRACK_CONFIG": str(config), "CALLTRACK_DATABASE_URL": url}
        print(
            f"\n== full route through `calltrack agi serve` on SQLite ({len(numbers)} numbers, pool leases;"
            f" dialplan form: {args.form})"
        )
        cpu_ratios(route_runs(environ, numbers, levels, args, folder / "server.log"), results)
        with postgres_or_none(args.postgres, "calltrack_agibench") as pg_url:
            if pg_url:
                make_database(folder, url=pg_url)
                print(f"\n== full route through `calltrack agi serve` on PostgreSQL ({len(numbers)} numbers)")
                pg = route_runs({**environ, "CALLTRACK_DATABASE_URL": pg_url}, numbers, levels, args, folder / "pg.log")
                cpu_ratios(pg, results)

        if not args.skip_classic:
            print("\n== classic AGI (one process per call)")
            # an installed package has its bytecode compiled (pip does it); so does this run
            subprocess.run(
                [PY, "-m", "compileall", "-q", *(str(ROOT / p) for p in ("asterisk_agi", "config", "tracking"))],
                check=True,
            )
            runs = 15
            base = time_process([PY, "-c", "pass"], runs)
            firsts, decideds, totals, statuses = [], [], [], Counter()
            for n in range(runs):
                first, decided, total, status = classic_session(environ, numbers[n], n)
                firsts.append(first)
                decideds.append(decided)
                totals.append(total)
                statuses[status] += 1
            print(f"python -c pass (baseline)         {base:7.1f} ms")
            for label, values in (
                ("start-up (first AGI command)", firsts),
                ("route decided (first SET)", decideds),
                ("whole process", totals),
            ):
                ms = statistics.median(values)
                print(f"calltrack-agi {label:28s} {ms:7.1f} ms  ({ms / base:.2f}x python -c pass)")
            print(f"statuses {dict(statuses)}")


if __name__ == "__main__":
    main()
