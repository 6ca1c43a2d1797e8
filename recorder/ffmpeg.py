"""ffmpeg, driven two ways: through pydub for short recordings, directly for long ones.

pydub reads the whole WAV into memory before it hands it to ffmpeg, which is fine
for a few minutes of 8 kHz audio (about 1 MB a minute) but not for a two-hour
call; above ``stream_above_seconds`` the recorder gives ffmpeg the spool file
itself, and ffmpeg streams it.  Both ways use the same encoder options, so the
archives are the same.

A WAV whose header cannot be trusted (sizes never written because Asterisk
died mid-call, see :mod:`recorder.wavfile`) is not given to ffmpeg as a WAV: ffmpeg
would believe the header and encode nothing.  Its samples are piped to ffmpeg as
raw PCM instead (``-f s16le`` on an inherited pipe), read from the file by a
thread, exactly as many bytes as the file holds whole samples.

Verification decodes archives with ffmpeg's ``framecrc`` muxer, which prints
every decoded packet with its stream and duration: one ffmpeg process can check
a whole batch of archives, and each gets its own exact decoded duration.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from recorder.errors import EncodeFailed, FfmpegMissing, VerifyFailed
from recorder.wavfile import WavInfo

logger = logging.getLogger(__name__)

DEBIAN_PACKAGE = "ffmpeg"
INSTALL_HINT = f"install Debian's package with `apt-get install {DEBIAN_PACKAGE}`"


@dataclass(frozen=True)
class Format:
    name: str
    #: archive file extension
    ext: str
    #: ffmpeg muxer
    muxer: str
    #: ffmpeg encoder
    codec: str
    uses_bitrate: bool


FORMATS: dict[str, Format] = {
    "mp3": Format("mp3", "mp3", "mp3", "libmp3lame", True),
    "opus": Format("opus", "ogg", "ogg", "libopus", True),
    "flac": Format("flac", "flac", "flac", "flac", False),
}

BASE_ARGS = ("-nostdin", "-hide_banner", "-loglevel", "error")


def _last_line(stderr: bytes | str) -> str:
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def explain_write_error(message: str, where: Path) -> str:
    """A reason a user understands for a failed archive write (ffmpeg's message or an OSError's)."""
    low = message.lower()
    if "no space left" in low or "disk quota" in low:
        return f"disk full: no space left to write the archive under {where}"
    if "read-only file system" in low or "permission denied" in low or "operation not permitted" in low:
        return f"archive folder not writable: {where} ({message})"
    return message


def explain_os_error(exc: OSError, where: Path) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full: no space left to write the archive under {where}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"archive folder not writable: {where} ({exc.strerror})"
    if exc.errno == errno.ENOTDIR:
        return f"archive folder not usable: a part of {where} is a file, not a folder"
    return f"cannot write the archive under {where}: {exc.strerror or exc}"


class Ffmpeg:
    """One located ffmpeg program with the encoders the recorder needs."""

    def __init__(self, program: str) -> None:
        self.program = program

    @classmethod
    def locate(cls, configured: str, formats: Sequence[str] = ("mp3",)) -> Ffmpeg:
        """The ffmpeg named by the settings (a name on PATH or a path); :class:`FfmpegMissing` otherwise."""
        if os.sep in configured:
            found = configured if os.path.isfile(configured) and os.access(configured, os.X_OK) else None
        else:
            found = shutil.which(configured)
        if found is None:
            raise FfmpegMissing(
                f"ffmpeg not found ({configured!r} from [recorder] ffmpeg is not an executable program): "
                f"{INSTALL_HINT}, or set [recorder] ffmpeg to its path"
            )
        ffmpeg = cls(found)
        try:
            out = subprocess.run(
                [found, *BASE_ARGS, "-encoders"], capture_output=True, timeout=30, check=False
            ).stdout.decode("utf-8", "replace")
        except OSError as exc:
            raise FfmpegMissing(f"ffmpeg at {found} cannot run ({exc.strerror}): {INSTALL_HINT}") from None
        for name in formats:
            codec = FORMATS[name].codec
            if f" {codec} " not in out:
                raise FfmpegMissing(f"ffmpeg at {found} has no {codec} encoder (needed for {name}): {INSTALL_HINT}")
        return ffmpeg

    # --- encoding --------------------------------------------------------------

    def output_args(self, fmt: Format, bitrate: str, channels: int) -> list[str]:
        args = ["-vn", "-map_metadata", "-1", "-c:a", fmt.codec]
        if fmt.uses_bitrate:
            args += ["-b:a", bitrate]
        args += ["-ac", str(channels), "-f", fmt.muxer]
        return args

    def encode_stream(self, source: WavInfo, dest: Path, fmt: Format, bitrate: str) -> None:
        """Encode a mono WAV by letting ffmpeg read the file itself (constant memory)."""
        with _Inputs([source]) as inputs:
            self._run_encode([*inputs.args[0], *self.output_args(fmt, bitrate, 1)], dest, inputs)

    def encode_dual(
        self, caller: WavInfo, agent: WavInfo, seconds: float, dest: Path, fmt: Format, bitrate: str
    ) -> None:
        """Merge MixMonitor's per-direction files to stereo (caller left, agent right), padded to *seconds*."""
        graph = f"[0:a]apad=whole_dur={seconds:.3f}[l];[1:a]apad=whole_dur={seconds:.3f}[r];[l][r]amerge=inputs=2[a]"
        with _Inputs([caller, agent]) as inputs:
            self._run_encode(
                [
                    *inputs.args[0], *inputs.args[1],
                    "-filter_complex", graph, "-map", "[a]", "-t", f"{seconds:.3f}",
                    *self.output_args(fmt, bitrate, 2),
                ],
                dest,
                inputs,
            )  # fmt: skip

    def _run_encode(self, args: list[str], dest: Path, inputs: _Inputs | None = None) -> None:
        # ffmpeg writes the file itself, seekable, so the MP3 and FLAC headers get their frame counts.
        cmd = [self.program, *BASE_ARGS, "-y", *args, f"file:{dest}"]
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=inputs.child_fds if inputs else (),
            )
        except FileNotFoundError:
            raise EncodeFailed(f"ffmpeg has disappeared from {self.program}: {INSTALL_HINT}") from None
        if inputs:
            inputs.start()
        _, stderr = proc.communicate()
        feed_error = inputs.finish() if inputs else None
        # At -loglevel error every line is an error: ffmpeg 5.1 exits 0 when writing the trailer
        # fails on a full disk, so its exit code alone is not enough.
        if proc.returncode != 0 or stderr.strip():
            raise EncodeFailed(explain_write_error(_last_line(stderr), dest.parent))
        if feed_error is not None:
            raise EncodeFailed(f"cannot read the recording: {feed_error}")

    def encode_pydub(self, source: WavInfo, dest: Path, fmt: Format, bitrate: str) -> None:
        """Encode through pydub (the whole WAV in memory): used for short recordings with a sound header."""
        if source.repair:
            # pydub reads the header's sizes: the samples go to ffmpeg by the raw path instead
            self.encode_stream(source, dest, fmt, bitrate)
            return
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # pydub warns at import when ffmpeg is not on PATH
            from pydub import AudioSegment
            from pydub.exceptions import CouldntDecodeError, CouldntEncodeError

        # pydub has no per-call converter: its class attribute names the program.
        AudioSegment.converter = self.program
        try:
            audio = AudioSegment.from_wav(str(source.path))
            audio.export(
                str(dest),
                format=fmt.muxer,
                codec=fmt.codec,
                bitrate=bitrate if fmt.uses_bitrate else None,
                parameters=["-vn", "-map_metadata", "-1", "-ac", "1"],
            )
        except CouldntDecodeError as exc:
            raise EncodeFailed(f"ffmpeg could not read the WAV: {_last_line(str(exc))}") from None
        except CouldntEncodeError as exc:
            raise EncodeFailed(explain_write_error(_last_line(str(exc)), dest.parent)) from None
        except FileNotFoundError:
            raise EncodeFailed(f"ffmpeg has disappeared from {self.program}: {INSTALL_HINT}") from None
        except OSError as exc:
            raise EncodeFailed(explain_os_error(exc, dest.parent)) from None

    # --- verification --------------------------------------------------------------

    def decoded_durations(self, paths: Sequence[Path]) -> list[float | VerifyFailed]:
        """Decode every file in *paths*: each one's decoded duration in seconds, or why it does not decode.

        One ffmpeg process checks the whole batch; when it fails (one bad file stops
        it) each file is decoded on its own, so only the bad one fails.
        """
        if not paths:
            return []
        try:
            return list(self._durations(paths))
        except VerifyFailed as exc:
            if len(paths) == 1:
                return [exc]
        out: list[float | VerifyFailed] = []
        for p in paths:
            try:
                out.append(self._durations([p])[0])
            except VerifyFailed as exc:
                out.append(exc)
        return out

    def _durations(self, paths: Sequence[Path]) -> list[float]:
        cmd = [self.program, *BASE_ARGS, "-xerror"]
        for p in paths:
            cmd += ["-i", f"file:{p}"]  # file: so that no name is read as a protocol
        for i in range(len(paths)):
            cmd += ["-map", f"{i}:a:0"]
        cmd += ["-f", "framecrc", "-"]
        # The listing has a line per decoded frame (100,000 for a two-hour MP3): read it as it
        # comes instead of holding it; errors go to a file so neither pipe can fill up.
        with tempfile.TemporaryFile() as errors:
            try:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL)
            except FileNotFoundError:
                raise VerifyFailed(f"ffmpeg has disappeared from {self.program}: {INSTALL_HINT}") from None
            assert proc.stdout is not None
            with proc.stdout:
                lines = (raw.decode("ascii", "replace") for raw in proc.stdout)
                durations: list[float] | VerifyFailed
                try:
                    durations = parse_framecrc(lines, len(paths))
                except VerifyFailed as exc:
                    durations = exc
            returncode = proc.wait()
            errors.seek(0)
            stderr = errors.read()
        if returncode != 0:
            raise VerifyFailed(f"the archive does not decode: {_last_line(stderr)}")
        if isinstance(durations, VerifyFailed):
            raise durations
        return durations


