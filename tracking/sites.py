"""Websites (origins) allowed to show an account's tracking numbers through dni.js."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from schema.models import Account, Site, TrackingNumber
from tracking.accounts import get_account
from tracking.errors import Conflict, InvalidInput, NotFound

_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def normalize_origin(raw: str) -> str:
    """``https://Example.com:443/`` -> ``https://example.com``: the form browsers send in ``Origin``."""
    text = (raw or "").strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise InvalidInput(f"invalid origin {raw!r}: expected https://host[:port]") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"invalid origin {raw!r}: expected https://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidInput(f"invalid origin {raw!r}: an origin has no path, query or user (https://host[:port])")
    host = parts.hostname.lower().rstrip(".")
    if not (_HOST.match(host) or _is_ip_literal(host)):
        raise InvalidInput(f"invalid origin {raw!r}: {host!r} is not a host name")
    default = {"http": 80, "https": 443}[parts.scheme]
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def _is_ip_literal(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


#: business numbers one site may name (each becomes a few digit sequences the script looks for)
MAX_REPLACE = 20


def normalize_region(raw: str | None) -> str | None:
    """``gb`` -> ``GB``; None stays None (numbers.default_region)."""
    from config.regions import REGIONS

    if raw is None:
        return None
    region = raw.strip().upper()
    if region not in REGIONS:
        raise InvalidInput(f"unknown region {raw!r}: use a country code such as US, GB, DE")
    return region


def replace_numbers(session: Session, account_id: int, numbers: Iterable[str], region: str) -> list[str]:
    """The business numbers to replace, as E.164, read in *region*; raises InvalidInput naming the bad one."""
    from tracking import phone

    found: list[str] = []
    for raw in numbers:
        try:
            number = phone.normalize(raw, region)
        except InvalidInput as exc:
            hint = "" if raw.strip().startswith("+") else "; or name the site's country with --region (GB, DE...)"
            raise InvalidInput(f"--replace {raw!r}: {exc}{hint}") from None
        if number in found:
            continue
        tracking = session.scalar(
            select(TrackingNumber.id).where(TrackingNumber.account_id == account_id, TrackingNumber.number == number)
        )
        if tracking is not None:
            raise InvalidInput(
                f"--replace {raw!r}: {number} is one of the account's tracking numbers; "
                "--replace takes the number the business's pages show now"
            )
        found.append(number)
    if len(found) > MAX_REPLACE:
        raise InvalidInput(f"at most {MAX_REPLACE} numbers to replace per site ({len(found)} given)")
    return found


def add_site(
    session: Session,
    account_name: str,
    origin: str,
    replace: Iterable[str] = (),
    region: str | None = None,
    default_region: str = "US",
) -> Site:
    """Allow *origin* for the account; *replace*: the business numbers its pages show (read in *region*)."""
    account = get_account(session, account_name)
    origin = normalize_origin(origin)
    region = normalize_region(region)
    if session.scalar(select(Site.id).where(Site.account_id == account.id, Site.origin == origin)) is not None:
        raise Conflict(f"site {origin} already belongs to account {account.name!r}")
    numbers = replace_numbers(session, account.id, replace, region or default_region)
    site = Site(account_id=account.id, origin=origin, replace_numbers=",".join(numbers), region=region)
    session.add(site)
    session.flush()
    return site


def update_site(
    session: Session,
    account_name: str,
    origin: str,
    replace: Iterable[str] | None = None,
    region: str | None = None,
    default_region: str = "US",
) -> Site:
    """Change a site's business numbers (all of them: *replace* replaces the list) or region."""
    account = get_account(session, account_name)
    site = session.scalar(select(Site).where(Site.account_id == account.id, Site.origin == normalize_origin(origin)))
    if site is None:
        raise NotFound(f"no site {origin!r} in account {account.name!r} (see `calltrack sites list`)")
    if region is not None:
        site.region = normalize_region(region)
    if replace is not None:
        numbers = replace_numbers(session, account.id, replace, site.region or default_region)
        site.replace_numbers = ",".join(numbers)
    session.flush()
    return site


def remove_site(session: Session, account_name: str, origin: str) -> None:
    account = get_account(session, account_name)
    site = session.scalar(select(Site).where(Site.account_id == account.id, Site.origin == normalize_origin(origin)))
    if site is None:
        raise NotFound(f"no site {origin!r} in account {account.name!r} (see `calltrack sites list`)")
    session.delete(site)
    session.flush()


def list_sites(session: Session, account_name: str | None = None) -> list[tuple[Site, Account]]:
    query = select(Site, Account).join(Account, Account.id == Site.account_id).order_by(Account.name, Site.origin)
    if account_name:
        query = query.where(Site.account_id == get_account(session, account_name).id)
    return [(site, account) for site, account in session.execute(query).all()]


def snippet(public_url: str, public_key: str, replace: list[str] | None = None, forms: str | None = None) -> str:
    """The tag a business pastes into its pages (*forms*: the site's form capture, tracking/form_leads.py)."""
    base = public_url.rstrip("/")
    attrs = f'async src="{html.escape(base)}/dni.js" data-account="{html.escape(public_key)}"'
    if replace:
        attrs += f' data-replace="{html.escape(",".join(replace))}"'
    if forms:
        attrs += f' data-forms="{html.escape(forms)}"'
    return f"<script {attrs}></script>"
