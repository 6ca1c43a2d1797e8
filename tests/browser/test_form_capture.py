"""Form leads in a real browser: dni.js (and the dni-forms.js it loads) in Debian's headless Chromium.

A local server plays the business's website: a contact page whose snippet opts in to marked
forms, one capturing every form, one without form capture. What the browser sends is read
from the network (Playwright's request events), and what was stored from the database.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config import DatabaseSettings, GeneralSettings, Settings, WebSettings
from schema import migrate
from schema.db import make_engine
from schema.models import FormLead, Site
from tests.browser.test_dni_browser import WAIT_MS, browser, free_socket  # noqa: F401 (the browser fixture)
from tracking.accounts import add_account, add_source
from tracking.sites import add_site
from tracking.source_rules import add_rule
from web.app import create_app
from web.service import uvicorn_config

pytestmark = pytest.mark.browser

PASSWORD = "hunter2-secret"
CARD = "4111 1111 1111 1111"
CVC = "737"
HIDDEN = "internal-tracking-token"

FORMS = """
<form id="contact" name="contact" data-calltrack-form action="/thanks" method="get">
  <input name="name" id="name"><input name="email" id="email" type="email"><input name="phone" id="phone" type="tel">
  <textarea name="message" id="message"></textarea>
  <input name="password" id="password" type="password">
  <input name="cardnumber" id="cardnumber" autocomplete="cc-number">
  <input name="ccv2" id="cvc" autocomplete="cc-csc">
  <input name="ref" type="hidden" value="{hidden}">
  <input name="note" id="note" data-calltrack-ignore>
  <label><input type="checkbox" name="callback" value="yes" id="callback"> call me back</label>
  <button id="send">Send</button>
</form>
<form id="newsletter" action="/thanks" method="get">
  <input name="subscriber" id="subscriber"><button id="join">Join</button>
</form>
"""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Acme Plumbing: contact</title>
<script async src="{script}" data-account="{key}" data-replace="+14045550100"{forms}></script>
</head><body><p>Call (404) 555-0100</p>{body}</body></html>
"""


