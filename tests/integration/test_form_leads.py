"""Website form leads on SQLite and PostgreSQL: the real DNI API stores a submission as a lead
attributed to the visit; leads list, the source report, privacy and webhooks see it.

(The browser half, dni.js capturing a form in Chromium, is tests/browser/test_form_capture.py.)
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import sessionmaker

from config import Settings
from schema.models import AuditEntry, FormLead, OutboxEvent, WebhookEndpoint
from tests.conftest import Cli
from tests.fakes.webhook_receiver import Receiver
from tests.integration.webhook_helpers import fast, running, until
from tracking import outbox
from tracking.accounts import add_account, add_source
from tracking.form_leads import card_number, clean_fields, find_email, find_phone, set_forms
from tracking.sites import add_site
from tracking.source_rules import add_rule
from tracking.webhook_endpoints import add_endpoint
from web.app import create_app

SITE = "https://www.acme.test"
START = dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC)
LANDING = f"{SITE}/plumbing?utm_source=google&utm_campaign=spring&gclid=Cj0KCQ-form"
VISA = "4111 1111 1111 1111"  # a test card number: passes the Luhn check


def _setup(engine: Engine, forms: str | None = "all") -> str:
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory.begin() as s:
        account = add_account(s, "Acme", "America/New_York")
        add_source(s, "Acme", "Google Ads")
        add_site(s, "Acme", SITE)
        add_site(s, "Acme", "https://shop.acme.test")
        add_rule(s, "Acme", "param", "utm_source=google", "Google Ads")
        if forms:
            set_forms(s, "Acme", SITE, forms)
        return account.public_key


class Browser:
    """The DNI API in-process, as dni.js calls it."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.now = [START]
        app = create_app(settings, engine, clock=lambda: self.now[0], cache_seconds=0)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("198.51.100.7", 40000)), base_url="http://dni.test"
        )

    async def post(self, path: str, body: Any, origin: str = SITE, **headers: str) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post(
            path, content=content, headers={"Origin": origin, "Content-Type": "text/plain", **headers}
        )

    async def visit(self, key: str) -> str:
        answer = await self.post("/dni/v1/session", {"account": key, "visitor": None, "url": LANDING, "referrer": ""})
        assert answer.status_code == 200, answer.text
        session: str = answer.json()["session"]
        return session

    async def submit(self, key: str, session: str | None, fields: dict[str, Any], **kw: Any) -> httpx.Response:
        body = {"account": key, "session": session, "url": f"{SITE}/contact", "form": "contact", "fields": fields}
        body.update(kw.pop("body", {}))
        return await self.post("/dni/v1/form", body, **kw)


def _leads(engine: Engine) -> list[FormLead]:
    with sessionmaker(bind=engine)() as s:
        return list(s.scalars(select(FormLead).order_by(FormLead.id)))


async def test_a_submitted_form_is_a_lead_attributed_to_its_visit(cli: Cli, engine: Engine, settings: Settings) -> None:
    key = _setup(engine)
    web = Browser(settings, engine)
    session = await web.visit(key)
    web.now[0] = START + dt.timedelta(minutes=4)
    fields = {"name": "Jane Doe", "email": "Jane.Doe@Example.com", "phone": "(404) 555-1234", "message": "Leak!\n"}
    answer = await web.submit(key, session, fields)
    assert answer.status_code == 201, answer.text
    assert answer.headers["access-control-allow-origin"] == SITE
    (lead,) = _leads(engine)
    assert lead.fields == fields
    assert (lead.email, lead.phone, lead.form_name, lead.page_url) == (
        "jane.doe@example.com",
        "+14045551234",
        "contact",
        f"{SITE}/contact",
    )
    assert lead.submitted_at == START + dt.timedelta(minutes=4)

    listed = json.loads(cli.ok("leads", "list", "--format", "json").output)
    (form,) = [r for r in listed if r["kind"] == "form"]
    assert (form["source"], form["campaign"], form["landing_url"]) == ("Google Ads", "spring", LANDING)
    assert (form["contact"], form["name"], form["fields"]) == ("jane.doe@example.com", "Jane Doe", fields)
    assert "form" in cli.ok("leads", "list", "--kind", "form").output
    assert json.loads(cli.ok("leads", "list", "--kind", "call", "--format", "json").output) == []
    report = list(csv.DictReader(io.StringIO(cli.ok("reports", "sources", "--format", "csv").output)))
    google = next(r for r in report if r["source"] == "Google Ads")
    assert (google["calls"], google["form_leads"]) == ("0", "1")


