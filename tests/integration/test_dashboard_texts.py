"""Dashboard Texts page: the list and a sender's thread (HTML, JSON, CSV), on SQLite and PostgreSQL.

The rows are ``tracking.texts``' (as ``calltrack sms list`` / ``sms thread``), limited to the
viewer's accounts: a member asking for another account's texts by account, number, thread or
CSV gets nothing of them.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Engine, select

from config import Settings
from schema.models import AuditEntry, SmsMessage
from tests.integration.dashboard_helpers import START, Board, Seeded, make_board, seed

SENDER = "+17705550122"
MARKUP = "<script>alert(1)</script> quote please"
GLOBEX_SENDER = "+442079460123"


@pytest.fixture
async def world(engine: Engine, settings: Settings) -> AsyncIterator[tuple[Board, Seeded]]:
    async for board in make_board(engine, settings)():
        data = seed(board.factory, settings)
        with board.factory.begin() as s:

            def text(
                n: int, account: int, direction: str, frm: str, to: str, body: str, ago: float, **kw: object
            ) -> None:
                s.add(
                    SmsMessage(
                        system="pbx1",
                        message_id=f"m{n}",
                        account_id=account,
                        direction=direction,
                        from_number=frm,
                        to_number=to,
                        body=body,
                        status="received" if direction == "in" else "sent",
                        received_at=START - dt.timedelta(hours=ago),
                        **kw,
                    )
                )

            text(1, data.acme, "in", SENDER, "+14045550100", MARKUP, 3, source_id=data.google, sender_name="<b>Jo</b>")
            text(2, data.acme, "out", "+14045550100", SENDER, "Sure, Tuesday?", 2)
            text(3, data.acme, "in", "+14045550166", "+14045550101", "Open on Sunday?", 1)
            text(4, data.globex, "in", GLOBEX_SENDER, "+442079460000", "Globex secret", 1.5)
            text(5, data.acme, "in", SENDER, "+14045550100", "last year", 24 * 60)  # outside 30 days
        board.user("mia", "member", ("Acme",))
        board.user("root", "admin")
        yield board, data


def _bodies(rows: list[dict[str, object]]) -> list[object]:
    return [r["body"] for r in rows]


async def test_member_lists_their_accounts_texts_newest_first_as_html_json_and_csv(
    world: tuple[Board, Seeded],
) -> None:
    board, _ = world
    async with board.signed_in("mia") as client:
        data = (await client.get("/dashboard/texts.json")).json()
        assert _bodies(data["texts"]) == ["Open on Sunday?", "Sure, Tuesday?", MARKUP]
        assert data["texts"][2]["source"] == "Google Ads" and data["texts"][2]["direction"] == "in"
        exported = list(csv.DictReader(io.StringIO((await client.get("/dashboard/texts.csv")).text)))
        assert [(r["id"], r["body"]) for r in exported] == [(str(t["id"]), t["body"]) for t in data["texts"]]
        page = await client.get("/dashboard/texts")
        assert page.status_code == 200
        assert "<script>alert(1)" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "<b>Jo</b>" not in page.text and "&lt;b&gt;Jo&lt;/b&gt;" in page.text
        assert "Globex secret" not in page.text
        assert 'href="/dashboard/texts/thread?number=%2B17705550122"' in page.text  # the sender's thread
        # filters: a number on either side, a longer range
        by_number = (await client.get("/dashboard/texts.json?number=(770) 555-0122")).json()["texts"]
        assert _bodies(by_number) == ["Sure, Tuesday?", MARKUP]
        year = (await client.get("/dashboard/texts.json?range=custom&from=2025-01-01&to=2026-03-02")).json()["texts"]
        assert _bodies(year)[-1] == "last year"
    with board.factory() as s:
        actions = s.scalars(
            select(AuditEntry.action).where(AuditEntry.actor == "mia", AuditEntry.action.like("export.%"))
        )
        assert actions.all() == ["export.texts"]


async def test_thread_has_both_ways_oldest_first(world: tuple[Board, Seeded]) -> None:
    board, _ = world
    async with board.signed_in("mia") as client:
        thread = (await client.get(f"/dashboard/texts/thread.json?number={SENDER.replace('+', '%2B')}")).json()
        assert _bodies(thread["texts"]) == ["last year", MARKUP, "Sure, Tuesday?"]
        page = await client.get("/dashboard/texts/thread?number=7705550122")
        assert page.status_code == 200 and "Sure, Tuesday?" in page.text and "&lt;script&gt;" in page.text
        exported = list(
            csv.DictReader(io.StringIO((await client.get("/dashboard/texts/thread.csv?number=7705550122")).text))
        )
        assert [r["body"] for r in exported] == _bodies(thread["texts"])


async def test_member_gets_nothing_of_another_accounts_texts_by_url_tampering(world: tuple[Board, Seeded]) -> None:
    board, data = world
    globex = GLOBEX_SENDER.replace("+", "%2B")
    async with board.signed_in("mia") as client:
        for url in (
            f"/dashboard/texts?account={data.globex}",
            f"/dashboard/texts.json?account={data.globex}",
            f"/dashboard/texts.csv?account={data.globex}",
            f"/dashboard/texts/thread.json?number={globex}&account={data.globex}",
        ):
            response = await client.get(url)
            assert response.status_code == 404 and "Globex secret" not in response.text, url
        for url in (
            f"/dashboard/texts.json?number={globex}",
            f"/dashboard/texts/thread.json?number={globex}",
            "/dashboard/texts/thread.json?number=%2B442079460000",  # Globex's tracking number
        ):
            assert (await client.get(url)).json()["texts"] == [], url
        for url in (f"/dashboard/texts.csv?number={globex}", f"/dashboard/texts/thread.csv?number={globex}"):
            response = await client.get(url)
            assert response.status_code == 200 and list(csv.DictReader(io.StringIO(response.text))) == [], url
            assert "Globex secret" not in response.text
        assert "Globex secret" not in (await client.get(f"/dashboard/texts/thread?number={globex}")).text
    async with board.signed_in("root") as client:  # an administrator sees every account's
        assert "Globex secret" in _bodies((await client.get("/dashboard/texts.json")).json()["texts"])
    async with board.client() as anonymous:
        for url in ("/dashboard/texts.json", "/dashboard/texts.csv", f"/dashboard/texts/thread.json?number={globex}"):
            assert (await anonymous.get(url)).status_code == 401, url
        assert (await anonymous.get("/dashboard/texts")).status_code == 303


@pytest.mark.parametrize(
    "url",
    [
        "/dashboard/texts.json?number=call-me",
        "/dashboard/texts.json?account=x",
        "/dashboard/texts.json?range=forever",
        "/dashboard/texts/thread.json",
        "/dashboard/texts/thread.json?number=%3Cscript%3E",
    ],
)
async def test_bad_text_filters_are_refused_with_what_is_wrong(world: tuple[Board, Seeded], url: str) -> None:
    board, _ = world
    async with board.signed_in("mia") as client:
        response = await client.get(url)
        assert response.status_code == 400 and response.json()["field"] in ("number", "account", "range"), url


async def test_times_are_in_the_accounts_timezone_as_on_the_calls_page(world: tuple[Board, Seeded]) -> None:
    """Acme is in New York: a text received at 12:00 UTC on 2 March shows 07:00 (EST); across
    accounts in several zones the page says UTC.  The JSON and CSV keep the UTC instant."""
    board, _ = world
    async with board.signed_in("mia") as client:
        data = (await client.get("/dashboard/texts.json")).json()
        first = next(t for t in data["texts"] if t["body"] == MARKUP)
        assert data["timezone"] == "America/New_York"
        assert (first["at"], first["local_time"]) == ("2026-03-02T12:00:00+00:00", "2026-03-02 07:00:00")
        page = (await client.get("/dashboard/texts")).text
        assert '<time datetime="2026-03-02T12:00:00+00:00">2026-03-02 07:00:00</time>' in page
        assert "times in America/New_York" in page
    async with board.signed_in("root") as client:
        page = (await client.get("/dashboard/texts")).text
        assert '<time datetime="2026-03-02T12:00:00+00:00">2026-03-02 12:00:00</time>' in page
        assert "times in UTC" in page


async def test_reports_source_table_counts_texts_received_as_cli_reports_do(world: tuple[Board, Seeded]) -> None:
    """Texts received per source in the period (the reply out and last year's text not counted,
    Globex's never shown to an Acme member), the same figures as `calltrack reports sources`."""
    from tracking.reports import by_source

    board, _ = world
    with board.factory.begin() as s:  # a blocked sender's text is not counted
        s.add(
            SmsMessage(
                system="pbx1", message_id="m9", account_id=_acme(s), direction="in", from_number="+17705550199",
                to_number="+14045550100", body="spam", status="blocked", received_at=START - dt.timedelta(hours=1),
            )
        )  # fmt: skip
    async with board.signed_in("mia") as client:
        report = (await client.get("/dashboard/reports.json?range=30d")).json()
        texts = {r["source"]: (r["texts"], r["first_time_texts"]) for r in report["tables"]["source"]}
        assert texts == {"Google Ads": (1, 0), "Facebook": (0, 0), "(none)": (1, 0)}
        with board.factory() as s:
            rows = by_source(s, account="Acme", since=START - dt.timedelta(days=30), until=START + dt.timedelta(days=1))
        assert {r["source"]: (r["texts"], r["first_time_texts"]) for r in rows} == texts
        exported = list(csv.DictReader(io.StringIO((await client.get("/dashboard/reports.csv?table=source")).text)))
        assert {r["source"]: r["texts"] for r in exported} == {"Google Ads": "1", "Facebook": "0", "(none)": "1"}
        page = (await client.get("/dashboard/reports")).text
        assert '<th class="num">first time texts</th>' in page


def _acme(s: object) -> int:
    from tracking.accounts import get_account

    return get_account(s, "Acme").id  # type: ignore[arg-type]
