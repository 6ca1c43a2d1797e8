"""dni.js's debug mode (data-debug or ?calltrack_debug=1): the console says why nothing was swapped."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from tests.browser.harness import WAIT_MS, Service, Website, chromium, service, tag, website
from tracking.accounts import add_account, add_source
from tracking.numbers import NumberFields, add_number
from tracking.sites import add_site
from tracking.source_rules import add_rule

pytestmark = pytest.mark.browser

BODY = "<p id='n'>Call (404) 555-0177</p>"


@dataclass
class World:
    svc: Service
    strict: Service
    key: str
    strict_key: str
    site: Website
    bare: Website
    stranger: Website
    browser: Any


def page_html(svc: Service, key: str, extra: str = "data-debug") -> str:
    return f"<!doctype html><html><head>{tag(svc, key, extra)}</head><body>{BODY}</body></html>"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with ExitStack() as stack:
        svc = stack.enter_context(service(tmp_path_factory.mktemp("dni-debug")))
        strict = stack.enter_context(service(tmp_path_factory.mktemp("dni-debug-strict"), rate_limit_per_minute=1))
        site, bare, stranger = (stack.enter_context(website()) for _ in range(3))
        keys = []
        for s_ in (svc, strict):
            with s_.factory.begin() as s:
                keys.append(add_account(s, "Acme").public_key)
                add_source(s, "Acme", "Website")
                add_number(s, s_.settings, NumberFields("+17705550151", "Acme", source="Website", forward_to="PJSIP/1"))
                add_rule(s, "Acme", "default", "", "Website")
                add_site(s, "Acme", site.origin, ["+1 404 555 0100"])
                add_site(s, "Acme", bare.origin)
        key, strict_key = keys
        site.pages["/"] = page_html(svc, key)
        site.pages["/quiet"] = page_html(svc, key, "")
        site.pages["/unknown"] = page_html(svc, "nosuchaccountkey")
        site.pages["/strict"] = page_html(strict, strict_key)
        site.pages["/bad-replace"] = page_html(svc, key, 'data-debug data-replace="555-CALL-NOW"')
        bare.pages["/"] = page_html(svc, key)
        stranger.pages["/"] = page_html(svc, key, "")
        yield World(svc, strict, key, strict_key, site, bare, stranger, stack.enter_context(chromium()))


def console(world: World, url: str, init: str | None = None, expect: str = "calltrack") -> list[str]:
    """The page's calltrack console messages, once one containing *expect* has come."""
    ctx = world.browser.new_context()
    if init:
        ctx.add_init_script(init)
    try:
        page = ctx.new_page()
        seen: list[str] = []
        page.on("console", lambda m: seen.append(m.text) if "calltrack" in m.text else None)
        with page.expect_console_message(lambda m: expect in m.text, timeout=WAIT_MS):
            page.goto(url)
        return seen
    finally:
        ctx.close()


def test_origin_not_a_site(world: World) -> None:
    url = world.stranger.url("/?calltrack_debug=1")  # the query parameter, for a page one cannot edit
    lines = console(world, url, expect="answered 403")
    assert any(f"origin {world.stranger.origin} is not a site of this account" in line for line in lines)


def test_unknown_account(world: World) -> None:
    lines = console(world, world.site.url("/unknown"), expect="answered 404")
    assert any("unknown account key" in line for line in lines)


def test_rate_limited(world: World) -> None:
    console(world, world.site.url("/strict"), expect="none of the numbers")  # the minute's one call
    lines = console(world, world.site.url("/strict"), expect="answered 429")
    assert any("too many requests" in line for line in lines)


def test_do_not_track(world: World) -> None:
    lines = console(
        world,
        world.site.url("/"),
        "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})",
        expect="Global Privacy Control",
    )
    assert any("Do-Not-Track or Global Privacy Control is on" in line for line in lines)


def test_no_numbers_named_and_none_on_the_page(world: World) -> None:
    assert any("no numbers to replace" in line for line in console(world, world.bare.url("/"), expect="no numbers"))
    lines = console(world, world.site.url("/"), expect="none of the numbers")
    assert any("none of the numbers to replace is on this page" in line for line in lines)
    lines = console(world, world.site.url("/bad-replace"), expect="not phone numbers")
    assert any("555-CALL-NOW" in line for line in lines)


def test_quiet_without_debug(world: World) -> None:
    ctx = world.browser.new_context()
    try:
        page = ctx.new_page()
        seen: list[str] = []
        page.on("console", lambda m: seen.append(m.text) if m.text.startswith("calltrack") else None)
        with page.expect_response(lambda r: r.url.endswith("/dni/v1/session"), timeout=WAIT_MS):
            page.goto(world.site.url("/quiet"))
        page.wait_for_function("() => window.calltrackDni && !window.calltrackDni.state().busy", timeout=WAIT_MS)
        with page.expect_event("requestfailed", lambda r: "/dni/v1/session" in r.url, timeout=WAIT_MS):
            page.goto(world.stranger.url("/"))  # refused, and without debug unreadable: CORS blocks it
        page.wait_for_load_state("networkidle")
        assert seen == []
    finally:
        ctx.close()
