"""Several calltrack processes on one PostgreSQL, as a larger deployment runs them.

Two `calltrack web serve` workers lease numbers of one small pool to visitors at once; two
`calltrack agi serve` servers route the same calls (Asterisk retrying on the other server, or
two dialplans for one call); one `calltrack ami listen` per Asterisk system records the calls.
Each process is a real one, with its own connection pool; only the database keeps them apart.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from schema.db import make_engine
from schema.models import Call, NumberPool, PoolLease
from tests.fakes.ami_server import FakeAmiServer, Plan, call_frames, epoch_of, load_capture, with_timestamps
from tests.fakes.fastagi_peer import FakeFastAGIPeer
from tests.integration.test_serve_end_to_end import free_port, port_open, wait_for
from tracking.accounts import add_account, add_source
from tracking.leases import find_double_leases
from tracking.numbers import NumberFields, add_number
from tracking.pools import add_numbers, create_pool, overflow_counts
from tracking.sites import add_site
from tracking.source_rules import add_rule

SITE = "https://shop.example"
POOL = [f"+1404555{n:04d}" for n in range(170, 176)]
OVERFLOW = "+14045550199"
VISITS = 60


@pytest.fixture
def postgresql(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("several processes share one database on PostgreSQL (SQLite is for one machine's services)")
    return database_url


def populate(url: str, settings: Settings) -> str:
    engine = make_engine(url)
    try:
        with sessionmaker(bind=engine, expire_on_commit=False).begin() as s:
            account = add_account(s, "Shop", "America/New_York")
            add_source(s, "Shop", "Ads")
            add_source(s, "Shop", "Google Ads")
            create_pool(s, settings, "p", "Shop", 30, source="Ads", overflow=OVERFLOW)
            add_numbers(s, settings, "p", "Shop", POOL, "PJSIP/1")
            add_number(s, settings, NumberFields("+18005550100", "Shop", source="Google Ads", forward_to="PJSIP/100"))
            add_site(s, "Shop", SITE)
            add_rule(s, "Shop", "default", "", "Ads")
            return account.public_key
    finally:
        engine.dispose()


class Processes:
    def __init__(self, url: str, folder: Path) -> None:
        self.url = url
        self.folder = folder
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, config: str, *args: str) -> None:
        path = self.folder / f"{name}.toml"
        path.write_text(config, encoding="utf-8")
        env = {**os.environ, "CALLTRACK_DATABASE_URL": self.url, "CALLTRACK_CONFIG": str(path)}
        log = open(self.folder / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "calltrack.main", *args], cwd=self.folder, env=env, stdout=log, stderr=log
        )
        log.close()
        self.procs.append((name, proc))

    def stop(self) -> dict[str, int]:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs:
            try:
                codes[name] = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")


@pytest.fixture
def processes(postgresql: str, tmp_path: Path) -> Iterator[Processes]:
    running = Processes(postgresql, tmp_path)
    try:
        yield running
    finally:
        running.stop()


def base_config(tmp_path: Path, name: str) -> str:
    return f"""
