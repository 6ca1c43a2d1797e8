"""The recorder pipeline with real ffmpeg, real MixMonitor WAVs and the real database."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from recorder.errors import FfmpegMissing
from recorder.pipeline import Job, Recorder
from schema.models import AmiEvent, Call, CallEvent, Recording, utcnow
from tests.integration.recorder_helpers import add_call, age, put_real, recorder_settings, write_wav


def rows(session_factory: sessionmaker[Session]) -> list[Recording]:
    with session_factory() as s:
        return list(s.scalars(select(Recording).order_by(Recording.id)))


def probe(path: Path) -> tuple[str, int]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,channels", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    codec, channels = out.split(",")
    return codec, int(channels)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize(("fmt", "codec"), [("mp3", "mp3"), ("opus", "opus"), ("flac", "flac")])
def test_each_format_round_trips_linked_to_its_call(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    asterisk_traffic: Path,
    fmt: str,
    codec: str,
) -> None:
    cfg = recorder_settings(settings, tmp_path, format=fmt)
    call_id, account_id = add_call(session_factory)
    source = put_real(asterisk_traffic, cfg.recorder.spool_dir, f"{call_id}.wav")

    report = Recorder(cfg, session_factory).run_pass()

    assert report.archived == [str(call_id)]
    (rec,) = rows(session_factory)
    # account folder, then the call's date in the account's timezone (22:30 in New York on the 28th)
    expected = (
        tmp_path
        / "archive"
        / f"account-{account_id}"
        / "2026"
        / "11"
        / "28"
        / f"{call_id}.{'ogg' if fmt == 'opus' else fmt}"
    )
    assert rec.path == str(expected)
    assert (rec.state, rec.call_id, rec.account_id, rec.format) == ("archived", call_id, account_id, fmt)
    assert rec.duration == pytest.approx(5.5, abs=cfg.recorder.verify_tolerance_seconds)
    assert rec.sha256 == sha(expected) and rec.bytes == expected.stat().st_size
    assert probe(expected) == (codec, 1)
    assert not source.exists()
    assert files_under(tmp_path / "archive") == [expected]  # no temporary file left behind


def test_mp3_is_compact(settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    cfg = recorder_settings(settings, tmp_path, stream_above_seconds=0)  # the streaming path
    source = write_wav(cfg.recorder.spool_dir / "orphan-1.wav", 20.0)
    wav_size = source.stat().st_size

    Recorder(cfg, session_factory).run_pass()

    (rec,) = rows(session_factory)
    assert rec.state == "archived" and rec.duration == pytest.approx(20.0, abs=0.1)
    assert rec.bytes is not None and rec.bytes < wav_size / 3  # 32 kbit/s against 128 kbit/s of PCM


def test_recording_of_an_unknown_call_is_archived_as_an_orphan(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path
) -> None:
    cfg = recorder_settings(settings, tmp_path)
    put_real(asterisk_traffic, cfg.recorder.spool_dir, "99999.wav")

    Recorder(cfg, session_factory).run_pass()

    (rec,) = rows(session_factory)
    assert (rec.state, rec.call_id, rec.account_id) == ("archived", None, None)
    assert Path(rec.path or "").parent.parent.parent.parent.name == "no-account"


def test_keep_source(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path
) -> None:
    cfg = recorder_settings(settings, tmp_path, keep_source=True)
    source = put_real(asterisk_traffic, cfg.recorder.spool_dir, "5.wav")
    before = source.read_bytes()

    Recorder(cfg, session_factory).run_pass()
    second = Recorder(cfg, session_factory).run_pass()

    assert source.read_bytes() == before
    assert [r.state for r in rows(session_factory)] == ["archived"]
    assert second.archived == []  # not archived twice


def test_bad_files_are_retried_then_failed_and_never_stop_the_others(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path
) -> None:
    cfg = recorder_settings(settings, tmp_path, max_attempts=2)
    spool = cfg.recorder.spool_dir
    (spool / "empty.wav").write_bytes(b"")
    (spool / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4)
    put_real(asterisk_traffic, spool, "headeronly.wav", "noanswer-1795915093.5.wav")
    put_real(asterisk_traffic, spool, "good.wav")
    for p in spool.iterdir():
        age(p, 3600)
    before = {p.name: p.read_bytes() for p in spool.iterdir() if p.name not in ("good.wav", "headeronly.wav")}

    first = Recorder(cfg, session_factory).run_pass()

    assert first.archived == ["good"]
    # A call never connected leaves a WAV header without audio: nothing to keep, nothing to retry.
    assert first.empty == ["headeronly"]
    assert not (spool / "headeronly.wav").exists()
    (empty_row,) = [r for r in rows(session_factory) if Path(r.source_path).stem == "headeronly"]
    assert (empty_row.state, empty_row.path) == ("empty", None)
    assert empty_row.last_error.startswith("no audio")
    reasons = dict(first.retrying)
    assert reasons["empty"] == "empty file (0 bytes)"
    assert reasons["corrupt"].startswith("corrupt WAV")
    assert "headeronly" not in reasons
    pending = {Path(r.source_path).stem: r for r in rows(session_factory) if r.state == "pending"}
    assert {k: (r.attempts, r.last_error) for k, r in pending.items()} == {k: (1, v) for k, v in reasons.items()}

    second = Recorder(cfg, session_factory).run_pass()

    assert sorted(k for k, _ in second.failed) == ["corrupt", "empty"]
    assert {r.state for r in rows(session_factory) if Path(r.source_path).stem not in ("good", "headeronly")} == {
        "failed"
    }
    assert {p.name: p.read_bytes() for p in spool.iterdir()} == before  # sources untouched
    third = Recorder(cfg, session_factory).run_pass()
    assert (third.archived, third.retrying, third.failed) == ([], [], [])  # failed for good: left alone
    assert len(files_under(tmp_path / "archive")) == 1


def test_failed_attempts_wait_with_backoff(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    cfg = recorder_settings(settings, tmp_path, retry_seconds=60, max_attempts=5)
    (cfg.recorder.spool_dir / "1.wav").write_bytes(b"")
    age(cfg.recorder.spool_dir / "1.wav", 3600)
    start = utcnow()
    # every pass reads the test's clock: a first pass that takes a while on a loaded machine
    # must not move its retry past the second pass
    Recorder(cfg, session_factory, clock=lambda: start).run_pass()
    assert Recorder(cfg, session_factory, clock=lambda: start + dt.timedelta(seconds=59)).due()[0] == []  # waiting
    later = Recorder(cfg, session_factory, clock=lambda: start + dt.timedelta(seconds=61))
    later.run_pass()

    (rec,) = rows(session_factory)
    assert rec.attempts == 2
    assert rec.next_attempt_at is not None
    wait = (rec.next_attempt_at - start).total_seconds()
    assert 61 + 110 < wait < 61 + 130  # 120 s after the second attempt


def test_still_growing_files_wait(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path
) -> None:
    cfg = recorder_settings(settings, tmp_path, quiet_seconds=10, settle_seconds=300)
    live_id, _ = add_call(session_factory, ended=False, account="Live")
    ended_id, _ = add_call(session_factory, ended=True, account="Ended")
    spool = cfg.recorder.spool_dir
    live = put_real(asterisk_traffic, spool, f"{live_id}.wav", old=60)  # call up, written a minute ago
    fresh = put_real(asterisk_traffic, spool, f"{ended_id}.wav", old=1)  # call over, written just now
    rec = Recorder(cfg, session_factory)

    tasks, waiting = rec.due()
    assert (tasks, waiting) == ([], 2)
    assert rows(session_factory) == []

    age(fresh, 11)  # stopped growing after its call ended
    assert [t.entry.key for t in rec.due()[0]] == [str(ended_id)]
    age(live, 301)  # no call end (listener down?), but untouched for the settle time
    assert sorted(t.entry.key for t in rec.due()[0]) == sorted([str(ended_id), str(live_id)])
    assert [t.entry.key for t in Recorder(cfg, session_factory, settle_seconds=0).due()[0]] != []


@pytest.mark.parametrize("how", ["timeline", "raw event"])
def test_mixmonitor_stopped_during_the_call_counts_as_finished(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path, how: str
) -> None:
    cfg = recorder_settings(settings, tmp_path)
    call_id, _ = add_call(session_factory, ended=False)
    other_id, _ = add_call(session_factory, ended=False, account=None)  # another live call, its own channel
    with session_factory() as s, s.begin():
        other = s.get(Call, other_id)
        assert other is not None
        other.uniqueid = "1795915099.7"
    put_real(asterisk_traffic, cfg.recorder.spool_dir, f"{call_id}.wav", old=60)
    assert Recorder(cfg, session_factory).due() == ([], 1)

    def stopped(cid: int, uniqueid: str, n: int) -> None:
        with session_factory() as s, s.begin():
            if how == "timeline":  # as the AMI listener notes it
                s.add(CallEvent(call_id=cid, at=utcnow(), kind="recording-stopped"))
            else:
                s.add(
                    AmiEvent(
                        system="asterisk", event_key=f"c1:{n}", seq=n, event="MixMonitorStop", uniqueid=uniqueid,
                        linkedid="1795915078.0", received_at=utcnow(), payload={"Event": "MixMonitorStop"},
                    )
                )  # fmt: skip

    stopped(other_id, "1795915099.7", 1)  # the other call's recording stopping says nothing of this one's
    report = Recorder(cfg, session_factory).run_pass()
    assert (report.archived, report.waiting) == ([], 1)
    stopped(call_id, "1795915078.1", 2)
    assert Recorder(cfg, session_factory).run_pass().archived == [str(call_id)]


def test_file_changing_during_encoding_is_left_for_later(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path
) -> None:
    cfg = recorder_settings(settings, tmp_path)
    source = put_real(asterisk_traffic, cfg.recorder.spool_dir, "7.wav")

    def grow(step: str, job: Job) -> None:
        if step == "encoded":
            with open(source, "ab") as f:
                f.write(b"\0" * 3200)

    report = Recorder(cfg, session_factory, hook=grow).run_pass()

    assert report.archived == [] and report.waiting == 1
    (rec,) = rows(session_factory)
    assert (rec.state, rec.attempts) == ("pending", 0)
    assert files_under(tmp_path / "archive") == []
    age(source, 3600)
    later = utcnow() + dt.timedelta(seconds=cfg.recorder.quiet_seconds + 1)
    assert Recorder(cfg, session_factory, clock=lambda: later).run_pass().archived == ["7"]


class SimulatedCrash(BaseException):
    """The process dying (kill -9, power cut): nothing is cleaned up."""


@pytest.mark.parametrize("step", ["encoded", "verified", "renamed", "committed"])
def test_crash_between_steps_neither_loses_nor_duplicates(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path, step: str
) -> None:
    cfg = recorder_settings(settings, tmp_path)
    call_id, _ = add_call(session_factory)
    source = put_real(asterisk_traffic, cfg.recorder.spool_dir, f"{call_id}.wav")
    original = source.read_bytes()

    def crash(at: str, job: Job) -> None:
        if at == step:
            raise SimulatedCrash(at)

    with pytest.raises(SimulatedCrash):
        Recorder(cfg, session_factory, hook=crash).run_pass()
    assert source.read_bytes() == original  # never deleted before the row says archived
    # after the restart, once the dead process's claim has run out
    later = utcnow() + dt.timedelta(minutes=11)
    report = Recorder(cfg, session_factory, clock=lambda: later).run_pass()

    (rec,) = rows(session_factory)
    assert rec.state == "archived"
    archives = files_under(tmp_path / "archive")
    assert archives == [Path(rec.path or "")]
    assert sha(archives[0]) == rec.sha256
    assert not source.exists()
    if step == "committed":
        assert report.cleaned == 1 and report.archived == []
    else:
        assert report.archived == [str(call_id)]


@pytest.mark.parametrize("harm", ["damaged", "missing"])
def test_damaged_or_missing_archive_with_its_source_still_in_the_spool_is_archived_again(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path, harm: str
) -> None:
    """Never lose a recording: the source goes only once an archive proves good, even one that vanished."""
    cfg = recorder_settings(settings, tmp_path)
    source = put_real(asterisk_traffic, cfg.recorder.spool_dir, "8.wav")

    def crash(at: str, job: Job) -> None:
        if at == "committed":
            raise SimulatedCrash(at)

    with pytest.raises(SimulatedCrash):
        Recorder(cfg, session_factory, hook=crash).run_pass()
    (rec,) = rows(session_factory)
    if harm == "damaged":
        Path(rec.path or "").write_bytes(b"damaged")
    else:  # deleted by hand, or a disk that lost it: reading it fails
        Path(rec.path or "").unlink()

    report = Recorder(cfg, session_factory).run_pass()

    assert report.archived == ["8"]
    (rec,) = rows(session_factory)
    assert rec.state == "archived" and sha(Path(rec.path or "")) == rec.sha256
    assert not source.exists()


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (CI runs as root)")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"this machine does not let root mount a tmpfs: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_unwritable_archive_folder(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path
) -> None:
    cfg = recorder_settings(settings, tmp_path)
    source = put_real(asterisk_traffic, cfg.recorder.spool_dir, "9.wav")
    original = source.read_bytes()

    with mounted_tmpfs(tmp_path / "archive", "ro,size=1m"):
        report = Recorder(cfg, session_factory).run_pass()

    ((key, reason),) = report.retrying
    assert key == "9" and reason.startswith("archive folder not writable") and "Read-only file system" in reason
    assert source.read_bytes() == original
    (rec,) = rows(session_factory)
    assert (rec.state, rec.last_error) == ("pending", reason)
    # writable again: the retry archives it
    assert Recorder(cfg, session_factory).run_pass().archived == ["9"]


@pytest.mark.parametrize("stream_above", [600, 0], ids=["pydub", "streamed"])
def test_full_disk(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, stream_above: int
) -> None:
    cfg = recorder_settings(settings, tmp_path, stream_above_seconds=stream_above)
    source = write_wav(cfg.recorder.spool_dir / "10.wav", 30.0)  # about 120 kB of MP3
    original = source.read_bytes()

    with mounted_tmpfs(tmp_path / "archive", "size=32k"):
        report = Recorder(cfg, session_factory).run_pass()
        ((_, reason),) = report.retrying
        assert reason.startswith("disk full")
        assert files_under(tmp_path / "archive") == []  # the partial temporary file is removed
    assert source.read_bytes() == original


def test_missing_ffmpeg_is_reported_at_start(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    cfg = recorder_settings(settings, tmp_path, ffmpeg=str(tmp_path / "no" / "ffmpeg"))
    with pytest.raises(FfmpegMissing, match=r"apt-get install ffmpeg"):
        Recorder(cfg, session_factory)
    cfg = recorder_settings(settings, tmp_path, ffmpeg="ffmpeg-not-installed-here")
    with pytest.raises(FfmpegMissing, match=r"not an executable program"):
        Recorder(cfg, session_factory)


@pytest.mark.parametrize("stream_above", [600, 0], ids=["pydub", "streamed"])
def test_ffmpeg_removed_while_running(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    asterisk_traffic: Path,
    stream_above: int,
) -> None:
    program = tmp_path / "bin" / "ffmpeg"
    program.parent.mkdir()
    program.symlink_to(shutil.which("ffmpeg") or "/usr/bin/ffmpeg")
    cfg = recorder_settings(settings, tmp_path, ffmpeg=str(program), stream_above_seconds=stream_above)
    recorder = Recorder(cfg, session_factory)
    source = put_real(asterisk_traffic, cfg.recorder.spool_dir, "12.wav")
    program.unlink()  # uninstalled by an upgrade gone wrong

    report = recorder.run_pass()

    ((_, reason),) = report.retrying
    assert "apt-get install ffmpeg" in reason
    assert source.exists() and files_under(tmp_path / "archive") == []
    (rec,) = rows(session_factory)
    assert (rec.state, rec.last_error) == ("pending", reason)


def test_dual_channel_recording_is_merged_to_stereo(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    cfg = recorder_settings(settings, tmp_path, dual_channel=True)
    spool = cfg.recorder.spool_dir
    write_wav(spool / "11-in.wav", 3.0)
    write_wav(spool / "11-out.wav", 2.5)

    report = Recorder(cfg, session_factory).run_pass()

    assert report.archived == ["11"]
    (rec,) = rows(session_factory)
    assert rec.source_path == str(spool / "11.wav")
    assert rec.duration == pytest.approx(3.0, abs=0.1)
    assert probe(Path(rec.path or "")) == ("mp3", 2)
    assert list(spool.iterdir()) == []


# --- recordings cut by an Asterisk crash --------------------------------------------------------


def crash_header(path: Path, extra: bytes = b"", declared: int | None = None) -> Path:
    """*path* as Asterisk's formats/format_wav.c leaves it when Asterisk dies mid-call: write_header()
    wrote RIFF and data sizes 0 (offsets 4 and 40) when the file was opened, and update_header(), which
    fills them in at close, never ran. With *declared*, the data size written instead (a header that
    claims more than the file holds)."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"RIFF" and data[36:40] == b"data"  # format_wav.c's 44-byte header
    data[4:8] = struct.pack("<I", 0 if declared is None else declared + 36)
    data[40:44] = struct.pack("<I", 0 if declared is None else declared)
    path.write_bytes(bytes(data) + extra)
    age(path, 3600)
    return path


