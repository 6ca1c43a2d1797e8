"""Raw AMI events replayed from the spool are stored once, on SQLite and PostgreSQL.

A listener that crashes after the database committed a replayed batch and
before it trimmed the spool file replays those events again at its next start;
``(system, event_key)`` is unique and the insert ignores what is already there,
so nothing is stored twice and no call is counted twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from ami_listener.sink import EventSink
from ami_listener.spool import Spool, StoredEvent, make_event
from schema.db import make_engine
from tests.fakes.ami_server import interleave
from tests.integration.ami_harness import calls_of, frames, kept_payloads, stored_payloads

SYSTEM = "pbx1"


def recorded_events(traffic: Path) -> list[StoredEvent]:
    """Two recorded calls as the listener would have spooled them (one connection's keys)."""
    stream = interleave(frames("answered", traffic), frames("busy", traffic))
    t0 = dt.datetime(2026, 11, 29, 1, 17, 58, tzinfo=dt.UTC)
    payloads = kept_payloads(stream)
    return [
        make_event(1_000 + i, f"conn-a:{i}", t0 + dt.timedelta(milliseconds=i), payload)
        for i, payload in enumerate(payloads)
    ]


async def replay(factory: sessionmaker[Session], spool_file: Path) -> EventSink:
    """One listener start with nothing new from Asterisk: it replays its spool, then stops."""
    spool = Spool(spool_file, fsync=False)
    sink = EventSink(SYSTEM, factory, spool)
    stop = asyncio.Event()
    stop.set()
    try:
        await asyncio.wait_for(sink.run(stop), 60)
    finally:
        spool.close()
    return sink


async def test_a_spool_replayed_again_after_a_crash_stores_nothing_twice(
    session_factory: sessionmaker[Session], database_url: str, tmp_path: Path, asterisk_traffic: Path
) -> None:
    events = recorded_events(asterisk_traffic)
    spool_file = tmp_path / "spool" / f"{SYSTEM}.jsonl"
    spool = Spool(spool_file, fsync=False)
    spool.append(events)
    spool.close()
    at_crash = tmp_path / "spool-at-crash.jsonl"
    shutil.copyfile(spool_file, at_crash)

    first = await replay(session_factory, spool_file)
    assert first.stored == len(events) and first.db_failures == 0
    assert spool_file.stat().st_size == 0
    engine = make_engine(database_url)
    try:
        stored = stored_payloads(engine, SYSTEM)
        calls = calls_of(engine, SYSTEM)
        assert stored == [ev.payload for ev in events]
        assert {c["disposition"] for c in calls.values()} == {"answered", "busy"}

        # the crash: the batch was committed, the spool file was not trimmed; the next start replays it all
        shutil.copyfile(at_crash, spool_file)
        again = await replay(session_factory, spool_file)
        assert again.db_failures == 0, "replaying events already stored failed"
        assert spool_file.stat().st_size == 0  # replayed and trimmed, not left for ever
        assert stored_payloads(engine, SYSTEM) == stored  # each event once, in order
        assert calls_of(engine, SYSTEM) == calls  # the same two calls, their timelines not doubled

        # and a third time, as a spool replayed twice by mistake would be
        shutil.copyfile(at_crash, spool_file)
        await replay(session_factory, spool_file)
        assert stored_payloads(engine, SYSTEM) == stored
        assert calls_of(engine, SYSTEM) == calls
    finally:
        engine.dispose()


async def test_a_stop_leaves_a_long_spool_for_the_next_start_and_loses_nothing(
    session_factory: sessionmaker[Session], database_url: str, tmp_path: Path, asterisk_traffic: Path
) -> None:
    """SIGTERM with a burst's spool still waiting: the listener replays for STOP_REPLAY_SECONDS at most,
    keeps the rest (and only the rest) in the spool, and the next start stores it."""
    events = recorded_events(asterisk_traffic)
    spool_file = tmp_path / "spool" / f"{SYSTEM}.jsonl"
    spool = Spool(spool_file, fsync=False)
    spool.append(events)
    spool.close()
    ticks = iter(range(0, 10**6))  # a clock that moves one second each time the sink reads it

    spool = Spool(spool_file, fsync=False)
    sink = EventSink(SYSTEM, session_factory, spool, batch_size=5, clock=lambda: float(next(ticks)))
    stop = asyncio.Event()
    stop.set()
    try:
        await asyncio.wait_for(sink.run(stop), 60)
    finally:
        spool.close()
    assert 0 < sink.stored < len(events), "the stop neither replayed a little nor left the rest"
    left = Spool(spool_file, fsync=False)
    try:
        waiting, _ = left.read_chunk(10**6)
    finally:
        left.close()
    assert [ev.key for ev in waiting] == [ev.key for ev in events[sink.stored :]]  # only what was not stored

    later = await replay(session_factory, spool_file)
    assert later.stored == len(events) - sink.stored
    assert spool_file.stat().st_size == 0
    engine = make_engine(database_url)
    try:
        assert stored_payloads(engine, SYSTEM) == [ev.payload for ev in events]  # all, once, in order
        assert {c["disposition"] for c in calls_of(engine, SYSTEM).values()} == {"answered", "busy"}
    finally:
        engine.dispose()
