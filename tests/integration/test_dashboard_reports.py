"""Dashboard overview and reports: attribution tables, leads and value, the heatmap, missed calls, CSV, scope.

On SQLite and PostgreSQL; times bucketed in the account's timezone.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Engine, select

from config import Settings
from schema.models import Call, CallOutcome, VisitorSession
from tests.integration.dashboard_helpers import START, Board, Seeded, csrf_of, make_board, seed
from tracking.pools import add_numbers, create_pool


@pytest.fixture
async def world(engine: Engine, settings: Settings) -> AsyncIterator[tuple[Board, Seeded]]:
    async for board in make_board(engine, settings)():
        data = seed(board.factory, settings)
        with board.factory.begin() as s:  # the lead rules qualified the missed call, worth 40
            s.add(CallOutcome(call_id=data.calls["missed"], lead="qualified", value=40.0))
        board.user("mia", "member", ("Acme",))
        board.user("gus", "member", ("Globex",))
        board.user("root", "admin")
        yield board, data


async def _qualify(board: Board, client: object, call_id: int, **form: str) -> None:
    page = await client.get(f"/dashboard/calls/{call_id}")  # type: ignore[attr-defined]
    response = await client.post(  # type: ignore[attr-defined]
        f"/dashboard/calls/{call_id}/qualify", data={"csrf": csrf_of(page.text), **form}
    )
    assert response.status_code == 303


async def test_source_and_other_tables_count_calls_leads_and_value(world: tuple[Board, Seeded]) -> None:
    board, data = world
    async with board.signed_in("mia") as client:
        await _qualify(board, client, data.calls["answered"], lead="yes", value="250")
        report = (await client.get("/dashboard/reports.json?range=30d")).json()
        by_source = {r["source"]: r for r in report["tables"]["source"]}
        assert set(by_source) == {"Google Ads", "Facebook"}  # the blocked caller is not a lead
        google, facebook = by_source["Google Ads"], by_source["Facebook"]
        assert (google["calls"], google["answered"], google["first_time"], google["avg_talk_seconds"]) == (
            1,
            1,
            1,
            90.0,
        )
        assert (google["answer_rate"], google["qualified_leads"], google["lead_value"]) == (100.0, 1, 250.0)
        assert (facebook["calls"], facebook["missed"], facebook["answer_rate"]) == (1, 1, 0.0)
        assert (facebook["qualified_leads"], facebook["lead_value"]) == (1, 40.0)  # from the lead rules
        campaigns = {r["campaign"]: r["calls"] for r in report["tables"]["campaign"]}
        assert campaigns == {"spring<script>": 1, "(none)": 1}
        assert {r["landing_page"]: r["calls"] for r in report["tables"]["landing"]} == {
            "acme.test/offer": 1,
            "(none)": 1,
        }
        assert {(r["keyword"], r["click_id"]) for r in report["tables"]["keyword"]} == {
            ("(none)", "yes"),
            ("(none)", "no"),
        }
        assert {r["tracking_number"] for r in report["tables"]["number"]} == {"+14045550100", "+14045550101"}
        # a person's "no" overrides the rules' "qualified"
        await _qualify(board, client, data.calls["missed"], lead="no")
        report = (await client.get("/dashboard/reports.json?range=30d")).json()
        facebook = next(r for r in report["tables"]["source"] if r["source"] == "Facebook")
        assert (facebook["qualified_leads"], facebook["lead_value"]) == (0, 0.0)


async def test_heatmap_is_in_the_accounts_local_time(world: tuple[Board, Seeded]) -> None:
    board, _ = world
    async with board.signed_in("mia") as client:
        heat = (await client.get("/dashboard/reports.json?range=30d")).json()["heatmap"]
        assert heat["days"][0] == "Mon" and len(heat["grid"]) == 7 and all(len(r) == 24 for r in heat["grid"])
        cells = {(d, h): n for d, row in enumerate(heat["grid"]) for h, n in enumerate(row) if n}
        # Monday 14:00 UTC is 09:00 in New York; Saturday 15:00 UTC is 10:00
        assert cells == {(0, 9): 1, (5, 10): 1}


async def test_missed_calls_not_called_back(world: tuple[Board, Seeded]) -> None:
    board, data = world
    async with board.signed_in("mia") as client:
        missed = (await client.get("/dashboard/reports.json")).json()["missed"]
        assert [m["id"] for m in missed] == [data.calls["missed"]]
        with board.factory.begin() as s:  # the caller called again and was answered
            s.add(
                Call(
                    system="pbx1",
                    linkedid="again",
                    account_id=data.acme,
                    caller_number="+17705550122",
                    started_at=START - dt.timedelta(days=1),
                    disposition="answered",
                )
            )
        assert (await client.get("/dashboard/reports.json")).json()["missed"] == []


async def test_overview_figures_and_daily_series(world: tuple[Board, Seeded]) -> None:
    board, _ = world
    async with board.signed_in("mia") as client:
        overview = (await client.get("/dashboard/overview.json?range=7d")).json()
        s = overview["summary"]
        assert (s["calls"], s["answered"], s["missed"], s["answer_rate"], s["first_time"]) == (2, 1, 1, 50.0, 1)
        assert s["avg_talk_seconds"] == 90.0
        daily = overview["daily"]
        assert daily["days"][0] == "2026-02-24" and daily["days"][-1] == "2026-03-02" and len(daily["days"]) == 7
        series = {x["source"]: x["calls"] for x in daily["series"]}
        assert series == {"Facebook": [0, 0, 0, 0, 1, 0, 0], "Google Ads": [0, 0, 0, 0, 0, 0, 1]}
        assert overview["busiest"]["calls"] == 1
        today = (await client.get("/dashboard/overview.json?range=today")).json()
        assert today["summary"]["calls"] == 1 and today["daily"]["days"] == ["2026-03-02"]
        page = await client.get("/dashboard/overview")
        assert page.status_code == 200 and 'id="chart-daily"' in page.text
        assert '<script type="application/json" id="chart-data">' in page.text
        assert "/dashboard/static/vendor/uPlot.iife.min.js" in page.text


def _visit_call(
    board: Board, data: Seeded, key: str, disposition: str | None, talk: float | None, **visit: str | None
) -> None:
    """A call to Acme half an hour before START from a website visit with *visit*'s fields."""
    with board.factory.begin() as s:
        session = VisitorSession(key=key, account_id=data.acme, started_at=START, **visit)
        s.add(session)
        s.flush()
        s.add(
            Call(
                system="pbx1",
                linkedid=f"l-{key}",
                account_id=data.acme,
                visitor_session_id=session.id,
                started_at=START - dt.timedelta(minutes=30),
                disposition=disposition,
                talk_time=talk,
            )
        )


