"""Benchmark: dashboard server time beside the raw SQL of the same page, on SQLite and PostgreSQL.

A generated database: ``--calls`` calls (1,000,000 by default) across 20 accounts over 12 months,
with two legs a call, a website visit behind 30 % of them, a recording for 60 % of the answered
ones, 5 sources and 10 tracking numbers an account.  For each page the median and p99 of:

- *page*: the server's time for the request (the real ASGI app in-process, signed in as the
  account's agency manager): session check, queries, Python, rendering;
- *raw*: the same SQL statements the page sent (captured from that request), replayed on the
  DBAPI cursor with nothing else: no SQLAlchemy, no Python work, no rendering;

(a) the calls list of one account and one week, (b) the reports page of one account and one
month, (c) the overview of one account and 30 days.  Targets (issue 11): (a) p99 under 50 ms,
(b) and (c) p99 under 200 ms on SQLite, no page more than 2x its raw queries.

Usage: .venv/bin/python bench/dashboard_bench.py [--calls 1000000] [--runs 50] [--postgres URL] [--sqlite-only]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchlib import scratch_postgres  # noqa: E402

ACCOUNTS = 20
SOURCES = ["Google Ads", "Facebook", "Organic", "Bing Ads", "Flyer"]
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
DISPOSITIONS = [("answered", 65), ("missed", 15), ("abandoned", 10), ("busy", 5), ("failed", 3), ("blocked", 2)]
PASSWORD = "benchmark password"


def _choice(rng: random.Random, weighted: list[tuple[str, int]]) -> str:
    n = rng.randrange(100)
    for value, weight in weighted:
        if n < weight:
            return value
        n -= weight
    return weighted[-1][0]


def generate(url: str, calls: int) -> None:
    """Migrate and fill the database (Core inserts in batches, one transaction per table batch)."""
    from sqlalchemy import insert

    from schema import migrate
    from schema.db import make_engine
    from schema.models import (
        Account,
        Call,
        CallLeg,
        Recording,
        Source,
        TrackingNumber,
        User,
        UserAccount,
        VisitorSession,
    )
    from tracking.users import hash_password

    engine = make_engine(url)
    migrate.upgrade(engine)
    rng = random.Random(11)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            insert(Account),
            [
                {
                    "id": a,
                    "name": f"Account {a}",
                    "timezone": "America/New_York" if a % 2 else "Europe/London",
                    "public_key": f"key{a}",
                    "created_at": NOW,
                }
                for a in range(1, ACCOUNTS + 1)
            ],
        )
        conn.execute(
            insert(Source),
            [
                {
                    "id": (a - 1) * len(SOURCES) + i + 1,
                    "account_id": a,
                    "name": name,
                    "campaign": f"c{i}",
                    "created_at": NOW,
                }
                for a in range(1, ACCOUNTS + 1)
                for i, name in enumerate(SOURCES)
            ],
        )
        conn.execute(
            insert(TrackingNumber),
            [
                {
                    "id": (a - 1) * 10 + i + 1,
                    "number": f"+1404{a:03d}{i:04d}",
                    "account_id": a,
                    "source_id": (a - 1) * len(SOURCES) + i % len(SOURCES) + 1,
                    "forward_to": "PJSIP/100",
                    "ring_timeout": 30,
                    "record": True,
                    "status": "active",
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for a in range(1, ACCOUNTS + 1)
                for i in range(10)
            ],
        )
        conn.execute(
            insert(User),
            [
                {
                    "id": 1,
                    "username": "bench",
                    "password_hash": hash_password(PASSWORD),
                    "role": "manager",
                    "disabled": False,
                    "created_at": NOW,
                }
            ],
        )
        conn.execute(insert(UserAccount), [{"user_id": 1, "account_id": 1, "granted_at": NOW}])
    span = 365 * 86400
    batch = 20_000
    call_id = leg_id = visit_id = rec_id = 0
    while call_id < calls:
        rows, legs, visits, recs = [], [], [], []
        for _ in range(min(batch, calls - call_id)):
            call_id += 1
            account = rng.randrange(1, ACCOUNTS + 1)
            tn = rng.randrange(10)
            source = (account - 1) * len(SOURCES) + tn % len(SOURCES) + 1
            start = NOW - dt.timedelta(seconds=rng.randrange(span))
            disposition = _choice(rng, DISPOSITIONS)
            ring = rng.uniform(2, 25)
            talk = rng.uniform(20, 600) if disposition == "answered" else None
            visit = None
            if rng.random() < 0.3:
                visit_id += 1
                visit = visit_id
                visits.append(
                    {
                        "id": visit_id,
                        "key": f"v{visit_id}",
                        "account_id": account,
                        "source_id": source,
                        "landing_url": f"https://site{account}.test/p{rng.randrange(20)}?gclid=G{visit_id}",
                        "referrer": "https://www.google.com/",
                        "utm_source": "google",
                        "utm_medium": "cpc",
                        "utm_campaign": f"campaign{rng.randrange(8)}",
                        "utm_term": f"kw{rng.randrange(30)}",
                        "gclid": f"G{visit_id}" if rng.random() < 0.5 else None,
                        "pages_seen": rng.randrange(1, 9),
                        "started_at": start - dt.timedelta(minutes=5),
                        "last_seen_at": start,
                    }
                )
            rows.append(
                {
                    "id": call_id,
                    "system": "pbx1",
                    "linkedid": f"{call_id}.0",
                    "uniqueid": f"{call_id}.0",
                    "account_id": account,
                    "tracking_number_id": (account - 1) * 10 + tn + 1,
                    "tracking_number": f"+1404{account:03d}{tn:04d}",
                    "source_id": source,
                    "visitor_session_id": visit,
                    "caller_number": f"+1770{rng.randrange(200_000):07d}",
                    "caller_name": f"Caller {call_id}",
                    "caller_location": "Atlanta, GA",
                    "first_time": rng.random() < 0.4,
                    "route_status": "ok",
                    "after_hours": rng.random() < 0.2,
                    "started_at": start,
                    "answered_at": start + dt.timedelta(seconds=ring) if talk else None,
                    "ended_at": start + dt.timedelta(seconds=ring + (talk or 0)),
                    "duration": ring + (talk or 0),
                    "ring_time": ring,
                    "talk_time": talk,
                    "disposition": disposition,
                    "created_at": start,
                    "updated_at": start,
                }
            )
            for n in range(2):
                leg_id += 1
                legs.append(
                    {
                        "id": leg_id,
                        "call_id": call_id,
                        "uniqueid": f"{call_id}.{n}",
                        "channel": f"PJSIP/trunk-{call_id:08x}" if n == 0 else "PJSIP/100",
                        "role": "inbound" if n == 0 else "agent",
                        "created_at": start,
                    }
                )
            if talk and rng.random() < 0.6:
                rec_id += 1
                recs.append(
                    {
                        "id": rec_id,
                        "call_id": call_id,
                        "account_id": account,
                        "source_path": f"/spool/{call_id}.wav",
                        "path": f"/archive/{call_id}.mp3",
                        "format": "mp3",
                        "bytes": int(talk * 4000),
                        "duration": talk,
                        "state": "archived",
                        "attempts": 1,
                        "created_at": start,
                    }
                )
        with engine.begin() as conn:
            if visits:
                conn.execute(insert(VisitorSession), visits)
            conn.execute(insert(Call), rows)
            conn.execute(insert(CallLeg), legs)
            if recs:
                conn.execute(insert(Recording), recs)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            from sqlalchemy import text

            conn.execute(text("ANALYZE"))
            for table in ("calls", "call_legs", "visitor_sessions", "recordings"):
                conn.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")  # noqa: S608
                )
    else:
        with engine.begin() as conn:
            from sqlalchemy import text

            conn.execute(text("ANALYZE"))
    engine.dispose()
    print(
        f"  generated {calls:,} calls, {leg_id:,} legs, {visit_id:,} visits, {rec_id:,} recordings "
        f"in {time.perf_counter() - started:.0f} s",
        flush=True,
    )


class Capture:
    """The SQL statements (with parameters) sent while capturing."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.on = False
        self.statements: list[tuple[str, Any]] = []

        @event.listens_for(engine, "before_cursor_execute")
        def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
            if self.on:
                self.statements.append((statement, parameters))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(url: str, runs: int, label: str) -> list[tuple[str, float, float, float, float]]:
    import httpx

    from config import DatabaseSettings, GeneralSettings, Settings
    from schema.db import make_engine
    from web.app import create_app

    engine = make_engine(url)
    settings = Settings(general=GeneralSettings(data_dir=Path(tempfile.mkdtemp())), database=DatabaseSettings(url=url))
    app = create_app(settings, engine, clock=lambda: NOW)
    capture = Capture(engine)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
    pages = {
        "(a) calls, 1 account, 1 week": "/dashboard/calls?account=1&range=7d",
        "(b) reports, 1 account, 1 month": "/dashboard/reports?account=1&range=custom&from=2026-11-01&to=2026-11-30",
        "(c) overview, 1 account, 30 days": "/dashboard/overview?account=1&range=30d",
    }
    out = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        page = await client.get("/dashboard/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        signed = await client.post("/dashboard/signin", data={"csrf": csrf, "username": "bench", "password": PASSWORD})
        assert signed.status_code == 303, signed.text
        for name, path in pages.items():
            for _ in range(3):  # warm: caches, prepared statements
                assert (await client.get(path)).status_code == 200
            capture.statements.clear()
            capture.on = True
            await client.get(path)
            capture.on = False
            statements = list(capture.statements)
            page_ms, raw_ms = [], []
            raw = engine.raw_connection()
            try:
                for _ in range(runs):
                    t0 = time.perf_counter()
                    response = await client.get(path)
                    page_ms.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200
                    t0 = time.perf_counter()
                    cursor = raw.cursor()
                    for statement, parameters in statements:
                        cursor.execute(statement, parameters)
                        if cursor.description is not None:
                            cursor.fetchall()
                    cursor.close()
                    raw.rollback()  # the page's session touch is a write: undo it, as the page commits its own
                    raw_ms.append((time.perf_counter() - t0) * 1000)
            finally:
                raw.close()
            out.append((name, statistics.median(page_ms), pct(page_ms, 99), statistics.median(raw_ms), pct(raw_ms, 99)))
            print(f"  {label} {name}: {len(statements)} statements", flush=True)
    engine.dispose()
    return out


def report(label: str, rows: list[tuple[str, float, float, float, float]]) -> None:
    print(f"\n{label}: server time per request, ms (page vs the same SQL replayed raw)")
    print(f"  {'page':36} {'median':>8} {'p99':>8} {'raw med':>8} {'raw p99':>8} {'ratio p50':>9} {'ratio p99':>9}")
    for name, med, p99, raw_med, raw_p99 in rows:
        print(
            f"  {name:36} {med:8.1f} {p99:8.1f} {raw_med:8.1f} {raw_p99:8.1f} {med / raw_med:9.2f} {p99 / raw_p99:9.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--keep", help="keep the generated SQLite database in this file (reused when it exists)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "bench.sqlite3"
        url = f"sqlite:///{path}"
        if not path.exists():
            print(f"SQLite: generating {args.calls:,} calls", flush=True)
            generate(url, args.calls)
        else:
            print(f"SQLite: reusing {path} (migrated to the current schema)", flush=True)
            from schema import migrate
            from schema.db import make_engine

            kept = make_engine(url)
            migrate.upgrade(kept)
            kept.dispose()
        report("SQLite", asyncio.run(measure(url, args.runs, "SQLite")))
    if args.sqlite_only:
        return
    with scratch_postgres(args.postgres) as pg:
        print(f"\nPostgreSQL: generating {args.calls:,} calls", flush=True)
        generate(pg, args.calls)
        report("PostgreSQL", asyncio.run(measure(pg, args.runs, "PostgreSQL")))


if __name__ == "__main__":
    main()
