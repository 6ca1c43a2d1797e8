"""Caller lookups over TLS, against a real local HTTPS server with a test certificate (trustme)."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from config import ConfigError, LookupSettings, Settings, load_settings
from lookups.https import HttpsProvider
from lookups.service import LookupService, factory
from schema.models import CallerListEntry, CallerLookup, utcnow
from tests.conftest import Cli
from tracking.calls import upsert_call

JANE, BOB, DNT, OLD = "+14045551234", "+14045559876", "+14045550000", "+14045557777"
ANSWERS = {
    JANE: {"caller_name": {"caller_name": 'Jane "JD" Doe\n', "caller_type": "CONSUMER"}, "line": {"type": "mobile"}},
    BOB: {"caller_name": {"caller_name": "Bob's Plumbing"}, "line": {"type": "landline", "carrier": "Acme Tel"}},
}


@dataclass
class Provider:
    """A provider's HTTPS endpoint on 127.0.0.1 with a certificate from a test CA."""

    url: str
    ca_file: Path
    requests: list[dict[str, str]] = field(default_factory=list)
    delay: float = 0.0


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def provider(ca: trustme.CA, tmp_path: Path) -> Iterator[Provider]:
    state = Provider(url="", ca_file=tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(str(state.ca_file))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append({"path": self.path, "authorization": self.headers.get("Authorization", "")})
            if state.delay:
                time.sleep(state.delay)
            number = self.path.rsplit("/", 1)[-1].replace("%2B", "+")
            answer = ANSWERS.get(number)
            body = json.dumps(answer or {"error": "unknown"}).encode()
            self.send_response(200 if answer else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    # a client that gave up (the timeout test) makes the late answer fail: not worth a traceback
    server.handle_error = lambda request, address: None  # type: ignore[method-assign]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"https://127.0.0.1:{server.server_address[1]}/v2/PhoneNumbers/{{number}}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def lookup_settings(provider: Provider, tmp_path: Path, **changes: object) -> LookupSettings:
    token = tmp_path / "lookup.token"
    token.write_text("tok-123\n")
    token.chmod(0o600)
    values: dict[str, object] = {
        "enabled": True,
        "url_template": provider.url,
        "token_file": str(token),
        "ca_file": str(provider.ca_file),
        "name_field": "caller_name.caller_name",
        "line_type_field": "line.type",
        "carrier_field": "line.carrier",
        "timeout_seconds": 2.0,
    }
    values.update(changes)
    return LookupSettings(**values)  # type: ignore[arg-type]


def test_a_verified_provider_answers(provider: Provider, tmp_path: Path) -> None:
    https = HttpsProvider(lookup_settings(provider, tmp_path))
    try:
        jane, nobody = https.lookup(JANE), https.lookup("+14045550101")
    finally:
        https.close()
    assert (jane.status, jane.name, jane.line_type) == ("found", 'Jane "JD" Doe', "mobile")  # the newline dropped
    assert nobody.status == "not-found"
    assert provider.requests[0] == {"path": "/v2/PhoneNumbers/%2B14045551234", "authorization": "Bearer tok-123"}


def test_a_certificate_that_does_not_verify_is_refused(provider: Provider, tmp_path: Path) -> None:
    # The provider's certificate is from a CA this machine does not trust, and none is given.
    https = HttpsProvider(lookup_settings(provider, tmp_path, ca_file=""))
    try:
        result = https.lookup(JANE)
    finally:
        https.close()
    assert result.status == "error" and result.name is None
    assert "does not verify" in (result.error or "")
    assert provider.requests == []  # the request (and the token) never left the TLS handshake


def test_only_https_urls_are_accepted(tmp_path: Path) -> None:
    cfg = tmp_path / "calltrack.toml"
    cfg.write_text('[lookup]\nenabled = true\nurl_template = "http://lookups.example.com/{number}"\n')
    with pytest.raises(ConfigError, match="lookup.url_template: must start with https://"):
        load_settings(cfg, environ={})
    assert factory(type("App", (), {"settings": Settings()})()) is None  # off by default


def _calls(factory_: sessionmaker[Session]) -> None:
    now = utcnow()
    with factory_() as s, s.begin():
        for i, (number, minutes, dnt) in enumerate(
            [
                (JANE, 5, None),
                (BOB, 10, False),
                (JANE, 12, None),
                (DNT, 3, None),
                (OLD, 600, None),
                ("+14045553333", 2, True),
            ]
        ):
            upsert_call(
                s,
                "pbx",
                f"17.{i}",
                {"caller_number": number, "started_at": now - dt.timedelta(minutes=minutes), "do_not_track": dnt},
            )
        s.add(CallerListEntry(number=DNT, kind="do-not-track"))


def test_the_service_looks_up_recent_callers_except_do_not_track_and_expires_answers(
    provider: Provider, tmp_path: Path, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    _calls(session_factory)
    cfg = settings.replace(lookup=lookup_settings(provider, tmp_path, ttl_days=30))
    service = LookupService(cfg, session_factory, HttpsProvider(cfg.lookup))
    assert service.run_pass() == 2
    asked = sorted(r["path"].rsplit("/", 1)[-1] for r in provider.requests)
    assert asked == ["%2B14045551234", "%2B14045559876"]  # not the do-not-track ones, not the old call
    assert service.run_pass() == 0  # answered: cached
    with session_factory() as s:
        rows = {r.number: r for r in s.scalars(select(CallerLookup))}
    assert rows[BOB].name == "Bob's Plumbing" and rows[BOB].carrier == "Acme Tel"
    assert rows[JANE].expires_at - rows[JANE].fetched_at == dt.timedelta(days=30)
    # 31 days on, the answers are gone, and the calls are no longer recent: nobody is asked again
    assert service.run_pass(now=utcnow() + dt.timedelta(days=31)) == 0
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(CallerLookup)) == 0
    assert len(provider.requests) == 2


def test_a_slow_provider_times_out_and_is_asked_again_later(
    provider: Provider, tmp_path: Path, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    _calls(session_factory)
    provider.delay = 1.5
    cfg = settings.replace(lookup=lookup_settings(provider, tmp_path, timeout_seconds=0.3, retry_minutes=15))
    service = LookupService(cfg, session_factory, HttpsProvider(cfg.lookup))
    service.run_pass()
    with session_factory() as s:
        rows = list(s.scalars(select(CallerLookup)))
    assert {r.status for r in rows} == {"error"} and all("no answer within 0.3 s" in (r.error or "") for r in rows)
    assert all(r.expires_at - r.fetched_at == dt.timedelta(minutes=15) for r in rows)
    provider.delay = 0
    assert service.run_pass() == 0  # still within the retry wait
    assert service.run_pass(now=utcnow() + dt.timedelta(minutes=16)) == 2


def test_callers_lookup_command(provider: Provider, tmp_path: Path, cli: Cli) -> None:
    lookup = lookup_settings(provider, tmp_path)
    cfg = tmp_path / "calltrack.toml"
    lines = ["[lookup]"] + [f"{k} = {json.dumps(getattr(lookup, k))}" for k in LookupSettings.__dataclass_fields__]
    cfg.write_text("\n".join(lines) + "\n")
    out = json.loads(cli.ok("--config", str(cfg), "callers", "lookup", "404-555-9876", "--format", "json").output)
    assert (out["status"], out["name"], out["line_type"], out["provider"]) == (
        "found",
        "Bob's Plumbing",
        "landline",
        "127.0.0.1",
    )
    cli.ok("--config", str(cfg), "callers", "lookup", "404-555-9876")
    assert len(provider.requests) == 1  # the second answer came from the cache
    cli.ok("callers", "do-not-track", "404-555-1234")
    refused = cli.fails("--config", str(cfg), "callers", "lookup", "404-555-1234")
    assert "is on a do-not-track list: it is never looked up" in refused.output
    assert len(provider.requests) == 1
