"""Reading MixMonitor WAV headers: the real files and every kind of broken one."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import pytest

from recorder.errors import BadRecording, VerifyFailed
from recorder.ffmpeg import parse_framecrc
from recorder.spool import scan
from recorder.store import backoff_seconds
from recorder.wavfile import read_wav_info


def write_wav(path: Path, seconds: float, rate: int = 8000, channels: int = 1) -> Path:
    frames = int(seconds * rate)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(range(256)) * (frames * channels * 2 // 256) + b"\0" * (frames * channels * 2 % 256))
    return path


def test_real_mixmonitor_recordings(asterisk_traffic: Path) -> None:
    info = read_wav_info(asterisk_traffic / "recordings" / "answered-1795915078.1.wav")
    assert (info.channels, info.rate, info.sample_width) == (1, 8000, 2)
    assert info.duration == pytest.approx(5.5)
    assert read_wav_info(asterisk_traffic / "recordings" / "mixstop-1795915181.31.wav").duration == pytest.approx(
        (51564 - 44) / 16000
    )


def test_header_only_recording_of_an_unanswered_call_is_refused(asterisk_traffic: Path) -> None:
    with pytest.raises(BadRecording, match="only its header"):
        read_wav_info(asterisk_traffic / "recordings" / "noanswer-1795915093.5.wav")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "1.wav").write_bytes(b"")
    with pytest.raises(BadRecording, match="empty file"):
        read_wav_info(tmp_path / "1.wav")


def test_not_a_wav(tmp_path: Path) -> None:
    (tmp_path / "1.wav").write_bytes(b"ID3\x03\x00garbage" * 10)
    with pytest.raises(BadRecording, match="not a WAV"):
        read_wav_info(tmp_path / "1.wav")


def test_truncated_keeps_the_audio_present(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "1.wav", 2.0)
    data = path.read_bytes()
    path.write_bytes(data[: 44 + 16000])  # cut after its header was written (an interrupted copy)
    info = read_wav_info(path)
    assert info.duration == pytest.approx(1.0) and info.data_bytes == 16000
    assert info.repair == "truncated: the header declares 2.00 s of audio, the file holds 1.00 s, which was kept"


def test_a_sound_header_needs_no_repair(asterisk_traffic: Path) -> None:
    for wav in (asterisk_traffic / "recordings").glob("*.wav"):
        try:
            assert read_wav_info(wav).repair == "", wav.name
        except BadRecording:  # the header-only files of calls never connected
            pass


def crashed(source: Path, dest: Path, extra: bytes = b"") -> Path:
    """*source* as Asterisk's format_wav.c leaves it when Asterisk dies before closing the file:
    write_header() put 0 in the RIFF size (offset 4) and the data size (offset 40); update_header()
    never ran."""
    data = bytearray(source.read_bytes())
    assert data[36:40] == b"data"  # format_wav.c's 44-byte header
    data[4:8] = data[40:44] = struct.pack("<I", 0)
    dest.write_bytes(bytes(data) + extra)
    return dest


def test_recording_cut_by_a_crash(asterisk_traffic: Path, tmp_path: Path) -> None:
    info = read_wav_info(crashed(asterisk_traffic / "recordings" / "answered-1795915078.1.wav", tmp_path / "1.wav"))
    assert info.duration == pytest.approx(5.5) and info.data_offset == 44 and info.data_bytes == 88000
    assert info.repair.startswith("data size 0 (never written")


def test_half_a_sample_at_the_end_is_dropped(asterisk_traffic: Path, tmp_path: Path) -> None:
    path = crashed(asterisk_traffic / "recordings" / "answered-1795915078.1.wav", tmp_path / "1.wav", b"\x7f")
    info = read_wav_info(path)
    assert info.data_bytes == 88000 and info.frames == 44000
    assert "1 byte(s) of a partial sample at the end dropped" in info.repair


def test_odd_declared_size(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "1.wav", 1.0)
    data = bytearray(path.read_bytes())
    data[40:44] = struct.pack("<I", 15999)
    path.write_bytes(bytes(data))
    info = read_wav_info(path)
    assert info.data_bytes == 15998 and "partial sample" in info.repair


def test_only_the_riff_size_unwritten(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "1.wav", 1.0)
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    info = read_wav_info(path)
    assert (info.data_bytes, info.repair) == (16000, "RIFF size never written")


def test_header_cut_inside_the_chunks(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "1.wav", 1.0)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(BadRecording, match="corrupt WAV"):
        read_wav_info(path)


def test_unfinalised_header_uses_the_audio_present(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "1.wav", 1.5)
    data = bytearray(path.read_bytes())
    data[40:44] = struct.pack("<I", 0)  # the writer died before it wrote the sizes
    path.write_bytes(bytes(data))
    info = read_wav_info(path)
    assert info.duration == pytest.approx(1.5) and info.repair != ""


def test_unsupported_encoding(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "1.wav", 1.0)
    data = bytearray(path.read_bytes())
    data[20:22] = struct.pack("<H", 7)  # mu-law
    path.write_bytes(bytes(data))
    with pytest.raises(BadRecording, match="unsupported WAV encoding"):
        read_wav_info(path)


def test_framecrc_durations_per_stream() -> None:
    text = "#tb 0: 1/8000\n#tb 1: 1/48000\n0, 0, 0, 1152, 2304, 0x1\n1, 0, 0, 960, 1920, 0x2\n0, 1152, 1152, 848, 1696, 0x3\n"
    assert parse_framecrc(text.splitlines(True), 2) == [0.25, 0.02]
    with pytest.raises(VerifyFailed):
        parse_framecrc(["#tb 0: 1/8000\n"], 2)


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_seconds(n, 60) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert backoff_seconds(30, 60) == 6 * 3600


def test_spool_groups_dual_channel_files(tmp_path: Path) -> None:
    write_wav(tmp_path / "12-in.wav", 1.0)
    write_wav(tmp_path / "12-out.wav", 1.0)
    write_wav(tmp_path / "13.wav", 1.0)
    (tmp_path / "14.WAV").write_bytes(b"gsm")
    (tmp_path / ".15.wav").write_bytes(b"hidden")
    entries = {e.key: e for e in scan(tmp_path, dual_channel=True)}
    assert set(entries) == {"12", "13"}
    assert entries["12"].pair == (tmp_path / "12-in.wav", tmp_path / "12-out.wav")
    assert entries["12"].nominal == tmp_path / "12.wav"
    assert entries["13"].mixed == tmp_path / "13.wav" and not entries["13"].dual