async def test_secret_fields_and_card_numbers_are_never_stored(engine: Engine, settings: Settings) -> None:
    """The script never sends them; if an old or modified script does, the server drops them."""
    key = _setup(engine)
    web = Browser(settings, engine)
    session = await web.visit(key)
    fields = {
        "name": "Jane",
        "password": "hunter2",
        "user_pass": "hunter3",
        "card_number": "4242",
        "cc-exp": "12/29",
        "cvv": "123",
        "notes": VISA,
        "iban": "DE89370400440532013000",
    }
    fields["message"] = f"my card is {VISA}, code on the back 123, call me"
    assert (await web.submit(key, session, fields)).status_code == 201
    (lead,) = _leads(engine)
    assert lead.fields == {
        "name": "Jane",
        "message": "my card is [card number], code on the back [security code], call me",
    }
    assert card_number(VISA) and card_number("4111-1111-1111-1111") and not card_number("4111 1111 1111 1112")
    assert clean_fields({"order": "12345678901234"}) == {"order": "12345678901234"}  # digits, but no card


async def test_nothing_is_stored_with_dnt_or_gpc_or_where_the_site_has_not_opted_in(
    engine: Engine, settings: Settings
) -> None:
    key = _setup(engine, forms=None)
    web = Browser(settings, engine)
    session = await web.visit(key)
    off = await web.submit(key, session, {"name": "Jane"})
    assert off.status_code == 403 and off.json()["field"] == "origin" and "form capture is off" in off.json()["error"]
    with sessionmaker(bind=engine).begin() as s:
        set_forms(s, "Acme", SITE, "marked")
    assert (await web.submit(key, session, {"name": "x"}, body={"dnt": True})).json() == {"stored": False}
    assert (await web.submit(key, session, {"name": "x"}, DNT="1")).json() == {"stored": False}
    assert (await web.submit(key, session, {"name": "x"}, **{"Sec-GPC": "1"})).json() == {"stored": False}
    # the account's other site never opted in
    assert (await web.submit(key, session, {"name": "x"}, origin="https://shop.acme.test")).status_code == 403
    assert _leads(engine) == []
    assert (await web.submit(key, session, {"name": "x"})).status_code == 201


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"not json", 400, None),
        (b"[]", 400, None),
        ({"account": None, "url": f"{SITE}/", "fields": {}}, 400, "account"),
        ({"url": f"{SITE}/", "fields": {}, "account": "nope!"}, 400, "account"),
        ({"url": f"{SITE}/", "fields": {}, "account": "unknownkey"}, 404, "account"),
        ({"url": "javascript:alert(1)", "fields": {}}, 400, "url"),
        ({"url": f"{SITE}/", "fields": ["a"]}, 400, "fields"),
        ({"url": f"{SITE}/", "fields": {"a": 5}}, 400, "fields"),
        ({"url": f"{SITE}/", "fields": {"a": "x" * 2001}}, 400, "fields"),
        ({"url": f"{SITE}/", "fields": {"a": "bell\x07"}}, 400, "fields"),
        ({"url": f"{SITE}/", "fields": {"": "x"}}, 400, "fields"),
        ({"url": f"{SITE}/", "fields": {f"f{i}": "x" for i in range(51)}}, 400, "fields"),
        ({"url": f"{SITE}/", "fields": {}, "session": "../../etc"}, 400, "session"),
        ({"url": f"{SITE}/", "fields": {}, "dnt": "no"}, 400, "dnt"),
        ({"url": f"{SITE}/", "fields": {}, "extra": 1}, 400, "extra"),
        ({"url": f"{SITE}/", "fields": {}, "form": "f" * 201}, 400, "form"),
    ],
)
async def test_bad_submissions_get_a_clear_error_and_store_nothing(
    engine: Engine, settings: Settings, body: Any, status: int, field: str | None
) -> None:
    key = _setup(engine)
    web = Browser(settings, engine)
    if isinstance(body, dict):
        body = {"account": key, **body}
    answer = await web.post("/dni/v1/form", body)
    assert answer.status_code == status, answer.text
    assert answer.json()["field"] == field
    assert _leads(engine) == []


