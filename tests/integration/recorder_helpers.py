"""Shared set-up for the recorder tests: settings, WAVs, calls, a recorder."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import wave
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from recorder.pipeline import Recorder
from schema.models import Account, Call, utcnow

REAL = "answered-1795915078.1.wav"  # 5.5 s of real MixMonitor output


def recorder_settings(settings: Settings, tmp_path: Path, **changes: Any) -> Settings:
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    values: dict[str, Any] = {
        "spool_dir": spool,
        "archive_dir": str(tmp_path / "archive"),
        "retry_seconds": 0,
        "max_attempts": 3,
    }
    values.update(changes)
    return settings.replace(recorder=dataclasses.replace(settings.recorder, **values))


def make_recorder(settings: Settings, session_factory: sessionmaker[Session], **kwargs: Any) -> Recorder:
    return Recorder(settings, session_factory, **kwargs)


def age(path: Path, seconds: float) -> None:
    """Make *path* look untouched for *seconds*."""
    when = (utcnow() - dt.timedelta(seconds=seconds)).timestamp()
    os.utime(path, (when, when))


def put_real(traffic: Path, spool: Path, name: str, scenario: str = REAL, old: float = 3600) -> Path:
    dest = spool / name
    shutil.copyfile(traffic / "recordings" / scenario, dest)
    age(dest, old)
    return dest


def write_wav(path: Path, seconds: float, rate: int = 8000, old: float = 3600) -> Path:
    frames = int(seconds * rate)
    pattern = bytes((i * 37) % 256 for i in range(512))
    data = (pattern * (frames * 2 // len(pattern) + 1))[: frames * 2]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data)
    age(path, old)
    return path


def add_call(
    session_factory: sessionmaker[Session], ended: bool = True, account: str | None = "Acme", do_not_track: bool = False
) -> tuple[int, int | None]:
    with session_factory() as s, s.begin():
        account_id = None
        if account:
            acc = Account(name=account, timezone="America/New_York", public_key=f"pk-{account}")
            s.add(acc)
            s.flush()
            account_id = acc.id
        call = Call(
            system="asterisk",
            linkedid=f"1795915078.{os.urandom(3).hex()}",
            uniqueid="1795915078.1",
            account_id=account_id,
            started_at=dt.datetime(2026, 11, 29, 3, 30, tzinfo=dt.UTC),  # 22:30 on the 28th in New York
            ended_at=utcnow() if ended else None,
            do_not_track=do_not_track or None,
        )
        s.add(call)
        s.flush()
        return call.id, account_id
