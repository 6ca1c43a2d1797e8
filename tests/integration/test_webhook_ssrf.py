"""Server-side request forgery: an endpoint that points inside the network is refused when it is added
and when a delivery is sent (a name that resolves elsewhere by then), and a redirect is never followed.

No test here lets a packet leave for a non-loopback address: names are resolved by the test's own
table, and a tripwire on the event loop's connect refuses (and records) any attempt to reach an
address outside the loopback range, so a missing guard fails the test without sending anything."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from schema.models import Account, WebhookDelivery
from tests.conftest import Cli
from tests.fakes.webhook_receiver import Receiver
from tests.integration.webhook_helpers import answered_calls, fast, route, running, states, until, write_config
from tracking import outbox
from tracking.webhook_endpoints import add_endpoint
from webhooks.guard import Guard, Refused


@pytest.fixture
def tripwire(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Connections to anything but loopback fail before they are made; the addresses tried are listed."""
    tried: list[str] = []
    real = asyncio.selector_events.BaseSelectorEventLoop.sock_connect

    async def guarded(self: Any, sock: Any, address: Any) -> Any:
        host = str(address[0])
        if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            tried.append(host)
            raise ConnectionRefusedError(f"tripwire: the test never connects to {host}")
        return await real(self, sock, address)

    monkeypatch.setattr(asyncio.selector_events.BaseSelectorEventLoop, "sock_connect", guarded)
    yield tried


def table(names: dict[str, Sequence[str]]) -> Callable[[str, int], Sequence[str]]:
    def resolve(host: str, port: int) -> Sequence[str]:
        if host not in names:
            raise Refused(f"{host} does not resolve")
        return names[host]

    return resolve


INTERNAL = {
    "crm.loopback.test": ["127.0.0.1"],
    "crm.lan.test": ["10.0.0.1"],
    "crm.metadata.test": ["169.254.169.254"],
    "crm.v6.test": ["::1"],
    "crm.mixed.test": ["93.184.216.34", "192.168.1.20"],
    "crm.mapped.test": ["::ffff:10.0.0.1"],
}


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("crm.loopback.test", "crm.loopback.test resolves to 127.0.0.1 (loopback address)"),
        ("crm.lan.test", "crm.lan.test resolves to 10.0.0.1 (private address)"),
        ("crm.metadata.test", "crm.metadata.test resolves to 169.254.169.254 (cloud metadata address)"),
        ("crm.v6.test", "crm.v6.test resolves to ::1 (loopback address)"),
        ("crm.mixed.test", "crm.mixed.test resolves to 192.168.1.20 (private address)"),
        ("crm.mapped.test", "crm.mapped.test resolves to ::ffff:10.0.0.1 (private address)"),
    ],
)
def test_names_resolving_inside_the_network_are_refused(host: str, why: str) -> None:
    with pytest.raises(Refused) as refused:
        Guard(resolve=table(INTERNAL)).check_url(f"https://{host}/hooks")
    assert str(refused.value).startswith(why) and "allow_networks" in str(refused.value)


def test_the_administrator_allows_a_network_and_only_that_one() -> None:
    guard = Guard(["10.0.0.0/8"], resolve=table(INTERNAL))
    assert guard.check_url("https://crm.lan.test/hooks") == ["10.0.0.1"]
    assert guard.check_url("https://crm.mapped.test/hooks") == ["::ffff:10.0.0.1"]
    with pytest.raises(Refused):
        guard.check_url("https://crm.metadata.test/")
    assert Guard(resolve=table({"crm.example.com": ["93.184.216.34"]})).check_url("https://crm.example.com/x")


def test_cli_refuses_internal_and_malformed_urls_at_add_time(cli: Cli, make_account: Callable[..., None]) -> None:
    make_account()
    cases = {
        "https://localhost/hooks": "localhost resolves to 127.0.0.1 (loopback address)",
        "https://127.0.0.1:8443/hooks": "127.0.0.1 is (loopback address)",
        "https://[::1]/hooks": "::1 is (loopback address)",
        "https://10.0.0.1/hooks": "10.0.0.1 is (private address)",
        "https://169.254.169.254/latest/meta-data/": "169.254.169.254 is (cloud metadata address)",
        "https://[::ffff:169.254.169.254]/": "::ffff:169.254.169.254 is (cloud metadata address)",
        "https://0.0.0.0/": "0.0.0.0 is (unspecified address)",
        "http://crm.example.com/hooks": "webhooks go over HTTPS",
        "https://user:pw@crm.example.com/": "no user name or password in the URL",
        "ftp://crm.example.com/": "the URL must be https://HOST/",
        "https://crm.example.com/a b": "must not contain spaces or control characters",
        "https://crm.example.com/#frag": "the fragment is never sent",
        "https://no-such-host.invalid/": "no-such-host.invalid does not resolve",
    }
    for url, why in cases.items():
        failed = cli.fails("webhooks", "add", "Acme", url)
        assert why in failed.output, (url, failed.output)
        assert failed.output.count("\n") == 1  # one line, no traceback
    assert cli.ok("webhooks", "list").output.strip() == "(none)"


