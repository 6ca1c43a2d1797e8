"""Redaction of spoken card numbers, security codes and social security numbers (tracking/redaction.py)."""

from __future__ import annotations

import pytest

from tracking.redaction import MASKS, Word, luhn_ok, redact_text, redact_words

WORDS = {
    "0": "zero",
    "1": "one",
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "8": "eight",
    "9": "nine",
}

#: test card numbers the card networks publish (they pass the Luhn check)
TEST_CARDS = [
    "4111111111111111",  # Visa
    "4242424242424242",  # Visa
    "5555555555554444",  # Mastercard
    "5105105105105100",  # Mastercard
    "378282246310005",  # American Express (15)
    "6011111111111117",  # Discover
    "30569309025904",  # Diners Club (14)
    "3530111333300000",  # JCB
]


def spoken(digits: str) -> str:
    return " ".join(WORDS[d] for d in digits)


def grouped(digits: str) -> str:
    return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def test_the_test_cards_pass_luhn_and_a_changed_digit_does_not() -> None:
    for card in TEST_CARDS:
        assert luhn_ok(card)
        assert not luhn_ok(card[:-1] + str((int(card[-1]) + 1) % 10))
    assert not luhn_ok("")
    assert not luhn_ok("4111a11111111111")


@pytest.mark.parametrize("card", TEST_CARDS)
@pytest.mark.parametrize(
    "form",
    [
        str,
        grouped,
        lambda d: "-".join(d[i : i + 4] for i in range(0, len(d), 4)),
        spoken,
        lambda d: ", ".join(WORDS[c] for c in d) + ".",
        lambda d: grouped(d).replace(" ", ", "),
    ],
    ids=["digits", "groups", "dashes", "words", "words-commas", "groups-commas"],
)
def test_every_form_of_a_card_number_is_masked(card: str, form: object) -> None:
    said = form(card)  # type: ignore[operator]
    text, found = redact_text(f"Sure, my card number is {said} and the expiry is next year.")
    assert [r.kind for r in found] == ["card"]
    assert MASKS["card"] in text
    for digit_word in said.replace(",", " ").replace(".", " ").split():
        if len(digit_word) >= 4:
            assert digit_word not in text
    assert not any(ch.isdigit() for ch in text)
    assert text.startswith("Sure, my card number is [card number]")
    assert text.endswith("and the expiry is next year.")


def test_a_card_read_without_any_card_word_is_still_masked_by_luhn() -> None:
    text, found = redact_text(f"okay it's {spoken('4111111111111111')} thanks")
    assert text == f"okay it's {MASKS['card']} thanks"
    assert [r.kind for r in found] == ["card"]


def test_oh_double_and_compound_tens_say_digits() -> None:
    # 5105 1051 0510 5100 said as a person might
    said = "five one oh five, one oh five one, oh five one oh, five one double oh"
    text, found = redact_text(f"number {said} ok")
    assert [r.kind for r in found] == ["card"] and text == "number [card number] ok"
    # 4242 4242 4242 4242 as "forty-two forty two ..."
    text, found = redact_text("it is forty-two forty two forty-two forty two forty-two forty two forty-two forty two")
    assert text == "it is [card number]"


def test_a_misheard_card_number_after_a_card_word_is_masked_anyway() -> None:
    broken = "4111111111111112"  # one digit wrong: fails Luhn
    assert not luhn_ok(broken)
    text, found = redact_text(f"my visa is {grouped(broken)} thanks")
    assert text == "my visa is [card number] thanks"
    # without any word about a card, a long number that fails Luhn is left (an order number, say)
    text, found = redact_text(f"the order is {grouped(broken)} thanks")
    assert found == [] and grouped(broken) in text


def test_a_card_with_its_expiry_and_code_read_in_one_breath() -> None:
    text, found = redact_text(
        f"{spoken('4111111111111111')} twelve twenty eight and the security code is one two three"
    )
    assert "[card number]" in text and "[security code]" in text
    assert not any(w in text.split() for w in ("one", "two", "three")) or text.count("[") == 2
    assert "1" not in text


