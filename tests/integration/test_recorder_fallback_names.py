"""Recordings of calls routed by fallback, named by the call's key (issue 9, items 14 and 15)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from recorder.pipeline import Recorder
from schema.models import Account, Call, Recording, utcnow
from tests.integration.recorder_helpers import put_real, recorder_settings
from tracking.recording_names import key_stem, parse_stem


@pytest.mark.parametrize(
    ("system", "linkedid"),
    [
        ("asterisk", "1795915078.0"),
        ("pbx-east", "pbx-east-1795915078.12"),
        ("pbx1", "../../etc/passwd"),
        ("pbx1", "my call, #1 ~ -in"),
        ("Zürich", "in"),
        ("x", "a" * 149 + ";2"),
    ],
)
def test_key_names_are_safe_file_names_that_read_back(system: str, linkedid: str) -> None:
    stem = key_stem(system, linkedid)
    assert "/" not in stem and "-" not in stem and not stem.startswith(".") and len(stem) <= 200
    assert parse_stem(stem) == (system, linkedid)
    for suffix in ("-in", "-out"):  # the recorder's dual-channel parts never read as another key
        assert parse_stem(stem + suffix) is None


def test_a_key_too_long_for_a_file_name_is_hashed() -> None:
    stem = key_stem("pbx1", "%" * 151)
    assert len(stem) < 100 and parse_stem(stem) is None
    assert parse_stem("28") is None and parse_stem("ct~~x") is None


def call_row(session_factory: sessionmaker[Session], linkedid: str) -> tuple[int, int]:
    with session_factory() as s, s.begin():
        account = Account(name="Acme", timezone="America/New_York", public_key="pk-acme")
        s.add(account)
        s.flush()
        # the row as a fallback leaves it: written late (or by the AMI listener), no recording_file yet
        call = Call(
            system="asterisk",
            linkedid=linkedid,
            account_id=account.id,
            started_at=dt.datetime(2026, 11, 29, 15, 0, tzinfo=dt.UTC),
            ended_at=utcnow(),
        )
        s.add(call)
        s.flush()
        return call.id, account.id


def test_a_key_named_recording_is_linked_to_its_call(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path
) -> None:
    cfg = recorder_settings(settings, tmp_path)
    call_id, account_id = call_row(session_factory, "1795915078.0")
    put_real(asterisk_traffic, cfg.recorder.spool_dir, key_stem("asterisk", "1795915078.0") + ".wav")
    Recorder(cfg, session_factory).run_pass()
    with session_factory() as s:
        [rec] = s.scalars(select(Recording))
    assert (rec.state, rec.call_id, rec.account_id) == ("archived", call_id, account_id)
    assert f"account-{account_id}" in (rec.path or "")


def test_a_recording_archived_before_its_call_row_is_linked_when_the_row_appears(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path
) -> None:
    cfg = recorder_settings(settings, tmp_path)
    put_real(asterisk_traffic, cfg.recorder.spool_dir, key_stem("asterisk", "late.1") + ".wav")
    recorder = Recorder(cfg, session_factory)
    recorder.run_pass()  # the database had no row yet (the route's row waited in the AGI spool)
    with session_factory() as s:
        [rec] = s.scalars(select(Recording))
        assert (rec.state, rec.call_id) == ("archived", None)
    call_id, account_id = call_row(session_factory, "late.1")  # the spool is replayed
    recorder.run_pass()
    with session_factory() as s:
        [rec] = s.scalars(select(Recording))
    assert (rec.call_id, rec.account_id) == (call_id, account_id)
