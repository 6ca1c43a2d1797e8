"""Members of the accounts a manager manages: listed, added (a generated password shown once), granted."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from schema.models import Account, User, UserAccount, WebSession
from tracking.errors import TrackingError
from tracking.users import Viewer, add_member, allowed
from web.dashboard.core import BadInput, Dashboard, Denied
from web.dashboard.queries import scope


def _members(session: Session, who: Viewer) -> dict[str, Any]:
    accounts = scope(session, who, None, "manage_members")
    if not accounts:
        raise Denied()
    rows = session.execute(
        select(Account.id, Account.name, User.username, User.role, User.disabled)
        .join(UserAccount, UserAccount.account_id == Account.id)
        .join(User, User.id == UserAccount.user_id)
        .where(Account.id.in_([a.id for a in accounts]))
        .order_by(Account.name, User.username)
    ).all()
    return {
        "accounts": [{"id": a.id, "name": a.name} for a in accounts],
        "members": [{"account": r[1], "username": r[2], "role": r[3], "disabled": r[4]} for r in rows],
    }


async def members_page(board: Dashboard, request: Request) -> Response:
    def work(session: Session, who: Viewer, row: WebSession) -> dict[str, Any]:
        return {**_members(session, who), "viewer": who, "csrf": row.csrf}

    context = await board.with_viewer(request, work)
    return board.html("members.html", title="Members", added=None, error="", **context)


async def add(board: Dashboard, request: Request) -> Response:
    board.check_origin(request)
    form = await board.form(request)
    raw_account = form.get("account", "").strip()
    if not raw_account.isdigit() or len(raw_account) > 12:
        raise BadInput("account", "choose an account")
    account_id = int(raw_account)
    username = form.get("username", "").strip()

    def work(session: Session, who: Viewer, row: WebSession) -> dict[str, Any]:
        board.check_csrf(request, row, form)
        if not allowed(who, "manage_members", account_id):
            raise Denied()
        added: dict[str, Any] | None = None
        error = ""
        try:
            with session.begin_nested():
                user, password = add_member(session, who, username, account_id)
                added = {"username": user.username, "password": password}
        except TrackingError as exc:
            error = str(exc)
        return {**_members(session, who), "viewer": who, "csrf": row.csrf, "added": added, "error": error}

    context = await board.with_viewer(request, work)
    status = 400 if context["error"] else 200
    return board.html("members.html", status, title="Members", **context)