def test_loopback_is_accepted_only_when_settings_allow_it(
    cli: Cli, make_account: Callable[..., None], tmp_path: Path
) -> None:
    make_account()
    assert "loopback address" in cli.fails("webhooks", "add", "Acme", "http://127.0.0.1:9/hooks").output
    write_config(tmp_path)  # allow_networks = ["127.0.0.1/32"]
    cli.ok("webhooks", "add", "Acme", "http://127.0.0.1:9/hooks")
    assert "127.0.0.2 is (loopback address)" in cli.fails("webhooks", "add", "Acme", "http://127.0.0.2:9/").output


@pytest.fixture
def acme(cli: Cli, make_account: Callable[..., None], tmp_path: Path) -> None:
    make_account()
    cli.ok("numbers", "add", "800-555-0100", "--account", "Acme", "--source", "Google Ads", "--forward-to", "PJSIP/100")
    write_config(tmp_path)


def endpoint_for(session_factory: sessionmaker[Session], url: str) -> int:
    """An endpoint stored as if it had passed the add-time check (its name resolved elsewhere then)."""
    with session_factory() as s, s.begin():
        account = s.scalars(select(Account)).one()
        return add_endpoint(s, account.name, url, ["call.started"]).id


@pytest.mark.parametrize("host", ["crm.lan.test", "crm.metadata.test", "crm.v6.test", "crm.loopback.test", "10.0.0.1"])
async def test_a_name_that_resolves_inside_at_send_time_is_refused_before_connecting(
    acme: None,
    settings: Settings,
    session_factory: sessionmaker[Session],
    asterisk_traffic: Path,
    tripwire: list[str],
    host: str,
) -> None:
    endpoint_for(session_factory, f"https://{host}/hooks")
    ((linkedid, _),) = answered_calls(asterisk_traffic, 1)
    route(settings, linkedid)
    # the loopback allowance is for 127.0.0.1 only; no name here may use it through DNS either
    guard = Guard(["127.0.0.2/32"], resolve=table(INTERNAL))
    # a generous timeout: the refusal comes before any connection, whatever the machine's load
    async with running(fast(settings, retry_hours=0.0003, timeout_seconds=10), session_factory, guard=guard):
        await until(lambda: states(session_factory) == ["dead"], "the refused delivery to die")
    with session_factory() as s:
        delivery = s.scalars(select(WebhookDelivery)).one()
    assert delivery.last_status is None
    assert delivery.last_error is not None and delivery.last_error.startswith(f"refused: {host} ")
    assert tripwire == []  # refused by the guard, not by the tripwire


async def test_a_redirect_to_an_internal_address_is_not_followed(
    acme: None, settings: Settings, session_factory: sessionmaker[Session], asterisk_traffic: Path, tripwire: list[str]
) -> None:
    # "inside" stands for an internal service: on 127.0.0.2, which the settings do not allow
    async with Receiver() as crm, Receiver(host="127.0.0.2") as inside:
        crm.default = f"redirect:http://127.0.0.2:{inside.port}/admin"
        endpoint_for(session_factory, crm.url)
        ((linkedid, _),) = answered_calls(asterisk_traffic, 1)
        route(settings, linkedid)
        async with running(fast(settings, retry_hours=0.0003, timeout_seconds=10), session_factory):
            await until(lambda: states(session_factory) == ["dead"], "the redirected delivery to die")
        assert crm.seen and inside.seen == []
    with session_factory() as s:
        delivery = s.scalars(select(WebhookDelivery)).one()
    assert delivery.last_status == 302
    assert delivery.last_error == (
        f"HTTP 302: redirects are not followed (Location: http://127.0.0.2:{inside.port}/admin); use the final URL"
    )
    assert tripwire == []


def test_event_types_are_checked() -> None:
    assert outbox.parse_event_types(" call.completed,call.started ") == ["call.started", "call.completed"]
    with pytest.raises(Exception, match="no event types given"):
        outbox.parse_event_types(" , ")
