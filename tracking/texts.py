"""Texts as the CLI sees them: sending one (checked, opt-outs honoured, stored and threaded),
listing and threading them, the opt-out list, where a number's texts go, an account's HELP text.

The inbound path (the ``sms`` handler) is :mod:`tracking.messages`; both write
``sms_messages``. A thread is every text between one tracking number and one other
number, both ways, oldest first.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session

from config import Settings
from schema.models import Account, SmsMessage, SmsOptOut, Source, TrackingNumber, utcnow
from tracking import phone
from tracking.accounts import get_account
from tracking.errors import InvalidInput, NotFound
from tracking.messages import body_problem, destination, from_header


@dataclass(frozen=True)
class Outgoing:
    """A text checked and ready for AMI MessageSend."""

    account_id: int
    number_id: int
    source_id: int | None
    from_number: str
    to_number: str
    body: str
    destination: str
    from_header: str
    message_id: str


def prepare_send(session: Session, settings: Settings, from_number: str, to_number: str, body: str) -> Outgoing:
    """Check a text from the tracking number *from_number* to *to_number*; raises InvalidInput/NotFound."""
    region = settings.numbers.default_region
    sender = phone.normalize(from_number, region)
    recipient = phone.normalize(to_number, region)
    problem = body_problem(body)
    if problem:
        raise InvalidInput(f"text not sent: {problem}")
    tn = session.scalars(select(TrackingNumber).where(TrackingNumber.number == sender)).first()
    if tn is None:
        raise NotFound(f"{sender} is not a tracking number (see `calltrack numbers list`)")
    if tn.status != "active":
        raise InvalidInput(f"{sender} is {tn.status}: texts go only from active tracking numbers")
    opted = session.scalars(
        select(SmsOptOut).where(SmsOptOut.account_id == tn.account_id, SmsOptOut.number == recipient)
    ).first()
    if opted is not None:
        raise InvalidInput(
            f"text not sent: {recipient} texted {(opted.keyword or 'STOP').upper()} on "
            f"{opted.created_at:%Y-%m-%d} and gets no texts from this account until they text START"
        )
    try:
        dest = destination(recipient, settings.sms.trunk)
    except ValueError as exc:
        raise InvalidInput(f"text not sent: {exc}") from None
    source_id = tn.source_id
    if source_id is None and tn.pool is not None:
        source_id = tn.pool.source_id
    return Outgoing(
        account_id=tn.account_id,
        number_id=tn.id,
        source_id=source_id,
        from_number=sender,
        to_number=recipient,
        body=body,
        destination=dest,
        from_header=from_header(sender, sender, settings.sms.domain),
        message_id="ct-" + uuid.uuid4().hex,
    )


def record_sent(session: Session, out: Outgoing, system: str, error: str | None = None) -> SmsMessage:
    """Store the text out: ``sent`` (Asterisk queued it) or ``failed`` with Asterisk's answer."""
    row = SmsMessage(
        system=system,
        message_id=out.message_id,
        account_id=out.account_id,
        tracking_number_id=out.number_id,
        source_id=out.source_id,
        direction="out",
        from_number=out.from_number,
        to_number=out.to_number,
        body=out.body,
        status="failed" if error else "sent",
        error=error,
        forwarded_to=out.destination,
        received_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


#: the status of a text in whose forward Asterisk's MessageSend failed (MESSAGE_SEND_STATUS not SUCCESS)
FORWARD_FAILED = "forward-failed"


def record_forward(session: Session, system: str, text_id: int, status: str) -> bool:
    """What MessageSend said of the forward of text *text_id* (as the AMI listener heard it on
    *system*'s Message channel): anything but SUCCESS marks the text ``forward-failed``, with
    Asterisk's word in its error. Whether a text changed."""
    if status == "SUCCESS":
        return False
    row = session.get(SmsMessage, text_id)
    if row is None or row.system != system or row.direction != "in" or row.status != "received":
        return False
    row.status = FORWARD_FAILED
    row.error = f"forward to {row.forwarded_to or '(none)'} failed: MessageSend set MESSAGE_SEND_STATUS={status[:40]}"
    session.flush()
    return True


# --- listings ----------------------------------------------------------------------------------


def _row(m: SmsMessage, account: str | None, source: str | None) -> dict[str, Any]:
    return {
        "id": m.id,
        "at": m.received_at.isoformat(timespec="seconds"),
        "direction": m.direction,
        "from": m.from_number or "(not tracked)",
        "to": m.to_number,
        "name": m.sender_name or "",
        "account": account or "",
        "source": source or "",
        "status": m.status or "",
        "first_time": "" if m.first_time is None else ("yes" if m.first_time else "no"),
        "keyword": m.keyword or "",
        "body": m.body if not m.body_dropped else f"(dropped by Asterisk: {m.content_length} bytes)",
    }


COLUMNS = [
    "id",
    "at",
    "direction",
    "from",
    "to",
    "name",
    "account",
    "source",
    "status",
    "first_time",
    "keyword",
    "body",
]


def _select() -> Any:
    return (
        select(SmsMessage, Account.name, Source.name)
        .outerjoin(Account, Account.id == SmsMessage.account_id)
        .outerjoin(Source, Source.id == SmsMessage.source_id)
    )


def list_texts(
    session: Session,
    settings: Settings,
    *,
    account: str | None = None,
    number: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    account_ids: Collection[int] | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Texts newest first; *number* matches either side (a tracking number or a sender).

    *account_ids* (when given) limits them to those accounts: the dashboard's viewer's.
    """
    query = _select()
    if account:
        query = query.where(SmsMessage.account_id == get_account(session, account).id)
    if account_ids is not None:
        query = query.where(SmsMessage.account_id.in_(sorted(account_ids) or [-1]))
    if until is not None:
        query = query.where(SmsMessage.received_at < until)
    if number:
        e164 = phone.normalize(number, settings.numbers.default_region)
        query = query.where(or_(SmsMessage.from_number == e164, SmsMessage.to_number == e164))
    if since is not None:
        query = query.where(SmsMessage.received_at >= since)
    query = query.order_by(SmsMessage.received_at.desc(), SmsMessage.id.desc()).limit(limit)
    return [_row(m, a, s) for m, a, s in session.execute(query)]


def thread(
    session: Session,
    settings: Settings,
    number: str,
    tracking: str | None = None,
    account_ids: Collection[int] | None = None,
) -> list[dict[str, Any]]:
    """The texts between *number* and the tracking numbers (or *tracking* alone), oldest first.

    *number* may be either side: a sender (every tracking number they texted) or a
    tracking number (then *tracking* is not needed and every correspondent is shown).
    *account_ids* (when given) limits them to those accounts.
    """
    region = settings.numbers.default_region
    e164 = phone.normalize(number, region)
    query = _select()
    if tracking:
        other = phone.normalize(tracking, region)
        query = query.where(
            or_(
                and_(SmsMessage.from_number == e164, SmsMessage.to_number == other),
                and_(SmsMessage.from_number == other, SmsMessage.to_number == e164),
            )
        )
    else:
        query = query.where(or_(SmsMessage.from_number == e164, SmsMessage.to_number == e164))
    if account_ids is not None:
        query = query.where(SmsMessage.account_id.in_(sorted(account_ids) or [-1]))
    query = query.order_by(SmsMessage.received_at, SmsMessage.id)
    return [_row(m, a, s) for m, a, s in session.execute(query)]


# --- opt-outs, destinations, help text ---------------------------------------------------------


def opt_outs(session: Session, account: str | None = None) -> list[dict[str, Any]]:
    query = select(SmsOptOut, Account.name).join(Account, Account.id == SmsOptOut.account_id)
    if account:
        query = query.where(SmsOptOut.account_id == get_account(session, account).id)
    return [
        {
            "number": o.number,
            "account": name,
            "keyword": o.keyword or "",
            "since": o.created_at.isoformat(timespec="seconds"),
        }
        for o, name in session.execute(query.order_by(SmsOptOut.created_at, SmsOptOut.id))
    ]


def remove_opt_out(session: Session, settings: Settings, number: str, account: str) -> int:
    """Take *number* off *account*'s opt-out list (they asked by other means); how many rows went."""
    e164 = phone.normalize(number, settings.numbers.default_region)
    acct = get_account(session, account)
    result = session.execute(delete(SmsOptOut).where(SmsOptOut.account_id == acct.id, SmsOptOut.number == e164))
    return int(getattr(result, "rowcount", 0) or 0)


def set_forward(session: Session, settings: Settings, number: str, target: str | None) -> TrackingNumber:
    """Where texts to the tracking *number* go (a number or pjsip:ENDPOINT); None: the endpoint its calls ring."""
    e164 = phone.normalize(number, settings.numbers.default_region)
    tn = session.scalars(select(TrackingNumber).where(TrackingNumber.number == e164)).first()
    if tn is None:
        raise NotFound(f"{e164} is not a tracking number (see `calltrack numbers list`)")
    if target:
        target = target.strip()
        if target.startswith("+") or target[:1].isdigit():
            target = phone.normalize(target, settings.numbers.default_region)
        try:
            destination(target, settings.sms.trunk)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    tn.sms_forward_to = target or None
    session.flush()
    return tn


def set_help_text(session: Session, account: str, text: str | None) -> Account:
    acct = get_account(session, account)
    if text is not None:
        problem = body_problem(text)
        if problem:
            raise InvalidInput(f"help text: {problem}")
    acct.sms_help_text = text
    session.flush()
    return acct
