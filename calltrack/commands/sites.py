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
@click.option(
    "--forms",
    type=click.Choice(["marked", "all"]),
    help="Capture form submissions as leads: forms marked data-calltrack-form, or all (never passwords, cards).",
)
@pass_app
def add(
    app: AppContext, account: str, origin: str, replace: tuple[str, ...], region: str | None, forms: str | None
) -> None:
    """Allow a site, and print the snippet to paste into its pages."""
    from tracking.accounts import get_account
    from tracking.form_leads import set_forms
    from tracking.sites import add_site, snippet

    with app.session() as session:
        site = add_site(session, account, origin, replace, region, app.settings.numbers.default_region)
        if forms:
            set_forms(session, account, site.origin, forms)
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
    click.echo(snippet(_public_url(app), public_key, numbers, forms))


@group.command("forms")
@click.argument("account")
@click.option("--origin", required=True, help="The site's origin.")
@click.argument("mode", type=click.Choice(["marked", "all", "off"]))
@pass_app
def forms_(app: AppContext, account: str, origin: str, mode: str) -> None:
    """Form leads for a site: capture forms marked data-calltrack-form, all forms, or none (off).

    Prints the site's snippet again: its data-forms attribute tells the script what to capture.
    """
    from tracking.accounts import get_account
    from tracking.form_leads import set_forms
    from tracking.sites import snippet

    with app.session() as session:
        site = set_forms(session, account, origin, None if mode == "off" else mode)
        key, numbers = get_account(session, account).public_key, [n for n in site.replace_numbers.split(",") if n]
        origin_text, forms = site.origin, site.forms
    click.echo(f"site {origin_text}: form capture {mode}; the snippet for its pages:", err=True)
    click.echo(snippet(_public_url(app), key, numbers, forms))


@group.command("update")
@click.argument("account")
@click.option("--origin", required=True, help="The site's origin.")
@click.option("--replace", "replace", multiple=True, help="The business numbers the pages show (replaces the list).")
@click.option("--no-replace", is_flag=True, help="Forget the site's business numbers (the script then swaps none).")
@click.option("--region", help="Where the site's numbers without a country code are read.")
@pass_app
def update(
    app: AppContext, account: str, origin: str, replace: tuple[str, ...], no_replace: bool, region: str | None
) -> None:
    """Change a site's business numbers or region (the snippet stays the same)."""
    from tracking.errors import InvalidInput
    from tracking.sites import update_site

    if replace and no_replace:
        raise InvalidInput("give --replace numbers or --no-replace, not both")
    numbers = () if no_replace else (replace or None)
    if numbers is None and region is None:
        raise InvalidInput("nothing to change: give --replace, --no-replace or --region")
    with app.session() as session:
        site = update_site(session, account, origin, numbers, region, app.settings.numbers.default_region)
        shown = ", ".join(n for n in site.replace_numbers.split(",") if n) or "none"
        click.echo(
            f"site {site.origin}: business numbers {shown}, region {site.region or app.settings.numbers.default_region}"
        )


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
                "forms": site.forms or "off",
            }
            for site, acc in list_sites(session, account)
        ]
    emit(rows, fmt, ["account", "origin", "key", "replace", "region", "forms"])


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


@group.command("check")
@click.argument("page")
@click.option("--origin", help="The site the page belongs to: needed for a saved file; default the URL's origin.")
@pass_app
def check(app: AppContext, page: str, origin: str | None) -> None:
    """Report which numbers dni.js would swap on PAGE (a URL, or a saved HTML file for pages behind a sign-in).

    Says too what would stop it: an origin that is not a site (www or not, http or https), no
    dni.js tag or another account's key, no business number named, snippet numbers that are no
    number in the site's region.  Exit 1 when the script would swap nothing there.
    """
    from pathlib import Path

    from tracking.errors import InvalidInput
    from tracking.page_numbers import other_numbers, read_page, swaps_on
    from tracking.sites import normalize_origin

    if page.startswith(("http://", "https://")):
        text, final = _fetch(page)
        origin = origin or final
        click.echo(f"page: {final}")
    else:
        path = Path(page)
        if not path.is_file():
            raise InvalidInput(f"{page}: no such file (give a URL, or a saved page with --origin)")
        if not origin:
            raise InvalidInput("a page from a file needs --origin: the site it belongs to (https://www.example.com)")
        text = path.read_text(encoding="utf-8", errors="replace")
        click.echo(f"page: {path}")
    origin = normalize_origin(_origin_of(origin))
    parsed = read_page(text)
    problems, numbers, region, marked = _check_site(app, origin, parsed)
    found = swaps_on(parsed, numbers, marked) if numbers else []
    if found:
        click.echo(f"would swap {len(found)}:")
        for item in found:
            click.echo(f"  {item.where}: {item.shown}  ({item.number})")
    left = other_numbers(parsed, region, numbers)
    if left:
        click.echo(f"left alone, not a business number of the site ({len(left)}):")
        for where, shown in left:
            click.echo(f"  {where}: {shown}")
    if numbers and not found:
        problems.append("none of the business numbers is on the page in a form the script finds")
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if problems or not found:
        raise SystemExit(1)


