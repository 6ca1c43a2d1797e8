"""``/metrics`` of the web service: what it counts, and who may read it.

The figures the other services add in `calltrack serve` (routes, AMI events, services up)
are read from a real `serve` process in test_serve_end_to_end.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from config import Settings, WebSettings
from tests.integration.metrics_helpers import samples
from tests.integration.test_dni_api import OVERFLOW, POOL, SITE, Clock, populate
from web.app import create_app

LEASED = 'calltrack_dni_sessions_total{shown="leased"}'
UNLEASED = 'calltrack_dni_sessions_total{shown="unleased"}'
PRIVATE = 'calltrack_dni_sessions_total{shown="private"}'


def client_for(
    engine: Engine,
    settings: Settings,
    peer: str,
    *,
    networks: tuple[str, ...] = ("127.0.0.1", "10.1.0.0/16"),
    proxies: tuple[str, ...] = (),
) -> httpx.AsyncClient:
    web = WebSettings(metrics_networks=networks, trusted_proxies=proxies, rate_limit_per_minute=10_000)
    app = create_app(settings.replace(web=web), engine, clock=Clock(), cache_seconds=0)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(peer, 40000)), base_url="http://dni.test")


@pytest.fixture
async def key(engine: Engine, settings: Settings) -> AsyncIterator[str]:
    yield populate(sessionmaker(bind=engine, expire_on_commit=False), settings)


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return samples(response.text)


async def visit(client: httpx.AsyncClient, key: str, **headers: str) -> httpx.Response:
    body = {"account": key, "visitor": None, "url": f"{SITE}/?utm_source=google", "referrer": ""}
    response = await client.post("/dni/v1/session", json=body, headers={"Origin": SITE, **headers})
    assert response.status_code == 200, response.text
    return response


async def test_sessions_leases_and_overflows_are_counted(engine: Engine, settings: Settings, key: str) -> None:
    async with client_for(engine, settings, "127.0.0.1") as client:
        before = await scrape(client)
        assert before['calltrack_pool_leases_live{account="Acme",pool="ads"}'] == 0
        assert before['calltrack_pool_overflows_total{account="Acme",pool="ads"}'] == 0
        assert before["calltrack_database_up"] == 1
        shown = [(await visit(client, key)).json()["number"] for _ in range(len(POOL) + 1)]
        assert shown[-1] == OVERFLOW
        await visit(client, key, DNT="1")
        after = await scrape(client)
    # the counters belong to the process (other tests in it count too): compare with before
    assert after.get(LEASED, 0) - before.get(LEASED, 0) == len(POOL)
    assert after.get(UNLEASED, 0) - before.get(UNLEASED, 0) == 1
    assert after.get(PRIVATE, 0) - before.get(PRIVATE, 0) == 1
    assert after['calltrack_pool_leases_live{account="Acme",pool="ads"}'] == len(POOL)
    assert after['calltrack_pool_overflows_total{account="Acme",pool="ads"}'] == 1


@pytest.mark.parametrize(
    ("peer", "headers", "networks", "proxies"),
    [
        pytest.param("198.51.100.7", {}, ("127.0.0.1", "10.1.0.0/16"), (), id="outside-the-networks"),
        pytest.param("198.51.100.7", {"X-Forwarded-For": "127.0.0.1"}, ("127.0.0.1",), (), id="forged-forwarded-for"),
        pytest.param(
            "10.9.0.1", {"X-Forwarded-For": "203.0.113.5"}, ("10.9.0.1",), ("10.9.0.1",), id="public-client-via-proxy"
        ),
        pytest.param("127.0.0.1", {}, (), (), id="metrics-off-by-default"),
    ],
)
async def test_metrics_are_not_found_by_anyone_outside_the_networks(
    engine: Engine,
    settings: Settings,
    key: str,
    peer: str,
    headers: dict[str, str],
    networks: tuple[str, ...],
    proxies: tuple[str, ...],
) -> None:
    async with client_for(engine, settings, peer, networks=networks, proxies=proxies) as client:
        response = await client.get("/metrics", headers=headers)
    assert response.status_code == 404
    assert "calltrack" not in response.text


async def test_a_client_of_an_allowed_network_behind_a_trusted_proxy_reads_them(
    engine: Engine, settings: Settings, key: str
) -> None:
    async with client_for(engine, settings, "10.9.0.1", networks=("10.1.0.0/16",), proxies=("10.9.0.1",)) as client:
        response = await client.get("/metrics", headers={"X-Forwarded-For": "10.1.2.3"})
    assert response.status_code == 200
    assert "calltrack_pool_leases_live" in response.text


def test_a_bad_metrics_network_is_refused_by_name(settings: Settings, engine: Engine) -> None:
    with pytest.raises(ValueError, match=r"web.metrics_networks: 'not-a-network'"):
        create_app(settings.replace(web=WebSettings(metrics_networks=("not-a-network",))), engine)
