"""What every dashboard page shares: the signed-in viewer, one transaction per request, renderings."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jinja2
from anyio import to_thread
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from config import Settings
from schema.db import make_session_factory
from schema.models import WebSession, utcnow
from tracking import csv_cells
from tracking.users import Viewer
from web.dashboard import auth
from web.net import ProxyPolicy, parse_networks

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PREFIX = "/dashboard"
MAX_FORM = 64 * 1024


class Denied(Exception):
    """Not found, or not allowed: the two look the same to the viewer (nothing is revealed)."""


class BadInput(Exception):
    """A filter or form field that cannot mean anything; told to the user with a 400."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class Signin(Exception):
    """The request needs a signed-in user."""


class Forbidden(Exception):
    """A state-changing request without its CSRF token, or from another site."""


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def json_response(data: Any, status: int = 200) -> Response:
    body = json.dumps(data, default=_json_default, ensure_ascii=False, separators=(",", ":"))
    return Response(body.encode("utf-8"), status_code=status, media_type="application/json")


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    # a cell a spreadsheet would run as a formula (CSV injection) gets a leading apostrophe
    return csv_cells.cell(str(value))


def csv_response(rows: Sequence[dict[str, Any]], columns: Sequence[str], filename: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    return Response(
        out.getvalue().encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


class Dashboard:
    """Settings, database and templates, with the helpers each page uses."""

    def __init__(self, settings: Settings, engine: Engine, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.settings = settings
        self.engine = engine
        self.factory = make_session_factory(engine)
        self.clock = clock
        self.proxies = ProxyPolicy(parse_networks(settings.web.trusted_proxies))
        self.limiter = auth.SigninLimiter(settings.dashboard, clock)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals["prefix"] = PREFIX

    # --- who is asking -------------------------------------------------------------------

    def client(self, request: Request) -> tuple[str, str | None]:
        peer = request.client.host if request.client else None
        return self.proxies.client(peer, request.headers)

    def secure(self, request: Request) -> bool:
        """Is the browser talking HTTPS to us (directly, or to a trusted proxy that says so)?"""
        if request.url.scheme == "https":
            return True
        return self.client(request)[1] == "https"

    def set_cookie(self, response: Response, request: Request, name: str, value: str, **kw: Any) -> None:
        response.set_cookie(
            name,
            value,
            path=PREFIX,
            httponly=True,
            samesite=kw.pop("samesite", "lax"),
            secure=self.secure(request),
            **kw,
        )

    # --- one transaction per request -------------------------------------------------------

    async def run(self, func: Callable[[Session], Any]) -> Any:
        def work() -> Any:
            with self.factory() as session, session.begin():
                return func(session)

        return await to_thread.run_sync(work)

    async def with_viewer(self, request: Request, func: Callable[[Session, Viewer, WebSession], Any]) -> Any:
        """Run *func* for the signed-in viewer in one transaction; :class:`Signin` when nobody is."""
        token = request.cookies.get(auth.COOKIE)
        now = self.clock()
        limits = self.settings.dashboard

        def work(session: Session) -> Any:
            found = auth.resume(session, token, now, limits)
            if found is None:
                return Signin
            return func(session, found[0], found[1])

        result = await self.run(work)
        if result is Signin:
            raise Signin()
        return result

    # --- forms ---------------------------------------------------------------------------

    async def form(self, request: Request) -> dict[str, str]:
        """An urlencoded form (the last value of each field), at most 64 KiB."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/x-www-form-urlencoded", ""):
            raise BadInput("", "send the form as application/x-www-form-urlencoded")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                raise BadInput("", "form too large")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput("", "the form is not UTF-8") from None
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=100)
        return dict(pairs)

    def check_origin(self, request: Request) -> None:
        """A browser's Origin (when it sends one) must be this site: refuses cross-site posts early."""
        origin = request.headers.get("origin")
        if origin is None:
            return
        host = request.headers.get("host", "")
        allowed = {f"http://{host}", f"https://{host}"}
        if self.settings.web.public_url:
            parts = urllib.parse.urlsplit(self.settings.web.public_url)
            allowed.add(f"{parts.scheme}://{parts.netloc}")
        if origin not in allowed:
            raise Forbidden()

    def check_csrf(self, request: Request, row: WebSession, form: dict[str, str] | None) -> None:
        sent = request.headers.get("x-csrf-token") or (form or {}).get("csrf")
        if not auth.same(sent, row.csrf):
            raise Forbidden()

    # --- rendering -------------------------------------------------------------------------

    def html(self, template: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("viewer", None)
        context.setdefault("csrf", "")
        context.setdefault("page", template.removesuffix(".html"))
        body = self.templates.get_template(template).render(**context)
        return Response(body.encode("utf-8"), status_code=status, media_type="text/html; charset=utf-8")

    def to_signin(self, request: Request) -> Response:
        wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{PREFIX}/signin?next={urllib.parse.quote(wanted, safe='')}", status_code=303)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a dashboard path only (never another site: no open redirect)."""
    if not value or not value.startswith(PREFIX + "/") or value.startswith("//") or "\\" in value:
        return PREFIX + "/"
    parts = urllib.parse.urlsplit(value)
    if parts.scheme or parts.netloc:
        return PREFIX + "/"
    return value
