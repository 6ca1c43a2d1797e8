"""`calltrack spam`: calls flagged as likely spam, known spam numbers, clearing a flag."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from calltrack.context import AppContext, pass_app
from calltrack.options import TimeType
from calltrack.output import emit, format_option


@click.group("spam")
def group() -> None:
    """Likely spam: flagged calls with their signals, known spam numbers."""


@group.command("calls")
@click.option("--account", help="Only this account's calls.")
@click.option("--since", type=TimeType(), help="Only calls started since: 2026-11-01, 7d or 12h.")
@format_option
@pass_app
def calls(app: AppContext, account: str | None, since: dt.datetime | None, fmt: str) -> None:
    """Calls flagged as spam, each with the signals that flagged it."""
    from sqlalchemy import select

    from schema.models import Account, Call, CallOutcome
    from tracking.accounts import get_account

    with app.session() as session:
        query = (
            select(Call, CallOutcome.spam_reason, Account.name)
            .join(CallOutcome, CallOutcome.call_id == Call.id)
            .outerjoin(Account, Account.id == Call.account_id)
            .where(CallOutcome.spam.is_(True))
            .order_by(Call.started_at.desc(), Call.id.desc())
        )
        if account:
            query = query.where(Call.account_id == get_account(session, account).id)
        if since:
            query = query.where(Call.started_at >= since)
        rows = [
            {
                "call": c.id,
                "account": acc,
                "caller": c.caller_number,
                "started": c.started_at.isoformat(timespec="seconds") if c.started_at else None,
                "duration": c.duration,
                "why": reason,
            }
            for c, reason, acc in session.execute(query)
        ]
    emit(rows, fmt, ["call", "account", "caller", "started", "duration", "why"])


@group.command("clear")
@click.argument("call_id", type=int)
@pass_app
def clear(app: AppContext, call_id: int) -> None:
    """Not spam: clear the flag by hand (signals do not set it again); audited."""
    import getpass

    from schema.models import AuditEntry
    from tracking.errors import NotFound
    from tracking.spam import clear as clear_flag

    with app.session() as session:
        if not clear_flag(session, call_id):
            raise NotFound(f"call {call_id} is not flagged as spam")
        session.add(AuditEntry(actor=f"cli:{getpass.getuser()}", action="spam.clear", target=f"call:{call_id}"))
    click.echo(f"call {call_id}: spam flag cleared")


@group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--account", help="Only for this account (default: every account).")
@pass_app
def import_(app: AppContext, file: Path, account: str | None) -> None:
    """Known spam numbers from CSV (columns: number, and optionally reason); all rows or none."""
    from tracking.accounts import get_account
    from tracking.caller_lists import caller_key
    from tracking.errors import InvalidInput
    from tracking.spam import import_csv

    try:
        data = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(f"{file}: not UTF-8 text") from None
    settings = app.settings
    with app.session() as session:
        account_id = get_account(session, account).id if account else None
        added, known = import_csv(session, data, lambda raw: caller_key(raw, settings), account_id)
    click.echo(f"{added} spam number{'s' if added != 1 else ''} added, {known} known already")


@group.command("numbers")
@click.option("--account", help="Only this account's list (default: every list).")
@format_option
@pass_app
def numbers(app: AppContext, account: str | None, fmt: str) -> None:
    """The known spam numbers."""
    from sqlalchemy import select

    from schema.models import Account, SpamNumber
    from tracking.accounts import get_account

    with app.session() as session:
        query = select(SpamNumber, Account.name).outerjoin(Account, Account.id == SpamNumber.account_id)
        if account:
            query = query.where(SpamNumber.account_id == get_account(session, account).id)
        rows = [
            {"number": n.number, "account": acc or "(every account)", "reason": n.reason}
            for n, acc in session.execute(query.order_by(SpamNumber.number))
        ]
    emit(rows, fmt, ["number", "account", "reason"])
