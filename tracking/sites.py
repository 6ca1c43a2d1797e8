"""Websites (origins) allowed to show an account's tracking numbers through dni.js."""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from schema.models import Account, Site
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


def add_site(session: Session, account_name: str, origin: str) -> Site:
    account = get_account(session, account_name)
    origin = normalize_origin(origin)
    if session.scalar(select(Site.id).where(Site.account_id == account.id, Site.origin == origin)) is not None:
        raise Conflict(f"site {origin} already belongs to account {account.name!r}")
    site = Site(account_id=account.id, origin=origin)
    session.add(site)
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


def snippet(public_url: str, public_key: str, replace: list[str] | None = None) -> str:
    """The tag a business pastes into its pages."""
    base = public_url.rstrip("/")
    attrs = f'async src="{html.escape(base)}/dni.js" data-account="{html.escape(public_key)}"'
    if replace:
        attrs += f' data-replace="{html.escape(",".join(replace))}"'
    return f"<script {attrs}></script>"
