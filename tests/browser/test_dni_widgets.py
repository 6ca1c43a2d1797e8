"""dni.js inside widgets: same-origin iframes (a chat widget) and open shadow roots, present at load or added later."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from tests.browser.harness import WAIT_MS, Website, chromium, large_page, service, tag, wait_swapped, website
from tracking.accounts import add_account, add_source
from tracking.numbers import NumberFields, add_number
from tracking.sites import add_site
from tracking.source_rules import add_rule

pytestmark = pytest.mark.browser

WIDGET = """
<script>
customElements.define("call-card", class extends HTMLElement {
  connectedCallback() {
    if (this.shadowRoot) return;
    const root = this.attachShadow({mode: this.getAttribute("mode") || "open"});
    root.innerHTML = '<p class="n"><b>(404)</b> 555-0100</p><a class="t" href="tel:+14045550100">call</a>';
  }
});
</script>"""

PAGE = """<!doctype html><html><head><meta charset="utf-8">{tag}</head><body>
<p id="own">404-555-0100</p>
<iframe id="chat" src="/chat"></iframe>
<iframe id="foreign" src="{foreign}/chat"></iframe>
{widget}
<call-card id="card"></call-card>
<call-card id="closed" mode="closed"></call-card>
</body></html>"""

CHAT = """<!doctype html><html><body><div id="msg">Agent: call us on <span>404.555.0100</span></div>
<a id="tel" href="tel:4045550100">tap to call</a></body></html>"""


@dataclass
class World:
    site: Website
    foreign: Website
    browser: Any
    script: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with ExitStack() as stack:
        svc = stack.enter_context(service(tmp_path_factory.mktemp("dni-widgets")))
        site = stack.enter_context(website())
        foreign = stack.enter_context(website({"/chat": CHAT}))
        with svc.factory.begin() as s:
            key = add_account(s, "Acme").public_key
            add_source(s, "Acme", "Website")
            add_number(s, svc.settings, NumberFields("+17705550151", "Acme", source="Website", forward_to="PJSIP/1"))
            add_rule(s, "Acme", "default", "", "Website")
            add_site(s, "Acme", site.origin, ["+1 404 555 0100"])
        site.pages["/"] = PAGE.format(tag=tag(svc, key), foreign=foreign.origin, widget=WIDGET)
        site.pages["/chat"] = CHAT
        yield World(site, foreign, stack.enter_context(chromium()), tag(svc, key))


@pytest.fixture
def page(world: World) -> Iterator[Any]:
    ctx = world.browser.new_context()
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    ctx.close()
    assert errors == []


def frame(page: Any, name: str) -> Any:
    return page.frame_locator(f"#{name}")


def test_same_origin_iframe_is_swapped_and_watched(world: World, page: Any) -> None:
    page.goto(world.site.url())
    wait_swapped(page)
    chat = page.frame(url=world.site.url("/chat"))
    chat.wait_for_function("() => document.getElementById('msg').textContent.includes('770')", timeout=WAIT_MS)
    assert chat.inner_html("#msg") == "Agent: call us on <span>770.555.0151</span>"
    assert chat.get_attribute("#tel", "href") == "tel:7705550151"
    # a message the agent sends later
    chat.evaluate("() => document.body.insertAdjacentHTML('beforeend', '<p id=\"later\">or (404) 555-0100</p>')")
    chat.wait_for_function(
        "() => document.getElementById('later').textContent === 'or (770) 555-0151'", timeout=WAIT_MS
    )
    # another origin's frame cannot be read, and is no error
    other = page.frame(url=world.foreign.url("/chat"))
    assert other.inner_text("#msg") == "Agent: call us on 404.555.0100"


def test_iframe_added_and_navigated_later(world: World, page: Any) -> None:
    page.goto(world.site.url())
    wait_swapped(page)
    page.evaluate(
        "() => { const f = document.createElement('iframe'); f.id = 'late'; f.src = '/chat'; document.body.appendChild(f); }"
    )
    late = frame(page, "late")
    late.locator("#msg").wait_for()
    page.wait_for_function(
        "() => { const d = document.getElementById('late').contentDocument;"
        " return d && d.getElementById('msg') && d.getElementById('msg').textContent.includes('770.555.0151'); }",
        timeout=WAIT_MS,
    )
    # the same frame loading another page
    page.evaluate("() => { document.getElementById('late').src = '/chat?second'; }")
    page.wait_for_function(
        "() => { const d = document.getElementById('late').contentDocument;"
        " return d && d.location.search === '?second' && d.getElementById('tel')"
        " && d.getElementById('tel').getAttribute('href') === 'tel:7705550151'; }",
        timeout=WAIT_MS,
    )


def test_open_shadow_roots_present_and_added_later(world: World, page: Any) -> None:
    page.goto(world.site.url())
    wait_swapped(page)
    assert page.evaluate("() => document.getElementById('card').shadowRoot.querySelector('.n').innerHTML") == (
        "<b>(770)</b> 555-0151"
    )
    assert page.evaluate(
        "() => document.getElementById('card').shadowRoot.querySelector('.t').getAttribute('href')"
    ) == ("tel:+17705550151")
    # a widget inserted by a later script, and new text inside an existing shadow root
    page.evaluate(
        "() => { const c = document.createElement('call-card'); c.id = 'late'; document.body.appendChild(c);"
        " document.getElementById('card').shadowRoot.appendChild(Object.assign(document.createElement('p'),"
        " {className: 'more', textContent: '+1 404 555 0100'})); }"
    )
    page.wait_for_function(
        "() => { const l = document.getElementById('late').shadowRoot;"
        " const m = document.getElementById('card').shadowRoot.querySelector('.more');"
        " return l && l.querySelector('.n').textContent === '(770) 555-0151' && m.textContent === '+1 770 555 0151'; }",
        timeout=WAIT_MS,
    )
    assert text_outside(page) == "770-555-0151"


def text_outside(page: Any) -> str:
    return str(page.inner_text("#own"))


def test_large_page_every_number_swapped_and_nothing_else(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """20,000 nodes and more, the number 500 times in four forms (split ones too), walked in slices."""
    page_html = large_page(1000, 500, script=world.script)
    world.site.pages["/large"] = page_html
    world.site.pages["/large-none"] = page_html.replace("0100", "0177")
    ctx = world.browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(world.site.url("/large"))
        wait_swapped(page, timeout=60_000)
        nodes = page.evaluate(
            "() => { let n = 0; const w = document.createTreeWalker(document, 5); while (w.nextNode()) n++; return n; }"
        )
        assert nodes > 20_000
        body = page.inner_text("main")
        assert len(re.findall(r"404\D{1,2}555\D0100", body)) == 0
        assert len(re.findall(r"770\D{1,2}555\D0151", body)) == 500
        assert page.locator("a[href='tel:+17705550151']").count() == 125
        prices = page.evaluate("() => [...document.querySelectorAll('.f span')].map(e => e.textContent)")
        assert prices == [f"${i}.99" for i in range(1000)]  # other digits are left alone
        # a page holding none of the numbers: the walk ends and changes nothing
        page.goto(world.site.url("/large-none"))
        page.wait_for_function(
            "() => window.calltrackDni && performance.getEntriesByName('calltrack:swapped').length", timeout=60_000
        )
        assert page.evaluate("() => window.calltrackDni.state().swapped") == 0
        assert len(re.findall(r"404\D{1,2}555\D0177", page.inner_text("main"))) == 500
    finally:
        ctx.close()


def test_overflowed_visitor_reloading_counts_once(tmp_path_factory: pytest.TempPathFactory, world: World) -> None:
    """A pool of one: the second visitor sees the overflow number; a reload is the same overflow visit."""
    from tracking.leases import pool_status
    from tracking.pools import add_numbers, create_pool

    with ExitStack() as stack:
        svc = stack.enter_context(service(tmp_path_factory.mktemp("dni-overflow")))
        site = stack.enter_context(website())
        with svc.factory.begin() as s:
            key = add_account(s, "Acme").public_key
            add_source(s, "Acme", "Ads")
            create_pool(s, svc.settings, "ads", "Acme", 30, source="Ads", overflow="+17705550199")
            add_numbers(s, svc.settings, "ads", "Acme", ["+17705550161"], "PJSIP/1")
            add_rule(s, "Acme", "default", "", "Ads")
            add_site(s, "Acme", site.origin, ["+1 404 555 0100"])
        site.pages["/"] = (
            f"<!doctype html><html><head>{tag(svc, key)}</head><body><p id='n'>404-555-0100</p></body></html>"
        )
        shown = []
        for _ in range(2):
            ctx = world.browser.new_context()
            page = ctx.new_page()
            page.goto(site.url("/"))
            wait_swapped(page)
            shown.append(page.inner_text("#n"))
            if len(shown) == 2:
                page.reload()
                wait_swapped(page)
                shown.append(page.inner_text("#n"))
            ctx.close()
        assert shown == ["770-555-0161", "770-555-0199", "770-555-0199"]
        with svc.factory() as s:
            assert [p["overflow_count"] for p in pool_status(s)] == [1]  # what `calltrack pools status` shows


def test_a_new_lease_replaces_the_number_shown_before(tmp_path_factory: pytest.TempPathFactory, world: World) -> None:
    """The lease ends while the page is open (its hold time passed): the heartbeat is refused, the script
    starts a new session, and the page's numbers (already the old tracking number) show the new one."""
    import datetime as dt

    from sqlalchemy import update

    from schema.models import PoolLease, TrackingNumber
    from tracking.pools import add_numbers, create_pool

    with ExitStack() as stack:
        svc = stack.enter_context(service(tmp_path_factory.mktemp("dni-relet"), heartbeat_seconds=1))
        site = stack.enter_context(website())
        with svc.factory.begin() as s:
            key = add_account(s, "Acme").public_key
            add_source(s, "Acme", "Ads")
            create_pool(s, svc.settings, "ads", "Acme", 30, source="Ads")
            add_numbers(s, svc.settings, "ads", "Acme", ["+17705550161", "+17705550162"], "PJSIP/1")
            add_rule(s, "Acme", "default", "", "Ads")
            add_site(s, "Acme", site.origin, ["+1 404 555 0100"])
        site.pages["/"] = (
            f"<!doctype html><html><head>{tag(svc, key)}</head><body><p id='n'>(404) 555-0100</p>"
            "<a id='t' href='tel:+14045550100'>call</a></body></html>"
        )
        ctx = world.browser.new_context()
        try:
            page = ctx.new_page()
            page.goto(site.url("/"))
            wait_swapped(page)
            first = page.evaluate("() => window.calltrackDni.state().shown.e164")
            other = ({"+17705550161", "+17705550162"} - {first}).pop()
            past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
            with svc.factory.begin() as s:  # the hold time has passed
                s.execute(update(PoolLease).values(expires_at=past))
                s.execute(update(TrackingNumber).where(TrackingNumber.number == first).values(last_leased_at=past))
            page.wait_for_function(
                f"() => window.calltrackDni.state().shown.e164 === '{other}' && !window.calltrackDni.state().busy",
                timeout=WAIT_MS,
            )
            assert page.inner_text("#n") == f"({other[2:5]}) {other[5:8]}-{other[8:]}"
            assert page.get_attribute("#t", "href") == f"tel:{other}"
        finally:
            ctx.close()
