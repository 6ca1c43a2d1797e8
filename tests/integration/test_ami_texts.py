"""The AMI listener and texts: the Message channel is no call, and a failed forward is told on the text.

Asterisk 22 runs every text's dialplan on one ``Message/ast_msg_queue`` channel, never hung up
(pjsip/README.md). The streams are the recorded ``sms-in`` and ``sms-in-newline`` sessions and the
recorded ``sip-call-answered`` call, one after the other on one connection; the texts as calltrack's
sample context plays them (tests.fakes.ami_server.sample_text_frames), the forward's MESSAGE_SEND_STATUS
as recorded (SUCCESS) or as MessageSend words a failure (FAILURE, INVALID_URI).
SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from schema.models import SmsMessage
from tests.conftest import Cli
from tests.fakes.ami_server import FakeAmiServer, Plan, call_frames, load_pjsip_capture, sample_text_frames
from tests.integration.ami_harness import Harness, calls_of, stored_payloads, wait_for

CALL = "1796175587.0"


@pytest.mark.parametrize("send_status", ["SUCCESS", "FAILURE", "INVALID_URI"])
async def test_texts_on_the_message_channel_are_no_calls_and_a_failed_forward_shows(
    cli: Cli,
    settings: object,
    database_url: str,
    tmp_path: Path,
    asterisk_traffic: Path,
    session_factory: sessionmaker[Session],
    send_status: str,
) -> None:
    ids = []
    with session_factory() as s, s.begin():
        for n, message_id in enumerate(("1-23024@127.0.0.1", "1-23104@127.0.0.1")):
            row = SmsMessage(system="pbx1", message_id=message_id, direction="in", from_number="+14045551234",
                             to_number="+18005550100", body=f"text {n}", status="received",
                             forwarded_to="pjsip:agent100")  # fmt: skip
            s.add(row)
            s.flush()
            ids.append(row.id)
    stream = [
        *sample_text_frames("sms-in", asterisk_traffic, ids[0], "SUCCESS"),
        *sample_text_frames("sms-in-newline", asterisk_traffic, ids[1], send_status),
        *call_frames(load_pjsip_capture("sip-call-answered", asterisk_traffic)),
    ]
    secret = tmp_path / "ami.secret"
    secret.write_text("s3cret\n")
    async with FakeAmiServer([Plan(frames=stream)]) as fake, Harness(settings, database_url, fake, secret) as h:  # type: ignore[arg-type]
        await wait_for(lambda: bool(calls_of(h.engine, h.system).get(CALL, {}).get("ended_at")), what="the call")
        stored = stored_payloads(h.engine, h.system)
    # the call is the one call; the texts' channel made none, and its events are kept
    (call,) = json.loads(cli.ok("calls", "list", "--format", "json").output)
    assert call["linkedid"] == CALL and call["disposition"] == "answered"
    statuses = [p["Value"] for p in stored if p.get("Variable") == "MESSAGE_SEND_STATUS"]
    assert statuses == ["SUCCESS", send_status]
    texts = {t["id"]: t for t in json.loads(cli.ok("sms", "list", "--format", "json").output)}
    assert texts[ids[0]]["status"] == "received"
    if send_status == "SUCCESS":
        assert texts[ids[1]]["status"] == "received"
    else:
        assert texts[ids[1]]["status"] == "forward-failed"
        with session_factory() as s:
            failed = s.get(SmsMessage, ids[1])
            assert failed is not None
            assert (
                failed.error == f"forward to pjsip:agent100 failed: MessageSend set MESSAGE_SEND_STATUS={send_status}"
            )
