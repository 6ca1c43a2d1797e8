"""The pure correlator, on the recorded Asterisk 22 scenarios (and transfers built on them)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ami_listener.correlator import Correlator, RawEvent, channel_base, channel_exten
from ami_listener.parser import parse_buffer
from tests.fakes.ami_server import (
    Frame,
    call_frames,
    epoch_of,
    interleave,
    load_capture,
    load_pjsip_capture,
    sample_text_frames,
    with_timestamps,
)
from tracking.phone import try_normalize

T0 = dt.datetime(2026, 11, 29, 1, 0, tzinfo=dt.UTC)


def stream(scenario: str, traffic: Path) -> list[Frame]:
    recorded = load_capture(scenario, traffic)
    return with_timestamps(call_frames(recorded), epoch_of(recorded))


def events(frames: Sequence[Frame], start_seq: int = 1) -> list[RawEvent]:
    messages, rest = parse_buffer(b"".join(f.data for f in frames))
    assert rest == b""
    return [RawEvent(start_seq + i, T0, m) for i, m in enumerate(messages)]


def correlate(evs: Sequence[RawEvent]) -> dict[str, Any]:
    c = Correlator(try_normalize)
    c.feed_many(evs)
    return {s.linkedid: s for s in c.take_changed()}


def one(traffic: Path, scenario: str) -> Any:
    snaps = correlate(events(stream(scenario, traffic)))
    assert len(snaps) == 1
    return next(iter(snaps.values()))


@pytest.mark.parametrize(
    ("scenario", "disposition", "answered_by", "dialled"),
    [
        ("answered", "answered", "Local/100@agents", "+18005550100"),
        ("noanswer", "missed", None, "+18005550200"),
        ("busy", "busy", None, "+18005550300"),
        ("earlyhangup", "abandoned", None, "+18005550400"),
        ("origtimeout", "abandoned", None, "+18005550400"),
        ("agihangup", "abandoned", None, "+18005550500"),
        ("mixstop", "answered", "Local/101@agents", "+18005550600"),
        ("iax-answered", "answered", "Local/100@agents", "+18005550100"),
        ("classic", "failed", None, "+18005550100"),
        ("agidown", "answered", "Local/100@agents", "+18005550100"),
    ],
)
def test_recorded_scenarios(
    asterisk_traffic: Path, scenario: str, disposition: str, answered_by: str | None, dialled: str
) -> None:
    snap = one(asterisk_traffic, scenario)
    v = snap.values
    assert snap.closed
    assert (v["disposition"], v["answered_by"], v["tracking_number"]) == (disposition, answered_by, dialled)
    assert (v["caller_number"], v["caller_name"]) == ("+14045551234", "Jane Doe")
    assert v["started_at"] <= (v["ringing_at"] or v["started_at"]) <= v["ended_at"]
    assert v["duration"] == pytest.approx((v["ended_at"] - v["started_at"]).total_seconds(), abs=0.001)
    if disposition == "answered":
        assert v["answered_at"] is not None and v["talk_time"] > 5
    else:
        assert v["answered_at"] is None and v["talk_time"] is None
    assert all(leg["hungup_at"] is not None for leg in snap.legs)


@pytest.mark.parametrize("status", ["blocked", "ok"])
def test_a_call_the_route_refused_ends_blocked(asterisk_traffic: Path, status: str) -> None:
    """The classic capture (no Dial after the AGI) with the route's CALLTRACK_STATUS VarSet in it."""
    frames = [
        Frame(
            f.at,
            f.data.replace(
                b"Variable: CT_DEST\r\nValue: Local/100@agents",
                b"Variable: CALLTRACK_STATUS\r\nValue: " + status.encode(),
            ),
        )
        for f in stream("classic", asterisk_traffic)
    ]
    snaps = correlate(events(frames))
    (snap,) = snaps.values()
    assert snap.closed
    assert snap.values["disposition"] == ("blocked" if status == "blocked" else "failed")


def test_answered_call_in_detail(asterisk_traffic: Path) -> None:
    snap = one(asterisk_traffic, "answered")
    v = snap.values
    assert snap.linkedid == "1795915078.0"  # the ;1 leg of the originate
    assert v["uniqueid"] == "1795915078.1"  # the ;2 leg ran the dialplan (AGI, MixMonitor, Cdr)
    assert v["recording_file"] == "/var/spool/asterisk/monitor/1795915078.1.wav"
    assert v["hangup_cause"] == 16
    assert v["ring_time"] == pytest.approx(0.001, abs=0.01)
    assert v["talk_time"] == pytest.approx(6.02, abs=0.05)
    assert v["duration"] == pytest.approx(6.5, abs=0.05)
    roles = {leg["channel"]: (leg["role"], leg["exten"]) for leg in snap.legs}
    assert roles == {
        "Local/8005550100@from-pstn-00000000;1": ("inbound", "8005550100"),
        "Local/8005550100@from-pstn-00000000;2": ("inbound", "8005550100"),
        "Local/100@agents-00000001;1": ("agent", "100"),
        "Local/100@agents-00000001;2": ("agent", "100"),
    }
    kinds = [t["kind"] for t in snap.timeline]
    assert kinds == ["started", "recording", "ringing", "answered"] + ["hangup"] * 4 + ["ended"]
    answered = next(t for t in snap.timeline if t["kind"] == "answered")
    assert answered["detail"] == {"by": "Local/100@agents", "exten": "100"}


