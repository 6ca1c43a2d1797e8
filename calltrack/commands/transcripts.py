"""`calltrack transcripts`: transcribe archived recordings, list, show, retry."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from calltrack.context import AppContext, pass_app
from calltrack.options import TimeType
from calltrack.output import emit, format_option

COLUMNS = ["id", "call", "recording", "account", "state", "attempts", "seconds", "channels", "transcribed", "error"]


@click.group("transcripts")
def group() -> None:
    """Call transcripts: transcribe, list, show, search."""


def _transcriber(app: AppContext) -> Any:
    from sqlalchemy.orm import sessionmaker

    from transcriber.pipeline import Transcriber

    return Transcriber(app.settings, sessionmaker(bind=app.ready_engine(), expire_on_commit=False))


@group.command("process")
@click.option("--limit", type=click.IntRange(min=1), help="Transcribe at most this many recordings.")
@pass_app
def process(app: AppContext, limit: int | None) -> None:
    """One pass: queue new archived recordings and transcribe every one that is due."""
    transcriber = _transcriber(app)
    try:
        report = transcriber.run_pass(limit)
    finally:
        transcriber.close()
    for tid, reason in report.retrying:
        click.echo(f"transcript {tid}: {reason} (will retry)", err=True)
    for tid, reason in report.failed:
        click.echo(f"transcript {tid}: {reason} (failed for good)", err=True)
    if report.model_error:
        raise click.ClickException(report.model_error)
    click.echo(report.summary())
    if report.failed or report.retrying:
        raise SystemExit(1)


@group.command("watch")
@pass_app
def watch(app: AppContext) -> None:
    """Transcribe every [transcription] poll_seconds until SIGTERM or Ctrl-C."""
    from sqlalchemy.orm import sessionmaker

    from calltrack.logs import setup as setup_logging
    from calltrack.services import serve_blocking
    from transcriber.service import TranscriberService

    setup_logging(app.settings.general.log_level)
    service = TranscriberService(app.settings, sessionmaker(bind=app.ready_engine(), expire_on_commit=False))
    raise SystemExit(serve_blocking([service]))


@group.command("list")
@click.option("--account", help="Only this account's transcripts.")
@click.option("--state", type=click.Choice(["pending", "done", "failed", "skipped"]), help="Only this state.")
@click.option("--since", type=TimeType(), help="Only transcripts queued since: 2026-11-01, 7d or 12h.")
@format_option
@pass_app
def list_(app: AppContext, account: str | None, state: str | None, since: dt.datetime | None, fmt: str) -> None:
    """Transcripts and the queue: state, attempts, why one failed or was skipped."""
    from sqlalchemy import select

    from schema.models import Account, Transcript
    from tracking.errors import NotFound

    with app.session() as session:
        names = {a.id: a.name for a in session.scalars(select(Account))}
        query = select(Transcript).order_by(Transcript.id)
        if account:
            ids = [i for i, n in names.items() if n == account]
            if not ids:
                raise NotFound(f"no account {account!r}")
            query = query.where(Transcript.account_id == ids[0])
        if state:
            query = query.where(Transcript.state == state)
        if since:
            query = query.where(Transcript.created_at >= since)
        rows = [
            {
                "id": t.id,
                "call": t.call_id,
                "recording": t.recording_id,
                "account": names.get(t.account_id) if t.account_id else None,
                "state": t.state,
                "attempts": t.attempts,
                "seconds": round(t.seconds, 1) if t.seconds is not None else None,
                "channels": t.channels,
                "transcribed": t.transcribed_at.isoformat(timespec="seconds") if t.transcribed_at else None,
                "error": t.last_error,
            }
            for t in session.scalars(query)
        ]
    emit(rows, fmt, COLUMNS)


def segment_rows(transcript: Any) -> list[dict[str, Any]]:
    return [
        {"start": round(s.start, 2), "end": round(s.end, 2), "speaker": s.speaker, "text": s.text}
        for s in transcript.segments
    ]


@group.command("show")
@click.argument("call_id", type=int)
@format_option
@pass_app
def show(app: AppContext, call_id: int, fmt: str) -> None:
    """The transcript of a call: each segment with its time and who spoke."""
    from tracking import transcripts
    from tracking.errors import NotFound

    with app.session() as session:
        found = [t for t in transcripts.for_call(session, call_id) if t.state == "done"]
        if not found:
            raise NotFound(f"no transcript of call {call_id}")
        rows = [row for t in found for row in segment_rows(t)]
    if fmt != "table":
        emit(rows, fmt, ["start", "end", "speaker", "text"])
        return
    for line in transcript_lines(rows):
        click.echo(line)


def transcript_lines(rows: list[dict[str, Any]]) -> list[str]:
    """A transcript as a person reads it: each segment whole, with when and who."""
    return [f"{r['start']:7.2f}-{r['end']:<7.2f} {r['speaker']:<6}  {r['text']}" for r in rows]


@group.command("search")
@click.argument("query")
@click.option("--account", help="Only this account's calls.")
@click.option("--since", type=TimeType(), help="Only calls since: 2026-11-01, 7d or 12h.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many calls.")
@format_option
@pass_app
def search(app: AppContext, query: str, account: str | None, since: dt.datetime | None, limit: int, fmt: str) -> None:
    """Calls whose transcript says QUERY (its words as a phrase), with the matching snippet."""
    from sqlalchemy import select

    from schema.models import Account, Call, Source
    from tracking.errors import NotFound
    from tracking.transcript_search import search as find

    with app.session() as session:
        names = {a.id: a.name for a in session.scalars(select(Account))}
        account_id = None
        if account:
            ids = [i for i, n in names.items() if n == account]
            if not ids:
                raise NotFound(f"no account {account!r}")
            account_id = ids[0]
        hits = find(session, query, account_id=account_id, since=since, limit=limit)
        call_ids = [h.call_id for h in hits if h.call_id is not None]
        sources = dict(
            session.execute(
                select(Call.id, Source.name).join(Source, Source.id == Call.source_id).where(Call.id.in_(call_ids))
            ).all()
        )
        rows = [
            {
                "call": h.call_id,
                "account": names.get(h.account_id) if h.account_id else None,
                "source": sources.get(h.call_id) if h.call_id is not None else None,
                "started": h.started_at.isoformat(timespec="seconds") if h.started_at else None,
                "snippet": h.snippet,
            }
            for h in hits
        ]
    if fmt == "table":
        if not rows:
            click.echo(f"no transcript says {query!r}", err=True)
            return
        for r in rows:
            click.echo(f"call {r['call']}  {r['started'] or ''}  {r['account'] or ''} / {r['source'] or '-'}")
            click.echo(f"    {r['snippet']}")
        return
    emit(rows, fmt, ["call", "account", "source", "started", "snippet"])


@group.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all-failed", is_flag=True, help="Every failed transcript, and those the full queue left out.")
@pass_app
def retry(app: AppContext, ids: tuple[int, ...], all_failed: bool) -> None:
    """Queue failed transcripts again with a fresh set of attempts."""
    from tracking import transcripts

    if not ids and not all_failed:
        raise click.UsageError("give transcript ids or --all-failed")
    with app.session() as session:
        count = transcripts.retry(session, ids, every_failed=all_failed)
    click.echo(f"{count} transcript{'s' if count != 1 else ''} queued again")


@group.command("switch")
@click.argument("account")
@click.argument("state", type=click.Choice(["on", "off"]))
@pass_app
def switch(app: AppContext, account: str, state: str) -> None:
    """Transcribe ACCOUNT's recordings (on, the default) or never (off: its new recordings are skipped)."""
    import getpass

    from schema.models import AuditEntry
    from tracking.accounts import get_account

    with app.session() as session:
        acct = get_account(session, account)
        acct.transcription = state == "on"
        session.add(
            AuditEntry(
                actor=f"cli:{getpass.getuser()}", action="transcription.switch", target=f"account:{acct.id}",
                detail={"on": acct.transcription},
            )
        )  # fmt: skip
    click.echo(f"transcription {state} for {account}")
