"""The ``Calltrack-Signature`` header: Stripe's scheme, which integrators know.

``Calltrack-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`` keyed
with the endpoint's secret (the whole ``whsec_...`` string, as UTF-8). During a
secret rotation's overlap the header carries one ``v1`` per secret, the new one
first; a receiver accepts the request when any of them matches its secret. The
time is inside the signed text, so a receiver that refuses old timestamps (five
minutes, say) also refuses a recorded request played again later.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

HEADER = "Calltrack-Signature"
#: how old a timestamp :func:`verify` accepts by default, seconds
TOLERANCE = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def header(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    if not secrets:
        raise ValueError("no secret to sign with")
    return ",".join([f"t={timestamp}", *(f"v1={sign(s, timestamp, body)}" for s in secrets)])


def verify(value: str, body: bytes, secret: str, now: float, tolerance: float = TOLERANCE) -> bool:
    """Whether *value* (the header) signs *body* with *secret*, at most *tolerance* seconds from *now*."""
    timestamp = None
    candidates = []
    for item in value.split(","):
        key, _, val = item.strip().partition("=")
        if key == "t" and val.isdigit():
            timestamp = int(val)
        elif key == "v1":
            candidates.append(val)
    if timestamp is None or abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body)
    return any(hmac.compare_digest(expected, c) for c in candidates)
