"""Validation of Asterisk dial strings given by administrators.

A dial string is ``TECH/resource`` parts joined by ``&`` (``PJSIP/100&PJSIP/101``,
``Local/100@agents``, ``PJSIP/+14045550100@trunk``).  Characters that Asterisk
would read as something else in ``Dial(${CALLTRACK_DIAL},...)`` are refused:
``,`` and ``|`` (argument separators), ``$ { } [ ]`` (expressions), quotes,
parentheses, ``;``, backslashes, whitespace and control characters.
"""

from __future__ import annotations

import re

from tracking.errors import InvalidInput

_PART = re.compile(r"[A-Za-z][A-Za-z0-9_]*/[A-Za-z0-9+*#@._:/=~-]+")


def validate(dial: str, what: str = "dial string") -> str:
    """Return *dial* stripped, or raise InvalidInput saying what is wrong."""
    text = (dial or "").strip()
    if not text:
        raise InvalidInput(f"empty {what}")
    if len(text) > 500:
        raise InvalidInput(f"{what} too long ({len(text)} characters, at most 500)")
    for part in text.split("&"):
        if not _PART.fullmatch(part):
            bad = sorted({ch for ch in part if not (ch.isalnum() or ch in "+*#@._:/=~-")})
            if bad:
                shown = " ".join(repr(ch) for ch in bad)
                raise InvalidInput(f"invalid {what} {dial!r}: Asterisk would misread {shown}")
            raise InvalidInput(
                f"invalid {what} {dial!r}: each part must be TECHNOLOGY/resource, such as PJSIP/100 or Local/100@agents"
            )
    return text
