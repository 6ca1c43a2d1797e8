"""Silencing what redaction masked in the archived recording (``[transcription] redact_audio``).

ffmpeg decodes the archive, sets the volume to 0 over each span (widened by ``PAD`` seconds: word
times are the model's estimate), encodes to the archive's own format, and the result is verified
(it decodes, to the same duration) before it replaces the archive by an atomic rename, so the
unredacted audio is gone and no half-written file is ever the archive.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from transcriber.engine import AudioError, probe_channels

PAD = 0.25
ENCODERS = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "32k"],
    "opus": ["-c:a", "libopus", "-b:a", "32k"],
    "flac": ["-c:a", "flac"],
    "wav": ["-c:a", "pcm_s16le"],
}


def spans_filter(spans: Sequence[tuple[float, float]]) -> str:
    parts = "+".join(f"between(t,{max(0.0, a - PAD):.3f},{b + PAD:.3f})" for a, b in spans)
    return f"volume=enable='{parts}':volume=0"


def silence(path: Path, spans: Sequence[tuple[float, float]], *, ffmpeg: str = "ffmpeg", bitrate: str = "32k") -> str:
    """Silence *spans* (seconds) of the audio file in place; its new SHA-256."""
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in ENCODERS:
        raise AudioError(f"cannot redact the audio of a .{fmt} file")
    if shutil.which(ffmpeg) is None and not Path(ffmpeg).is_file():
        raise AudioError(f"ffmpeg ({ffmpeg}) is not installed: the audio cannot be redacted")
    _, before = probe_channels(path)
    tmp = path.with_name(f".{path.name}.redacting{path.suffix}")
    encoder = [a if a != "32k" else bitrate for a in ENCODERS[fmt]]
    cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(path), "-af", spans_filter(spans), *encoder]
    try:
        done = subprocess.run([*cmd, str(tmp)], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise AudioError(f"ffmpeg could not redact {path.name}: {done.stderr.strip()[-300:]}")
        _, after = probe_channels(tmp)
        if before and abs(after - before) > 0.5:
            raise AudioError(f"the redacted {path.name} lasts {after:.1f} s instead of {before:.1f} s; not kept")
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return digest
    finally:
        tmp.unlink(missing_ok=True)
