"""The DNI API over HTTP (ASGI), on SQLite and PostgreSQL: rules, leases, privacy, CORS, errors."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings, WebSettings
from schema.models import NumberPool, PoolLease, TrackingNumber, VisitorSession
from tracking.accounts import add_account, add_source
from tracking.attribution import attribute
from tracking.leases import find_double_leases
from tracking.numbers import NumberFields, add_number
from tracking.pools import add_numbers, create_pool, overflow_counts
from tracking.sites import add_site
from tracking.source_rules import add_rule
from web.app import create_app

SITE = "https://www.acme.test"
POOL = ["+14045550151", "+14045550152", "+14045550153"]
OVERFLOW = "+14045550199"
FACEBOOK_NUMBER = "+14045550121"
ORGANIC_NUMBER = "+14045550131"
WEBSITE_NUMBER = "+14045550141"
SOCIAL_NUMBER = "+14045550161"
START = dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)


def populate(
    factory: sessionmaker[Session], settings: Settings, *, pool: list[str] = POOL, default: bool = True
) -> str:
    """Acme: a Google Ads pool, sources with their own numbers, a site and one rule of each kind."""
    with factory.begin() as s:
        account = add_account(s, "Acme", "America/New_York")
        for name in ("Google Ads", "Facebook", "Organic", "Website", "Social", "Newsletter"):
            add_source(s, "Acme", name)
        for number, source in (
            (FACEBOOK_NUMBER, "Facebook"),
            (ORGANIC_NUMBER, "Organic"),
            (WEBSITE_NUMBER, "Website"),
            (SOCIAL_NUMBER, "Social"),
        ):
            add_number(s, settings, NumberFields(number, "Acme", source=source, forward_to="PJSIP/100"))
        create_pool(s, settings, "ads", "Acme", 30, source="Google Ads", overflow=OVERFLOW)
        add_numbers(s, settings, "ads", "Acme", pool, "PJSIP/100")
        add_site(s, "Acme", SITE)
        add_rule(s, "Acme", "param", "utm_source=google", "Google Ads")
        add_rule(s, "Acme", "param", "gclid", "Google Ads")
        add_rule(s, "Acme", "param", "utm_medium=email", "Newsletter", priority=10)
        add_rule(s, "Acme", "referrer", "facebook.com", "Facebook")
        add_rule(s, "Acme", "referrer_group", "search", "Organic")
        add_rule(s, "Acme", "referrer_group", "social", "Social")
        if default:
            add_rule(s, "Acme", "default", "", "Website")
        return account.public_key


@dataclasses.dataclass
class Site:
    client: httpx.AsyncClient
    key: str
    clock: Clock
    factory: sessionmaker[Session]

    async def session(
        self, url: str = f"{SITE}/", referrer: str = "", visitor: str | None = None, **extra: Any
    ) -> httpx.Response:
        headers = extra.pop("headers", {"Origin": SITE})
        body = {"account": self.key, "visitor": visitor, "url": url, "referrer": referrer, **extra}
        return await self.client.post("/dni/v1/session", json=body, headers=headers)

    async def heartbeat(self, session: str) -> httpx.Response:
        return await self.client.post(
            "/dni/v1/heartbeat", json={"account": self.key, "session": session}, headers={"Origin": SITE}
        )

    def count(self, model: type) -> int:
        with self.factory() as s:
            return s.scalar(select(func.count()).select_from(model)) or 0

    def pool(self) -> NumberPool:
        with self.factory() as s:
            return s.scalars(select(NumberPool)).one()

    def overflows(self) -> int:
        """The pool's overflow count, as `calltrack pools list` shows it."""
        with self.factory() as s:
            return overflow_counts(s)[self.pool().id]


