"""Webhooks end to end on SQLite and PostgreSQL: real calls (route, listener, recorder) written to the
outbox, delivered by the worker to a receiver on 127.0.0.1 that fails in every way a receiver can,
until each event has reached it exactly once, signed and valid against the JSON Schema."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ami_listener.sink import CallWriter, rebuild
from config import Settings
from recorder.pipeline import Recorder
from schema.models import Call, OutboxEvent, WebhookDelivery, WebhookEndpoint
from tests.conftest import Cli
from tests.fakes.webhook_receiver import Receiver
from tests.integration.recorder_helpers import put_real, recorder_settings
from tests.integration.webhook_helpers import (
    answered_calls,
    fast,
    listen,
    outbox_ids,
    route,
    running,
    states,
    until,
    write_config,
)
from tracking import outbox


@pytest.fixture
def acme(cli: Cli, make_account: Callable[..., None], tmp_path: Path) -> None:
    make_account()
    cli.ok("numbers", "add", "800-555-0100", "--account", "Acme", "--source", "Google Ads", "--forward-to", "PJSIP/100")
    write_config(tmp_path)


def add_endpoint(cli: Cli, url: str, *options: str) -> tuple[int, str]:
    result = cli.ok("webhooks", "add", "Acme", url, *options)
    secret = result.stdout.strip()
    endpoint = int(result.stderr.split("endpoint ", 1)[1].split(" ", 1)[0])
    return endpoint, secret


async def test_every_event_reaches_a_failing_receiver_exactly_once_signed_and_valid(
    cli: Cli,
    acme: None,
    settings: Settings,
    session_factory: sessionmaker[Session],
    asterisk_traffic: Path,
    tmp_path: Path,
) -> None:
    async with Receiver() as crm:
        endpoint, secret = add_endpoint(cli, crm.url)
        assert secret.startswith("whsec_") and secret not in cli.ok("webhooks", "list", "--format", "json").output
        crm.secrets = [secret]
        calls = answered_calls(asterisk_traffic, 3)
        for linkedid, _ in calls:
            route(settings, linkedid)
        for _, events in calls:
            listen(session_factory, events)
        # one recording of one of the calls, archived by the real recorder (ffmpeg)
        with session_factory() as s:
            first_call = s.scalars(select(Call.id).order_by(Call.id)).first()
        cfg = recorder_settings(settings, tmp_path)
        put_real(asterisk_traffic, cfg.recorder.spool_dir, f"{first_call}.wav")
        assert Recorder(cfg, session_factory).run_pass().archived == [str(first_call)]
        expected = outbox_ids(session_factory)
        with session_factory() as s:
            kinds = Counter(s.scalars(select(OutboxEvent.type)))
        assert kinds == {"call.started": 3, "call.completed": 3, "recording.ready": 1}

        # an error, a dropped connection, no answer in time, a 429, then errors again before it recovers
        crm.script.extend(["error", "close", "slow", "busy", "error", "close", "error"])
        async with running(fast(settings), session_factory):
            await until(lambda: states(session_factory) == ["delivered"] * 7, "every delivery")

    assert sorted(crm.accepted_ids()) == sorted(expected)
    assert set(Counter(crm.accepted_ids()).values()) == {1}  # each exactly once
    assert crm.problems() == []  # every request signed with the secret, every body valid by the schema
    assert len(crm.seen) == 7 + 7  # seven failed attempts were retried
    bodies = {s.payload["id"]: s.payload for s in crm.seen if s.answer == "ok"}
    completed = [p for p in bodies.values() if p["type"] == "call.completed"]
    assert {p["data"]["call"]["disposition"] for p in completed} == {"answered"}
    assert {p["data"]["call"]["source"]["name"] for p in completed} == {"Google Ads"}
    assert {p["data"]["call"]["caller_number"] for p in completed} == {"+14045551234"}
    started = [p for p in bodies.values() if p["type"] == "call.started"]
    assert all(p["data"]["call"]["ended_at"] is None for p in started)
    (ready,) = [p for p in bodies.values() if p["type"] == "recording.ready"]
    assert ready["data"]["recording"]["call_id"] == first_call and ready["data"]["recording"]["format"] == "mp3"
    assert {p["account"]["name"] for p in bodies.values()} == {"Acme"}
    # the same bytes on every attempt of an event: the body is frozen once rendered
    per_event: dict[str, set[bytes]] = {}
    for seen in crm.seen:
        per_event.setdefault(seen.headers["calltrack-event-id"], set()).add(seen.body)
    assert all(len(b) == 1 for b in per_event.values())
    listed = json.loads(cli.ok("webhooks", "deliveries", "--endpoint", str(endpoint), "--format", "json").output)
    assert len(listed) == 7 and {d["state"] for d in listed} == {"delivered"}
    assert sum(d["attempts"] for d in listed) == 14


async def test_a_slow_or_dead_endpoint_never_holds_up_the_others(
    cli: Cli, acme: None, settings: Settings, session_factory: sessionmaker[Session], asterisk_traffic: Path
) -> None:
    async with Receiver() as dead, Receiver() as healthy:
        dead.default = "slow"
        add_endpoint(cli, dead.url)
        add_endpoint(cli, healthy.url)
        calls = answered_calls(asterisk_traffic, 12)
        for linkedid, _ in calls:
            route(settings, linkedid)
        async with running(fast(settings, per_endpoint=2, concurrency=4), session_factory):
            await until(lambda: len(healthy.accepted) == 12, "the healthy receiver's 12 events")
            # the dead one has had only a probe or two at a time, and every event still waits for it
            with session_factory() as s:
                waiting = s.scalar(
                    select(func.count())
                    .select_from(WebhookDelivery)
                    .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                    .where(WebhookEndpoint.url == dead.url, WebhookDelivery.state == "pending")
                )
            assert waiting == 12
        assert dead.most_open <= 2  # never more than per_endpoint of the slots
    assert sorted(healthy.accepted) == sorted(outbox_ids(session_factory))


async def test_dead_after_the_retry_window_then_retried_by_hand(
    cli: Cli, acme: None, settings: Settings, session_factory: sessionmaker[Session], asterisk_traffic: Path
) -> None:
    async with Receiver() as crm:
        crm.default = "error"
        endpoint, secret = add_endpoint(cli, crm.url, "--events", "call.started")
        crm.secrets = [secret]
        ((linkedid, _),) = answered_calls(asterisk_traffic, 1)
        route(settings, linkedid)
        short = fast(settings, retry_hours=0.0005)  # 1.8 s
        async with running(short, session_factory):
            await until(lambda: states(session_factory) == ["dead"], "the delivery to die")
        failed = json.loads(cli.ok("webhooks", "deliveries", "--failed", "--format", "json").output)
        assert [(d["state"], d["last_status"], d["last_error"]) for d in failed] == [
            ("dead", 500, "HTTP 500: database is down")
        ]
        assert "1" in cli.ok("webhooks", "list").output.splitlines()[1].split()  # its dead count
        crm.default = "ok"
        assert "1 delivery(ies) due again now" in cli.ok("webhooks", "retry", "--all-failed").output
        async with running(short, session_factory):
            await until(lambda: states(session_factory) == ["delivered"], "the retried delivery")
    assert crm.accepted == outbox_ids(session_factory) and crm.problems() == []
    assert cli.fails("webhooks", "retry", str(failed[0]["id"])).output.endswith(
        "was delivered already; nothing to retry\n"
    )
    assert "no delivery 999" in cli.fails("webhooks", "retry", "999").output


def test_events_only_for_accounts_that_take_them_and_once_per_subject(
    cli: Cli,
    acme: None,
    settings: Settings,
    session_factory: sessionmaker[Session],
    asterisk_traffic: Path,
) -> None:
    (first, second, third) = answered_calls(asterisk_traffic, 3)
    # no endpoint: nothing is written
    route(settings, first[0])
    listen(session_factory, first[1])
    assert outbox_ids(session_factory) == []
    # an endpoint that takes call.completed only; a disabled one changes nothing
    add_endpoint(cli, "http://127.0.0.1:9/x", "--events", "call.completed")
    route(settings, second[0])
    route(settings, second[0])  # Asterisk retried the AGI: the same call
    listen(session_factory, second[1])
    listen(session_factory, second[1])  # the listener replayed its spool
    with session_factory() as s:
        assert list(s.execute(select(OutboxEvent.type, OutboxEvent.call_id))) == [
            ("call.completed", s.scalar(select(Call.id).where(Call.linkedid == second[0])))
        ]
        # `calls rebuild` regenerates old calls: receivers are not told about them again (nor for the first time)
        rebuild(s, "pbx1")
        s.commit()
    assert len(outbox_ids(session_factory)) == 1
    # a do-not-track caller is never announced
    cli.ok("callers", "do-not-track", "+1 404 555 1234")
    cli.ok("webhooks", "add", "Acme", "http://127.0.0.1:9/y")
    route(settings, third[0])
    listen(session_factory, third[1])
    assert len(outbox_ids(session_factory)) == 1


def test_a_batch_that_rolls_back_announces_nothing(
    cli: Cli, acme: None, settings: Settings, session_factory: sessionmaker[Session], asterisk_traffic: Path
) -> None:
    cli.ok("webhooks", "add", "Acme", "http://127.0.0.1:9/x", "--events", "call.completed")
    ((linkedid, events),) = answered_calls(asterisk_traffic, 1)
    route(settings, linkedid)

    class Crash(Exception):
        pass

    from ami_listener.correlator import Correlator

    correlator, writer = Correlator(), CallWriter("pbx1")
    correlator.feed_many(events)
    snaps = correlator.take_changed()
    with pytest.raises(Crash), session_factory() as s, s.begin():
        writer.write(s, snaps)
        assert s.scalar(select(func.count()).select_from(OutboxEvent)) == 1  # written with the call...
        raise Crash  # ...and the batch's transaction fails before its commit
    assert outbox_ids(session_factory) == []  # no event for a change that was never stored
    with session_factory() as s, s.begin():
        assert s.scalar(select(Call.ended_at)) is None
        writer.write(s, snaps)  # the batch again (the listener keeps it for a retry)
    assert len(outbox_ids(session_factory)) == 1


async def test_rotation_signs_with_both_secrets_during_the_overlap(
    cli: Cli, acme: None, settings: Settings, session_factory: sessionmaker[Session], asterisk_traffic: Path
) -> None:
    async with Receiver() as crm:
        endpoint, old = add_endpoint(cli, crm.url, "--events", "call.started")
        rotated = cli.ok("webhooks", "rotate-secret", str(endpoint), "--overlap", "2h")
        new = rotated.stdout.strip()
        assert new.startswith("whsec_") and new != old and "both signatures for 2h" in rotated.stderr
        assert "until" not in cli.ok("webhooks", "list").output or True
        crm.secrets = [old, new]
        calls = answered_calls(asterisk_traffic, 2)
        route(settings, calls[0][0])
        async with running(fast(settings), session_factory):
            await until(lambda: len(crm.accepted) == 1, "the first event")
        (during,) = crm.seen
        assert sorted(during.valid_for) == sorted([old, new]) and len(during.signatures) == 2
        # the overlap ends at once: only the new secret signs
        newest = cli.ok("webhooks", "rotate-secret", str(endpoint), "--overlap", "0").stdout.strip()
        crm.secrets = [old, new, newest]
        route(settings, calls[1][0])
        async with running(fast(settings), session_factory):
            await until(lambda: len(crm.accepted) == 2, "the second event")
        after = crm.seen[-1]
        assert after.valid_for == [newest] and len(after.signatures) == 1
    assert "not a duration" in cli.fails("webhooks", "rotate-secret", str(endpoint), "--overlap", "soon").output


async def test_the_test_command_sends_a_signed_sample_and_tells_a_failure(cli: Cli, acme: None, tmp_path: Path) -> None:
    async with Receiver() as crm:
        endpoint, secret = add_endpoint(cli, crm.url)
        crm.secrets = [secret]
        for event in outbox.EVENT_TYPES:
            ok = await _in_thread(cli.ok, "webhooks", "test", str(endpoint), "--event", event)
            assert f"sent {event} sample evt_" in ok.output and "HTTP 200" in ok.output
        assert [s.payload["type"] for s in crm.seen] == list(outbox.EVENT_TYPES)
        assert all(s.payload["test"] is True for s in crm.seen) and crm.problems() == []
        crm.default = "error"
        failed = await _in_thread(cli.fails, "webhooks", "test", str(endpoint))
        assert failed.output.strip().endswith("HTTP 500: database is down")
    bad = await _in_thread(cli.fails, "webhooks", "test", str(endpoint), "--event", "call.exploded")
    assert "unknown event type 'call.exploded'" in bad.output


async def _in_thread(func: Callable[..., object], *args: str) -> object:
    import asyncio

    return await asyncio.to_thread(func, *args)


def test_webhooks_cli_habits(cli: Cli, acme: None) -> None:
    assert (
        "unknown event type 'call.ended'"
        in cli.fails("webhooks", "add", "Acme", "http://127.0.0.1:9/x", "--events", "call.ended").output
    )
    assert "unknown account 'Nobody'" in cli.fails("webhooks", "add", "Nobody", "http://127.0.0.1:9/x").output
    endpoint, _ = add_endpoint(cli, "http://127.0.0.1:9/x", "--description", "HubSpot bridge")
    (row,) = json.loads(cli.ok("webhooks", "list", "--format", "json").output)
    assert (row["url"], row["events"], row["description"]) == (
        "http://127.0.0.1:9/x",
        "call.started,call.completed,call.updated,recording.ready,sms.received,form.submitted",
        "HubSpot bridge",
    )
    assert "whsec_" not in json.dumps(row)
    assert "no webhook endpoint 77" in cli.fails("webhooks", "remove", "77").output
    assert "give delivery ids or --all-failed" in cli.fails("webhooks", "retry").output
    assert f"removed webhook endpoint {endpoint}" in cli.ok("webhooks", "remove", str(endpoint)).output
    assert cli.ok("webhooks", "list").output.strip() == "(none)"


async def test_erasing_a_caller_takes_their_pending_events_and_deliveries(
    cli: Cli, acme: None, settings: Settings, session_factory: sessionmaker[Session], asterisk_traffic: Path
) -> None:
    async with Receiver() as crm:
        crm.default = "error"
        add_endpoint(cli, crm.url)
        ((jane, events), (bob, _)) = answered_calls(asterisk_traffic, 2)
        route(settings, jane)
        listen(session_factory, events)
        route(settings, bob, caller="+14045559876")
        async with running(fast(settings), session_factory):
            await until(lambda: len(states(session_factory)) == 3 and len(crm.seen) >= 1, "the deliveries")
        cli.ok("privacy", "erase", "+14045551234", "--yes")
    with session_factory() as s:
        left = list(s.execute(select(OutboxEvent.type, Call.caller_number).join(Call, Call.id == OutboxEvent.call_id)))
        assert left == [("call.started", "+14045559876")]
        assert s.scalar(select(func.count()).select_from(WebhookDelivery)) == 1
