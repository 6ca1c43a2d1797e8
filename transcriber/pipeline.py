"""One pass of the transcriber: queue new archived recordings, transcribe what is due, redact, store."""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from schema.models import AuditEntry, Recording, Transcript, utcnow
from tracking import transcripts as queue
from tracking.redaction import Word, redact_text, redact_words
from tracking.repetition import collapse_repeats
from transcriber.engine import AudioError, Engine, Interrupted, ModelError, Result, lower_priority

logger = logging.getLogger(__name__)


@dataclass
class PassReport:
    queued: int = 0
    skipped: int = 0
    done: list[int] = field(default_factory=list)
    #: (transcript id, reason)
    retrying: list[tuple[int, str]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    #: stopped half way (the service is stopping): left pending, taken again at the next start
    interrupted: list[int] = field(default_factory=list)
    #: the model could not be loaded: nothing was transcribed
    model_error: str | None = None
    redactions: int = 0
    audio_seconds: float = 0.0

    def summary(self) -> str:
        parts = [f"{len(self.done)} transcribed"]
        if self.redactions:
            parts.append(f"{self.redactions} redacted")
        if self.queued:
            parts.append(f"{self.queued} queued")
        if self.skipped:
            parts.append(f"{self.skipped} not to be transcribed")
        if self.retrying:
            parts.append(f"{len(self.retrying)} to retry")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.interrupted:
            parts.append(f"{len(self.interrupted)} stopped half way, left for the next start")
        if self.model_error:
            parts.append(f"model unusable: {self.model_error}")
        return ", ".join(parts)


def redacted_segments(result: Result) -> tuple[list[queue.Segment], list[dict[str, Any]]]:
    """Each channel's segments with card numbers, security codes and SSNs masked (across segment ends), and the
    model's repetition loops shortened (tracking.repetition)."""
    segments: list[queue.Segment] = []
    redactions: list[dict[str, Any]] = []
    for channel in result.channels:
        words: list[Word] = []
        owner: list[int] = []
        for index, seg in enumerate(channel.segments):
            words.extend(seg.words)
            owner.extend([index] * len(seg.words))
        texts, spans = redact_words(words)
        by_segment: dict[int, list[str]] = {}
        for index, text in zip(owner, texts, strict=True):
            by_segment.setdefault(index, []).append(text)
        for index, seg in enumerate(channel.segments):
            if index in by_segment:
                text = "".join(by_segment[index]).strip()
            else:  # no word times for this segment: redact its text alone
                text, found = redact_text(seg.text)
                text = text.strip()
                redactions.extend(
                    {"kind": r.kind, "speaker": channel.speaker, "start": seg.start, "end": seg.end} for r in found
                )
            text = collapse_repeats(text)  # after redaction: it saw every digit of a looping number
            segments.append(queue.Segment(channel.speaker, round(seg.start, 2), round(seg.end, 2), text))
        redactions.extend(
            {"kind": s.kind, "speaker": channel.speaker, "start": round(s.start, 2), "end": round(s.end, 2)}
            for s in spans
        )
    return segments, redactions


def apply_rules(session: Session, transcript: Transcript, spam_settings: Any = None) -> None:
    """A transcript arrived: its call's account's lead rules run again (phrases said count now), and
    one ``call.updated`` carries the transcript with whatever the rules changed; the spam signals
    (silence only in a short call) are checked with *spam_settings* (``[spam]``)."""
    if transcript.call_id is not None:
        from tracking.call_updates import transcript_state
        from tracking.lead_rules import apply_to_call

        apply_to_call(
            session, transcript.call_id, also={"transcript": transcript_state(transcript)}, spam_settings=spam_settings
        )


class Transcriber:
    def __init__(
        self,
        settings: Any,
        session_factory: sessionmaker[Session],
        *,
        engine_factory: Callable[[], Engine] | None = None,
        on_stored: Callable[[Session, Transcript], None] | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.transcription
        self.session_factory = session_factory
        self.engine: Engine | None = None
        self._engine_factory = engine_factory or self._default_engine
        self.on_stored = (
            on_stored if on_stored is not None else functools.partial(apply_rules, spam_settings=settings.spam)
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.cfg.concurrency,
            thread_name_prefix="transcriber",
            initializer=lower_priority,
            initargs=(self.cfg.nice,),
        )
        self._lock = threading.Lock()

    def _default_engine(self) -> Engine:
        return Engine(
            self.cfg.model,
            language=self.cfg.language,
            cpu_threads=self.cfg.cpu_threads,
            workers=self.cfg.concurrency,
            beam_size=self.cfg.beam_size,
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def load(self) -> Engine:
        """The model, loaded once, on a low-priority thread (the threads CTranslate2 starts inherit it)."""
        with self._lock:
            if self.engine is None:
                self.engine = self._pool.submit(self._engine_factory).result()
            return self.engine

    def run_pass(self, limit: int | None = None, should_stop: Callable[[], bool] | None = None) -> PassReport:
        report = PassReport()
        should_stop = should_stop or (lambda: False)
        with self.session_factory() as s, s.begin():
            enq = queue.enqueue(s, self.cfg.queue_limit)
            report.queued, report.skipped = len(enq.queued), len(enq.skipped)
        with self.session_factory() as s:
            work = [(t.id, r.id, r.path) for t, r in queue.due(s, utcnow(), limit or 10_000)]
        if not work:
            return report
        try:
            engine = self.load()
        except ModelError as exc:
            report.model_error = str(exc)
            with self.session_factory() as s, s.begin():
                for tid, _, _ in work:
                    t = s.get(Transcript, tid)
                    if t is not None:
                        queue.fail(s, t, f"model: {exc}", max_attempts=0, retry_seconds=0, count=False)
            return report
        futures = {}
        for tid, rid, path in work:
            if should_stop():
                break
            futures[self._pool.submit(self._one, engine, tid, rid, path, should_stop)] = tid
        for future in concurrent.futures.as_completed(futures):
            tid = futures[future]
            outcome, detail, seconds, redactions = future.result()
            if outcome == "done":
                report.done.append(tid)
                report.audio_seconds += seconds
                report.redactions += redactions
            elif outcome == "retrying":
                report.retrying.append((tid, detail))
            elif outcome == "failed":
                report.failed.append((tid, detail))
            elif outcome == "interrupted":
                report.interrupted.append(tid)
        return report

    def _one(
        self, engine: Engine, tid: int, rid: int, path: str | None, should_stop: Callable[[], bool] = lambda: False
    ) -> tuple[str, str, float, int]:
        """Transcribe one recording; (outcome, reason, audio seconds, redactions).  Never raises.

        When *should_stop* says so (the service is stopping) the model stops within its current
        30-second window and the transcript is left as it was: pending, no attempt counted.
        """
        if should_stop():
            return "interrupted", "", 0.0, 0
        with self.session_factory() as s, s.begin():
            t = s.get(Transcript, tid)
            if t is None or t.state != "pending":
                return "gone", "", 0.0, 0
            reason = queue.still_wanted(s, t)
            if reason:
                queue.skip(t, reason)
                return "skipped", reason, 0.0, 0
        try:
            if not path:
                raise AudioError("the recording has no archive file")
            file = Path(path)
            if not file.is_file():
                raise AudioError(f"the archive file {file} is missing")
            logger.info("transcriber: transcribing recording %s (%s)", rid, file.name)
            result = engine.transcribe(file, should_stop)
            segments, redactions = redacted_segments(result)
            new_sha = None
            if self.cfg.redact_audio and redactions:
                from transcriber.audio_redact import silence

                spans = [(float(r["start"]), float(r["end"])) for r in redactions]
                new_sha = silence(
                    file, spans, ffmpeg=self.settings.recorder.ffmpeg, bitrate=self.settings.recorder.bitrate
                )
        except Interrupted as exc:
            logger.info("transcriber: recording %s %s; it is transcribed again at the next start", rid, exc)
            return "interrupted", str(exc), 0.0, 0
        except Exception as exc:  # recorded on the row, retried; the recording itself is never touched
            reason = str(exc) if isinstance(exc, AudioError) else f"{type(exc).__name__}: {exc}"
            with self.session_factory() as s, s.begin():
                t = s.get(Transcript, tid)
                if t is None:
                    return "gone", "", 0.0, 0
                queue.fail(s, t, reason, max_attempts=self.cfg.max_attempts, retry_seconds=self.cfg.retry_seconds)
                state = t.state
            logger.warning("transcriber: recording %s: %s", rid, reason)
            return ("failed" if state == "failed" else "retrying"), reason, 0.0, 0
        with self.session_factory() as s, s.begin():
            t = s.get(Transcript, tid)
            rec = s.get(Recording, rid)
            if t is None or rec is None:
                return "gone", "", 0.0, 0
            reason = queue.still_wanted(s, t)
            if reason:  # the caller asked not to be tracked while the model listened
                queue.skip(t, reason)
                return "skipped", reason, 0.0, 0
            if new_sha is not None:
                rec.sha256, rec.bytes = new_sha, file.stat().st_size
                rec.note = "; ".join(n for n in (rec.note, "audio redacted (card numbers, codes, SSNs silenced)") if n)
                s.add(
                    AuditEntry(
                        actor="transcriber",
                        action="recording.redacted",
                        target=f"recording:{rid}",
                        detail={"call_id": t.call_id, "spans": [[r["start"], r["end"]] for r in redactions]},
                    )
                )
            queue.store(
                s,
                t,
                segments,
                model=engine.name,
                language=result.language,
                channels=len(result.channels),
                seconds=result.seconds,
                redactions=redactions,
            )
            if self.on_stored is not None:
                self.on_stored(s, t)
        return "done", "", result.seconds, len(redactions)
