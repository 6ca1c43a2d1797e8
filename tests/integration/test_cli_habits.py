"""CLI habits a user notices: every bad CSV line at once, exports that import back, moves said,
impossible options refused, accounts and sources renamed and removed with what goes said."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from schema.models import Account, AuditEntry, Call, Recording, Source, SourceRule, TrackingNumber, utcnow
from tests.conftest import Cli
from tracking.calls import upsert_call


def numbers_json(cli: Cli, *filters: str) -> list[dict[str, object]]:
    return json.loads(cli.ok("numbers", "list", "--format", "json", *filters).output)


def write(tmp_path: Path, text: str, name: str = "numbers.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- CSV import: every bad line, in file order -------------------------------------------


def test_import_reports_every_bad_line_in_file_order_and_imports_nothing(
    cli: Cli, make_account, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    make_account()
    text = (
        "number,account,source,forward_to,timeout\n"
        "4045550100,Acme,Google Ads,PJSIP/100,25\n"  # line 2: good
        "4045550101,Acme,Google Ads,PJSIP/101,zero\n"  # line 3: bad timeout
        "555,Acme,Google Ads,PJSIP/102,25\n"  # line 4: bad number
        "4045550103,Acme,Nope,PJSIP/103,25\n"  # line 5: unknown source
        "404.555.0100,Acme,Google Ads,PJSIP/100,25\n"  # line 6: duplicate of line 2
        "4045550106,Acme,Google Ads\n"  # line 7: too few fields
    )
    path = write(tmp_path, text)
    result = cli.fails("numbers", "import", path)
    lines = result.output.strip().splitlines()
    assert lines[0] == f"Error: {path}: 5 bad lines; nothing was imported"
    assert [line.split(": ", 1)[0] for line in lines[1:]] == [f"{path}, line {n}" for n in (3, 4, 5, 6, 7)]
    assert "invalid timeout 'zero'" in lines[1]
    assert "invalid phone number '555'" in lines[2]
    assert "unknown source 'Nope'" in lines[3]
    assert "already appears on line 2" in lines[4]
    assert "expected 5 fields, found 3" in lines[5]
    assert numbers_json(cli) == []


def test_import_lists_a_limited_number_of_bad_lines(cli: Cli, make_account, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_account()
    body = "".join(f"40455501{i:02d},Acme,Google Ads,PJSIP/1,never\n" for i in range(30))
    result = cli.fails("numbers", "import", write(tmp_path, "number,account,source,forward_to,timeout\n" + body))
    out = result.output.strip().splitlines()
    assert "30 bad lines" in out[0]
    assert len(out) == 1 + 20 + 1 and out[-1] == "... and 10 more bad lines"
    assert ", line 2: " in out[1] and ", line 21: " in out[20]
    assert numbers_json(cli) == []


def test_a_single_bad_line_stays_one_line(cli: Cli, make_account, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_account()
    path = write(
        tmp_path, "number,account,source,forward_to\n4045550100,Acme,Google Ads,PJSIP/1\n555,Acme,Google Ads,PJSIP/1\n"
    )
    result = cli.fails("numbers", "import", path)
    assert result.output == f"Error: {path}, line 3: invalid phone number '555': " + result.output.split(": ", 3)[3]
    assert result.output.count("\n") == 1 and "nothing was imported" in result.output


# --- CSV export round-trips through import --update ---------------------------------------


def test_csv_export_edits_and_imports_back(cli: Cli, make_account, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_account(pool="web")
    cli.ok("sources", "add", "Flyer", "--account", "Acme")
    cli.ok(
        "numbers", "add", "404-555-0100", "--account", "Acme", "--source", "Google Ads",
        "--forward-to", "PJSIP/100&PJSIP/101", "--timeout", "25", "--no-record", "--whisper", "custom/ad",
        "--label", 'Main "ad", spring', "--hours", "mon-fri 09:00-17:00, sat 10:00-14:00",
        "--after-hours", "PJSIP/voicemail",
    )  # fmt: skip
    cli.ok("numbers", "add", "404-555-0101", "--account", "Acme", "--pool", "web", "--forward-to", "PJSIP/200")
    cli.ok("numbers", "add", "404-555-0102", "--account", "Acme", "--source", "Flyer", "--forward-to", "PJSIP/300")
    cli.ok("numbers", "release", "404-555-0102")
    before = numbers_json(cli)
    exported = cli.ok("numbers", "list", "--format", "csv").output

    # Importing the export unchanged changes nothing.
    path = write(tmp_path, exported + "\n", "export.csv")
    assert "0 added, 3 updated" in cli.ok("numbers", "import", "--update", path).output
    strip = [{k: v for k, v in r.items() if k != "released_at"} for r in numbers_json(cli)]
    assert strip == [{k: v for k, v in r.items() if k != "released_at"} for r in before]

    # Edited in a spreadsheet: another destination, new hours, the released number back in service.
    rows = list(csv.DictReader(io.StringIO(exported)))
    rows[0]["forward_to"] = "PJSIP/900"
    rows[0]["hours"] = "mon-sun 08:00-20:00"
    rows[2]["status"] = "active"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    cli.ok("numbers", "import", "--update", write(tmp_path, buf.getvalue(), "edited.csv"))
    after = {r["number"]: r for r in numbers_json(cli)}
    first = after["+14045550100"]
    assert first["forward_to"] == "PJSIP/900"
    assert (
        first["hours"]
        == "mon 08:00-20:00, tue 08:00-20:00, wed 08:00-20:00, thu 08:00-20:00, fri 08:00-20:00, sat 08:00-20:00, sun 08:00-20:00"
    )
    assert (first["after_hours"], first["label"], first["whisper"], first["record"], first["timeout"]) == (
        "PJSIP/voicemail", 'Main "ad", spring', "custom/ad", False, 25,
    )  # fmt: skip
    assert after["+14045550101"]["pool"] == "web" and after["+14045550101"]["source"] is None
    assert after["+14045550102"]["status"] == "active" and after["+14045550102"]["released_at"] is None


# --- tables ---------------------------------------------------------------------------------


def test_tables_cut_long_names_with_an_ellipsis(cli: Cli) -> None:
    long = "Acme Plumbing, Heating, Air Conditioning and Drains of Greater Atlanta"
    cli.ok("accounts", "add", long)
    cli.ok("accounts", "add", "東京配管サービス株式会社")
    table = cli.ok("accounts", "list").output.splitlines()
    assert any("Acme Plumbing, Heating, Air Conditionin…" in line for line in table)
    assert all(long not in line for line in table)
    assert json.loads(cli.ok("accounts", "list", "--format", "json").output)[0]["name"] == long


# --- pools say what they moved -------------------------------------------------------------------


def test_pools_add_numbers_says_which_numbers_left_a_source(cli: Cli, make_account) -> None:  # type: ignore[no-untyped-def]
    make_account(pool="web")
    cli.ok("numbers", "add", "770-555-0151", "--account", "Acme", "--source", "Google Ads", "--forward-to", "PJSIP/1")
    out = cli.ok(
        "pools", "add-numbers", "web", "770-555-0151", "770-555-0152", "--account", "Acme", "--forward-to", "PJSIP/1"
    ).output
    assert "2 number(s) added (1 new, 1 moved in)" in out
    assert "+17705550151: moved from source 'Google Ads'" in out
    assert "+17705550152" not in out.split("\n", 1)[1]


# --- options that cannot mean anything -----------------------------------------------------------


def test_impossible_listing_options_are_errors(cli: Cli, make_account) -> None:  # type: ignore[no-untyped-def]
    make_account()
    assert "-5 is not in the range x>=1" in cli.fails("calls", "list", "--limit", "-5").output
    out = cli.fails("calls", "list", "--since", "2026-11-29", "--until", "2026-11-01").output
    assert "--until (2026-11-01T00:00:00+00:00) must be after --since" in out
    assert "must be after --since" in cli.fails("reports", "sources", "--since", "2d", "--until", "3d").output
    assert "unknown source 'NoSuch' in any account" in cli.fails("numbers", "list", "--source", "NoSuch").output
    out = cli.fails("callers", "block", "abc").output
    assert "invalid caller 'abc'" in out and "anonymous" in out
    assert json.loads(cli.ok("callers", "list", "--format", "json").output) == []


def test_calls_list_until(cli: Cli, make_account, session_factory: sessionmaker[Session]) -> None:  # type: ignore[no-untyped-def]
    make_account()
    now = utcnow()
    with session_factory() as s, s.begin():
        for i, hours in enumerate((1, 30, 60)):
            upsert_call(
                s, "pbx", f"17.{i}", {"started_at": now - dt.timedelta(hours=hours), "caller_number": f"+1404555000{i}"}
            )
    rows = json.loads(cli.ok("calls", "list", "--since", "2d", "--until", "1d", "--format", "json").output)
    assert [r["caller_number"] for r in rows] == ["+14045550001"]


# --- rename and remove ------------------------------------------------------------------------------


def _seed_calls(factory: sessionmaker[Session], tmp_path: Path) -> Path:
    archive = tmp_path / "rec.mp3"
    archive.write_bytes(b"ID3 audio")
    with factory() as s, s.begin():
        account = s.scalar(select(Account).where(Account.name == "Acme"))
        source = s.scalar(select(Source).where(Source.name == "Google Ads"))
        assert account is not None and source is not None
        call_id = upsert_call(
            s, "pbx", "17.1",
            {"account_id": account.id, "source_id": source.id, "caller_number": "+14045551234", "started_at": utcnow()},
        )  # fmt: skip
        s.add(
            Recording(
                call_id=call_id, account_id=account.id, source_path="/spool/1.wav", path=str(archive), state="archived"
            )
        )
    return archive


def test_accounts_rename_and_remove(
    cli: Cli, make_account, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    make_account()
    make_account("Other", "Yelp")
    cli.ok("numbers", "add", "404-555-0100", "--account", "Acme", "--source", "Google Ads", "--forward-to", "PJSIP/1")
    key = json.loads(cli.ok("accounts", "list", "--format", "json").output)[0]["public_key"]
    assert "already exists" in cli.fails("accounts", "rename", "Acme", "other").output
    cli.ok("accounts", "rename", "Acme", "Acme Plumbing")
    accounts = json.loads(cli.ok("accounts", "list", "--format", "json").output)
    assert [(a["name"], a["public_key"]) for a in accounts][0] == ("Acme Plumbing", key)
    assert numbers_json(cli)[0]["account"] == "Acme Plumbing"
    cli.ok("accounts", "rename", "Acme Plumbing", "Acme")

    archive = _seed_calls(session_factory, tmp_path)
    refused = cli.fails("accounts", "remove", "Acme").output
    assert "account 'Acme' holds 1 source, 1 number, 1 call, 1 recording" in refused and "add --yes" in refused
    assert archive.exists() and len(numbers_json(cli)) == 1

    out = cli.ok("accounts", "remove", "Acme", "--yes").output
    assert "removed account 'Acme': 1 call(s), 1 recording(s) (1 file(s)), 1 number(s), 1 source(s)" in out
    assert not archive.exists()
    assert [a["name"] for a in json.loads(cli.ok("accounts", "list", "--format", "json").output)] == ["Other"]
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Call)) == 0
        assert s.scalar(select(func.count()).select_from(TrackingNumber)) == 0
        assert s.scalar(select(AuditEntry.action).where(AuditEntry.action == "accounts.remove")) == "accounts.remove"
    # An account with nothing in it goes without --yes.
    cli.ok("accounts", "add", "Empty")
    cli.ok("accounts", "remove", "Empty")


def test_sources_remove(cli: Cli, make_account, session_factory: sessionmaker[Session], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_account()
    cli.ok("sources", "add", "Bing", "--account", "Acme")
    cli.ok("sources", "add", "Print", "--account", "Acme")
    cli.ok("numbers", "add", "404-555-0100", "--account", "Acme", "--source", "Google Ads", "--forward-to", "PJSIP/1")
    cli.ok("rules", "add", "param", "gclid", "--account", "Acme", "--source", "Google Ads")
    _seed_calls(session_factory, tmp_path)

    refused = cli.fails("sources", "remove", "Google Ads", "--account", "Acme").output
    assert "has 1 tracking number (+14045550100)" in refused and "--move-to" in refused
    out = cli.ok("sources", "remove", "Google Ads", "--account", "Acme", "--move-to", "Bing").output
    assert "1 number, 1 call, 0 pool defaults, 1 website rule, 0 visitor sessions move to 'Bing'" in out
    assert numbers_json(cli)[0]["source"] == "Bing"
    with session_factory() as s:
        bing = s.scalar(select(Source.id).where(Source.name == "Bing"))
        assert s.scalar(select(Call.source_id)) == bing
        assert s.scalar(select(SourceRule.source_id)) == bing

    # Without numbers but with calls: the calls keep no source, and that needs --yes.
    cli.ok("numbers", "update", "404-555-0100", "--source", "Print")
    refused = cli.fails("sources", "remove", "Bing", "--account", "Acme").output
    assert "its 1 call and 0 visitor sessions keep no source" in refused and "add --yes" in refused
    cli.ok("sources", "remove", "Bing", "--account", "Acme", "--yes")
    with session_factory() as s:
        assert s.scalar(select(Call.source_id)) is None
        assert s.scalar(select(func.count()).select_from(SourceRule)) == 0
    assert [r["name"] for r in json.loads(cli.ok("sources", "list", "--format", "json").output)] == ["Print"]
    # A source nobody used goes quietly.
    cli.ok("sources", "add", "Unused", "--account", "Acme")
    cli.ok("sources", "remove", "Unused", "--account", "Acme")
