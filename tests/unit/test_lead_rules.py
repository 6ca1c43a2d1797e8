"""Lead rules as pure code: the syntax, its errors, and what rules make of a call (tracking/lead_rules.py)."""

from __future__ import annotations

import pytest

from tracking.lead_rules import Facts, RuleError, compile_rule, evaluate, parse_actions, parse_condition

CALL = Facts(
    talk_time=95.0,
    disposition="answered",
    source="Google Ads",
    first_time=True,
    after_hours=False,
    landing_page="https://acme.example/pricing?utm_source=google",
    caller_text="Hi, I'd like to book an Appointment for my water heater.",
    agent_text="Sure, we can send someone Tuesday. That will be a quote of 200 dollars.",
)


def holds(condition: str, facts: Facts = CALL) -> bool:
    return bool(parse_condition(condition).holds(facts))


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ('caller said "appointment"', True),  # case and punctuation do not matter
        ('caller said "water heater"', True),
        ('caller said "quote"', False),  # the agent said it
        ('agent said "quote"', True),
        ('said "quote"', True),
        ('said "heat"', False),  # whole words only
        ('caller said "I\'d like"', True),
        ("talk_time > 60", True),
        ("talk_time > 2m", False),
        ("talk_time >= 95s", True),
        ("talk_time < 1.5m", False),
        ("talk_time != 95", False),
        ("disposition = answered", True),
        ("disposition = MISSED", False),
        ("disposition != missed", True),
        ('source = "google ads"', True),
        ('source != "Google Ads"', False),
        ("first_time", True),
        ("after_hours", False),
        ("not after_hours", True),
        ('landing_page contains "/pricing"', True),
        ('landing_page contains "/blog"', False),
        ("always", True),
        ('caller said "appointment" and talk_time > 30', True),
        ('caller said "appointment" and talk_time > 300', False),
        ('caller said "roof" or agent said "tuesday"', True),
        ('caller said "roof" or caller said "gutter" and first_time', False),
        ('(caller said "roof" or caller said "appointment") and first_time', True),
        ('not (caller said "appointment")', False),
        ("first_time and not after_hours and disposition = answered", True),
    ],
)
def test_conditions(condition: str, expected: bool) -> None:
    assert holds(condition) is expected


def test_and_binds_before_or() -> None:
    # a or (b and c): true through a alone
    assert holds('caller said "appointment" or caller said "roof" and after_hours')
    assert not holds('(caller said "appointment" or caller said "roof") and after_hours')


def test_a_mono_transcript_counts_for_either_speaker() -> None:
    mono = Facts(mono_text="I want to book an appointment, and the agent said quote")
    assert holds('caller said "appointment"', mono) and holds('agent said "quote"', mono) and holds('said "book"', mono)


def test_a_call_with_no_talk_time_or_transcript_matches_neither_side() -> None:
    empty = Facts()
    assert not holds("talk_time > 0", empty) and not holds("talk_time < 10", empty)
    assert not holds('said "anything"', empty) and not holds("first_time", empty)
    assert holds('not said "anything"', empty)


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("", "the condition is empty"),
        ("talktime > 60 and", "ends too early"),
        ('caller says "hi"', "expected `said` after 'caller'"),
        ('callr said "hi"', "unknown condition 'callr' at character 1"),
        ("talk_time > soon", "'soon' at character 13 is not a duration"),
        ("talk_time about 60", "talk_time needs a comparison"),
        ("disposition = lost", "'lost' is not one of answered, missed"),
        ("disposition > answered", "disposition needs = or !="),
        ('said ""', "needs a non-empty value"),
        ("said", "ends too early"),
        ('landing_page has "/x"', "landing_page needs `contains`"),
        ("first_time after_hours", "unexpected 'after_hours' at character 12"),
        ("(first_time or after_hours", "ends too early"),
        ('said "unterminated', "cannot read"),
        ("talk_time > 60 ; drop", "unexpected ';' at character 16"),
    ],
)
def test_a_bad_condition_is_named(condition: str, message: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_condition(condition)
    assert message in str(info.value)


def test_actions() -> None:
    acts = parse_actions('tag "booked", qualified, score +10, score -3, value 150.50, tag "water heater"')
    assert [(a.kind, a.value) for a in acts] == [
        ("tag", "booked"),
        ("lead", "qualified"),
        ("score", 10),
        ("score", -3),
        ("value", 150.5),
        ("tag", "water heater"),
    ]
    assert [(a.kind, a.value) for a in parse_actions("not_lead and spam")] == [("lead", "not-lead"), ("spam", True)]


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("", "the action is empty"),
        ("tag", "tag needs a value"),
        ('tag ""', "tag needs a name"),
        ("score lots", "score: 'lots' at character 7 is not a number"),
        ("score 1.5", "not a whole number"),
        ("value", "value needs a value"),
        ("qualified spam", "expected ',' between actions at character 11"),
        ("qualified,", "an action is missing after the last ','"),
        ("promote", "unknown action 'promote' at character 1"),
        ("tag " + '"' + "x" * 101 + '"', "at most 100 characters"),
    ],
)
def test_a_bad_action_is_named(action: str, message: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_actions(action)
    assert message in str(info.value)


def test_compile_says_which_half_is_wrong() -> None:
    with pytest.raises(RuleError, match="^condition: unknown condition"):
        compile_rule("r", "nonsense", "qualified")
    with pytest.raises(RuleError, match="^action: unknown action"):
        compile_rule("r", "always", "nonsense")


def test_evaluate_adds_scores_and_the_last_lead_and_value_win() -> None:
    rules = [
        compile_rule("booked", 'caller said "appointment"', 'tag "booked", qualified, score +10, value 150', 1),
        compile_rule("long", "talk_time > 60", "score +5, tag booked", 2),
        compile_rule("never", 'caller said "cancel"', "not_lead, score +100", 3),
        compile_rule("priced", 'agent said "quote"', "value 200", 4),
    ]
    out = evaluate(rules, CALL)
    assert (out.lead, out.score, out.value) == ("qualified", 15, 200.0)
    assert out.tags == {"booked": 1}  # the first rule that set a tag owns it
    assert out.matched == ["booked", "long", "priced"]
    later = [*rules, compile_rule("not really", "first_time", "not_lead", 5)]
    assert evaluate(later, CALL).lead == "not-lead"
    assert evaluate(rules, CALL) == evaluate(rules, CALL)  # pure: the same call gives the same outcome
    assert evaluate(rules, Facts()).lead is None and evaluate(rules, Facts()).score == 0


def test_spam_action_is_reported_by_rule_name() -> None:
    rules = [compile_rule("robocall", 'caller said "extended warranty"', "spam, not_lead", 7)]
    out = evaluate(rules, Facts(caller_text="about your car's extended warranty"))
    assert out.spam_rules == ["robocall"] and out.lead == "not-lead"
