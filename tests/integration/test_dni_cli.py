"""`calltrack sites`, `rules`, `pools status` and `web serve` on both databases."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from config import Settings
from schema.models import NumberPool
from tests.conftest import Cli
from tracking.pools import overflow_counts


def test_sites_add_prints_the_snippet_and_list(cli: Cli, make_account: Callable[..., None]) -> None:
    make_account("Acme")
    result = cli.ok("sites", "add", "Acme", "--origin", "https://WWW.Acme.test:443/", "--replace", "(404) 555-0100")
    snippet = result.stdout.strip().splitlines()[-1]
    listing = json.loads(cli.ok("sites", "list", "--format", "json").stdout)
    assert listing == [
        {
            "account": "Acme",
            "origin": "https://www.acme.test",
            "key": listing[0]["key"],
            "replace": "+14045550100",
            "region": "US",
            "forms": "off",
        }
    ]
    key = listing[0]["key"]
    assert snippet == (
        f'<script async src="http://127.0.0.1:8080/dni.js" data-account="{key}" data-replace="+14045550100"></script>'
    )
    cli.ok("sites", "add", "Acme", "--origin", "http://localhost:8000")
    assert "localhost:8000" in cli.ok("sites", "list", "--account", "Acme").stdout
    cli.ok("sites", "remove", "Acme", "--origin", "http://localhost:8000")
    assert "localhost" not in cli.ok("sites", "list").stdout


def test_sites_errors(cli: Cli, make_account: Callable[..., None]) -> None:
    make_account("Acme")
    cli.ok("sites", "add", "Acme", "--origin", "https://acme.test")
    assert "already belongs" in cli.fails("sites", "add", "Acme", "--origin", "https://acme.test/").output
    for bad in ("acme.test", "ftp://acme.test", "https://acme.test/page", "https://user@acme.test", "https://a b.test"):
        assert "invalid origin" in cli.fails("sites", "add", "Acme", "--origin", bad).output
    assert "unknown account" in cli.fails("sites", "add", "Nobody", "--origin", "https://x.test").output
    assert (
        "invalid phone number"
        in cli.fails("sites", "add", "Acme", "--origin", "https://b.test", "--replace", "555-CALL-NOW").output
    )
    assert "no site" in cli.fails("sites", "remove", "Acme", "--origin", "https://never.test").output


def test_sites_add_reads_replace_numbers_in_the_sites_region(cli: Cli, make_account: Callable[..., None]) -> None:
    make_account("Acme")
    uk = cli.ok(
        "sites", "add", "Acme", "--origin", "https://acme.co.uk", "--region", "gb", "--replace", "020 7946 0958"
    )
    assert 'data-replace="+442079460958"' in uk.stdout
    de = cli.ok(
        "sites", "add", "Acme", "--origin", "https://acme.de", "--region", "DE",
        "--replace", "030 901820", "--replace", "+49 (0)30 901820", "--replace", "+44 20 7946 0958",
    )  # fmt: skip
    assert 'data-replace="+4930901820,+442079460958"' in de.stdout  # the same number twice is named once
    rows = {r["origin"]: r for r in json.loads(cli.ok("sites", "list", "--format", "json").stdout)}
    assert (rows["https://acme.co.uk"]["replace"], rows["https://acme.co.uk"]["region"]) == ("+442079460958", "GB")
    assert rows["https://acme.de"]["replace"] == "+4930901820 +442079460958"


def test_sites_add_refuses_numbers_it_cannot_use(cli: Cli, make_account: Callable[..., None]) -> None:
    make_account("Acme")
    # a UK national number on a site read as US: refused, with how to write it
    out = cli.fails("sites", "add", "Acme", "--origin", "https://a.test", "--replace", "020 7946 0958").output
    assert "not a valid number in region US" in out and "+44 20 7946 0958" in out and "--region" in out
    # +49 30 901820 is German, not the North American 493-090-1820: accepted as German
    ok = cli.ok("sites", "add", "Acme", "--origin", "https://b.test", "--replace", "+49 30 901820")
    assert 'data-replace="+4930901820"' in ok.stdout
    cli.ok(
        "numbers", "add", "+1 770 555 0151", "--account", "Acme", "--source", "Google Ads", "--forward-to", "PJSIP/1"
    )
    out = cli.fails("sites", "add", "Acme", "--origin", "https://c.test", "--replace", "(770) 555-0151").output
    assert "is one of the account's tracking numbers" in out
    assert "unknown region" in cli.fails("sites", "add", "Acme", "--origin", "https://d.test", "--region", "UK").output
    assert (
        "invalid phone number"
        in cli.fails("sites", "add", "Acme", "--origin", "https://e.test", "--replace", "555").output
    )
    origins = [r["origin"] for r in json.loads(cli.ok("sites", "list", "--format", "json").stdout)]
    assert origins == ["https://b.test"]  # nothing refused was stored


def test_rules_add_list_remove(cli: Cli, make_account: Callable[..., None]) -> None:
    make_account("Acme", source="Google Ads")
    cli.ok("sources", "add", "Website", "--account", "Acme")
    cli.ok("rules", "add", "default", "--account", "Acme", "--source", "Website")
    cli.ok("rules", "add", "referrer_group", "search", "--account", "Acme", "--source", "Website")
    out = cli.ok("rules", "add", "param", "UTM_SOURCE=google", "--account", "Acme", "--source", "Google Ads").stdout
    assert "param utm_source=google -> Google Ads" in out
    rows = json.loads(cli.ok("rules", "list", "--format", "json").stdout)
    assert [(r["kind"], r["pattern"], r["source"]) for r in rows] == [
        ("param", "utm_source=google", "Google Ads"),
        ("referrer_group", "search", "Website"),
        ("default", "", "Website"),
    ]
    cli.ok("rules", "remove", str(rows[1]["id"]), "--account", "Acme")
    assert len(json.loads(cli.ok("rules", "list", "--account", "Acme", "--format", "json").stdout)) == 2
    assert "no source rule" in cli.fails("rules", "remove", str(rows[1]["id"])).output


def test_rules_errors(cli: Cli, make_account: Callable[..., None]) -> None:
    make_account("Acme", source="Ads")
    make_account("Other", source="Ads")
    cli.ok("rules", "add", "default", "--account", "Acme", "--source", "Ads")
    assert (
        "already has a default rule"
        in cli.fails("rules", "add", "default", "--account", "Acme", "--source", "Ads").output
    )
    assert "unknown source" in cli.fails("rules", "add", "param", "gclid", "--account", "Acme", "--source", "TV").output
    assert "needs a pattern" in cli.fails("rules", "add", "referrer", "--account", "Acme", "--source", "Ads").output
    assert (
        "invalid referrer host"
        in cli.fails("rules", "add", "referrer", "not a host", "--account", "Acme", "--source", "Ads").output
    )
    assert "Invalid value" in cli.fails("rules", "add", "utm", "x", "--account", "Acme", "--source", "Ads").output
    assert (
        "invalid priority"
        in cli.fails(
            "rules", "add", "param", "gclid", "--account", "Acme", "--source", "Ads", "--priority", "-1"
        ).output
    )
    rule_id = json.loads(cli.ok("rules", "list", "--format", "json").stdout)[0]["id"]
    assert "no source rule" in cli.fails("rules", "remove", str(rule_id), "--account", "Other").output


def test_pools_status_after_sessions(
    cli: Cli, make_account: Callable[..., None], engine: Engine, settings: Settings
) -> None:
    from web.dni import AccountCache, Dni, PageView

    make_account("Acme", source="Ads")
    cli.ok(
        "pools",
        "create",
        "web",
        "--account",
        "Acme",
        "--hold-minutes",
        "30",
        "--source",
        "Ads",
        "--overflow",
        "+14045550199",
    )
    cli.ok(
        "pools", "add-numbers", "web", "+14045550181", "+14045550182", "--account", "Acme", "--forward-to", "PJSIP/1"
    )
    cli.ok("rules", "add", "default", "--account", "Acme", "--source", "Ads")
    key = json.loads(cli.ok("accounts", "list", "--format", "json").stdout)[0]["public_key"]
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    dni = Dni(settings, engine)
    info = AccountCache(factory).get(key)
    assert info is not None
    answers = [dni.start(info, PageView(key, None, "https://acme.test/", "")) for _ in range(4)]
    assert [a.number for a in answers].count("+14045550199") == 2
    rows = json.loads(cli.ok("pools", "status", "--format", "json").stdout)
    assert rows == [
        {
            "account": "Acme",
            "pool": "web",
            "source": "Ads",
            "hold_minutes": 30,
            "size": 2,
            "live": 2,
            "peak": 2,
            "overflow_count": 2,
            "suggested_size": 4,
            "advice": "pool too small: add 2",
        }
    ]
    table = cli.ok("pools", "status", "--account", "Acme").stdout
    assert "SUGGESTED_SIZE" in table and "pool too small: add 2" in table
    with factory() as s:
        assert overflow_counts(s) == {s.query(NumberPool).one().id: 2}


def test_pools_status_empty_pool(cli: Cli, make_account: Callable[..., None]) -> None:
    make_account("Acme", pool="spare")
    rows = json.loads(cli.ok("pools", "status", "--format", "json").stdout)
    assert (rows[0]["size"], rows[0]["live"], rows[0]["advice"]) == (0, 0, "empty: add numbers")
    assert "unknown account" in cli.fails("pools", "status", "--account", "Nobody").output


def test_web_serve_rejects_a_bad_listen_address(cli: Cli) -> None:
    assert "HOST:PORT" in cli.fails("web", "serve", "--listen", "nowhere").output


async def test_web_service_serves_until_stopped(engine: Engine, settings: Settings) -> None:
    from calltrack.services import SERVICES
    from web.service import WebService

    assert SERVICES["web"] == "web.service:factory"
    service = WebService(settings, engine, listen="127.0.0.1:0")
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    deadline = time.monotonic() + 30
    while not service.port:
        assert time.monotonic() < deadline and not task.done(), "the web service did not listen"
        await asyncio.sleep(0.02)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}") as client:
        script = await client.get("/dni.js")
        refused = await client.post("/dni/v1/session", json={"account": "nokey", "url": "https://a.test/"})
    assert script.status_code == 200 and "data-account" in script.text
    assert refused.status_code == 404 and refused.json()["field"] == "account"
    stop.set()
    await asyncio.wait_for(task, 10)


def test_web_serve_as_a_process_answers_and_stops_on_sigterm(database_url: str, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path), "CALLTRACK_CONFIG": "", "CALLTRACK_DATABASE_URL": database_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "calltrack.main", "web", "serve", "--listen", f"127.0.0.1:{port}"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "calltrack web serve exited"
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "calltrack web serve did not listen"
                time.sleep(0.1)
        assert response.json() == {"ok": True}
        assert "dni/v1/session" in httpx.get(f"http://127.0.0.1:{port}/dni.js").text
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert f"listening on http://127.0.0.1:{port}" in err.decode()


def test_web_serve_on_a_busy_port_says_so_in_one_line(cli: Cli) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli.fails("web", "serve", "--listen", f"127.0.0.1:{port}")
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "in use" in result.output


async def test_web_service_on_a_busy_port_fails_cleanly(engine: Engine, settings: Settings) -> None:
    from web.service import WebService

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        service = WebService(settings, engine, listen=f"127.0.0.1:{busy.getsockname()[1]}")
        with pytest.raises(RuntimeError, match="cannot listen on"):
            await service.run(asyncio.Event())
