"""Sign-in, sign-out, password change, and the home page."""

from __future__ import annotations

import logging
import math
import secrets
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from schema.models import AuditEntry, User, WebSession
from tracking.errors import InvalidInput
from tracking.users import Viewer, check_password, set_password, verify_password, visible_accounts
from web.dashboard import auth
from web.dashboard.core import PREFIX, Dashboard, Forbidden, json_response, safe_next

logger = logging.getLogger(__name__)

MAX_USERNAME = 100


def _signin_page(
    board: Dashboard, request: Request, status: int = 200, error: str = "", username: str = ""
) -> Response:
    pre = secrets.token_urlsafe(24)
    response = board.html(
        "signin.html",
        status,
        title="Sign in",
        pre=pre,
        error=error,
        username=username,
        next=safe_next(request.query_params.get("next")),
    )
    board.set_cookie(response, request, auth.PRE_COOKIE, pre, samesite="strict", max_age=3600)
    return response


async def signin_form(board: Dashboard, request: Request) -> Response:
    return _signin_page(board, request)


async def signin(board: Dashboard, request: Request) -> Response:
    board.check_origin(request)
    form = await board.form(request)
    if not auth.same(form.get("csrf"), request.cookies.get(auth.PRE_COOKIE)):
        raise Forbidden()
    username = form.get("username", "").strip()[:MAX_USERNAME]
    password = form.get("password", "")
    address = board.client(request)[0]
    if not username or not password:
        return _signin_page(board, request, 400, "Enter your username and password.", username)
    wait = board.limiter.wait(username, address)
    if wait > 0:
        minutes = max(1, math.ceil(wait / 60))
        logger.warning("dashboard: sign-in refused for %r from %s: too many failures", username, address)
        response = _signin_page(
            board, request, 429, f"Too many failed sign-ins. Try again in {minutes} minute(s).", username
        )
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return response
    now = board.clock()

    def check(session: Session) -> tuple[str, str] | None:
        user = session.scalar(select(User).where(func.lower(User.username) == username.lower()))
        good = verify_password(user.password_hash if user else None, password)
        if user is None or not good or user.disabled:
            session.add(AuditEntry(actor=username, action="dashboard.signin-failed", target=address))
            return None
        session.add(AuditEntry(actor=user.username, action="dashboard.signin", target=address))
        return auth.start_session(session, user, address, now)

    started = await board.run(check)
    if started is None:
        board.limiter.failed(username, address)
        logger.info("dashboard: failed sign-in for %r from %s", username, address)
        return _signin_page(board, request, 401, "Wrong username or password.", username)
    board.limiter.succeeded(username)
    token, _csrf = started
    response = RedirectResponse(safe_next(form.get("next")), status_code=303)
    board.set_cookie(response, request, auth.COOKIE, token)
    response.delete_cookie(auth.PRE_COOKIE, path=PREFIX)
    return response


async def signout(board: Dashboard, request: Request) -> Response:
    board.check_origin(request)
    form = await board.form(request)
    token = request.cookies.get(auth.COOKIE)

    def work(session: Session, who: Viewer, row: WebSession) -> None:
        board.check_csrf(request, row, form)
        session.add(AuditEntry(actor=who.username, action="dashboard.signout"))
        auth.end_session(session, token)

    await board.with_viewer(request, work)
    response = RedirectResponse(f"{PREFIX}/signin", status_code=303)
    response.delete_cookie(auth.COOKIE, path=PREFIX)
    return response


async def password_form(board: Dashboard, request: Request) -> Response:
    def work(session: Session, who: Viewer, row: WebSession) -> dict[str, Any]:
        return {"viewer": who, "csrf": row.csrf}

    context = await board.with_viewer(request, work)
    return board.html("password.html", title="Change password", error="", done=False, **context)


async def password(board: Dashboard, request: Request) -> Response:
    board.check_origin(request)
    form = await board.form(request)
    current = form.get("current", "")
    new = form.get("new", "")
    confirm = form.get("confirm", "")
    address = board.client(request)[0]
    now = board.clock()

    def work(session: Session, who: Viewer, row: WebSession) -> dict[str, Any]:
        board.check_csrf(request, row, form)
        user = session.get(User, who.user_id)
        assert user is not None
        if not verify_password(user.password_hash, current):
            return {"viewer": who, "csrf": row.csrf, "error": "Your current password is wrong."}
        if new != confirm:
            return {"viewer": who, "csrf": row.csrf, "error": "The two new passwords differ."}
        try:
            check_password(new)
        except InvalidInput as exc:
            return {"viewer": who, "csrf": row.csrf, "error": str(exc).capitalize() + "."}
        set_password(session, user, new, actor=who.username)  # ends every session of theirs, this one too
        token, csrf = auth.start_session(session, user, address, now)
        return {"viewer": who, "csrf": csrf, "error": "", "token": token}

    context = await board.with_viewer(request, work)
    token = context.pop("token", None)
    if token is None:
        return board.html("password.html", 400, title="Change password", done=False, **context)
    response = board.html("password.html", title="Change password", done=True, **context)
    board.set_cookie(response, request, auth.COOKIE, token)
    return response


async def home(board: Dashboard, request: Request) -> Response:
    def work(session: Session, who: Viewer, row: WebSession) -> dict[str, Any]:
        accounts = [{"id": a.id, "name": a.name, "timezone": a.timezone} for a in visible_accounts(session, who)]
        return {"viewer": who, "csrf": row.csrf, "accounts": accounts}

    context = await board.with_viewer(request, work)
    return board.html("home.html", title="calltrack", **context)


async def me(board: Dashboard, request: Request) -> Response:
    def work(session: Session, who: Viewer, row: WebSession) -> dict[str, Any]:
        accounts = [{"id": a.id, "name": a.name} for a in visible_accounts(session, who)]
        return {"username": who.username, "role": who.role, "accounts": accounts, "csrf": row.csrf}

    return json_response(await board.with_viewer(request, work))
