"""The sample messages context (config/samples/asterisk/extensions_calltrack_sms.conf) played by the fake
dialplan: the AGI it makes, and the MessageSend() calls that follow each answer of the sms handler."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from config import Settings
from tests.fakes.dialplan import Channel, Run, app_args, load
from tracking.messages import TextDecision

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "samples" / "asterisk" / "extensions_calltrack_sms.conf"


def message_channel(exten: str = "+18005550100") -> Channel:
    channel = Channel(uniqueid="1796175659.12", linkedid="1796175659.12", caller_num="", caller_name="")
    channel.functions = {
        "MESSAGE(from)": '"Jane Doe" <sip:+14045551234@127.0.0.1>',
        "MESSAGE(to)": f"pjsip:{exten}@127.0.0.1",
        "MESSAGE(body)": 'Hi, "quoted"\r\nsecond line',
    }
    channel.variables["EXTEN"] = exten
    return channel


def play(channel: Channel, handler: dict[str, str] | None, agistatus: str = "SUCCESS") -> tuple[str, list[list[str]]]:
    """Run to the AGI (its data), let the handler set *handler*, and collect the MessageSend() calls."""
    run = Run(load(SAMPLE), channel)
    run.goto("calltrack-messages", "_+X." if channel.variables["EXTEN"].startswith("+") else "_X.")
    agi = run.run_until("AGI")
    assert agi is not None
    run.skip()
    channel.variables["AGISTATUS"] = agistatus
    for name, value in (handler or {}).items():
        channel.write(name, value)
    sends = []
    while (data := run.run_until("MessageSend")) is not None:
        sends.append([*app_args(data), channel.read("MESSAGE(body)")])
        run.skip()
    return agi, sends


def test_the_agi_address_carries_the_number_as_digits_only() -> None:
    agi, _ = play(message_channel("+1(800)555-0100 x"), None, "FAILURE")
    assert agi == "agi://127.0.0.1:4573/sms?number=+18005550100"
    assert agi.startswith(f"agi://{Settings().agi.listen}/sms?")


def test_a_forward_uses_the_destination_and_the_from_the_handler_built() -> None:
    decision = TextDecision("ok", "pjsip:agent100", '"Zoë JJ O\'Brien x" <sip:+14045551234@pbx.example.com>')
    _, sends = play(message_channel(), dict(decision.variables()))
    assert sends == [
        ["pjsip:agent100", '"Zoë JJ O\'Brien x" <sip:+14045551234@pbx.example.com>', 'Hi, "quoted"\r\nsecond line']
    ]


def test_a_reply_to_help_goes_back_to_the_sender_with_its_own_body() -> None:
    decision = TextDecision(
        "ok",
        "pjsip:agent100",
        '"Jane Doe" <sip:+14045551234@pbx.example.com>',
        reply="Acme Plumbing, 800-555-0100. Reply STOP to stop.",
        reply_to="pjsip:PJSIP/+14045551234@carrier",
        reply_from='"+18005550100" <sip:+18005550100@pbx.example.com>',
    )
    _, sends = play(message_channel(), dict(decision.variables()))
    assert [s[:2] for s in sends] == [
        ["pjsip:agent100", '"Jane Doe" <sip:+14045551234@pbx.example.com>'],
        ["pjsip:PJSIP/+14045551234@carrier", '"+18005550100" <sip:+18005550100@pbx.example.com>'],
    ]
    assert sends[1][2] == "Acme Plumbing, 800-555-0100. Reply STOP to stop."


def test_a_blocked_sender_is_forwarded_nowhere_and_no_destination_sends_nothing() -> None:
    assert play(message_channel(), dict(TextDecision("blocked").variables()))[1] == []
    assert play(message_channel(), dict(TextDecision("fallback").variables()))[1] == []


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ('"Jane Doe" <sip:+14045551234@127.0.0.1>', "<sip:+14045551234@localhost>"),
        ('"Zo   \\"JJ\\" O\'Brien \\\\ x" <sip:+14045551234@127.0.0.1>', "<sip:+14045551234@localhost>"),
        ("<sip:+14045551234@127.0.0.1>", "<sip:+14045551234@localhost>"),
    ],
)
def test_without_calltrack_the_text_still_goes_to_the_fallback_endpoint(sender: str, expected: str) -> None:
    channel = message_channel()
    channel.functions["MESSAGE(from)"] = sender
    _, sends = play(channel, None, "FAILURE")
    assert [s[:2] for s in sends] == [["pjsip:reception", expected]]


def test_the_sample_documents_every_variable_the_handler_sets() -> None:
    text = SAMPLE.read_text()
    for name, _ in TextDecision("ok").variables():
        assert name in text, f"{name} is not documented in the sample"
    used = set(re.findall(r"\$\{(CALLTRACK_SMS_[A-Z_]+)\}", text))
    assert used <= {name for name, _ in TextDecision("ok").variables()} | {"CALLTRACK_SMS_SENDER"}
    assert "BASE64_DECODE(${CALLTRACK_SMS_REPLY})" in text
