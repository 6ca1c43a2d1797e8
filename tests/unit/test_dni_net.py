"""Client address behind proxies, address truncation, the rate limiter, pool sizing, the script."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from config import ConfigError, Settings, WebSettings, load_settings
from web.api import BadRequest, heartbeat_request, parse_body, session_request
from web.app import Script, render_script
from web.net import ProxyPolicy, parse_networks, truncate
from web.ratelimit import RateLimiter

PROXIES = ProxyPolicy(parse_networks(["10.0.0.0/8", "::1"]))


@pytest.mark.parametrize(
    ("peer", "headers", "client", "proto"),
    [
        ("203.0.113.5", {"x-forwarded-for": "1.2.3.4", "x-forwarded-proto": "https"}, "203.0.113.5", None),
        ("10.0.0.2", {"x-forwarded-for": "1.2.3.4", "x-forwarded-proto": "https"}, "1.2.3.4", "https"),
        ("10.0.0.2", {"x-forwarded-for": "6.6.6.6, 1.2.3.4, 10.0.0.9"}, "1.2.3.4", None),  # spoofed first hop
        ("10.0.0.2", {"x-forwarded-for": "garbage, 10.0.0.9"}, "10.0.0.9", None),
        ("10.0.0.2", {}, "10.0.0.2", None),
        ("::1", {"x-forwarded-for": "[2001:db8::5]:443"}, "2001:db8::5", None),
        ("10.0.0.2", {"x-forwarded-for": "1.2.3.4", "x-forwarded-proto": "gopher"}, "1.2.3.4", None),
        ("::ffff:203.0.113.5", {}, "203.0.113.5", None),
    ],
)
def test_forwarded_headers_only_from_trusted_proxies(
    peer: str, headers: dict[str, str], client: str, proto: str | None
) -> None:
    assert PROXIES.client(peer, headers) == (client, proto)


def test_bad_proxy_setting_is_named() -> None:
    with pytest.raises(ValueError, match="web.trusted_proxies: 'nope'"):
        parse_networks(["nope"])


@pytest.mark.parametrize(
    ("address", "truncated"),
    [("198.51.100.77", "198.51.100.0"), ("2001:db8:1:2:3::9", "2001:db8:1::"), ("unknown", "unknown")],
)
def test_truncate(address: str, truncated: str) -> None:
    assert truncate(address) == truncated


def test_rate_limiter_refills_and_keys_are_separate() -> None:
    now = [0.0]
    limiter = RateLimiter(6, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(6)] == [0.0] * 6
    assert limiter.allow("a") == pytest.approx(10.0)  # one request per 10 s
    assert limiter.allow("b") == 0.0
    now[0] += 10.0
    assert limiter.allow("a") == 0.0 and limiter.allow("a") > 0


def test_rate_limiter_memory_is_bounded() -> None:
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0], max_keys=100)
    for i in range(1000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) <= 100


def test_script_config_and_size() -> None:
    text = render_script(Settings(web=WebSettings(heartbeat_seconds=45, cookie_days=7)))
    assert '{"heartbeat":45,"cookieDays":7,"cookie":"_ctv"}' in text
    assert "/*CONFIG*/" not in text and "\n//" not in text
    script = Script(Settings())
    assert len(script.gzipped) < 5 * 1024
    assert gzip.decompress(script.gzipped) == script.body


def test_body_validation_messages() -> None:
    with pytest.raises(BadRequest) as exc:
        parse_body(b"x" * 20000)
    assert exc.value.status == 413
    ok = session_request({"account": "abc", "url": "https://a.test/", "visitor": None})
    assert ok == {
        "account": "abc",
        "visitor": None,
        "url": "https://a.test/",
        "referrer": "",
        "dnt": False,
        "replace": [],
    }
    assert heartbeat_request({"account": "abc", "session": "s-1_x"})["session"] == "s-1_x"
    with pytest.raises(BadRequest, match="visitor must be null"):
        session_request({"account": "abc", "url": "https://a.test/", "visitor": "../../etc"})


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[web]\nheartbeat_seconds = 0\n", "web.heartbeat_seconds: must be a positive number"),
        ("[web]\nsession_minutes = -5\n", "web.session_minutes: must be a positive number"),
        ('[web]\npublic_url = "calltrack.example"\n', "web.public_url: must start with https://"),
        ('[web]\ntrusted_proxies = ["10.0.0.0/8", "proxy.local"]\n', "web.trusted_proxies: 'proxy.local'"),
        ('[web]\nattribution = "linear"\n', "web.attribution: must be first-touch or last-touch"),
    ],
)
def test_bad_web_settings_are_named(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "calltrack.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load_settings(path, environ={})
    assert message in str(exc.value) and str(path) in str(exc.value)