def _make_site(
    engine: Engine, settings: Settings, web: WebSettings | None = None, peer: str = "198.51.100.7", **kw: Any
) -> Callable[[], AsyncIterator[Site]]:
    async def make() -> AsyncIterator[Site]:
        factory = sessionmaker(bind=engine, expire_on_commit=False)
        key = populate(factory, settings, **kw)
        s = settings.replace(web=web) if web else settings
        clock = Clock()
        app = create_app(s, engine, clock=clock, cache_seconds=0)
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://dni.test") as client:
            yield Site(client, key, clock, factory)

    return make


@pytest.fixture
async def site(engine: Engine, settings: Settings) -> AsyncIterator[Site]:
    async for s in _make_site(engine, settings)():
        yield s


# --- source rules ------------------------------------------------------------------------------


async def test_param_rule_leases_a_pool_number_per_visitor(site: Site) -> None:
    first = await site.session(f"{SITE}/?utm_source=google&utm_medium=cpc")
    second = await site.session(f"{SITE}/landing?utm_source=GOOGLE")
    assert first.status_code == 200, first.text
    a, b = first.json(), second.json()
    assert a["source"] == b["source"] == "Google Ads"
    assert a["number"] in POOL and b["number"] in POOL and a["number"] != b["number"]
    assert a["display"] == "(404) 555-" + a["number"][-4:]
    assert a["expires_at"] == "2026-03-02T15:30:00Z"
    assert a["session"] != b["session"] and a["visitor"] != b["visitor"]
    assert first.headers["access-control-allow-origin"] == SITE


async def test_click_id_alone_picks_the_ads_source(site: Site) -> None:
    answer = (await site.session(f"{SITE}/?gclid=Cj0KCQ")).json()
    assert answer["source"] == "Google Ads" and answer["number"] in POOL


async def test_lower_priority_param_rule_runs_first(site: Site) -> None:
    answer = (await site.session(f"{SITE}/?utm_source=google&utm_medium=email")).json()
    assert answer["source"] == "Newsletter"
    assert answer["number"] is None  # Newsletter has no number: the page keeps its own


async def test_param_rule_beats_referrer_rules(site: Site) -> None:
    answer = (await site.session(f"{SITE}/?utm_source=google", referrer="https://www.facebook.com/")).json()
    assert answer["source"] == "Google Ads"


async def test_specific_referrer_beats_referrer_group(site: Site) -> None:
    answer = (await site.session(referrer="https://m.facebook.com/story")).json()
    assert (answer["source"], answer["number"], answer["expires_at"]) == ("Facebook", FACEBOOK_NUMBER, None)
    assert answer["display"] == "(404) 555-0121"


@pytest.mark.parametrize(
    ("referrer", "source", "number"),
    [
        ("https://www.google.co.uk/", "Organic", ORGANIC_NUMBER),
        ("https://duckduckgo.com/?q=plumber", "Organic", ORGANIC_NUMBER),
        ("https://www.linkedin.com/feed", "Social", SOCIAL_NUMBER),
        ("https://t.co/abc", "Social", SOCIAL_NUMBER),
        ("https://google.evil.example/", "Website", WEBSITE_NUMBER),
        ("https://www.acme.test/services", "Website", WEBSITE_NUMBER),  # the site itself is no referral
        ("", "Website", WEBSITE_NUMBER),
    ],
)
async def test_referrer_groups_then_default(site: Site, referrer: str, source: str, number: str) -> None:
    answer = (await site.session(f"{SITE}/contact", referrer=referrer)).json()
    assert (answer["source"], answer["number"]) == (source, number)


async def test_no_matching_rule_answers_no_number(engine: Engine, settings: Settings) -> None:
    async for site in _make_site(engine, settings, default=False)():
        response = await site.session(f"{SITE}/")
        assert response.status_code == 200
        answer = response.json()
        assert answer["number"] is None and answer["source"] is None and answer["session"]


# --- what a session stores -----------------------------------------------------------------------