def _origin_of(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else url


def _fetch(url: str) -> tuple[str, str]:
    import httpx

    from tracking.errors import InvalidInput

    try:
        response = httpx.get(url, follow_redirects=True, timeout=15.0, headers={"User-Agent": "calltrack-sites-check"})
    except httpx.HTTPError as exc:
        raise InvalidInput(f"{url}: could not fetch the page: {exc}") from None
    if response.status_code != 200:
        raise InvalidInput(
            f"{url}: the server answered {response.status_code}; for a page behind a sign-in, save it and give the file"
        )
    return response.text, str(response.url)


def _check_site(app: AppContext, origin: str, parsed: object) -> tuple[list[str], list[str], str, list[str]]:
    """Problems found, the business numbers the script would get, the site's region, the marked attributes."""
    from sqlalchemy import select

    from schema.models import Account, Site
    from tracking import phone
    from tracking.page_numbers import Page

    assert isinstance(parsed, Page)
    problems: list[str] = []
    default = app.settings.numbers.default_region
    with app.session() as session:
        rows = session.execute(select(Site, Account).join(Account, Account.id == Site.account_id)).all()
        sites = [(site.origin, site.replace_numbers, site.region, acc.name, acc.public_key) for site, acc in rows]
    mine = [row for row in sites if row[0] == origin]
    keys = {row[4]: row[3] for row in sites}
    tag = parsed.tags[0] if parsed.tags else None
    if tag is None:
        problems.append(
            "no dni.js tag (a <script> with data-account) on the page: paste the snippet `sites add` printed"
        )
    elif tag.account not in keys:
        problems.append(f"the tag's data-account {tag.account!r} is no account's key (see `calltrack sites list`)")
    if not mine:
        host = origin.split("://", 1)[1]
        bare = host[4:] if host.startswith("www.") else "www." + host
        near = [row for row in sites if row[0].split("://", 1)[1] in (host, bare)]
        hint = "; ".join(f"did you mean {row[0]} (account {row[3]})?" for row in near)
        problems.append(
            f"{origin} is not a site of any account: the service refuses the script there "
            f"(calltrack sites add ACCOUNT --origin {origin}){'; ' + hint if hint else ''}"
        )
        return problems, [], default, []
    if tag is not None and tag.account in keys:
        mine_by_key = [row for row in mine if row[4] == tag.account]
        if not mine_by_key:
            problems.append(
                f"the tag's data-account is account {keys[tag.account]!r}'s key, but {origin} is a site of "
                + ", ".join(repr(row[3]) for row in mine)
            )
        else:
            mine = mine_by_key
    site_origin, stored, region, account, _ = mine[0]
    region = region or default
    numbers = [n for n in stored.split(",") if n]
    click.echo(f"site: {site_origin} (account {account}, region {region})")
    for written in tag.replace if tag else []:
        number = phone.try_normalize(written, region)
        if number is None:
            problems.append(f"the tag's data-replace {written!r} is no phone number in region {region}: ignored")
        elif number not in numbers:
            numbers.append(number)
    if numbers:
        click.echo("business numbers: " + ", ".join(phone.display(n, region) for n in numbers))
    else:
        problems.append(
            f"no business number to replace: calltrack sites update {account} --origin {site_origin} --replace NUMBER"
        )
    return problems, numbers, region, tag.attrs if tag else []
