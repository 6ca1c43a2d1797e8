"""`calltrack sources`: marketing sources of an account."""

from __future__ import annotations

import click

from calltrack.context import AppContext, pass_app
from calltrack.output import emit, format_option

account_option = click.option("--account", "account", required=True, help="The account's name.")


@click.group("sources")
def group() -> None:
    """Marketing sources (channels) of an account."""


@group.command("add")
@click.argument("name")
@account_option
@click.option("--medium", help="For example cpc, organic, print.")
@click.option("--campaign", help="Campaign name.")
@pass_app
def add(app: AppContext, name: str, account: str, medium: str | None, campaign: str | None) -> None:
    """Add a source to an account."""
    from tracking.accounts import add_source

    with app.session() as session:
        source = add_source(session, account, name, medium, campaign)
        click.echo(f"added source {source.name!r} to account {source.account.name!r}")


@group.command("list")
@click.option("--account", help="Only this account's sources.")
@format_option
@pass_app
def list_(app: AppContext, account: str | None, fmt: str) -> None:
    """List sources."""
    from tracking.accounts import list_sources

    with app.session() as session:
        rows = [
            {"account": s.account.name, "name": s.name, "medium": s.medium, "campaign": s.campaign}
            for s in list_sources(session, account)
        ]
    emit(rows, fmt, ["account", "name", "medium", "campaign"])


@group.command("rename")
@click.argument("old")
@click.argument("new")
@account_option
@pass_app
def rename(app: AppContext, old: str, new: str, account: str) -> None:
    """Rename a source (its numbers and calls keep it)."""
    from tracking.accounts import rename_source

    with app.session() as session:
        rename_source(session, account, old, new)
    click.echo(f"renamed source {old!r} to {new!r}")
