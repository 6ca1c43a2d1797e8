"""`calltrack recordings`: process the spool, list, verify, export, delete, pause."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from calltrack.context import AppContext, pass_app
from calltrack.options import TimeType
from calltrack.output import emit, emit_record, format_option

if TYPE_CHECKING:
    from schema.models import Recording

COLUMNS = ["id", "call", "account", "state", "format", "duration", "bytes", "created", "path", "error", "note"]


@click.group("recordings")
def group() -> None:
    """Call recordings: process, list, verify, export."""


def spool_problem(spool: Path) -> str | None:
    """Why the recorder cannot watch *spool*, or None.

    A missing spool folder is not "nothing to do": MixMonitor cannot write there either,
    so every recording would be lost.
    """
    if not spool.exists():
        return (
            f"the recorder's spool folder {spool} does not exist: create it where Asterisk's MixMonitor can "
            "write (owner asterisk, group calltrack, mode 2770; the Debian package does), or set "
            "[recorder] spool_dir"
        )
    if not spool.is_dir():
        return f"the recorder's spool folder {spool} is not a folder"
    return None


def _recorder(app: AppContext, **options: Any) -> Any:
    from sqlalchemy.orm import sessionmaker

    from recorder.pipeline import Recorder

    problem = spool_problem(Path(options.get("spool_dir") or app.settings.recorder.spool_dir))
    if problem:
        raise click.ClickException(problem)
    engine = app.ready_engine()
    return Recorder(app.settings, sessionmaker(bind=engine, expire_on_commit=False), **options)


@group.command("process")
@click.option("--spool", type=click.Path(file_okay=False, path_type=Path), help="Spool folder (default: settings).")
@click.option("--archive", type=click.Path(file_okay=False, path_type=Path), help="Archive folder (default: settings).")
@click.option("--format", "fmt", type=click.Choice(["mp3", "opus", "flac"]), help="Archive format (default: settings).")
@click.option(
    "--settle", type=click.IntRange(min=0), help="Take files untouched this many seconds even without a call end."
)
@pass_app
def process(app: AppContext, spool: Path | None, archive: Path | None, fmt: str | None, settle: int | None) -> None:
    """One pass over the spool: encode, verify and archive every finished recording."""
    recorder = _recorder(app, spool_dir=spool, archive_dir=archive, fmt=fmt, settle_seconds=settle)
    tasks, waiting = recorder.due()
    if not tasks:
        click.echo(f"nothing to do in {recorder.spool_dir} ({waiting} not finished yet)", err=True)
        return
    import sys

    bar: Any = click.progressbar(length=len(tasks), label="recordings", file=sys.stderr, show_pos=True)
    with bar:
        report = recorder.process(tasks, on_progress=lambda _key: bar.update(1))
    report.waiting += waiting
    # named by spool file: the key is a call id, not the recording's id
    for key, reason in report.retrying:
        click.echo(f"{key}.wav: {reason} (will retry)", err=True)
    for key, reason in report.failed:
        click.echo(f"{key}.wav: {reason} (failed for good; the spool file is kept)", err=True)
    click.echo(report.summary())
    if report.failed or report.retrying:
        raise SystemExit(1)


@group.command("watch")
@pass_app
def watch(app: AppContext) -> None:
    """Process the spool every [recorder] poll_seconds until SIGTERM or Ctrl-C."""
    from sqlalchemy.orm import sessionmaker

    from calltrack.logs import setup as setup_logging
    from calltrack.services import serve_blocking
    from recorder.service import RecorderService

    setup_logging(app.settings.general.log_level)
    _recorder(app)  # ffmpeg missing: said now, with the package to install
    service = RecorderService(app.settings, sessionmaker(bind=app.ready_engine(), expire_on_commit=False))
    raise SystemExit(serve_blocking([service]))


def _row(rec: Recording, accounts: dict[int, str]) -> dict[str, Any]:
    return {
        "id": rec.id,
        "call": rec.call_id if rec.call_id is not None else "orphan",
        "account": accounts.get(rec.account_id) if rec.account_id is not None else None,
        "state": rec.state,
        "format": rec.format,
        "duration": rec.duration,
        "bytes": rec.bytes,
        "created": rec.created_at.isoformat(timespec="seconds"),
        "path": rec.path if rec.state == "archived" else None,  # a pending row's path is only planned
        "error": rec.last_error,
        "note": rec.note,
    }


def _accounts(session: Any) -> dict[int, str]:
    from sqlalchemy import select

    from schema.models import Account

    return {a.id: a.name for a in session.scalars(select(Account))}


@group.command("list")
@click.option("--account", help="Only this account's recordings.")
@click.option(
    "--since", type=TimeType(), help="Only recordings first seen since: 2026-11-01, 2026-11-01T08:00, 7d or 12h."
)
@click.option(
    "--state",
    type=click.Choice(["pending", "archived", "empty", "failed", "deleted", "discarded"]),
    help="Only this state.",
)
@click.option("--orphans", is_flag=True, help="Only recordings whose call is unknown.")
@format_option
@pass_app
def list_(
    app: AppContext, account: str | None, since: dt.datetime | None, state: str | None, orphans: bool, fmt: str
) -> None:
    """List recordings (orphans, whose call is unknown, show `orphan` as their call)."""
    from sqlalchemy import select

    from schema.models import Recording
    from tracking.accounts import get_account

    with app.session() as session:
        query = select(Recording).order_by(Recording.id)
        if account:
            query = query.where(Recording.account_id == get_account(session, account).id)
        if since is not None:
            query = query.where(Recording.created_at >= since)
        if state:
            query = query.where(Recording.state == state)
        if orphans:
            query = query.where(Recording.call_id.is_(None))
        names = _accounts(session)
        rows = [_row(r, names) for r in session.scalars(query)]
    emit(rows, fmt, COLUMNS)


def _get(session: Any, rec_id: int) -> Recording:
    from schema.models import Recording
    from tracking.errors import NotFound

    rec = session.get(Recording, rec_id)
    if rec is None:
        raise NotFound(f"unknown recording {rec_id} (see `calltrack recordings list`)")
    return rec


@group.command("show")
@click.argument("rec_id", metavar="ID", type=int)
@format_option
@pass_app
def show(app: AppContext, rec_id: int, fmt: str) -> None:
    """One recording with everything known about it."""
    with app.session() as session:
        rec = _get(session, rec_id)
        record = _row(rec, _accounts(session))
        record.update(
            {
                "source_path": rec.source_path,
                "sha256": rec.sha256,
                "attempts": rec.attempts,
                "next_attempt": rec.next_attempt_at.isoformat(timespec="seconds") if rec.next_attempt_at else None,
                "archived": rec.archived_at.isoformat(timespec="seconds") if rec.archived_at else None,
            }
        )
    emit_record(record, fmt)


@group.command("verify")
@click.argument("ids", metavar="[ID]...", type=int, nargs=-1)
@pass_app
def verify(app: AppContext, ids: tuple[int, ...]) -> None:
    """Re-check the checksums of archived recordings; exit 1 when any is missing or differs."""
    from sqlalchemy import select

    from recorder.pipeline import sha256_of
    from schema.models import Recording

    with app.session() as session:
        query = select(Recording).where(Recording.state == "archived").order_by(Recording.id)
        if ids:
            query = query.where(Recording.id.in_(ids))
        recs = [(r.id, r.path, r.sha256) for r in session.scalars(query)]
    bad = 0
    for rec_id, path, digest in recs:
        try:
            actual = sha256_of(Path(path or ""))
        except OSError as exc:
            click.echo(f"recording {rec_id}: MISSING {path} ({exc.strerror})")
            bad += 1
            continue
        if actual != digest:
            click.echo(f"recording {rec_id}: MISMATCH {path} (sha256 {actual}, expected {digest})")
            bad += 1
    click.echo(f"{len(recs) - bad} of {len(recs)} archives match their checksum")
    if bad:
        raise SystemExit(1)


def _audit(session: Any, action: str, target: str, detail: dict[str, Any]) -> None:
    import getpass

    from schema.models import AuditEntry

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    session.add(AuditEntry(actor=f"cli:{user}", action=action, target=target, detail=detail))


@group.command("export")
@click.argument("rec_id", metavar="ID", type=int)
@click.option("--to", "dest", required=True, type=click.Path(path_type=Path), help="A file, or a folder to copy into.")
@pass_app
def export(app: AppContext, rec_id: int, dest: Path) -> None:
    """Copy an archived recording out, checking its checksum on the way."""
    import hashlib
    import os

    from tracking.errors import TrackingError

    with app.session() as session:
        rec = _get(session, rec_id)
        if rec.state != "archived" or not rec.path:
            raise TrackingError(f"recording {rec_id} is {rec.state}, not archived: nothing to export")
        source = Path(rec.path)
        target = dest / source.name if dest.is_dir() else dest
        if target.exists():
            raise TrackingError(f"{target} exists already; choose another path")
        temp = target.with_name(f".{target.name}.part")
        digest = hashlib.sha256()
        try:
            with open(source, "rb") as src, open(temp, "wb") as out:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != rec.sha256:
                temp.unlink(missing_ok=True)
                raise TrackingError(
                    f"recording {rec_id}: the archive {source} does not match its checksum; not exported "
                    "(run `calltrack recordings verify`)"
                )
            os.replace(temp, target)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise TrackingError(f"cannot export recording {rec_id}: {exc.filename}: {exc.strerror}") from None
        _audit(session, "recording.export", f"recording:{rec_id}", {"to": str(target)})
    click.echo(f"exported recording {rec_id} to {target}")


@group.command("delete")
@click.argument("rec_id", metavar="ID", type=int)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def delete(app: AppContext, rec_id: int, yes: bool) -> None:
    """Delete a recording's archive file (the row stays, marked deleted)."""
    from tracking.errors import TrackingError

    with app.session() as session:
        rec = _get(session, rec_id)
        if rec.state == "deleted":
            raise TrackingError(f"recording {rec_id} is deleted already")
        if not yes:
            click.confirm(f"Delete recording {rec_id} ({rec.path or rec.source_path}) for good?", abort=True)
        removed = []
        for path in (rec.path,) if rec.state == "archived" else (rec.path, rec.source_path):
            if not path:
                continue
            try:
                Path(path).unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise TrackingError(f"cannot delete {path}: {exc.strerror}") from None
        rec.state = "deleted"
        rec.next_attempt_at = None
        _audit(session, "recording.delete", f"recording:{rec_id}", {"removed": removed})
    click.echo(f"deleted recording {rec_id}")