[general]
data_dir = "{tmp_path / name}"
system_name = "pbx1"
"""


def visit(port: int, key: str, n: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = json.dumps({"account": key, "visitor": None, "url": f"{SITE}/?n={n}", "referrer": ""})
        conn.request("POST", "/dni/v1/session", body, {"Origin": SITE, "Content-Type": "application/json"})
        response = conn.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200, answer
        return str(answer["number"])
    finally:
        conn.close()


async def test_two_web_workers_never_lease_one_number_twice(
    processes: Processes, postgresql: str, settings: Settings, tmp_path: Path
) -> None:
    key = populate(postgresql, settings)
    ports = [free_port(), free_port()]
    for n, port in enumerate(ports):
        config = base_config(tmp_path, f"web{n}") + "[web]\nrate_limit_per_minute = 100000\n"
        processes.start(f"web{n}", config, "web", "serve", "--listen", f"127.0.0.1:{port}")
    await wait_for("both web workers", lambda: all(port_open(p) for p in ports))

    with ThreadPoolExecutor(16) as pool:  # the visits alternate between the workers, 16 at a time
        shown = list(pool.map(lambda n: visit(ports[n % 2], key, n), range(VISITS)))

    leased = sorted(number for number in shown if number != OVERFLOW)
    assert leased == sorted(POOL), "each pool number went to exactly one visitor"
    assert shown.count(OVERFLOW) == VISITS - len(POOL)
    engine = make_engine(postgresql)
    try:
        with Session(engine) as s:
            assert find_double_leases(s) == []
            assert s.scalar(select(func.count()).select_from(PoolLease)) == len(POOL)
            pool_row = s.scalars(select(NumberPool)).one()
            overflows = overflow_counts(s)[pool_row.id]
            assert (overflows, pool_row.peak_leases) == (VISITS - len(POOL), len(POOL))
    finally:
        engine.dispose()
    assert processes.stop() == {"web0": 0, "web1": 0}


async def test_two_fastagi_servers_and_a_listener_make_one_closed_call_per_call(
    processes: Processes, postgresql: str, settings: Settings, tmp_path: Path, asterisk_traffic: Path
) -> None:
    """Both FastAGI servers route the recorded call (and 20 more) at once; the listener completes it."""
    populate(postgresql, settings)
    captured = load_capture("answered", asterisk_traffic)
    gate = asyncio.Event()
    frames = with_timestamps(call_frames(captured), epoch_of(captured))
    ami = FakeAmiServer([Plan(frames=frames, gate=(0, gate))], username="calltrack", secret="s3cret")
    await ami.start()
    try:
        agi_ports = [free_port(), free_port()]
        for n, port in enumerate(agi_ports):
            config = base_config(tmp_path, f"agi{n}") + f'[agi]\nlisten = "127.0.0.1:{port}"\ndb_deadline_ms = 5000\n'
            processes.start(f"agi{n}", config, "agi", "serve")
        listener = base_config(tmp_path, "ami") + (
            f'[[ami.servers]]\nname = "pbx1"\nhost = "127.0.0.1"\nport = {ami.port}\n'
            'username = "calltrack"\nsecret = "s3cret"\n'
        )
        processes.start("ami", listener, "ami", "listen")
        await wait_for("both FastAGI servers", lambda: all(port_open(p) for p in agi_ports))

        linkedids = ["1795915078.0"] + [f"1795915{n:03d}.0" for n in range(100, 120)]

        async def route(linkedid: str, port: int) -> str:
            peer = FakeFastAGIPeer("127.0.0.1", port, linkedid=linkedid)
            result = await peer.session(uniqueid=linkedid.replace(".0", ".1"), extension="8005550100")
            return str(result.side.set_vars["CALLTRACK_CALL_ID"])

        ids = await asyncio.gather(*(route(lid, port) for lid in linkedids for port in agi_ports))
        by_call = {lid: {ids[2 * i], ids[2 * i + 1]} for i, lid in enumerate(linkedids)}
        assert all(len(got) == 1 and "" not in got for got in by_call.values()), by_call  # one id per call
        gate.set()  # Asterisk's events of the recorded call now reach the listener

        engine = make_engine(postgresql)
        try:

            def calls() -> dict[str, Call]:
                with Session(engine) as s:
                    return {c.linkedid: c for c in s.scalars(select(Call))}

            await wait_for(
                "the listener to close the recorded call", lambda: calls()["1795915078.0"].ended_at is not None
            )
            rows = calls()
            assert sorted(rows) == sorted(linkedids)  # no call twice
            assert {lid: str(row.id) for lid, row in rows.items()} == {lid: got.pop() for lid, got in by_call.items()}
            assert rows["1795915078.0"].disposition == "answered"
        finally:
            engine.dispose()
        codes = processes.stop()
        assert codes == {"agi0": 0, "agi1": 0, "ami": 0}, {n: processes.log(n)[-2000:] for n in codes}
    finally:
        await ami.stop()
