"""dni.js on pages as businesses write them: UK and German sites, numbers split across elements,
click-to-call buttons, marked attributes; numbers it was not given are never touched."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from tests.browser.harness import Service, Website, chromium, service, tag, wait_swapped, website
from tracking.accounts import add_account, add_source
from tracking.numbers import NumberFields, add_number
from tracking.sites import add_site
from tracking.source_rules import add_rule

pytestmark = pytest.mark.browser

US_TRACKING = "+17705550151"
UK_TRACKING = "+442079460999"
DE_TRACKING = "+493090182099"  # two digits longer than the business number

US_PAGE = """<!doctype html><html><head><meta charset="utf-8">{tag}</head><body>
<p id="split1"><span class="area">(404)</span> 555-0100</p>
<p id="split2"><span>404</span><span>555</span><span>0100</span></p>
<p id="split3">(404)<br>555-0100</p>
<p id="split4">Call <b>1</b>-<i>404</i>-<em>555</em>-<strong>0100</strong> today</p>
<p><a id="strong" href="tel:+14045550100"><strong>404</strong>-555-0100</a></p>
<p><button id="btn" onclick="location.href='tel:4045550100'">Call 404-555-0100</button></p>
<p><a id="js" href="javascript:void(window.open('tel:+1%20404%20555%200100'))">Call</a></p>
<div id="widget" data-phone="+1 404 555 0100" data-other="404-555-0100">chat</div>
<p id="partner">Partner: (404) 555-0177, 404-555-0100-1, 2-404-555-0100</p>
<p id="long">Order 140455501001 or 4045550100x</p>
<div id="blocks"><div>(404)</div><div>555-0100</div></div>
<p id="thin">404&#8239;555&#8239;0100</p>
<textarea id="ta">404-555-0100</textarea>
<!-- 404-555-0100 -->
</body></html>"""

UK_PAGE = """<!doctype html><html><head><meta charset="utf-8">{tag}</head><body>
<p id="nat">Call 020 7946 0958</p>
<p id="intl">+44 20 7946 0958</p>
<p id="trunk">+44 (0)20 7946 0958</p>
<p id="zz">0044 20 7946 0958</p>
<p id="split"><span class="code">020</span> <span>7946</span>&nbsp;<span>0958</span></p>
<p><a id="tel" href="tel:+442079460958">020 7946 0958</a> <a id="tel2" href="tel:02079460958">ring</a></p>
<p id="us">Our US partner: (404) 555-0100, +1 404 555 0100</p>
<p id="other">Manchester: 0161 496 0000</p>
</body></html>"""

DE_PAGE = """<!doctype html><html><head><meta charset="utf-8">{tag}</head><body>
<p id="nat">Tel. 030 901820</p>
<p id="intl">+49 30 901820</p>
<p id="trunk">+49 (0)30 901820</p>
<p id="slash">030/90 18 20</p>
<p><a id="tel" href="tel:+4930901820">anrufen</a></p>
<p id="nanp">+1 493-090-1820</p>
<p id="other">München: 089 123456</p>
</body></html>"""


@dataclass
class World:
    svc: Service
    us: Website
    uk: Website
    de: Website
    bare: Website
    browser: Any


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with ExitStack() as stack:
        svc = stack.enter_context(service(tmp_path_factory.mktemp("dni-pages")))
        us, uk, de, bare = (stack.enter_context(website()) for _ in range(4))
        with svc.factory.begin() as s:
            keys = {}
            for name, number in (("Acme", US_TRACKING), ("Acme UK", UK_TRACKING), ("Acme DE", DE_TRACKING)):
                keys[name] = add_account(s, name).public_key
                add_source(s, name, "Website")
                add_number(s, svc.settings, NumberFields(number, name, source="Website", forward_to="PJSIP/1"))
                add_rule(s, name, "default", "", "Website")
            add_site(s, "Acme", us.origin, ["(404) 555-0100"])
            add_site(s, "Acme", bare.origin)  # no business number named: nothing may change
            add_site(s, "Acme UK", uk.origin, ["020 7946 0958"], "GB")
            add_site(s, "Acme DE", de.origin, ["030 901820"], "DE")
        # the German site has a strict Content-Security-Policy: only the service's script and API
        de.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src {svc.url}; connect-src {svc.url}; style-src 'self'"
        )
        us.pages["/"] = US_PAGE.format(tag=tag(svc, keys["Acme"], 'data-attrs="data-phone"'))
        bare.pages["/"] = US_PAGE.format(tag=tag(svc, keys["Acme"], 'data-attrs="data-phone" data-replace="555-CALL"'))
        uk.pages["/"] = UK_PAGE.format(tag=tag(svc, keys["Acme UK"]))
        de.pages["/"] = DE_PAGE.format(tag=tag(svc, keys["Acme DE"]))
        browser = stack.enter_context(chromium())
        yield World(svc, us, uk, de, bare, browser)


@pytest.fixture
def page(world: World) -> Iterator[Any]:
    ctx = world.browser.new_context()
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    ctx.close()
    assert errors == []


def text(page: Any, id_: str) -> str:
    return str(page.eval_on_selector(f"#{id_}", "e => e.textContent"))


def test_us_numbers_split_across_elements(world: World, page: Any) -> None:
    page.goto(world.us.url())
    wait_swapped(page)
    assert page.inner_html("#split1") == '<span class="area">(770)</span> 555-0151'  # markup and styles stay
    assert page.inner_html("#split2") == "<span>770</span><span>555</span><span>0151</span>"
    assert page.inner_html("#split3") == "(770)<br>555-0151"
    assert text(page, "split4") == "Call 1-770-555-0151 today"
    assert page.inner_html("#thin") == "770\u202f555\u202f0151"  # narrow no-break spaces between the groups


def test_shown_and_dialled_number_agree(world: World, page: Any) -> None:
    page.goto(world.us.url())
    wait_swapped(page)
    assert page.inner_html("#strong") == "<strong>770</strong>-555-0151"
    assert page.get_attribute("#strong", "href") == "tel:+17705550151"
    assert page.get_attribute("#btn", "onclick") == "location.href='tel:7705550151'"
    assert text(page, "btn") == "Call 770-555-0151"
    # the rewritten handler is the one that runs
    dialled = page.evaluate(
        "() => { let to = null; const b = document.getElementById('btn');"
        " const f = new Function('location', b.getAttribute('onclick')); const loc = {};"
        " f(loc); return loc.href; }"
    )
    assert dialled == "tel:7705550151"
    assert page.get_attribute("#js", "href") == "javascript:void(window.open('tel:+1%20770%20555%200151'))"
    assert page.get_attribute("#widget", "data-phone") == "+1 770 555 0151"  # marked by data-attrs
    assert page.get_attribute("#widget", "data-other") == "404-555-0100"  # not marked: left alone


def test_other_numbers_and_longer_digit_runs_are_left_alone(world: World, page: Any) -> None:
    page.goto(world.us.url())
    wait_swapped(page)
    assert text(page, "partner") == "Partner: (404) 555-0177, 404-555-0100-1, 2-404-555-0100"
    assert text(page, "long") == "Order 140455501001 or 4045550100x"
    assert page.inner_html("#blocks") == "<div>(404)</div><div>555-0100</div>"  # two blocks: two texts
    assert page.input_value("#ta") == "404-555-0100"
    assert "<!-- 404-555-0100 -->" in page.content()


def test_uk_site_in_every_usual_form(world: World, page: Any) -> None:
    page.goto(world.uk.url())
    wait_swapped(page)
    assert text(page, "nat") == "Call 020 7946 0999"
    assert text(page, "intl") == "+44 20 7946 0999"
    assert text(page, "trunk") == "+44 (0)20 7946 0999"
    assert text(page, "zz") == "0044 20 7946 0999"
    assert page.inner_html("#split") == '<span class="code">020</span> <span>7946</span>&nbsp;<span>0999</span>'
    assert page.get_attribute("#tel", "href") == "tel:+442079460999"
    assert text(page, "tel") == "020 7946 0999"
    assert page.get_attribute("#tel2", "href") == "tel:02079460999"
    # numbers the script was not given stay: a US partner's, another UK office's
    assert text(page, "us") == "Our US partner: (404) 555-0100, +1 404 555 0100"
    assert text(page, "other") == "Manchester: 0161 496 0000"


def test_german_site_with_a_longer_tracking_number(world: World, page: Any) -> None:
    """Under a strict Content-Security-Policy too (no inline script, no eval, only the service's origin)."""
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(world.de.url())
    wait_swapped(page)
    assert text(page, "nat") == "Tel. 030 90182099"
    assert text(page, "intl") == "+49 30 90182099"
    assert text(page, "trunk") == "+49 (0)30 90182099"
    assert text(page, "slash") == "030/90 18 2099"
    assert page.get_attribute("#tel", "href") == "tel:+493090182099"
    assert text(page, "nanp") == "+1 493-090-1820"  # the North American 493-090-1820 is another number
    assert text(page, "other") == "München: 089 123456"
    assert violations == []


def test_without_business_numbers_nothing_is_swapped(world: World, page: Any) -> None:
    """No fallback to "every number that looks North American": an unreadable data-replace swaps nothing."""
    page.goto(world.bare.url())
    page.wait_for_function(
        "() => window.calltrackDni && window.calltrackDni.state().session && !window.calltrackDni.state().busy",
        timeout=10_000,
    )
    assert text(page, "split1") == "(404) 555-0100"
    assert page.get_attribute("#strong", "href") == "tel:+14045550100"
    assert page.get_attribute("#btn", "onclick") == "location.href='tel:4045550100'"
    assert page.get_attribute("#widget", "data-phone") == "+1 404 555 0100"
    assert page.evaluate("() => window.calltrackDni.state().swapped") == 0


def test_new_content_split_over_two_renders(world: World, page: Any) -> None:
    page.goto(world.uk.url())
    wait_swapped(page)
    page.evaluate(
        "() => { const p = document.createElement('p'); p.id = 'late';"
        " p.innerHTML = '<span>020</span>'; document.body.appendChild(p);"
        " setTimeout(() => p.insertAdjacentHTML('beforeend', ' <b>7946 0958</b>'), 50); }"
    )
    page.wait_for_function("() => document.getElementById('late').textContent === '020 7946 0999'", timeout=10_000)
    assert page.inner_html("#late") == "<span>020</span> <b>7946 0999</b>"
