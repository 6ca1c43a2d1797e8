"""An agency manager adds members to the accounts granted to them (and only to those)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Engine, select

from config import Settings
from schema.models import AuditEntry
from tests.integration.dashboard_helpers import Board, Seeded, csrf_of, make_board, seed


@pytest.fixture
async def world(engine: Engine, settings: Settings) -> AsyncIterator[tuple[Board, Seeded]]:
    async for board in make_board(engine, settings)():
        data = seed(board.factory, settings)
        board.user("ann", "manager", ("Acme",))
        board.user("mia", "member", ("Acme",))
        board.user("gus", "member", ("Globex",))
        yield board, data


async def test_manager_adds_a_member_who_then_signs_in_and_sees_the_account(world: tuple[Board, Seeded]) -> None:
    board, data = world
    async with board.signed_in("ann") as client:
        page = await client.get("/dashboard/members")
        assert page.status_code == 200 and "mia" in page.text and "gus" not in page.text
        assert f'<option value="{data.globex}">' not in page.text
        csrf = csrf_of(page.text)
        added = await client.post("/dashboard/members", data={"csrf": csrf, "username": "zoe", "account": data.acme})
        assert added.status_code == 200
        password = re.search(r'<code id="new-password">([^<]+)</code>', added.text).group(1)  # type: ignore[union-attr]
        refused = await client.post("/dashboard/members", data={"username": "eve", "account": data.acme})
        assert refused.status_code == 403
        other = await client.post("/dashboard/members", data={"csrf": csrf, "username": "eve", "account": data.globex})
        assert other.status_code == 404
        bad = await client.post("/dashboard/members", data={"csrf": csrf, "username": "<b>", "account": data.acme})
        assert bad.status_code == 400 and "not allowed" in bad.text
    async with board.client() as zoe:
        assert (await board.signin(zoe, "zoe", password)).status_code == 303
        me = (await zoe.get("/dashboard/me.json")).json()
        assert (me["role"], [a["name"] for a in me["accounts"]]) == ("member", ["Acme"])
    with board.factory() as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "user.add")).one()
        assert (entry.actor, entry.target) == ("ann", "zoe")
        assert password not in str(entry.detail)


async def test_members_cannot_manage_members(world: tuple[Board, Seeded]) -> None:
    board, data = world
    async with board.signed_in("mia") as client:
        assert (await client.get("/dashboard/members")).status_code == 404
        csrf = await board.csrf(client)
        response = await client.post("/dashboard/members", data={"csrf": csrf, "username": "zoe", "account": data.acme})
        assert response.status_code == 404
