"""Reading a MixMonitor WAV header without loading the audio.

MixMonitor writes 16-bit signed PCM (8 kHz mono for narrow-band calls) in a
plain RIFF/WAVE file.  A call that never connects leaves a 44-byte header with
no samples: refused here (:class:`NoAudio`), so the row says why there is nothing.

Asterisk's ``format_wav.c`` writes the header with RIFF and data sizes 0 when it
opens the file and fills them in only when it closes it (``update_header``), so
a recording cut by an Asterisk crash (``kill -9``, a power cut) keeps sizes 0
although its audio is all there.  Other writers leave 0xFFFFFFFF; a file cut short
after it was closed (an interrupted copy) declares more audio than it holds; a
crash mid-write leaves half a sample.  For such a header the data is taken to be
what the file holds (whole samples, to the end of the file or of the declared
size, whichever is first) and :attr:`WavInfo.repair` says what was wrong: the
encoder then reads the samples from :attr:`WavInfo.data_offset` itself instead of
trusting the header, and the recording's row notes the repair.
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
    #: what was wrong with the header, when it could not be trusted ("" for a sound one)
    repair: str = ""

    @property
    def data_bytes(self) -> int:
        """The bytes of whole samples from :attr:`data_offset` on."""
        return self.frames * self.channels * self.sample_width

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
            riff_size = struct.unpack("<I", head[4:8])[0]
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
    present = max(st.st_size - data_offset, 0)
    per_second = rate * block_align
    problems = []
    if declared in UNSET_SIZES:
        data = present
        problems.append(
            f"data size {'0' if declared == 0 else '0xFFFFFFFF'} (never written: the recording was cut before "
            "Asterisk closed the file); the audio runs to the end of the file"
        )
    elif declared > present:
        data = present
        problems.append(
            f"truncated: the header declares {declared / per_second:.2f} s of audio, "
            f"the file holds {present / per_second:.2f} s, which was kept"
        )
    else:
        data = declared
    if data % block_align:
        problems.append(f"{data % block_align} byte(s) of a partial sample at the end dropped")
    frames = data // block_align
    if frames == 0:
        raise NoAudio("no audio: the WAV holds only its header (the call was never connected)")
    if not problems and riff_size != st.st_size - 8 and riff_size in UNSET_SIZES:
        # the data size is sound: only the RIFF size was never written
        problems.append("RIFF size never written")
    return WavInfo(
        path=path,
        channels=channels,
        rate=rate,
        sample_width=2,
        frames=frames,
        data_offset=data_offset,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        repair="; ".join(problems),
    )
