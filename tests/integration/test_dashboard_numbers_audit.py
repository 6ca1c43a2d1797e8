"""Dashboard numbers (read-only, per account) and the audit log (administrators only)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Engine

from config import Settings
from tests.integration.dashboard_helpers import Board, Seeded, make_board, seed


@pytest.fixture
async def world(engine: Engine, settings: Settings) -> AsyncIterator[tuple[Board, Seeded]]:
    async for board in make_board(engine, settings)():
        data = seed(board.factory, settings)
        board.user("root", "admin")
        board.user("ann", "manager", ("Acme",))
        board.user("mia", "member", ("Acme",))
        yield board, data


async def test_numbers_with_recent_calls_of_the_viewers_accounts(world: tuple[Board, Seeded]) -> None:
    board, data = world
    async with board.signed_in("mia") as client:
        numbers = (await client.get("/dashboard/numbers.json")).json()["numbers"]
        assert [(n["number"], n["source"], n["forward_to"], n["status"]) for n in numbers] == [
            ("+14045550100", "Google Ads", "PJSIP/100", "active"),
            ("+14045550101", "Facebook", "PJSIP/100", "active"),
        ]
        assert numbers[0]["calls_7d"] == 1 and numbers[0]["calls_30d"] == 1  # the call linked to its number
        rows = list(csv.DictReader(io.StringIO((await client.get("/dashboard/numbers.csv")).text)))
        assert [r["number"] for r in rows] == ["+14045550100", "+14045550101"]
        page = await client.get("/dashboard/numbers")
        assert "+442079460000" not in page.text and "PJSIP/200" not in page.text
        assert (await client.get(f"/dashboard/numbers.json?account={data.globex}")).status_code == 404
    async with board.signed_in("root") as client:
        numbers = (await client.get("/dashboard/numbers.json")).json()["numbers"]
        assert len(numbers) == 3


async def test_audit_log_is_for_administrators_only(world: tuple[Board, Seeded]) -> None:
    board, data = world
    for who in ("mia", "ann"):
        async with board.signed_in(who) as client:
            await client.get(f"/dashboard/recordings/{data.recordings['answered']}")
            for url in ("/dashboard/audit", "/dashboard/audit.json", "/dashboard/audit.csv"):
                assert (await client.get(url)).status_code == 404, (who, url)
            assert "/dashboard/audit" not in (await client.get("/dashboard/")).text
    async with board.signed_in("root") as client:
        entries = (await client.get("/dashboard/audit.json?action=recording")).json()["entries"]
        assert [(e["actor"], e["action"]) for e in entries] == [("ann", "recording.play"), ("mia", "recording.play")]
        mine = (await client.get("/dashboard/audit.json?actor=mia")).json()["entries"]
        assert {e["action"] for e in mine} == {"dashboard.signin", "recording.play"}
        page = await client.get("/dashboard/audit")
        assert page.status_code == 200 and "recording.play" in page.text
        rows = list(csv.DictReader(io.StringIO((await client.get("/dashboard/audit.csv?action=recording")).text)))
        assert [r["actor"] for r in rows] == ["ann", "mia"]
        assert (await client.get("/dashboard/audit.json?page=0")).status_code == 400
