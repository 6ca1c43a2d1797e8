"""Benchmark: inbound texts through the ``sms`` handler beside calls through ``route``, in the same run.

One ``calltrack agi serve`` process (its own core) serves both handlers on the same database
(SQLite, then PostgreSQL with ``--postgres``): 250 tracking numbers, 50 of them in a pool
with leases. The load generator (this process) plays Asterisk: for ``route`` as the sample
dialplan calls it (everything in the AGI address, then ten SET VARIABLEs); for ``sms`` as
Asterisk's Message channel answers (``agi_channel: Message/ast_msg_queue``): the handler's one
``GET FULL VARIABLE`` answered with the body (a CRLF in it, so the reply spans two lines), the
sender's raw From and the message's other values, then the eight ``CALLTRACK_SMS_*`` SET VARIABLEs.
Every text has its own SIP Call-ID, so each one is a new row. The two take turns at each
concurrency level, so a busy moment of the shared machine hits them alike; each level is run ``--repeat`` times and
the median is printed with the ratio sms/route (sessions/s and server CPU per session).

Usage: .venv/bin/python bench/sms_bench.py [--seconds 3] [--levels 1,10] [--repeat 3] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

from agi_bench import PY, load, make_database, write_config
from benchlib import (
    FakeAgiSession,
    agi_server,
    closed_loop,
    cpu_seconds,
    postgres_or_none,
    warmup_seconds,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.message_channel import message_env  # noqa: E402

BODY = 'Hi! Do you fix boilers on Sundays? "Urgent", thanks :)\r\nJane – 404 555 1234 😀'


class FakeMessageChannel(FakeAgiSession):
    """One ``sms`` session as Asterisk's Message channel plays it."""

    status_variable = "CALLTRACK_SMS_STATUS"
    status_prefix = "sms-"

    def __init__(self, env: bytes, call_id: str, sender: str, done: asyncio.Future[str]) -> None:
        super().__init__(env, done)
        # the handler's FIELDS, as Asterisk substitutes them: body, MESSAGE_DATA(From), MESSAGE(from),
        # Call-ID, Content-Length, MESSAGE(to)
        self.values = [
            BODY,
            f'"Jane Doe" <sip:{sender}@127.0.0.1>;tag=bench',
            f'"Jane Doe" <sip:{sender}@127.0.0.1>',
            call_id,
            str(len(BODY.encode()) + 2),
            "pjsip:x@h",
        ]

    def answer(self, line: bytes) -> bytes:
        if line.startswith(b'GET FULL VARIABLE "calltrack-sync-'):
            mark = line[19:].split(b"|", 1)[0].decode()
            return (f"200 result=1 ({mark}|" + f"|{mark}|".join(self.values) + f"|{mark}-end)\n").encode()
        return super().answer(line)


async def text_load(port: int, concurrency: int, seconds: float, numbers: list[str], run: int) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    envs = {n: message_env("+1" + n) for n in numbers}

    async def one(n: int, wid: int) -> str:
        number = numbers[n % len(numbers)]
        done: asyncio.Future[str] = loop.create_future()
        call_id = f"bench-{os.getpid()}-{run}-{n}@127.0.0.1"
        sender = f"+1404555{n % 10000:04d}"
        await loop.create_connection(lambda: FakeMessageChannel(envs[number], call_id, sender, done), "127.0.0.1", port)
        return await done

    return await closed_loop(concurrency, seconds, one)


def measured(pid: int, seconds: float, make: object) -> dict[str, object]:
    cpu_before = cpu_seconds(pid)
    result: dict[str, object] = asyncio.run(make)  # type: ignore[arg-type]
    cpu = cpu_seconds(pid) - cpu_before
    sessions = float(result["rate"]) * (seconds + warmup_seconds(seconds))  # type: ignore[arg-type]
    result["cpu_us"] = cpu / max(sessions, 1) * 1e6
    return result


def fmt(r: dict[str, object]) -> str:
    return f"{r['rate']:7.0f} sessions/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  {r['cpu_us']:5.0f} us CPU/session"


def runs(environ: dict[str, str], numbers: list[str], args: argparse.Namespace, label: str, log: Path) -> None:
    with agi_server(PY, environ, log) as (port, pid):
        for c in [int(x) for x in args.levels.split(",")]:
            route_runs, text_runs = [], []
            for rep in range(args.repeat):
                r = measured(pid, args.seconds, load(port, c, args.seconds, numbers, form="address"))
                t = measured(pid, args.seconds, text_load(port, c, args.seconds, numbers, rep * 1000 + c))
                route_runs.append(r)
                text_runs.append(t)
                print(f"{label} c={c:<3d} route (baseline) {fmt(r)}  {r['statuses']}")
                print(f"{label} c={c:<3d} sms              {fmt(t)}  {t['statuses']}")
            rate_r = statistics.median(float(x["rate"]) for x in route_runs)  # type: ignore[arg-type]
            rate_t = statistics.median(float(x["rate"]) for x in text_runs)  # type: ignore[arg-type]
            cpu_r = statistics.median(float(x["cpu_us"]) for x in route_runs)  # type: ignore[arg-type]
            cpu_t = statistics.median(float(x["cpu_us"]) for x in text_runs)  # type: ignore[arg-type]
            print(
                f"{label} c={c:<3d} median of {args.repeat}: sms {rate_t:.0f}/s vs route {rate_r:.0f}/s = "
                f"{rate_t / rate_r:.2f}x rate; CPU per session sms/route = {cpu_t / cpu_r:.2f}x"
            )
    warnings = [line for line in log.read_text().splitlines() if "WARNING" in line or "ERROR" in line]
    print(f"{label} server log: {len(warnings)} warning/error lines" + (f"; first: {warnings[0]}" if warnings else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--levels", default="1,10")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", metavar="URL", help="also run on a fresh database of this PostgreSQL server")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url, numbers = make_database(folder)
        config = write_config(folder, '[sms]\ntrunk = "carrier"\nfallback_destination = "pjsip:reception"\n')
        environ = {**os.environ, "CALLTRACK_CONFIG": str(config), "CALLTRACK_DATABASE_URL": url}
        runs(environ, numbers, args, "sqlite    ", folder / "sqlite.log")
        with postgres_or_none(args.postgres, "calltrack_smsbench") as pg_url:
            if pg_url:
                make_database(folder, url=pg_url)
                runs({**environ, "CALLTRACK_DATABASE_URL": pg_url}, numbers, args, "postgresql", folder / "pg.log")


if __name__ == "__main__":
    main()