async def test_session_stores_the_visit(site: Site) -> None:
    url = (
        f"{SITE}/offer?utm_source=google&utm_medium=cpc&utm_campaign=spring&utm_term=plumber"
        "&utm_content=ad1&gclid=G1&gbraid=GB2&wbraid=WB3"
    )
    headers = {"Origin": SITE, "User-Agent": 'Mozilla/5.0 (Test; "quoted")'}
    answer = (await site.session(url, referrer="https://www.google.com/", headers=headers)).json()
    with site.factory() as s:
        visit = s.scalars(select(VisitorSession)).one()
    assert visit.key == answer["session"] and visit.visitor_id == answer["visitor"]
    assert (visit.landing_url, visit.referrer) == (url, "https://www.google.com/")
    assert (visit.utm_source, visit.utm_medium, visit.utm_campaign, visit.utm_term, visit.utm_content) == (
        "google",
        "cpc",
        "spring",
        "plumber",
        "ad1",
    )
    assert (visit.gclid, visit.gbraid, visit.wbraid) == ("G1", "GB2", "WB3")
    assert visit.user_agent == 'Mozilla/5.0 (Test; "quoted")'
    assert visit.ip == "198.51.100.0"  # truncated to /24 by default
    assert visit.pages_seen == 1


async def test_untruncated_ip_when_configured(engine: Engine, settings: Settings) -> None:
    async for site in _make_site(engine, settings, WebSettings(truncate_ip=False))():
        await site.session()
        with site.factory() as s:
            assert s.scalars(select(VisitorSession.ip)).one() == "198.51.100.7"


async def test_ipv6_address_truncated_to_48(engine: Engine, settings: Settings) -> None:
    async for site in _make_site(engine, settings, peer="2001:db8:abcd:12::7")():
        await site.session()
        with site.factory() as s:
            assert s.scalars(select(VisitorSession.ip)).one() == "2001:db8:abcd::"


async def test_returning_visitor_continues_session_and_keeps_number(site: Site) -> None:
    first = (await site.session(f"{SITE}/?utm_source=google")).json()
    site.clock.advance(minutes=5)
    again = (await site.session(f"{SITE}/pricing", referrer=f"{SITE}/", visitor=first["visitor"])).json()
    assert again["session"] == first["session"] and again["number"] == first["number"]
    assert again["expires_at"] == "2026-03-02T15:35:00Z"  # extended from this page view
    with site.factory() as s:
        assert s.scalars(select(VisitorSession.pages_seen)).one() == 2
    assert site.count(PoolLease) == 1


async def test_first_touch_keeps_the_first_source(site: Site) -> None:
    first = (await site.session(f"{SITE}/?utm_source=google")).json()
    site.clock.advance(days=2)
    later = (await site.session(referrer="https://www.facebook.com/", visitor=first["visitor"])).json()
    assert later["session"] != first["session"]
    assert later["source"] == "Google Ads" and later["number"] in POOL


async def test_last_touch_takes_the_new_source_but_not_a_direct_return(engine: Engine, settings: Settings) -> None:
    async for site in _make_site(engine, settings, WebSettings(attribution="last-touch"))():
        first = (await site.session(f"{SITE}/?utm_source=google")).json()
        site.clock.advance(days=2)
        direct = (await site.session(visitor=first["visitor"])).json()
        assert direct["source"] == "Google Ads"
        site.clock.advance(days=2)
        social = (await site.session(referrer="https://www.facebook.com/", visitor=first["visitor"])).json()
        assert (social["source"], social["number"]) == ("Facebook", FACEBOOK_NUMBER)


async def test_visitor_forgotten_after_cookie_lifetime(site: Site) -> None:
    first = (await site.session(f"{SITE}/?utm_source=google")).json()
    site.clock.advance(days=91)
    later = (await site.session(referrer="https://www.facebook.com/", visitor=first["visitor"])).json()
    assert later["source"] == "Facebook" and later["visitor"] == first["visitor"]


# --- leases ------------------------------------------------------------------------------------


