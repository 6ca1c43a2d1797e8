"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright.

An agency manager signs in, sees only their account, reads the overview's charts, filters
calls, opens one (a caller named ``<img src=x onerror=alert(1)>`` shows as text and runs
nothing), plays and seeks its recording, qualifies it, reads the source report with its chart
and downloads a CSV, watches a call arrive on the Live page while the AMI listener is fed the
recorded ``answered`` call by the fake AMI server, and signs out: one test, one session.  A member of another account
is refused that call, its recording, its exports and its live calls by URL; a form posted without its CSRF token
is refused.  A screenshot of each main page is saved in ``$CALLTRACK_SCREENSHOTS`` (default
``artifacts/screenshots``).
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from config import DatabaseSettings, GeneralSettings, Settings
from schema import migrate
from schema.db import make_engine
from schema.models import AuditEntry, Call, CallQualification
from tests.browser.test_dni_browser import CHROMIUM, FLAGS
from tests.fakes.ami_server import FakeAmiServer, Plan, call_frames, load_capture, with_timestamps
from tests.fixtures import ASTERISK
from tests.integration.ami_harness import Harness
from tests.integration.dashboard_helpers import PASSWORD, XSS_NAME, Seeded, make_audio, seed
from tracking.users import add_user
from web.app import create_app
from web.service import uvicorn_config

pytestmark = pytest.mark.browser

WAIT_MS = 15_000
LINKEDID = "1795915078.0"
SHOTS = Path(os.environ.get("CALLTRACK_SCREENSHOTS", Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"))


@dataclass
class World:
    base: str
    data: Seeded
    settings: Settings
    factory: sessionmaker[Session]
    url: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("dashboard-browser")
    url = f"sqlite:///{tmp / 'calltrack.sqlite3'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    settings = Settings(general=GeneralSettings(data_dir=tmp), database=DatabaseSettings(url=url))
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    audio = tmp / "tone.mp3"
    make_audio(audio, 6.0)
    data = seed(factory, settings, audio)
    with factory.begin() as s:
        # the seeded calls happened "now" (the browser's clock is the real one)
        shift = dt.datetime.now(dt.UTC) - dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC)
        for call in s.scalars(select(Call)):
            for col in ("started_at", "answered_at", "ended_at"):
                if getattr(call, col) is not None:
                    setattr(call, col, getattr(call, col) + shift)
        add_user(s, "ann", "manager", PASSWORD, ("Acme",))
        add_user(s, "gus", "member", PASSWORD, ("Globex",))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn_config(create_app(settings, engine), "127.0.0.1:0", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield World(base, data, settings, factory, url)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
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
def page(browser: Any, world: World) -> Iterator[Any]:
    ctx = browser.new_context(base_url=world.base, accept_downloads=True, viewport={"width": 1280, "height": 900})
    p = ctx.new_page()
    p.dialogs = []
    p.errors = []
    p.on("dialog", lambda d: (p.dialogs.append(d.message), d.dismiss()))
    p.on("pageerror", lambda e: p.errors.append(str(e)))
    p.on("console", lambda m: p.errors.append(m.text) if m.type == "error" else None)
    yield p
    ctx.close()


def sign_in(page: Any, username: str) -> None:
    page.goto("/dashboard/signin")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/", timeout=WAIT_MS)


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def chart_points(page: Any, selector: str) -> int:
    page.wait_for_selector(f"{selector}[data-drawn=yes] canvas", timeout=WAIT_MS)
    return int(page.get_attribute(selector, "data-points"))


def test_agency_manager_journey(page: Any, world: World, tmp_path: Path) -> None:
    sign_in(page, "ann")
    assert "Acme" in page.inner_text("main") and "Globex" not in page.inner_text("main")

    page.goto("/dashboard/overview?range=30d")
    # 30 days x 2 sources (Google Ads, Facebook) stacked; 5 outcomes
    assert chart_points(page, "#chart-daily") == 30 * 2
    assert chart_points(page, "#chart-outcomes") == 5
    assert page.inner_text("#card-calls") == "2"
    print(f"uPlot drew the daily chart in {page.get_attribute('#chart-daily', 'data-ms')} ms")  # a figure, not a test
    shot(page, "overview")

    page.goto("/dashboard/calls")
    assert page.locator("#calls tbody tr.call").count() == 2
    assert "Globex" not in page.inner_text("#calls")  # only the manager's account
    page.select_option("select[name=disposition]", "answered")
    page.click("#call-filters button[type=submit]")
    page.wait_for_url("**disposition=answered**", timeout=WAIT_MS)
    rows = page.locator("#calls tbody tr.call")
    assert rows.count() == 1
    assert rows.locator(".caller-name").inner_text() == XSS_NAME  # shown as text
    shot(page, "calls")

    rows.locator("a").first.click()
    page.wait_for_url(f"**/dashboard/calls/{world.data.calls['answered']}", timeout=WAIT_MS)
    assert page.inner_text("#caller-name") == XSS_NAME
    assert page.locator("img").count() == 0  # the name made no element
    # the recording plays: the audio element learns its duration and seeks (range requests)
    page.wait_for_function("() => document.getElementById('player').duration > 5", timeout=WAIT_MS)
    duration = page.evaluate("document.getElementById('player').duration")
    assert 5.5 < duration < 6.5
    page.evaluate(
        """() => new Promise((resolve) => {
            const a = document.getElementById('player');
            a.addEventListener('seeked', () => resolve(), {once: true});
            a.currentTime = 3;
        })"""
    )
    assert abs(page.evaluate("document.getElementById('player').currentTime") - 3) < 0.5
    shot(page, "call-detail")

    page.check("#qualify input[name=lead][value=yes]")
    page.fill("#qualify input[name=value]", "120")
    page.fill("#qualify input[name=tags]", "quote, boiler")
    page.fill("#qualify textarea[name=note]", "Call back Tuesday")
    page.click("#qualify button[type=submit]")
    page.wait_for_selector("text=Saved.", timeout=WAIT_MS)
    with world.factory() as s:
        q = s.get(CallQualification, world.data.calls["answered"])
        assert q is not None and (q.lead, q.value, q.tags, q.updated_by) == (True, 120.0, "quote,boiler", "ann")
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.actor == "ann")).all()
        assert "recording.play" in actions and "call.qualify" in actions

    page.goto("/dashboard/reports?range=30d")
    assert chart_points(page, "#chart-sources") == 2 * 2  # two sources, calls and answered
    google = page.locator("#report-source tbody tr", has_text="Google Ads")
    assert google.locator("td").nth(1).inner_text() == "1"
    shot(page, "reports")
    with page.expect_download(timeout=WAIT_MS) as download:
        page.locator("#report-source ~ p a.csv, a.csv").first.click()
    path = tmp_path / "source.csv"
    download.value.save_as(path)
    rows_csv = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    by_source = {r["source"]: r for r in rows_csv}
    assert set(by_source) == {"Google Ads", "Facebook"}
    assert (by_source["Google Ads"]["calls"], by_source["Google Ads"]["qualified_leads"]) == ("1", "1")
    assert by_source["Google Ads"]["lead_value"] == "120.0"

    watch_a_call_arrive_live(page, world)

    page.click("#signout")
    page.wait_for_url("**/dashboard/signin", timeout=WAIT_MS)
    page.goto("/dashboard/calls")
    assert "/dashboard/signin" in page.url
    assert page.dialogs == [] and not [e for e in page.errors if "404" not in e]


