"""What a caller's number tells without asking anyone: place, country, line type.

Everything here is offline (the ``phonenumbers`` geocoder and carrier data
shipped with the library); the caller ID name (CNAM) is kept as Asterisk
delivered it, by the AMI listener.  First-time versus repeat caller is decided
by the writers themselves (the route in tracking/routing.py, the listener in
ami_listener/sink.py), per account.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import phonenumbers
from phonenumbers import PhoneNumberType, carrier, geocoder

logger = logging.getLogger(__name__)

_LINE_TYPES = {
    PhoneNumberType.FIXED_LINE: "landline",
    PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "landline-or-mobile",
    PhoneNumberType.TOLL_FREE: "toll-free",
    PhoneNumberType.PREMIUM_RATE: "premium-rate",
    PhoneNumberType.SHARED_COST: "shared-cost",
    PhoneNumberType.VOIP: "voip",
    PhoneNumberType.PERSONAL_NUMBER: "personal",
    PhoneNumberType.PAGER: "pager",
    PhoneNumberType.UAN: "uan",
    PhoneNumberType.VOICEMAIL: "voicemail",
}


class CallerInfo(NamedTuple):
    #: "Atlanta, GA" / "London"; None when unknown
    location: str | None
    #: ISO 3166 alpha-2 code
    country: str | None
    #: landline, mobile, landline-or-mobile, toll-free, voip...; None when unknown
    line_type: str | None
    #: the carrier that first held the number (mobile numbers mostly); None when unknown
    carrier: str | None


UNKNOWN = CallerInfo(None, None, None, None)


def describe_number(number: str | None, region: str = "US") -> CallerInfo:
    """Location, country, line type and original carrier of *number*, offline.

    Anything that is not a valid phone number (``anonymous``, ``<unknown>``, an
    extension) gives :data:`UNKNOWN` rather than an error: caller IDs are
    whatever the far end sent.
    """
    if not number:
        return UNKNOWN
    text = number.strip()
    if not text or len(text) > 40 or not any(ch.isdigit() for ch in text):
        return UNKNOWN
    try:
        parsed = phonenumbers.parse(text, region.upper())
    except phonenumbers.NumberParseException:
        if not text.startswith("+"):
            try:
                parsed = phonenumbers.parse("+" + text, None)
            except phonenumbers.NumberParseException:
                return UNKNOWN
        else:
            return UNKNOWN
    if not phonenumbers.is_valid_number(parsed):
        return UNKNOWN
    country = phonenumbers.region_code_for_number(parsed)
    location = geocoder.description_for_number(parsed, "en", region=None) or None
    line_type = _LINE_TYPES.get(phonenumbers.number_type(parsed))
    carrier_name = carrier.name_for_number(parsed, "en") or None
    return CallerInfo(location, country if country and country != "ZZ" else None, line_type, carrier_name)