def ffprobe_duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out)


@pytest.mark.parametrize(("fmt", "stream_above"), [("mp3", 600), ("mp3", 0), ("opus", 600), ("flac", 0)])
def test_a_recording_cut_by_an_asterisk_crash_is_recovered(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    asterisk_traffic: Path,
    fmt: str,
    stream_above: int,
) -> None:
    cfg = recorder_settings(settings, tmp_path, format=fmt, stream_above_seconds=stream_above)
    call_id, _ = add_call(session_factory)
    source = crash_header(put_real(asterisk_traffic, cfg.recorder.spool_dir, f"{call_id}.wav"))

    report = Recorder(cfg, session_factory).run_pass()

    assert (report.archived, report.retrying, report.repaired) == ([str(call_id)], [], [str(call_id)])
    (rec,) = rows(session_factory)
    assert (rec.state, rec.call_id, rec.last_error) == ("archived", call_id, None)
    assert rec.duration == pytest.approx(5.5, abs=cfg.recorder.verify_tolerance_seconds)
    # all of the call, not the 0 s the header declared (ffprobe estimates an MP3's length from its bitrate)
    assert ffprobe_duration(Path(rec.path or "")) == pytest.approx(5.5, abs=0.25)
    assert rec.note == (
        f"WAV header repaired ({call_id}.wav: data size 0 (never written: the recording was cut before Asterisk "
        "closed the file); the audio runs to the end of the file)"
    )
    assert not source.exists()


