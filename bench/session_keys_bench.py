"""Benchmark: new visitor sessions written into a large sessions table, with the keys the DNI API makes.

    .venv/bin/python bench/session_keys_bench.py [--existing 300000] [--batches 1000] [--postgres URL]

A site that has run for a while holds hundreds of thousands of sessions (its retention
window).  Every new session adds an entry to two indexes on random-looking text: its key
(unique) and its visitor id.  Purely random tokens put each entry on a random leaf page, so a
batch of new sessions (the group commit's transaction) dirties one page per session and per
index, and on a table larger than the page cache reads it first; the DNI API's tokens
(``web.dni.new_token``) start with the time in milliseconds, so new entries land at the end of
each index.  Both kinds are measured here, alternating, on the product's own schema and
INSERT statement (``web/session_rows.py``), in batches of 30 sessions a transaction: the
database is SQLite (a fresh file per round), and PostgreSQL with --postgres.

Prints µs per inserted session for each kind and their ratio.  Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchlib import postgres_or_none  # noqa: E402

from schema import migrate  # noqa: E402
from schema.db import make_engine  # noqa: E402
from schema.types import utc_text  # noqa: E402
from web.dni import new_token  # noqa: E402
from web.session_rows import _SQ_INSERT, COLUMNS  # noqa: E402

BATCH = 30


def random_token() -> str:
    """The keys before: 128 random bits and nothing else."""
    return secrets.token_urlsafe(16)


def row(key: str, visitor: str, account_id: int, at: Any, i: int) -> dict[str, Any]:
    values: dict[str, Any] = dict.fromkeys(COLUMNS)
    values.update(
        key=key,
        account_id=account_id,
        visitor_id=visitor,
        landing_url=f"https://shop.example/pricing?utm_source=google&utm_campaign=spring&n={i}",
        referrer="https://www.google.com/",
        utm_source="google",
        utm_campaign="spring",
        pages_seen=1,
        user_agent="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        ip="203.0.113.7",
        started_at=at,
        last_seen_at=at,
    )
    return values


def older_token(ordered: bool, age_ms: int) -> str:
    if not ordered:
        return random_token()
    return f"{time.time_ns() // 1_000_000 - age_ms:012x}{secrets.token_urlsafe(16)}"


def sqlite_round(folder: Path, make: Callable[[], str], ordered: bool, existing: int, batches: int) -> float:
    path = folder / f"keys-{int(ordered)}.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")  # as the product's connections set it
    conn.execute("INSERT INTO accounts (name, timezone, public_key, created_at) VALUES ('A', 'UTC', 'k', '2026-01-01')")
    at = utc_text(dt.datetime.now(dt.UTC))
    conn.execute("BEGIN")
    for i in range(existing):  # the sessions of the months before, made in their order
        key, visitor = older_token(ordered, existing - i), older_token(ordered, existing - i)
        conn.execute(_SQ_INSERT, row(key, visitor, 1, at, i))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    started = time.perf_counter()
    for b in range(batches):
        conn.execute("BEGIN IMMEDIATE")
        for j in range(BATCH):
            conn.execute(_SQ_INSERT, row(make(), make(), 1, at, b * BATCH + j))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed / (batches * BATCH) * 1e6


def postgres_round(url: str, make: Callable[[], str], ordered: bool, existing: int, batches: int) -> float:
    import psycopg

    from tracking.dbapi import pg_sql

    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    sql = pg_sql(_SQ_INSERT)
    with psycopg.connect("postgresql" + url[url.index(":") :]) as conn:
        conn.execute("TRUNCATE visitor_sessions CASCADE")
        conn.execute("TRUNCATE accounts CASCADE")
        made = conn.execute(
            "INSERT INTO accounts (name, timezone, public_key, created_at) VALUES ('A', 'UTC', 'k', now()) RETURNING id"
        ).fetchone()
        assert made is not None
        account_id = made[0]
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with conn.cursor() as cur:
            cur.executemany(
                sql,
                [
                    row(older_token(ordered, existing - i), older_token(ordered, existing - i), account_id, now, i)
                    for i in range(existing)
                ],
            )
        conn.commit()
        conn.execute("CHECKPOINT")
        started = time.perf_counter()
        for b in range(batches):
            with conn.cursor() as cur:
                cur.executemany(sql, [row(make(), make(), account_id, now, b * BATCH + j) for j in range(BATCH)])
            conn.commit()
        elapsed = time.perf_counter() - started
    return elapsed / (batches * BATCH) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--existing", type=int, default=300_000, help="sessions already in the table")
    parser.add_argument("--batches", type=int, default=1000, help="measured batches of 30 new sessions")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each kind")
    parser.add_argument("--postgres", default=os.environ.get("CALLTRACK_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    print(
        f"new sessions into a table of {args.existing:,}, batches of {BATCH} a transaction,"
        f" {args.batches} batches per round, {args.rounds} alternating rounds"
    )
    kinds = (("random tokens (before)", random_token, False), ("time-ordered tokens (new_token)", new_token, True))
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, list[float]] = {name: [] for name, _, _ in kinds}
        for _ in range(args.rounds):
            for name, make, ordered in kinds:
                results[name].append(sqlite_round(Path(tmp), make, ordered, args.existing, args.batches))
        report("SQLite", results)
    with postgres_or_none(args.postgres, "calltrack_keys") as url:
        if url:
            results = {name: [] for name, _, _ in kinds}
            for _ in range(args.rounds):
                for name, make, ordered in kinds:
                    results[name].append(postgres_round(url, make, ordered, args.existing, args.batches))
            report("PostgreSQL", results)


def report(database: str, results: dict[str, list[float]]) -> None:
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, values in results.items():
        print(
            f"  {database:10s} {name:32s} {medians[name]:7.1f} µs per session  (rounds: {', '.join(f'{v:.1f}' for v in values)})"
        )
    before, after = medians.values()
    print(f"  {database:10s} time-ordered / random: {after / before:.2f}x the time per session")


if __name__ == "__main__":
    main()