async def test_heartbeat_extends_and_an_ended_lease_is_not_revived(site: Site) -> None:
    answer = (await site.session(f"{SITE}/?utm_source=google")).json()
    site.clock.advance(minutes=20)
    beat = await site.heartbeat(answer["session"])
    assert beat.status_code == 200
    assert beat.json()["number"] == answer["number"]
    assert beat.json()["expires_at"] == "2026-03-02T15:50:00Z"
    site.clock.advance(minutes=31)
    ended = await site.heartbeat(answer["session"])
    assert ended.status_code == 410 and ended.json()["field"] == "session"


async def test_least_recently_used_free_number_first(site: Site) -> None:
    numbers = [(await site.session(f"{SITE}/?utm_source=google")).json()["number"] for _ in POOL]
    assert sorted(numbers) == sorted(POOL)
    site.clock.advance(minutes=31)  # all three leases ended; the first one ended first
    again = [(await site.session(f"{SITE}/?utm_source=google")).json()["number"] for _ in POOL]
    assert again == numbers
    with site.factory() as s:
        assert find_double_leases(s) == []


async def test_number_free_again_only_after_its_hold_time(site: Site) -> None:
    held = [(await site.session(f"{SITE}/?utm_source=google")).json() for _ in POOL]
    site.clock.advance(minutes=29)
    await site.heartbeat(held[0]["session"])
    site.clock.advance(minutes=2)  # held[1] and held[2] ended; held[0] was extended
    fresh = [(await site.session(f"{SITE}/?utm_source=google")).json()["number"] for _ in range(3)]
    assert sorted(fresh[:2]) == sorted([held[1]["number"], held[2]["number"]])
    assert fresh[2] == OVERFLOW


async def test_exhausted_pool_answers_overflow_and_counts(site: Site) -> None:
    answers = [(await site.session(f"{SITE}/?utm_source=google")).json() for _ in range(5)]
    assert [a["number"] for a in answers[3:]] == [OVERFLOW, OVERFLOW]
    assert answers[3]["expires_at"] is None and answers[3]["session"]
    pool = site.pool()
    assert (site.overflows(), pool.peak_leases) == (2, 3)
    # the overflowed visitor's heartbeat keeps the overflow number, and does not count again
    beat = await site.heartbeat(answers[3]["session"])
    assert beat.status_code == 200 and beat.json()["number"] == OVERFLOW
    assert site.overflows() == 2


async def test_overflowed_visitor_reloading_is_one_overflow_visit(site: Site) -> None:
    for _ in range(3):
        await site.session(f"{SITE}/?utm_source=google")
    first = (await site.session(f"{SITE}/?utm_source=google")).json()
    assert first["number"] == OVERFLOW and site.overflows() == 1
    again = (await site.session(f"{SITE}/?utm_source=google", visitor=first["visitor"])).json()  # a reload
    assert (again["number"], again["session"]) == (OVERFLOW, first["session"])
    assert site.overflows() == 1
    # once the others' numbers are free again, the visitor gets one, and nothing more is counted
    site.clock.advance(minutes=31)
    later = (await site.session(f"{SITE}/?utm_source=google", visitor=first["visitor"])).json()
    assert later["number"] in POOL
    assert site.overflows() == 1


async def test_released_pool_number_is_not_leased(site: Site) -> None:
    with site.factory.begin() as s:
        s.execute(
            TrackingNumber.__table__.update().where(TrackingNumber.number.in_(POOL[:2])).values(status="released")
        )
    numbers = [(await site.session(f"{SITE}/?utm_source=google")).json()["number"] for _ in range(2)]
    assert numbers == [POOL[2], OVERFLOW]


