"""Dashboard calls: list with filters, JSON and CSV, call detail, qualification, recordings; who sees what.

On SQLite and PostgreSQL.  A member of one account tries every URL of another account's data.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import Engine, select

from config import Settings
from schema.models import AuditEntry, CallQualification, Recording
from tests.integration.dashboard_helpers import XSS_NAME, Board, Seeded, make_board, seed


@pytest.fixture
async def world(engine: Engine, settings: Settings) -> AsyncIterator[tuple[Board, Seeded]]:
    async for board in make_board(engine, settings)():
        data = seed(board.factory, settings)
        board.user("root", "admin")
        board.user("ann", "manager", ("Acme",))
        board.user("mia", "member", ("Acme",))
        board.user("gus", "member", ("Globex",))
        yield board, data


def _ids(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [c["id"] for c in response.json()["calls"]]


async def test_member_lists_their_accounts_calls_newest_first_blocked_apart(world: tuple[Board, Seeded]) -> None:
    board, data = world
    c = data.calls
    async with board.signed_in("mia") as client:
        assert _ids(await client.get("/dashboard/calls.json")) == [c["answered"], c["missed"]]
        assert _ids(await client.get("/dashboard/calls.json?blocked=yes")) == [c["blocked"]]
        page = await client.get("/dashboard/calls")
        assert page.status_code == 200
        assert f"/dashboard/calls/{c['answered']}" in page.text and f"/dashboard/calls/{c['globex']}" not in page.text
        assert "Globex Caller" not in page.text and "Spammer" not in page.text


async def test_admin_sees_every_account_and_calls_to_unknown_numbers(world: tuple[Board, Seeded]) -> None:
    board, data = world
    c = data.calls
    async with board.signed_in("root") as client:
        ids = _ids(await client.get("/dashboard/calls.json"))
        assert ids == [c["answered"], c["globex"], c["unknown"], c["missed"]]
        assert _ids(await client.get(f"/dashboard/calls.json?account={data.globex}")) == [c["globex"]]


async def test_filters(world: tuple[Board, Seeded]) -> None:
    board, data = world
    c = data.calls
    async with board.signed_in("ann") as client:

        async def ids(query: str) -> list[int]:
            return _ids(await client.get("/dashboard/calls.json?" + query))

        assert await ids("disposition=missed") == [c["missed"]]
        assert await ids(f"source={data.google}") == [c["answered"]]
        assert await ids("number=(404) 555-0101") == [c["missed"]]
        for spelling in ("(404) 555-0111", "404.555.0111", "+1 404 555 0111", "14045550111", "5550111"):
            assert await ids("caller=" + spelling.replace("+", "%2B")) == [c["answered"]], spelling
        assert await ids("first_time=yes") == [c["answered"]]
        assert await ids("first_time=no") == [c["missed"]]
        assert await ids("after_hours=yes") == [c["missed"]]
        assert await ids("recording=yes") == [c["answered"]]
        assert await ids("recording=no") == [c["missed"]]
        assert await ids("range=today") == [c["answered"]]  # 10:00 in New York; the missed call was 2 days ago
        assert await ids("range=custom&from=2026-02-28&to=2026-02-28") == [c["missed"]]
        assert await ids("range=7d&page=2") == []


@pytest.mark.parametrize(
    "query",
    [
        "disposition=bogus",
        "page=0",
        "page=x",
        "range=forever",
        "range=custom&from=2026-13-01&to=2026-13-02",
        "range=custom&from=2026-03-02",
        "range=custom&from=2026-03-02&to=2026-03-01",
        "first_time=maybe",
        "caller=abc",
        "account=-1",
        "source=1e3",
    ],
)
async def test_bad_filters_are_refused_with_what_is_wrong(world: tuple[Board, Seeded], query: str) -> None:
    board, _ = world
    async with board.signed_in("mia") as client:
        response = await client.get("/dashboard/calls.json?" + query)
        assert response.status_code == 400, query
        assert response.json()["error"]
        assert (await client.get("/dashboard/calls?" + query)).status_code == 400


async def test_csv_has_the_rows_of_the_page_and_defuses_formulas(world: tuple[Board, Seeded]) -> None:
    board, _ = world
    async with board.signed_in("mia") as client:
        page = (await client.get("/dashboard/calls.json")).json()["calls"]
        response = await client.get("/dashboard/calls.csv")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [int(r["id"]) for r in rows] == [c["id"] for c in page]
        assert [r["caller_number"] for r in rows] == [c["caller_number"] for c in page]
        assert rows[0]["caller_name"] == XSS_NAME
        assert rows[1]["caller_name"] == '\'=HYPERLINK("http://evil.test")'  # a spreadsheet shows it, runs nothing
    with board.factory() as s:
        assert "export.calls" in s.scalars(select(AuditEntry.action)).all()


async def test_member_gets_nothing_of_another_account_by_url_tampering(world: tuple[Board, Seeded]) -> None:
    board, data = world
    other, rec = data.calls["globex"], data.recordings["globex"]
    async with board.signed_in("mia") as client:
        csrf = await board.csrf(client)
        for url in (
            f"/dashboard/calls?account={data.globex}",
            f"/dashboard/calls.json?account={data.globex}",
            f"/dashboard/calls.csv?account={data.globex}",
            f"/dashboard/calls/{other}",
            f"/dashboard/calls/{other}.json",
            f"/dashboard/calls/{data.calls['unknown']}.json",
            f"/dashboard/recordings/{rec}",
            f"/dashboard/recordings/{rec}?download=1",
            "/dashboard/calls/999999.json",
            "/dashboard/recordings/999999",
        ):
            response = await client.get(url)
            assert response.status_code == 404, url
            assert "Globex Caller" not in response.text
        qualify = await client.post(f"/dashboard/calls/{other}/qualify", data={"csrf": csrf, "lead": "yes"})
        assert qualify.status_code == 404
        ranged = await client.get(f"/dashboard/recordings/{rec}", headers={"Range": "bytes=0-99"})
        assert ranged.status_code == 404
    with board.factory() as s:
        assert s.get(CallQualification, other) is None
        assert "recording.play" not in s.scalars(select(AuditEntry.action)).all()


async def test_revoked_account_is_gone_at_the_next_request(world: tuple[Board, Seeded]) -> None:
    from tracking.users import revoke

    board, data = world
    async with board.signed_in("ann") as client:
        assert (await client.get(f"/dashboard/calls/{data.calls['answered']}.json")).status_code == 200
        with board.factory.begin() as s:
            revoke(s, "ann", "Acme")
        assert (await client.get(f"/dashboard/calls/{data.calls['answered']}.json")).status_code == 404
        assert _ids(await client.get("/dashboard/calls.json")) == []


async def test_call_detail_shows_the_visit_timeline_and_recording_escaped(world: tuple[Board, Seeded]) -> None:
    board, data = world
    call_id = data.calls["answered"]
    async with board.signed_in("mia") as client:
        detail = (await client.get(f"/dashboard/calls/{call_id}.json")).json()
        assert detail["call"]["caller_name"] == XSS_NAME
        assert detail["call"]["local_time"] == "2026-03-02 09:00:00"  # 14:00 UTC in New York
        assert detail["call"]["source"] == "Google Ads" and detail["call"]["campaign"] == "spring<script>"
        assert detail["visit"]["gclid"] == "G123" and detail["visit"]["pages_seen"] == 3
        assert [e["kind"] for e in detail["timeline"]] == ["ringing", "answered"]
        assert detail["recording"]["id"] == data.recordings["answered"]
        page = await client.get(f"/dashboard/calls/{call_id}")
        assert page.status_code == 200
        assert XSS_NAME not in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text
        assert "<script>" not in page.text.replace('<script src="', "")
        assert f'src="/dashboard/recordings/{data.recordings["answered"]}"' in page.text


async def test_recording_plays_in_ranges_and_each_play_or_download_is_audited(
    world: tuple[Board, Seeded], settings: Settings
) -> None:
    board, data = world
    rec = data.recordings["answered"]
    async with board.signed_in("mia") as client:
        whole = await client.get(f"/dashboard/recordings/{rec}")
        assert whole.status_code == 200 and whole.headers["content-type"] == "audio/mpeg"
        assert whole.headers["accept-ranges"] == "bytes" and len(whole.content) == 256 * 64
        start = await client.get(f"/dashboard/recordings/{rec}", headers={"Range": "bytes=0-"})
        seek = await client.get(f"/dashboard/recordings/{rec}", headers={"Range": "bytes=1000-1099"})
        assert seek.status_code == 206 and seek.headers["content-range"] == f"bytes 1000-1099/{256 * 64}"
        assert seek.content == whole.content[1000:1100] and start.status_code == 206
        download = await client.get(f"/dashboard/recordings/{rec}?download=1")
        assert download.status_code == 200 and download.headers["content-disposition"].startswith("attachment")
    async with board.client() as anonymous:
        assert (await anonymous.get(f"/dashboard/recordings/{rec}")).status_code == 401
    with board.factory() as s:
        entries = s.scalars(select(AuditEntry).where(AuditEntry.action.like("recording.%")).order_by(AuditEntry.id))
        assert [(e.actor, e.action, e.target) for e in entries] == [
            ("mia", "recording.play", f"recording {rec}"),
            ("mia", "recording.play", f"recording {rec}"),
            ("mia", "recording.download", f"recording {rec}"),
        ]


async def test_a_recording_path_outside_the_archive_is_never_served(
    world: tuple[Board, Seeded], tmp_path: object
) -> None:
    board, data = world
    rec = data.recordings["answered"]
    with board.factory.begin() as s:
        s.get(Recording, rec).path = "/etc/passwd"  # type: ignore[union-attr]
    async with board.signed_in("root") as client:
        assert (await client.get(f"/dashboard/recordings/{rec}")).status_code == 404


async def test_qualify_a_call(world: tuple[Board, Seeded]) -> None:
    board, data = world
    call_id = data.calls["answered"]
    async with board.signed_in("mia") as client:
        page = await client.get(f"/dashboard/calls/{call_id}")
        from tests.integration.dashboard_helpers import csrf_of

        csrf = csrf_of(page.text)
        form = {"csrf": csrf, "lead": "yes", "value": "250.5", "tags": "quote, urgent,quote", "note": "wants a boiler"}
        assert (await client.post(f"/dashboard/calls/{call_id}/qualify", data={**form, "csrf": ""})).status_code == 403
        saved = await client.post(f"/dashboard/calls/{call_id}/qualify", data=form)
        assert saved.status_code == 303 and saved.headers["location"].endswith(f"/calls/{call_id}?saved=1")
        q = (await client.get(f"/dashboard/calls/{call_id}.json")).json()["qualification"]
        assert (q["lead"], q["value"], q["tags"], q["note"], q["updated_by"]) == (
            True,
            250.5,
            ["quote", "urgent"],
            "wants a boiler",
            "mia",
        )
        for bad in ({"value": "lots"}, {"value": "-1"}, {"lead": "maybe"}, {"tags": "x" * 41}, {"note": "n" * 2001}):
            response = await client.post(f"/dashboard/calls/{call_id}/qualify", data={**form, **bad})
            assert response.status_code == 400, bad
    with board.factory() as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "call.qualify")).one()
        assert entry.actor == "mia" and entry.detail["after"]["value"] == 250.5


async def test_the_call_page_shows_the_transcript_escaped(world: tuple[Board, Seeded]) -> None:
    from schema.models import Transcript
    from tracking import transcripts

    board, data = world
    call_id = data.calls["answered"]
    with board.factory.begin() as s:
        rec = s.scalars(select(Recording).where(Recording.call_id == call_id)).first()
        if rec is None:
            rec = Recording(call_id=call_id, account_id=data.acme, source_path="/spool/x.wav", state="archived")
            s.add(rec)
            s.flush()
        t = Transcript(recording_id=rec.id, call_id=call_id, account_id=data.acme)
        s.add(t)
        s.flush()
        segs = [
            transcripts.Segment("caller", 0.0, 2.5, "I need my water heater fixed " + XSS_NAME),
            transcripts.Segment("agent", 3.0, 4.0, "Tuesday works."),
        ]
        transcripts.store(s, t, segs, model="m", language="en", channels=2, seconds=4.0, redactions=[])
    async with board.signed_in("mia") as client:
        page = await client.get(f"/dashboard/calls/{call_id}")
        assert page.status_code == 200
        assert 'id="transcript"' in page.text and "water heater fixed" in page.text and "Tuesday works." in page.text
        assert XSS_NAME not in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text
        as_json = (await client.get(f"/dashboard/calls/{call_id}.json")).json()
        assert [seg["speaker"] for seg in as_json["transcript"]] == ["caller", "agent"]
    async with board.signed_in("gus") as client:  # another account's member sees nothing of it
        assert (await client.get(f"/dashboard/calls/{call_id}")).status_code in (403, 404)
