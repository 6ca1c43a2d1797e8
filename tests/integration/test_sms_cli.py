"""`calltrack sms`: texts out through the fake AMI peer answering MessageSend as the recorded Asterisk 22
did (tests/fixtures/asterisk/pjsip/ami-sms-out.txt), opt-outs, threads and listings, on both databases."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from schema.db import make_engine
from schema.models import Account, SmsMessage, SmsOptOut, Source, TrackingNumber
from tests.conftest import Cli
from tests.fakes.ami_action_peer import ActionPeer, RealBytes, load_message_replies

TRACKING = "+18005550100"
JANE = "+14045551234"


@pytest.fixture
def factory(cli: Cli) -> Iterator[sessionmaker]:
    engine = make_engine(cli.database_url)
    yield sessionmaker(bind=engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture
def peer(asterisk_traffic: Path) -> Iterator[ActionPeer]:
    """The fake AMI peer in a thread of its own (the CLI runs its own event loop); "carrier" is the trunk."""
    loop = asyncio.new_event_loop()
    peer = ActionPeer(
        RealBytes.load(asterisk_traffic / "ami" / "ami-answered.txt"),
        write=frozenset({"call", "reporting", "message"}),
        endpoints={"agent100": "sip:agent100@127.0.0.1:5081", "carrier": "sip:127.0.0.1:5080"},
        message_replies=load_message_replies(asterisk_traffic / "pjsip" / "ami-sms-out.txt"),
    )
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(peer.start(), loop).result(5)
    yield peer
    asyncio.run_coroutine_threadsafe(peer.close(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def config(tmp_path: Path, port: int, trunk: str = "carrier") -> str:
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    path = etc / "calltrack.toml"
    path.write_text(
        f'[[ami.servers]]\nname = "pbx1"\nport = {port}\nusername = "ctadmin"\nsecret = "ctsecret"\n'
        f'[sms]\ntrunk = "{trunk}"\ndomain = "pbx.example.com"\n'
    )
    return str(path)


@pytest.fixture
def acme(factory: sessionmaker) -> dict[str, int]:
    with factory.begin() as s:
        acct = Account(name="Acme", timezone="UTC", public_key="pk-acme")
        s.add(acct)
        s.flush()
        src = Source(account_id=acct.id, name="Google Ads")
        s.add(src)
        s.flush()
        tn = TrackingNumber(number=TRACKING, account_id=acct.id, source_id=src.id, forward_to="PJSIP/100")
        s.add(tn)
        s.flush()
        return {"account": acct.id, "source": src.id, "number": tn.id}


def texts(factory: sessionmaker) -> list[SmsMessage]:
    with factory() as s:
        return list(s.scalars(select(SmsMessage).order_by(SmsMessage.id)))


def test_a_reply_goes_out_through_the_trunk_as_asterisk_sends_it(
    cli: Cli, peer: ActionPeer, acme: dict[str, int], factory: sessionmaker, tmp_path: Path
) -> None:
    body = 'Thanks Jane – we open at 9 😀\nSee you "soon", ok?'
    result = cli.ok(
        "--config", config(tmp_path, peer.port), "sms", "send", "--from", "800-555-0100", "--to", "(404) 555-1234", body
    )

    assert "sent" in result.output and "no delivery report" in result.output
    [action] = [h for h in peer.received if h.get("Action") == "MessageSend"]
    assert "Body" not in action  # a line break in a Body header would end the AMI message
    [delivered] = peer.delivered
    assert delivered["request_uri"] == "sip:+14045551234@127.0.0.1:5080"
    assert delivered["from"] == '"+18005550100" <sip:+18005550100@pbx.example.com>'
    assert delivered["body"] == body
    [text] = texts(factory)
    assert (text.direction, text.status, text.from_number, text.to_number) == ("out", "sent", TRACKING, JANE)
    assert text.body == body and text.source_id == acme["source"] and text.system == "pbx1"
    assert delivered["headers"] == {"X-CT-Message-Id": text.message_id}


@pytest.mark.parametrize(
    ("trunk", "answer"),
    [
        ("nosuchendpoint", "Message failed to send."),
        ("sip:carrier", ""),  # refused before sending: not an endpoint name
    ],
)
def test_asterisk_refusing_the_text_is_said_and_stored_as_failed(
    cli: Cli, peer: ActionPeer, acme: dict[str, int], factory: sessionmaker, tmp_path: Path, trunk: str, answer: str
) -> None:
    result = cli.fails(
        "--config", config(tmp_path, peer.port, trunk), "sms", "send", "--from", TRACKING, "--to", JANE, "hi"
    )

    if answer:
        assert answer in result.output
        [text] = texts(factory)
        assert text.status == "failed" and answer in (text.error or "")
    else:
        assert "not a PJSIP endpoint name" in result.output
        assert texts(factory) == [] and peer.delivered == []


def test_the_recorded_errors_of_messagesend_are_passed_on(asterisk_traffic: Path) -> None:
    """The fake answers the three recorded errors as Asterisk did; the client says each."""
    from calltrack.ami_action import MessageSendFailed, message_send
    from config import AmiServer

    async def run() -> list[str]:
        peer = await ActionPeer(
            RealBytes.load(asterisk_traffic / "ami" / "ami-answered.txt"),
            write=frozenset({"message"}),
            message_replies=load_message_replies(asterisk_traffic / "pjsip" / "ami-sms-out.txt"),
        ).start()
        server = AmiServer(name="pbx", port=peer.port, username="ctadmin", secret="ctsecret")
        out = []
        try:
            for dest in ("pjsip:nosuchendpoint", "", "sip:agent100", "pjsip:agent100"):
                try:
                    out.append(await message_send(server, dest, "<sip:+18005550100@x>", "hello"))
                except MessageSendFailed as exc:
                    out.append(str(exc))
        finally:
            await peer.close()
        return out

    failed, no_to, no_tech, ok = asyncio.run(run())
    assert failed.endswith("Asterisk refused the text: Message failed to send.")
    assert no_to.endswith("Asterisk refused the text: No 'To' address specified.")
    assert no_tech.endswith("Asterisk refused the text: Message technology not found.")
    assert ok == "Message successfully sent"


def test_without_the_message_write_class_the_error_says_what_to_grant(
    cli: Cli, peer: ActionPeer, acme: dict[str, int], tmp_path: Path
) -> None:
    peer.write = frozenset({"call", "reporting"})
    result = cli.fails("--config", config(tmp_path, peer.port), "sms", "send", "--from", TRACKING, "--to", JANE, "hi")
    assert "Permission denied" in result.output and "message write class" in result.output


@pytest.mark.parametrize(
    ("body", "why"),
    [("x" * 1024, "1024 bytes"), ("é" * 512, "1024 bytes"), ("   ", "empty")],
)
def test_a_text_asterisk_cannot_carry_is_refused_before_sending(
    cli: Cli, peer: ActionPeer, acme: dict[str, int], factory: sessionmaker, tmp_path: Path, body: str, why: str
) -> None:
    result = cli.fails("--config", config(tmp_path, peer.port), "sms", "send", "--from", TRACKING, "--to", JANE, body)
    assert why in result.output
    assert peer.delivered == [] and texts(factory) == []


def test_a_text_of_1023_bytes_is_sent(cli: Cli, peer: ActionPeer, acme: dict[str, int], tmp_path: Path) -> None:
    cli.ok("--config", config(tmp_path, peer.port), "sms", "send", "--from", TRACKING, "--to", JANE, "y" * 1023)
    assert len(str(peer.delivered[0]["body"])) == 1023


def test_texts_only_from_an_active_tracking_number(
    cli: Cli, peer: ActionPeer, acme: dict[str, int], factory: sessionmaker, tmp_path: Path
) -> None:
    cfg = config(tmp_path, peer.port)
    assert (
        "not a tracking number"
        in cli.fails("--config", cfg, "sms", "send", "--from", "+18005550199", "--to", JANE, "x").output
    )
    with factory.begin() as s:
        s.get(TrackingNumber, acme["number"]).status = "released"
    assert "released" in cli.fails("--config", cfg, "sms", "send", "--from", TRACKING, "--to", JANE, "x").output
    assert peer.delivered == []


def test_an_opted_out_number_is_never_texted_until_it_opts_in(
    cli: Cli, peer: ActionPeer, acme: dict[str, int], factory: sessionmaker, tmp_path: Path
) -> None:
    cfg = config(tmp_path, peer.port)
    with factory.begin() as s:
        s.add(SmsOptOut(account_id=acme["account"], number=JANE, keyword="stop"))
    result = cli.fails("--config", cfg, "sms", "send", "--from", TRACKING, "--to", JANE, "Sale today!")
    assert "texted STOP" in result.output and "START" in result.output
    assert peer.delivered == [] and texts(factory) == []
    [rows] = json.loads(cli.ok("sms", "opt-outs", "--format", "json").output)
    assert rows["number"] == JANE and rows["account"] == "Acme"

    cli.ok("sms", "opt-in", JANE, "--account", "Acme")
    cli.ok("--config", cfg, "sms", "send", "--from", TRACKING, "--to", JANE, "Sale today!")
    assert len(peer.delivered) == 1


def test_list_and_thread_show_texts_in_and_out_together(
    cli: Cli, peer: ActionPeer, acme: dict[str, int], factory: sessionmaker, tmp_path: Path
) -> None:
    import datetime as dt

    t0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
    with factory.begin() as s:
        s.add(
            SmsMessage(
                system="pbx1",
                message_id="in-1",
                account_id=acme["account"],
                direction="in",
                from_number=JANE,
                to_number=TRACKING,
                body="Do you fix boilers?",
                received_at=t0,
                source_id=acme["source"],
                status="received",
                first_time=True,
            )
        )
        s.add(
            SmsMessage(
                system="pbx1",
                message_id="in-2",
                account_id=acme["account"],
                direction="in",
                from_number="+14045550000",
                to_number=TRACKING,
                body="other",
                received_at=t0,
            )
        )
    cli.ok("--config", config(tmp_path, peer.port), "sms", "send", "--from", TRACKING, "--to", JANE, "Yes we do")

    thread = json.loads(cli.ok("sms", "thread", JANE, "--format", "json").output)
    assert [(t["direction"], t["body"]) for t in thread] == [("in", "Do you fix boilers?"), ("out", "Yes we do")]
    assert thread[0]["source"] == "Google Ads" and thread[0]["first_time"] == "yes"
    listed = json.loads(cli.ok("sms", "list", "--number", TRACKING, "--format", "json").output)
    assert [t["body"] for t in listed] == ["Yes we do", "other", "Do you fix boilers?"]
    recent = json.loads(cli.ok("sms", "list", "--since", "2026-12-02", "--format", "json").output)
    assert [t["body"] for t in recent] == ["Yes we do"]
    assert "unknown account" in cli.fails("sms", "list", "--account", "Nobody").output.lower()


def test_forward_and_help_text_are_checked(cli: Cli, acme: dict[str, int], factory: sessionmaker) -> None:
    cli.ok("sms", "forward", TRACKING, "pjsip:agent100")
    assert "invalid text destination" in cli.fails("sms", "forward", TRACKING, "pjsip:agent100,evil").output
    assert "[sms] trunk" in cli.fails("sms", "forward", TRACKING, "+14045550199").output
    cli.ok("sms", "help-text", "Acme", "Acme Plumbing: call 800-555-0100. Reply STOP to stop.")
    with factory() as s:
        assert s.get(TrackingNumber, acme["number"]).sms_forward_to == "pjsip:agent100"
        assert s.get(Account, acme["account"]).sms_help_text.startswith("Acme Plumbing")


def _text(acme: dict[str, int], message_id: str, at: object, **values: object) -> SmsMessage:
    values.setdefault("from_number", JANE)
    return SmsMessage(
        system="pbx1",
        message_id=message_id,
        account_id=acme["account"],
        tracking_number_id=acme["number"],
        direction=values.pop("direction", "in"),
        to_number=TRACKING,
        body="hello",
        received_at=at,
        **values,
    )


def test_the_sources_report_counts_texts_beside_calls(cli: Cli, acme: dict[str, int], factory: sessionmaker) -> None:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    with factory.begin() as s:
        organic = Source(account_id=acme["account"], name="Organic")
        s.add(organic)
        s.flush()
        s.add(_text(acme, "t1", now, source_id=acme["source"], status="received", first_time=True))
        s.add(_text(acme, "t2", now, source_id=acme["source"], status="received", first_time=False))
        s.add(_text(acme, "t3", now, source_id=acme["source"], status="blocked", from_number="+14045550666"))
        s.add(
            _text(acme, "t4", now, source_id=organic.id, status="received", first_time=True, from_number="+14045550000")
        )
        s.add(_text(acme, "t5", now, source_id=acme["source"], direction="out", status="sent", from_number=TRACKING))
        s.add(_text(acme, "t6", now - dt.timedelta(days=10), source_id=acme["source"], status="received"))
    rows = {r["source"]: r for r in json.loads(cli.ok("reports", "sources", "--format", "json").output)}
    assert (rows["Google Ads"]["texts"], rows["Google Ads"]["first_time_texts"]) == (3, 1)
    assert (rows["Organic"]["texts"], rows["Organic"]["first_time_texts"]) == (1, 1)
    assert rows["Google Ads"]["calls"] == 0
    recent = {
        r["source"]: r for r in json.loads(cli.ok("reports", "sources", "--since", "2d", "--format", "json").output)
    }
    assert recent["Google Ads"]["texts"] == 2


def test_retention_removes_old_texts_of_each_account_and_erase_takes_a_senders_texts(
    cli: Cli, acme: dict[str, int], factory: sessionmaker
) -> None:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    with factory.begin() as s:
        other = Account(name="Other", timezone="UTC", public_key="pk-other")
        s.add(other)
        s.flush()
        s.add(_text(acme, "old", now - dt.timedelta(days=40)))
        s.add(_text(acme, "new", now - dt.timedelta(days=5), from_number="+14045550000"))
        s.add(
            SmsMessage(
                system="pbx1",
                message_id="other-old",
                account_id=other.id,
                direction="in",
                from_number="+14045550000",
                to_number="+18005550777",
                body="x",
                received_at=now - dt.timedelta(days=40),
            )
        )
    cli.ok("privacy", "set-retention", "Acme", "--days", "30")
    cli.ok("privacy", "retention")
    assert sorted(t.message_id for t in texts(factory)) == ["new", "other-old"]

    cli.ok("privacy", "erase", "+14045550000", "--yes")
    assert texts(factory) == []
