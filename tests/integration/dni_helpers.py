"""What the DNI batching tests share: a shop with a pool of five numbers, and its account as the API reads it."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
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


def shop_key(session_factory: sessionmaker[Session], settings: Settings) -> str:
    """Account "Shop": every page view of SITE is source "Ads", which leases from POOL (30-minute hold).  Its key."""
    with session_factory.begin() as s:
        account = add_account(s, "Shop")
        add_source(s, "Shop", "Ads")
        create_pool(s, settings, "p", "Shop", 30, source="Ads", overflow=OVERFLOW)
        add_numbers(s, settings, "p", "Shop", POOL, "PJSIP/1")
        add_site(s, "Shop", SITE)
        add_rule(s, "Shop", "default", "", "Ads")
        return account.public_key


def shop(session_factory: sessionmaker[Session], settings: Settings) -> AccountInfo:
    """:func:`shop_key`'s account as the API reads it."""
    info = AccountCache(session_factory).get(shop_key(session_factory, settings))
    assert info is not None
    return info


def sent_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement psycopg sends from now on, SQLAlchemy's or not (the DNI API's go to the driver directly)."""
    sent: list[str] = []
    execute = psycopg.Cursor.execute

    def counting(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return execute(cursor, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counting)
    return sent
