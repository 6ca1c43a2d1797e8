"""Shared set-up for the transcriber tests: speech synthesized by espeak-ng at 8 kHz, archived recordings."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from schema.models import Account, Call, Recording, utcnow

#: the real Asterisk prompt MixMonitor recorded (5.5 s, 8 kHz mono)
PROMPT = "answered-1795915078.1.wav"
PROMPT_WORDS = "goodbye thank you for trying out the asterisk open source pbx"


def espeak(text: str, dest: Path, *, rate: int = 8000, speed: int = 130, gap: int = 6) -> Path:
    """*text* spoken by espeak-ng (US English), resampled to *rate* Hz mono 16-bit like a phone line."""
    raw = dest.with_suffix(".espeak.wav")
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", str(speed), "-g", str(gap), "-w", str(raw), text],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(raw), "-ar", str(rate), "-ac", "1", str(dest)],
        check=True,
        capture_output=True,
    )
    raw.unlink()
    return dest


def stereo(left: Path, right: Path, dest: Path, *, right_delay: float = 0.0) -> Path:
    """A dual-channel recording as the recorder archives one: caller left, agent right."""
    import wave

    def seconds(p: Path) -> float:
        with wave.open(str(p)) as w:
            return w.getnframes() / w.getframerate()

    total = max(seconds(left), seconds(right) + right_delay)
    graph = f"[0:a]apad[l];[1:a]adelay={int(right_delay * 1000)},apad[r];[l][r]join=inputs=2:channel_layout=stereo[a]"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(left), "-i", str(right), "-filter_complex", graph]
        + ["-map", "[a]", "-t", f"{total:.3f}", str(dest)],
        check=True,
        capture_output=True,
    )
    return dest


def to_mp3(src: Path, dest: Path) -> Path:
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), "-b:a", "32k", str(dest)],
        check=True,
        capture_output=True,
    )
    return dest


def transcription_settings(settings: Settings, tmp_path: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {"retry_seconds": 0, "max_attempts": 3, "nice": 0}
    values.update(changes)
    archive = tmp_path / "archive"
    archive.mkdir(exist_ok=True)
    return settings.replace(
        transcription=dataclasses.replace(settings.transcription, **values),
        recorder=dataclasses.replace(settings.recorder, archive_dir=str(archive)),
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def archived(
    session_factory: sessionmaker[Session],
    audio: Path,
    archive: Path,
    *,
    account: str | None = "Acme",
    do_not_track: bool = False,
    transcription: bool = True,
) -> tuple[int, int]:
    """A call of *account* with *audio* as its archived recording; (call id, recording id)."""
    dest = archive / f"{os.urandom(4).hex()}{audio.suffix}"
    shutil.copyfile(audio, dest)
    with session_factory() as s, s.begin():
        account_id = None
        if account:
            acc = s.query(Account).filter_by(name=account).one_or_none()
            if acc is None:
                acc = Account(name=account, timezone="UTC", public_key=f"pk-{account}", transcription=transcription)
                s.add(acc)
                s.flush()
            account_id = acc.id
        call = Call(
            system="asterisk",
            linkedid=f"1795915078.{os.urandom(3).hex()}",
            account_id=account_id,
            started_at=utcnow() - dt.timedelta(minutes=5),
            answered_at=utcnow() - dt.timedelta(minutes=5),
            ended_at=utcnow() - dt.timedelta(minutes=4),
            talk_time=60.0,
            disposition="answered",
            do_not_track=do_not_track or None,
        )
        s.add(call)
        s.flush()
        rec = Recording(
            call_id=call.id,
            account_id=account_id,
            source_path=f"/spool/{dest.name}",
            path=str(dest),
            format=audio.suffix.lstrip("."),
            bytes=dest.stat().st_size,
            sha256=sha256(dest),
            state="archived",
            archived_at=utcnow(),
        )
        s.add(rec)
        s.flush()
        return call.id, rec.id
