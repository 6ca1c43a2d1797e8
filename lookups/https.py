"""The HTTPS lookup provider: a URL template and a token, the certificate always verified.

``GET url_template.format(number=<E.164, URL-quoted>)`` with ``<auth_header>: <auth_scheme>
<token>``; a JSON answer is read at the configured dotted paths (``caller_name.caller_name``).
404 means the provider knows nothing about the number; anything else that is not a 200
with a JSON object, a timeout, or a certificate that does not verify is an error, which
is logged and cached briefly.  There is no way to turn verification off: a provider with
a private CA is given its ``ca_file``.
"""

from __future__ import annotations

import logging
import ssl
import urllib.parse
from pathlib import Path
from typing import Any

import httpx

from config import LookupSettings
from tracking.caller_lookup import LookupResult

logger = logging.getLogger(__name__)


class LookupSetupError(Exception):
    """The settings cannot make a provider (token file unreadable, CA file unusable)."""


def _field(data: Any, path: str) -> str | None:
    for part in path.split(".") if path else ():
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    if data is None or isinstance(data, dict | list):
        return None
    text = str(data).strip()
    # Provider text is shown in tables and exports: no control characters, bounded length.
    text = "".join(ch for ch in text if ch.isprintable())
    return text[:200] or None


class HttpsProvider:
    def __init__(self, settings: LookupSettings, *, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        parsed = urllib.parse.urlsplit(settings.url_template.replace("{number}", "x"))
        if parsed.scheme != "https" or not parsed.hostname:
            raise LookupSetupError(f"lookup.url_template {settings.url_template!r} is not an https:// URL")
        self.name = parsed.hostname
        token = ""
        if settings.token_file:
            try:
                token = Path(settings.token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise LookupSetupError(f"cannot read lookup.token_file {settings.token_file}: {exc.strerror}") from None
        headers = {"Accept": "application/json", "User-Agent": "calltrack-lookup"}
        if token:
            headers[settings.auth_header] = f"{settings.auth_scheme} {token}".strip()
        try:
            context = ssl.create_default_context(cafile=settings.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise LookupSetupError(f"cannot use lookup.ca_file {settings.ca_file}: {exc}") from None
        self.client = httpx.Client(
            verify=context,
            timeout=httpx.Timeout(settings.timeout_seconds),
            headers=headers,
            follow_redirects=False,
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    def url(self, number: str) -> str:
        return self.settings.url_template.replace("{number}", urllib.parse.quote(number, safe=""))

    def lookup(self, number: str) -> LookupResult:
        try:
            response = self.client.get(self.url(number))
        except httpx.ConnectError as exc:
            reason = str(exc)
            if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate verify failed" in reason:
                reason = f"the TLS certificate of {self.name} does not verify ({reason})"
            logger.warning("lookup: %s: %s", self.name, reason)
            return LookupResult(number, "error", error=reason)
        except httpx.TimeoutException:
            logger.warning("lookup: %s did not answer within %.1f s", self.name, self.settings.timeout_seconds)
            return LookupResult(number, "error", error=f"no answer within {self.settings.timeout_seconds:g} s")
        except httpx.HTTPError as exc:
            logger.warning("lookup: %s: %s", self.name, exc)
            return LookupResult(number, "error", error=str(exc))
        if response.status_code == 404:
            return LookupResult(number, "not-found")
        if response.status_code != 200:
            logger.warning("lookup: %s answered %d", self.name, response.status_code)
            return LookupResult(number, "error", error=f"HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            return LookupResult(number, "error", error="the answer is not JSON")
        if not isinstance(data, dict):
            return LookupResult(number, "error", error="the answer is not a JSON object")
        s = self.settings
        name, line_type, carrier = (
            _field(data, s.name_field),
            _field(data, s.line_type_field),
            _field(data, s.carrier_field),
        )
        if not (name or line_type or carrier):
            return LookupResult(number, "not-found")
        return LookupResult(number, "found", name=name, line_type=line_type, carrier=carrier)