@pytest.mark.parametrize("damage", ["half a sample", "declared too large"])
def test_other_untrustworthy_headers_are_repaired(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path, damage: str
) -> None:
    cfg = recorder_settings(settings, tmp_path)
    spool = cfg.recorder.spool_dir
    if damage == "half a sample":  # the crash came in the middle of a write
        crash_header(put_real(asterisk_traffic, spool, "21.wav"), extra=b"\x11")
        expected = "1 byte(s) of a partial sample at the end dropped"
    else:  # closed with 11 s of audio, then cut to half (an interrupted copy)
        crash_header(put_real(asterisk_traffic, spool, "21.wav"), declared=176_000)
        expected = "truncated: the header declares 11.00 s of audio, the file holds 5.50 s, which was kept"

    report = Recorder(cfg, session_factory).run_pass()

    assert report.archived == ["21"], report.retrying
    (rec,) = rows(session_factory)
    assert rec.duration == pytest.approx(5.5, abs=cfg.recorder.verify_tolerance_seconds)
    assert rec.note is not None and expected in rec.note
    archive = Path(rec.path or "")

    # the whole file arrives again (the copy redone): archived again, not deleted as already done
    full = put_real(asterisk_traffic, spool, "21.wav", old=0)
    write_wav(full, 11.0, old=0)
    later = utcnow() + dt.timedelta(hours=1)
    again = Recorder(cfg, session_factory, settle_seconds=0, clock=lambda: later).run_pass()

    assert again.archived == ["21"] and again.cleaned == 0
    (rec,) = rows(session_factory)
    assert (rec.state, rec.note) == ("archived", None)
    assert rec.duration == pytest.approx(11.0, abs=cfg.recorder.verify_tolerance_seconds)
    assert not full.exists()
    assert files_under(tmp_path / "archive") == [archive] == [Path(rec.path or "")]  # replaced, no stray copy