def test_noanswer_rings_for_the_dial_timeout(asterisk_traffic: Path) -> None:
    v = one(asterisk_traffic, "noanswer").values
    assert v["ring_time"] == pytest.approx(20.0, abs=0.1)
    assert v["hangup_cause"] == 16


def test_trunk_call_has_the_caller_from_newchannel(asterisk_traffic: Path) -> None:
    snaps = correlate(events(stream("iax-answered", asterisk_traffic)))
    # the IAX2 capture holds the carrier side too (an outgoing originate to exten s): not a tracked call
    assert list(snaps) == ["1795915222.41"]
    assert snaps["1795915222.41"].values["uniqueid"] == "1795915222.41"


def test_concurrent_calls_do_not_mix(asterisk_traffic: Path) -> None:
    names = ["answered", "noanswer", "busy", "earlyhangup", "mixstop"]
    alone = {n: one(asterisk_traffic, n) for n in names}
    together = correlate(events(interleave(*(stream(n, asterisk_traffic) for n in names))))
    assert len(together) == 5
    for snap in alone.values():
        assert together[snap.linkedid].values == snap.values
        assert together[snap.linkedid].legs == snap.legs


def test_same_result_whatever_the_batches_and_replays(asterisk_traffic: Path) -> None:
    evs = events(interleave(*(stream(n, asterisk_traffic) for n in ["answered", "busy", "agihangup"])))
    reference = correlate(evs)
    c = Correlator(try_normalize)
    last: dict[str, Any] = {}
    for i in range(0, len(evs), 7):
        c.feed_many(evs[max(0, i - 3) : i + 7])  # overlapping batches: a replay must change nothing
        last.update({s.linkedid: s for s in c.take_changed()})
    assert {k: (s.values, s.legs, s.timeline) for k, s in last.items()} == {
        k: (s.values, s.legs, s.timeline) for k, s in reference.items()
    }


def test_live_call_has_no_disposition_until_every_leg_hung_up(asterisk_traffic: Path) -> None:
    evs = events(stream("answered", asterisk_traffic))
    last_hangup = max(i for i, e in enumerate(evs) if e.payload.get("Event") == "Hangup")
    c = Correlator()
    c.feed_many(evs[:last_hangup])
    (snap,) = c.take_changed()
    assert not snap.closed and snap.values["disposition"] is None and snap.values["ended_at"] is None
    assert snap.values["answered_at"] is not None
    c.feed_many(evs[last_hangup:])
    (snap,) = c.take_changed()
    assert snap.closed and snap.values["disposition"] == "answered"
    assert c.open_calls() == []


def test_caller_id_updates_are_followed(asterisk_traffic: Path) -> None:
    evs = events(stream("answered", asterisk_traffic))
    ringing = next(i for i, e in enumerate(evs) if e.payload.get("Event") == "DialBegin" and "Channel" in e.payload)
    update = dict(evs[ringing].payload)
    update.update(
        {
            "Event": "NewCallerid",
            "Channel": "Local/8005550100@from-pstn-00000000;2",
            "Uniqueid": "1795915078.1",
            "CallerIDName": "JANE DOE CNAM",
            "CID-CallingPres": "0 (Presentation Allowed, Not Screened)",
        }
    )
    seqd = [
        RawEvent(i + 1, T0, e.payload) for i, e in enumerate([*evs[:ringing], RawEvent(0, T0, update), *evs[ringing:]])
    ]
    snap = correlate(seqd)["1795915078.0"]
    assert snap.values["caller_name"] == "JANE DOE CNAM"
    assert [t["detail"] for t in snap.timeline if t["kind"] == "caller-id"] == [
        {"number": "+14045551234", "name": "JANE DOE CNAM"}
    ]


