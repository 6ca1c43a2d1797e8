"""`calltrack conversions`: offline conversion files for ad platforms (Google Ads, Microsoft Advertising)."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

import click

from calltrack.context import AppContext, pass_app
from calltrack.options import TimeType, check_period


@click.group("conversions")
def group() -> None:
    """Calls from ad clicks as offline conversions, for the ad platform's import."""


@group.command("export")
@click.option("--account", required=True, help="The account whose calls are exported.")
@click.option("--since", type=TimeType(), required=True, help="Calls started at or after this time (2026-11-01, 7d).")
@click.option("--until", type=TimeType(), help="Calls started before this time (default: now).")
@click.option(
    "--min-duration",
    type=click.FloatRange(min=0),
    default=60,
    show_default=True,
    help="Seconds of conversation (talk time) a call needs to count.",
)
@click.option("--qualified-only", is_flag=True, help="Only calls qualified as a lead.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["google-click", "google-leads", "microsoft", "csv"]),
    required=True,
    help="google-click, google-leads (enhanced conversions for leads), microsoft, csv.",
)
@click.option(
    "--conversion-name",
    default="Phone call",
    show_default=True,
    help="The conversion action's name, exactly as on the ad platform.",
)
@click.option("--value", type=float, help="The value of a conversion whose call has none of its own.")
@click.option("--currency", default="USD", show_default=True, help="ISO 4217 code of the values.")
@click.option("--again", is_flag=True, help="Also calls exported before under this platform and conversion name.")
@click.option("--to", "to", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE (default: stdout).")
@pass_app
def export(
    app: AppContext,
    account: str,
    since: dt.datetime,
    until: dt.datetime | None,
    min_duration: float,
    qualified_only: bool,
    fmt: str,
    conversion_name: str,
    value: float | None,
    currency: str,
    again: bool,
    to: Path | None,
) -> None:
    """Calls whose website visit carried a click id, as the platform's import file.

    Each call is exported once per platform and conversion name: a later export of an
    overlapping period leaves it out (--again puts it back). Calls outside the platform's
    import window (90 days from the click; 63 for google-leads) are skipped and counted.
    """
    from tracking.conversions import ExportRequest
    from tracking.conversions import export as run

    check_period(since, until)
    req = ExportRequest(
        account=account,
        format=fmt,
        since=since,
        until=until,
        min_duration=min_duration,
        qualified_only=qualified_only,
        conversion_name=conversion_name,
        value=value,
        currency=currency,
        again=again,
    )
    with app.session() as session:
        result = run(session, req)
        text = result.text()
        # written before the marks commit: a file that could not be written marks nothing
        if to is None:
            click.echo(text, nl=False)
        else:
            _write(to, text)
    where = f" to {to}" if to is not None else ""
    click.echo(f"{len(result.conversions)} conversion(s) exported{where} ({fmt}, {conversion_name!r})", err=True)
    for reason, count in sorted(result.skipped.items()):
        click.echo(f"skipped {count} call(s): {reason}", err=True)


def _write(path: Path, text: str) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None
