"""Lines of Asterisk's cdr_csv ``Master.csv``, written exactly as cdr/cdr_csv.c writes them.

``build_csv_record``: text fields between double quotes (a quote inside doubled), numbers bare,
a time never set as an empty field, ``%Y-%m-%d %T`` in local time or GMT (``usegmtime``), then
the optional columns cdr.conf asks for: uniqueid (``loguniqueid``), userfield
(``loguserfield``), peeraccount/linkedid/sequence (``newcdrcolumns``). The record is built
from an AMI ``Cdr`` event of the recorded traffic, which carries the same fields.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

TEXT_BEFORE = ("AccountCode", "Source", "Destination", "DestinationContext", "CallerID", "Channel",
               "DestinationChannel", "LastApplication", "LastData")  # fmt: skip
TIMES = ("StartTime", "AnswerTime", "EndTime")


def _text(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def line(
    cdr: dict[str, Any],
    *,
    shift_hours: float = 0.0,
    uniqueid: bool = True,
    userfield: bool = True,
    newcolumns: bool = False,
    linkedid: str = "",
) -> str:
    """One Master.csv line for the AMI Cdr event *cdr* (whose times are UTC), times moved by *shift_hours*.

    ``shift_hours = 0`` is ``usegmtime = yes`` (Debian's cdr.conf); ``-5`` is an Asterisk in New York without it.
    """
    parts = [_text(str(cdr.get(k, ""))) for k in TEXT_BEFORE]
    for key in TIMES:
        value = str(cdr.get(key, "")).strip()
        if not value:
            parts.append("")  # append_date: a zero time is an empty field
            continue
        when = dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S") + dt.timedelta(hours=shift_hours)
        parts.append(_text(when.strftime("%Y-%m-%d %H:%M:%S")))
    parts.append(str(int(cdr.get("Duration", 0))))
    parts.append(str(int(cdr.get("BillableSeconds", 0))))
    parts.append(_text(str(cdr.get("Disposition", ""))))
    parts.append(_text(str(cdr.get("AMAFlags", ""))))
    if uniqueid:
        parts.append(_text(str(cdr.get("UniqueID", ""))))
    if userfield:
        parts.append(_text(str(cdr.get("UserField", ""))))
    if newcolumns:
        parts += [_text(""), _text(linkedid), "0"]
    return ",".join(parts) + "\n"