class _Inputs:
    """ffmpeg's input options for a set of WAVs, with the pipes that carry the untrusted ones.

    A sound WAV is read by ffmpeg itself (``-i file:...``).  For one whose header was
    repaired, a pipe is made whose read end the child inherits (``-i pipe:N``), and a
    thread copies the file's whole samples into the write end.
    """

    def __init__(self, sources: Sequence[WavInfo]) -> None:
        self.sources = list(sources)
        self.args: list[list[str]] = []
        self.child_fds: list[int] = []
        self._feeds: list[tuple[WavInfo, int]] = []
        self._threads: list[threading.Thread] = []
        self._errors: list[str] = []

    def __enter__(self) -> _Inputs:
        for info in self.sources:
            if not info.repair:
                self.args.append(["-i", f"file:{info.path}"])
                continue
            read_end, write_end = os.pipe()
            self.child_fds.append(read_end)
            self._feeds.append((info, write_end))
            raw = ["-f", "s16le", "-ar", str(info.rate), "-ac", str(info.channels)]
            self.args.append([*raw, "-i", f"pipe:{read_end}"])
        return self

    def start(self) -> None:
        """Start feeding (once ffmpeg holds its ends of the pipes, which are closed here)."""
        for fd in self.child_fds:
            os.close(fd)
        self.child_fds = []
        for info, fd in self._feeds:
            thread = threading.Thread(target=self._feed, args=(info, fd), name="recorder-feed", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._feeds = []

    def _feed(self, info: WavInfo, fd: int) -> None:
        try:
            with open(fd, "wb", closefd=True) as out, open(info.path, "rb") as src:
                src.seek(info.data_offset)
                left = info.data_bytes
                while left > 0:
                    chunk = src.read(min(left, 1 << 16))
                    if not chunk:
                        self._errors.append(f"{info.path} became shorter while it was being encoded")
                        return
                    out.write(chunk)
                    left -= len(chunk)
        except BrokenPipeError:
            pass  # ffmpeg stopped reading: its own error says why
        except OSError as exc:
            self._errors.append(f"{info.path}: {exc.strerror or exc}")

    def finish(self) -> str | None:
        """Wait for the feeders; the first error one met, if any."""
        for thread in self._threads:
            thread.join()
        self._threads = []
        return self._errors[0] if self._errors else None

    def __exit__(self, *exc: object) -> None:
        for fd in self.child_fds:
            os.close(fd)
        for _, fd in self._feeds:
            os.close(fd)
        self.finish()


def parse_framecrc(lines: Iterable[str], streams: int) -> list[float]:
    """Total decoded duration of each stream in a framecrc listing (its lines), in seconds."""
    time_bases: dict[int, Fraction] = {}
    ticks = [0] * streams
    for line in lines:
        try:
            if line.startswith("#tb "):
                index, _, tb = line[4:].partition(":")
                time_bases[int(index)] = Fraction(tb.strip())
            elif line.strip() and not line.startswith("#"):
                fields = line.split(",")
                ticks[int(fields[0])] += int(fields[3])
        except (ValueError, IndexError, ZeroDivisionError):
            raise VerifyFailed(
                f"the archive does not decode: unreadable ffmpeg listing line {line.strip()!r}"
            ) from None
    if len(time_bases) != streams:
        raise VerifyFailed(f"the archive does not decode: ffmpeg reported {len(time_bases)} of {streams} audio streams")
    return [float(ticks[i] * time_bases[i]) for i in range(streams)]
