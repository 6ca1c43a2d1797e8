"""`calltrack accounts`: business customers."""

from __future__ import annotations

import click

from calltrack.context import AppContext, pass_app
from calltrack.output import emit, format_option


@click.group("accounts")
def group() -> None:
    """Business customers (an agency manages several)."""


@group.command("add")
@click.argument("name")
@click.option("--timezone", default="UTC", show_default=True, help="IANA timezone for business hours and reports.")
@pass_app
def add(app: AppContext, name: str, timezone: str) -> None:
    """Add an account."""
    from tracking.accounts import add_account

    with app.session() as session:
        account = add_account(session, name, timezone)
        click.echo(f"added account {account.name!r} (timezone {account.timezone}, public key {account.public_key})")


@group.command("list")
@format_option
@pass_app
def list_(app: AppContext, fmt: str) -> None:
    """List accounts."""
    from tracking.accounts import list_accounts

    with app.session() as session:
        rows = [
            {
                "name": a.name,
                "timezone": a.timezone,
                "public_key": a.public_key,
                "created_at": a.created_at.isoformat(timespec="seconds"),
            }
            for a in list_accounts(session)
        ]
    emit(rows, fmt, ["name", "timezone", "public_key", "created_at"])
