"""`calltrack pools`: number pools for website number insertion."""

from __future__ import annotations

import click

from calltrack.context import AppContext, pass_app
from calltrack.output import emit, format_option


@click.group("pools")
def group() -> None:
    """Number pools: one number per website visitor session."""


@group.command("create")
@click.argument("name")
@click.option("--account", required=True, help="The account's name.")
@click.option(
    "--hold-minutes", type=int, required=True, help="How long a number stays with a visitor after their last heartbeat."
)
@click.option("--source", help="Source for calls no visitor session covers.")
@click.option("--overflow", help="Number shown when every pool number is leased.")
@pass_app
def create(
    app: AppContext, name: str, account: str, hold_minutes: int, source: str | None, overflow: str | None
) -> None:
    """Create a pool."""
    from tracking.pools import create_pool

    with app.session() as session:
        pool = create_pool(session, app.settings, name, account, hold_minutes, source=source, overflow=overflow)
        click.echo(f"created pool {pool.name!r} (hold {pool.hold_minutes} min)")


@group.command("add-numbers")
@click.argument("pool")
@click.argument("numbers", nargs=-1, required=True)
@click.option("--account", required=True, help="The account's name.")
@click.option("--forward-to", "forward_to", help="Dial string for new numbers.")
@click.option("--timeout", type=int, help="Ring timeout for new numbers, seconds.")
@click.option("--record/--no-record", default=None, help="Record calls to new numbers.")
@pass_app
def add_numbers(
    app: AppContext,
    pool: str,
    numbers: tuple[str, ...],
    account: str,
    forward_to: str | None,
    timeout: int | None,
    record: bool | None,
) -> None:
    """Add numbers to a pool (new ones are created, the account's existing ones moved in)."""
    from tracking.pools import add_numbers as add

    with app.session() as session:
        members = add(session, app.settings, pool, account, list(numbers), forward_to, timeout=timeout, record=record)
        lines = []
        for m in members:
            if m.change == "source":
                lines.append(
                    f"  {m.number.number}: moved from source {m.previous!r} (its calls now follow visitor sessions)"
                )
            elif m.change == "pool":
                lines.append(f"  {m.number.number}: moved from pool {m.previous!r}")
            elif m.change == "already":
                lines.append(f"  {m.number.number}: already in this pool")
    new = sum(m.change == "new" for m in members)
    moved = sum(m.change in ("source", "pool") for m in members)
    click.echo(f"pool {pool!r}: {new + moved} number(s) added ({new} new, {moved} moved in)")
    for line in lines:
        click.echo(line)


@group.command("list")
@click.option("--account", help="Only this account's pools.")
@format_option
@pass_app
def list_(app: AppContext, account: str | None, fmt: str) -> None:
    """List pools with their sizes."""
    from tracking.pools import list_pools

    with app.session() as session:
        rows = list_pools(session, account)
    emit(rows, fmt, ["name", "account", "hold_minutes", "size", "overflow_number", "overflow_count"])


@group.command("status")
@click.option("--account", help="Only this account's pools.")
@format_option
@pass_app
def status(app: AppContext, account: str | None, fmt: str) -> None:
    """Per pool: size, leases live now, peak, overflow count and a suggested size.

    The suggested size is the peak number of visitor sessions that needed a
    number at the same moment (each from its start until a hold time after its
    last heartbeat), over the last 30 days; a pool smaller than that overflowed.
    """
    from tracking.leases import pool_status

    with app.session() as session:
        rows = pool_status(session, account)
    columns = "account pool source hold_minutes size live peak overflow_count suggested_size advice"
    emit(rows, fmt, columns.split())
