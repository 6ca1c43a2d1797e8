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
