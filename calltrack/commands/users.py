"""`calltrack users`: the people who sign in to the dashboard."""

from __future__ import annotations

import click

from calltrack.context import AppContext, pass_app
from calltrack.output import emit, format_option


@click.group("users")
def group() -> None:
    """Dashboard users: administrators, agency managers, account members."""


def _actor() -> str:
    from tracking.privacy import cli_actor

    return cli_actor()


def _read_password(ask: bool) -> str | None:
    if not ask:
        return None
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


@group.command("add")
@click.argument("username")
@click.option("--admin", "role", flag_value="admin", help="An administrator: every account, users, audit log.")
@click.option("--manager", "role", flag_value="manager", help="An agency manager of the --account given.")
@click.option("--member", "role", flag_value="member", default=True, help="An account member (the default).")
@click.option("--account", "accounts", multiple=True, help="An account they may see (repeat for several).")
@click.option("--password", "ask", is_flag=True, help="Type the password (else one is generated and printed once).")
@pass_app
def add(app: AppContext, username: str, role: str, accounts: tuple[str, ...], ask: bool) -> None:
    """Add a user; without --password a generated password is printed once."""
    from tracking.users import add_user

    password = _read_password(ask)
    with app.session() as session:
        user, generated = add_user(session, username, role, password, accounts, actor=_actor())
        click.echo(f"added {user.role} {user.username!r}" + (f" (accounts: {', '.join(accounts)})" if accounts else ""))
    if generated:
        click.echo(f"password: {generated}")
        click.echo("(shown once: give it to the user; they can change it after signing in)", err=True)


@group.command("list")
@format_option
@pass_app
def list_(app: AppContext, fmt: str) -> None:
    """List users with their role and accounts."""
    from tracking.users import list_users

    with app.session() as session:
        rows = list_users(session)
    emit(rows, fmt, ["username", "role", "accounts", "disabled", "created_at"])


@group.command("grant")
@click.argument("username")
@click.option("--account", required=True, help="The account to let them see.")
@pass_app
def grant(app: AppContext, username: str, account: str) -> None:
    """Let a manager or member see an account."""
    from tracking.users import grant as do_grant

    with app.session() as session:
        added = do_grant(session, username, account, actor=_actor())
    click.echo(f"granted {account!r} to {username!r}" if added else f"{username!r} already sees {account!r}")


@group.command("revoke")
@click.argument("username")
@click.option("--account", required=True, help="The account to take away.")
@pass_app
def revoke(app: AppContext, username: str, account: str) -> None:
    """Stop a manager or member seeing an account (at their next request)."""
    from tracking.users import revoke as do_revoke

    with app.session() as session:
        gone = do_revoke(session, username, account, actor=_actor())
    click.echo(f"revoked {account!r} from {username!r}" if gone else f"{username!r} did not see {account!r}")


@group.command("disable")
@click.argument("username")
@click.option("--enable", is_flag=True, help="Enable a disabled user again.")
@pass_app
def disable(app: AppContext, username: str, enable: bool) -> None:
    """Disable a user: they are signed out and cannot sign in."""
    from tracking.users import set_disabled

    with app.session() as session:
        user = set_disabled(session, username, not enable, actor=_actor())
        click.echo(f"{'enabled' if enable else 'disabled'} {user.username!r}")


@group.command("reset-password")
@click.argument("username")
@click.option("--password", "ask", is_flag=True, help="Type the new password (else one is generated and printed).")
@pass_app
def reset_password(app: AppContext, username: str, ask: bool) -> None:
    """Give a user a new password; their sessions end."""
    from tracking.users import get_user, set_password

    password = _read_password(ask)
    with app.session() as session:
        user = get_user(session, username)
        generated = set_password(session, user, password, actor=_actor())
        click.echo(f"new password set for {user.username!r}; their sessions ended")
    if generated:
        click.echo(f"password: {generated}")
