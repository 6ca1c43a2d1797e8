"""The ways a phone number is written on web pages, as digit sequences, and what replaces each.

dni.js carries no numbering plan: the API tells it which digit sequences to look for (the
business number written nationally, internationally, with the trunk prefix in brackets, with 00)
and the same form of the visitor's tracking number to put in their place.  A page writes
``020 7946 0958`` or ``+44 (0)20 7946 0958``; the script finds the digits ``02079460958`` or
``4402079460958`` whatever separators and elements lie between them, and puts the tracking
number's digits of the same form in place, keeping the page's separators and markup.

When the tracking number belongs to another country than the business number, no national form
of one stands for the other: every form is replaced by the tracking number written
internationally (``text``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

#: form name -> digits; the names are the pairing key between the two numbers
Forms = dict[str, str]


@dataclass(frozen=True)
class Swap:
    """Digits to find on the page, and the digits (or whole text) to show instead."""

    find: str
    put: str
    #: the whole replacement when digits cannot be put in place (another country's number)
    text: str | None = None

    def as_json(self) -> dict[str, str]:
        out = {"from": self.find, "to": self.put}
        if self.text is not None:
            out["text"] = self.text
        return out


@functools.lru_cache(maxsize=4096)
def forms(e164: str) -> tuple[tuple[str, str], ...]:
    """The digit sequences of *e164* as pages write it, by form, longest first within a number."""
    import phonenumbers

    parsed = phonenumbers.parse(e164, None)
    cc = str(parsed.country_code)
    nsn = phonenumbers.national_significant_number(parsed)
    national = "".join(
        ch for ch in phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL) if ch.isdigit()
    )
    region = phonenumbers.region_code_for_country_code(parsed.country_code or 0)
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region) if region != "ZZ" else None
    prefix = (meta.national_prefix if meta else None) or ""
    found: dict[str, str] = {"national": national, "international": cc + nsn}
    if prefix and national == nsn:
        # North America: 1-404-555-0100 (the trunk prefix is the country code)
        found["trunk"] = prefix + nsn
    if national != nsn:
        # +44 (0)20 7946 0958, +49 (0)30 901820: the trunk prefix kept in brackets
        found["international_trunk"] = cc + national
    if cc != "1":
        found["international_00"] = "00" + cc + nsn
    return tuple(found.items())


@functools.lru_cache(maxsize=4096)
def _international_text(e164: str) -> str:
    import phonenumbers

    return phonenumbers.format_number(phonenumbers.parse(e164, None), phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def _country_code(e164: str) -> str:
    import phonenumbers

    return str(phonenumbers.parse(e164, None).country_code)


@functools.lru_cache(maxsize=4096)
def _swaps(replace: tuple[str, ...], tracking: str) -> tuple[Swap, ...]:
    shown = dict(forms(tracking))
    same_country = {number: _country_code(number) == _country_code(tracking) for number in replace}
    out: dict[str, Swap] = {}
    for number in replace:
        if number == tracking:
            continue
        for name, digits in forms(number):
            if same_country[number] and name in shown:
                swap = Swap(digits, shown[name])
            else:
                swap = Swap(digits, shown["international"], _international_text(tracking))
            out.setdefault(digits, swap)
    return tuple(sorted(out.values(), key=lambda s: (-len(s.find), s.find)))


def swaps(replace: list[str] | tuple[str, ...], tracking: str | None) -> list[Swap]:
    """What dni.js swaps for *tracking*: every form of each business number in *replace* (E.164)."""
    if not tracking or not replace:
        return []
    return list(_swaps(tuple(dict.fromkeys(replace)), tracking))