def _feed_listener(world: World, release: list[threading.Event], done: threading.Event) -> None:
    """The AMI listener, fed the recorded answered call by the fake AMI server (re-timed to now)."""
    recorded = load_capture("answered", ASTERISK)
    frames = call_frames(recorded)
    stream = with_timestamps(frames, time.time() - frames[0].at)
    ringing = next(i for i, f in enumerate(stream) if b"Event: DialBegin" in f.data) + 1
    talking = next(i for i, f in enumerate(stream) if f.data.startswith(b"Event: BridgeEnter")) + 2

    async def run() -> None:
        gates = [asyncio.Event(), asyncio.Event()]
        loop = asyncio.get_running_loop()
        for threaded, gate in zip(release, gates, strict=True):
            threading.Thread(target=lambda t=threaded, g=gate: (t.wait(60), loop.call_soon_threadsafe(g.set))).start()
        secret = Path(world.settings.general.data_dir) / "ami.secret"
        secret.write_text("s3cret\n")
        async with (
            FakeAmiServer([Plan(frames=stream, gates=[(ringing, gates[0]), (talking, gates[1])])]) as fake,
            Harness(world.settings, world.url, fake, secret),
        ):
            await asyncio.to_thread(done.wait, 60)

    asyncio.run(run())


def watch_a_call_arrive_live(page: Any, world: World) -> None:
    """The Live page while the AMI listener is fed the recorded answered call: ringing, talking, gone."""
    page.goto("/dashboard/live")
    page.wait_for_selector("#live-body tr.empty", timeout=WAIT_MS)
    with world.factory.begin() as s:  # the AGI route's row: the call is Acme's (the listener completes it)
        s.add(
            Call(
                system="pbx1",
                linkedid=LINKEDID,
                account_id=world.data.acme,
                source_id=world.data.google,
                tracking_number="+14045550100",
                caller_number="+14045551234",
                started_at=dt.datetime.now(dt.UTC),
                route_status="ok",
            )
        )
    release = [threading.Event(), threading.Event()]
    done = threading.Event()
    feeder = threading.Thread(target=_feed_listener, args=(world, release, done))
    feeder.start()
    try:
        row = page.locator("#live-body tr[data-call]")
        row.wait_for(timeout=WAIT_MS)
        assert "ringing" in row.inner_text() and "Globex" not in page.inner_text("#live")
        shot(page, "live")
        release[0].set()
        page.wait_for_function(
            "() => (document.querySelector('#live-body tr[data-call]') || {}).textContent?.includes('talking')",
            timeout=WAIT_MS,
        )
        assert "Local/100@agents" in row.inner_text()  # who answered, from the listener
        release[1].set()
        page.wait_for_selector("#live-body tr.empty", timeout=WAIT_MS)  # the call ended
    finally:
        for event in release:
            event.set()
        done.set()
        feeder.join(60)


