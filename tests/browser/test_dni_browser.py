"""dni.js in a real browser: Debian's headless Chromium driven by Playwright.

The web service runs in a thread (uvicorn, SQLite); a second local server plays
the business's website, a page with the business number written in each
common format.  One browser for the whole module.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config import DatabaseSettings, GeneralSettings, Settings, WebSettings
from schema import migrate
from schema.db import make_engine
from schema.models import PoolLease, VisitorSession
from tracking.accounts import add_account, add_source
from tracking.numbers import NumberFields, add_number
from tracking.pools import add_numbers, create_pool
from tracking.sites import add_site
from tracking.source_rules import add_rule
from web.app import create_app
from web.service import uvicorn_config

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CALLTRACK_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
BUSINESS = "+14045550100"
POOL = ["+17705550151", "+17705550152", "+17705550153"]
OVERFLOW = "+17705550199"
FACEBOOK = "+17705550121"
WAIT_MS = 10_000

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Acme Plumbing</title>
<script async src="{script}" data-account="{key}" data-replace="{business}"></script>
</head><body>
<p id="paren">Call (404) 555-0100 today</p>
<p id="dash">404-555-0100</p>
<p id="dots">Or 404.555.0100.</p>
<p id="intl">+1 404 555 0100</p>
<p id="fax">Fax: (404) 555-0111</p>
<p><a id="tel" href="tel:+14045550100">Call us</a> <a id="tel2" href="tel:404-555-0100">404&#8209;555&#8209;0100</a></p>
<textarea id="ta">404-555-0100</textarea>
<div id="later"></div>
</body></html>
"""
ORIGINAL = {
    "paren": "Call (404) 555-0100 today",
    "dash": "404-555-0100",
    "dots": "Or 404.555.0100.",
    "intl": "+1 404 555 0100",
    "fax": "Fax: (404) 555-0111",
}


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class World:
    api: str
    site: str
    key: str
    factory: sessionmaker[Session]

    def page_url(self, query: str = "") -> str:
        return f"{self.site}/{query}"

    def sessions(self) -> list[VisitorSession]:
        with self.factory() as s:
            return list(s.scalars(select(VisitorSession).order_by(VisitorSession.id)))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("dni-browser")
    url = f"sqlite:///{tmp / 'calltrack.sqlite3'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    settings = Settings(
        general=GeneralSettings(data_dir=tmp),
        database=DatabaseSettings(url=url),
        web=WebSettings(heartbeat_seconds=1, rate_limit_per_minute=10_000),
    )
    site_sock = free_socket()
    site_origin = f"http://127.0.0.1:{site_sock.getsockname()[1]}"
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory.begin() as s:
        key = add_account(s, "Acme").public_key
        for name in ("Google Ads", "Facebook", "Website"):
            add_source(s, "Acme", name)
        add_number(s, settings, NumberFields(FACEBOOK, "Acme", source="Facebook", forward_to="PJSIP/1"))
        create_pool(s, settings, "ads", "Acme", 30, source="Google Ads", overflow=OVERFLOW)
        add_numbers(s, settings, "ads", "Acme", POOL, "PJSIP/1")
        add_site(s, "Acme", site_origin)
        add_rule(s, "Acme", "param", "utm_source=google", "Google Ads")
        add_rule(s, "Acme", "referrer", "facebook.com", "Facebook")

    api_sock = free_socket()
    api = f"http://127.0.0.1:{api_sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn_config(
            create_app(settings, engine, cache_seconds=0, sqlite_inline=True), "127.0.0.1:0", log_level="warning"
        )
    )
    api_thread = threading.Thread(target=server.run, kwargs={"sockets": [api_sock]}, daemon=True)
    api_thread.start()

    page = PAGE.format(script=f"{api}/dni.js", key=key, business=BUSINESS).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
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
    site_thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    site_thread.start()
    for _ in range(500):
        if server.started:
            break
        threading.Event().wait(0.01)
    try:
        yield World(api, site_origin, key, factory)
    finally:
        httpd.shutdown()
        httpd.server_close()
        server.should_exit = True
        api_thread.join(10)
        engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium (scripts/install --test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context()
    yield ctx
    ctx.close()


def texts(page: Any) -> dict[str, str]:
    return {name: page.inner_text(f"#{name}") for name in ORIGINAL}


def swapped(page: Any) -> None:
    page.wait_for_function("() => !document.getElementById('dash').textContent.startsWith('404')", timeout=WAIT_MS)


def nat(e164: str) -> tuple[str, str, str]:
    return e164[2:5], e164[5:8], e164[8:]


def test_pool_number_replaces_every_format_and_keeps_it(world: World, context: Any) -> None:
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(world.page_url("?utm_source=google&utm_campaign=spring&gclid=abc"))
    swapped(page)
    number = page.evaluate("() => window.calltrackDni.state().shown.e164")
    assert number in POOL
    a, b, c = nat(number)
    assert texts(page) == {
        "paren": f"Call ({a}) {b}-{c} today",
        "dash": f"{a}-{b}-{c}",
        "dots": f"Or {a}.{b}.{c}.",
        "intl": f"+1 {a} {b} {c}",
        "fax": "Fax: (404) 555-0111",  # not the business number: left alone
    }
    assert page.get_attribute("#tel", "href") == f"tel:+1{a}{b}{c}"
    assert page.get_attribute("#tel2", "href") == f"tel:{a}-{b}-{c}"
    assert page.inner_text("#tel2") == f"{a}\u2011{b}\u2011{c}"  # non-breaking hyphens kept
    assert page.input_value("#ta") == "404-555-0100"  # form fields are the visitor's, not ours

    # a number added later (a chat widget, a React render) is swapped too
    page.evaluate(
        "() => { const s = document.createElement('span'); s.id = 'late';"
        " s.textContent = 'Call 404.555.0100 now'; document.getElementById('later').appendChild(s); }"
    )
    page.wait_for_function("() => document.getElementById('late').textContent.includes('555')", timeout=WAIT_MS)
    page.wait_for_function(
        f"() => document.getElementById('late').textContent === 'Call {a}.{b}.{c} now'", timeout=WAIT_MS
    )
    page.evaluate("() => { document.getElementById('dash').firstChild.nodeValue = '404-555-0100'; }")
    page.wait_for_function(f"() => document.getElementById('dash').textContent === '{a}-{b}-{c}'", timeout=WAIT_MS)

    cookies = {c["name"]: c["value"] for c in context.cookies()}
    visit = world.sessions()[-1]
    assert cookies["_ctv"] == visit.visitor_id
    assert (visit.utm_source, visit.utm_campaign, visit.gclid) == ("google", "spring", "abc")
    assert visit.landing_url == world.page_url("?utm_source=google&utm_campaign=spring&gclid=abc")

    # the heartbeat (every second here) moves the lease's end forward
    with world.factory() as s:
        first_end = s.scalars(select(PoolLease.expires_at).where(PoolLease.session_id == visit.id)).one()
    with page.expect_response(lambda r: r.url.endswith("/dni/v1/heartbeat"), timeout=WAIT_MS) as beat:
        pass
    assert beat.value.status == 200  # answered after its transaction committed
    with world.factory() as s:
        later_end = s.scalars(select(PoolLease.expires_at).where(PoolLease.session_id == visit.id)).one()
    assert later_end > first_end

    # the same visitor on another page keeps the same number; another visitor gets another one
    page.goto(world.page_url("about"))
    swapped(page)
    assert page.evaluate("() => window.calltrackDni.state().shown.e164") == number
    other = context.browser.new_context()
    try:
        p2 = other.new_page()
        p2.goto(world.page_url("?utm_source=google"))
        swapped(p2)
        other_number = p2.evaluate("() => window.calltrackDni.state().shown.e164")
        assert other_number in POOL and other_number != number
    finally:
        other.close()
    assert errors == []


def test_referrer_source_shows_its_own_number(world: World, context: Any) -> None:
    page = context.new_page()
    page.goto(world.page_url(), referer="https://www.facebook.com/acme")
    swapped(page)
    a, b, c = nat(FACEBOOK)
    assert page.inner_text("#paren") == f"Call ({a}) {b}-{c} today"
    assert world.sessions()[-1].referrer == "https://www.facebook.com/acme"


@pytest.mark.parametrize(
    "signal",
    [
        "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})",
        "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'})",
    ],
    ids=["gpc", "dnt"],
)
def test_privacy_signal_shows_source_number_and_stores_nothing(world: World, browser: Any, signal: str) -> None:
    ctx = browser.new_context()
    try:
        ctx.add_init_script(signal)
        before = len(world.sessions())
        page = ctx.new_page()
        page.goto(world.page_url("?utm_source=google"))
        swapped(page)
        a, b, c = nat(OVERFLOW)  # the Google Ads source's number without a visitor: its pool's overflow number
        assert page.inner_text("#dash") == f"{a}-{b}-{c}"
        assert page.evaluate("() => window.calltrackDni.state().privacy") is True
        assert ctx.cookies() == []
        assert page.evaluate("() => document.cookie") == ""
        assert len(world.sessions()) == before
    finally:
        ctx.close()


@pytest.mark.parametrize("failure", ["unreachable", "error", "garbage"])
def test_service_down_keeps_the_original_numbers(world: World, context: Any, failure: str) -> None:
    errors: list[str] = []
    tried = threading.Event()

    def fail(route: Any) -> None:
        tried.set()
        if failure == "unreachable":
            route.abort("connectionrefused")
        elif failure == "garbage":  # a proxy's error page, or a truncated answer
            route.fulfill(status=200, content_type="text/html", body="<html>502 Bad Gateway</html>")
        else:
            route.fulfill(status=503, content_type="application/json", body='{"error": "temporarily unavailable"}')

    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.route(f"{world.api}/dni/v1/session", fail)
    with page.expect_response(lambda r: r.url.endswith("/dni.js"), timeout=WAIT_MS):
        page.goto(world.page_url("?utm_source=google"))
    page.wait_for_function("() => window.calltrackDni !== undefined", timeout=WAIT_MS)
    page.wait_for_load_state("networkidle")
    assert tried.is_set()
    assert texts(page) == ORIGINAL
    assert page.get_attribute("#tel", "href") == f"tel:{BUSINESS}"
    assert errors == []


def test_script_not_loaded_at_all_keeps_the_page(world: World, context: Any) -> None:
    page = context.new_page()
    page.route(f"{world.api}/dni.js", lambda route: route.abort("connectionrefused"))
    page.goto(world.page_url("?utm_source=google"))
    page.wait_for_load_state("networkidle")
    assert texts(page) == ORIGINAL
    assert page.evaluate("() => window.calltrackDni") is None
