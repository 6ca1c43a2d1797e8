"""Website form leads: forms a visitor submitted, captured by dni.js, attributed like calls.

A site opts in (``sites add ... --forms marked|all``): ``marked`` captures only the forms the
site owner marked ``data-calltrack-form``; ``all`` every form.  Password, payment-card,
hidden and file fields are never captured: dni.js leaves them out, and :func:`clean_fields`
drops them again here (a name that says password, card, CVV, IBAN...; a value that is a card
number by its Luhn check; a card number inside a message is masked), so a modified or old script
cannot store them either.  With
Do-Not-Track or Global Privacy Control on, nothing is sent and nothing is stored.

A lead keeps the fields captured, the page, and the visitor session (its source, campaign and
landing page, as a call from that session would get).  Its e-mail address and phone number,
when a field holds one, are kept apart (lower case, E.164) so privacy export and erase find
them.  ``form.submitted`` is written to the outbox in the lead's own transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from schema.models import FormLead, Site, VisitorSession, utcnow
from tracking import outbox, phone
from tracking.accounts import get_account
from tracking.errors import InvalidInput, NotFound
from tracking.sites import normalize_origin

MODES = ("marked", "all")
MAX_FIELDS = 50
MAX_NAME = 100
MAX_VALUE = 2000

#: field names that hold secrets or payment data (matched anywhere in the name, any case)
_SECRET_NAME = re.compile(
    r"pass(word|wd|code|phrase)?|pwd|card|cc[-_ ]?(num|number|no|exp|csc|cvv|cvc|name)|cvv|cvc|csc|"
    r"security[-_ ]?code|expir|exp[-_ ]?(date|month|year|mm|yy)|iban|routing|account[-_ ]?number|ssn|"
    r"social[-_ ]?security|^pin$|[-_ ]pin$|otp|one[-_ ]?time|token|secret",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$")
_PHONE_NAME = re.compile(r"phone|tel|mobile|cell|number", re.IGNORECASE)
_NOT_DIGIT = re.compile(r"[\s\-.()/]")


def secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def card_number(value: str) -> bool:
    """13 to 19 digits (spaces and dashes allowed) passing the Luhn check: a payment card number."""
    digits = re.sub(r"[\s\-]", "", value)
    if not digits.isdigit() or not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def clean_fields(fields: dict[str, str]) -> dict[str, str]:
    """The fields that may be kept, whatever sent them: secret fields and card numbers dropped, and card
    numbers, security codes and SSNs written inside a free text masked (``tracking/redaction.py``)."""
    from tracking.redaction import redact_text

    kept = {name: value for name, value in fields.items() if not secret_name(name) and not card_number(value)}
    return {name: redact_text(value)[0] if any(ch.isdigit() for ch in value) else value for name, value in kept.items()}


def find_email(fields: dict[str, str]) -> str | None:
    for value in fields.values():
        text = value.strip()
        if len(text) <= 320 and _EMAIL.match(text):
            return text.lower()
    return None


def find_phone(fields: dict[str, str], region: str) -> str | None:
    """The first field named like a phone whose value is a valid number, in E.164."""
    for name, value in fields.items():
        digits = _NOT_DIGIT.sub("", value)
        if _PHONE_NAME.search(name) and 7 <= len(digits.lstrip("+")) <= 15 and digits.lstrip("+").isdigit():
            number = phone.try_normalize(value, region)
            if number:
                return number
    return None


def set_forms(session: Session, account_name: str, origin: str, mode: str | None) -> Site:
    """Turn form capture on (``marked``/``all``) or off (None) for one site of the account."""
    if mode is not None and mode not in MODES:
        raise InvalidInput(f"unknown form capture {mode!r} (use {' or '.join(MODES)}, or off)")
    account = get_account(session, account_name)
    site = session.scalar(select(Site).where(Site.account_id == account.id, Site.origin == normalize_origin(origin)))
    if site is None:
        raise NotFound(f"no site {origin!r} in account {account.name!r} (see `calltrack sites list`)")
    site.forms = mode
    session.flush()
    return site


class FormsOff(Exception):
    """The site does not capture forms (or is not a site of the account)."""


@dataclass(frozen=True)
class Submission:
    account_id: int
    origin: str
    #: the visitor session's key as the session answer gave it; None when the page has none
    session_key: str | None
    url: str
    form_name: str | None
    fields: dict[str, str]


def record(session: Session, sub: Submission, region: str, now: dt.datetime | None = None) -> FormLead:
    """Store the lead (and its ``form.submitted`` event) in *session*'s transaction."""
    forms = session.scalar(select(Site.forms).where(Site.account_id == sub.account_id, Site.origin == sub.origin))
    if forms not in MODES:
        raise FormsOff(f"form capture is off for {sub.origin} (see `calltrack sites forms`)")
    visit_id = source_id = None
    if sub.session_key:
        found = session.execute(
            select(VisitorSession.id, VisitorSession.source_id).where(
                VisitorSession.key == sub.session_key, VisitorSession.account_id == sub.account_id
            )
        ).first()
        if found is not None:
            visit_id, source_id = found
    fields = clean_fields(sub.fields)
    lead = FormLead(
        account_id=sub.account_id,
        visitor_session_id=visit_id,
        source_id=source_id,
        page_url=sub.url,
        form_name=sub.form_name,
        fields=fields,
        email=find_email(fields),
        phone=find_phone(fields, region),
        submitted_at=now or utcnow(),
    )
    session.add(lead)
    session.flush()
    outbox.announce(
        session,
        outbox.FORM_SUBMITTED,
        sub.account_id,
        form_lead_id=lead.id,
        dedupe=f"{outbox.FORM_SUBMITTED}:{lead.id}",
        at=lead.submitted_at,
    )
    return lead


