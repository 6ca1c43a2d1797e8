"""What makes a call a qualified lead, and its value: the one definition reports and exports share.

A person's word comes first: a call someone marked a lead in the dashboard (``call_qualifications``)
is qualified, one they marked not a lead is not, whatever the lead rules said; when nobody said, the
lead rules decide (``call_outcomes.lead == 'qualified'``).  The value is the person's, else the
rules'.  Spam is the rules' and signals' flag (``call_outcomes.spam``), kept apart.

The SQL forms need ``call_qualifications`` and ``call_outcomes`` outer-joined on the call
(:func:`joined` adds both); :func:`of_calls` reads the same for a list of calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from schema.models import Call, CallOutcome, CallQualification


def qualified_sql() -> Any:
    """SQL: the call is a qualified lead (a person's yes, or the rules' when nobody said)."""
    return or_(
        CallQualification.lead.is_(True),
        and_(CallQualification.lead.is_(None), CallOutcome.lead == "qualified"),
    )


def value_sql() -> Any:
    """SQL: the lead's value (the person's, else the rules'), NULL when neither set one."""
    return func.coalesce(CallQualification.value, CallOutcome.value)


def joined(query: Any) -> Any:
    """*query* (over ``calls``) with the two tables :func:`qualified_sql` and :func:`value_sql` read."""
    return query.outerjoin(CallQualification, CallQualification.call_id == Call.id).outerjoin(
        CallOutcome, CallOutcome.call_id == Call.id
    )


def is_qualified(person: bool | None, rules: str | None) -> bool:
    """The same rule in Python: *person* is ``call_qualifications.lead``, *rules* ``call_outcomes.lead``."""
    return person if person is not None else rules == "qualified"


@dataclass(frozen=True)
class Verdict:
    qualified: bool = False
    value: float | None = None
    spam: bool = False


def of_calls(session: Session, call_ids: Sequence[int]) -> dict[int, Verdict]:
    """The verdict on each call that a person or the rules said anything about (others: ``Verdict()``)."""
    out: dict[int, Verdict] = {}
    q, o = CallQualification, CallOutcome
    for start in range(0, len(call_ids), 500):
        chunk = list(call_ids[start : start + 500])
        query = joined(
            select(Call.id, q.lead, q.value, o.lead.label("rules_lead"), o.value.label("rules_value"), o.spam)
        )
        rows = session.execute(query.where(Call.id.in_(chunk), or_(q.call_id.is_not(None), o.call_id.is_not(None))))
        for row in rows:
            value = row.value if row.value is not None else row.rules_value
            out[row.id] = Verdict(is_qualified(row.lead, row.rules_lead), value, bool(row.spam))
    return out
