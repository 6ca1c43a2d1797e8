"""One pass over the spool: find finished recordings, encode, verify, archive.

The order of the steps is what makes a crash harmless:

1. claim the row (counts the attempt, sets a lease) and fix the archive path;
2. encode to a temporary file next to the archive path, fsync it, hash it;
3. decode it and compare its duration with the source's;
4. check the source did not change meanwhile (still being written: try later);
5. rename the temporary file to the archive path and fsync the folder;
6. mark the row archived (path, format, bytes, duration, sha256);
7. only then delete the spool files (unless ``keep_source``).

Stopped after 1-4, a retry overwrites the same temporary and archive paths;
after 5, the same archive path is written again; after 6, the next pass finds an
archived row whose source is still there, checks the archive's checksum and
deletes the source.  Any failure leaves the source untouched and records why.

Verification of a batch runs in a second thread while the next files encode,
so the decode uses the machine's other core instead of adding to the wall time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import zoneinfo
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from recorder import store
from recorder.errors import BadRecording, EncodeFailed, NoAudio, RecorderError, StillGrowing, VerifyFailed
from recorder.ffmpeg import FORMATS, Ffmpeg, Format, explain_os_error
from recorder.spool import SpoolEntry, scan
from recorder.wavfile import WavInfo, read_wav_info
from schema.models import Account, AmiEvent, Call, CallEvent, Recording, utcnow
from tracking.outbox import announce_recording
from tracking.recording_names import parse_stem

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from config import Settings

logger = logging.getLogger(__name__)

#: archives verified by one ffmpeg process
VERIFY_BATCH = 8

Hook = Callable[[str, "Job"], None]


@dataclass
class Task:
    """A spool recording that is due, with what the database knows about it."""

    entry: SpoolEntry
    rec_id: int
    call_id: int | None
    account_id: int | None
    #: archived row whose source is still in the spool: only the deletion is left to do
    cleanup: bool = False
    #: the call's caller is on a do-not-track list: the file is deleted unheard, never archived
    discard: bool = False

    @property
    def label(self) -> str:
        """How the log names it: the recording's own id, its call's id and the spool file."""
        call = f"call {self.call_id}" if self.call_id is not None else "no known call"
        return f"recording {self.rec_id} ({call}, {self.entry.nominal})"


@dataclass
class Job:
    """A task being worked on."""

    task: Task
    dest: Path
    temp: Path | None = None
    sources: list[WavInfo] = field(default_factory=list)
    duration: float = 0.0
    size: int = 0
    sha256: str = ""


@dataclass
class PassReport:
    archived: list[str] = field(default_factory=list)
    #: (key, reason) of attempts that failed and will be retried
    retrying: list[tuple[str, str]] = field(default_factory=list)
    #: (key, reason) of recordings that ran out of attempts
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: recordings still being written or waiting for a retry
    waiting: int = 0
    #: sources of earlier archives deleted now
    cleaned: int = 0
    #: recordings of calls never connected (a WAV header without audio)
    empty: list[str] = field(default_factory=list)
    #: recordings of do-not-track callers, deleted without being archived
    discarded: list[str] = field(default_factory=list)
    #: archived recordings whose WAV header had to be repaired (a recording cut by a crash)
    repaired: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.archived)} archived"]
        if self.repaired:
            parts.append(f"{len(self.repaired)} of them with a repaired WAV header")
        if self.empty:
            parts.append(f"{len(self.empty)} without audio (never connected)")
        if self.discarded:
            parts.append(f"{len(self.discarded)} deleted unarchived (do-not-track callers)")
        if self.cleaned:
            parts.append(f"{self.cleaned} spool files of earlier archives removed")
        if self.retrying:
            parts.append(f"{len(self.retrying)} failed (will retry)")
        if self.failed:
            parts.append(f"{len(self.failed)} failed for good")
        if self.waiting:
            parts.append(f"{self.waiting} not finished yet")
        return ", ".join(parts)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _call_by_key(session: Session, stem: str) -> Call | None:
    """The call a fallback recording is named after (``ct~<system>~<linkedid>``: tracking.recording_names)."""
    key = parse_stem(stem)
    if key is None:
        return None
    return session.scalar(select(Call).where(Call.system == key[0], Call.linkedid == key[1]))


def adopt_orphans(session: Session) -> int:
    """Link recordings archived before their call's row existed (a fallback call's row written later)."""
    adopted = 0
    orphans = session.scalars(
        select(Recording).where(Recording.call_id.is_(None), Recording.source_path.like("%ct~%")).limit(500)
    )
    for row in orphans:
        call = _call_by_key(session, Path(row.source_path).stem)
        if call is not None:
            row.call_id, row.account_id = call.id, call.account_id
            logger.info(
                "recording %s linked to call %s (%s/%s)",
                Path(row.source_path).name,
                call.id,
                call.system,
                call.linkedid,
            )
            adopted += 1
    return adopted


class Recorder:
    """Turns finished spool WAVs into verified archives linked to their calls."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        *,
        spool_dir: Path | None = None,
        archive_dir: Path | None = None,
        fmt: str | None = None,
        settle_seconds: int | None = None,
        ffmpeg: Ffmpeg | None = None,
        hook: Hook | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.cfg = settings.recorder
        self.session_factory = session_factory
        self.spool_dir = Path(os.path.abspath(spool_dir or self.cfg.spool_dir))
        self.archive_dir = Path(os.path.abspath(archive_dir or settings.archive_dir))
        name = fmt or self.cfg.format
        if name not in FORMATS:
            raise RecorderError(f"unknown format {name!r}: use mp3, opus or flac")
        self.format: Format = FORMATS[name]
        self.settle_seconds = self.cfg.settle_seconds if settle_seconds is None else settle_seconds
        # Raises FfmpegMissing at start, with the package to install.
        self.ffmpeg = ffmpeg or Ffmpeg.locate(self.cfg.ffmpeg, [name])
        self.hook = hook
        self.clock = clock

    # --- what is due ---------------------------------------------------------------

    def due(self, now: dt.datetime | None = None) -> tuple[list[Task], int]:
        """Recordings to work on now, and how many others are still being written or waiting."""
        now = now or self.clock()
        tasks: list[Task] = []
        waiting = 0
        entries = scan(self.spool_dir, self.cfg.dual_channel)
        with self.session_factory() as session, session.begin():
            adopt_orphans(session)
            known: dict[str, Recording] = {}
            paths = [str(e.nominal) for e in entries]
            for i in range(0, len(paths), 500):
                chunk = paths[i : i + 500]
                known.update(
                    (r.source_path, r)
                    for r in session.scalars(select(Recording).where(Recording.source_path.in_(chunk)))
                )
            for entry in entries:
                row = known.get(str(entry.nominal))
                if row is not None and row.state == "archived":
                    if not self.cfg.keep_source:
                        tasks.append(Task(entry, row.id, row.call_id, row.account_id, cleanup=True))
                    continue
                if row is not None and row.state in ("failed", "deleted"):
                    continue
                if row is not None and row.state == "discarded":  # its spool file could not be deleted
                    tasks.append(Task(entry, row.id, row.call_id, row.account_id, discard=True))
                    continue
                age = now.timestamp() - entry.mtime
                call = self._find_call(session, entry)
                ended = call is not None and self._call_ended(session, call)
                finished = (ended and age >= self.cfg.quiet_seconds) or age >= self.settle_seconds
                if not finished:
                    waiting += 1
                    continue
                row = store.get_or_create(
                    session, str(entry.nominal), call.id if call else None, call.account_id if call else None
                )
                untracked = call is not None and bool(call.do_not_track)
                if not untracked and row.next_attempt_at is not None and row.next_attempt_at > now:
                    waiting += 1
                    continue
                tasks.append(Task(entry, row.id, row.call_id, row.account_id, discard=untracked))
        return tasks, waiting

    def _find_call(self, session: Session, entry: SpoolEntry) -> Call | None:
        names = [str(entry.nominal), str(entry.nominal.with_suffix(""))]
        call = session.scalar(select(Call).where(Call.recording_file.in_(names)).order_by(Call.id).limit(1))
        if call is None and entry.key.isdigit() and len(entry.key) < 19:
            call = session.get(Call, int(entry.key))
        if call is None:
            call = _call_by_key(session, entry.key)
        return call

    @staticmethod
    def _call_ended(session: Session, call: Call) -> bool:
        if call.ended_at is not None:
            return True
        # MixMonitorStop (StopMixMonitor ran): noted by the AMI listener on the call's timeline,
        # and kept among the raw events.
        noted = session.scalar(
            select(CallEvent.id).where(CallEvent.call_id == call.id, CallEvent.kind == "recording-stopped").limit(1)
        )
        if noted is not None:
            return True
        if not call.uniqueid:
            return False
        stopped = session.scalar(
            select(AmiEvent.id)
            .where(
                AmiEvent.system == call.system, AmiEvent.uniqueid == call.uniqueid, AmiEvent.event == "MixMonitorStop"
            )
            .limit(1)
        )
        return stopped is not None

    # --- the pass ------------------------------------------------------------------------

    def run_pass(
        self,
        on_progress: Callable[[str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> PassReport:
        tasks, waiting = self.due()
        report = self.process(tasks, on_progress=on_progress, should_stop=should_stop)
        report.waiting += waiting
        return report

    def process(
        self,
        tasks: Iterable[Task],
        on_progress: Callable[[str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> PassReport:
        report = PassReport()
        batch: list[Job] = []
        futures: list[Future[None]] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder-verify") as finisher:
            try:
                for task in tasks:
                    if should_stop and should_stop():
                        break
                    if task.discard:
                        self._discard(task, report)
                        if on_progress:
                            on_progress(task.entry.key)
                        continue
                    if task.cleanup:
                        if self._cleanup(task, report):
                            if on_progress:
                                on_progress(task.entry.key)
                            continue
                    job = self._prepare(task, report)
                    if on_progress:
                        on_progress(task.entry.key)
                    if job is not None:
                        batch.append(job)
                    if len(batch) >= VERIFY_BATCH:
                        futures.append(finisher.submit(self._finish, batch, report))
                        batch = []
                if batch:
                    futures.append(finisher.submit(self._finish, batch, report))
            finally:
                for fut in futures:
                    fut.result()
        return report

    # --- steps -------------------------------------------------------------------------

    def _now(self) -> dt.datetime:
        return self.clock()

    def _plan_path(self, session: Session, task: Task, row: Recording) -> Path:
        if row.path:
            return Path(row.path)
        when = dt.datetime.fromtimestamp(task.entry.mtime, dt.UTC)
        tz: dt.tzinfo = dt.UTC
        folder = "no-account"
        if task.call_id is not None:
            call = session.get(Call, task.call_id)
            if call is not None and call.started_at is not None:
                when = call.started_at
        if task.account_id is not None:
            folder = f"account-{task.account_id}"
            account = session.get(Account, task.account_id)
            if account is not None:
                with contextlib.suppress(zoneinfo.ZoneInfoNotFoundError, ValueError):
                    tz = zoneinfo.ZoneInfo(account.timezone)
        local = when.astimezone(tz)
        base = self.archive_dir / folder / f"{local:%Y}" / f"{local:%m}" / f"{local:%d}"
        dest = base / f"{task.entry.key}.{self.format.ext}"
        if store.path_taken(session, str(dest), row.id) or dest.exists():
            dest = base / f"{task.entry.key}-r{row.id}.{self.format.ext}"
        return dest

    def _prepare(self, task: Task, report: PassReport) -> Job | None:
        """Claim, inspect and encode one recording; None when it failed or is not ours."""
        now = self._now()
        with self.session_factory() as session, session.begin():
            if not store.claim(session, task.rec_id, now):
                return None
            row = session.get(Recording, task.rec_id)
            assert row is not None
            if row.format not in (None, self.format.name) and row.path:
                row.path = None  # the format changed since the path was planned
            dest = self._plan_path(session, task, row)
            row.path = str(dest)
            row.format = self.format.name
        job = Job(task, dest)
        try:
            self._encode(job)
        except KeyboardInterrupt:
            self._abandon(job, "interrupted")
            raise
        except NoAudio as exc:
            self._empty(job, str(exc), report)
            return None
        except RecorderError as exc:
            self._failed(job, str(exc), report)
            return None
        except OSError as exc:
            self._failed(job, explain_os_error(exc, job.dest.parent), report)
            return None
        except SQLAlchemyError:
            self._remove_temp(job)
            raise
        except Exception as exc:  # a bug must not stop the other recordings
            logger.exception("%s: unexpected error", task.label)
            self._failed(job, f"internal error: {exc!r}", report)
            return None
        return job

    def _encode(self, job: Job) -> None:
        entry = job.task.entry
        if entry.pair is not None:
            job.sources = [read_wav_info(entry.pair[0]), read_wav_info(entry.pair[1])]
        else:
            assert entry.mixed is not None
            job.sources = [read_wav_info(entry.mixed)]
        job.duration = max(s.duration for s in job.sources)
        folder = job.dest.parent
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f".{job.dest.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        job.temp = folder / f".{job.dest.name}.{os.getpid()}.tmp"
        # Create it ourselves first: an unwritable folder fails here with a plain OSError.
        with open(job.temp, "xb"):
            pass
        if entry.pair is not None:
            self.ffmpeg.encode_dual(
                job.sources[0], job.sources[1], job.duration, job.temp, self.format, self.cfg.bitrate
            )
        elif job.duration <= self.cfg.stream_above_seconds:
            self.ffmpeg.encode_pydub(job.sources[0], job.temp, self.format, self.cfg.bitrate)
        else:
            self.ffmpeg.encode_stream(job.sources[0], job.temp, self.format, self.cfg.bitrate)
        with open(job.temp, "rb+") as f:
            os.fsync(f.fileno())
            job.size = os.fstat(f.fileno()).st_size
        if job.size == 0:
            raise EncodeFailed("ffmpeg wrote an empty archive")
        job.sha256 = sha256_of(job.temp)
        self._step("encoded", job)

    def _finish(self, jobs: list[Job], report: PassReport) -> None:
        temps = [j.temp for j in jobs if j.temp is not None]
        results = self.ffmpeg.decoded_durations(temps)
        for job, result in zip(jobs, results, strict=True):
            try:
                self._complete(job, result, report)
            except KeyboardInterrupt:
                self._abandon(job, "interrupted")
                raise
            except SQLAlchemyError:
                raise
            except Exception as exc:
                logger.exception("%s: unexpected error", job.task.label)
                self._failed(job, f"internal error: {exc!r}", report)

    def _complete(self, job: Job, decoded: float | VerifyFailed, report: PassReport) -> None:
        key = job.task.entry.key
        try:
            if isinstance(decoded, VerifyFailed):
                raise decoded
            tolerance = self.cfg.verify_tolerance_seconds
            if abs(decoded - job.duration) > tolerance:
                raise VerifyFailed(
                    f"verification failed: the archive decodes to {decoded:.2f} s, "
                    f"the source is {job.duration:.2f} s (tolerance {tolerance} s)"
                )
            self._step("verified", job)
            for info in job.sources:
                try:
                    st = os.stat(info.path)
                except FileNotFoundError:
                    raise BadRecording("the file has disappeared from the spool") from None
                if (st.st_size, st.st_mtime_ns) != info.stamp:
                    raise StillGrowing("the file changed while it was being encoded")
            assert job.temp is not None
            os.replace(job.temp, job.dest)
            job.temp = None
            fsync_dir(job.dest.parent)
            self._step("renamed", job)
        except StillGrowing as exc:
            self._abandon(job, str(exc), wait=self.cfg.quiet_seconds)
            report.waiting += 1
            return
        except RecorderError as exc:
            self._failed(job, str(exc), report)
            return
        except OSError as exc:
            self._failed(job, explain_os_error(exc, job.dest.parent), report)
            return
        repairs = [f"{info.path.name}: {info.repair}" for info in job.sources if info.repair]
        note = f"WAV header repaired ({'; '.join(repairs)})" if repairs else None
        with self.session_factory() as session, session.begin():
            store.archived(
                session,
                job.task.rec_id,
                path=str(job.dest),
                fmt=self.format.name,
                size=job.size,
                duration=decoded,
                sha256=job.sha256,
                now=self._now(),
                note=note,
            )
            # in the same transaction: receivers hear of the recording if and only if it is archived
            announce_recording(session, job.task.rec_id)
        self._step("committed", job)
        report.archived.append(key)
        if note:
            report.repaired.append(key)
            logger.warning("%s: %s", job.task.label, note)
        logger.info("%s archived to %s (%d bytes, %.1f s)", job.task.label, job.dest, job.size, decoded)
        if not self.cfg.keep_source:
            self._delete_source(job.task)
            self._step("deleted", job)

    def _delete_source(self, task: Task) -> bool:
        """Delete the spool files of *task*; False when one could not be (the next pass tries again)."""
        done = True
        for part in task.entry.parts:
            try:
                part.unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("%s: cannot delete %s: %s", task.label, part, exc.strerror)
                done = False
        with contextlib.suppress(OSError):
            fsync_dir(task.entry.nominal.parent)
        return done

    def _discard(self, task: Task, report: PassReport) -> None:
        """A do-not-track caller's call was recorded anyway (a dialplan that records everything):
        the audio is deleted unheard and never archived; the row stays to say why."""
        deleted = self._delete_source(task)
        with self.session_factory() as session, session.begin():
            store.discarded(
                session,
                task.rec_id,
                "the caller is on a do-not-track list: the recording was deleted without being archived"
                + ("" if deleted else " (deleting the spool file failed; retried by the next pass)"),
            )
        if deleted:
            report.discarded.append(task.entry.key)
            logger.info("%s: do-not-track caller; spool file deleted, nothing archived", task.label)

    def _cleanup(self, task: Task, report: PassReport) -> bool:
        """Delete the source of an archived recording once its archive proves good.

        False when the archive is missing or damaged: the row goes back to pending and
        the caller archives the source again.
        """
        with self.session_factory() as session, session.begin():
            row = session.get(Recording, task.rec_id)
            if row is None or row.state != "archived":
                return True
            good = False
            if row.path and row.sha256:
                try:
                    good = sha256_of(Path(row.path)) == row.sha256
                except OSError:
                    good = False
            rewritten = row.archived_at is not None and task.entry.mtime > row.archived_at.timestamp()
            if not good or rewritten:
                why = (
                    "the spool file was written again after it was archived"
                    if good
                    else "archive missing or damaged while its source is still in the spool"
                )
                logger.error("%s: %s (archive %s); archiving it again", task.label, why, row.path)
                row.state, row.attempts, row.next_attempt_at = "pending", 0, None
                row.last_error = f"{why}; archived again from the spool file"
                if not good:
                    row.path = None
                # else the new archive replaces the old one at its path (a rename): no stray copy is left
                task.cleanup = False
                return False
        self._delete_source(task)
        report.cleaned += 1
        return True

    def _step(self, name: str, job: Job) -> None:
        if self.hook is not None:
            self.hook(name, job)

    def _remove_temp(self, job: Job) -> None:
        if job.temp is not None:
            with contextlib.suppress(OSError):
                job.temp.unlink(missing_ok=True)
            job.temp = None

    def _failed(self, job: Job, reason: str, report: PassReport) -> None:
        self._remove_temp(job)
        with self.session_factory() as session, session.begin():
            state = store.fail(
                session, job.task.rec_id, reason, self._now(), self.cfg.max_attempts, self.cfg.retry_seconds
            )
        key = job.task.entry.key
        if state == "failed":
            logger.error("%s failed for good (spool file kept): %s", job.task.label, reason)
            report.failed.append((key, reason))
        else:
            logger.warning("%s failed, will retry: %s", job.task.label, reason)
            report.retrying.append((key, reason))

    def _empty(self, job: Job, reason: str, report: PassReport) -> None:
        """A finished recording without a single sample: nothing to archive, nothing to retry."""
        self._remove_temp(job)
        with self.session_factory() as session, session.begin():
            store.empty(session, job.task.rec_id, reason)
        logger.info("%s: %s", job.task.label, reason)
        report.empty.append(job.task.entry.key)
        if not self.cfg.keep_source:
            self._delete_source(job.task)

    def _abandon(self, job: Job, reason: str, wait: float = 0) -> None:
        self._remove_temp(job)
        with self.session_factory() as session, session.begin():
            store.release(session, job.task.rec_id, self._now(), wait, reason)
