"""Asterisk's own call records in cdr_csv's ``Master.csv``, read for calls that ended while calltrack was away.

cdr_csv (cdr/cdr_csv.c) appends one line per CDR: every text field quoted (``"`` doubled),
numbers bare, an empty time as an empty field; the columns are accountcode, src, dst,
dcontext, clid, channel, dstchannel, lastapp, lastdata, start, answer, end, duration,
billsec, disposition, amaflags, then uniqueid (``loguniqueid``), userfield
(``loguserfield``) and peeraccount, linkedid, sequence (``newcdrcolumns``) when cdr.conf
asks for them. Times are Asterisk's local time, or UTC with ``usegmtime`` (the Debian sample);
the correlator learns which from the records themselves.

The listener asks for the channels a resync found gone; this module reads the end of the
file (the newest :data:`TAIL_BYTES`), keeps the lines naming those channels, and returns
them as ``Cdr`` events, with the header names of AMI's own ``Cdr`` event (cdr_manager), so
they are stored with the raw events and interpreted, and rebuilt, like any other.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: how much of the end of Master.csv is read: some 40,000 calls, days of a busy PBX
TAIL_BYTES = 8 * 1024 * 1024
#: the header names of AMI's Cdr event, in cdr_csv's column order
COLUMNS = (
    "AccountCode",
    "Source",
    "Destination",
    "DestinationContext",
    "CallerID",
    "Channel",
    "DestinationChannel",
    "LastApplication",
    "LastData",
    "StartTime",
    "AnswerTime",
    "EndTime",
    "Duration",
    "BillableSeconds",
    "Disposition",
    "AMAFlags",
)
#: marks an event the listener made from the file (the AMI Cdr event has no such header)
ORIGIN = "CalltrackSource"


class CdrFile:
    """One Asterisk server's Master.csv."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._warned = False

    def records(self, legs: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
        """``Cdr`` events for the CDR lines naming one of *legs* (dicts with channel, uniqueid, created_at).

        Never raises: a missing or unreadable file is logged once and gives nothing.
        """
        wanted = list(legs)
        if not wanted:
            return []
        channels = {leg["channel"]: leg["uniqueid"] for leg in wanted}
        uniqueids = set(channels.values())
        born = [leg["created_at"] for leg in wanted if leg.get("created_at") is not None]
        # local time may be up to 14 hours off UTC, and channel names repeat after an Asterisk restart
        earliest = (min(born) - dt.timedelta(hours=15)).replace(tzinfo=None) if born else None
        try:
            text = self._tail()
        except OSError as exc:
            if not self._warned:
                logger.warning("CDR file %s cannot be read (%s): calls that ended while away keep estimated times",
                               self.path, exc.strerror or exc)  # fmt: skip
                self._warned = True
            return []
        self._warned = False
        out = []
        for row in csv.reader(io.StringIO(text)):
            if len(row) < len(COLUMNS):
                continue  # a line cut by the tail, or not cdr_csv's
            if row[5] not in channels and row[6] not in channels:
                continue
            if earliest is not None and not _after(row[9], earliest):
                continue
            extra = row[len(COLUMNS)] if len(row) > len(COLUMNS) else ""
            if row[5] in channels and _looks_like_uniqueid(extra) and extra not in uniqueids:
                continue  # loguniqueid names another channel of that name (names repeat after a restart)
            event = {"Event": "Cdr", ORIGIN: str(self.path), **dict(zip(COLUMNS, row, strict=False))}
            # the uniqueid of the channel it is about, as AMI's Cdr has it: stored (and erased) with that call
            event["UniqueID"] = channels.get(row[5]) or channels[row[6]]
            out.append(event)
        return out

    def _tail(self) -> str:
        with open(self.path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(0, size - TAIL_BYTES)
            fh.seek(start)
            data = fh.read()
        if start:
            data = data.partition(b"\n")[2]  # the first line is cut
        return data.decode("utf-8", "replace")


def _looks_like_uniqueid(value: str) -> bool:
    """``1796175718.17``: what loguniqueid writes (the userfield, if that comes first, is free text)."""
    seconds, dot, n = value.partition(".")
    return bool(dot) and seconds.isdigit() and n.isdigit()


def _after(value: str, earliest: dt.datetime) -> bool:
    try:
        return dt.datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S") >= earliest
    except ValueError:
        return False
