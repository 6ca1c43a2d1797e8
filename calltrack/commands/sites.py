"""`calltrack sites`: websites that show an account's tracking numbers (dni.js)."""

from __future__ import annotations

import click

from calltrack.context import AppContext, pass_app
from calltrack.output import emit, format_option


def _public_url(app: AppContext) -> str:
    web = app.settings.web
    return web.public_url or f"http://{web.listen}"


@click.group("sites")
def group() -> None:
    """Websites (origins) allowed to show an account's tracking numbers."""


@group.command("add")
@click.argument("account")
@click.option("--origin", required=True, help="The site's origin, https://www.example.com (scheme, host, port).")
@click.option(
    "--replace",
    "replace",
    multiple=True,
    help="The business number the pages show, which the script swaps (repeatable); the script swaps no other number.",
)
@click.option(
    "--region",
    help="Where the site's numbers without a country code are read (GB, DE...); default numbers.default_region.",
)
@pass_app
def add(app: AppContext, account: str, origin: str, replace: tuple[str, ...], region: str | None) -> None:
    """Allow a site, and print the snippet to paste into its pages."""
    from tracking.accounts import get_account
    from tracking.sites import add_site, snippet

    with app.session() as session:
        site = add_site(session, account, origin, replace, region, app.settings.numbers.default_region)
        public_key, origin_text = get_account(session, account).public_key, site.origin
        numbers = [n for n in site.replace_numbers.split(",") if n]
    if not numbers:
        click.echo(
            "note: no --replace number: the script swaps no number on this site's pages until its snippet "
            "names one (data-replace)",
            err=True,
        )
    click.echo(f"added site {origin_text}; paste this into every page, before </body>:", err=True)
    if not app.settings.web.public_url:
        click.echo(
            "note: web.public_url is not set, so the snippet points at web.listen; "
            "set it to the address browsers reach (https://...)",
            err=True,
        )
    click.echo(snippet(_public_url(app), public_key, numbers))


@group.command("list")
@click.option("--account", help="Only this account's sites.")
@format_option
@pass_app
def list_(app: AppContext, account: str | None, fmt: str) -> None:
    """List sites with their account's data-account key."""
    from tracking.sites import list_sites

    with app.session() as session:
        rows = [
            {
                "account": acc.name,
                "origin": site.origin,
                "key": acc.public_key,
                "replace": " ".join(n for n in site.replace_numbers.split(",") if n),
                "region": site.region or app.settings.numbers.default_region,
            }
            for site, acc in list_sites(session, account)
        ]
    emit(rows, fmt, ["account", "origin", "key", "replace", "region"])


@group.command("remove")
@click.argument("account")
@click.option("--origin", required=True, help="The site's origin.")
@pass_app
def remove(app: AppContext, account: str, origin: str) -> None:
    """Stop answering a site (its pages keep their original numbers)."""
    from tracking.sites import remove_site

    with app.session() as session:
        remove_site(session, account, origin)
    click.echo(f"removed site {origin}")