def _transfer_events(asterisk_traffic: Path) -> list[RawEvent]:
    """The answered capture with the agent blind-transferring the caller to 101 before hanging up."""
    evs = events(stream("answered", asterisk_traffic))
    bridged = max(i for i, e in enumerate(evs) if e.payload.get("Event") == "BridgeEnter")
    at = float(evs[bridged].payload["Timestamp"]) + 1
    base = {"Privilege": "call,all", "Linkedid": "1795915078.0"}
    extra = [
        {
            "Event": "BlindTransfer",
            "Privilege": "call,all",
            "Timestamp": f"{at:.6f}",
            "Result": "Success",
            "TransfererChannel": "Local/100@agents-00000001;2",
            "TransfererUniqueid": "1795915078.3",
            "TransfererLinkedid": "1795915078.0",
            "TransfereeChannel": "Local/8005550100@from-pstn-00000000;2",
            "TransfereeUniqueid": "1795915078.1",
            "TransfereeLinkedid": "1795915078.0",
            "IsExternal": "Yes",
            "Context": "agents",
            "Extension": "101",
        },
        {**base, "Event": "Newchannel", "Timestamp": f"{at + 0.01:.6f}", "Channel": "PJSIP/101-0000000a",
         "Uniqueid": "1795915078.9", "ChannelStateDesc": "Down", "Context": "agents", "Exten": "101",
         "CallerIDNum": "101", "CallerIDName": "Bob"},
        {**base, "Event": "Newstate", "Timestamp": f"{at + 2:.6f}", "Channel": "PJSIP/101-0000000a",
         "Uniqueid": "1795915078.9", "ChannelStateDesc": "Up"},
        {**base, "Event": "Hangup", "Timestamp": f"{at + 9:.6f}", "Channel": "PJSIP/101-0000000a",
         "Uniqueid": "1795915078.9", "Cause": "16", "Cause-txt": "Normal Clearing"},
    ]  # fmt: skip
    out = [*evs[: bridged + 1], *(RawEvent(0, T0, p) for p in extra), *evs[bridged + 1 :]]
    return [RawEvent(i + 1, T0, e.payload) for i, e in enumerate(out)]


def test_blind_transfer(asterisk_traffic: Path) -> None:
    snap = correlate(_transfer_events(asterisk_traffic))["1795915078.0"]
    transfers = [t["detail"] for t in snap.timeline if t["kind"] == "transfer"]
    assert transfers == [{"type": "blind", "by": "Local/100@agents", "to": "101@agents", "result": "Success"}]
    assert snap.values["answered_by"] == "Local/100@agents"  # who answered first
    assert "PJSIP/101-0000000a" in {leg["channel"] for leg in snap.legs}
    # the call ends when the last leg (the transfer target) hangs up
    last = max(leg["hungup_at"] for leg in snap.legs)
    assert snap.values["ended_at"] == last and snap.closed


def test_a_real_blind_transfer_counts_talk_time_until_the_caller_leaves(asterisk_traffic: Path) -> None:
    # pjsip capture: the agent answers, REFERs the caller to +18005550111 after 3 s and leaves; the
    # caller goes on in the dialplan (from-agent, a 30 s Playback) and hangs up 33.3 s after the answer
    snaps = correlate(events(call_frames(load_pjsip_capture("sip-call-blind-transfer", asterisk_traffic))))
    snap = snaps["1796175718.17"]
    v = snap.values
    assert snap.closed and v["disposition"] == "answered" and v["answered_by"] == "PJSIP/agent100"
    answered, caller_left = 1796175719.155309, 1796175752.452425  # DialEnd ANSWER, the carrier leg's Hangup
    assert v["talk_time"] == pytest.approx(caller_left - answered, abs=0.001)  # Asterisk's two CDRs: 3 s + 30 s
    assert v["transferred_to"] == "+18005550111@from-agent"
    (transfer,) = [t["detail"] for t in snap.timeline if t["kind"] == "transfer"]
    assert transfer == {"type": "blind", "by": "PJSIP/agent100", "to": "+18005550111@from-agent", "result": "Success"}


def test_a_blind_transfer_answered_by_a_phone_names_the_phone(asterisk_traffic: Path) -> None:
    evs = _transfer_events(asterisk_traffic)
    ring = next(i for i, e in enumerate(evs) if e.payload.get("Uniqueid") == "1795915078.9")  # the target's channel
    at = float(evs[ring].payload["Timestamp"])
    caller = {
        "Channel": "Local/8005550100@from-pstn-00000000;2",
        "Uniqueid": "1795915078.1",
        "Linkedid": "1795915078.0",
    }
    target = {"DestChannel": "PJSIP/101-0000000a", "DestUniqueid": "1795915078.9", "DestLinkedid": "1795915078.0"}
    dial = [
        {"Event": "DialBegin", "Privilege": "call,all", "Timestamp": f"{at + 0.01:.6f}", **caller, **target,
         "DialString": "PJSIP/101"},
        {"Event": "DialEnd", "Privilege": "call,all", "Timestamp": f"{at + 1.9:.6f}", **caller, **target,
         "DialStatus": "ANSWER"},
    ]  # fmt: skip
    out = [*evs[: ring + 1], *(RawEvent(0, T0, p) for p in dial), *evs[ring + 1 :]]
    snap = correlate([RawEvent(i + 1, T0, e.payload) for i, e in enumerate(out)])["1795915078.0"]
    assert snap.values["transferred_to"] == "PJSIP/101"
    assert snap.values["answered_by"] == "Local/100@agents"  # who answered first
    answered = [t["detail"] for t in snap.timeline if t["kind"] == "transfer-answered"]
    assert answered == [{"by": "PJSIP/101", "exten": "101"}]