def lead_object(lead: FormLead, source: Any, visit: Any) -> dict[str, Any]:
    """A form lead as webhooks and `leads list --format json` show it."""
    from tracking.events import _source, _visit, iso

    return {
        "id": lead.id,
        "form": lead.form_name,
        "page_url": lead.page_url,
        "fields": dict(lead.fields or {}),
        "email": lead.email,
        "phone": lead.phone,
        "source": _source(source),
        "visit": _visit(visit),
        "submitted_at": iso(lead.submitted_at),
    }


def export_form_leads(session: Session, *, phone: str | None = None, email: str | None = None) -> list[dict[str, Any]]:
    """The form leads holding this phone number (E.164) or e-mail address, for `privacy export`."""
    from schema.models import Source

    query = select(FormLead, Source, VisitorSession).outerjoin(Source, Source.id == FormLead.source_id)
    query = query.outerjoin(VisitorSession, VisitorSession.id == FormLead.visitor_session_id)
    if phone is not None:
        query = query.where(FormLead.phone == phone)
    elif email is not None:
        query = query.where(FormLead.email == email.strip().lower())
    else:
        return []
    rows = session.execute(query.order_by(FormLead.submitted_at, FormLead.id)).all()
    return [lead_object(lead, source, visit) for lead, source, visit in rows]


def check_email(text: str) -> str:
    email = text.strip().lower()
    if not _EMAIL.match(email):
        raise InvalidInput(f"{text!r} is not an e-mail address")
    return email


def export_email(session: Session, email: str) -> dict[str, Any]:
    """Everything held about an e-mail address (form leads only: calls have none)."""
    address = check_email(email)
    return {
        "email": address,
        "exported_at": utcnow().isoformat(),
        "form_leads": export_form_leads(session, email=address),
    }


def erase_email(session: Session, email: str, actor: str) -> int:
    """Delete the form leads holding the address (their webhook events go with them); audited."""
    from sqlalchemy import delete

    from schema.models import AuditEntry

    address = check_email(email)
    result: Any = session.execute(delete(FormLead).where(FormLead.email == address))
    count = int(result.rowcount or 0)
    session.add(AuditEntry(actor=actor, action="privacy.erase", target="e-mail address", detail={"form_leads": count}))
    session.flush()
    return count