def test_security_codes_after_their_phrases() -> None:
    for phrase in ("security code", "CVV", "cvc", "verification code", "three digit code", "code on the back"):
        text, found = redact_text(f"The {phrase} is 7 3 7, right.")
        assert [r.kind for r in found] == ["cvv"], phrase
        assert "7" not in text and "[security code]" in text, phrase
    text, found = redact_text("and the security code is four three two one.")
    assert text == "and the security code is [security code]."
    text, found = redact_text("the three-digit code is nine nine nine")
    assert text == "the three-digit code is [security code]"


def test_three_digits_without_a_security_phrase_are_kept() -> None:
    text, found = redact_text("We open at nine and it costs 250 dollars for three rooms")
    assert found == [] and text == "We open at nine and it costs 250 dollars for three rooms"


def test_social_security_numbers() -> None:
    text, found = redact_text("my social security number is 123-45-6789.")
    assert text == "my social security number is [SSN]." and [r.kind for r in found] == ["ssn"]
    text, found = redact_text("the SSN is one two three four five six seven eight nine")
    assert text == "the SSN is [SSN]"
    text, found = redact_text("and my social is 123 45 6789 okay")
    assert text == "and my social is [SSN] okay"
    # written 3-2-4 with dashes is an SSN even without the words...
    text, found = redact_text("it's 219-09-9999 I think")
    assert text == "it's [SSN] I think"
    # ...unless it cannot be one (area 000, 666 or 9xx; group 00; serial 0000)
    for impossible in ("000-12-3456", "666-12-3456", "912-12-3456", "123-00-4567", "123-45-0000"):
        assert redact_text(f"ref {impossible}")[1] == []
    text, found = redact_text("the last four of my social are 6 7 8 9")
    assert text == "the last four of my social are [SSN]"


def test_phone_numbers_dates_and_prices_are_left_alone() -> None:
    sample = "call me back at 555 867 5309 on December 12 2026, it was 1,299 dollars, 10 people"
    text, found = redact_text(sample)
    assert found == [] and text == sample
    phone = "my number is five five five eight six seven five three zero nine"
    assert redact_text(phone) == (phone, [])


def test_a_model_looping_on_a_card_number_leaves_none_of_it() -> None:
    looped = "42" * 200
    assert redact_text(f"My card number is {looped}.")[0] == "My card number is [card number]."
    assert redact_text(f"it is {looped}")[0] == "it is [card number]"
    assert redact_text("it is " + ", ".join(["4", "2"] * 30))[0] == "it is [card number]"
    # 19 digits failing Luhn with no word about a card: kept (a long reference number)
    assert not luhn_ok("1234567890123456780")
    assert redact_text("reference 1234567890123456780 thanks")[1] == []


def test_two_cards_in_one_text_are_both_masked() -> None:
    text, found = redact_text(f"first {grouped(TEST_CARDS[0])} no wait use {grouped(TEST_CARDS[2])} instead")
    assert text == "first [card number] no wait use [card number] instead"
    assert [r.kind for r in found] == ["card", "card"]


def test_redact_words_gives_the_time_span_of_each_finding() -> None:
    card = "4111111111111111"
    words = [Word(" My", 0.0, 0.2), Word(" card", 0.2, 0.5), Word(" is", 0.5, 0.6)]
    t = 1.0
    for digit in card:
        words.append(Word(" " + WORDS[digit] + ",", t, t + 0.3))
        t += 0.4
    words.append(Word(" thanks.", t, t + 0.5))
    texts, spans = redact_words(words)
    assert "".join(texts) == " My card is [card number], thanks."
    assert [(s.kind, s.start, round(s.end, 2)) for s in spans] == [("card", 1.0, round(1.0 + 15 * 0.4 + 0.3, 2))]


def test_text_without_anything_to_mask_comes_back_unchanged() -> None:
    for sample in ("", "   ", "Hello, I'd like to book an appointment for Tuesday.", "one", "four one one one"):
        assert redact_text(sample) == (sample, [])