def test_member_of_another_account_is_refused_and_forms_need_their_token(page: Any, world: World) -> None:
    sign_in(page, "gus")
    call = world.data.calls["answered"]
    response = page.goto(f"/dashboard/calls/{call}")
    assert response.status == 404 and XSS_NAME not in page.content()
    for url in (
        f"/dashboard/calls/{call}.json",
        f"/dashboard/recordings/{world.data.recordings['answered']}",
        f"/dashboard/calls.csv?account={world.data.acme}",
        f"/dashboard/reports.csv?account={world.data.acme}&table=source",
    ):
        assert page.request.get(url).status == 404, url
    # live events: asking for Acme's live calls by URL shows none (Acme has one ringing)
    with world.factory.begin() as s:
        s.add(Call(system="pbx1", linkedid="acme-live", account_id=world.data.acme, caller_name="Acme live caller",
                   started_at=dt.datetime.now(dt.UTC)))  # fmt: skip
    try:
        assert page.request.get(f"/dashboard/live.json?account={world.data.acme}").json() == {"calls": []}
        page.goto(f"/dashboard/live?account={world.data.acme}")
        # the stream's first event came (the page drew it), with nothing of Acme's
        page.wait_for_function("() => document.getElementById('live-status').textContent.startsWith('Updated')",
                               timeout=WAIT_MS)  # fmt: skip
        assert "Acme live caller" not in page.inner_text("#live")
    finally:
        with world.factory.begin() as s:
            s.execute(delete(Call).where(Call.linkedid == "acme-live"))
    page.goto("/dashboard/calls")
    assert page.locator("#calls tbody tr.call").count() == 1  # Globex's own call
    status = page.evaluate(
        """() => fetch('/dashboard/signout', {method: 'POST', body: new URLSearchParams({}),
                 headers: {'Content-Type': 'application/x-www-form-urlencoded'}}).then(r => r.status)"""
    )
    assert status == 403
    status = page.evaluate(
        f"""() => fetch('/dashboard/calls/{world.data.calls["globex"]}/qualify', {{method: 'POST',
                 body: new URLSearchParams({{lead: 'yes'}})}}).then(r => r.status)"""
    )
    assert status == 403
    page.goto("/dashboard/")
    assert "Sign out" in page.inner_text("header")  # still signed in: the forged posts did nothing


def test_pages_fit_a_phone_screen_and_work_with_the_keyboard(browser: Any, world: World) -> None:
    ctx = browser.new_context(base_url=world.base, viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = ctx.new_page()
        page.goto("/dashboard/signin")
        # keyboard only: the username field has focus, Tab moves to the password, Enter submits.
        # Chromium applies autofocus at a later rendering step than "load": on a busy machine the
        # first keys came before it and the sign-in failed, so wait for the focus (it must come).
        focused = "name => document.activeElement && document.activeElement.name === name"
        page.wait_for_function(focused, arg="username", timeout=WAIT_MS)
        page.keyboard.type("ann")
        page.keyboard.press("Tab")
        page.wait_for_function(focused, arg="password", timeout=WAIT_MS)
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_url("**/dashboard/", timeout=WAIT_MS)
        for path in ("/dashboard/overview", "/dashboard/calls", f"/dashboard/calls/{world.data.calls['answered']}",
                     "/dashboard/reports", "/dashboard/live"):  # fmt: skip
            page.goto(path)
            page.wait_for_load_state("load")
            wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert wide <= 1, f"{path} is {wide}px wider than a phone screen"
        page.goto("/dashboard/calls")
        shot(page, "calls-phone")
    finally:
        ctx.close()
