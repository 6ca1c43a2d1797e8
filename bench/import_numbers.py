"""Benchmark: CSV import of tracking numbers, and CLI start-up.

Prints, from one run on this machine:
- rows/s of `calltrack numbers import` (a real subprocess, the CLI path a user runs) on SQLite,
  beside a baseline of plain ``sqlite3.executemany`` of the same rows into the same table;
  with --postgres, the same import into a fresh PostgreSQL database too;
- peak memory (max RSS) of the import process;
- `calltrack --help` start-up time beside `python -c pass`.

Usage: .venv/bin/python bench/import_numbers.py [--rows 100000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import scratch_postgres

ROOT = Path(__file__).resolve().parents[1]
CALLTRACK = [sys.executable, "-m", "calltrack.main"]


def make_numbers(count: int) -> list[str]:
    """Distinct valid US numbers: NPA 404/470/678/770, exchanges 200-999."""
    out = []
    for npa in (404, 470, 678, 770, 912, 706):
        for exchange in range(201, 1000):
            if exchange % 100 == 11 or exchange == 555:
                continue  # N11 codes and 555 are not assignable
            for line in range(0, 10000, 37):
                out.append(f"{npa}-{exchange}-{line:04d}")
                if len(out) == count:
                    return out
    raise SystemExit(f"cannot make {count} distinct numbers")


def write_csv(path: Path, numbers: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["number", "account", "source", "forward_to", "timeout", "record", "label"])
        for i, number in enumerate(numbers):
            writer.writerow([number, "Bench Co", "Google Ads", f"PJSIP/{100 + i % 50}", 25, "yes", f"row {i}"])


def run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def prepare(url: str, env: dict[str, str]) -> None:
    for cmd in (
        ["db", "upgrade"],
        ["accounts", "add", "Bench Co"],
        ["sources", "add", "Google Ads", "--account", "Bench Co"],
    ):
        subprocess.run([*CALLTRACK, "--database", url, *cmd], check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)


def timed_import(url: str, csv_path: Path, env: dict[str, str]) -> tuple[float, float]:
    """Seconds and max RSS (MiB) of one import process."""
    code = (
        "import resource,sys,time;from calltrack.main import cli;t=time.perf_counter();"
        "cli.main(args=sys.argv[1:],prog_name='calltrack',standalone_mode=False);"
        "print(time.perf_counter()-t);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "--database", url, "numbers", "import", str(csv_path)],
        check=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[-2]), int(out[-1]) / 1024


def baseline_executemany(db: Path, numbers: list[str]) -> float:
    """Plain sqlite3: the same rows, already in E.164, into the same table (made by the migrations)."""
    import phonenumbers  # noqa: F401  (imported as the CLI path does, outside the timing)

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    rows = [
        (f"+1{n.replace('-', '')}", 1, 1, f"PJSIP/{100 + i % 50}", 25, 1, f"row {i}", "active", now, now)
        for i, n in enumerate(numbers)
    ]
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    start = time.perf_counter()
    with conn:
        conn.executemany(
            "INSERT INTO tracking_numbers (number, account_id, source_id, forward_to, ring_timeout, record, label,"
            " status, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def phonenumbers_floor(numbers: list[str]) -> float:
    """What E.164 validation with phonenumbers alone costs for the same rows (no CSV, no database)."""
    from tracking.phone import normalize

    start = time.perf_counter()
    for n in numbers:
        normalize(n, "US")
    return time.perf_counter() - start


def startup(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--postgres", metavar="URL", help="also import into a new database on this server")
    parser.add_argument("--repeat", type=int, default=10, help="start-up runs to take the median of")
    opts = parser.parse_args()

    numbers = make_numbers(opts.rows)
    with tempfile.TemporaryDirectory(prefix="calltrack-bench-") as tmp:
        tmpdir = Path(tmp)
        env = {**os.environ, "XDG_DATA_HOME": str(tmpdir / "xdg"), "CALLTRACK_CONFIG": ""}
        env.pop("CALLTRACK_DATABASE_URL", None)
        csv_path = tmpdir / "numbers.csv"
        write_csv(csv_path, numbers)
        print(f"import of {opts.rows:,} numbers from CSV ({csv_path.stat().st_size / 1e6:.1f} MB)")

        db = tmpdir / "cli.sqlite3"
        url = f"sqlite:///{db}"
        prepare(url, env)
        seconds, rss = timed_import(url, csv_path, env)

        base_db = tmpdir / "baseline.sqlite3"
        prepare(f"sqlite:///{base_db}", env)
        base = baseline_executemany(base_db, numbers)
        cli_rate, base_rate = opts.rows / seconds, opts.rows / base
        print(
            f"  calltrack numbers import (SQLite): {cli_rate:>10,.0f} rows/s  ({seconds:.2f} s, peak RSS {rss:.0f} MiB)"
        )
        print(f"  baseline sqlite3.executemany:      {base_rate:>10,.0f} rows/s  ({base:.2f} s)")
        print(f"  ratio calltrack/baseline:          {cli_rate / base_rate:10.3f}")
        floor = phonenumbers_floor(numbers)
        print(
            f"  (phonenumbers validation alone:    {opts.rows / floor:>10,.0f} rows/s, {floor / seconds:.0%} of the import)"
        )

        if opts.postgres:
            with scratch_postgres(opts.postgres) as pg_url:
                prepare(pg_url, env)
                pg_seconds, pg_rss = timed_import(pg_url, csv_path, env)
            print(
                f"  calltrack numbers import (PostgreSQL): {opts.rows / pg_seconds:>8,.0f} rows/s  "
                f"({pg_seconds:.2f} s, peak RSS {pg_rss:.0f} MiB)"
            )

    help_time = startup([*CALLTRACK, "--help"], opts.repeat)
    pass_time = startup([sys.executable, "-c", "pass"], opts.repeat)
    print(f"start-up (median of {opts.repeat}):")
    print(f"  calltrack --help: {help_time * 1000:7.1f} ms")
    print(f"  python -c pass:   {pass_time * 1000:7.1f} ms")
    print(f"  ratio:            {help_time / pass_time:7.2f}")


if __name__ == "__main__":
    main()