def test_a_failed_transfer_changes_nothing(asterisk_traffic: Path) -> None:
    plain = correlate(events(stream("answered", asterisk_traffic)))["1795915078.0"]
    evs = [
        RawEvent(e.seq, e.received_at, {**e.payload, "Result": "Fail"})
        if e.payload.get("Event") == "BlindTransfer"
        else e
        for e in _transfer_events(asterisk_traffic)
    ]
    snap = correlate(evs)["1795915078.0"]
    assert snap.values["transferred_to"] is None
    assert snap.values["talk_time"] == plain.values["talk_time"]  # talk ended when the agent left


def test_attended_transfer_merges_the_consultation_call(asterisk_traffic: Path) -> None:
    evs = events(stream("answered", asterisk_traffic))
    bridged = max(i for i, e in enumerate(evs) if e.payload.get("Event") == "BridgeEnter")
    at = float(evs[bridged].payload["Timestamp"]) + 1
    consult = {"Privilege": "call,all", "Linkedid": "1795915090.50"}
    extra = [
        {**consult, "Event": "Newchannel", "Timestamp": f"{at:.6f}", "Channel": "PJSIP/100-0000000b",
         "Uniqueid": "1795915090.50", "Context": "agents", "Exten": "101", "CallerIDNum": "100"},
        {**consult, "Event": "Newchannel", "Timestamp": f"{at:.6f}", "Channel": "PJSIP/101-0000000c",
         "Uniqueid": "1795915090.51", "Context": "agents", "Exten": "101", "CallerIDNum": "101"},
        {"Event": "AttendedTransfer", "Privilege": "call,all", "Timestamp": f"{at + 5:.6f}", "Result": "Success",
         "OrigTransfererChannel": "Local/100@agents-00000001;2", "OrigTransfererUniqueid": "1795915078.3",
         "OrigTransfererLinkedid": "1795915078.0", "SecondTransfererChannel": "PJSIP/100-0000000b",
         "SecondTransfererUniqueid": "1795915090.50", "SecondTransfererLinkedid": "1795915090.50",
         "TransferTargetChannel": "PJSIP/101-0000000c", "DestType": "Bridge"},
        {**consult, "Event": "Hangup", "Timestamp": f"{at + 6:.6f}", "Channel": "PJSIP/100-0000000b",
         "Uniqueid": "1795915090.50", "Cause": "16"},
        {**consult, "Event": "Hangup", "Timestamp": f"{at + 7:.6f}", "Channel": "PJSIP/101-0000000c",
         "Uniqueid": "1795915090.51", "Cause": "16"},
    ]  # fmt: skip
    out = [*evs[: bridged + 1], *(RawEvent(0, T0, p) for p in extra), *evs[bridged + 1 :]]
    evs = [RawEvent(i + 1, T0, e.payload) for i, e in enumerate(out)]
    c = Correlator(try_normalize)
    consult_starts = next(i for i, e in enumerate(evs) if e.payload.get("Uniqueid") == "1795915090.51") + 1
    c.feed_many(evs[:consult_starts])
    assert {s.linkedid for s in c.take_changed()} == {"1795915078.0", "1795915090.50"}  # two calls, so far
    c.feed_many(evs[consult_starts:])
    snaps = {s.linkedid: s for s in c.take_changed()}
    assert snaps["1795915090.50"].merged_into == "1795915078.0"  # the consultation joined the first call
    assert set(snaps) == {"1795915078.0", "1795915090.50"}
    snap = snaps["1795915078.0"]
    assert snap.closed
    assert {"PJSIP/100-0000000b", "PJSIP/101-0000000c"} <= {leg["channel"] for leg in snap.legs}
    transfer = next(t["detail"] for t in snap.timeline if t["kind"] == "transfer")
    assert transfer == {"type": "attended", "by": "Local/100@agents", "to": "PJSIP/101", "result": "Success"}
    assert snap.values["transferred_to"] == "PJSIP/101"
    # talk time runs until the caller leaves (its last leg ends with the recorded call), not when the agent did
    caller_left = min(leg["hungup_at"] for leg in snap.legs if leg["role"] == "inbound")
    assert snap.values["talk_time"] == pytest.approx((caller_left - snap.values["answered_at"]).total_seconds())


def _resync(action: str, seq: int, at: dt.datetime, live: Sequence[dict[str, str]]) -> list[RawEvent]:
    out = [RawEvent(seq, at, {"Response": "Success", "ActionID": action, "EventList": "start"})]
    for i, h in enumerate(live):
        out.append(RawEvent(seq + 1 + i, at, {"Event": "CoreShowChannel", "ActionID": action, **h}))
    out.append(RawEvent(seq + 1 + len(live), at, {"Event": "CoreShowChannelsComplete", "ActionID": action}))
    return out


