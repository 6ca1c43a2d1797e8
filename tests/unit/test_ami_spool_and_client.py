"""The spool file, the noise filter, the reconnect backoff and panoramisk's protocol as wrapped."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from pathlib import Path

import pytest
from panoramisk.actions import Action

from ami_listener.client import ListenerProtocol, backoff
from ami_listener.sink import keep
from ami_listener.spool import Spool, StoredEvent, make_event
from tracking.caller_info import describe_number

AT = dt.datetime(2026, 11, 29, 1, 2, 3, 456789, tzinfo=dt.UTC)


def ev(n: int, name: str = 'Zoë "Z"\\ Ñ') -> StoredEvent:
    payload = {"Event": "Newchannel", "Uniqueid": f"1.{n}", "Linkedid": "1.0", "CallerIDName": name}
    return make_event(1000 + n, f"c1:{n}", AT, payload)


def test_spool_keeps_order_and_content_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "spool" / "pbx1.jsonl"
    spool = Spool(path, fsync=True)
    assert not spool.pending
    first = [ev(i) for i in range(5)]
    spool.append(first)
    spool.append([ev(i) for i in range(5, 8)])
    assert spool.pending
    spool.close()
    again = Spool(path)  # a restarted listener
    got, offset = again.read_chunk(100)
    assert got == [ev(i) for i in range(8)]
    assert got[0].received_at == AT and got[0].linkedid == "1.0" and got[0].event == "Newchannel"
    again.commit(offset)
    assert not again.pending and path.stat().st_size == 0


def test_a_spool_left_by_an_earlier_version_is_replayed(tmp_path: Path) -> None:
    # the spool was once written by the json module: spaces after separators, non-ASCII escaped
    import json

    path = tmp_path / "pbx1.jsonl"
    old = [ev(i) for i in range(3)]
    path.write_bytes(
        b"".join(
            json.dumps({"seq": e.seq, "key": e.key, "at": e.received_at.isoformat(), "payload": e.payload}).encode()
            + b"\n"
            for e in old
        )
    )
    spool = Spool(path)
    assert spool.last_seq() == old[-1].seq
    got, _ = spool.read_chunk(100)
    assert got == old and got[0].payload["CallerIDName"] == 'Zoë "Z"\\ Ñ'
    spool.append([ev(3)])  # and what the new version appends after them reads back as well
    spool.close()
    assert Spool(path).read_chunk(100)[0] == [*old, ev(3)]


def test_spool_replays_in_chunks_and_resumes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.jsonl", fsync=False)
    spool.append([ev(i) for i in range(10)])
    chunk, offset = spool.read_chunk(4)
    assert [e.seq for e in chunk] == [1000, 1001, 1002, 1003]
    spool.commit(offset)
    spool.append([ev(10)])  # newer events go after
    rest, offset = spool.read_chunk(100)
    assert [e.seq for e in rest] == list(range(1004, 1011))
    spool.commit(offset)
    assert not spool.pending


def test_a_line_cut_by_a_crash_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    spool = Spool(path, fsync=False)
    spool.append([ev(1), ev(2)])
    spool.close()
    with open(path, "ab") as fh:
        fh.write(b'{"seq": 3, "key": "c1:3", "at": "2026-')
    again = Spool(path)
    got, offset = again.read_chunk(10)
    assert [e.key for e in got] == ["c1:1", "c1:2"]
    again.commit(offset)
    assert not again.pending


def test_noise_filter() -> None:
    assert keep({"Event": "Newchannel"})
    assert keep({"Event": "Cdr"})
    assert keep({"Event": "VarSet", "Variable": "MIXMONITOR_FILENAME", "Value": "/x.wav"})
    assert keep({"Event": "VarSet", "Variable": "CALLTRACK_STATUS", "Value": "ok"})
    assert not keep({"Event": "VarSet", "Variable": "CT_SCENARIO", "Value": "x"})
    for noise in ("Newexten", "AGIExecStart", "AGIExecEnd", "DeviceStateChange", "SuccessfulAuth"):
        assert not keep({"Event": noise})
    assert keep({"Response": "Success", "ActionID": "calltrack-resync-ab-1", "EventList": "start"})
    assert not keep({"Response": "Success", "ActionID": "login-1"})


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    delays = [backoff(n, base=0.5, cap=60, rng=rng) for n in range(12)]
    assert 0.25 <= delays[0] <= 0.5
    assert 4 <= delays[4] <= 8
    assert all(30 <= d <= 60 for d in delays[8:])
    assert len({round(d, 6) for d in delays[8:]}) == 4  # not in step with other listeners


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class ChokingAction(Action):
    """Stands for the replies panoramisk 1.4 raises on inside data_received (a missing key)."""

    def add_message(self, message: object) -> bool:
        raise KeyError("eventlist")


async def test_protocol_reads_split_utf8_and_survives_a_broken_reply() -> None:
    got: list[dict[str, object]] = []
    proto = ListenerProtocol("pbx1", lambda m, now: got.append(m))
    transport = FakeTransport()
    proto.connection_made(transport)
    proto.data_received(b"Asterisk Call Manager/11.0.0\r\n")
    future = proto.send(ChokingAction({"Action": "Status", "ActionID": "a-1"}))
    assert b"Action: Status" in transport.written
    # a reply panoramisk's bookkeeping raises on: that action fails, the connection does not
    proto.data_received(b"Response: Success\r\nActionID: a-1\r\n\r\n")
    with pytest.raises(KeyError):
        await future
    assert not transport.closed
    name = "Zoë Ñúñez".encode()
    frame = b"Event: Newchannel\r\nCallerIDName: " + name + b"\r\nUniqueid: 1.1\r\n\r\n"
    cut = frame.index(b"\xc3") + 1  # inside the two bytes of the ë
    proto.data_received(frame[:cut])
    proto.data_received(frame[cut:])
    assert got == [{"Event": "Newchannel", "CallerIDName": "Zoë Ñúñez", "Uniqueid": "1.1"}]
    proto.connection_lost(None)
    assert proto.lost.done()


async def test_protocol_fails_pending_actions_when_the_line_drops() -> None:
    proto = ListenerProtocol("pbx1", lambda m, now: None)
    proto.connection_made(FakeTransport())
    future = proto.send(Action({"Action": "CoreShowChannels", "ActionID": "calltrack-resync-1"}), as_list=True)
    proto.connection_lost(ConnectionResetError())
    with pytest.raises(ConnectionError):
        await future


@pytest.mark.parametrize(
    ("number", "location", "country", "line_type"),
    [
        ("+14045551234", "Georgia", "US", "landline-or-mobile"),
        ("+33142685300", "Paris", "FR", "landline"),
        ("+447400123456", None, "GB", "mobile"),
        ("+18005550100", None, "US", "toll-free"),
        ("anonymous", None, None, None),
        ("<unknown>", None, None, None),
        ("100", None, None, None),
        ("+1404555", None, None, None),
        ("'; DROP TABLE calls; --", None, None, None),
    ],
)
def test_caller_info_offline(number: str, location: str | None, country: str | None, line_type: str | None) -> None:
    info = describe_number(number, "US")
    assert (info.country, info.line_type) == (country, line_type)
    if location is not None:
        assert info.location == location


def test_spool_knows_its_last_arrival_number(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.jsonl", fsync=False)
    assert spool.last_seq() == 0
    spool.append([ev(1), ev(2), ev(3)])
    assert spool.last_seq() == 1003
    spool.close()
    with open(tmp_path / "s.jsonl", "ab") as fh:
        fh.write(b'{"seq": 99999, "key"')  # cut by a crash
    assert Spool(tmp_path / "s.jsonl").last_seq() == 1003


async def test_arrival_numbers_keep_growing_when_the_clock_steps_back(tmp_path: Path) -> None:
    from unittest.mock import MagicMock

    from ami_listener.sink import EventSink

    # arrival numbers are microseconds since the epoch; here the clock says 5 s, then steps back to 4 s
    ticks = iter([5.0, 5.0, 4.0])
    sink = EventSink("pbx1", MagicMock(), Spool(tmp_path / "a.jsonl"), clock=lambda: next(ticks))
    for _ in range(3):
        sink.put({"Event": "Newchannel", "Uniqueid": "1.1", "Linkedid": "1.1"})
    assert [sink.queue.get_nowait().seq for _ in range(3)] == [5_000_000, 5_000_001, 5_000_002]

    # a restarted listener whose clock is behind the events its spool still holds
    left = Spool(tmp_path / "b.jsonl", fsync=False)
    left.append([ev(7)])  # seq 1007
    left.close()
    restarted = EventSink("pbx1", MagicMock(), Spool(tmp_path / "b.jsonl"), clock=lambda: 0.0)
    restarted.put({"Event": "Hangup"})
    assert restarted.queue.get_nowait().seq == 1008