async def test_call_attributed_to_the_session_holding_the_number(site: Site, settings: Settings) -> None:
    answer = (await site.session(f"{SITE}/?utm_source=google&utm_campaign=spring")).json()
    other = (await site.session(f"{SITE}/?gclid=X")).json()
    grace = dt.timedelta(seconds=settings.tracking.attribution_grace_seconds)
    with site.factory() as s:
        number = s.scalars(select(TrackingNumber).where(TrackingNumber.number == answer["number"])).one()
        during = attribute(s, number, START + dt.timedelta(minutes=10), grace)
        assert during.session is not None and during.session.key == answer["session"]
        assert during.session.key != other["session"] and during.source_name == "Google Ads"
        assert during.session.utm_campaign == "spring"
        just_after = attribute(s, number, START + dt.timedelta(minutes=30, seconds=grace.seconds - 1), grace)
        assert just_after.session is not None and just_after.session.key == answer["session"]
        too_late = attribute(s, number, START + dt.timedelta(minutes=31) + grace, grace)
        assert too_late.session is None and too_late.source_name == "Google Ads"
        before = attribute(s, number, START - dt.timedelta(minutes=1), grace)
        assert before.session is None


# --- privacy -----------------------------------------------------------------------------------


@pytest.mark.parametrize("signal", [{"DNT": "1"}, {"Sec-GPC": "1"}, "body"])
async def test_do_not_track_answers_source_number_and_stores_nothing(site: Site, signal: Any) -> None:
    headers = {"Origin": SITE, **(signal if isinstance(signal, dict) else {})}
    extra = {"dnt": True} if signal == "body" else {}
    social = (await site.session(referrer="https://www.facebook.com/", headers=headers, **extra)).json()
    assert social == {
        "number": FACEBOOK_NUMBER,
        "display": "(404) 555-0121",
        "session": None,
        "visitor": None,
        "expires_at": None,
        "source": "Facebook",
        "swap": [],
    }
    ads = (await site.session(f"{SITE}/?utm_source=google", headers=headers, visitor="abcdefgh123", **extra)).json()
    assert (ads["number"], ads["session"], ads["visitor"]) == (OVERFLOW, None, None)
    assert site.count(VisitorSession) == 0 and site.count(PoolLease) == 0
    assert site.overflows() == 0


async def test_dnt_zero_is_not_a_signal(site: Site) -> None:
    answer = (await site.session(headers={"Origin": SITE, "DNT": "0"})).json()
    assert answer["session"] is not None


# --- what the script swaps ----------------------------------------------------------------------


async def test_answer_names_each_form_of_the_sites_business_numbers(site: Site) -> None:
    uk = "https://www.acme.co.uk"
    with site.factory.begin() as s:
        add_site(s, "Acme", uk, ["020 7946 0958", "+1 404 555 0100"], "GB")
    answer = (await site.session(url=f"{uk}/", headers={"Origin": uk})).json()
    assert answer["number"] == WEBSITE_NUMBER  # a North American tracking number on a UK site
    swaps = {s["from"]: (s["to"], s.get("text")) for s in answer["swap"]}
    assert swaps["02079460958"] == ("14045550141", "+1 404-555-0141")  # another country: written internationally
    assert swaps["4402079460958"] == ("14045550141", "+1 404-555-0141")
    assert swaps["4045550100"] == ("4045550141", None)  # same country: the same form, digits in place
    assert swaps["14045550100"] == ("14045550141", None)
    assert "unreadable" not in answer
    beat = await site.client.post(
        "/dni/v1/heartbeat", json={"account": site.key, "session": answer["session"]}, headers={"Origin": uk}
    )
    assert beat.json()["swap"] == answer["swap"]
    # the site without numbers of its own swaps nothing
    plain = (await site.session()).json()
    assert plain["number"] == WEBSITE_NUMBER and plain["swap"] == []


