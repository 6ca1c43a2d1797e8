"""The signature header and the retry schedule, as receivers and operators see them."""

from __future__ import annotations

import hashlib
import hmac
import random

from tests.fakes.webhook_receiver import verify_signature
from tracking.outbox import backoff_seconds
from webhooks import signing

BODY = '{"id":"evt_1","type":"call.completed","data":{"caller_name":"Zoë \\"JD\\"\\n"}}'.encode()


def test_header_is_t_then_one_v1_per_secret_over_t_dot_body() -> None:
    value = signing.header(["whsec_new", "whsec_old"], 1_767_225_600, BODY)
    t, new, old = value.split(",")
    assert t == "t=1767225600"
    mac = hmac.new(b"whsec_new", b"1767225600." + BODY, hashlib.sha256).hexdigest()
    assert new == f"v1={mac}"
    assert old == "v1=" + hmac.new(b"whsec_old", b"1767225600." + BODY, hashlib.sha256).hexdigest()


def test_a_receiver_accepts_either_secret_and_refuses_old_timestamps_or_changed_bodies() -> None:
    value = signing.header(["whsec_new", "whsec_old"], 1_000_000, BODY)
    for check in (signing.verify, verify_signature):  # calltrack's helper and the test receiver's own code
        assert check(value, BODY, "whsec_old", 1_000_000 + 299)
        assert check(value, BODY, "whsec_new", 1_000_000 - 10)
        assert not check(value, BODY, "whsec_new", 1_000_000 + 301)  # a replay after five minutes
        assert not check(value, BODY + b" ", "whsec_new", 1_000_000)
        assert not check(value, BODY, "whsec_other", 1_000_000)
        assert not check("v1=" + value.split("v1=")[1], BODY, "whsec_new", 1_000_000)  # no timestamp


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    for attempts, full in ((1, 10), (2, 20), (3, 40), (9, 2560), (20, 3600)):
        waits = [backoff_seconds(attempts, 10, 3600, rng) for _ in range(200)]
        assert all(full / 2 <= w <= full for w in waits)
        assert max(waits) - min(waits) > full / 4  # really spread, so retries do not arrive together
