"""The website visit behind a pool-number call, as `calls show` and `calls list` show it.

The visit is made through the real DNI API (two pages of one visit), the call routed by
the real route on the real database, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from config import RecorderSettings, Settings
from tests.conftest import Cli
from tracking.accounts import add_account, add_source
from tracking.numbers import NumberFields, add_number
from tracking.pools import add_numbers, create_pool
from tracking.routing import CallRouter, RouteRequest, RouteStore
from tracking.sites import add_site
from tracking.source_rules import add_rule
from web.app import create_app

SITE = "https://www.acme.test"
START = dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC)
LANDING = f"{SITE}/plumbing?utm_source=google&utm_medium=cpc&utm_campaign=spring%20sale&utm_term=leak&gclid=Cj0KCQ"


async def test_calls_show_and_list_carry_the_visit(
    cli: Cli, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory.begin() as s:
        account = add_account(s, "Acme", "America/New_York")
        add_source(s, "Acme", "Google Ads")
        add_source(s, "Acme", "Flyer")
        create_pool(s, settings, "ads", "Acme", 30, source="Google Ads")
        add_numbers(s, settings, "ads", "Acme", ["+14045550151"], "PJSIP/100")
        add_number(s, settings, NumberFields("+14045550100", "Acme", source="Flyer", forward_to="PJSIP/100"))
        add_site(s, "Acme", SITE)
        add_rule(s, "Acme", "param", "utm_source=google", "Google Ads")
        key = account.public_key
    now = [START]
    app = create_app(settings, engine, clock=lambda: now[0], cache_seconds=0)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://dni.test") as client:
        first = await client.post(
            "/dni/v1/session",
            json={"account": key, "visitor": None, "url": LANDING, "referrer": "https://www.google.com/"},
            headers={"Origin": SITE},
        )
        assert first.status_code == 200, first.text
        now[0] = START + dt.timedelta(minutes=2)
        second = await client.post(
            "/dni/v1/session",
            json={"account": key, "visitor": first.json()["visitor"], "url": f"{SITE}/contact", "referrer": LANDING},
            headers={"Origin": SITE},
        )
        assert second.json()["session"] == first.json()["session"]  # the same visit, a second page
    assert first.json()["number"] == "+14045550151"

    cfg = settings.replace(recorder=RecorderSettings(spool_dir=tmp_path / "monitor"))
    store = RouteStore(cfg.database.url)
    try:
        router = CallRouter(cfg, store)
        at = START + dt.timedelta(minutes=3)
        pool_call = router.run(RouteRequest("4045550151", "+14045551234", "Jane Doe", "pbx1", "1.1", "1.1", at))
        flyer_call = router.run(RouteRequest("4045550100", "+14045559999", "", "pbx1", "2.1", "2.1", at))
    finally:
        store.close()
    assert (pool_call.source_name, flyer_call.source_name) == ("Google Ads", "Flyer")

    shown = json.loads(cli.ok("calls", "show", str(pool_call.call_id), "--format", "json").output)
    visit = shown["visit"]
    assert visit["landing_url"] == LANDING
    assert visit["referrer"] == "https://www.google.com/"
    assert (visit["utm_source"], visit["utm_medium"], visit["utm_campaign"], visit["utm_term"]) == (
        "google",
        "cpc",
        "spring sale",
        "leak",
    )
    assert (visit["gclid"], visit["gbraid"], visit["wbraid"]) == ("Cj0KCQ", None, None)
    assert visit["pages_seen"] == 2
    assert visit["started_at"].startswith("2026-03-02T15:00:00")
    assert visit["last_seen_at"].startswith("2026-03-02T15:02:00")

    listed = {c["linkedid"]: c for c in json.loads(cli.ok("calls", "list", "--format", "json").output)}
    assert listed["1.1"]["visit"] == visit
    assert listed["2.1"]["visit"] is None  # a source number's call has no visit behind it

    text = cli.ok("calls", "show", str(pool_call.call_id)).output
    assert "visit_landing_url" in text and "spring sale" in text and "visit_pages_seen" in text
    assert "visit_" not in cli.ok("calls", "show", str(flyer_call.call_id)).output
    rows = {r["linkedid"]: r for r in csv.DictReader(io.StringIO(cli.ok("calls", "list", "--format", "csv").output))}
    assert (rows["1.1"]["visit_utm_campaign"], rows["1.1"]["visit_gclid"]) == ("spring sale", "Cj0KCQ")
    assert rows["2.1"]["visit_landing_url"] == ""