async def test_snippet_numbers_are_read_in_the_sites_region(site: Site) -> None:
    de = "https://www.acme.de"
    with site.factory.begin() as s:
        add_site(s, "Acme", de, [], "DE")
    answer = (
        await site.session(url=f"{de}/", headers={"Origin": de}, replace=["030 901820", "+49 30 901820", "555-CALL"])
    ).json()
    finds = [s["from"] for s in answer["swap"]]
    assert finds == ["004930901820", "49030901820", "4930901820", "030901820"]  # longest first, once each
    assert answer["unreadable"] == ["555-CALL"]
    # on the US site the same national digits are no number: nothing to swap, and the script is told so
    us = (await site.session(replace=["030 901820"])).json()
    assert us["swap"] == [] and us["unreadable"] == ["030 901820"]
    # +49 30 901820 is never read as the North American 493-090-1820
    assert all(not s["from"].startswith("4930901820") or s["to"].startswith("1") for s in us["swap"])


@pytest.mark.parametrize(
    ("replace", "words"),
    [
        ("+14045550100", "must be a list"),
        ([14045550100], "must be a list"),
        (["+14045550100"] * 11, "at most 10"),
        (["1" * 41], "not a phone number"),
        (["404\n555"], "not a phone number"),
    ],
)
async def test_bad_replace_field_is_refused(site: Site, replace: Any, words: str) -> None:
    response = await site.session(replace=replace)
    assert response.status_code == 400 and response.json()["field"] == "replace"
    assert words in response.json()["error"]
    assert site.count(VisitorSession) == 0


# --- CORS, proxies, rate limit -------------------------------------------------------------------


async def test_other_origin_refused_without_cors_header(site: Site) -> None:
    response = await site.session(headers={"Origin": "https://evil.example"})
    assert response.status_code == 403 and response.json()["field"] == "origin"
    assert "access-control-allow-origin" not in response.headers
    missing = await site.session(headers={})
    assert missing.status_code == 403 and missing.json()["field"] == "origin"
    assert site.count(VisitorSession) == 0


async def test_debug_mode_may_read_why_it_was_refused(site: Site) -> None:
    """dni.js's debug mode (?debug=1) reads refusals; without it they stay unreadable to the page."""
    evil = {"Origin": "https://evil.example"}
    body = {"account": site.key, "url": "https://evil.example/"}
    refused = await site.client.post("/dni/v1/session?debug=1", json=body, headers=evil)
    assert refused.status_code == 403 and refused.headers["access-control-allow-origin"] == "https://evil.example"
    assert "not a site of this account" in refused.json()["error"]
    assert set(refused.json()) == {"error", "field"}  # a reason, no session, number or visitor
    unknown = await site.client.post("/dni/v1/session?debug=1", json={**body, "account": "nosuchkey"}, headers=evil)
    assert unknown.status_code == 404 and unknown.headers["access-control-allow-origin"] == "https://evil.example"
    plain = await site.client.post("/dni/v1/session", json=body, headers=evil)
    assert plain.status_code == 403 and "access-control-allow-origin" not in plain.headers
    beat = await site.client.post(
        "/dni/v1/heartbeat?debug=1", json={"account": site.key, "session": "nosuchsession"}, headers=evil
    )
    assert beat.status_code == 403 and beat.headers["access-control-allow-origin"] == "https://evil.example"
    assert site.count(VisitorSession) == 0


