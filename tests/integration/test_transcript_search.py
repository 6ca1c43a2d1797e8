"""Search over transcripts on SQLite (FTS5) and PostgreSQL (tsvector): one function, the same answers."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from schema.models import Account, Call, Recording, Source, Transcript, utcnow
from tests.conftest import Cli
from tracking import transcripts
from tracking.transcript_search import BadQuery, search


def add(
    session_factory: sessionmaker[Session],
    account: str,
    said: list[tuple[str, str]],
    *,
    started: dt.datetime | None = None,
    source: str | None = "Google Ads",
) -> int:
    """A call of *account* with a done transcript of (speaker, text) segments; the call's id."""
    with session_factory() as s, s.begin():
        acc = s.scalars(select(Account).where(Account.name == account)).one_or_none()
        if acc is None:
            acc = Account(name=account, timezone="UTC", public_key=f"pk-{account}")
            s.add(acc)
            s.flush()
        src = None
        if source:
            src = s.scalars(select(Source).where(Source.account_id == acc.id, Source.name == source)).one_or_none()
            if src is None:
                src = Source(account_id=acc.id, name=source)
                s.add(src)
                s.flush()
        call = Call(
            system="asterisk",
            linkedid=f"l-{utcnow().timestamp()}-{len(said)}-{id(said)}",
            account_id=acc.id,
            source_id=src.id if src else None,
            started_at=started or utcnow(),
        )
        s.add(call)
        s.flush()
        rec = Recording(call_id=call.id, account_id=acc.id, source_path=f"/s/{call.id}.wav", state="archived")
        s.add(rec)
        s.flush()
        t = Transcript(recording_id=rec.id, call_id=call.id, account_id=acc.id)
        s.add(t)
        s.flush()
        segments = [transcripts.Segment(sp, i * 2.0, i * 2.0 + 1.5, text) for i, (sp, text) in enumerate(said)]
        transcripts.store(s, t, segments, model="test", language="en", channels=2, seconds=10.0, redactions=[])
        return call.id


def test_a_phrase_is_found_with_its_snippet_and_stemming(session_factory: sessionmaker[Session]) -> None:
    heater = add(session_factory, "Acme", [("caller", "Hi, my water heaters are leaking"), ("agent", "We can help.")])
    add(session_factory, "Acme", [("caller", "the water is cold and the heater is old")])
    add(session_factory, "Acme", [("caller", "I need a quote for a roof")])
    with session_factory() as s:
        hits = search(s, "water heater")
        assert [h.call_id for h in hits] == [heater]
        assert "[water] [heaters]" in hits[0].snippet or "[water heaters]" in hits[0].snippet, hits[0].snippet
        assert [h.call_id for h in search(s, "ROOF")] and search(s, "roofing") == search(s, "roof")


def test_search_stays_within_the_account_and_the_period(session_factory: sessionmaker[Session]) -> None:
    old = utcnow() - dt.timedelta(days=30)
    acme_old = add(session_factory, "Acme", [("caller", "book an appointment please")], started=old)
    acme_new = add(session_factory, "Acme", [("caller", "can I book an appointment")])
    globex = add(session_factory, "Globex", [("mono", "I want to book an appointment")])
    with session_factory() as s:
        acme = s.scalars(select(Account.id).where(Account.name == "Acme")).one()
        assert {h.call_id for h in search(s, "appointment")} == {acme_old, acme_new, globex}
        assert {h.call_id for h in search(s, "appointment", account_id=acme)} == {acme_old, acme_new}
        since = utcnow() - dt.timedelta(days=7)
        assert [h.call_id for h in search(s, "appointment", account_id=acme, since=since)] == [acme_new]
        assert len(search(s, "appointment", limit=1)) == 1


def test_query_syntax_cannot_be_injected(session_factory: sessionmaker[Session]) -> None:
    plain = add(session_factory, "Acme", [("caller", "the boiler broke")])
    add(session_factory, "Acme", [("caller", "the furnace is fine")])
    with session_factory() as s:
        # FTS5 operators, column filters, prefix stars and quotes are only words here
        assert [h.call_id for h in search(s, 'boiler" OR "furnace')] == []
        assert [h.call_id for h in search(s, "boiler OR furnace")] == []
        assert [h.call_id for h in search(s, "text:furnace")] == []
        assert search(s, "furn*") == []
        assert [h.call_id for h in search(s, '"boiler"')] == [plain]
        assert [h.call_id for h in search(s, "NEAR(boiler broke)")] == []
        assert [h.call_id for h in search(s, "boiler broke")] == [plain]
        assert search(s, "'; DROP TABLE transcripts; --") == []
        assert s.scalar(select(Transcript.id).limit(1)) is not None
        with pytest.raises(BadQuery, match="nothing to search for"):
            search(s, '"" * -')


def test_a_changed_or_removed_transcript_leaves_the_index(session_factory: sessionmaker[Session]) -> None:
    call = add(session_factory, "Acme", [("caller", "the dishwasher floods the kitchen")])
    with session_factory() as s, s.begin():
        t = s.scalars(select(Transcript).where(Transcript.call_id == call)).one()
        transcripts.store(
            s, t, [transcripts.Segment("mono", 0, 1, "a new oven")], model="m", language="en", channels=1,
            seconds=1, redactions=[],
        )  # fmt: skip
    with session_factory() as s:
        assert search(s, "dishwasher") == [] and [h.call_id for h in search(s, "oven")] == [call]
    with session_factory() as s, s.begin():
        s.execute(delete(Transcript).where(Transcript.call_id == call))
    with session_factory() as s:
        assert search(s, "oven") == []


def test_pending_and_failed_transcripts_are_not_found(session_factory: sessionmaker[Session]) -> None:
    call = add(session_factory, "Acme", [("caller", "the garage door")])
    with session_factory() as s, s.begin():
        t = s.scalars(select(Transcript).where(Transcript.call_id == call)).one()
        t.state = "failed"
    with session_factory() as s:
        assert search(s, "garage") == []


def test_the_cli_lists_matching_calls_with_source_and_snippet(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    call = add(session_factory, "Acme", [("caller", "my water heater is broken"), ("agent", "we come tomorrow")])
    add(session_factory, "Globex", [("caller", "water heater again")], source=None)
    out = cli.ok("transcripts", "search", "water heater", "--account", "Acme").output
    assert f"call {call}" in out and "Acme / Google Ads" in out and "heater" in out and "Globex" not in out
    rows = json.loads(cli.ok("transcripts", "search", "water heater", "--format", "json").output)
    assert {r["account"] for r in rows} == {"Acme", "Globex"}
    assert all("[" in r["snippet"] for r in rows)
    assert "nothing to search for" in cli.fails("transcripts", "search", "!!!").output
    assert "no account 'Nope'" in cli.fails("transcripts", "search", "water", "--account", "Nope").output
    assert "no transcript says" in cli.ok("transcripts", "search", "spaceship").output
