"""Number management through the `calltrack` command, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.conftest import Cli

ADD = ("numbers", "add")


def add_number(cli: Cli, number: str = "404.555.0100", *extra: str) -> None:
    cli.ok(*ADD, number, "--account", "Acme", "--source", "Google Ads", "--forward-to", "PJSIP/100", *extra)


def numbers_json(cli: Cli, *filters: str) -> list[dict[str, object]]:
    return json.loads(cli.ok("numbers", "list", "--format", "json", *filters).output)


# --- accounts and sources ---------------------------------------------------------


def test_accounts_add_and_list(cli: Cli) -> None:
    cli.ok("accounts", "add", "Acme Plumbing", "--timezone", "America/New_York")
    cli.ok("accounts", "add", 'Zed\'s "Best" Café')
    rows = json.loads(cli.ok("accounts", "list", "--format", "json").output)
    assert [(r["name"], r["timezone"]) for r in rows] == [
        ("Acme Plumbing", "America/New_York"),
        ('Zed\'s "Best" Café', "UTC"),
    ]
    assert all(len(r["public_key"]) >= 16 for r in rows)
    table = cli.ok("accounts", "list").output
    assert "Acme Plumbing" in table and "America/New_York" in table


def test_account_errors(cli: Cli) -> None:
    cli.ok("accounts", "add", "Acme")
    assert "already exists" in cli.fails("accounts", "add", "acme").output
    assert "unknown timezone 'Mars/Olympus'" in cli.fails("accounts", "add", "B", "--timezone", "Mars/Olympus").output
    assert "must not be empty" in cli.fails("accounts", "add", "  ").output
    assert "control characters" in cli.fails("accounts", "add", "Bad\nName").output
    assert len(json.loads(cli.ok("accounts", "list", "--format", "json").output)) == 1


def test_sources_add_list_rename(cli: Cli, make_account) -> None:  # type: ignore[no-untyped-def]
    make_account()
    cli.ok("sources", "add", "Flyer", "--account", "Acme", "--medium", "print", "--campaign", "Spring 2027")
    rows = list(csv.DictReader(io.StringIO(cli.ok("sources", "list", "--format", "csv").output)))
    assert [(r["name"], r["medium"], r["campaign"]) for r in rows] == [
        ("Flyer", "print", "Spring 2027"),
        ("Google Ads", "", ""),
    ]
    cli.ok("sources", "rename", "Flyer", "Door hangers", "--account", "Acme")
    names = [r["name"] for r in json.loads(cli.ok("sources", "list", "--account", "Acme", "--format", "json").output)]
    assert names == ["Door hangers", "Google Ads"]
    assert "already exists" in cli.fails("sources", "rename", "Door hangers", "google ads", "--account", "Acme").output
    assert "unknown source 'Nope'" in cli.fails("sources", "rename", "Nope", "X", "--account", "Acme").output
    assert "unknown account 'Nobody'" in cli.fails("sources", "add", "X", "--account", "Nobody").output
    assert "already exists" in cli.fails("sources", "add", "GOOGLE ADS", "--account", "Acme").output


# --- numbers ---------------------------------------------------------------------


def test_spellings_of_one_number_are_duplicates(cli: Cli, make_account) -> None:  # type: ignore[no-untyped-def]
    make_account()
    add_number(cli, "+1 (404) 555-0100")
    for spelling in ("404.555.0100", "14045550100"):
        result = cli.fails(*ADD, spelling, "--account", "Acme", "--source", "Google Ads", "--forward-to", "PJSIP/1")
        assert "number +14045550100 already exists" in result.output
    rows = numbers_json(cli)
    assert [r["number"] for r in rows] == ["+14045550100"]
    assert rows[0]["forward_to"] == "PJSIP/100"


def test_add_with_every_option_and_show(cli: Cli, make_account) -> None:  # type: ignore[no-untyped-def]
    make_account()
    cli.ok(
        *ADD,
        "4045550123",
        "--account",
        "Acme",
        "--source",
        "Google Ads",
        "--forward-to",
        "PJSIP/100&PJSIP/101",
        "--timeout",
        "25",
        "--no-record",
        "--whisper",
        "custom/ad-call",
        "--label",
        'Spring "promo" ✓',
    )
    shown = json.loads(cli.ok("numbers", "show", "(404) 555-0123", "--format", "json").output)
    assert shown["number"] == "+14045550123"
    assert shown["display"] == "(404) 555-0123"
    assert (shown["forward_to"], shown["timeout"], shown["record"]) == ("PJSIP/100&PJSIP/101", 25, False)
    assert (shown["whisper"], shown["label"], shown["status"]) == ("custom/ad-call", 'Spring "promo" ✓', "active")
    assert "forward_to" in cli.ok("numbers", "show", "+14045550123").output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("555-0100", "--source", "Google Ads", "--forward-to", "PJSIP/1"), "invalid phone number '555-0100'"),
        (("404-555-0100x", "--source", "Google Ads", "--forward-to", "PJSIP/1"), "invalid phone number"),
        (("4045550100", "--source", "Bing", "--forward-to", "PJSIP/1"), "unknown source 'Bing'"),
        (("4045550100", "--pool", "Web", "--forward-to", "PJSIP/1"), "unknown pool 'Web'"),
        (("4045550100", "--forward-to", "PJSIP/1"), "either a source or a pool"),
        (
            ("4045550100", "--source", "Google Ads", "--pool", "Web", "--forward-to", "PJSIP/1"),
            "either a source or a pool",
        ),
        (("4045550100", "--source", "Google Ads"), "forward-to dial string is required"),
        (("4045550100", "--source", "Google Ads", "--forward-to", "PJSIP/100,,r"), "Asterisk would misread ','"),
        (("4045550100", "--source", "Google Ads", "--forward-to", "PJSIP/${X}"), "Asterisk would misread"),
        (("4045550100", "--source", "Google Ads", "--forward-to", "PJSIP/1", "--timeout", "0"), "invalid timeout 0"),
        (
            ("4045550100", "--source", "Google Ads", "--forward-to", "PJSIP/1", "--whisper", "../../etc/x"),
            "invalid whisper",
        ),
        (("4045550100", "--source", "Google Ads", "--forward-to", "PJSIP/1", "--whisper", "a b"), "invalid whisper"),
        (("4045550100", "--source", "Google Ads", "--forward-to", "PJSIP/1", "--label", "a\nb"), "invalid label"),
    ],
)
def test_add_refuses_bad_input_and_writes_nothing(cli: Cli, make_account, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    make_account()
    result = cli.fails(*ADD, *args[:1], "--account", "Acme", *args[1:])
    assert message in result.output
    assert result.output.count("\n") <= 2  # one clear line, no traceback
    assert numbers_json(cli) == []


def test_add_to_unknown_account(cli: Cli) -> None:
    result = cli.fails(*ADD, "4045550100", "--account", "Nobody", "--source", "X", "--forward-to", "PJSIP/1")
    assert "unknown account 'Nobody'" in result.output


def test_list_filters_and_formats(cli: Cli, make_account) -> None:  # type: ignore[no-untyped-def]
    make_account()
    make_account("Beta", "Yelp")
    cli.ok("sources", "add", "Flyer", "--account", "Acme")
    add_number(cli, "404-555-0100")
    cli.ok(*ADD, "404-555-0101", "--account", "Acme", "--source", "Flyer", "--forward-to", "PJSIP/101")
    cli.ok(*ADD, "404-555-0102", "--account", "Beta", "--source", "Yelp", "--forward-to", "PJSIP/102")
    cli.ok("numbers", "release", "404-555-0101")
    assert [r["number"] for r in numbers_json(cli, "--account", "Acme")] == ["+14045550100", "+14045550101"]
    assert [r["number"] for r in numbers_json(cli, "--account", "Acme", "--source", "Flyer")] == ["+14045550101"]
    assert [r["number"] for r in numbers_json(cli, "--source", "Yelp")] == ["+14045550102"]
    assert [r["number"] for r in numbers_json(cli, "--status", "released")] == ["+14045550101"]
    assert [r["number"] for r in numbers_json(cli, "--status", "active")] == ["+14045550100", "+14045550102"]
    rows = list(csv.DictReader(io.StringIO(cli.ok("numbers", "list", "--format", "csv").output)))
    assert [r["number"] for r in rows] == ["+14045550100", "+14045550101", "+14045550102"]
    assert rows[1]["status"] == "released" and rows[0]["record"] == "yes"
    table = cli.ok("numbers", "list").output.splitlines()
    assert table[0].split()[:3] == ["NUMBER", "ACCOUNT", "SOURCE"] and len(table) == 4
    assert "unknown source" in cli.fails("numbers", "list", "--account", "Beta", "--source", "Flyer").output
    assert cli.fails("numbers", "list", "--format", "xml").exit_code == 2


def test_update_release_reactivate(cli: Cli, make_account) -> None:  # type: ignore[no-untyped-def]
    make_account(pool="Website")
    add_number(cli)
    cli.ok("numbers", "update", "4045550100", "--forward-to", "Local/200@agents", "--timeout", "40", "--label", "new")
    row = numbers_json(cli)[0]
    assert (row["forward_to"], row["timeout"], row["label"], row["source"]) == (
        "Local/200@agents",
        40,
        "new",
        "Google Ads",
    )
    cli.ok("numbers", "update", "4045550100", "--pool", "Website")
    row = numbers_json(cli)[0]
    assert (row["pool"], row["source"]) == ("Website", None)
    assert "nothing to change" in cli.fails("numbers", "update", "4045550100").output
    assert "Asterisk would misread" in cli.fails("numbers", "update", "4045550100", "--forward-to", "PJSIP/1,2").output
    assert numbers_json(cli)[0]["forward_to"] == "Local/200@agents"
    cli.ok("numbers", "release", "+1 404 555 0100")
    row = numbers_json(cli)[0]
    assert row["status"] == "released" and row["released_at"]
    assert "already released" in cli.fails("numbers", "release", "4045550100").output
    cli.ok("numbers", "update", "4045550100", "--reactivate")
    assert numbers_json(cli)[0]["status"] == "active"
    assert "unknown tracking number +14045550199" in cli.fails("numbers", "release", "4045550199").output


def test_released_number_cannot_be_added_again(cli: Cli, make_account) -> None:  # type: ignore[no-untyped-def]
    make_account()
    add_number(cli)
    cli.ok("numbers", "release", "4045550100")
    result = cli.fails(*ADD, "4045550100", "--account", "Acme", "--source", "Google Ads", "--forward-to", "PJSIP/1")
    assert "released, kept for history" in result.output


# --- CSV import -------------------------------------------------------------------


def write_csv(tmp_path: Path, text: str, name: str = "numbers.csv", encoding: str = "utf-8") -> str:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return str(path)


GOOD = (
    "number,account,source,forward_to,timeout,record,whisper,label\n"
    "404-555-0100,Acme,Google Ads,PJSIP/100&PJSIP/101,25,yes,,Main ad\n"
    '"+1 (404) 555-0101",Acme,google ads,Local/100@agents,,no,ads/whisper,"Label, with comma"\n'
)


def test_import_adds_every_row(cli: Cli, make_account, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_account()
    result = cli.ok("numbers", "import", write_csv(tmp_path, GOOD))
    assert "2 added, 0 updated" in result.output
    rows = numbers_json(cli)
    assert [(r["number"], r["forward_to"], r["timeout"], r["record"], r["label"]) for r in rows] == [
        ("+14045550100", "PJSIP/100&PJSIP/101", 25, True, "Main ad"),
        ("+14045550101", "Local/100@agents", 30, False, "Label, with comma"),
    ]


def test_import_with_bom_crlf_and_pool_column(cli: Cli, make_account, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_account(pool="Website")
    text = "\ufeffNumber,Account,Pool,Forward_To\r\n4045550100,Acme,Website,PJSIP/1\r\n\r\n4045550101,Acme,Website,PJSIP/2\r\n"
    assert "2 added" in cli.ok("numbers", "import", write_csv(tmp_path, text)).output
    assert {r["pool"] for r in numbers_json(cli)} == {"Website"}
    pools = json.loads(cli.ok("pools", "list", "--format", "json").output)
    assert pools[0]["size"] == 2


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("404-555-0102,Acme,Google Ads,PJSIP/1\n555-01,Acme,Google Ads,PJSIP/1\n", 3, "invalid phone number '555-01'"),
        (
            "404-555-0102,Acme,Google Ads,PJSIP/1\n404.555.0102,Acme,Google Ads,PJSIP/2\n",
            3,
            "already appears on line 2",
        ),
        ("404-555-0102,Nobody,Google Ads,PJSIP/1\n", 2, "unknown account 'Nobody'"),
        ("404-555-0102,Acme,Bing,PJSIP/1\n", 2, "unknown source 'Bing'"),
        ("404-555-0102,Acme,Google Ads,PJSIP/1;x\n", 2, "Asterisk would misread ';'"),
        ("404-555-0102,Acme,Google Ads,PJSIP/1\n404-555-0103,Acme,Google Ads\n", 3, "expected 4 fields, found 3"),
        ("404-555-0102,Acme,Google Ads,\n", 2, "forward-to dial string is required"),
        ('404-555-0102,Acme,Google Ads,"PJSIP/1\n', 2, "unreadable CSV"),
        (
            "404-555-0102,Acme,Google Ads,PJSIP/1\n404-555-0100,Acme,Google Ads,PJSIP/1\n",
            3,
            "already exists (use --update",
        ),
    ],
)
def test_import_reports_first_bad_line_and_imports_nothing(
    cli: Cli,
    make_account,
    tmp_path: Path,
    body: str,
    line: int,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    make_account()
    add_number(cli, "404-555-0100")
    path = write_csv(tmp_path, "number,account,source,forward_to\n" + body)
    result = cli.fails("numbers", "import", path)
    assert f"{path}, line {line}: " in result.output
    assert message in result.output
    assert "nothing was imported" in result.output
    assert [r["number"] for r in numbers_json(cli)] == ["+14045550100"]


def test_import_line_numbers_count_multiline_fields(cli: Cli, make_account, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_account()
    text = 'number,account,source,forward_to,label\n4045550100,Acme,Google Ads,PJSIP/1,"two\nlines"\n4045550,Acme,Google Ads,PJSIP/1,x\n'
    result = cli.fails("numbers", "import", write_csv(tmp_path, text))
    assert ", line 4: invalid phone number '4045550'" in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: the file is empty"),
        ("number,account,forward_to\n", "missing column(s): source or pool"),
        ("number,account,source\n", "missing column(s): forward_to"),
        ("number,account,source,forward_to,colour\n", "unknown column(s) 'colour'"),
        ("number,account,source,source,forward_to\n", "given twice: source"),
        ("number,account,source,forward_to\n", "no rows to import"),
    ],
)
def test_import_header_problems(cli: Cli, make_account, tmp_path: Path, text: str, message: str) -> None:  # type: ignore[no-untyped-def]
    make_account()
    assert message in cli.fails("numbers", "import", write_csv(tmp_path, text)).output


def test_import_refuses_non_utf8_and_missing_file(cli: Cli, make_account, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_account()
    path = write_csv(
        tmp_path,
        "number,account,source,forward_to,label\n4045550100,Acme,Google Ads,PJSIP/1,Café\n",
        encoding="latin-1",
    )
    assert "not UTF-8 text" in cli.fails("numbers", "import", path).output
    assert "cannot be read: No such file" in cli.fails("numbers", "import", str(tmp_path / "nope.csv")).output
    assert numbers_json(cli) == []


def test_import_update_changes_existing_numbers(cli: Cli, make_account, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_account()
    add_number(cli, "404-555-0100")
    cli.ok("numbers", "release", "404-555-0100")
    text = "number,account,source,forward_to,timeout\n4045550100,Acme,Google Ads,PJSIP/900,45\n4045550101,Acme,Google Ads,PJSIP/901,\n"
    result = cli.ok("numbers", "import", "--update", write_csv(tmp_path, text))
    assert "1 added, 1 updated" in result.output
    rows = numbers_json(cli)
    assert [(r["number"], r["forward_to"], r["timeout"], r["status"]) for r in rows] == [
        ("+14045550100", "PJSIP/900", 45, "active"),
        ("+14045550101", "PJSIP/901", 30, "active"),
    ]


# --- pools ------------------------------------------------------------------------


def test_pools_create_add_list(cli: Cli, make_account) -> None:  # type: ignore[no-untyped-def]
    make_account()
    add_number(cli, "404-555-0199")
    cli.ok(
        "pools",
        "create",
        "Website",
        "--account",
        "Acme",
        "--hold-minutes",
        "20",
        "--source",
        "Google Ads",
        "--overflow",
        "404-555-0150",
    )
    cli.ok(
        "pools",
        "add-numbers",
        "Website",
        "404-555-0110",
        "404-555-0111",
        "404-555-0199",
        "--account",
        "Acme",
        "--forward-to",
        "PJSIP/100",
    )
    pools = json.loads(cli.ok("pools", "list", "--format", "json").output)
    assert pools == [
        {
            "name": "Website",
            "account": "Acme",
            "hold_minutes": 20,
            "size": 3,
            "overflow_number": "+14045550150",
            "overflow_count": 0,
        }
    ]
    moved = json.loads(cli.ok("numbers", "show", "404-555-0199", "--format", "json").output)
    assert (moved["pool"], moved["source"]) == ("Website", None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("pools", "create", "Website", "--account", "Acme", "--hold-minutes", "0"), "invalid hold time 0"),
        (("pools", "create", "Website", "--account", "Nobody", "--hold-minutes", "5"), "unknown account"),
        (
            ("pools", "create", "Website", "--account", "Acme", "--hold-minutes", "5", "--overflow", "12"),
            "invalid phone number",
        ),
        (("pools", "create", "Existing", "--account", "Acme", "--hold-minutes", "5"), "already exists"),
        (
            ("pools", "add-numbers", "Nope", "4045550110", "--account", "Acme", "--forward-to", "PJSIP/1"),
            "unknown pool 'Nope'",
        ),
        (("pools", "add-numbers", "Existing", "4045550110", "--account", "Acme"), "forward-to dial string is required"),
        (
            (
                "pools",
                "add-numbers",
                "Existing",
                "4045550110",
                "404.555.0110",
                "--account",
                "Acme",
                "--forward-to",
                "PJSIP/1",
            ),
            "given twice",
        ),
        (
            ("pools", "add-numbers", "Existing", "4045550110", "bad", "--account", "Acme", "--forward-to", "PJSIP/1"),
            "invalid phone number 'bad'",
        ),
    ],
)
def test_pool_errors_write_nothing(cli: Cli, make_account, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    make_account(pool="Existing")
    assert message in cli.fails(*args).output
    assert numbers_json(cli) == []
    assert [p["name"] for p in json.loads(cli.ok("pools", "list", "--format", "json").output)] == ["Existing"]


# --- business hours ---------------------------------------------------------------


def test_business_hours_and_after_hours_destination(cli: Cli, make_account) -> None:  # type: ignore[no-untyped-def]
    make_account()
    add_number(cli, "404-555-0100", "--hours", "mon-fri 09:00-17:00, sat 10:00-14:00", "--after-hours", "PJSIP/900")
    shown = json.loads(cli.ok("numbers", "show", "4045550100", "--format", "json").output)
    assert (
        shown["hours"]
        == "mon 09:00-17:00, tue 09:00-17:00, wed 09:00-17:00, thu 09:00-17:00, fri 09:00-17:00, sat 10:00-14:00"
    )
    assert shown["after_hours"] == "PJSIP/900"
    cli.ok("numbers", "update", "4045550100", "--hours", "fri-mon 22:00-02:00")
    assert json.loads(cli.ok("numbers", "show", "4045550100", "--format", "json").output)["hours"] == (
        "mon 22:00-02:00, fri 22:00-02:00, sat 22:00-02:00, sun 22:00-02:00"
    )
    cli.ok("numbers", "update", "4045550100", "--hours", "always", "--after-hours", "none")
    shown = json.loads(cli.ok("numbers", "show", "4045550100", "--format", "json").output)
    assert (shown["hours"], shown["after_hours"]) == ("always", None)


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ("weekdays 09:00-17:00", "invalid days 'weekdays'"),
        ("mon", "write DAYS HH:MM-HH:MM"),
        ("mon 9-5", "invalid hours"),
        ("mon 09:00", "write HH:MM-HH:MM"),
        ("mon 25:00-26:00", "invalid hours"),
    ],
)
def test_bad_business_hours(cli: Cli, make_account, hours: str, message: str) -> None:  # type: ignore[no-untyped-def]
    make_account()
    result = cli.fails(
        *ADD, "4045550100", "--account", "Acme", "--source", "Google Ads", "--forward-to", "PJSIP/1", "--hours", hours
    )
    assert message in result.output
    assert numbers_json(cli) == []


def test_after_hours_needs_hours_and_a_valid_dial_string(cli: Cli, make_account) -> None:  # type: ignore[no-untyped-def]
    make_account()
    base = (*ADD, "4045550100", "--account", "Acme", "--source", "Google Ads", "--forward-to", "PJSIP/1")
    assert "needs business hours" in cli.fails(*base, "--after-hours", "PJSIP/2").output
    assert (
        "invalid after-hours dial string"
        in cli.fails(*base, "--hours", "mon 09:00-17:00", "--after-hours", "PJSIP/2,x").output
    )


def test_import_with_hours_columns(cli: Cli, make_account, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_account()
    text = 'number,account,source,forward_to,hours,after_hours\n4045550100,Acme,Google Ads,PJSIP/1,"mon-fri 08:00-18:00",Local/vm@voicemail\n4045550101,Acme,Google Ads,PJSIP/1,,\n4045550102,Acme,Google Ads,PJSIP/1,someday 09:00-10:00,\n'
    result = cli.fails("numbers", "import", write_csv(tmp_path, text))
    assert ", line 4: invalid days 'someday'" in result.output
    cli.ok("numbers", "import", write_csv(tmp_path, text.rsplit("\n", 2)[0] + "\n", "ok.csv"))
    rows = numbers_json(cli)
    assert rows[0]["hours"].startswith("mon 08:00-18:00") and rows[0]["after_hours"] == "Local/vm@voicemail"
    assert rows[1]["hours"] == "always"
