"""Caller lists through the CLI: blocked and do-not-track callers."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Cli


def lists(cli: Cli, *args: str) -> list[dict[str, str]]:
    return json.loads(cli.ok("callers", "list", "--format", "json", *args).output)


def test_block_and_do_not_track(cli: Cli, make_account) -> None:  # type: ignore[no-untyped-def]
    make_account()
    cli.ok("callers", "block", "(404) 555-1234", "--reason", 'robocaller "Rachel"')
    cli.ok("callers", "block", "Anonymous", "--account", "Acme")
    cli.ok("callers", "do-not-track", "+44 20 7946 0958", "--account", "Acme")
    rows = lists(cli)
    assert [(r["number"], r["list"], r["account"]) for r in rows] == [
        ("+14045551234", "blocked", "(all accounts)"),
        ("anonymous", "blocked", "Acme"),
        ("+442079460958", "do-not-track", "Acme"),
    ]
    assert rows[0]["reason"] == 'robocaller "Rachel"'
    assert [r["number"] for r in lists(cli, "--list", "do-not-track")] == ["+442079460958"]
    assert [r["number"] for r in lists(cli, "--account", "Acme")] == ["anonymous", "+442079460958"]


def test_remove(cli: Cli, make_account) -> None:  # type: ignore[no-untyped-def]
    make_account()
    cli.ok("callers", "block", "4045551234")
    cli.ok("callers", "do-not-track", "4045551234")
    assert "removed 1 entry" in cli.ok("callers", "remove", "404.555.1234", "--list", "blocked").output
    assert [r["list"] for r in lists(cli)] == ["do-not-track"]
    assert "removed 1 entry" in cli.ok("callers", "remove", "+14045551234").output
    assert "is on no caller list" in cli.fails("callers", "remove", "+14045551234").output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("callers", "block", "404 555 1234; DROP"), "invalid caller"),
        (("callers", "block", "Jane Doe"), "invalid caller"),
        (("callers", "block", "4045551234", "--account", "Nobody"), "unknown account 'Nobody'"),
        (("callers", "block", "4045551234", "--reason", "a\nb"), "control characters"),
    ],
)
def test_bad_caller_list_input(cli: Cli, make_account, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    make_account()
    assert message in cli.fails(*args).output
    assert lists(cli) == []


def test_listing_twice_is_refused(cli: Cli) -> None:
    cli.ok("callers", "block", "4045551234")
    assert "already on the blocked list" in cli.fails("callers", "block", "+1 404 555 1234").output
