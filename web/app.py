"""The ASGI application: ``GET /dni.js``, ``POST /dni/v1/session``, ``POST /dni/v1/heartbeat``, ``GET /metrics``.

Cross-origin calls are answered only for the account's configured site origins.
Forwarded headers are believed only from ``web.trusted_proxies``.  Each client
address gets ``web.rate_limit_per_minute`` API calls a minute.  ``/metrics``
(Prometheus text, :mod:`tracking.metrics`) answers only clients in
``web.metrics_networks`` (by the address behind trusted proxies); to anyone else,
and when the setting is empty, it does not exist (404).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import gzip
import hashlib
import json
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
from anyio import to_thread
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from config import Settings
from schema.db import make_engine, make_session_factory
from schema.models import utcnow
from tracking import metrics
from web import api
from web.dashboard.app import create_dashboard
from web.dni import AccountCache, AccountInfo, Answer, Dni, PageView, SessionEnded
from web.group_commit import GroupCommit
from web.net import ProxyPolicy, in_networks, parse_networks, truncate
from web.ratelimit import RateLimiter
from web.session_batch import Heartbeats, NewSessions
from web.swaps import swap_fields

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

STATIC = Path(__file__).resolve().parent / "static"
COOKIE_NAME = "_ctv"
#: worker threads running PostgreSQL transactions (at most this many connections busy at once)
DB_THREADS = 12
#: seconds between WAL checkpoints when SQLite runs on the event loop (`calltrack web serve`)
CHECKPOINT_EVERY = 1.0


def render_script(settings: Settings, name: str = "dni.js") -> str:
    """dni.js with this installation's settings filled in, comments and indentation removed."""
    source = (STATIC / name).read_text(encoding="utf-8")
    config = {
        "heartbeat": settings.web.heartbeat_seconds,
        "cookieDays": settings.web.cookie_days,
        "cookie": COOKIE_NAME,
    }
    source = source.replace("/*CONFIG*/{}", json.dumps(config, separators=(",", ":")))
    lines = []
    for line in source.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("//"):
            continue
        lines.append(stripped)
    return "\n".join(lines) + "\n"


class Script:
    """The rendered script, plain and gzipped, with its ETag."""

    def __init__(self, settings: Settings, name: str = "dni.js") -> None:
        self.body = render_script(settings, name).encode("utf-8")
        self.gzipped = gzip.compress(self.body, compresslevel=9, mtime=0)
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'

    def response(self, request: Request) -> Response:
        headers = {
            "Cache-Control": "public, max-age=300",
            "ETag": self.etag,
            "Vary": "Accept-Encoding",
            "Access-Control-Allow-Origin": "*",
        }
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(self.gzipped, media_type="text/javascript; charset=utf-8", headers=headers)
        return Response(self.body, media_type="text/javascript; charset=utf-8", headers=headers)


