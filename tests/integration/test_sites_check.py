"""`calltrack sites check URL|FILE` and `sites update`: what dni.js would swap on a page, and why not."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from tests.browser.harness import website
from tests.conftest import Cli

PAGE = """<!doctype html><html><head><meta charset="utf-8">
<script async src="http://dni.test/dni.js" data-account="{key}" data-attrs="data-phone" {extra}></script>
<script>var fallback = "404-555-0100";</script></head><body>
<header><span class="area">(404)</span> 555-0100</header>
<p>Sales: <a href="tel:+14045550100"><strong>404</strong>-555-0100</a></p>
<button onclick="location.href='tel:4045550100'">Call</button>
<div data-phone="+1 404 555 0100">chat</div>
<p>Our partner: (404) 555-0177</p>
<textarea>404-555-0100</textarea>
<!-- 404-555-0100 -->
</body></html>"""


def key_of(cli: Cli, account: str) -> str:
    return next(
        r["key"] for r in json.loads(cli.ok("sites", "list", "--format", "json").stdout) if r["account"] == account
    )


def test_check_a_url_lists_what_the_script_would_swap(cli: Cli, make_account: Callable[..., None]) -> None:
    make_account("Acme")
    with website() as site:
        cli.ok("sites", "add", "Acme", "--origin", site.origin, "--replace", "404-555-0100")
        site.pages["/"] = PAGE.format(key=key_of(cli, "Acme"), extra="")
        result = cli.ok("sites", "check", site.url("/"))
    out = result.stdout
    assert f"site: {site.origin} (account Acme, region US)" in out
    assert "business numbers: (404) 555-0100" in out
    swaps = re.findall(r"^  (.*)  \(\+14045550100\)$", out, re.M)
    assert swaps == [
        "header: (404) 555-0100",  # split over a span
        "p: 404-555-0100",  # split over <strong> inside the link
        "a: href: +14045550100",
        "button: onclick: 4045550100",
        "div: data-phone: +1 404 555 0100",  # marked by data-attrs
    ]
    assert "would swap 5:" in out
    assert "left alone, not a business number of the site (1):\n  p: (404) 555-0177" in out  # not the business's
    assert "fallback" not in out and "textarea" not in out  # scripts, fields, comments: never read


def test_check_a_saved_file_says_why_nothing_would_be_swapped(
    cli: Cli, make_account: Callable[..., None], tmp_path: Path
) -> None:
    make_account("Acme")
    make_account("Other", source="Web")
    cli.ok("sites", "add", "Acme", "--origin", "https://www.acme.test")
    cli.ok("sites", "add", "Other", "--origin", "https://other.test")
    acme, other = key_of(cli, "Acme"), key_of(cli, "Other")
    page = tmp_path / "page.html"

    page.write_text(PAGE.format(key=acme, extra=""))
    bare = cli.fails("sites", "check", str(page), "--origin", "https://acme.test")  # the bare domain
    assert "https://acme.test is not a site of any account" in bare.output
    assert "did you mean https://www.acme.test (account Acme)?" in bare.output
    http = cli.fails("sites", "check", str(page), "--origin", "http://www.acme.test")  # http, not https
    assert "did you mean https://www.acme.test (account Acme)?" in http.output

    nothing = cli.fails("sites", "check", str(page), "--origin", "https://www.acme.test")
    assert "no business number to replace: calltrack sites update Acme --origin https://www.acme.test" in nothing.output
    cli.ok("sites", "update", "Acme", "--origin", "https://www.acme.test", "--replace", "(404) 555-0100")
    assert "would swap 5:" in cli.ok("sites", "check", str(page), "--origin", "https://www.acme.test").stdout

    page.write_text(PAGE.format(key=other, extra=""))
    wrong = cli.fails("sites", "check", str(page), "--origin", "https://www.acme.test")
    assert (
        "the tag's data-account is account 'Other''s key, but https://www.acme.test is a site of 'Acme'" in wrong.output
    )
    page.write_text(PAGE.format(key="nosuchkey", extra=""))
    assert "no account's key" in cli.fails("sites", "check", str(page), "--origin", "https://www.acme.test").output
    page.write_text(PAGE.format(key=acme, extra="").replace("dni.js", "other.js"))
    assert "no dni.js tag" in cli.fails("sites", "check", str(page), "--origin", "https://www.acme.test").output
    page.write_text(PAGE.format(key=acme, extra='data-replace="555-CALL-NOW"'))
    unreadable = cli.fails("sites", "check", str(page), "--origin", "https://www.acme.test")
    assert "data-replace '555-CALL-NOW' is no phone number in region US" in unreadable.output
    page.write_text(PAGE.format(key=acme, extra="").replace("0100", "0111"))
    absent = cli.fails("sites", "check", str(page), "--origin", "https://www.acme.test")
    assert "none of the business numbers is on the page" in absent.output


def test_check_errors(cli: Cli, make_account: Callable[..., None], tmp_path: Path) -> None:
    make_account("Acme")
    assert "no such file" in cli.fails("sites", "check", str(tmp_path / "missing.html")).output
    (tmp_path / "p.html").write_text("<p>hi</p>")
    assert "needs --origin" in cli.fails("sites", "check", str(tmp_path / "p.html")).output
    with website() as site:
        assert "answered 404" in cli.fails("sites", "check", site.url("/nothing-here")).output
    assert "could not fetch" in cli.fails("sites", "check", "http://127.0.0.1:1/").output


def test_sites_update(cli: Cli, make_account: Callable[..., None]) -> None:
    make_account("Acme")
    cli.ok("sites", "add", "Acme", "--origin", "https://acme.co.uk", "--replace", "+44 20 7946 0958")
    out = cli.ok(
        "sites", "update", "Acme", "--origin", "https://acme.co.uk", "--region", "GB", "--replace", "020 7946 0959"
    )
    assert "business numbers +442079460959, region GB" in out.stdout
    assert (
        "none, region GB" in cli.ok("sites", "update", "Acme", "--origin", "https://acme.co.uk", "--no-replace").stdout
    )
    assert "nothing to change" in cli.fails("sites", "update", "Acme", "--origin", "https://acme.co.uk").output
    assert "no site" in cli.fails("sites", "update", "Acme", "--origin", "https://x.test", "--region", "GB").output
    bad = cli.fails("sites", "update", "Acme", "--origin", "https://acme.co.uk", "--replace", "555")
    assert "invalid phone number" in bad.output
