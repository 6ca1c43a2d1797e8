"""Dashboard sign-in over HTTP, on SQLite and PostgreSQL: cookies, CSRF, rate limits, timeouts, passwords."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import Engine, select

from config import DashboardSettings, Settings, WebSettings
from schema.models import AuditEntry, User, WebSession
from tests.integration.dashboard_helpers import PASSWORD, Board, csrf_of, make_board
from tracking.accounts import add_account
from web.dashboard.security import CSP


@pytest.fixture
async def board(engine: Engine, settings: Settings) -> AsyncIterator[Board]:
    async for b in make_board(engine, settings)():
        with b.factory.begin() as s:
            add_account(s, "Acme", "America/New_York")
            add_account(s, "Globex", "Europe/London")
        b.user("root", "admin")
        b.user("ann", "manager", ("Acme",))
        b.user("mia", "member", ("Acme",))
        yield b


def _cookie_header(response: httpx.Response, name: str) -> str:
    for value in response.headers.get_list("set-cookie"):
        if value.startswith(name + "="):
            return value
    raise AssertionError(f"no {name} cookie set: {response.headers.get_list('set-cookie')}")


async def test_sign_in_sets_an_httponly_lax_session_cookie_and_shows_the_accounts(board: Board) -> None:
    async with board.client() as client:
        response = await board.signin(client, "ann")
        assert response.status_code == 303 and response.headers["location"] == "/dashboard/"
        cookie = _cookie_header(response, "ct_session").lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/dashboard" in cookie
        assert "secure" not in cookie  # plain HTTP: a Secure cookie would never come back
        home = await client.get("/dashboard/")
        assert home.status_code == 200
        assert "Acme" in home.text and "Globex" not in home.text
        me = (await client.get("/dashboard/me.json")).json()
        assert me["username"] == "ann" and me["role"] == "manager" and [a["name"] for a in me["accounts"]] == ["Acme"]


async def test_admin_sees_every_account(board: Board) -> None:
    async with board.signed_in("root") as client:
        me = (await client.get("/dashboard/me.json")).json()
        assert [a["name"] for a in me["accounts"]] == ["Acme", "Globex"]


async def test_cookie_is_secure_over_https(board: Board) -> None:
    board.base_url = "https://ct.test"
    async with board.client() as client:
        cookie = _cookie_header(await board.signin(client, "ann"), "ct_session").lower()
        assert "secure" in cookie


async def test_cookie_is_secure_behind_a_trusted_proxy_saying_https_only(engine: Engine, settings: Settings) -> None:
    s = settings.replace(web=WebSettings(trusted_proxies=("10.0.0.0/8",)))
    async for board in make_board(engine, s)():
        board.user("ann", "admin")
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
        for peer, secure in (("10.0.0.2", True), ("198.51.100.7", False)):  # anyone can write the header
            async with board.client(peer) as client:
                page = await client.get("/dashboard/signin", headers=headers)
                pre = _cookie_header(page, "ct_pre")
                assert ("secure" in pre.lower()) is secure
                form = {"csrf": csrf_of(page.text), "username": "ann", "password": PASSWORD}
                # the browser talks HTTPS to the proxy, so it sends the Secure cookie back
                cookie = {"Cookie": pre.split(";", 1)[0], **headers}
                client.cookies.clear()
                response = await client.post("/dashboard/signin", data=form, headers=cookie)
                assert ("secure" in _cookie_header(response, "ct_session").lower()) is secure


async def test_wrong_password_and_unknown_user_look_the_same(board: Board) -> None:
    async with board.client() as client:
        wrong = await board.signin(client, "ann", "not the password")
        unknown = await board.signin(client, "nobody", "not the password")
        assert wrong.status_code == unknown.status_code == 401
        assert "Wrong username or password." in wrong.text and "Wrong username or password." in unknown.text
        assert "ct_session" not in client.cookies
        assert (await client.get("/dashboard/me.json")).status_code == 401


async def test_pages_need_a_session(board: Board) -> None:
    async with board.client() as client:
        page = await client.get("/dashboard/?x=1")
        assert page.status_code == 303
        assert page.headers["location"] == "/dashboard/signin?next=%2Fdashboard%2F%3Fx%3D1"
        assert (await client.get("/dashboard/me.json")).status_code == 401
        client.cookies.set("ct_session", "forged-token", path="/dashboard")
        assert (await client.get("/dashboard/me.json")).status_code == 401


async def test_sign_in_goes_back_to_the_page_asked_for_but_never_to_another_site(board: Board) -> None:
    async with board.client() as client:
        response = await board.signin(client, "ann", next="/dashboard/calls?account=1")
        assert response.headers["location"] == "/dashboard/calls?account=1"
    for evil in ("https://evil.test/", "//evil.test/x", "/dashboard/../..//evil.test", "/\\evil.test", "/other"):
        async with board.client() as client:
            response = await board.signin(client, "ann", next=evil)
            assert response.status_code == 303
            location = response.headers["location"]
            assert location.startswith("/dashboard/") and "evil" not in location.split("/dashboard/", 1)[0], location
            assert not location.startswith("//")


async def test_sign_in_without_its_csrf_token_is_refused(board: Board) -> None:
    async with board.client() as client:
        await client.get("/dashboard/signin")  # sets the form's cookie
        refused = await client.post("/dashboard/signin", data={"username": "ann", "password": PASSWORD})
        assert refused.status_code == 403
        forged = await client.post("/dashboard/signin", data={"csrf": "guess", "username": "ann", "password": PASSWORD})
        assert forged.status_code == 403
        assert "ct_session" not in client.cookies


async def test_sign_in_posted_from_another_site_is_refused(board: Board) -> None:
    async with board.client() as client:
        page = await client.get("/dashboard/signin")
        form = {"csrf": csrf_of(page.text), "username": "ann", "password": PASSWORD}
        refused = await client.post("/dashboard/signin", data=form, headers={"Origin": "https://evil.test"})
        assert refused.status_code == 403
        same_site = await client.post("/dashboard/signin", data=form, headers={"Origin": "http://ct.test"})
        assert same_site.status_code == 303


async def test_sign_out_needs_the_csrf_token_and_ends_the_session_for_good(board: Board) -> None:
    async with board.signed_in("mia") as client:
        token = client.cookies.get("ct_session")
        refused = await client.post("/dashboard/signout", data={})
        assert refused.status_code == 403
        assert (await client.get("/dashboard/me.json")).status_code == 200  # still signed in
        wrong = await client.post("/dashboard/signout", data={"csrf": "x" * 43})
        assert wrong.status_code == 403
        page = await client.get("/dashboard/")
        done = await client.post("/dashboard/signout", data={"csrf": csrf_of(page.text)})
        assert done.status_code == 303 and done.headers["location"] == "/dashboard/signin"
    async with board.client() as replay:  # the old cookie, replayed: the server forgot it
        replay.cookies.set("ct_session", str(token), path="/dashboard")
        assert (await replay.get("/dashboard/me.json")).status_code == 401


async def test_failed_sign_ins_are_limited_per_user(board: Board) -> None:
    limit = DashboardSettings().signin_attempts_per_user
    async with board.client("198.51.100.7") as client:
        for _ in range(limit):
            assert (await board.signin(client, "ann", "guess guess guess")).status_code == 401
    async with board.client("203.0.113.50") as other:  # another address, the right password: still refused
        refused = await board.signin(other, "ann")
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert "Too many failed sign-ins" in refused.text and "ct_session" not in other.cookies
        assert (await board.signin(other, "mia")).status_code == 303  # other users are not locked out
        board.clock.advance(minutes=15)
        assert (await board.signin(other, "ann")).status_code == 303


async def test_failed_sign_ins_are_limited_per_address(engine: Engine, settings: Settings) -> None:
    s = dataclasses.replace(settings, dashboard=DashboardSettings(signin_attempts_per_address=4))
    async for board in make_board(engine, s)():
        board.user("ann", "admin")
        async with board.client("198.51.100.7") as client:
            for n in range(4):
                assert (await board.signin(client, f"guess{n}", "guess guess guess")).status_code == 401
            assert (await board.signin(client, "ann")).status_code == 429
        async with board.client("203.0.113.50") as other:
            assert (await board.signin(other, "ann")).status_code == 303


async def test_idle_timeout_ends_the_session(board: Board) -> None:
    async with board.signed_in("mia") as client:
        for _ in range(4):  # active: each request keeps it alive
            board.clock.advance(minutes=20)
            assert (await client.get("/dashboard/me.json")).status_code == 200
        board.clock.advance(minutes=30)
        assert (await client.get("/dashboard/me.json")).status_code == 401
        assert (await client.get("/dashboard/")).status_code == 303


async def test_absolute_timeout_ends_even_a_busy_session(board: Board) -> None:
    async with board.signed_in("mia") as client:
        for _ in range(11 * 3):
            board.clock.advance(minutes=20)
            assert (await client.get("/dashboard/me.json")).status_code == 200
        board.clock.advance(minutes=61)  # 12 h 1 min after sign-in
        assert (await client.get("/dashboard/me.json")).status_code == 401


async def test_the_absolute_timeout_ends_the_session_on_the_hour(board: Board) -> None:
    async with board.signed_in("mia") as client:
        for _ in range(12 * 3 - 1):  # busy until 11 h 40 min after sign-in
            board.clock.advance(minutes=20)
            assert (await client.get("/dashboard/me.json")).status_code == 200
        board.clock.advance(minutes=20)  # 12 h exactly: absolute_hours is the session's whole life
        assert (await client.get("/dashboard/me.json")).status_code == 401


async def test_a_member_granted_no_account_sees_none(board: Board) -> None:
    """A member without grants (all revoked, or none yet) sees no account, not the first one there is."""
    board.user("newcomer", "member", ())
    async with board.signed_in("newcomer") as client:
        assert (await client.get("/dashboard/me.json")).json()["accounts"] == []
        home = await client.get("/dashboard/")
        assert home.status_code == 200 and "Acme" not in home.text and "Globex" not in home.text
        calls = await client.get("/dashboard/calls.json")
        assert calls.status_code in (200, 403) and "Acme" not in calls.text


async def test_scripts_may_send_the_csrf_token_in_a_header(board: Board) -> None:
    """X-CSRF-Token, for scripts posting without a form: the token checked whenever it is sent."""
    async with board.signed_in("mia") as client:
        token = await board.csrf(client)
        wrong = await client.post("/dashboard/signout", headers={"X-CSRF-Token": token[::-1]}, data={"csrf": token})
        assert wrong.status_code == 403
        assert (await client.get("/dashboard/me.json")).status_code == 200
        done = await client.post("/dashboard/signout", headers={"X-CSRF-Token": token})
        assert done.status_code == 303
        assert (await client.get("/dashboard/me.json")).status_code == 401


async def test_disabled_user_is_signed_out_and_cannot_sign_in(board: Board, cli: object) -> None:
    from tracking.users import set_disabled

    async with board.signed_in("mia") as client:
        with board.factory.begin() as s:
            set_disabled(s, "mia", True)
        assert (await client.get("/dashboard/me.json")).status_code == 401
        assert (await board.signin(client, "mia")).status_code == 401


async def test_password_change(board: Board) -> None:
    async with board.signed_in("mia") as other_device, board.signed_in("mia") as client:
        form = await client.get("/dashboard/password")
        csrf = csrf_of(form.text)
        wrong = await client.post(
            "/dashboard/password",
            data={"csrf": csrf, "current": "nope", "new": "a new long one", "confirm": "a new long one"},
        )
        assert wrong.status_code == 400 and "current password is wrong" in wrong.text
        short = await client.post(
            "/dashboard/password", data={"csrf": csrf, "current": PASSWORD, "new": "short", "confirm": "short"}
        )
        assert short.status_code == 400 and "too short" in short.text
        no_csrf = await client.post(
            "/dashboard/password", data={"current": PASSWORD, "new": "a new long one", "confirm": "a new long one"}
        )
        assert no_csrf.status_code == 403
        done = await client.post(
            "/dashboard/password",
            data={"csrf": csrf, "current": PASSWORD, "new": "a new long one", "confirm": "a new long one"},
        )
        assert done.status_code == 200 and "was changed" in done.text
        assert (await client.get("/dashboard/me.json")).status_code == 200  # this browser stays signed in
        assert (await other_device.get("/dashboard/me.json")).status_code == 401  # the others do not
    async with board.client() as fresh:
        assert (await board.signin(fresh, "mia")).status_code == 401
        assert (await board.signin(fresh, "mia", "a new long one")).status_code == 303


async def test_security_headers_on_every_page(board: Board) -> None:
    async with board.signed_in("ann") as client:
        for path in (
            "/dashboard/signin",
            "/dashboard/",
            "/dashboard/me.json",
            "/dashboard/password",
            "/dashboard/nope",
        ):
            response = await client.get(path)
            assert response.headers["content-security-policy"] == CSP, path
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "same-origin"
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "frame-ancestors 'none'" in CSP


async def test_passwords_and_session_tokens_never_reach_the_logs(
    board: Board, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with board.client() as client:
        await board.signin(client, "ann", "a wrong secret phrase")
        response = await board.signin(client, "ann")
        token = client.cookies.get("ct_session")
        assert response.status_code == 303 and token
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "failed sign-in for 'ann'" in text
    for secret in (PASSWORD, "a wrong secret phrase", token):
        assert secret not in text
    with board.factory() as s:
        stored = s.scalars(select(User.password_hash)).all()
        assert all(h.startswith("$argon2id$") for h in stored)
        assert token not in s.scalars(select(WebSession.token_hash)).all()  # only its hash is kept
        actions = s.scalars(select(AuditEntry.action)).all()
        assert "dashboard.signin" in actions and "dashboard.signin-failed" in actions
