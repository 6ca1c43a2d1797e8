"""Stopping `calltrack serve` in the middle of a long transcription: a real process, the real model.

The stop does not wait for the rest of the recording: the model stops within its current 30-second
window, the transcript is left pending with no attempt counted, and the next start transcribes it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import select

from schema import migrate
from schema.db import make_engine, make_session_factory
from schema.models import Transcript
from tests.integration.transcriber_helpers import archived, espeak

SENTENCES = [
    "Hello, I would like to book an appointment for Friday morning.",
    "My water heater is leaking in the basement and I need a plumber today.",
    "Hi, I am calling about a quote for a new roof. Can someone come out next week?",
    "Thank you for calling Acme plumbing, this is Sam, how can I help you?",
]


class Serve:
    """`calltrack serve --only transcriber` in its own process, its log read as it comes."""

    def __init__(self, cwd: Path, config: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLTRACK_")}
        env["CALLTRACK_CONFIG"] = str(config)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "calltrack.main", "serve", "--only", "transcriber"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, what: str, check: object, limit: float = 600.0) -> None:
        """A guard against a hang, not a timing: the wait is long, the test only needs it to happen."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if callable(check) and check():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"serve ended while waiting for {what}:\n{self.log}")
            time.sleep(0.1)
        raise AssertionError(f"no {what} after {limit:.0f} s:\n{self.log}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=600)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        return code

    @property
    def log(self) -> str:
        return "".join(self.lines)


def test_a_stop_during_a_long_transcription_leaves_it_for_the_next_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'calltrack.sqlite3'}"
    config = tmp_path / "calltrack.toml"
    config.write_text(
        f'[general]\ndata_dir = "{data}"\nlog_level = "INFO"\n'
        f'[database]\nurl = "{url}"\n'
        "[transcription]\npoll_seconds = 0.2\n",
        encoding="utf-8",
    )
    engine = make_engine(url)
    migrate.upgrade(engine)
    factory = make_session_factory(engine)
    archive = tmp_path / "archive"
    archive.mkdir()
    # some two minutes of speech: four of the model's 30-second windows and more
    audio = espeak(" ".join(SENTENCES * 5), tmp_path / "long-call.wav")
    _, rec_id = archived(factory, audio, archive)

    def transcript() -> Transcript | None:
        with factory() as s:
            return s.scalars(select(Transcript).where(Transcript.recording_id == rec_id)).one_or_none()

    first = Serve(tmp_path, config)
    try:
        first.wait_for("transcription", lambda: f"transcribing recording {rec_id}" in first.log)
    finally:
        code = first.stop()
    assert code == 0, first.log
    # "stopped at N s" between the model's windows, or "stopped before transcribing" when the signal
    # came while the file was being read
    assert f"recording {rec_id} stopped " in first.log and "transcribed again at the next start" in first.log, first.log
    t = transcript()
    assert t is not None
    assert (t.state, t.attempts, t.last_error, t.text) == ("pending", 0, None, None), first.log
    with factory() as s:
        assert s.get(Transcript, t.id).segments == []  # type: ignore[union-attr]

    second = Serve(tmp_path, config)
    try:
        second.wait_for("the transcript", lambda: (tr := transcript()) is not None and tr.state == "done")
    finally:
        code = second.stop()
    assert code == 0, second.log
    t = transcript()
    assert t is not None and t.attempts == 0
    said = (t.text or "").lower()
    assert "appointment" in said and "next week" in said, said
    assert t.seconds is not None and t.seconds > 100
    engine.dispose()
