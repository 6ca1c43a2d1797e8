"""A CRM's webhook receiver on 127.0.0.1 that misbehaves on request.

It speaks HTTP/1.1 (keep-alive) over a plain asyncio server, so each answer can be
anything a real receiver does: 200, an error, no answer until the sender gives up,
a connection closed mid-request, a redirect. Every request is kept with what the
receiver made of it. Signatures are checked with its own HMAC code (written apart
from calltrack's ``webhooks.signing``, from the README's description), every body
against the JSON Schema in the repository, and ``accepted`` lists the events it
answered 2xx to: a CRM de-duplicating on the event id sees each of those once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "webhooks" / "schemas" / "events.schema.json"
_VALIDATOR: jsonschema.Draft202012Validator | None = None


def validator() -> jsonschema.Draft202012Validator:
    global _VALIDATOR
    if _VALIDATOR is None:
        schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        _VALIDATOR = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    return _VALIDATOR


def verify_signature(header: str, body: bytes, secret: str, now: float, tolerance: float = 300) -> bool:
    """The receiver's own check: t=...,v1=...[,v1=...] over "<t>.<body>", HMAC-SHA256, hex."""
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamps = [v for k, v in parts if k.strip() == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(now - int(stamps[0])) > tolerance:
        return False
    mac = hmac.new(secret.encode(), stamps[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(mac, v.strip()) for k, v in parts if k.strip() == "v1")


@dataclass
class Seen:
    """One request as the receiver got it."""

    path: str
    headers: dict[str, str]
    body: bytes
    answer: str
    at: float
    valid_for: list[str] = field(default_factory=list)
    schema_error: str | None = None

    @property
    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    @property
    def signatures(self) -> list[str]:
        header = self.headers.get("calltrack-signature", "")
        return [p.split("=", 1)[1] for p in header.split(",") if p.startswith("v1=")]


class Receiver:
    """Answers from ``script`` (one mode per request, then ``default``).

    Modes: ``ok`` (200), ``error`` (500), ``busy`` (429 with Retry-After: 0), ``slow``
    (no answer for ``slow_seconds``, then 503: the sender has given up by then),
    ``close`` (closes the connection without answering), ``redirect:URL`` (302).
    """

    def __init__(self, secrets: list[str] | None = None, host: str = "127.0.0.1", slow_seconds: float = 60.0) -> None:
        self.host = host
        self.port = 0
        self.secrets = list(secrets or [])
        self.script: deque[str] = deque()
        self.default = "ok"
        self.slow_seconds = slow_seconds
        self.seen: list[Seen] = []
        self.accepted: list[str] = []
        #: requests being answered right now, and the most there ever were at once
        self.open = 0
        self.most_open = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks/calltrack"

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    def accepted_ids(self) -> list[str]:
        return list(self.accepted)

    def problems(self) -> list[str]:
        """Requests whose signature or body did not pass (should be none)."""
        out = []
        for seen in self.seen:
            if self.secrets and not seen.valid_for:
                out.append(f"bad signature: {seen.headers.get('calltrack-signature')}")
            if seen.schema_error:
                out.append(f"schema: {seen.schema_error}")
        return out

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                mode = self.script.popleft() if self.script else self.default
                self.open += 1
                self.most_open = max(self.most_open, self.open)
                seen = Seen(path, headers, body, mode, time.time())
                now = time.time()
                seen.valid_for = [
                    s for s in self.secrets if verify_signature(headers.get("calltrack-signature", ""), body, s, now)
                ]
                try:
                    validator().validate(json.loads(body))
                except (ValueError, jsonschema.ValidationError) as exc:
                    seen.schema_error = str(exc).splitlines()[0]
                self.seen.append(seen)
                if mode == "close":
                    self.open -= 1
                    writer.close()
                    return
                if mode == "slow":
                    # no answer until the sender gives up (it closes the connection) or slow_seconds pass
                    with contextlib.suppress(TimeoutError):
                        if not await asyncio.wait_for(reader.read(1), self.slow_seconds):
                            self.open -= 1
                            return
                    status, extra, text = 503, "", b"too late"
                elif mode == "ok":
                    status, extra, text = 200, "", b"thanks"
                    self.accepted.append(json.loads(body)["id"])
                elif mode == "busy":
                    status, extra, text = 429, "Retry-After: 0\r\n", b"slow down"
                elif mode.startswith("redirect:"):
                    status, extra, text = 302, f"Location: {mode.split(':', 1)[1]}\r\n", b""
                else:
                    status, extra, text = 500, "", b"database is down"
                self.open -= 1
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Length: {len(text)}\r\n{extra}Content-Type: text/plain\r\n\r\n".encode()
                    + text
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