@dataclass
class Site_:
    api: str
    site: str
    factory: sessionmaker[Session]

    def leads(self) -> list[FormLead]:
        with self.factory() as s:
            return list(s.scalars(select(FormLead).order_by(FormLead.id)))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site_]:
    tmp = tmp_path_factory.mktemp("forms-browser")
    url = f"sqlite:///{tmp / 'calltrack.sqlite3'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    settings = Settings(
        general=GeneralSettings(data_dir=tmp),
        database=DatabaseSettings(url=url),
        web=WebSettings(heartbeat_seconds=30, rate_limit_per_minute=10_000),
    )
    site_sock = free_socket()
    origin = f"http://127.0.0.1:{site_sock.getsockname()[1]}"
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory.begin() as s:
        key = add_account(s, "Acme").public_key
        add_source(s, "Acme", "Google Ads")
        add_site(s, "Acme", origin)
        add_rule(s, "Acme", "param", "utm_source=google", "Google Ads")
        s.execute(Site.__table__.update().values(forms="all"))  # the service takes every form; the snippet chooses

    api_sock = free_socket()
    api = f"http://127.0.0.1:{api_sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn_config(
            create_app(settings, engine, cache_seconds=0, sqlite_inline=True), "127.0.0.1:0", log_level="warning"
        )
    )
    api_thread = threading.Thread(target=server.run, kwargs={"sockets": [api_sock]}, daemon=True)
    api_thread.start()
    body = FORMS.format(hidden=HIDDEN)
    pages = {
        "/marked": PAGE.format(script=f"{api}/dni.js", key=key, forms=' data-forms="marked"', body=body),
        "/all": PAGE.format(script=f"{api}/dni.js", key=key, forms=' data-forms="all"', body=body),
        "/off": PAGE.format(script=f"{api}/dni.js", key=key, forms="", body=body),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = pages.get(self.path.split("?")[0], "<!doctype html><p>Thank you</p>").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    site_sock.listen()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    httpd.socket.close()
    httpd.socket = site_sock
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    try:
        yield Site_(api, origin, factory)
    finally:
        httpd.shutdown()
        httpd.server_close()
        server.should_exit = True
        api_thread.join(10)
        engine.dispose()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:  # noqa: F811
    ctx = browser.new_context()
    yield ctx
    ctx.close()


def _sent(page: Any) -> list[dict[str, Any]]:
    """The bodies of the form requests the page sends, as they leave the browser."""
    bodies: list[dict[str, Any]] = []
    page.on(
        "request", lambda r: bodies.append(json.loads(r.post_data or "{}")) if r.url.endswith("/dni/v1/form") else None
    )
    return bodies


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_MS / 1000
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _fill(page: Any) -> None:
    page.fill("#name", "Jane Doe")
    page.fill("#email", "jane@example.com")
    page.fill("#phone", "(404) 555-1234")
    page.fill("#message", f"Leaking pipe. My card is {CARD}")
    page.fill("#password", PASSWORD)
    page.fill("#cardnumber", CARD)
    page.fill("#cvc", CVC)
    page.fill("#note", "internal note")
    page.check("#callback")


def _loaded(page: Any) -> None:
    page.wait_for_function("() => window.calltrackDni && window.calltrackDni.state().session", timeout=WAIT_MS)


def test_a_marked_form_is_captured_without_its_password_card_or_hidden_fields(world: Site_, context: Any) -> None:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sent = _sent(page)
    page.goto(f"{world.site}/marked?utm_source=google&gclid=browser-1")
    _loaded(page)
    page.wait_for_function("() => !!document.querySelector('script[src$=\"/dni-forms.js\"]')", timeout=WAIT_MS)
    before = len(world.leads())
    _fill(page)
    with page.expect_request(lambda r: r.url.endswith("/dni/v1/form"), timeout=WAIT_MS):
        page.click("#send")
    _wait(lambda: len(world.leads()) == before + 1, "the lead in the database")
    (body,) = sent
    assert body["fields"] == {
        "name": "Jane Doe",
        "email": "jane@example.com",
        "phone": "(404) 555-1234",
        "message": "Leaking pipe. My card is [card number]",
        "callback": "yes",
    }
    raw = json.dumps(body)
    for secret in (PASSWORD, CVC, HIDDEN, "internal note", CARD):
        assert secret not in raw, secret
    assert "cardnumber" not in body["fields"] and "ccv2" not in body["fields"]
    assert body["form"] == "contact" and body["session"]
    lead = world.leads()[-1]
    assert lead.email == "jane@example.com" and lead.phone == "+14045551234" and lead.source_id is not None
    for secret in (PASSWORD, CVC, HIDDEN, CARD):
        assert secret not in json.dumps(lead.fields)

    # the unmarked newsletter form is not captured on a "marked" site
    page.goto(f"{world.site}/marked")
    _loaded(page)
    page.fill("#subscriber", "bob@example.com")
    page.click("#join")
    page.wait_for_url("**/thanks**", timeout=WAIT_MS)
    assert len(sent) == 1 and len(world.leads()) == before + 1
    assert errors == []


def test_a_card_number_typed_into_a_free_text_field_is_not_sent(world: Site_, context: Any) -> None:
    page = context.new_page()
    sent = _sent(page)
    page.goto(f"{world.site}/marked")
    _loaded(page)
    page.wait_for_function("() => !!document.querySelector('script[src$=\"/dni-forms.js\"]')", timeout=WAIT_MS)
    page.fill("#name", "Jane")
    page.fill("#message", CARD)
    with page.expect_request(lambda r: r.url.endswith("/dni/v1/form"), timeout=WAIT_MS):
        page.click("#send")
    (body,) = sent
    assert body["fields"] == {"name": "Jane"}
    assert CARD.replace(" ", "") not in json.dumps(body).replace(" ", "")


def test_every_form_is_captured_on_an_all_site_and_none_where_capture_is_off(world: Site_, context: Any) -> None:
    page = context.new_page()
    sent = _sent(page)
    page.goto(f"{world.site}/all")
    _loaded(page)
    page.wait_for_function("() => !!document.querySelector('script[src$=\"/dni-forms.js\"]')", timeout=WAIT_MS)
    page.fill("#subscriber", "bob@example.com")
    with page.expect_request(lambda r: r.url.endswith("/dni/v1/form"), timeout=WAIT_MS):
        page.click("#join")
    assert sent[-1]["fields"] == {"subscriber": "bob@example.com"} and sent[-1]["form"] == "newsletter"

    scripts: list[str] = []
    page.on("request", lambda r: scripts.append(r.url))
    page.goto(f"{world.site}/off")
    _loaded(page)
    _fill(page)
    page.click("#send")
    page.wait_for_url("**/thanks**", timeout=WAIT_MS)
    assert len(sent) == 1
    assert not any(u.endswith("/dni-forms.js") for u in scripts)


@pytest.mark.parametrize(
    "signal",
    [
        "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})",
        "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'})",
    ],
    ids=["gpc", "dnt"],
)
def test_nothing_is_sent_with_dnt_or_gpc_on(world: Site_, browser: Any, signal: str) -> None:  # noqa: F811
    ctx = browser.new_context()
    try:
        ctx.add_init_script(signal)
        page = ctx.new_page()
        urls: list[str] = []
        page.on("request", lambda r: urls.append(r.url))
        before = len(world.leads())
        page.goto(f"{world.site}/all")
        page.wait_for_function("() => window.calltrackDni && window.calltrackDni.state().privacy", timeout=WAIT_MS)
        _fill(page)
        page.click("#send")
        page.wait_for_url("**/thanks**", timeout=WAIT_MS)
        assert not any(u.endswith(("/dni/v1/form", "/dni-forms.js")) for u in urls), urls
        assert len(world.leads()) == before
    finally:
        ctx.close()
