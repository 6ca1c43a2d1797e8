"""Security headers on every dashboard response, on SQLite and PostgreSQL.

Every GET route of the dashboard is requested in each of its renderings (HTML, JSON, CSV),
with a real call and recording id, plus the answers nobody wants (sign-in redirect, 404,
a refused form, a bad filter): each carries the CSP without inline scripts, ``frame-ancestors
'none'``, ``nosniff`` and ``Referrer-Policy: same-origin``.  The event stream's headers are
checked on a real server in test_dashboard_live.py (an ASGI client waits for a stream's end).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import Engine
from starlette.routing import Mount, Route

from config import Settings
from tests.integration.dashboard_helpers import Board, Seeded, make_board, seed
from web.dashboard.security import CSP

EXPECTED = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


@pytest.fixture
async def world(engine: Engine, settings: Settings) -> AsyncIterator[tuple[Board, Seeded]]:
    async for board in make_board(engine, settings)():
        data = seed(board.factory, settings)
        board.user("root", "admin")
        board.user("ann", "manager", ("Acme",))
        yield board, data


def _dashboard_routes(board: Board) -> list[Route]:
    mount = next(r for r in board.app.routes if isinstance(r, Mount) and r.path == "/dashboard")
    inner = mount.app.app  # SecurityHeaders(Starlette)
    return [r for r in inner.routes if isinstance(r, Route) and "GET" in (r.methods or ())]


def _urls(board: Board, data: Seeded) -> list[str]:
    urls = []
    for route in _dashboard_routes(board):
        path = route.path
        if path == "/live/events":
            continue  # a stream: test_dashboard_live.py checks its headers on a real server
        ident = data.recordings["answered"] if path.startswith("/recordings/") else data.calls["answered"]
        path = path.replace("{id}", str(ident))
        formats = ("json", "csv") if "{fmt}" in path else (None,)
        query = "?number=%2B14045550100" if path.startswith("/texts/thread") else ""  # a thread needs its number
        for fmt in formats:
            urls.append("/dashboard" + (path.replace("{fmt}", fmt) if fmt else path) + query)
    return urls


def _check(response: httpx.Response, what: str) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, f"{what}: {name} is {response.headers.get(name)!r}"


async def test_security_headers_on_every_page_export_recording_and_error(world: tuple[Board, Seeded]) -> None:
    board, data = world
    urls = _urls(board, data)
    # the walk reached every kind of page (a route renamed or dropped would shrink it)
    for needed in ("/dashboard/overview", "/dashboard/calls.csv", "/dashboard/reports.json", "/dashboard/live",
                   "/dashboard/audit.csv", "/dashboard/numbers", "/dashboard/members", "/dashboard/texts.csv",
                   f"/dashboard/recordings/{data.recordings['answered']}",
                   f"/dashboard/calls/{data.calls['answered']}"):  # fmt: skip
        assert needed in urls
    ok = 0
    async with board.signed_in("root") as client:
        for url in [*urls, "/dashboard/static/dashboard.css", "/dashboard/static/charts.js"]:
            response = await client.get(url)
            # overview.csv and a call's .csv answer 400 / 404 (no such export): headers all the same
            assert response.status_code in (200, 400, 404), (url, response.status_code)
            ok += response.status_code == 200
            _check(response, url)
        assert ok >= len(urls)  # all but the two exports that do not exist were real pages
        _check(await client.get("/dashboard/calls.json?disposition=bogus"), "bad filter")
        _check(await client.get("/dashboard/calls/999999"), "404 page")
        _check(await client.get("/dashboard/calls/999999.json"), "404 JSON")
        _check(await client.post("/dashboard/signout", data={}), "refused form")
    async with board.signed_in("ann") as client:  # a manager: another account's call is a 404 with headers
        _check(await client.get(f"/dashboard/calls/{data.calls['globex']}"), "another account's call")
    async with board.client() as anonymous:
        _check(await anonymous.get("/dashboard/calls"), "sign-in redirect")
        _check(await anonymous.get("/dashboard/calls.csv"), "401 CSV")
        _check(await anonymous.post("/dashboard/signin", data={"username": "root", "password": "x"}), "bad sign-in")
