"""One signed POST per delivery attempt (aiohttp), through the SSRF guard, with a timeout.

The connector's resolver is the guard: aiohttp connects only to addresses the guard
has just checked, so no name can be checked once and answer differently at connect
time. Addresses written in the URL itself skip aiohttp's resolver and are checked
here before the request. Redirects are not followed; proxies from the environment
are not used (the request goes where the endpoint says, or nowhere).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from tracking.outbox import Job, Outcome
from webhooks import signing
from webhooks.guard import Guard, Refused

logger = logging.getLogger(__name__)

USER_AGENT = "calltrack-webhooks/1"
#: bytes of a receiver's answer kept to explain a failure
ANSWER_BYTES = 300


class GuardedResolver(AbstractResolver):
    """Resolves like the system, then refuses the name unless every address passes the guard."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await asyncio.get_running_loop().run_in_executor(None, self.guard.addresses, host, port)
        out: list[ResolveResult] = []
        for address in addresses:
            fam = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family not in (socket.AF_UNSPEC, fam):
                continue
            out.append(
                {
                    "hostname": host,
                    "host": address,
                    "port": port,
                    "family": fam,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        if not out:
            raise OSError(f"{host} has no address of the family asked for")
        return out

    async def close(self) -> None:
        return None


def _ssl_context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file or None)
    return context


def request_headers(job: Job, timestamp: int) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Calltrack-Event-Id": job.event_id,
        "Calltrack-Event-Type": job.type,
        "Calltrack-Delivery-Attempt": str(job.attempt),
        signing.HEADER: signing.header(job.secrets, timestamp, job.body),
    }


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


def describe_error(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, Refused):
        return f"refused: {exc}"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS: the receiver's certificate did not verify ({exc.certificate_error})"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        # the guard's refusal arrives here, wrapped by aiohttp's connector
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, Refused):
            return f"refused: {cause}"
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientOSError):
        return f"the connection closed before an answer ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


class Sender:
    """An HTTP client for deliveries; use it as ``async with Sender(...) as sender``."""

    def __init__(self, guard: Guard, timeout: float, ca_file: str = "", clock: Any = time.time) -> None:
        self.guard = guard
        self.timeout = timeout
        self.ca_file = ca_file
        self.clock = clock
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Sender:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self.guard),
            ssl=_ssl_context(self.ca_file),
            # the guard runs at every new connection; a cached answer would be one it checked earlier
            use_dns_cache=False,
            limit=0,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            trust_env=False,
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def send(self, job: Job) -> Outcome:
        assert self.session is not None, "use the sender inside `async with`"
        try:
            host, port = self.guard.split(job.url)
            if _is_literal(host):
                self.guard.addresses(host, port)
            headers = request_headers(job, int(self.clock()))
            async with self.session.post(job.url, data=job.body, headers=headers, allow_redirects=False) as resp:
                status = resp.status
                if 200 <= status < 300:
                    return Outcome(job.delivery_id, job.endpoint_id, True, status)
                answer = (await resp.content.read(ANSWER_BYTES)).decode("utf-8", "replace")
                if 300 <= status < 400:
                    where = resp.headers.get("Location", "")
                    error = f"HTTP {status}: redirects are not followed (Location: {where[:200]}); use the final URL"
                else:
                    text = " ".join(answer.split())[:200]
                    error = f"HTTP {status}" + (f": {text}" if text else "")
                return Outcome(
                    job.delivery_id,
                    job.endpoint_id,
                    False,
                    status,
                    error,
                    _retry_after(resp.headers.get("Retry-After")) if status in (429, 503) else None,
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return Outcome(job.delivery_id, job.endpoint_id, False, None, describe_error(exc, self.timeout))


def _is_literal(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
