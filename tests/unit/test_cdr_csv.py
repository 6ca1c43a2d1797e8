"""Reading Asterisk's Master.csv (cdr_csv) for the channels a resync found gone: real formats, bad input."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from ami_listener import cdr_csv
from ami_listener.cdr_csv import CdrFile
from tests.fakes import cdr_csv as write
from tests.fakes.ami_server import call_frames, load_pjsip_capture

LEG = {"channel": "PJSIP/carrier-00000000", "uniqueid": "1796175587.0",
       "created_at": dt.datetime(2026, 12, 2, 1, 39, 47, tzinfo=dt.UTC)}  # fmt: skip


def recorded_cdr(asterisk_traffic: Path) -> dict[str, str]:
    frames = call_frames(load_pjsip_capture("sip-call-answered", asterisk_traffic))
    (cdr,) = [f.headers for f in frames if f.headers.get("Event") == "Cdr"]
    return cdr


def test_a_line_comes_back_as_amis_cdr_event(asterisk_traffic: Path, tmp_path: Path) -> None:
    cdr = recorded_cdr(asterisk_traffic)
    path = tmp_path / "Master.csv"
    path.write_text(write.line(cdr))
    (event,) = CdrFile(path).records([LEG])
    for key in cdr_csv.COLUMNS:
        assert event[key] == cdr[key], key
    assert event["Event"] == "Cdr" and event["UniqueID"] == "1796175587.0" and event["CalltrackSource"] == str(path)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"uniqueid": False, "userfield": False},
        {"uniqueid": False},
        {"newcolumns": True, "linkedid": "1796175587.0"},
    ],
)
def test_every_column_layout_cdr_conf_allows(
    asterisk_traffic: Path, tmp_path: Path, options: dict[str, object]
) -> None:
    cdr = recorded_cdr(asterisk_traffic)
    path = tmp_path / "Master.csv"
    path.write_text(write.line(cdr, **options))  # type: ignore[arg-type]
    (event,) = CdrFile(path).records([LEG])
    assert (event["Channel"], event["EndTime"], event["BillableSeconds"]) == (cdr["Channel"], cdr["EndTime"], "5")


def test_other_channels_old_lines_and_broken_lines_are_left_out(asterisk_traffic: Path, tmp_path: Path) -> None:
    cdr = recorded_cdr(asterisk_traffic)
    other = {**cdr, "Channel": "PJSIP/carrier-00000099", "DestinationChannel": "PJSIP/agent100-00000098"}
    reused = {**cdr, "UniqueID": "1796000000.4"}  # the same channel name before an Asterisk restart
    ancient = {**cdr, "StartTime": "2026-11-01 10:00:00", "EndTime": "2026-11-01 10:00:09"}
    path = tmp_path / "Master.csv"
    path.write_bytes(
        write.line(other).encode()
        + write.line(reused).encode()
        + write.line(ancient, uniqueid=False).encode()
        + b'"not","enough","columns"\n'
        + b'"\xff\xfe broken utf-8",'
        + write.line(cdr).encode()  # 17 columns after a stray field: still read
        + b"garbage without quotes, or commas that mean nothing\n"
        + write.line(cdr).encode()
        + b'"cut by a crash","'
    )
    events = CdrFile(path).records([LEG])
    assert [e["Channel"] for e in events] == ["PJSIP/carrier-00000000"]


def test_a_large_file_is_read_from_its_end(
    asterisk_traffic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cdr = recorded_cdr(asterisk_traffic)
    path = tmp_path / "Master.csv"
    filler = write.line({**cdr, "Channel": "PJSIP/x-00000001"})
    path.write_text(filler * 2000 + write.line(cdr))
    monkeypatch.setattr(cdr_csv, "TAIL_BYTES", len(filler) * 10 + 7)  # the read starts inside a line
    (event,) = CdrFile(path).records([LEG])
    assert event["EndTime"] == cdr["EndTime"]


def test_a_missing_or_unreadable_file_is_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reader = CdrFile(tmp_path / "nowhere" / "Master.csv")
    with caplog.at_level(logging.WARNING):
        assert reader.records([LEG]) == [] and reader.records([LEG]) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot be read" in warnings[0] and "estimated" in warnings[0]
    assert CdrFile(tmp_path).records([LEG]) == []  # a folder, not a file
