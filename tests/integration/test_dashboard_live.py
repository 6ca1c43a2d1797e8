"""The Live page's server-sent events over a real HTTP server (uvicorn), on SQLite and PostgreSQL.

A call written the way the AMI listener writes it (started, answered, ended) appears, changes and
leaves the stream; another account's live call never reaches a member; the stream ends at sign-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine, update

from config import Settings
from schema.models import Call, utcnow
from tests.integration.dashboard_helpers import PASSWORD, csrf_of
from tracking.accounts import add_account
from tracking.users import add_user
from web.app import create_app
from web.dashboard.security import CSP
from web.service import uvicorn_config

DEADLINE = 20.0


@pytest.fixture
def server(engine: Engine, settings: Settings) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv = uvicorn.Server(uvicorn_config(create_app(settings, engine), "127.0.0.1:0", log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = threading.Event()
    for _ in range(1000):
        if srv.started:
            break
        deadline.wait(0.01)
    try:
        yield base
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def accounts(engine: Engine) -> dict[str, int]:
    from sqlalchemy.orm import sessionmaker

    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory.begin() as s:
        acme = add_account(s, "Acme", "America/New_York")
        globex = add_account(s, "Globex")
        add_user(s, "mia", "member", PASSWORD, ("Acme",))
        return {"acme": acme.id, "globex": globex.id}


@contextlib.asynccontextmanager
async def _signed_in(base: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base, timeout=DEADLINE) as client:
        page = await client.get("/dashboard/signin")
        form = {"csrf": csrf_of(page.text), "username": "mia", "password": PASSWORD}
        assert (await client.post("/dashboard/signin", data=form)).status_code == 303
        yield client


class Events:
    """The stream's events, read with a deadline."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self.lines = lines

    async def next(self) -> tuple[str, Any]:
        async def read() -> tuple[str, Any]:
            name, data = "", None
            async for line in self.lines:
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                elif line == "" and name:
                    return name, data
            raise AssertionError("stream ended")

        return await asyncio.wait_for(read(), DEADLINE)

    async def until(self, check: Any) -> Any:
        while True:
            name, data = await self.next()
            if name == "calls" and check(data["calls"]):
                return data["calls"]


async def test_live_calls_appear_change_and_leave(server: str, engine: Engine, accounts: dict[str, int]) -> None:
    from sqlalchemy.orm import Session

    async with _signed_in(server) as client, client.stream("GET", "/dashboard/live/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = Events(response.aiter_lines())
        name, data = await events.next()
        assert (name, data["calls"]) == ("calls", [])
        now = utcnow()
        with Session(engine) as s, s.begin():  # what the listener writes when two calls start ringing
            s.add(
                Call(
                    system="pbx1",
                    linkedid="g1",
                    account_id=accounts["globex"],
                    caller_number="+442079460123",
                    caller_name="Globex Caller",
                    started_at=now,
                )
            )
            s.add(
                Call(
                    system="pbx1",
                    linkedid="a1",
                    account_id=accounts["acme"],
                    caller_number="+14045550111",
                    caller_name="<img src=x onerror=alert(1)>",
                    tracking_number="+14045550100",
                    started_at=now,
                )
            )
        calls = await events.until(lambda calls: calls)
        assert [(c["state"], c["caller_name"]) for c in calls] == [("ringing", "<img src=x onerror=alert(1)>")]
        with Session(engine) as s, s.begin():
            s.execute(update(Call).where(Call.linkedid == "a1").values(answered_at=utcnow(), answered_by="PJSIP/100"))
        calls = await events.until(lambda calls: calls and calls[0]["state"] == "talking")
        assert calls[0]["answered_by"] == "PJSIP/100"
        with Session(engine) as s, s.begin():
            s.execute(update(Call).where(Call.linkedid == "a1").values(ended_at=utcnow(), disposition="answered"))
        assert await events.until(lambda calls: not calls) == []
        # sign out from another request: the stream says so and ends
        page = await client.get("/dashboard/")
        assert (await client.post("/dashboard/signout", data={"csrf": csrf_of(page.text)})).status_code == 303
        name, _ = await events.next()
        while name == "calls":
            name, _ = await events.next()
        assert name == "signed-out"


async def test_live_events_need_a_session_and_show_nothing_of_other_accounts(
    server: str, engine: Engine, accounts: dict[str, int]
) -> None:
    from sqlalchemy.orm import Session

    async with httpx.AsyncClient(base_url=server, timeout=DEADLINE) as anonymous:
        assert (await anonymous.get("/dashboard/live/events")).status_code == 401
        assert (await anonymous.get("/dashboard/live.json")).status_code == 401
    with Session(engine) as s, s.begin():
        s.add(
            Call(
                system="pbx1",
                linkedid="g2",
                account_id=accounts["globex"],
                caller_name="Globex Caller",
                started_at=utcnow() - dt.timedelta(seconds=5),
            )
        )
        s.add(
            Call(
                system="pbx1",
                linkedid="old",
                account_id=accounts["acme"],
                caller_name="Lost long ago",
                started_at=utcnow() - dt.timedelta(hours=5),
            )
        )
    globex = accounts["globex"]
    async with _signed_in(server) as client:
        # asking for the other account by URL changes nothing
        for url in ("/dashboard/live.json", f"/dashboard/live.json?account={globex}"):
            assert (await client.get(url)).json() == {"calls": []}, url
        page = await client.get(f"/dashboard/live?account={globex}")
        assert "Globex Caller" not in page.text and "Lost long ago" not in page.text
        for url in ("/dashboard/live/events", f"/dashboard/live/events?account={globex}"):
            async with client.stream("GET", url) as response:
                # the stream carries the security headers of every page
                assert response.headers["content-security-policy"] == CSP
                assert response.headers["x-content-type-options"] == "nosniff"
                assert response.headers["referrer-policy"] == "same-origin"
                name, data = await Events(response.aiter_lines()).next()
                assert (name, data["calls"]) == ("calls", []), url
