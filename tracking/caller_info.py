"""What a caller's number tells without asking anyone: place, country, line type.

Everything here is offline (the ``phonenumbers`` geocoder and carrier data
shipped with the library, loaded at the first number described, and the geocoder's
table only in the parts the callers' prefixes fall in); the caller ID name (CNAM) is kept as Asterisk
delivered it, by the AMI listener.  First-time versus repeat caller is decided
by the writers themselves (the route in tracking/routing.py, the listener in
ami_listener/sink.py), per account.
"""

from __future__ import annotations

import bisect
import importlib
import importlib.util
import logging
import re
import sys
import threading
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import phonenumbers
from phonenumbers import PhoneNumberType

logger = logging.getLogger(__name__)


class _PrefixChunks(Mapping[str, Any]):
    """phonenumbers' geocoding table, each of its files loaded the first time a prefix in it is asked for.

    The library's ``phonenumbers.geodata`` package loads all of its ~30 files at import (about
    100 MB); they hold the prefixes in sorted order, so the file holding a prefix is found by
    the first prefix of each (read from the files' first lines) and only that one is loaded:
    a listener that sees callers from one country loads a few megabytes of it.
    """

    _FIRST_KEY = re.compile(rb"^ '(\d+)':", re.M)

    def __init__(self, folder: Path, package: str) -> None:
        self.package = package
        names = sorted((f.stem for f in folder.glob("data*.py")), key=lambda n: int(n[4:]))
        firsts = []
        for name in names:
            with open(folder / f"{name}.py", "rb") as fh:
                head = fh.read(8192)
            match = self._FIRST_KEY.search(head)
            if match is None:
                raise ValueError(f"no prefix found at the start of {name}.py")
            firsts.append(match.group(1).decode())
        if not names or firsts != sorted(firsts):
            raise ValueError("the geocoding files are not in prefix order")
        self.names = names
        self.firsts = firsts
        self.loaded: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _chunk(self, prefix: str) -> dict[str, Any]:
        index = bisect.bisect_right(self.firsts, prefix) - 1
        if index < 0:
            return {}
        chunk = self.loaded.get(index)
        if chunk is None:
            with self._lock:
                chunk = self.loaded.get(index)
                if chunk is None:
                    module = importlib.import_module(f"{self.package}.{self.names[index]}")
                    chunk = self.loaded[index] = module.data
        return chunk

    def __getitem__(self, prefix: str) -> Any:
        return self._chunk(prefix)[prefix]

    def __contains__(self, prefix: object) -> bool:
        return isinstance(prefix, str) and prefix in self._chunk(prefix)

    def __iter__(self) -> Iterator[str]:  # not used by the geocoder; everything, as the library would
        for index in range(len(self.names)):
            yield from self._chunk(self.firsts[index])

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _lazy_geocoder() -> types.ModuleType:
    """``phonenumbers.geocoder`` over :class:`_PrefixChunks` instead of the whole table.

    The package ``phonenumbers.geodata`` is stood in for by a module with the same folder (so
    its files and its ``locale`` table import as usual) whose ``GEOCODE_DATA`` loads by file.
    When the library's layout is not the one expected, or the geocoder is imported already,
    the library's own loading is used.
    """
    name = "phonenumbers.geodata"
    if "phonenumbers.geocoder" not in sys.modules and name not in sys.modules:
        folder = Path(phonenumbers.__file__).parent / "geodata"
        try:
            chunks = _PrefixChunks(folder, name)
            real = importlib.util.find_spec(name)
            with open(folder / "__init__.py", encoding="utf-8") as fh:
                longest = re.search(r"^GEOCODE_LONGEST_PREFIX = (\d+)", fh.read(), re.M)
            if real is None or longest is None:
                raise ValueError("phonenumbers.geodata has an unexpected layout")
        except (OSError, ValueError) as exc:
            logger.info("caller location: loading phonenumbers' whole geocoding table (%s)", exc)
        else:
            stand_in = types.ModuleType(name)
            stand_in.__path__ = [str(folder)]
            stand_in.__spec__ = real
            stand_in.__file__ = real.origin
            stand_in.GEOCODE_DATA = chunks  # type: ignore[attr-defined]
            stand_in.GEOCODE_LONGEST_PREFIX = int(longest.group(1))  # type: ignore[attr-defined]
            sys.modules[name] = stand_in
            phonenumbers.geodata = stand_in  # type: ignore[attr-defined]
    return importlib.import_module("phonenumbers.geocoder")


_geocoder: types.ModuleType | None = None
_carrier: types.ModuleType | None = None
_load_lock = threading.Lock()


def _tables() -> tuple[types.ModuleType, types.ModuleType]:
    """The geocoder and carrier modules, loaded at the first number described (not at import)."""
    global _geocoder, _carrier
    if _geocoder is None or _carrier is None:
        with _load_lock:
            if _geocoder is None:
                _geocoder = _lazy_geocoder()
            if _carrier is None:
                _carrier = importlib.import_module("phonenumbers.carrier")
    return _geocoder, _carrier


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
    geocoder, carrier = _tables()
    location = geocoder.description_for_number(parsed, "en", region=None) or None
    line_type = _LINE_TYPES.get(phonenumbers.number_type(parsed))
    carrier_name = carrier.name_for_number(parsed, "en") or None
    return CallerInfo(location, country if country and country != "ZZ" else None, line_type, carrier_name)
