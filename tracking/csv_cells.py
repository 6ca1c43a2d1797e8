"""CSV cells a spreadsheet never runs as a formula (CSV or formula injection, CWE-1236).

Every CSV calltrack writes (``--format csv`` listings through ``calltrack/output.py``, the
dashboard's CSV downloads, the leads list, the ad platforms' conversion files) passes its cells
through :func:`cell`.  Caller names, UTM values, click ids, form fields and tags come from
strangers; a spreadsheet runs a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return as a formula (``=HYPERLINK(...)``, ``=cmd|' /C calc'!A0``).  Following OWASP's
CSV Injection guidance (and ASVS 5 requirement 1.2.10, which adds NUL), such a cell is written
with a leading apostrophe: the spreadsheet shows the text and runs nothing.

The one deliberate exception: a cell that is a plain decimal number (``-5``, ``12.50``, ``1e3``)
and the E.164 phone numbers (``+14045551234``: a plus and digits) are written as they are.  They
hold no formula a spreadsheet could run (no function, no reference, no operator after the sign),
and the platforms' files and the users' sheets need them raw: numbers stay numbers, a phone column
keeps its ``+``.  Quoting and doubled quotes inside cells are the csv module's (RFC 4180).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

#: a cell starting with one of these is a formula to a spreadsheet
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\0")
#: a plain decimal number, or an E.164 number (a plus and digits): nothing a spreadsheet can run
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def cell(text: str) -> str:
    """*text* as a CSV cell that starts no formula."""
    if text.startswith(FORMULA_START) and _PLAIN_NUMBER.fullmatch(text) is None:
        return "'" + text
    return text


def row(values: Iterable[Any]) -> list[Any]:
    """A row with each text cell made safe (numbers and other values left to the csv writer)."""
    return [cell(v) if isinstance(v, str) else v for v in values]
