"""Phone numbers: parsing to E.164 and display, with the phonenumbers library."""

from __future__ import annotations

import functools

from tracking.errors import InvalidInput

# Characters people write around numbers; anything else makes the input suspicious.
_ALLOWED = set("0123456789+-(). /\u00a0")


def normalize(raw: str, region: str = "US") -> str:
    """Return *raw* as E.164 (``+14045550100``) or raise InvalidInput.

    ``+1 (404) 555-0100``, ``404.555.0100`` and ``14045550100`` give the same
    result for region US.
    """
    import phonenumbers  # here, not at import time: listings that only show E.164 never load it

    text = (raw or "").strip()
    if not text:
        raise InvalidInput("empty phone number")
    if not set(text) <= _ALLOWED:
        raise InvalidInput(f"invalid phone number {raw!r}: only digits, spaces, + - ( ) . / are allowed")
    digits = "".join(ch for ch in text if ch.isdigit())
    candidates = [text]
    # "14045550100" in NANP regions: a national number with its trunk/country prefix and no "+".
    if not text.startswith("+") and digits:
        candidates.append("+" + digits)
    for candidate in candidates:
        try:
            parsed = phonenumbers.parse(candidate, region.upper())
        except phonenumbers.NumberParseException:
            continue
        # Checking the home region first skips the search through every region of the
        # country code (about 25 for +1), the slow part of is_valid_number.
        if phonenumbers.is_valid_number_for_region(parsed, region.upper()) or phonenumbers.is_valid_number(parsed):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    raise InvalidInput(f"invalid phone number {raw!r}: {_why_invalid(text, region.upper())}")


# Regions tried, in this order, to show how a national number from elsewhere is written.
_EXAMPLE_REGIONS = ("GB", "IE", "DE", "FR", "ES", "IT", "NL", "BE", "CH", "AU", "NZ", "IN", "MX", "BR", "US", "CA")


def _why_invalid(text: str, region: str) -> str:
    """Why *text* did not parse: the region it was read in, and how to write it (the error path only)."""
    import phonenumbers

    if text.startswith("+"):
        return "not a valid number (check the country code and the digit count)"
    hint = "write it with + and its country code, such as +44 20 7946 0018 for a UK number"
    for other in _EXAMPLE_REGIONS:
        if other == region:
            continue
        try:
            parsed = phonenumbers.parse(text, other)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number_for_region(parsed, other):
            shown = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
            hint = f"write it with + and its country code, such as {shown} if it is a {other} number"
            break
    return (
        f"not a valid number in region {region}, where numbers without a country code are read "
        f"(numbers.default_region): {hint}"
    )


def try_normalize(raw: str | None, region: str = "US") -> str | None:
    """E.164 when *raw* parses, else None (for caller IDs, which may be anything)."""
    if not raw:
        return None
    try:
        return normalize(raw, region)
    except InvalidInput:
        return None


def display(e164: str, region: str = "US") -> str:
    """The number as people of *region* write it: national for local numbers, else international.

    North American numbers (+1 and ten digits) take a short way: which country or territory
    an area code and exchange belong to is asked of phonenumbers once per ``+1NPANXX`` and
    kept, and NANP numbers are written the same way everywhere (``(404) 555-0100``,
    ``+1 404-555-0100``; a test checks this against phonenumbers).  Listing thousands of
    numbers then costs microseconds each instead of a parse and a format.
    """
    if len(e164) == 12 and e164.startswith("+1") and e164[1:].isdigit():
        home = _nanp_region(e164[:8])
        if home is not None:
            npa, nxx, line = e164[2:5], e164[5:8], e164[8:]
            return f"({npa}) {nxx}-{line}" if home == region.upper() else f"+1 {npa}-{nxx}-{line}"
    return _display(e164, region.upper())


@functools.lru_cache(maxsize=4096)
def _nanp_region(prefix: str) -> str | None:
    """The region of the NANP numbers starting with *prefix* (``+1NPANXX``), or None to ask per number."""
    import phonenumbers

    sample = phonenumbers.parse(prefix + "0100", None)
    found = phonenumbers.region_code_for_number(sample)
    return found if found and found != "ZZ" else None


def _display(e164: str, region: str) -> str:
    import phonenumbers

    parsed = phonenumbers.parse(e164, None)
    if phonenumbers.region_code_for_number(parsed) == region:
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
