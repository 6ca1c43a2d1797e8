"""E.164 normalisation and dial-string validation: what a user types, what calltrack stores."""

from __future__ import annotations

import pytest

from tracking import dialstring, phone
from tracking.errors import InvalidInput


@pytest.mark.parametrize(
    "raw", ["+1 (404) 555-0100", "404.555.0100", "14045550100", "(404) 555-0100", " 404 555 0100 "]
)
def test_us_spellings_are_one_number(raw: str) -> None:
    assert phone.normalize(raw, "US") == "+14045550100"


def test_default_region_reads_national_numbers() -> None:
    assert phone.normalize("020 7946 0958", "GB") == "+442079460958"
    assert phone.normalize("+44 20 7946 0958", "US") == "+442079460958"
    assert phone.normalize("030 901820", "DE") == "+4930901820"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "12",
        "555-0100",
        "+1 404 555 01001",
        "404-555-010O",
        "404555O100",
        "+999 1234567",
        "abc",
        "4045550100;1",
        "404\n5550100",
        "４０４５５５０１００",
    ],
)
def test_invalid_numbers_are_refused_with_the_input_named(raw: str) -> None:
    with pytest.raises(InvalidInput) as info:
        phone.normalize(raw, "US")
    assert "phone number" in str(info.value)


def test_try_normalize_keeps_unknowns_out() -> None:
    assert phone.try_normalize("anonymous") is None
    assert phone.try_normalize(None) is None
    assert phone.try_normalize("+14045551234") == "+14045551234"


def test_display_uses_national_format_at_home() -> None:
    assert phone.display("+14045550100", "US") == "(404) 555-0100"
    assert phone.display("+442079460958", "US") == "+44 20 7946 0958"


@pytest.mark.parametrize(
    "dial",
    [
        "PJSIP/100",
        "PJSIP/100&PJSIP/101",
        "Local/100@agents",
        "PJSIP/+14045550100@trunk",
        "IAX2/user@host/200",
        "Local/100@agents/n",
        "SIP/1*2#3",
    ],
)
def test_valid_dial_strings(dial: str) -> None:
    assert dialstring.validate(f"  {dial} ") == dial


@pytest.mark.parametrize(
    ("dial", "bad"),
    [
        ("PJSIP/100,20", "','"),
        ("PJSIP/100|t", "'|'"),
        ("PJSIP/${EVIL}", "'$'"),
        ("PJSIP/1 00", "' '"),
        ('PJSIP/"100"', "'\"'"),
        ("PJSIP/100)", "')'"),
        ("PJSIP/100;x", "';'"),
        ("PJSIP/100\nHangup", "'\\n'"),
        ("PJSIP/[1]", "'['"),
    ],
)
def test_dial_strings_with_characters_asterisk_misreads(dial: str, bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        dialstring.validate(dial)
    assert "Asterisk would misread" in str(info.value)
    assert bad in str(info.value)


@pytest.mark.parametrize("dial", ["", "100", "PJSIP/", "/100", "PJSIP/100&", "&PJSIP/100", "9PJSIP/100", "x" * 501])
def test_malformed_dial_strings(dial: str) -> None:
    with pytest.raises(InvalidInput):
        dialstring.validate(dial)


def _refused(dial: str, **what: str) -> str:
    with pytest.raises(InvalidInput) as info:
        dialstring.validate(dial, **what)
    return str(info.value)


def test_what_is_wrong_with_a_dial_string_is_said() -> None:
    assert _refused("") == "empty dial string"
    assert _refused("  ", what="fallback dial string") == "empty fallback dial string"
    longest = "PJSIP/" + "1" * 494
    assert dialstring.validate(longest) == longest  # 500 characters: the limit is inclusive
    assert _refused(longest + "1") == "dial string too long (501 characters, at most 500)"
    assert _refused("PJSIP/1 0,0") == "invalid dial string 'PJSIP/1 0,0': Asterisk would misread ' ' ','"
    assert _refused("PJSIP/100&SIP") == (
        "invalid dial string 'PJSIP/100&SIP': each part must be TECHNOLOGY/resource, "
        "such as PJSIP/100 or Local/100@agents"
    )


def test_quick_display_of_north_american_numbers_matches_phonenumbers() -> None:
    import random

    import phonenumbers

    rng = random.Random(7)
    checked = 0
    while checked < 1500:
        n = f"+1{rng.randint(200, 999)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
        parsed = phonenumbers.parse(n, None)
        if not phonenumbers.is_valid_number(parsed):
            continue
        checked += 1
        for region in ("US", "CA", "JM", "GB"):
            home = phonenumbers.region_code_for_number(parsed)
            fmt = (
                phonenumbers.PhoneNumberFormat.NATIONAL
                if home == region
                else phonenumbers.PhoneNumberFormat.INTERNATIONAL
            )
            assert phone.display(n, region) == phonenumbers.format_number(parsed, fmt), (n, region)