async def test_other_origins_oversized_bodies_and_wrong_types_are_refused(engine: Engine, settings: Settings) -> None:
    key = _setup(engine)
    web = Browser(settings, engine)
    body = {"account": key, "session": None, "url": f"{SITE}/", "fields": {"name": "x"}}
    evil = await web.post("/dni/v1/form", body, origin="https://evil.test")
    assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers
    assert (await web.client.post("/dni/v1/form", json=body)).status_code == 403  # no Origin at all
    big = {**body, "fields": {f"f{i}": "x" * 1000 for i in range(20)}}
    assert (await web.post("/dni/v1/form", big)).status_code == 413
    typed = await web.client.post(
        "/dni/v1/form", content=b"name=x", headers={"Origin": SITE, "Content-Type": "application/x-www-form-urlencoded"}
    )
    assert typed.status_code == 415
    # a session of another account is not followed: the lead is stored without a visit
    other = sessionmaker(bind=engine, expire_on_commit=False)
    with other.begin() as s:
        globex = add_account(s, "Globex", "UTC")
        add_site(s, "Globex", "https://globex.test")
        set_forms(s, "Globex", "https://globex.test", "all")
        globex_key = globex.public_key
    acme_session = await web.visit(key)
    crossed = await web.post(
        "/dni/v1/form",
        {"account": globex_key, "session": acme_session, "url": "https://globex.test/", "fields": {"name": "x"}},
        origin="https://globex.test",
    )
    assert crossed.status_code == 201
    (lead,) = _leads(engine)
    assert lead.visitor_session_id is None and lead.source_id is None


def test_emails_and_phones_are_found_among_the_fields() -> None:
    assert find_email({"a": "nope", "b": " Bob@Example.ORG "}) == "bob@example.org"
    assert find_email({"a": "bob@", "b": "@x.com", "c": "a b@x.com"}) is None
    assert find_phone({"tel": "404.555.1234"}, "US") == "+14045551234"
    assert find_phone({"mobile": "+44 7911 123456"}, "US") == "+447911123456"
    assert find_phone({"zip": "30301", "phone": "call me"}, "US") is None
    assert find_phone({"message": "404-555-1234"}, "US") is None  # only fields named like a phone


async def test_form_submitted_reaches_the_crm_signed_and_valid(
    engine: Engine, settings: Settings, session_factory: sessionmaker[Any]
) -> None:
    key = _setup(engine)
    async with Receiver() as crm:
        with session_factory.begin() as s:
            endpoint = add_endpoint(s, "Acme", crm.url, [outbox.FORM_SUBMITTED], None)
            crm.secrets = [endpoint.secret]
        web = Browser(settings, engine)
        session = await web.visit(key)
        assert (await web.submit(key, session, {"email": "jane@example.com", "password": "x"})).status_code == 201
        async with running(fast(settings), session_factory):
            await until(lambda: len(crm.accepted) == 1, "the form.submitted delivery")
    (seen,) = crm.seen
    assert crm.problems() == [] and seen.valid_for == [endpoint.secret]
    event = seen.payload
    assert event["type"] == "form.submitted" and event["account"]["name"] == "Acme"
    lead = event["data"]["form_lead"]
    assert lead["fields"] == {"email": "jane@example.com"} and lead["email"] == "jane@example.com"
    assert lead["source"]["name"] == "Google Ads" and lead["visit"]["gclid"] == "Cj0KCQ-form"