def test_resync_closes_a_call_whose_channels_are_gone(asterisk_traffic: Path) -> None:
    evs = events(stream("answered", asterisk_traffic))
    answered = next(i for i, e in enumerate(evs) if e.payload.get("DialStatus") == "ANSWER")
    c = Correlator()
    c.feed_many(evs[: answered + 3])
    back = T0 + dt.timedelta(hours=1)
    c.feed(RawEvent(10_000, back, {"Event": "FullyBooted", "Uptime": "7200"}))  # Asterisk did not restart
    c.feed_many(_resync("calltrack-resync-x-1", 10_001, back, []))
    (snap,) = c.take_changed()
    assert snap.closed and snap.values["disposition"] == "answered"
    # not stretched over the hour calltrack was away: closed when last known alive, and said so
    last_seen = dt.datetime.fromtimestamp(float(evs[answered + 2].payload["Timestamp"]), dt.UTC)
    assert snap.values["ended_at"] == last_seen and snap.values["times_source"] == "estimated"
    assert snap.values["talk_time"] == pytest.approx((last_seen - snap.values["answered_at"]).total_seconds())
    lost = [t["detail"] for t in snap.timeline if t["kind"] == "lost"]
    assert lost[0]["reason"] == "gone-while-disconnected" and len(lost[0]["channels"]) == 4
    assert lost[0]["ended_estimated"] == last_seen.isoformat()


def test_resync_after_a_restart_says_so_and_fails_an_unanswered_call(asterisk_traffic: Path) -> None:
    evs = events(stream("noanswer", asterisk_traffic))
    ringing = next(i for i, e in enumerate(evs) if e.payload.get("Event") == "DialBegin" and "Channel" in e.payload)
    c = Correlator()
    c.feed_many(evs[: ringing + 1])
    back = dt.datetime(2026, 11, 29, 3, 0, tzinfo=dt.UTC)
    c.feed(RawEvent(10_000, back, {"Event": "FullyBooted", "Uptime": "5"}))
    c.feed_many(_resync("calltrack-resync-y-1", 10_001, back, []))
    (snap,) = c.take_changed()
    assert snap.closed and snap.values["disposition"] == "failed"
    assert [t["detail"]["reason"] for t in snap.timeline if t["kind"] == "lost"] == ["asterisk-restart"]


def test_resync_keeps_live_channels_and_adopts_new_ones(asterisk_traffic: Path) -> None:
    evs = events(stream("answered", asterisk_traffic))
    answered = next(i for i, e in enumerate(evs) if e.payload.get("DialStatus") == "ANSWER")
    c = Correlator()
    c.feed_many(evs[: answered + 1])
    c.take_changed()
    live_uids = ["1795915078.0", "1795915078.1", "1795915078.2", "1795915078.3"]
    live = [{"Uniqueid": u, "Linkedid": "1795915078.0", "Channel": "x", "ChannelStateDesc": "Up"} for u in live_uids]
    born = {
        "Uniqueid": "1795915999.70",
        "Linkedid": "1795915999.70",
        "Channel": "PJSIP/trunk-00000070",
        "ChannelStateDesc": "Up",
        "Context": "from-pstn",
        "Exten": "8005550100",
        "CallerIDNum": "+442071234567",
        "CallerIDName": "Alice",
        "Application": "Dial",
        "Duration": "00:01:30",
    }
    now = T0 + dt.timedelta(minutes=5)
    c.feed_many(_resync("calltrack-resync-z-1", 10_000, now, [*live, born]))
    snaps = {s.linkedid: s for s in c.take_changed()}
    assert "1795915078.0" not in snaps or not snaps["1795915078.0"].closed
    new = snaps["1795915999.70"]
    assert not new.closed
    assert new.values["started_at"] == now - dt.timedelta(seconds=90)
    assert new.values["caller_number"] == "+442071234567"
    assert new.values["answered_at"] == now - dt.timedelta(seconds=90)


def test_late_events_of_a_closed_call_do_not_resurrect_it(asterisk_traffic: Path) -> None:
    evs = events(stream("busy", asterisk_traffic))
    c = Correlator()
    c.feed_many(evs)
    assert len(c.take_changed()) == 1
    late = dict(evs[-1].payload)
    hang = next(e.payload for e in evs if e.payload.get("Event") == "Hangup")
    c.feed(RawEvent(99_999, T0, {**hang, "Event": "Newstate"}))
    assert c.take_changed() == [] and late is not None


def test_timestamps_fall_back_to_arrival_time() -> None:
    c = Correlator()
    p = {"Event": "Newchannel", "Uniqueid": "1.1", "Linkedid": "1.1", "Channel": "PJSIP/t-1", "Exten": "555"}
    c.feed(RawEvent(1, T0, p))
    c.feed(RawEvent(2, T0 + dt.timedelta(seconds=3), {**p, "Event": "Hangup", "Cause": "16", "Timestamp": "bad"}))
    (snap,) = c.take_changed()
    assert snap.values["duration"] == 3.0 and snap.values["disposition"] == "failed"


