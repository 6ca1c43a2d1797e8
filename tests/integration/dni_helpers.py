"""What the DNI batching tests share: a shop with a pool of five numbers, and its account as the API reads it."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from tracking.accounts import add_account, add_source
from tracking.pools import add_numbers, create_pool
from tracking.sites import add_site
from tracking.source_rules import add_rule
from web.dni import AccountCache, AccountInfo

SITE = "https://shop.example"
POOL = [f"+1404555{n:04d}" for n in range(170, 175)]
OVERFLOW = "+14045550199"


def shop(session_factory: sessionmaker[Session], settings: Settings) -> AccountInfo:
    """Account "Shop": every page view of SITE is source "Ads", which leases from POOL (30-minute hold)."""
    with session_factory.begin() as s:
        account = add_account(s, "Shop")
        add_source(s, "Shop", "Ads")
        create_pool(s, settings, "p", "Shop", 30, source="Ads", overflow=OVERFLOW)
        add_numbers(s, settings, "p", "Shop", POOL, "PJSIP/1")
        add_site(s, "Shop", SITE)
        add_rule(s, "Shop", "default", "", "Ads")
        key = account.public_key
    info = AccountCache(session_factory).get(key)
    assert info is not None
    return info
