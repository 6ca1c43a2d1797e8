"""A dashboard under test: the real web app over ASGI, a test clock, users made through tracking.users."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from schema.models import Call, CallEvent, Recording, User, UserAccount, VisitorSession
from tracking.accounts import add_account, add_source, get_account
from tracking.numbers import NumberFields, add_number
from tracking.users import add_user, hash_password
from web.app import create_app

START = dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC)
PASSWORD = "correct horse battery"
_HIDDEN = re.compile(r'name="csrf" value="([^"]+)"')


@functools.cache
def _password_hash() -> str:
    return hash_password(PASSWORD)


class Clock:
    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)


def csrf_of(html: str) -> str:
    found = _HIDDEN.search(html)
    assert found, "no csrf field in the page"
    return found.group(1)


@dataclass
class Board:
    app: Any
    clock: Clock
    factory: sessionmaker[Session]
    base_url: str = "http://ct.test"

    def client(self, peer: str = "198.51.100.7") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(peer, 40000))
        return httpx.AsyncClient(transport=transport, base_url=self.base_url)

    def user(
        self, username: str, role: str = "member", accounts: tuple[str, ...] = (), password: str = PASSWORD
    ) -> None:
        """A user (the test password's Argon2id hash is made once per run: hashing costs 64 MiB and time)."""
        with self.factory.begin() as s:
            if password != PASSWORD:
                add_user(s, username, role, password, accounts)
                return
            user = User(username=username, role=role, password_hash=_password_hash())
            s.add(user)
            s.flush()
            for name in accounts:
                s.add(UserAccount(user_id=user.id, account_id=get_account(s, name).id))

    async def signin(
        self, client: httpx.AsyncClient, username: str, password: str = PASSWORD, **extra: str
    ) -> httpx.Response:
        page = await client.get("/dashboard/signin")
        assert page.status_code == 200, page.text
        form = {"csrf": csrf_of(page.text), "username": username, "password": password, **extra}
        return await client.post("/dashboard/signin", data=form)

    @contextlib.asynccontextmanager
    async def signed_in(self, username: str, peer: str = "198.51.100.7") -> AsyncIterator[httpx.AsyncClient]:
        async with self.client(peer) as client:
            response = await self.signin(client, username)
            assert response.status_code == 303, response.text
            yield client

    async def csrf(self, client: httpx.AsyncClient) -> str:
        me = await client.get("/dashboard/me.json")
        assert me.status_code == 200, me.text
        token: str = me.json()["csrf"]
        return token


def make_board(engine: Engine, settings: Settings, **app_kw: Any) -> Callable[[], AsyncIterator[Board]]:
    async def make() -> AsyncIterator[Board]:
        clock = Clock()
        app = create_app(settings, engine, clock=clock, cache_seconds=0, **app_kw)
        yield Board(app, clock, sessionmaker(bind=engine, expire_on_commit=False))

    return make


XSS_NAME = "<img src=x onerror=alert(1)>"


@dataclass
class Seeded:
    acme: int
    globex: int
    google: int
    facebook: int
    #: call ids by name
    calls: dict[str, int]
    #: recording ids by call name
    recordings: dict[str, int]


def make_audio(path: Path, seconds: float = 6.0) -> None:
    """A real MP3 (a tone), made by ffmpeg."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}",
            "-ac",
            "1",
            "-b:a",
            "32k",
            str(path),
        ],
        check=True,
    )


def seed(factory: sessionmaker[Session], settings: Settings, audio: Path | None = None) -> Seeded:
    """Two accounts with sources, numbers, calls (one with a website visit and a recording), a blocked caller."""
    with factory.begin() as s:
        acme = add_account(s, "Acme", "America/New_York")
        globex = add_account(s, "Globex", "Europe/London")
        google = add_source(s, "Acme", "Google Ads", "cpc", "spring")
        facebook = add_source(s, "Acme", "Facebook")
        add_source(s, "Globex", "Bing")
        tn1 = add_number(s, settings, NumberFields("+14045550100", "Acme", source="Google Ads", forward_to="PJSIP/100"))
        add_number(s, settings, NumberFields("+14045550101", "Acme", source="Facebook", forward_to="PJSIP/100"))
        add_number(s, settings, NumberFields("+442079460000", "Globex", source="Bing", forward_to="PJSIP/200"))
        visit = VisitorSession(
            key="v1",
            account_id=acme.id,
            source_id=google.id,
            landing_url="https://acme.test/offer?utm_campaign=<b>spring</b>",
            referrer="https://www.google.com/",
            utm_source="google",
            utm_medium="cpc",
            utm_campaign="spring<script>",
            gclid="G123",
            pages_seen=3,
            started_at=START - dt.timedelta(hours=1, minutes=5),
        )
        s.add(visit)
        s.flush()

        def call(
            name: str,
            account: Any,
            source: Any,
            number: str,
            caller: str | None,
            ago: dt.timedelta,
            disposition: str | None,
            **kw: Any,
        ) -> Call:
            started = START - ago
            c = Call(
                system="pbx1",
                linkedid=f"l-{name}",
                account_id=account.id if account else None,
                source_id=source.id if source else None,
                tracking_number=number,
                caller_number=caller,
                started_at=started,
                disposition=disposition,
                **kw,
            )
            if disposition is not None:
                c.ended_at = started + dt.timedelta(seconds=kw.get("duration") or 30)
            s.add(c)
            s.flush()
            return c

        calls = {
            "answered": call(
                "answered",
                acme,
                google,
                "+14045550100",
                "+14045550111",
                dt.timedelta(hours=1),
                "answered",
                caller_name=XSS_NAME,
                caller_location="Atlanta, GA",
                first_time=True,
                duration=95.0,
                ring_time=5.0,
                talk_time=90.0,
                answered_by="PJSIP/100",
                visitor_session_id=visit.id,
                tracking_number_id=tn1.id,
                after_hours=False,
                answered_at=START - dt.timedelta(minutes=59, seconds=55),
            ),
            "missed": call(
                "missed",
                acme,
                facebook,
                "+14045550101",
                "+17705550122",
                dt.timedelta(days=2),
                "missed",
                caller_name='=HYPERLINK("http://evil.test")',
                first_time=False,
                duration=30.0,
                ring_time=30.0,
                after_hours=True,
            ),
            "blocked": call(
                "blocked",
                acme,
                google,
                "+14045550100",
                "+19005550199",
                dt.timedelta(hours=3),
                "blocked",
                caller_name="Spammer",
            ),
            "globex": call(
                "globex",
                globex,
                None,
                "+442079460000",
                "+442079460123",
                dt.timedelta(hours=2),
                "answered",
                caller_name="Globex Caller",
                first_time=True,
                duration=60.0,
                talk_time=50.0,
            ),
            "unknown": call("unknown", None, None, "5550000", "+14045550177", dt.timedelta(hours=4), "failed"),
        }
        s.add(
            CallEvent(
                call_id=calls["answered"].id,
                at=START - dt.timedelta(hours=1),
                kind="ringing",
                detail={"channel": "PJSIP/trunk-0001"},
            )
        )
        s.add(
            CallEvent(
                call_id=calls["answered"].id,
                at=START - dt.timedelta(minutes=59, seconds=55),
                kind="answered",
                detail={"by": "PJSIP/100"},
            )
        )
        recordings = {}
        archive = settings.archive_dir
        for name in ("answered", "globex"):
            path = archive / f"account-x/{name}.mp3"
            if audio is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(audio, path)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(bytes(range(256)) * 64)
            rec = Recording(
                call_id=calls[name].id,
                account_id=calls[name].account_id,
                source_path=f"/spool/{name}.wav",
                path=str(path),
                format="mp3",
                bytes=path.stat().st_size,
                duration=6.0,
                state="archived",
            )
            s.add(rec)
            s.flush()
            recordings[name] = rec.id
        return Seeded(acme.id, globex.id, google.id, facebook.id, {k: v.id for k, v in calls.items()}, recordings)