async def test_keyword_and_click_id_presence(world: tuple[Board, Seeded]) -> None:
    board, data = world
    # a Microsoft Ads click with a keyword, and a keyword without a click
    for key, term, msclkid in (("v-bing", "boiler repair", "M42"), ("v-org", "boiler repair", None)):
        _visit_call(board, data, key, "answered", 60.0, utm_term=term, msclkid=msclkid)
    async with board.signed_in("mia") as client:
        report = (await client.get("/dashboard/reports.json?range=30d")).json()
        rows = {(r["keyword"], r["click_id"]): r["calls"] for r in report["tables"]["keyword"]}
        assert rows == {
            ("boiler repair", "yes"): 1,
            ("boiler repair", "no"): 1,
            ("(none)", "yes"): 1,
            ("(none)", "no"): 1,
        }


async def test_one_landing_page_reached_through_several_urls_is_one_row(world: tuple[Board, Seeded]) -> None:
    """The landing page is the URL without query, fragment or scheme, however the visitor's URL was spelt;
    a live call counts as a call, neither answered nor missed, and leaves the answer rate alone."""
    board, data = world
    urls = {
        "v-query": ("https://acme.test/offer?gclid=G9&utm_term=a", "answered"),
        "v-fragment": ("http://acme.test/offer#form", "missed"),
        "v-both": ("https://acme.test/offer#top?not=a-query", "answered"),
        "v-other": ("https://acme.test/other?x=1#y", None),  # still ringing
        "v-unicode": ("https://acme.test/caf\u00e9?q=\u2603", "abandoned"),
    }
    for key, (url, disposition) in urls.items():
        _visit_call(board, data, key, disposition, 30.0 if disposition == "answered" else None, landing_url=url)
    async with board.signed_in("mia") as client:
        report = (await client.get("/dashboard/reports.json?range=30d")).json()
    rows = {r["landing_page"]: r for r in report["tables"]["landing"]}
    assert {page: r["calls"] for page, r in rows.items()} == {
        "acme.test/offer": 4,  # the seeded visit's URL and three spellings of it
        "acme.test/other": 1,
        "acme.test/caf\u00e9": 1,
        "(none)": 1,
    }
    offer = rows["acme.test/offer"]
    assert (offer["answered"], offer["missed"], offer["answer_rate"], offer["avg_talk_seconds"]) == (3, 1, 75.0, 50.0)
    other = rows["acme.test/other"]
    assert (other["calls"], other["answered"], other["missed"], other["answer_rate"]) == (1, 0, 0, None)
    # the page's figures are the sum of its rows: every call in exactly one row of each table
    for table in ("source", "campaign", "landing", "keyword", "number"):
        assert sum(r["calls"] for r in report["tables"][table]) == 7, table


