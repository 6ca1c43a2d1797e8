"""How MixMonitor's spool files are named, so the route and the recorder agree on it.

A call routed with its database row records to ``<call id>.wav``. A call routed by
fallback (the database did not answer in time) has no id yet, so its file is named by
the call's key instead, ``ct~<system>~<linkedid>.wav``: each part percent-encoded down
to ``[A-Za-z0-9.%]``, so the name is a safe file name whatever the linkedid holds (a
custom ``ChannelId`` may hold ``/`` or ``..``), has no ``-`` (the recorder's ``-in`` and
``-out`` suffixes stay unambiguous) nor ``~`` of its own, and reads back to the key. The
route also writes the name into the call row (``recording_file``) once the row exists,
and the recorder finds the call by either. A key too long for a file name is hashed
(``ct~~<sha256>``); only the row's ``recording_file`` links that one.

Standard library only: the classic AGI script imports it.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "ct~"
#: longest stem kept readable (file names stop at 255 bytes; the -in/-out and .wav come on top)
MAX_STEM = 200

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.")
_STEM = re.compile(r"ct~([A-Za-z0-9.%]+)~([A-Za-z0-9.%]+)")


def _encode(text: str) -> str:
    return "".join(chr(b) if chr(b) in _SAFE else f"%{b:02X}" for b in text.encode("utf-8"))


def _decode(text: str) -> str | None:
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%":
            try:
                out.append(int(text[i + 1 : i + 3], 16))
            except ValueError:
                return None
            i += 3
        else:
            out.append(ord(text[i]))
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return None


def key_stem(system: str, linkedid: str) -> str:
    """The file stem (no folder, no ``.wav``) of the recording of call (*system*, *linkedid*)."""
    stem = f"{PREFIX}{_encode(system)}~{_encode(linkedid)}"
    if len(stem) <= MAX_STEM:
        return stem
    digest = hashlib.sha256(f"{system}\n{linkedid}".encode()).hexdigest()
    return f"{PREFIX}~{digest}"


def parse_stem(stem: str) -> tuple[str, str] | None:
    """(system, linkedid) of a stem made by :func:`key_stem`, or None (a call id, a hashed key, anything else)."""
    m = _STEM.fullmatch(stem)
    if m is None:
        return None
    system, linkedid = _decode(m.group(1)), _decode(m.group(2))
    if system is None or linkedid is None or not system or not linkedid:
        return None
    return system, linkedid