async def test_preflight_only_for_known_sites(site: Site) -> None:
    ok = await site.client.options("/dni/v1/session", headers={"Origin": SITE, "Access-Control-Request-Method": "POST"})
    assert ok.status_code == 204 and ok.headers["access-control-allow-origin"] == SITE
    assert "POST" in ok.headers["access-control-allow-methods"]
    bad = await site.client.options(
        "/dni/v1/session", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert bad.status_code == 403 and "access-control-allow-origin" not in bad.headers


async def test_rate_limit_per_client(engine: Engine, settings: Settings) -> None:
    async for site in _make_site(engine, settings, WebSettings(rate_limit_per_minute=3))():
        codes = [(await site.session()).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = await site.session()
        assert int(limited.headers["retry-after"]) >= 1
        assert site.count(VisitorSession) == 3


async def test_forwarded_for_only_from_trusted_proxy(engine: Engine, settings: Settings) -> None:
    web = WebSettings(trusted_proxies=("10.0.0.0/8",), rate_limit_per_minute=2, truncate_ip=False)
    async for site in _make_site(engine, settings, web, peer="10.1.2.3")():
        for client in ("203.0.113.9", "203.0.113.9", "192.0.2.44"):
            headers = {"Origin": SITE, "X-Forwarded-For": f"{client}, 10.9.9.9"}
            assert (await site.session(headers=headers)).status_code == 200
        third = await site.session(headers={"Origin": SITE, "X-Forwarded-For": "203.0.113.9"})
        assert third.status_code == 429  # limited per visitor, not per proxy
        with site.factory() as s:
            ips = list(s.scalars(select(VisitorSession.ip).order_by(VisitorSession.id)))
        assert ips == ["203.0.113.9", "203.0.113.9", "192.0.2.44"]


async def test_forwarded_for_ignored_from_anyone_else(engine: Engine, settings: Settings) -> None:
    async for site in _make_site(engine, settings, WebSettings(truncate_ip=False), peer="198.51.100.7")():
        await site.session(headers={"Origin": SITE, "X-Forwarded-For": "203.0.113.9"})
        with site.factory() as s:
            assert s.scalars(select(VisitorSession.ip)).one() == "198.51.100.7"


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        ({"visitor": None, "url": f"{SITE}/"}, 400, "account", "account is required"),
        ({"account": 5, "url": f"{SITE}/"}, 400, "account", "must be a string"),
        ({"account": "no such key!", "url": f"{SITE}/"}, 400, "account", "data-account"),
        ({"account": "unknownkey", "url": f"{SITE}/"}, 404, "account", "unknown account"),
        ({"account": "KEY", "url": f"{SITE}/", "visitor": "short"}, 400, "visitor", "visitor"),
        ({"account": "KEY", "url": f"{SITE}/", "visitor": 12345678}, 400, "visitor", "must be a string"),
        ({"account": "KEY"}, 400, "url", "url is required"),
        ({"account": "KEY", "url": "/relative"}, 400, "url", "absolute http(s) URL"),
        ({"account": "KEY", "url": "javascript:alert(1)"}, 400, "url", "absolute http(s) URL"),
        ({"account": "KEY", "url": f"{SITE}/" + "a" * 5000}, 400, "url", "too long"),
        ({"account": "KEY", "url": f"{SITE}/\n"}, 400, "url", "control characters"),
        ({"account": "KEY", "url": f"{SITE}/", "referrer": "not a url"}, 400, "referrer", "absolute URL"),
        ({"account": "KEY", "url": f"{SITE}/", "referrer": ["x"]}, 400, "referrer", "must be a string"),
        ({"account": "KEY", "url": f"{SITE}/", "dnt": "yes"}, 400, "dnt", "true or false"),
        ({"account": "KEY", "url": f"{SITE}/", "extra": 1}, 400, "extra", "unknown field"),
    ],
)
async def test_session_errors_name_the_field(
    site: Site, body: dict[str, Any], status: int, field: str, words: str
) -> None:
    if body.get("account") == "KEY":
        body["account"] = site.key
    response = await site.client.post("/dni/v1/session", json=body, headers={"Origin": SITE})
    assert response.status_code == status, response.text
    assert response.json()["field"] == field and words in response.json()["error"]
    assert site.count(VisitorSession) == 0


@pytest.mark.parametrize(
    ("content", "ctype", "status", "words"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"[1, 2]", "application/json", 400, "JSON object"),
        (b"\xff\xfe", "text/plain", 400, "not valid JSON"),
        (b"{}", "application/x-www-form-urlencoded", 415, "application/json"),
        (b'{"account": "' + b"a" * 20000 + b'"}', "application/json", 413, "too large"),
    ],
)
async def test_malformed_bodies(site: Site, content: bytes, ctype: str, status: int, words: str) -> None:
    response = await site.client.post(
        "/dni/v1/session", content=content, headers={"Origin": SITE, "Content-Type": ctype}
    )
    assert response.status_code == status and words in response.json()["error"]


