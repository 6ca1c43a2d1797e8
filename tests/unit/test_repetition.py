"""Repetition loops of the speech model shortened before storing (tracking/repetition.py), after redaction."""

from __future__ import annotations

import pytest

from tests.unit.test_redaction import TEST_CARDS, spoken
from tracking.redaction import Word
from tracking.repetition import collapse_repeats, longest_run
from transcriber.engine import ChannelText, Result, SpokenSegment
from transcriber.pipeline import redacted_segments


@pytest.mark.parametrize(
    ("looped", "stored"),
    [
        # what the bundled model wrote for espeak-ng's Mastercard test number
        (
            "My card number is time time time time time time time time time time time time time time time for four",
            "My card number is time [repeated 15 times] for four",
        ),
        ("no, no, no, no, no, no!", "no [repeated 6 times]!"),
        ("Thank you. Thank you. Thank you. Thank you. Bye.", "Thank you [repeated 4 times]. Bye."),
        ("It is " + "one " * 25 + "okay", "It is one [repeated 25 times] okay"),
        ("four two " * 12 + "thanks", "four two [repeated 12 times] thanks"),
        ("My card number is " + "42" * 60 + ".", "My card number is 42 [repeated 60 times]."),
        ("My card number is 6-0-1-1" + "-1" * 40 + "-", "My card number is 6-0-1 [repeated 42 times]-"),
    ],
)
def test_a_loop_keeps_its_first_unit_and_says_how_often_it_came(looped: str, stored: str) -> None:
    assert collapse_repeats(looped) == stored
    assert longest_run(collapse_repeats(looped)) <= 5


@pytest.mark.parametrize(
    "said",
    [
        "no no no no no",  # five times: a person may say it
        "Thank you. Thank you. Thank you. Bye.",
        "call me on five five five, five five five five, two two two two",  # a phone number, digit by digit
        "zero zero zero zero zero zero zero zero",
        "4242424242424242 and 4111111111111111",
        "the order is 1000000000",
        "hmm... well, okay",
        "",
        "   ",
    ],
)
def test_what_a_person_says_is_kept_as_it_was_said(said: str) -> None:
    assert collapse_repeats(said) == said


@pytest.mark.parametrize("card", TEST_CARDS)
def test_a_card_read_out_digit_by_digit_is_not_taken_for_a_loop(card: str) -> None:
    said = f"my number is {spoken(card)} thanks"
    assert collapse_repeats(said) == said


def test_whitespace_around_the_text_is_kept() -> None:
    assert collapse_repeats(" a a a a a a a \n") == " a [repeated 7 times] \n"


def timed(text: str) -> tuple[Word, ...]:
    return tuple(Word(f" {w}", i * 0.3, i * 0.3 + 0.25) for i, w in enumerate(text.split()))


def test_a_looping_card_number_is_masked_before_the_loop_is_shortened() -> None:
    """Redaction sees the whole loop: shortening it first would leave the card's digits to a note."""
    looped = "My card number is " + "four two " * 8 + "four two " * 8
    channel = ChannelText("mono", (SpokenSegment(0.0, 9.0, looped, timed(looped)),))
    segments, redactions = redacted_segments(Result((channel,), 9.0, "en"))
    assert [r["kind"] for r in redactions] == ["card"]
    (segment,) = segments
    assert "[card number]" in segment.text and "four" not in segment.text, segment.text
    assert longest_run(segment.text) <= 5


def test_a_segment_without_word_times_is_shortened_too() -> None:
    channel = ChannelText("mono", (SpokenSegment(0.0, 9.0, " time" * 12 + " four.", ()),))
    segments, _ = redacted_segments(Result((channel,), 9.0, "en"))
    assert [s.text for s in segments] == ["time [repeated 12 times] four."]
