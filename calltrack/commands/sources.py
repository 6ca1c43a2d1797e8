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
    """Rename a source (its numbers, calls, pools and rules keep it)."""
    from tracking.accounts import rename_source

    with app.session() as session:
        rename_source(session, account, old, new)
    click.echo(f"renamed source {old!r} to {new!r}")


@group.command("remove")
@click.argument("name")
@account_option
@click.option("--move-to", "move_to", help="Move its numbers, calls, pools, rules and visitor sessions to this source.")
@click.option("--yes", is_flag=True, help="Remove it even when its calls are left without a source.")
@pass_app
def remove(app: AppContext, name: str, account: str, move_to: str | None, yes: bool) -> None:
    """Remove a source.

    A source with tracking numbers (released ones too) needs --move-to, which moves
    them and everything attributed to the source. Without it, the source's calls and
    visitor sessions keep no source and its website rules are removed (--yes).
    """
    from calltrack.commands.accounts import confirm_or_refuse
    from tracking.privacy import cli_actor
    from tracking.removal import plan_source_removal, remove_source

    with app.session() as session:
        plan = plan_source_removal(session, account, name, move_to)
        if plan.loses_history and not yes:
            confirm_or_refuse(plan.describe())
        remove_source(session, plan, cli_actor())
        click.echo(f"removed {plan.describe()}")
