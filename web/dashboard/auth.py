"""Signed-in sessions kept on the server, CSRF tokens, and sign-in rate limiting."""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from config import DashboardSettings
from schema.models import User, WebSession
from tracking.users import Viewer, session_expired, viewer

COOKIE = "ct_session"
#: the sign-in form's CSRF cookie (there is no session yet to hold the token)
PRE_COOKIE = "ct_pre"
#: a session's last_seen_at is written at most this often (not on every request)
TOUCH_SECONDS = 15


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens; False when either is missing."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape"))


def start_session(session: Session, user: User, address: str | None, now: dt.datetime) -> tuple[str, str]:
    """A new session for *user*: (cookie token, CSRF token)."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            token_hash=token_hash(token), user_id=user.id, csrf=csrf, created_at=now, last_seen_at=now, address=address
        )
    )
    session.flush()
    return token, csrf


def resume(
    session: Session, token: str | None, now: dt.datetime, limits: DashboardSettings
) -> tuple[Viewer, WebSession] | None:
    """The viewer behind a session cookie, or None (no such session, expired, user disabled)."""
    if not token or len(token) > 200:
        return None
    row = session.scalar(select(WebSession).where(WebSession.token_hash == token_hash(token)))
    if row is None:
        return None
    idle = dt.timedelta(minutes=limits.idle_minutes)
    absolute = dt.timedelta(hours=limits.absolute_hours)
    if session_expired(row.created_at, row.last_seen_at, now, idle, absolute):
        session.delete(row)
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        session.delete(row)
        return None
    if (now - row.last_seen_at).total_seconds() >= TOUCH_SECONDS:
        row.last_seen_at = now
    return viewer(session, user), row


def end_session(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(WebSession).where(WebSession.token_hash == token_hash(token)))


class SigninLimiter:
    """Failed sign-ins counted per username and per client address over a sliding window.

    Past the limit, sign-in is refused without checking the password until the oldest
    failure leaves the window.  In memory: each web process counts its own.
    """

    def __init__(self, limits: DashboardSettings, clock: Callable[[], dt.datetime]) -> None:
        self.per_user = limits.signin_attempts_per_user
        self.per_address = limits.signin_attempts_per_address
        self.window = dt.timedelta(minutes=limits.signin_window_minutes)
        self.clock = clock
        self._failures: dict[str, collections.deque[dt.datetime]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: dt.datetime) -> collections.deque[dt.datetime]:
        times = self._failures.get(key)
        if times is None:
            return collections.deque()
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def wait(self, username: str, address: str) -> float:
        """0 when a sign-in may be tried now, else the seconds until it may."""
        now = self.clock()
        waits = []
        with self._lock:
            for key, limit in (("u:" + username.strip().lower(), self.per_user), ("a:" + address, self.per_address)):
                times = self._recent(key, now)
                if len(times) >= limit:
                    waits.append((times[0] + self.window - now).total_seconds())
        return max(waits, default=0.0)

    def failed(self, username: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) > 100_000:  # a flood of names: forget the lot rather than grow without end
                self._failures.clear()
            for key in ("u:" + username.strip().lower(), "a:" + address):
                self._failures.setdefault(key, collections.deque()).append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop("u:" + username.strip().lower(), None)
