"""The dashboard's routes, as a Starlette application mounted by ``web.app`` under ``/dashboard``."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from config import Settings
from schema.models import utcnow
from web.dashboard import live, views_auth, views_calls, views_members, views_misc, views_reports, views_texts
from web.dashboard.core import HERE, BadInput, Dashboard, Denied, Forbidden, Signin, json_response
from web.dashboard.security import SecurityHeaders

logger = logging.getLogger(__name__)

Handler = Callable[[Dashboard, Request], Awaitable[Response]]


def _machine(request: Request) -> bool:
    """JSON, CSV, recordings and event streams answer 401/403/404 as such, never a page."""
    path = request.url.path
    return path.endswith((".json", ".csv")) or "/recordings/" in path or path.endswith("/events")


def wrap(board: Dashboard, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(board, request)
        except Signin:
            if _machine(request):
                return json_response({"error": "sign in first"}, 401)
            return board.to_signin(request)
        except Denied:
            if _machine(request):
                return json_response({"error": "not found"}, 404)
            return board.html("error.html", 404, title="Not found", message="There is nothing here for you.")
        except Forbidden:
            if _machine(request):
                return json_response({"error": "refused: missing or wrong CSRF token, or another site's form"}, 403)
            return board.html(
                "error.html",
                403,
                title="Refused",
                message="This form was refused (it expired, or came from another site). Go back, reload and retry.",
            )
        except BadInput as exc:
            if _machine(request):
                return json_response({"error": exc.message, "field": exc.field}, 400)
            return board.html("error.html", 400, title="Bad request", message=exc.message)

    return endpoint


def create_dashboard(
    settings: Settings, engine: Engine, *, clock: Callable[[], dt.datetime] = utcnow, live_poll: float = live.POLL
) -> Any:
    board = Dashboard(settings, engine, clock)
    routes: list[Any] = [
        Route("/", wrap(board, views_auth.home), methods=["GET"]),
        Route("/signin", wrap(board, views_auth.signin_form), methods=["GET"]),
        Route("/signin", wrap(board, views_auth.signin), methods=["POST"]),
        Route("/signout", wrap(board, views_auth.signout), methods=["POST"]),
        Route("/password", wrap(board, views_auth.password_form), methods=["GET"]),
        Route("/password", wrap(board, views_auth.password), methods=["POST"]),
        Route("/me.json", wrap(board, views_auth.me), methods=["GET"]),
        Route("/calls", wrap(board, views_calls.calls), methods=["GET"]),
        Route("/calls.{fmt}", wrap(board, views_calls.calls), methods=["GET"]),
        Route("/calls/{id}.{fmt}", wrap(board, views_calls.call), methods=["GET"]),
        Route("/calls/{id}", wrap(board, views_calls.call), methods=["GET"]),
        Route("/calls/{id}/qualify", wrap(board, views_calls.qualify), methods=["POST"]),
        Route("/recordings/{id}", wrap(board, views_calls.recording), methods=["GET", "HEAD"]),
        Route("/texts", wrap(board, views_texts.texts_page), methods=["GET"]),
        Route("/texts/thread", wrap(board, views_texts.thread_page), methods=["GET"]),
        Route("/texts/thread.{fmt}", wrap(board, views_texts.thread_page), methods=["GET"]),
        Route("/texts.{fmt}", wrap(board, views_texts.texts_page), methods=["GET"]),
        Route("/overview", wrap(board, views_reports.overview), methods=["GET"]),
        Route("/overview.{fmt}", wrap(board, views_reports.overview), methods=["GET"]),
        Route("/reports", wrap(board, views_reports.reports_page), methods=["GET"]),
        Route("/reports.{fmt}", wrap(board, views_reports.reports_page), methods=["GET"]),
        Route("/live", wrap(board, live.live_page), methods=["GET"]),
        Route("/live.{fmt}", wrap(board, live.live_page), methods=["GET"]),
        Route("/live/events", wrap(board, live.events), methods=["GET"]),
        Route("/numbers", wrap(board, views_misc.numbers), methods=["GET"]),
        Route("/numbers.{fmt}", wrap(board, views_misc.numbers), methods=["GET"]),
        Route("/audit", wrap(board, views_misc.audit), methods=["GET"]),
        Route("/audit.{fmt}", wrap(board, views_misc.audit), methods=["GET"]),
        Route("/members", wrap(board, views_members.members_page), methods=["GET"]),
        Route("/members", wrap(board, views_members.add), methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.dashboard = board
    app.state.live_poll = live_poll
    return SecurityHeaders(app)