def test_dual_channel_files_cut_by_a_crash(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path
) -> None:
    cfg = recorder_settings(settings, tmp_path, dual_channel=True)
    spool = cfg.recorder.spool_dir
    crash_header(put_real(asterisk_traffic, spool, "22-in.wav"))
    write_wav(spool / "22-out.wav", 5.0)  # this one was closed: its header is sound

    report = Recorder(cfg, session_factory).run_pass()

    assert report.archived == ["22"], report.retrying
    (rec,) = rows(session_factory)
    assert probe(Path(rec.path or "")) == ("mp3", 2)
    assert rec.duration == pytest.approx(5.5, abs=cfg.recorder.verify_tolerance_seconds)
    assert rec.note is not None and "22-in.wav: data size 0" in rec.note and "22-out.wav" not in rec.note
    assert list(spool.iterdir()) == []


# --- verification --------------------------------------------------------------------------------


def test_an_archive_of_the_wrong_length_fails_verification_and_keeps_the_source(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path
) -> None:
    """The archive ffmpeg wrote is a valid MP3, but of 2 s of a 5.5 s call: never archived, never
    the source's loss."""
    cfg = recorder_settings(settings, tmp_path, max_attempts=2)
    call_id, _ = add_call(session_factory)
    source = put_real(asterisk_traffic, cfg.recorder.spool_dir, f"{call_id}.wav")
    original = source.read_bytes()

    def short_archive(step: str, job: Job) -> None:
        if step == "encoded":  # what an encoder that stops early would leave
            assert job.temp is not None
            subprocess.run(
                ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-t", "2", "-f", "mp3", str(job.temp)], check=True
            )

    first = Recorder(cfg, session_factory, hook=short_archive).run_pass()

    ((key, reason),) = first.retrying
    assert key == str(call_id) and first.archived == []
    assert reason.startswith("verification failed: the archive decodes to 2.0") and "the source is 5.50 s" in reason
    assert source.read_bytes() == original
    (rec,) = rows(session_factory)
    assert (rec.state, rec.attempts, rec.last_error, rec.sha256) == ("pending", 1, reason, None)
    assert files_under(tmp_path / "archive") == []  # the bad archive is not kept

    second = Recorder(cfg, session_factory, hook=short_archive).run_pass()

    assert [k for k, _ in second.failed] == [str(call_id)]
    (rec,) = rows(session_factory)
    assert (rec.state, rec.path) == ("failed", None)
    assert source.read_bytes() == original  # failed for good, and the audio is still there
    assert files_under(tmp_path / "archive") == []


