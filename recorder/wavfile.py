"""Reading a MixMonitor WAV header without loading the audio.

MixMonitor writes 16-bit signed PCM (8 kHz mono for narrow-band calls) in a
plain RIFF/WAVE file.  A call that never connects leaves a 44-byte header with
no samples; a file cut short (a full disk while recording, a copy interrupted)
declares more audio than it holds.  Both are refused here with a reason, before
ffmpeg sees them, so the row says what is wrong with the file.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from recorder.errors import BadRecording, NoAudio

PCM = 1
EXTENSIBLE = 0xFFFE
# A header that was never finalised (the writer died before closing the file).
UNSET_SIZES = (0, 0xFFFFFFFF)


@dataclass(frozen=True)
class WavInfo:
    path: Path
    channels: int
    rate: int
    sample_width: int
    frames: int
    data_offset: int
    size: int
    mtime_ns: int

    @property
    def duration(self) -> float:
        return self.frames / self.rate

    @property
    def stamp(self) -> tuple[int, int]:
        """What changes when the file is written to: size and modification time."""
        return (self.size, self.mtime_ns)


def read_wav_info(path: Path) -> WavInfo:
    """The audio layout of *path*; raises :class:`BadRecording` with the reason when it is unusable."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            head = f.read(12)
            if st.st_size == 0:
                raise BadRecording("empty file (0 bytes)")
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                raise BadRecording("not a WAV file (no RIFF/WAVE header)")
            fmt: tuple[int, int, int, int, int] | None = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    raise BadRecording("corrupt WAV: no data chunk" if fmt else "corrupt WAV: no fmt chunk")
                cid, csize = struct.unpack("<4sI", chunk)
                if cid == b"fmt ":
                    body = f.read(csize)
                    if csize < 16 or len(body) < 16:
                        raise BadRecording("corrupt WAV: fmt chunk too short")
                    tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", body[:16])
                    if tag == EXTENSIBLE and len(body) >= 26:
                        tag = struct.unpack("<H", body[24:26])[0]
                    fmt = (tag, channels, rate, block_align, bits)
                    if csize % 2:
                        f.seek(1, os.SEEK_CUR)
                elif cid == b"data":
                    if fmt is None:
                        raise BadRecording("corrupt WAV: data chunk before the fmt chunk")
                    data_offset = f.tell()
                    declared = csize
                    break
                else:
                    f.seek(csize + (csize % 2), os.SEEK_CUR)
    except FileNotFoundError:
        raise BadRecording("the file has disappeared from the spool") from None
    except IsADirectoryError:
        raise BadRecording("is a folder, not a file") from None
    except PermissionError as exc:
        raise BadRecording(f"cannot read the file: {exc.strerror}") from None

    tag, channels, rate, block_align, bits = fmt
    if tag != PCM or bits != 16:
        raise BadRecording(f"unsupported WAV encoding (format {tag}, {bits} bits); MixMonitor's .wav is 16-bit PCM")
    if channels < 1 or rate < 1 or block_align != channels * 2:
        raise BadRecording(f"corrupt WAV: impossible layout ({channels} channels, {rate} Hz, block {block_align})")
    present = st.st_size - data_offset
    if declared in UNSET_SIZES:
        data = present
    elif declared > present:
        raise BadRecording(
            f"truncated: the header declares {declared / (rate * block_align):.2f} s of audio, "
            f"the file holds {max(present, 0) / (rate * block_align):.2f} s"
        )
    else:
        data = declared
    frames = data // block_align
    if frames == 0:
        raise NoAudio("no audio: the WAV holds only its header (the call was never connected)")
    return WavInfo(
        path=path,
        channels=channels,
        rate=rate,
        sample_width=2,
        frames=frames,
        data_offset=data_offset,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
    )
