"""A DNI service and the businesses' websites for browser tests and benchmarks.

The web service runs in a thread (uvicorn, SQLite); each website is a small HTTP server of its
own (an origin per site: a site's region and business numbers belong to its origin) serving the
pages a test gives it.  Chromium is Debian's, driven by Playwright.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from config import DatabaseSettings, GeneralSettings, Settings, WebSettings
from schema import migrate
from schema.db import make_engine
from web.app import create_app
from web.service import uvicorn_config

CHROMIUM = os.environ.get("CALLTRACK_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
WAIT_MS = 10_000


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class Website:
    """One origin serving *pages* (path -> HTML, or (content type, bytes)); a path may be changed later."""

    origin: str
    pages: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def url(self, path: str = "/") -> str:
        return self.origin + path


@contextmanager
def website(pages: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Iterator[Website]:
    sock = free_socket()
    site = Website(f"http://127.0.0.1:{sock.getsockname()[1]}", dict(pages or {}), dict(headers or {}))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = site.pages.get(self.path.split("?")[0])
            if page is None:
                self.send_error(404)
                return
            ctype, body = ("text/html; charset=utf-8", page.encode()) if isinstance(page, str) else page
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in site.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    sock.listen()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    httpd.socket.close()
    httpd.socket = sock
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        httpd.shutdown()
        httpd.server_close()


@dataclass
class Service:
    url: str
    settings: Settings
    factory: sessionmaker[Session]

    @property
    def script(self) -> str:
        return f"{self.url}/dni.js"


@contextmanager
def service(tmp: Path, **web: Any) -> Iterator[Service]:
    """The DNI API on a fresh SQLite database in *tmp*."""
    url = f"sqlite:///{tmp / 'calltrack.sqlite3'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    settings = Settings(
        general=GeneralSettings(data_dir=tmp),
        database=DatabaseSettings(url=url),
        web=WebSettings(**{"heartbeat_seconds": 30, "rate_limit_per_minute": 100_000, **web}),
    )
    sock = free_socket()
    server = uvicorn.Server(
        uvicorn_config(
            create_app(settings, engine, cache_seconds=0, sqlite_inline=True), "127.0.0.1:0", log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(1000):
        if server.started:
            started.set()
            break
        started.wait(0.01)
    try:
        yield Service(
            f"http://127.0.0.1:{sock.getsockname()[1]}", settings, sessionmaker(bind=engine, expire_on_commit=False)
        )
    finally:
        server.should_exit = True
        thread.join(10)
        engine.dispose()


@contextmanager
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        raise RuntimeError(f"Chromium not found at {CHROMIUM}: apt-get install chromium (scripts/install --test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def tag(svc: Service, key: str, extra: str = "") -> str:
    return f'<script async src="{svc.script}" data-account="{key}" {extra}></script>'


def wait_swapped(page: Any, timeout: int = WAIT_MS) -> None:
    """Until the script has its answer and its walk is over (every number in the page swapped)."""
    page.wait_for_function(
        "() => window.calltrackDni && window.calltrackDni.state().shown && !window.calltrackDni.state().busy",
        timeout=timeout,
    )


# A large page: what a product listing or a long article costs the script
FORMS = (
    "<span>(404)</span> 555-0100",
    "404-555-0100",
    "<a href='tel:+14045550100'><strong>404</strong>.555.0100</a>",
    "+1 404 555 0100",
)


def large_page(cards: int, numbers: int, script: str = "") -> str:
    """*cards* cards of 24 nodes each (elements and texts); every (cards/numbers)-th one shows the number."""
    every = max(1, cards // max(1, numbers))
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>Big</title>{script}</head><body><main>"]
    for i in range(cards):
        shown = FORMS[(i // every) % len(FORMS)] if i % every == 0 else "ask for Sam"
        out.append(
            f"<section class='card' id='c{i}'><h3>Item {i}</h3>"
            f"<p class='d'>Model {i * 7} ships in {i % 9 + 1} days, <em>{i % 30} in stock</em>.</p>"
            f"<ul><li>Size {i % 5}</li><li>Colour <b>red</b></li></ul>"
            f"<p class='c'>Call {shown} to order.</p><div class='f'><span>${i}.99</span> <i>VAT incl.</i></div>"
            "</section>"
        )
    out.append("</main></body></html>")
    return "".join(out)