# --- do-not-track callers ------------------------------------------------------------------------


@pytest.mark.parametrize("keep_source", [False, True])
def test_a_do_not_track_callers_recording_is_deleted_unheard(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    asterisk_traffic: Path,
    keep_source: bool,
) -> None:
    cfg = recorder_settings(settings, tmp_path, keep_source=keep_source)
    call_id, _ = add_call(session_factory, do_not_track=True)
    other_id, _ = add_call(session_factory, account="Other")
    spool = cfg.recorder.spool_dir
    source = put_real(asterisk_traffic, spool, f"{call_id}.wav")
    put_real(asterisk_traffic, spool, f"{other_id}.wav")

    report = Recorder(cfg, session_factory).run_pass()

    assert (report.discarded, report.archived) == ([str(call_id)], [str(other_id)])
    assert not source.exists()  # even with keep_source: the caller asked not to be tracked
    untracked = {r.call_id: r for r in rows(session_factory)}[call_id]
    assert (untracked.state, untracked.path, untracked.sha256, untracked.bytes) == ("discarded", None, None, None)
    assert untracked.note is not None and "do-not-track" in untracked.note
    archived = files_under(tmp_path / "archive")
    assert [p.stem for p in archived] == [str(other_id)]  # nothing of the untracked call was encoded
    again = Recorder(cfg, session_factory).run_pass()
    assert (again.archived, again.discarded) == ([], [])