async def test_report_csv_matches_the_page_for_each_table(world: tuple[Board, Seeded], settings: Settings) -> None:
    board, data = world
    with board.factory.begin() as s:  # a pool, so the pools table has a row
        create_pool(s, settings, "ads", "Acme", 30, source="Google Ads")
        add_numbers(s, settings, "ads", "Acme", ["+14045550190", "+14045550191"], "PJSIP/1")
    async with board.signed_in("mia") as client:
        report = (await client.get("/dashboard/reports.json?range=30d")).json()
        for table, keys in (
            ("source", ["source"]),
            ("campaign", ["campaign"]),
            ("landing", ["landing_page"]),
            ("keyword", ["keyword", "click_id"]),
            ("number", ["tracking_number"]),
        ):
            response = await client.get(f"/dashboard/reports.csv?range=30d&table={table}")
            assert response.status_code == 200
            rows = list(csv.DictReader(io.StringIO(response.text)))
            assert rows and [[r[k] for k in keys] + [r["calls"], r["qualified_leads"]] for r in rows] == [
                [r[k] for k in keys] + [str(r["calls"]), str(r["qualified_leads"])] for r in report["tables"][table]
            ], table
        missed = list(
            csv.DictReader(io.StringIO((await client.get("/dashboard/reports.csv?range=30d&table=missed")).text))
        )
        assert [int(r["id"]) for r in missed] == [m["id"] for m in report["missed"]] == [data.calls["missed"]]
        assert missed[0]["caller_name"].startswith("'=HYPERLINK")  # the formula is defused
        pools = list(csv.DictReader(io.StringIO((await client.get("/dashboard/reports.csv?table=pools")).text)))
        assert [(r["pool"], r["size"]) for r in pools] == [(p["pool"], str(p["size"])) for p in report["pools"]]
        assert [(r["pool"], r["size"], r["warning"]) for r in pools] == [("ads", "2", "no")]
        # the same filters: today's export has only today's calls
        week = list(
            csv.DictReader(io.StringIO((await client.get("/dashboard/reports.csv?range=today&table=source")).text))
        )
        assert {r["source"]: r["calls"] for r in week}.get("Facebook", "0") == "0"
        heat = list(csv.DictReader(io.StringIO((await client.get("/dashboard/reports.csv?table=heatmap")).text)))
        assert heat[0]["day"] == "Mon" and heat[0]["09"] == "1"
        assert (await client.get("/dashboard/reports.csv?table=nope")).status_code == 400


async def test_reports_and_overview_never_show_another_accounts_calls(world: tuple[Board, Seeded]) -> None:
    board, data = world
    async with board.signed_in("gus") as client:
        report = (await client.get("/dashboard/reports.json?range=30d")).json()
        assert [(r["source"], r["calls"]) for r in report["tables"]["source"]] == [("(none)", 1)]
        assert (await client.get("/dashboard/overview.json")).json()["summary"]["calls"] == 1
        for url in (
            f"/dashboard/reports.json?account={data.acme}",
            f"/dashboard/reports.csv?account={data.acme}&table=source",
            f"/dashboard/reports?account={data.acme}",
            f"/dashboard/overview.json?account={data.acme}",
        ):
            assert (await client.get(url)).status_code == 404, url
    async with board.signed_in("root") as client:
        overview = (await client.get("/dashboard/overview.json?range=30d")).json()
        assert overview["timezone"] == "UTC" and overview["summary"]["calls"] == 4  # both accounts and unknown numbers


async def test_pool_health_warns_above_75_percent_utilisation(world: tuple[Board, Seeded], settings: Settings) -> None:
    from schema.models import NumberPool

    board, _ = world
    with board.factory.begin() as s:
        create_pool(s, settings, "ads", "Acme", 30, source="Google Ads", overflow="+14045550199")
        add_numbers(
            s, settings, "ads", "Acme", ["+14045550151", "+14045550152", "+14045550153", "+14045550154"], "PJSIP/1"
        )
        create_pool(s, settings, "quiet", "Acme", 30, source="Facebook")
        add_numbers(s, settings, "quiet", "Acme", ["+14045550161", "+14045550162"], "PJSIP/1")
        for pool in s.scalars(select(NumberPool)):
            pool.peak_leases, pool.overflow_count = (4, 7) if pool.name == "ads" else (1, 0)
    async with board.signed_in("mia") as client:
        pools = {p["pool"]: p for p in (await client.get("/dashboard/reports.json")).json()["pools"]}
        assert (pools["ads"]["size"], pools["ads"]["peak"], pools["ads"]["overflow_count"]) == (4, 4, 7)
        assert (pools["ads"]["utilisation"], pools["ads"]["warning"]) == (1.0, True)
        assert (pools["quiet"]["utilisation"], pools["quiet"]["warning"]) == (0.5, False)
        page = await client.get("/dashboard/reports")
        assert page.text.count("above 75 %") == 1
    async with board.signed_in("gus") as client:
        assert (await client.get("/dashboard/reports.json")).json()["pools"] == []


