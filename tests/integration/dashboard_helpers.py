"""A dashboard under test: the real web app over ASGI, a test clock, users made through tracking.users."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from tracking.users import add_user
from web.app import create_app

START = dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC)
PASSWORD = "correct horse battery"
_HIDDEN = re.compile(r'name="csrf" value="([^"]+)"')


class Clock:
    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)


def csrf_of(html: str) -> str:
    found = _HIDDEN.search(html)
    assert found, "no csrf field in the page"
    return found.group(1)


@dataclass
class Board:
    app: Any
    clock: Clock
    factory: sessionmaker[Session]
    base_url: str = "http://ct.test"

    def client(self, peer: str = "198.51.100.7") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(peer, 40000))
        return httpx.AsyncClient(transport=transport, base_url=self.base_url)

    def user(
        self, username: str, role: str = "member", accounts: tuple[str, ...] = (), password: str = PASSWORD
    ) -> None:
        with self.factory.begin() as s:
            add_user(s, username, role, password, accounts)

    async def signin(
        self, client: httpx.AsyncClient, username: str, password: str = PASSWORD, **extra: str
    ) -> httpx.Response:
        page = await client.get("/dashboard/signin")
        assert page.status_code == 200, page.text
        form = {"csrf": csrf_of(page.text), "username": username, "password": password, **extra}
        return await client.post("/dashboard/signin", data=form)

    @contextlib.asynccontextmanager
    async def signed_in(self, username: str, peer: str = "198.51.100.7") -> AsyncIterator[httpx.AsyncClient]:
        async with self.client(peer) as client:
            response = await self.signin(client, username)
            assert response.status_code == 303, response.text
            yield client

    async def csrf(self, client: httpx.AsyncClient) -> str:
        me = await client.get("/dashboard/me.json")
        assert me.status_code == 200, me.text
        token: str = me.json()["csrf"]
        return token


def make_board(engine: Engine, settings: Settings, **app_kw: Any) -> Callable[[], AsyncIterator[Board]]:
    async def make() -> AsyncIterator[Board]:
        clock = Clock()
        app = create_app(settings, engine, clock=clock, cache_seconds=0, **app_kw)
        yield Board(app, clock, sessionmaker(bind=engine, expire_on_commit=False))

    return make
