"""call.updated end to end on SQLite and PostgreSQL: a real call (route and listener), then a person
qualifies it in the dashboard's form, the lead rules run over it, a transcript arrives; the worker
delivers to a receiver on 127.0.0.1 that checks each signature and each body against the schema.
Only real changes are announced: saving the same form again or re-running the rules sends nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from schema.models import Call, OutboxEvent, Recording, Transcript, WebhookDelivery
from tests.conftest import Cli
from tests.fakes.webhook_receiver import Receiver
from tests.integration.dashboard_helpers import Board, csrf_of, make_board
from tests.integration.webhook_helpers import answered_calls, fast, listen, route, running, until, write_config


@pytest.fixture
async def board(
    cli: Cli, make_account: Callable[..., None], tmp_path: Path, engine: Engine, settings: Settings
) -> AsyncIterator[Board]:
    make_account()
    cli.ok("numbers", "add", "800-555-0100", "--account", "Acme", "--source", "Google Ads", "--forward-to", "PJSIP/100")
    write_config(tmp_path)
    async for made in make_board(engine, settings)():
        made.user("mia", "member", ("Acme",))
        yield made


def _updates(factory: sessionmaker[Session]) -> list[dict[str, Any]]:
    """The changes of every call.updated in the outbox, in order."""
    with factory() as s:
        rows = s.scalars(select(OutboxEvent).where(OutboxEvent.type == "call.updated").order_by(OutboxEvent.id))
        return [(row.detail or {})["changes"] for row in rows]


def _one_call(
    cli: Cli, settings: Settings, factory: sessionmaker[Session], traffic: Path, receiver: Receiver | None = None
) -> int:
    """An endpoint taking call.updated (the receiver's, or one nobody listens on), one answered call."""
    url = receiver.url if receiver is not None else "http://127.0.0.1:9/nobody"
    result = cli.ok("webhooks", "add", "Acme", url, "--events", "call.updated")
    if receiver is not None:
        receiver.secrets = [result.stdout.strip()]
    ((linkedid, events),) = answered_calls(traffic, 1)
    call_id = route(settings, linkedid)
    listen(factory, events)
    with factory() as s:
        call = s.get(Call, call_id)
        assert call is not None and call.ended_at is not None and call.disposition == "answered"
    return call_id


async def _deliver_all(settings: Settings, factory: sessionmaker[Session], crm: Receiver) -> list[dict[str, Any]]:
    """Run the worker until every call.updated is delivered; the payloads the receiver accepted, in order."""

    def done() -> bool:
        with factory() as s:
            events = len(_updates(factory))
            delivered = s.scalars(select(WebhookDelivery.state).where(WebhookDelivery.state == "delivered")).all()
            return len(delivered) == events

    async with running(fast(settings), factory):
        await until(done, "every call.updated delivered")
    accepted = [seen.payload for seen in crm.seen if seen.answer == "ok"]
    assert crm.problems() == []  # signed with the endpoint's secret, every body valid by the JSON Schema
    assert set(Counter(p["id"] for p in accepted).values()) <= {1}
    return sorted(accepted, key=lambda p: p["created_at"])


async def test_a_qualification_from_the_dashboard_reaches_the_receiver_once_with_what_changed(
    cli: Cli, board: Board, settings: Settings, session_factory: sessionmaker[Session], asterisk_traffic: Path
) -> None:
    async with Receiver() as crm:
        call_id = _one_call(cli, settings, session_factory, asterisk_traffic, crm)
        assert _updates(session_factory) == []  # the call's end is call.completed, not an update
        async with board.signed_in("mia") as client:
            page = await client.get(f"/dashboard/calls/{call_id}")
            form = {"csrf": csrf_of(page.text), "lead": "yes", "value": "250.5", "tags": "quote, urgent"}
            saved = await client.post(f"/dashboard/calls/{call_id}/qualify", data=form)
            assert saved.status_code == 303, saved.text
            # the same form again: nothing changed, nothing sent
            assert (await client.post(f"/dashboard/calls/{call_id}/qualify", data=form)).status_code == 303
            assert _updates(session_factory) == [
                {"qualification": {"lead": True, "value": 250.5, "tags": ["quote", "urgent"]}}
            ]
            # a refused form (a bad value) changes nothing and announces nothing
            bad = await client.post(f"/dashboard/calls/{call_id}/qualify", data={**form, "value": "lots"})
            assert bad.status_code == 400
            # only the value changes: only the value is named
            again = await client.post(f"/dashboard/calls/{call_id}/qualify", data={**form, "value": "300"})
            assert again.status_code == 303
        assert len(_updates(session_factory)) == 2
        accepted = await _deliver_all(settings, session_factory, crm)

    assert [p["type"] for p in accepted] == ["call.updated", "call.updated"]
    assert [p["data"]["changes"] for p in accepted] == [
        {"qualification": {"lead": True, "value": 250.5, "tags": ["quote", "urgent"]}},
        {"qualification": {"value": 300.0}},
    ]
    assert {p["data"]["call"]["id"] for p in accepted} == {call_id}
    assert {p["data"]["call"]["disposition"] for p in accepted} == {"answered"}
    assert {p["account"]["name"] for p in accepted} == {"Acme"}


async def test_lead_rules_announce_what_they_change_and_a_rerun_sends_nothing(
    cli: Cli, board: Board, settings: Settings, session_factory: sessionmaker[Session], asterisk_traffic: Path
) -> None:
    async with Receiver() as crm:
        call_id = _one_call(cli, settings, session_factory, asterisk_traffic, crm)
        # no rules yet: the rules' run finds nothing to change, and says nothing
        assert "rules applied to 1 call" in cli.ok("automations", "apply", "--account", "Acme").output
        assert _updates(session_factory) == []
        when, then = "disposition = answered", 'tag "answered", qualified, score +5, value 120'
        cli.ok("automations", "add", "answered", "--account", "Acme", "--when", when, "--then", then)
        cli.ok("automations", "apply", "--account", "Acme")
        cli.ok("automations", "apply", "--account", "Acme")  # the same outcome again: no event
        cli.ok("automations", "apply")
        assert _updates(session_factory) == [
            {"rules": {"lead": "qualified", "score": 5, "value": 120, "tags": ["answered"]}}
        ]
        # a transcript arrives (the transcriber's hook, in the transaction that stores it): one event with
        # the transcript and what the rules, now hearing it, changed
        cli.ok(
            "automations",
            "add",
            "booked",
            "--account",
            "Acme",
            "--when",
            'caller said "appointment"',
            "--then",
            'tag "booked"',
        )
        from tracking import transcripts
        from transcriber.pipeline import apply_rules

        with session_factory.begin() as s:
            call = s.get(Call, call_id)
            assert call is not None
            rec = Recording(call_id=call_id, account_id=call.account_id, source_path="/spool/x.wav", state="archived")
            s.add(rec)
            s.flush()
            t = Transcript(recording_id=rec.id, call_id=call_id, account_id=call.account_id)
            s.add(t)
            s.flush()
            segments = [transcripts.Segment("caller", 0.0, 2.0, "I would like an appointment")]
            transcripts.store(s, t, segments, model="m", language="en", channels=1, seconds=2.0, redactions=[])
            apply_rules(s, t)
            transcript_id, recording_id = t.id, rec.id
        cli.ok("automations", "apply", "--account", "Acme")  # nothing new: nothing sent
        updates = _updates(session_factory)
        assert len(updates) == 2
        assert updates[1] == {
            "transcript": {
                "id": transcript_id,
                "recording_id": recording_id,
                "language": "en",
                "text": "I would like an appointment",
            },
            "rules": {"tags": ["answered", "booked"]},
        }
        accepted = await _deliver_all(settings, session_factory, crm)

    assert [p["data"]["changes"] for p in accepted] == updates
    assert {p["data"]["call"]["id"] for p in accepted} == {call_id}


def test_a_spam_flag_and_its_clearing_by_hand_are_announced_once_each(
    cli: Cli, board: Board, settings: Settings, session_factory: sessionmaker[Session], asterisk_traffic: Path
) -> None:
    call_id = _one_call(cli, settings, session_factory, asterisk_traffic)
    cli.ok("automations", "add", "junk", "--account", "Acme", "--when", "disposition = answered", "--then", "spam")
    cli.ok("automations", "apply")
    assert _updates(session_factory) == [{"rules": {"spam": True}}]
    cli.ok("spam", "clear", str(call_id))
    cli.ok("automations", "apply")  # a flag cleared by a person stays cleared: nothing changes
    assert _updates(session_factory) == [{"rules": {"spam": True}}, {"rules": {"spam": False}}]
    assert "not flagged" in cli.fails("spam", "clear", str(call_id)).output
    assert len(_updates(session_factory)) == 2


def test_a_rolled_back_qualification_announces_nothing(
    cli: Cli, board: Board, settings: Settings, session_factory: sessionmaker[Session], asterisk_traffic: Path
) -> None:
    from tracking.users import Viewer
    from web.dashboard import queries

    call_id = _one_call(cli, settings, session_factory, asterisk_traffic)
    with session_factory() as s:
        queries.qualify(s, Viewer(0, "root", "admin", None), call_id, {"lead": "no"})
        s.flush()
        assert len(s.scalars(select(OutboxEvent.id).where(OutboxEvent.type == "call.updated")).all()) == 1
        s.rollback()
    assert _updates(session_factory) == []