async def test_hand_qualifications_count_the_same_on_the_dashboard_and_in_cli_reports(
    world: tuple[Board, Seeded],
) -> None:
    """One definition of a qualified lead: the dashboard's source table and `calltrack reports sources` agree."""
    from tracking.reports import by_source

    board, data = world
    with board.factory.begin() as s:  # the rules qualified the answered call too, worth 10
        s.add(CallOutcome(call_id=data.calls["answered"], lead="qualified", value=10.0))

    async def both(client: object) -> tuple[dict[str, tuple[int, float]], dict[str, tuple[int, float]]]:
        report = (await client.get("/dashboard/reports.json?range=30d")).json()  # type: ignore[attr-defined]
        board_rows = {r["source"]: (r["qualified_leads"], r["lead_value"]) for r in report["tables"]["source"]}
        with board.factory() as s:
            rows = by_source(s, account="Acme", since=START - dt.timedelta(days=30), until=START + dt.timedelta(days=1))
        cli = {r["source"]: (r["qualified"], r["value"]) for r in rows if r["source"] in board_rows}
        return board_rows, cli

    async with board.signed_in("mia") as client:
        dashboard, cli = await both(client)
        assert dashboard == cli == {"Google Ads": (1, 10.0), "Facebook": (1, 40.0)}  # the rules alone
        # by hand: the answered call is worth 300, the missed one (the rules' lead) is not a lead
        await _qualify(board, client, data.calls["answered"], lead="yes", value="300")
        await _qualify(board, client, data.calls["missed"], lead="no")
        dashboard, cli = await both(client)
        assert dashboard == cli == {"Google Ads": (1, 300.0), "Facebook": (0, 0.0)}


async def test_a_call_flagged_as_spam_is_counted_as_spam_only_as_cli_reports_count_it(
    world: tuple[Board, Seeded],
) -> None:
    """A spam call is not a call, not answered, never a lead, not on the heatmap: the dashboard and
    `calltrack reports sources` agree, and the spam column (and overview card) counts it."""
    from tracking.reports import by_source

    board, data = world
    async with board.signed_in("mia") as client:
        await _qualify(board, client, data.calls["answered"], lead="yes", value="250")  # a person said lead
        with board.factory.begin() as s:  # then the spam checks flagged it
            s.add(CallOutcome(call_id=data.calls["answered"], spam=True))
        report = (await client.get("/dashboard/reports.json?range=30d")).json()
        google = next(r for r in report["tables"]["source"] if r["source"] == "Google Ads")
        measures = ("calls", "answered", "first_time", "qualified_leads", "lead_value", "spam")
        assert tuple(google[m] for m in measures) == (0, 0, 0, 0, 0.0, 1)
        assert google["answer_rate"] is None and google["avg_talk_seconds"] is None
        assert sum(map(sum, report["heatmap"]["grid"])) == 1  # the missed call only
        number = next(r for r in report["tables"]["number"] if r["tracking_number"] == "+14045550100")
        assert (number["calls"], number["spam"]) == (0, 1)
        with board.factory() as s:
            cli = {r["source"]: r for r in by_source(s, account="Acme", since=START - dt.timedelta(days=30))}
        assert (cli["Google Ads"]["calls"], cli["Google Ads"]["qualified"], cli["Google Ads"]["spam"]) == (0, 0, 1)
        overview = (await client.get("/dashboard/overview.json?range=7d")).json()
        s_ = overview["summary"]
        assert (s_["calls"], s_["answered"], s_["missed"], s_["spam"]) == (1, 0, 1, 1)
        assert {x["source"]: x["calls"] for x in overview["daily"]["series"]} == {"Facebook": [0, 0, 0, 0, 1, 0, 0]}
        page = await client.get("/dashboard/overview")
        assert 'id="card-spam">1<' in page.text
        csv_text = (await client.get("/dashboard/reports.csv?table=source&range=30d")).text
        assert {r["source"]: r["spam"] for r in csv.DictReader(io.StringIO(csv_text))}["Google Ads"] == "1"