@pytest.mark.parametrize(
    ("channel", "base", "exten"),
    [
        ("PJSIP/100-0000000a", "PJSIP/100", "100"),
        ("Local/100@agents-00000001;1", "Local/100@agents", "100"),
        ("IAX2/127.0.0.1:4569-2033", "IAX2/127.0.0.1:4569", "127.0.0.1:4569"),
        ("SIP/trunk", "SIP/trunk", "trunk"),
    ],
)
def test_channel_names(channel: str, base: str, exten: str) -> None:
    assert channel_base(channel) == base
    assert channel_exten(channel) == exten


def _trunk_call(dial: str | None, answer_first: bool, cause: str = "16") -> list[RawEvent]:
    """A PJSIP trunk call: optionally Answer() (a greeting), optionally a Dial with the given outcome;
    the inbound leg ends with hangup *cause*."""
    chan = {"Channel": "PJSIP/carrier-00000001", "Uniqueid": "1800000000.1", "Linkedid": "1800000000.1"}
    agent = {"Channel": "PJSIP/100-00000002", "Uniqueid": "1800000000.2", "Linkedid": "1800000000.1"}
    t = 1_800_000_000.0
    out: list[dict[str, Any]] = [
        {"Event": "Newchannel", **chan, "Context": "from-pstn", "Exten": "4045550100", "CallerIDNum": "+15551230000",
         "CallerIDName": 'O\\\'Brien, \\"Pat\\"', "ChannelStateDesc": "Ring", "Timestamp": str(t)},
    ]  # fmt: skip
    if answer_first:
        out.append({"Event": "Newstate", **chan, "ChannelStateDesc": "Up", "Timestamp": str(t + 1)})
    if dial is not None:
        out.append({"Event": "Newchannel", **agent, "Context": "agents", "Exten": "s", "Timestamp": str(t + 2)})
        out.append({"Event": "DialBegin", **chan, **{f"Dest{k}": v for k, v in agent.items()}, "Timestamp": str(t + 2)})
        out.append({"Event": "DialEnd", **chan, **{f"Dest{k}": v for k, v in agent.items()}, "DialStatus": dial,
                    "Timestamp": str(t + 12)})  # fmt: skip
        out.append({"Event": "Hangup", **agent, "Cause": "16", "Timestamp": str(t + 20)})
    out.append({"Event": "HangupRequest", **chan, "Timestamp": str(t + 30)})
    out.append({"Event": "Hangup", **chan, "Cause": cause, "Timestamp": str(t + 30)})
    return [RawEvent(i + 1, T0, p) for i, p in enumerate(out)]


@pytest.mark.parametrize(
    ("dial", "answer_first", "disposition", "talk", "cause"),
    [
        (None, True, "answered", 29.0, "16"),  # IVR / voicemail: the dialplan answered and nobody was dialled
        (None, False, "abandoned", None, "16"),  # the caller hung up before anything happened
        # Busy() in the dialplan (no Dial, so no DialStatus): the caller heard a busy tone and hung up
        (None, False, "busy", None, "17"),
        ("NOANSWER", True, "missed", None, "16"),  # a greeting, then the agent never answered
        ("ANSWER", True, "answered", 8.0, "16"),
        ("CHANUNAVAIL", False, "failed", None, "16"),
    ],
)
def test_trunk_calls_with_and_without_a_greeting(
    dial: str | None, answer_first: bool, disposition: str, talk: float | None, cause: str
) -> None:
    (snap,) = correlate(_trunk_call(dial, answer_first, cause)).values()
    assert snap.values["disposition"] == disposition
    assert snap.values["talk_time"] == talk
    assert snap.values["caller_name"] == 'O\'Brien, "Pat"'
    assert snap.values["tracking_number"] == "+14045550100"


def test_who_answered_behind_a_local_ring_group() -> None:
    t = 1_800_000_100.0
    trunk = {"Channel": "PJSIP/carrier-00000010", "Uniqueid": "9.1", "Linkedid": "9.1"}
    one = {"Channel": "Local/sales@agents-00000011;1", "Uniqueid": "9.2", "Linkedid": "9.1"}
    two = {"Channel": "Local/sales@agents-00000011;2", "Uniqueid": "9.3", "Linkedid": "9.1"}
    phone = {"Channel": "PJSIP/101-00000012", "Uniqueid": "9.4", "Linkedid": "9.1"}

    def dest(leg: dict[str, str]) -> dict[str, str]:
        return {f"Dest{k}": v for k, v in leg.items()}

    steps: list[dict[str, Any]] = [
        {"Event": "Newchannel", **trunk, "Exten": "4045550100", "CallerIDNum": "+15551230000"},
        {"Event": "Newchannel", **one, "Exten": "sales"},
        {"Event": "Newchannel", **two, "Exten": "sales"},
        {"Event": "DialBegin", **trunk, **dest(one)},
        {"Event": "Newchannel", **phone, "Exten": "s"},
        {"Event": "DialBegin", **two, **dest(phone)},
        {"Event": "DialEnd", **two, **dest(phone), "DialStatus": "ANSWER"},
        {"Event": "DialEnd", **trunk, **dest(one), "DialStatus": "ANSWER"},
        *({"Event": "Hangup", **leg, "Cause": "16"} for leg in (phone, two, one, trunk)),
    ]
    evs = [RawEvent(i + 1, T0, {**p, "Timestamp": str(t + i)}) for i, p in enumerate(steps)]
    (snap,) = correlate(evs).values()
    assert snap.values["disposition"] == "answered"
    assert snap.values["answered_by"] == "PJSIP/101"  # the phone, not the Local channel in front of it
    answered = next(line["detail"] for line in snap.timeline if line["kind"] == "answered")
    assert answered == {"by": "PJSIP/101", "exten": "101"}