def test_log_lines_name_the_recording_the_call_and_the_file(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    asterisk_traffic: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = recorder_settings(settings, tmp_path)
    for name in ("A", "B", "C"):  # so that the call's id is not the recording's
        call_id, _ = add_call(session_factory, account=name)
    spool = cfg.recorder.spool_dir
    source = crash_header(put_real(asterisk_traffic, spool, f"{call_id}.wav"))
    (spool / "broken.wav").write_bytes(b"")
    age(spool / "broken.wav", 3600)

    with caplog.at_level(logging.INFO, logger="recorder.pipeline"):
        Recorder(cfg, session_factory).run_pass()

    recs = {Path(r.source_path).stem: r.id for r in rows(session_factory)}
    assert recs[str(call_id)] != call_id
    lines = [r.getMessage() for r in caplog.records]
    label = f"recording {recs[str(call_id)]} (call {call_id}, {source})"
    assert any(line.startswith(f"{label} archived to ") for line in lines), lines
    assert any(line.startswith(f"{label}: WAV header repaired") for line in lines), lines
    broken = f"recording {recs['broken']} (no known call, {spool / 'broken.wav'}) failed, will retry: empty file"
    assert any(line.startswith(broken) for line in lines), lines
    assert not any(line.startswith(f"recording {call_id} ") for line in lines)
