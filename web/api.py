"""Validation of the DNI API's JSON bodies: each problem is one message naming its field."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import orjson

MAX_BODY = 16 * 1024
MAX_URL = 4096
_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_VISITOR = re.compile(r"^[A-Za-z0-9_\-]{8,64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadRequest(Exception):
    """A 4xx answer: ``{"error": message, "field": field}``."""

    def __init__(self, status: int, field: str | None, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message
        #: seconds, for 429
        self.retry_after = retry_after

    def as_json(self) -> dict[str, Any]:
        return {"error": self.message, "field": self.field}


def parse_body(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_BODY:
        raise BadRequest(413, None, f"request body too large ({len(raw)} bytes, at most {MAX_BODY})")
    try:
        # orjson: strict JSON (no NaN, no lone surrogates, integers of 64 bits), 4x json's speed
        data = orjson.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(400, None, "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest(400, None, "request body must be a JSON object")
    return data


def _only(data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise BadRequest(400, str(key)[:64], f"unknown field {str(key)[:64]!r} (allowed: {', '.join(allowed)})")


def _string(data: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise BadRequest(400, key, f"{key} is required")
        return None
    if not isinstance(value, str):
        raise BadRequest(400, key, f"{key} must be a string")
    if _CONTROL.search(value):
        raise BadRequest(400, key, f"{key} must not contain control characters")
    return value


def _account(data: dict[str, Any]) -> str:
    account = _string(data, "account", required=True) or ""
    if not _KEY.match(account):
        raise BadRequest(400, "account", "account must be the data-account key of the snippet")
    return account


def _page_url(value: str, key: str) -> str:
    if len(value) > MAX_URL:
        raise BadRequest(400, key, f"{key} is too long ({len(value)} characters, at most {MAX_URL})")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise BadRequest(400, key, f"{key} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadRequest(400, key, f"{key} must be an absolute http(s) URL")
    return value


#: numbers a page's snippet may name (data-replace), and their length
MAX_REPLACE = 10
MAX_REPLACE_TEXT = 40


def _replace(data: dict[str, Any]) -> list[str]:
    """The snippet's data-replace numbers, as written (read by the server in the site's region)."""
    value = data.get("replace")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(400, "replace", "replace must be a list of phone numbers (strings)")
    if len(value) > MAX_REPLACE:
        raise BadRequest(400, "replace", f"replace names {len(value)} numbers, at most {MAX_REPLACE}")
    for v in value:
        if len(v) > MAX_REPLACE_TEXT or _CONTROL.search(v):
            raise BadRequest(400, "replace", f"replace holds {v[:50]!r}, not a phone number")
    return list(value)


def session_request(data: dict[str, Any]) -> dict[str, Any]:
    """account, visitor, url, referrer, dnt, replace: checked, in their stored form."""
    _only(data, ("account", "visitor", "url", "referrer", "dnt", "replace"))
    account = _account(data)
    visitor = _string(data, "visitor", required=False)
    if visitor is not None and not _VISITOR.match(visitor):
        raise BadRequest(400, "visitor", "visitor must be null or the id an earlier answer gave")
    url = _page_url(_string(data, "url", required=True) or "", "url")
    referrer = _string(data, "referrer", required=False) or ""
    if referrer:
        if len(referrer) > MAX_URL:
            raise BadRequest(400, "referrer", f"referrer is too long ({len(referrer)} characters, at most {MAX_URL})")
        try:
            parts = urlsplit(referrer)
        except ValueError:
            raise BadRequest(400, "referrer", "referrer is not a valid URL") from None
        if not parts.scheme or not (parts.netloc or parts.path):
            raise BadRequest(400, "referrer", "referrer must be an absolute URL or empty")
    dnt = data.get("dnt", False)
    if not isinstance(dnt, bool):
        raise BadRequest(400, "dnt", "dnt must be true or false")
    replace = _replace(data)
    return {"account": account, "visitor": visitor, "url": url, "referrer": referrer, "dnt": dnt, "replace": replace}


def heartbeat_request(data: dict[str, Any]) -> dict[str, Any]:
    _only(data, ("account", "session", "replace"))
    account = _account(data)
    session = _string(data, "session", required=True) or ""
    if not _KEY.match(session):
        raise BadRequest(400, "session", "session must be the id the session answer gave")
    return {"account": account, "session": session, "replace": _replace(data)}
