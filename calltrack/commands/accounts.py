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
    from tracking.listings import account_rows

    with app.connection() as conn:
        rows = account_rows(conn)
    emit(rows, fmt, ["name", "timezone", "public_key", "created_at"])


@group.command("rename")
@click.argument("old")
@click.argument("new")
@pass_app
def rename(app: AppContext, old: str, new: str) -> None:
    """Rename an account (its numbers, calls and dni.js key stay as they are)."""
    from tracking.removal import rename_account

    with app.session() as session:
        account = rename_account(session, old, new)
        click.echo(f"renamed account {old!r} to {account.name!r}")


@group.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Remove it even when calls, numbers or recordings go with it.")
@pass_app
def remove(app: AppContext, name: str, yes: bool) -> None:
    """Remove an account with everything it holds.

    Its sources, numbers, pools, sites, rules, visitor sessions, calls (timelines and
    raw events), recordings (rows and archive files), texts and dashboard users go
    with it. When that loses history, --yes is required (or a yes at the prompt).
    """
    from tracking.privacy import cli_actor
    from tracking.removal import plan_account_removal, remove_account

    with app.session() as session:
        plan = plan_account_removal(session, name)
        if plan.loses_history and not yes:
            confirm_or_refuse(f"{plan.describe()}; removing it deletes them all, recording files included")
        erased = remove_account(session, plan, cli_actor())
    click.echo(
        f"removed account {plan.account.name!r}: {erased.calls} call(s), {erased.recordings} recording(s) "
        f"({erased.files} file(s)), {plan.counts['number']} number(s), {plan.counts['source']} source(s)"
    )
    for path in erased.missing_files:
        click.echo(f"warning: recording file {path} was already gone or could not be removed", err=True)


def confirm_or_refuse(what: str) -> None:
    """Ask at a terminal; elsewhere (a script, a pipe) refuse, saying how to go ahead."""
    import sys

    if not sys.stdin.isatty():
        raise click.ClickException(f"{what}: add --yes to go ahead")
    click.confirm(f"{what}. Go ahead?", abort=True, err=True)