def _json(data: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps(data)  # compact, UTF-8 as it is
    return Response(body, status_code=status, media_type="application/json", headers=headers)


class DniApi:
    """The request handlers, with what they share."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        cache_seconds: float = 10.0,
        sqlite_inline: bool = False,
    ) -> None:
        self.settings = settings
        factory = make_session_factory(engine)
        # SQLite has one writer at a time, so its transactions run one after another: on the event
        # loop itself when the web service has its process to itself (`calltrack web serve`:
        # fastest, and every API call waits for the write lock anyway), else in one worker thread,
        # so that a slow disk or another process holding the lock never stalls the other services
        # sharing the loop (`calltrack serve`).  Many threads queueing for the one lock would only
        # add GIL contention and SQLite's busy-wait back-off.  The sessions and heartbeats waiting
        # meanwhile run together in the next transaction (web/group_commit.py).  PostgreSQL: DB_THREADS worker
        # threads, each mostly waiting for its round trips and commit; the number rows' locks keep
        # them apart and no lock is shared by a pool's visitors (tracking/leases.py), so more
        # threads than cores pay (bench/dni_bench.py: 12 threads 147-459 sessions/s, 4 threads
        # 66-102, in alternating runs on a loaded 2-core machine).
        sqlite = engine.dialect.name == "sqlite"
        self.inline = sqlite and sqlite_inline
        self.writer = concurrent.futures.ThreadPoolExecutor(1 if sqlite else DB_THREADS, thread_name_prefix="dni-db")
        write_lock = threading.Lock() if sqlite else None
        self.dni = Dni(settings, engine, clock, write_lock, settings.database.connect_timeout)
        # SQLite: the sessions and heartbeats waiting for the writer share one transaction (group commit)
        self.group = GroupCommit(engine, None if self.inline else self.writer, write_lock) if sqlite else None
        # PostgreSQL: the new sessions waiting at one moment share one statement and one commit
        postgresql = engine.dialect.name == "postgresql"
        self.sessions = NewSessions(self.dni, self.writer) if postgresql else None
        self.heartbeats = Heartbeats(self.dni, self.writer) if postgresql else None
        self.accounts = AccountCache(factory, cache_seconds)
        self.forms = factory
        self.proxies = ProxyPolicy(parse_networks(settings.web.trusted_proxies))
        self.metrics_networks = parse_networks(settings.web.metrics_networks, "web.metrics_networks")
        self.stored = metrics.StoredState(engine, settings, clock)
        self.limiter = RateLimiter(settings.web.rate_limit_per_minute)
        self.script = Script(settings)
        #: form capture, loaded by dni.js only on sites whose snippet says data-forms
        self.forms_script = Script(settings, "dni-forms.js")

    # --- helpers -----------------------------------------------------------------------

    def client(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return self.proxies.client(peer, request.headers)[0]

    async def start(self, info: AccountInfo, view: PageView) -> Answer:
        if self.sessions is not None:  # PostgreSQL: new sessions are written in batches (web/session_batch.py)
            # only a visitor who brought an id needs a read first (its latest session): on a thread
            planned = (
                await self.run(self.dni.plan_start, info, view) if view.visitor else self.dni.plan_start(info, view)
            )
            if isinstance(planned, Answer):
                return planned
            return await self.sessions.run(planned)
        if self.group is None:
            return await self.run(self.dni.start, info, view)
        if view.privacy:  # nothing is stored
            return self.dni.private_answer(info, view)
        return await self.group.run(lambda conn: self.dni.start_in(conn, info, view))

    async def beat(self, info: AccountInfo, session_key: str) -> Answer:
        if self.heartbeats is not None:  # PostgreSQL: heartbeats in batches (web/session_batch.py)
            return await self.heartbeats.run((info, session_key))
        if self.group is None:
            return await self.run(self.dni.heartbeat, info, session_key)
        return await self.group.run(lambda conn: self.dni.heartbeat_in(conn, info, session_key))

    async def run(self, func: Callable[..., _T], *args: Any) -> _T:
        if self.inline:
            return func(*args)
        return await asyncio.get_running_loop().run_in_executor(self.writer, func, *args)

    def close(self) -> None:
        self.writer.shutdown(wait=True)
        self.dni.close()

    async def checkpoints(self) -> None:
        """SQLite on the event loop: the WAL checkpoints, every CHECKPOINT_EVERY seconds on the writer thread."""
        assert self.group is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY)
            try:
                await loop.run_in_executor(self.writer, self.group.checkpoint)
            except Exception as exc:  # a locked or vanished database: the next one tries again
                logger.debug("checkpoint skipped: %s", exc)

    @staticmethod
    def cors(origin: str | None) -> dict[str, str]:
        if not origin:
            return {"Vary": "Origin"}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    def error(self, exc: api.BadRequest, origin: str | None = None, request: Request | None = None) -> Response:
        # dni.js's debug mode (?debug=1) reads why it was refused; the answer holds nothing the page
        # did not send, and the origin still gets no session, number or visitor
        if origin is None and request is not None and request.query_params.get("debug") == "1":
            origin = request.headers.get("origin")
        headers = self.cors(origin)
        if exc.retry_after is not None:
            headers["Retry-After"] = str(exc.retry_after)
        return _json(exc.as_json(), exc.status, headers)

    async def _prelude(self, request: Request) -> tuple[dict[str, Any], str | None, str]:
        """Rate limit, body, JSON: the checks every API call shares.  (body, Origin, client address)"""
        origin = request.headers.get("origin")
        client = self.client(request)
        wait = self.limiter.allow(client)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise api.BadRequest(429, None, "too many requests from this address; slow down", retry_after=retry)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > api.MAX_BODY:
            raise api.BadRequest(413, None, f"request body too large (at most {api.MAX_BODY} bytes)")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/json", "text/plain", ""):
            raise api.BadRequest(415, None, "send the body as application/json (or text/plain holding JSON)")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > api.MAX_BODY:
                raise api.BadRequest(413, None, f"request body too large (at most {api.MAX_BODY} bytes)")
        return api.parse_body(body), origin, client

    async def _account(self, public_key: str, origin: str | None) -> AccountInfo:
        fresh, info = self.accounts.cached(public_key)
        if not fresh:
            info = await to_thread.run_sync(self.accounts.get, public_key)
        if info is None:
            raise api.BadRequest(404, "account", "unknown account key (check the snippet's data-account)")
        if not origin:
            raise api.BadRequest(403, "origin", "no Origin header: only the account's sites may call this API")
        if origin not in info.origins:
            raise api.BadRequest(
                403, "origin", f"origin {origin[:200]} is not a site of this account (see `calltrack sites add`)"
            )
        return info

    @staticmethod
    def private(request: Request) -> bool:
        return request.headers.get("dnt") == "1" or request.headers.get("sec-gpc") == "1"

    # --- endpoints -----------------------------------------------------------------------

    async def dni_js(self, request: Request) -> Response:
        return self.script.response(request)

    async def forms_js(self, request: Request) -> Response:
        return self.forms_script.response(request)

    async def preflight(self, request: Request) -> Response:
        origin = request.headers.get("origin")
        if not origin or not await to_thread.run_sync(self.accounts.any_site, origin):
            return Response(status_code=403, headers={"Vary": "Origin"})
        headers = self.cors(origin)
        headers.update(
            {
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Content-Type",
                "Access-Control-Max-Age": "86400",
            }
        )
        return Response(status_code=204, headers=headers)

    async def session(self, request: Request) -> Response:
        origin: str | None = request.headers.get("origin")
        allowed: str | None = None
        try:
            data, origin, ip = await self._prelude(request)
            fields = api.session_request(data)
            info = await self._account(fields["account"], origin)
            allowed = origin
            view = PageView(
                account=fields["account"],
                visitor=fields["visitor"],
                url=fields["url"],
                referrer=fields["referrer"],
                privacy=fields["dnt"] or self.private(request),
                user_agent=request.headers.get("user-agent"),
                ip=truncate(ip) if self.settings.web.truncate_ip else ip,
            )
            answer = await self.start(info, view)
            replace = fields["replace"]
            shown = "private" if view.privacy else "leased" if answer.expires_at is not None else "unleased"
            metrics.DNI_SESSIONS.labels(shown).inc()
        except api.BadRequest as exc:
            return self.error(exc, allowed, request)
        except OperationalError as exc:
            logger.error(
                "session: database unavailable: %s", str(exc.orig).strip().splitlines()[0] if exc.orig else exc
            )
            return _json({"error": "temporarily unavailable", "field": None}, 503, self.cors(allowed))
        return self.answer(answer, info, allowed, replace)

    def answer(self, answer: Answer, info: AccountInfo, origin: str | None, replace: list[str]) -> Response:
        body = answer.as_json()
        body.update(swap_fields(info, origin, replace, answer.number, self.settings.numbers.default_region))
        return _json(body, 200, self.cors(origin))

    async def heartbeat(self, request: Request) -> Response:
        origin: str | None = request.headers.get("origin")
        allowed: str | None = None
        try:
            data, origin, _ = await self._prelude(request)
            fields = api.heartbeat_request(data)
            info = await self._account(fields["account"], origin)
            allowed = origin
            answer = await self.beat(info, fields["session"])
            replace = fields["replace"]
            metrics.DNI_HEARTBEATS.labels("kept").inc()
        except api.BadRequest as exc:
            return self.error(exc, allowed, request)
        except SessionEnded as exc:
            metrics.DNI_HEARTBEATS.labels("ended").inc()
            return self.error(api.BadRequest(410, "session", f"{exc}; start a new session"), allowed)
        except OperationalError as exc:
            logger.error(
                "heartbeat: database unavailable: %s", str(exc.orig).strip().splitlines()[0] if exc.orig else exc
            )
            return _json({"error": "temporarily unavailable", "field": None}, 503, self.cors(allowed))
        return self.answer(answer, info, allowed, replace)

    async def form(self, request: Request) -> Response:
        """A form submission from dni.js: stored as a lead when the site captures forms (web/forms.py)."""
        from tracking.form_leads import FormsOff, Submission, record
        from web.forms import form_request

        origin: str | None = request.headers.get("origin")
        allowed: str | None = None
        try:
            data, origin, _ = await self._prelude(request)
            fields = form_request(data)
            info = await self._account(fields["account"], origin)
            allowed = origin
            if fields["dnt"] or self.private(request):
                return _json({"stored": False}, 200, self.cors(allowed))
            sub = Submission(info.id, origin or "", fields["session"], fields["url"], fields["form"], fields["fields"])
            region = self.settings.numbers.default_region

            def store() -> None:
                lock = self.dni.write_lock or contextlib.nullcontext()
                with lock, self.forms.begin() as session:
                    record(session, sub, region, self.dni.clock())

            if self.inline:
                store()
            else:
                await asyncio.get_running_loop().run_in_executor(self.writer, store)
        except api.BadRequest as exc:
            return self.error(exc, allowed)
        except FormsOff as exc:
            return self.error(api.BadRequest(403, "origin", str(exc)), allowed)
        except OperationalError as exc:
            logger.error("form: database unavailable: %s", str(exc.orig).strip().splitlines()[0] if exc.orig else exc)
            return _json({"error": "temporarily unavailable", "field": None}, 503, self.cors(allowed))
        return _json({"stored": True}, 201, self.cors(allowed))

    async def health(self, request: Request) -> Response:
        return _json({"ok": True})

    async def metrics(self, request: Request) -> Response:
        if not in_networks(self.client(request), self.metrics_networks):
            return Response("Not Found", status_code=404, media_type="text/plain")
        body = await to_thread.run_sync(metrics.render, self.stored)
        return Response(body, media_type=metrics.CONTENT_TYPE)


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    *,
    clock: Callable[[], dt.datetime] = utcnow,
    cache_seconds: float = 10.0,
    sqlite_inline: bool = False,
) -> Starlette:
    """The web application; *engine* defaults to one made from the settings (and disposed on shutdown).

    *sqlite_inline*: run SQLite transactions on the event loop (only when nothing else shares it).
    """
    own_engine = engine is None
    if engine is None:
        engine = make_engine(settings.database_url, connect_timeout=settings.database.connect_timeout)
    dni_engine = engine
    if engine.dialect.name == "postgresql":
        # The DNI API's own pool, without a round trip per checkout (the shared engine pings):
        # a DNI request runs once more when its connection turns out dead (web/dni.py).
        dni_engine = make_engine(
            engine.url.render_as_string(hide_password=False),
            connect_timeout=settings.database.connect_timeout,
            pre_ping=False,
            # one kept-open connection per database thread: beyond the pool's size each checkout
            # would open a new connection and close it after the request
            pool_size=DB_THREADS,
        )
    handlers = DniApi(settings, dni_engine, clock=clock, cache_seconds=cache_seconds, sqlite_inline=sqlite_inline)
    routes = [
        Route("/dni.js", handlers.dni_js, methods=["GET", "HEAD"]),
        Route("/dni-forms.js", handlers.forms_js, methods=["GET", "HEAD"]),
        Route("/dni/v1/session", handlers.session, methods=["POST"]),
        Route("/dni/v1/heartbeat", handlers.heartbeat, methods=["POST"]),
        Route("/dni/v1/session", handlers.preflight, methods=["OPTIONS"]),
        Route("/dni/v1/heartbeat", handlers.preflight, methods=["OPTIONS"]),
        Route("/dni/v1/form", handlers.form, methods=["POST"]),
        Route("/dni/v1/form", handlers.preflight, methods=["OPTIONS"]),
        Route("/healthz", handlers.health, methods=["GET"]),
        Route("/metrics", handlers.metrics, methods=["GET"]),
        Mount("/dashboard", app=create_dashboard(settings, engine, clock=clock)),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        checkpoints = asyncio.create_task(handlers.checkpoints()) if handlers.inline else None
        yield
        if checkpoints is not None:
            checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpoints
        handlers.close()
        if dni_engine is not engine:
            dni_engine.dispose()
        if own_engine:
            engine.dispose()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.dni = handlers
    return app