@group.command("retry")
@click.argument("ids", metavar="[ID]...", type=int, nargs=-1)
@click.option("--all-failed", is_flag=True, help="Every recording that failed for good.")
@pass_app
def retry(app: AppContext, ids: tuple[int, ...], all_failed: bool) -> None:
    """Give failed recordings a fresh set of attempts (after fixing the disk, the archive folder...)."""
    from sqlalchemy import select

    from schema.models import Recording
    from tracking.errors import TrackingError

    if not ids and not all_failed:
        raise click.UsageError("name recordings by ID, or give --all-failed")
    with app.session() as session:
        if all_failed:
            recs = list(session.scalars(select(Recording).where(Recording.state == "failed")))
        else:
            recs = [_get(session, rec_id) for rec_id in ids]
        for rec in recs:
            if rec.state != "failed":
                raise TrackingError(f"recording {rec.id} is {rec.state}, not failed")
            rec.state, rec.attempts, rec.next_attempt_at = "pending", 0, None
    click.echo(f"{len(recs)} recording(s) will be tried again by the next `recordings process` or `watch` pass")


def _mute(app: AppContext, call_id: int, mute: bool, channel: str | None, direction: str) -> None:
    import asyncio

    from calltrack.ami_action import AmiActionFailed, mixmonitor_mute
    from recorder.mute import call_channel

    settings = app.settings
    with app.session() as session:
        if channel:
            from schema.models import Call
            from tracking.errors import NotFound

            call = session.get(Call, call_id)
            if call is None:
                raise NotFound(f"unknown call {call_id} (see `calltrack calls list`)")
            system = call.system
        else:
            system, channel = call_channel(session, call_id)
    servers = {s.name: s for s in settings.ami.servers}
    server = servers.get(system)
    if server is None:
        raise AmiActionFailed(
            f"call {call_id} came through Asterisk {system!r}, which has no [[ami.servers]] entry in {settings.source}"
        )
    asyncio.run(mixmonitor_mute(server, channel, mute, direction))
    with app.session() as session:
        _audit(session, "recording.pause" if mute else "recording.resume", f"call:{call_id}", {"channel": channel})
    click.echo(f"recording of call {call_id} {'paused' if mute else 'resumed'} ({channel})")


def _mute_options(f: Any) -> Any:
    f = click.option("--direction", type=click.Choice(["both", "read", "write"]), default="both", show_default=True,
                     help="read: what the caller says; write: what the caller hears.")(f)  # fmt: skip
    f = click.option("--channel", help="The Asterisk channel, when calltrack does not know it yet.")(f)
    f = click.argument("call_id", metavar="CALL_ID", type=int)(f)
    return f


@group.command("pause")
@_mute_options
@pass_app
def pause(app: AppContext, call_id: int, channel: str | None, direction: str) -> None:
    """Pause a live call's recording (silence is recorded), e.g. while card details are read out."""
    _mute(app, call_id, True, channel, direction)


@group.command("resume")
@_mute_options
@pass_app
def resume(app: AppContext, call_id: int, channel: str | None, direction: str) -> None:
    """Resume a paused recording."""
    _mute(app, call_id, False, channel, direction)
