"""`calltrack callers`: blocked and do-not-track caller lists."""

from __future__ import annotations

import click

from calltrack.context import AppContext, pass_app
from calltrack.output import emit, format_option

account_option = click.option("--account", help="Only for this account (default: every account).")


def _add(app: AppContext, number: str, kind: str, account: str | None, reason: str | None) -> str:
    """Put the caller on a list; the key it is stored under (E.164, or the caller ID)."""
    from tracking.caller_lists import add_entry

    with app.session() as session:
        return add_entry(session, app.settings, number, kind, account, reason).number


@click.group("callers")
def group() -> None:
    """Blocked callers (refused) and do-not-track callers (routed, nothing stored)."""


@group.command("block")
@click.argument("number")
@account_option
@click.option("--reason", help="Why (shown in listings).")
@pass_app
def block(app: AppContext, number: str, account: str | None, reason: str | None) -> None:
    """Refuse calls from NUMBER (a phone number, or a caller ID such as anonymous)."""
    key = _add(app, number, "blocked", account, reason)
    click.echo(f"blocked {key}{' for ' + account if account else ' for every account'}")


@group.command("do-not-track")
@click.argument("number")
@account_option
@click.option("--reason", help="Why (shown in listings).")
@pass_app
def do_not_track(app: AppContext, number: str, account: str | None, reason: str | None) -> None:
    """Route calls from NUMBER but store nothing about the caller."""
    key = _add(app, number, "do-not-track", account, reason)
    click.echo(f"{key} is not tracked{' for ' + account if account else ' for any account'}")


@group.command("remove")
@click.argument("number")
@account_option
@click.option("--list", "kind", type=click.Choice(["blocked", "do-not-track"]), help="Only from this list.")
@pass_app
def remove(app: AppContext, number: str, account: str | None, kind: str | None) -> None:
    """Take NUMBER off the caller lists."""
    from tracking.caller_lists import remove_entry

    with app.session() as session:
        count = remove_entry(session, app.settings, number, kind, account)
    click.echo(f"removed {count} entr{'y' if count == 1 else 'ies'}")


@group.command("list")
@account_option
@click.option("--list", "kind", type=click.Choice(["blocked", "do-not-track"]), help="Only this list.")
@format_option
@pass_app
def list_(app: AppContext, account: str | None, kind: str | None, fmt: str) -> None:
    """List blocked and do-not-track callers."""
    from tracking.caller_lists import list_entries

    with app.session() as session:
        rows = list_entries(session, account, kind)
    emit(rows, fmt, ["number", "list", "account", "reason", "added_at"])


@group.command("lookup")
@click.argument("number")
@click.option("--refresh", is_flag=True, help="Ask the provider again even when an answer is cached.")
@format_option
@pass_app
def lookup(app: AppContext, number: str, refresh: bool, fmt: str) -> None:
    """What the [lookup] provider says about NUMBER (cached answers first; HTTPS, certificate verified)."""
    import datetime as dt

    from calltrack.output import emit_record
    from tracking import caller_lookup, phone

    cfg = app.settings.lookup
    if not cfg.url_template:
        raise click.ClickException("no caller lookup provider: set [lookup] url_template (see README, Caller lookups)")
    from lookups.https import HttpsProvider, LookupSetupError

    e164 = phone.normalize(number, app.settings.numbers.default_region)
    try:
        provider = HttpsProvider(cfg)
    except LookupSetupError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        with app.session() as session:
            row = caller_lookup.lookup(
                session,
                provider,
                e164,
                ttl=dt.timedelta(days=cfg.ttl_days),
                retry=dt.timedelta(minutes=cfg.retry_minutes),
                refresh=refresh,
            )
            if row is None:
                raise click.ClickException(f"{e164} is on a do-not-track list: it is never looked up")
            record = {
                "number": row.number,
                "provider": row.provider,
                "status": row.status,
                "name": row.name,
                "line_type": row.line_type,
                "carrier": row.carrier,
                "error": row.error,
                "fetched_at": row.fetched_at.isoformat(timespec="seconds"),
                "expires_at": row.expires_at.isoformat(timespec="seconds"),
            }
    finally:
        provider.close()
    emit_record(record, fmt)
    if record["status"] == "error":
        raise SystemExit(1)