async def test_no_event_is_written_when_no_endpoint_takes_form_submitted(engine: Engine, settings: Settings) -> None:
    key = _setup(engine)
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory.begin() as s:
        add_endpoint(s, "Acme", "https://crm.example.com/hook", [outbox.CALL_COMPLETED], None)
    web = Browser(settings, engine)
    assert (await web.submit(key, None, {"name": "x"})).status_code == 201
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(OutboxEvent)) == 0
        assert s.scalar(select(func.count()).select_from(WebhookEndpoint)) == 1


async def test_privacy_export_and_erase_find_form_leads_by_phone_and_email(
    cli: Cli, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    key = _setup(engine)
    web = Browser(settings, engine)
    await web.submit(key, None, {"name": "Jane", "phone": "404-555-1234"})
    await web.submit(key, None, {"name": "Jane", "email": "jane@example.com"})
    await web.submit(key, None, {"name": "Bob", "email": "bob@example.com", "phone": "404-555-9999"})
    by_phone = json.loads(cli.ok("privacy", "export", "+1 404 555 1234").output)
    assert [f["fields"]["name"] for f in by_phone["form_leads"]] == ["Jane"]
    by_email = json.loads(cli.ok("privacy", "export", "JANE@example.com").output)
    assert by_email["email"] == "jane@example.com" and len(by_email["form_leads"]) == 1
    assert "erased jane@example.com: 1 form lead(s)" in cli.ok("privacy", "erase", "jane@example.com", "--yes").output
    assert "1 form lead(s)" in cli.ok("privacy", "erase", "404-555-1234", "--yes").output
    assert [lead.fields["name"] for lead in _leads(engine)] == ["Bob"]
    assert "not an e-mail address" in cli.fails("privacy", "erase", "jane@", "--yes").output
    with sessionmaker(bind=engine)() as s:
        audits = list(s.scalars(select(AuditEntry.target).where(AuditEntry.action.like("privacy.%"))))
    assert "jane@example.com" not in " ".join(a or "" for a in audits)


async def test_retention_removes_old_form_leads(cli: Cli, engine: Engine, settings: Settings) -> None:
    key = _setup(engine)
    web = Browser(settings, engine)
    web.now[0] = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    await web.submit(key, None, {"name": "Old"})
    web.now[0] = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    await web.submit(key, None, {"name": "New"})
    cli.ok("privacy", "set-retention", "Acme", "--days", "30")
    cli.ok("privacy", "retention")
    assert [lead.fields["name"] for lead in _leads(engine)] == ["New"]


def test_sites_forms_turns_capture_on_and_off_and_prints_the_snippet(cli: Cli, make_account: Any) -> None:
    make_account()
    added = cli.ok("sites", "add", "Acme", "--origin", SITE, "--forms", "marked")
    assert 'data-forms="marked"' in added.stdout
    listed = json.loads(cli.ok("sites", "list", "--format", "json").output)
    assert listed[0]["forms"] == "marked"
    assert 'data-forms="all"' in cli.ok("sites", "forms", "Acme", "--origin", SITE, "all").stdout
    off = cli.ok("sites", "forms", "Acme", "--origin", SITE, "off")
    assert "data-forms" not in off.stdout
    assert json.loads(cli.ok("sites", "list", "--format", "json").output)[0]["forms"] == "off"
    assert "Invalid value" in cli.fails("sites", "forms", "Acme", "--origin", SITE, "some").output
    assert "no site" in cli.fails("sites", "forms", "Acme", "--origin", "https://nope.test", "all").output


async def test_a_leads_csv_never_starts_a_formula_with_what_a_visitor_typed(
    cli: Cli, engine: Engine, settings: Settings
) -> None:
    key = _setup(engine)
    web = Browser(settings, engine)
    await web.submit(key, None, {"name": '=HYPERLINK("http://evil.test","x")', "email": "=cmd@evil.test"})
    rows = list(csv.DictReader(io.StringIO(cli.ok("leads", "list", "--format", "csv").output)))
    assert rows[0]["name"].startswith("'=") and rows[0]["contact"] == "'=cmd@evil.test"
    assert not any(v.startswith(("=", "+", "-", "@")) for r in rows for v in r.values() if v)
