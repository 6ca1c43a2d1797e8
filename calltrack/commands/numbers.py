"""`calltrack numbers`: tracking numbers."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from calltrack.context import AppContext, pass_app
from calltrack.output import emit, emit_record, format_option

COLUMNS = ["number", "account", "source", "pool", "forward_to", "timeout", "record", "whisper", "label", "status"]
#: `--format csv` writes the columns `numbers import --update` reads, so an export can be edited and imported back
CSV_COLUMNS = [
    "number",
    "account",
    "source",
    "pool",
    "forward_to",
    "timeout",
    "record",
    "whisper",
    "label",
    "hours",
    "after_hours",
    "status",
]


def routing_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by `add` and `update`."""
    for option in reversed(
        [
            click.option("--source", help="The source calls to this number are attributed to."),
            click.option("--pool", help="The DNI pool this number belongs to (instead of a source)."),
            click.option("--forward-to", "forward_to", help="Asterisk dial string, e.g. PJSIP/100&PJSIP/101."),
            click.option("--timeout", type=int, help="Ring timeout in seconds."),
            click.option("--record/--no-record", default=None, help="Record calls to this number."),
            click.option("--whisper", help="Sound file played to the agent who answers."),
            click.option("--label", help="Free text shown in listings."),
            click.option(
                "--hours",
                help="Business hours in the account's timezone, e.g. 'mon-fri 09:00-17:00, sat 10:00-14:00'; "
                "'always' clears them.",
            ),
            click.option("--after-hours", "after_hours", help="Dial string outside business hours ('none' clears it)."),
        ]
    ):
        f = option(f)
    return f


@click.group("numbers")
def group() -> None:
    """Tracking numbers: add, list, update, release, import."""


@group.command("add")
@click.argument("number")
@click.option("--account", required=True, help="The account's name.")
@routing_options
@pass_app
def add(app: AppContext, number: str, account: str, **options: object) -> None:
    """Add a tracking number (any common format; stored as E.164)."""
    from tracking.numbers import NumberFields, add_number

    with app.session() as session:
        tn = add_number(session, app.settings, NumberFields(number, account, **options))  # type: ignore[arg-type]
        click.echo(f"added {tn.number} -> {tn.forward_to}")


@group.command("list")
@click.option("--account", help="Only this account's numbers.")
@click.option("--source", help="Only numbers of this source.")
@click.option("--status", type=click.Choice(["active", "released"]), help="Only numbers in this state.")
@format_option
@pass_app
def list_(app: AppContext, account: str | None, source: str | None, status: str | None, fmt: str) -> None:
    """List tracking numbers."""
    from tracking.listings import number_rows

    region = app.settings.numbers.default_region
    with app.connection() as conn:
        rows = number_rows(conn, account=account, source=source, status=status, region=region, display=fmt == "json")
    emit(rows, fmt, {"json": None, "csv": CSV_COLUMNS}.get(fmt, COLUMNS))


@group.command("show")
@click.argument("number")
@format_option
@pass_app
def show(app: AppContext, number: str, fmt: str) -> None:
    """Show one number."""
    from tracking.listings import find_number

    with app.connection() as conn:
        record = find_number(conn, number, app.settings.numbers.default_region)
    emit_record(record, fmt)


@group.command("update")
@click.argument("number")
@click.option("--account", help="Move the number to this account (give its --source or --pool there).")
@routing_options
@click.option("--reactivate", is_flag=True, help="Route a released number again.")
@pass_app
def update(app: AppContext, number: str, account: str | None, reactivate: bool, **options: object) -> None:
    """Change a number's routing, source or pool."""
    from tracking.numbers import NumberFields, update_number

    with app.session() as session:
        tn = update_number(session, app.settings, NumberFields(number, account, **options), reactivate=reactivate)  # type: ignore[arg-type]
        click.echo(f"updated {tn.number} -> {tn.forward_to} ({tn.status})")


@group.command("release")
@click.argument("number")
@pass_app
def release(app: AppContext, number: str) -> None:
    """Stop routing a number; it is kept for the history of its calls."""
    from tracking.numbers import release_number

    with app.session() as session:
        tn = release_number(session, app.settings, number)
        click.echo(f"released {tn.number}")


@group.command("import")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--update", "update_existing", is_flag=True, help="Change numbers that exist instead of refusing them.")
@pass_app
def import_(app: AppContext, path: str, update_existing: bool) -> None:
    """Import numbers from CSV: all rows or none.

    Columns: number, account, source or pool, forward_to; optional timeout,
    record, whisper, label, hours, after_hours, status (what `numbers list --format csv` writes).
    """
    from tracking.number_import import import_numbers

    with app.session() as session:
        bars: list[Any] = []

        def progress(done: int, total: int) -> None:
            if not bars:
                bars.append(click.progressbar(length=total, label="importing", file=sys.stderr))
            bars[0].update(done)

        result = import_numbers(session, app.settings, path, update_existing=update_existing, progress=progress)
        for bar in bars:
            bar.render_finish()
    click.echo(f"imported {path}: {result.added} added, {result.updated} updated")