async def test_text_plain_body_is_accepted(site: Site) -> None:
    """dni.js sends text/plain so browsers skip the CORS preflight."""
    response = await site.client.post(
        "/dni/v1/session",
        content=f'{{"account": "{site.key}", "url": "{SITE}/"}}',
        headers={"Origin": SITE, "Content-Type": "text/plain;charset=UTF-8"},
    )
    assert response.status_code == 200 and response.json()["number"] == WEBSITE_NUMBER


async def test_heartbeat_errors(site: Site) -> None:
    post = site.client.post
    unknown = await post(
        "/dni/v1/heartbeat", json={"account": site.key, "session": "nosuchsession"}, headers={"Origin": SITE}
    )
    assert unknown.status_code == 410 and unknown.json()["field"] == "session"
    missing = await post("/dni/v1/heartbeat", json={"account": site.key}, headers={"Origin": SITE})
    assert missing.status_code == 400 and missing.json()["field"] == "session"
    bad = await post("/dni/v1/heartbeat", json={"account": site.key, "session": "a b"}, headers={"Origin": SITE})
    assert bad.status_code == 400 and bad.json()["field"] == "session"
    answer = (await site.session()).json()
    foreign = await post(
        "/dni/v1/heartbeat",
        json={"account": site.key, "session": answer["session"]},
        headers={"Origin": "https://x.example"},
    )
    assert foreign.status_code == 403
    wrong_method = await site.client.get("/dni/v1/session")
    assert wrong_method.status_code == 405


async def test_database_away_answers_503(settings: Settings) -> None:
    from schema.db import make_engine

    engine = make_engine("postgresql://postgres@127.0.0.1:1/none", connect_timeout=1)
    app = create_app(settings, engine, cache_seconds=0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dni.test") as client:
        response = await client.post(
            "/dni/v1/session", json={"account": "somekey", "url": f"{SITE}/"}, headers={"Origin": SITE}
        )
    assert response.status_code == 503 and response.json()["error"] == "temporarily unavailable"
    engine.dispose()


async def test_a_database_that_cannot_be_written_answers_503_not_500(
    engine: Engine, settings: Settings, database_url: str
) -> None:
    """A write the database itself refuses mid-transaction (on SQLite the DNI statements go to the
    driver, below SQLAlchemy) is 'temporarily unavailable', as a database that is away is."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the driver-level statements are SQLite's")
    async for site in _make_site(engine, settings)():
        # a trigger whose table is gone: every new session's insert fails with an OperationalError
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE doomed (x INTEGER)")
            conn.exec_driver_sql(
                "CREATE TRIGGER no_writes BEFORE INSERT ON visitor_sessions BEGIN INSERT INTO doomed VALUES (1); END"
            )
            conn.exec_driver_sql("DROP TABLE doomed")
        response = await site.session(f"{SITE}/?utm_source=google")
        assert response.status_code == 503, response.text
        assert response.json() == {"error": "temporarily unavailable", "field": None}
        with site.factory() as s:
            assert s.scalar(select(func.count()).select_from(VisitorSession)) == 0


# --- the script ----------------------------------------------------------------------------------


async def test_script_is_small_and_configured(engine: Engine, settings: Settings) -> None:
    async for site in _make_site(engine, settings, WebSettings(heartbeat_seconds=17, cookie_days=30))():
        plain = await site.client.get("/dni.js", headers={"Accept-Encoding": "identity"})
        assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/javascript")
        assert '"heartbeat":17' in plain.text and '"cookieDays":30' in plain.text
        raw = await site.client.get("/dni.js", headers={"Accept-Encoding": "gzip"}, extensions={})
        assert raw.headers["content-encoding"] == "gzip"
        assert len(gzip.compress(plain.content)) < 5 * 1024
        cached = await site.client.get("/dni.js", headers={"If-None-Match": plain.headers["etag"]})
        assert cached.status_code == 304
