"""The part of a session answer that tells dni.js which digits to find and what to show instead."""

from __future__ import annotations

import functools
from typing import Any

from tracking import phone
from tracking.number_forms import swaps
from web.dni import AccountInfo


@functools.lru_cache(maxsize=4096)
def _read(text: str, region: str) -> str | None:
    return phone.try_normalize(text, region)


def swap_fields(
    info: AccountInfo, origin: str | None, written: list[str], number: str | None, default_region: str
) -> dict[str, Any]:
    """``swap``: the site's business numbers (``sites add --replace``) and the snippet's ``data-replace``
    ones, each form of each with the same form of *number*; ``unreadable``: snippet numbers that are
    no phone number in the site's region (the script's debug mode shows them), when there are any."""
    stored, region = info.sites.get(origin or "", ((), None))
    region = region or default_region
    numbers = list(stored)
    unreadable = []
    for text in written:
        found = _read(text, region)
        if found is None:
            unreadable.append(text)
        elif found not in numbers:
            numbers.append(found)
    out: dict[str, Any] = {"swap": [s.as_json() for s in swaps(numbers, number)]}
    if unreadable:
        out["unreadable"] = unreadable
    return out