# -- calls that end while calltrack is not looking ----------------------------------------------------------


#: three hours after the pjsip captures were made
SIP_BACK = dt.datetime(2026, 12, 2, 4, 40, tzinfo=dt.UTC)


def _sip_answered(asterisk_traffic: Path) -> list[RawEvent]:
    return events(call_frames(load_pjsip_capture("sip-call-answered", asterisk_traffic)))


def _away_and_back(evs: list[RawEvent], cut: int, back: dt.datetime) -> tuple[Correlator, list[RawEvent]]:
    """Events up to *cut*, then calltrack away; back at *back* (new connection, nothing alive). The rest: what it missed."""
    c = Correlator(try_normalize)
    c.feed_many(evs[:cut])
    c.feed(RawEvent(10_000, back, {"Event": "FullyBooted", "Uptime": "7200"}))
    c.feed_many(_resync("calltrack-resync-b-1", 10_001, back, []))
    return c, evs[cut:]


def _stamp(event: RawEvent) -> dt.datetime:
    return dt.datetime.fromtimestamp(float(event.payload["Timestamp"]), dt.UTC)


def test_a_call_that_ended_while_away_is_closed_when_last_known_alive(asterisk_traffic: Path) -> None:
    evs = _sip_answered(asterisk_traffic)
    cut = next(i for i, e in enumerate(evs) if e.payload.get("Event") == "BridgeEnter") + 2
    back = SIP_BACK  # calltrack came back three hours later
    c, _ = _away_and_back(evs, cut, back)
    (snap,) = c.take_changed()
    v = snap.values
    last_seen = max(_stamp(e) for e in evs[:cut] if "Timestamp" in e.payload)
    assert snap.closed and v["disposition"] == "answered"
    assert v["ended_at"] == last_seen and v["times_source"] == "estimated"
    assert v["talk_time"] < 1  # not three hours
    # the listener's marker says it heard Asterisk a little later: that is when the call was known alive
    heard = last_seen + dt.timedelta(seconds=2)
    c2 = Correlator(try_normalize)
    c2.feed_many(evs[:cut])
    c2.feed(RawEvent(9_999, back, {"Event": "CalltrackConnectionLost", "LastHeard": f"{heard.timestamp():.6f}",
                                   "Timestamp": f"{heard.timestamp():.6f}", "Reason": "lost"}))  # fmt: skip
    c2.feed(RawEvent(10_000, back, {"Event": "FullyBooted", "Uptime": "7200"}))
    c2.feed_many(_resync("calltrack-resync-b-1", 10_001, back, []))
    (snap,) = c2.take_changed()
    assert snap.values["ended_at"] == heard


def test_asterisks_cdr_gives_the_end_of_a_call_that_ended_while_away(asterisk_traffic: Path) -> None:
    evs = _sip_answered(asterisk_traffic)
    cut = next(i for i, e in enumerate(evs) if e.payload.get("Event") == "BridgeEnter") + 2
    back = SIP_BACK
    c, missed = _away_and_back(evs, cut, back)
    estimated = {s.linkedid: s for s in c.take_changed()}["1796175587.0"]  # written, then forgotten
    assert estimated.values["times_source"] == "estimated"
    # the CDR AMI sent when the call ended (Timestamp = its end in UTC; times local: here UTC)
    (cdr,) = [e.payload for e in missed if e.payload.get("Event") == "Cdr"]
    c.feed(RawEvent(10_100, back, cdr))
    (snap,) = c.take_changed()
    v = snap.values
    end = dt.datetime(2026, 12, 2, 1, 39, 53, tzinfo=dt.UTC)  # EndTime: 2026-12-02 01:39:53
    assert v["ended_at"] == end and v["times_source"] == "cdr" and v["disposition"] == "answered"
    assert v["talk_time"] == pytest.approx((end - v["answered_at"]).total_seconds(), abs=0.001)
    assert 4 < v["talk_time"] < 5.5  # Asterisk's CDR: billable 5 s (to the second)
    assert all(leg["hungup_at"] == end for leg in snap.legs)  # the carrier leg and the agent it was bridged to
    # calls rebuild gives the same: the same events in the same order
    again = Correlator(try_normalize)
    again.feed_many([*evs[:cut], RawEvent(10_000, back, {"Event": "FullyBooted", "Uptime": "7200"}),
                     *_resync("calltrack-resync-b-1", 10_001, back, []), RawEvent(10_100, back, cdr)])  # fmt: skip
    (same,) = again.take_changed()
    assert (same.values, same.legs, same.timeline) == (snap.values, snap.legs, snap.timeline)


