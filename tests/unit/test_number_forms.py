"""The digit sequences the DNI API gives dni.js: each form of the business number, with the same form of the
tracking number to put in its place."""

from __future__ import annotations

from tracking.number_forms import swaps


def pairs(replace: list[str], tracking: str) -> dict[str, tuple[str, str | None]]:
    return {s.find: (s.put, s.text) for s in swaps(replace, tracking)}


def test_uk_number_in_national_and_international_forms() -> None:
    assert pairs(["+442079460958"], "+442079460999") == {
        "02079460958": ("02079460999", None),  # 020 7946 0958
        "442079460958": ("442079460999", None),  # +44 20 7946 0958
        "4402079460958": ("4402079460999", None),  # +44 (0)20 7946 0958
        "00442079460958": ("00442079460999", None),  # 0044 20 7946 0958
    }


def test_german_number_with_another_length() -> None:
    found = pairs(["+4930901820"], "+493090182099")
    assert found["030901820"] == ("03090182099", None)  # 030 901820 -> 030 90182099
    assert found["4930901820"] == ("493090182099", None)
    assert found["49030901820"] == ("4903090182099", None)  # +49 (0)30 901820


def test_north_american_number_with_and_without_its_1() -> None:
    assert pairs(["+14045550100"], "+17705550151") == {
        "4045550100": ("7705550151", None),
        "14045550100": ("17705550151", None),
    }


def test_another_countrys_tracking_number_is_written_internationally() -> None:
    found = pairs(["+442079460958"], "+14045550100")
    assert found["02079460958"] == ("14045550100", "+1 404-555-0100")
    assert {text for _, text in found.values()} == {"+1 404-555-0100"}


def test_longest_sequences_first_and_no_swap_of_the_number_for_itself() -> None:
    got = swaps(["+14045550100", "+14045550111"], "+17705550151")
    assert [len(s.find) for s in got] == sorted((len(s.find) for s in got), reverse=True)
    assert {s.find for s in got} == {"4045550100", "14045550100", "4045550111", "14045550111"}
    assert swaps(["+17705550151"], "+17705550151") == []
    assert swaps(["+14045550100"], None) == []
    assert swaps([], "+17705550151") == []