def test_a_cdr_line_in_local_time_answers_a_call_last_seen_ringing(asterisk_traffic: Path) -> None:
    # Master.csv without usegmtime: times in Asterisk's local time (New York here), no Timestamp;
    # the offset is learnt from the first CDR's start against its channel's birth
    evs = _sip_answered(asterisk_traffic)
    ringing = next(i for i, e in enumerate(evs) if e.payload.get("Event") == "DialBegin") + 1
    back = SIP_BACK
    c, missed = _away_and_back(evs, ringing, back)
    assert c.take_changed()[0].values["disposition"] == "failed"  # rang, then nothing known
    (cdr,) = [e.payload for e in missed if e.payload.get("Event") == "Cdr"]

    def local(text: str) -> str:
        return (dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S") - dt.timedelta(hours=5)).strftime("%Y-%m-%d %H:%M:%S")

    line = {k: v for k, v in cdr.items() if k not in ("Timestamp", "Privilege")}
    line.update({k: local(cdr[k]) for k in ("StartTime", "AnswerTime", "EndTime")}, CalltrackSource="Master.csv")
    c.feed(RawEvent(10_100, back, line))
    (snap,) = c.take_changed()
    v = snap.values
    assert v["disposition"] == "answered" and v["answered_by"] == "PJSIP/agent100"
    assert v["answered_at"] == dt.datetime(2026, 12, 2, 1, 39, 48, tzinfo=dt.UTC)
    assert v["ended_at"] == dt.datetime(2026, 12, 2, 1, 39, 53, tzinfo=dt.UTC) and v["times_source"] == "cdr"
    assert v["talk_time"] == 5.0


def test_a_cdr_of_another_call_on_a_reused_channel_name_changes_nothing(asterisk_traffic: Path) -> None:
    evs = _sip_answered(asterisk_traffic)
    cut = next(i for i, e in enumerate(evs) if e.payload.get("Event") == "BridgeEnter") + 2
    back = SIP_BACK
    c, missed = _away_and_back(evs, cut, back)
    before = c.take_changed()[0]
    (cdr,) = [e.payload for e in missed if e.payload.get("Event") == "Cdr"]
    c.feed(RawEvent(10_100, back, {**cdr, "UniqueID": "1796170000.5"}))  # same channel name, another uniqueid
    later = {**cdr, "StartTime": "2026-12-03 09:00:00", "EndTime": "2026-12-03 09:05:00", "Timestamp": "1796288700.0"}
    c.feed(RawEvent(10_101, back, later))  # ends after calltrack found it gone: not this call
    assert c.take_changed() == [] and before.values["times_source"] == "estimated"


def test_the_message_channel_of_texts_is_no_call(asterisk_traffic: Path) -> None:
    """Asterisk runs every text on Message/ast_msg_queue and never hangs it up (pjsip/README.md):
    replayed with the texts of the recording and the probe after them, it leaves no call open."""
    frames = [
        *load_pjsip_capture("sms-in", asterisk_traffic),
        *load_pjsip_capture("sms-in-newline", asterisk_traffic),
        *load_pjsip_capture("sip-call-answered", asterisk_traffic),
        *load_pjsip_capture("sms-in-long", asterisk_traffic),
        *load_pjsip_capture("ami-probe-after-sms", asterisk_traffic),
    ]
    evs = events(frames)
    assert any(e.payload.get("Channel") == "Message/ast_msg_queue" for e in evs)
    c = Correlator(try_normalize)
    c.feed_many(evs)
    snaps = c.take_changed()
    assert c.open_calls() == []
    assert all("Message/" not in str(s.legs) for s in snaps)
    [call] = [s for s in snaps if s.closed]
    assert call.values["disposition"] == "answered"


def test_the_forward_of_each_text_is_told_and_nothing_else(asterisk_traffic: Path) -> None:
    """Only the first MessageSend after the handler's destination is a text's forward: not the answer
    to STOP or HELP after it, not a text calltrack did not answer (no id), not one without a destination."""
    frames = [
        *sample_text_frames("sms-in", asterisk_traffic, 7, "FAILURE", reply_status="SUCCESS"),
        *sample_text_frames("sms-in", asterisk_traffic, None, "INVALID_URI"),  # the context's fallback forward
        *sample_text_frames("sms-in-newline", asterisk_traffic, 8, "FAILURE", dest=""),  # HELP answered only
        *sample_text_frames("sms-in-newline", asterisk_traffic, 9, "SUCCESS", reply_status="FAILURE"),
    ]
    c = Correlator(try_normalize)
    c.feed_many(events(frames))
    assert c.take_forwards() == [(7, "FAILURE"), (9, "SUCCESS")]
    assert c.take_forwards() == [] and c.take_changed() == [] and c.open_calls() == []
