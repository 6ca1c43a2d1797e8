"""The outbox: events written in the same transaction as the change they announce.

A writer (the AGI route for ``call.started``, the AMI listener's batch for
``call.completed``, the recorder for ``recording.ready``, ``tracking/call_updates.py`` for
``call.updated``, the form API for ``form.submitted``) adds an :class:`OutboxEvent`
row inside its own transaction, so a crash can neither lose an event whose change
was committed nor announce a change that was rolled back.  An event is written only
when an enabled endpoint of the account takes its type (an installation without
webhooks pays one indexed lookup), and once per subject (``dedupe_key``: a retried
AGI, a replayed spool or a rebuilt call announce nothing twice).

The delivery worker (``webhooks/``) then works through the functions below:
:func:`dispatch` renders each new event's body once (frozen: every retry sends the
same bytes) and creates one :class:`WebhookDelivery` per subscribed endpoint;
:func:`claim` takes due deliveries (a conditional UPDATE, so two workers never take
the same one; the claim is a lease, so a worker that dies mid-send leaves its
deliveries to be retried); :func:`record` stores each attempt's outcome, with
exponential backoff and jitter until the delivery's ``expires_at``, then ``dead``.
Delivery is at least once: receivers de-duplicate on the event id.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, and_, bindparam, case, cast, delete, exists, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from schema.models import Call, OutboxEvent, WebhookDelivery, WebhookEndpoint, utcnow
from tracking.errors import InvalidInput

logger = logging.getLogger(__name__)

CALL_STARTED = "call.started"
CALL_COMPLETED = "call.completed"
CALL_UPDATED = "call.updated"
RECORDING_READY = "recording.ready"
FORM_SUBMITTED = "form.submitted"
#: a text to a tracking number (written by the sms AGI handler's plain SQL, tracking/messages.py)
SMS_RECEIVED = "sms.received"
EVENT_TYPES = (CALL_STARTED, CALL_COMPLETED, CALL_UPDATED, RECORDING_READY, SMS_RECEIVED, FORM_SUBMITTED)

#: what a receiver's error message is cut to in the deliveries table
MAX_ERROR = 500


def new_event_id() -> str:
    return "evt_" + uuid.uuid4().hex


def parse_event_types(text: str | Sequence[str]) -> list[str]:
    """``call.started,call.completed`` (or a list) checked against the known types, in a stable order."""
    items = text.split(",") if isinstance(text, str) else list(text)
    wanted = [item.strip() for item in items if item.strip()]
    if not wanted:
        raise InvalidInput(f"no event types given (known: {', '.join(EVENT_TYPES)})")
    unknown = [item for item in wanted if item not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(f"unknown event type {unknown[0]!r} (known: {', '.join(EVENT_TYPES)})")
    return [t for t in EVENT_TYPES if t in wanted]


def events_column(types: Iterable[str]) -> str:
    """The stored form of an endpoint's types: comma-wrapped, so ``LIKE '%,call.started,%'`` finds one."""
    return "," + ",".join(types) + ","


def event_types(column: str) -> list[str]:
    return [t for t in column.split(",") if t]


def _pattern(type_: str) -> str:
    return f"%,{type_},%"


def _subscribed(account_id: Any, type_: str) -> Any:
    """SQL: an enabled endpoint of *account_id* takes *type_*."""
    return exists().where(
        WebhookEndpoint.account_id == account_id,
        WebhookEndpoint.enabled.is_(True),
        WebhookEndpoint.events.like(_pattern(type_)),
    )


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(OutboxEvent)


def announce(
    session: Session,
    type_: str,
    account_id: int | None,
    *,
    call_id: int | None = None,
    recording_id: int | None = None,
    form_lead_id: int | None = None,
    dedupe: str | None = None,
    detail: dict[str, Any] | None = None,
    at: dt.datetime | None = None,
) -> bool:
    """Add the event to the outbox (in the caller's transaction) if an endpoint of the account takes it.

    With *dedupe*, a second event for the same subject and kind is not written. True when written.
    """
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    if account_id is None:
        return False
    values = select(
        literal(new_event_id()),
        literal(type_),
        literal(account_id),
        literal(call_id),
        literal(recording_id),
        literal(form_lead_id),
        literal(dedupe),
        literal(detail, OutboxEvent.__table__.c.detail.type),
        literal(at or utcnow(), OutboxEvent.__table__.c.occurred_at.type),
    ).where(_subscribed(account_id, type_))
    columns = [
        "event_id",
        "type",
        "account_id",
        "call_id",
        "recording_id",
        "form_lead_id",
        "dedupe_key",
        "detail",
        "occurred_at",
    ]
    stmt = _insert(session).from_select(columns, values)
    if dedupe is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["dedupe_key"])
    result: Any = session.execute(stmt)
    return bool(result.rowcount)


def _event_id_sql(dialect: str) -> Any:
    """SQL making a fresh event id ("evt_" and 32 hex digits) per row, for INSERT ... SELECT."""
    if dialect == "postgresql":
        return literal("evt_") + func.replace(cast(func.gen_random_uuid(), String), "-", "")
    return literal("evt_") + func.lower(func.hex(func.randomblob(16)))


def announce_calls(session: Session, type_: str, call_ids: Sequence[int], at: dt.datetime | None = None) -> int:
    """One event of *type_* per call (once per call: ``type:call id``), for calls of an account that takes it.

    Calls of do-not-track callers and calls without an account are never announced.  One
    statement (INSERT ... SELECT over the calls, with the subscription test inside), so the AMI
    listener's batch pays one round trip for its closed calls' events, none when no endpoint
    takes them.
    """
    if not call_ids:
        return 0
    calls: Any = Call.__table__
    dialect = session.get_bind().dialect.name
    rows = select(
        _event_id_sql(dialect),
        literal(type_),
        calls.c.account_id,
        calls.c.id,
        literal(f"{type_}:") + cast(calls.c.id, String),
        literal(at or utcnow(), OutboxEvent.__table__.c.occurred_at.type),
    ).where(
        calls.c.id.in_(list(call_ids)),
        calls.c.account_id.is_not(None),
        or_(calls.c.do_not_track.is_(None), calls.c.do_not_track.is_(False)),
        _subscribed(calls.c.account_id, type_),
    )
    columns = ["event_id", "type", "account_id", "call_id", "dedupe_key", "occurred_at"]
    stmt = _insert(session).from_select(columns, rows).on_conflict_do_nothing(index_elements=["dedupe_key"])
    result: Any = session.execute(stmt)
    return int(result.rowcount or 0)


def announce_recording(session: Session, recording_id: int) -> bool:
    """``recording.ready`` for an archived recording of an account (once per recording)."""
    from schema.models import Recording

    row = session.execute(
        select(Recording.account_id, Call.do_not_track)
        .outerjoin(Call, Call.id == Recording.call_id)
        .where(Recording.id == recording_id)
    ).first()
    if row is None or row.do_not_track:
        return False
    return announce(
        session, RECORDING_READY, row.account_id, recording_id=recording_id, dedupe=f"{RECORDING_READY}:{recording_id}"
    )


# --- dispatch: render once, one delivery per endpoint ------------------------------------


def dispatch(session: Session, settings: Any, now: dt.datetime | None = None, limit: int = 500) -> int:
    """Render new events and create their deliveries (one transaction); the events handled.

    *settings* is the ``[webhooks]`` table (``retry_hours``).
    """
    from tracking.events import render

    now = now or utcnow()
    query = select(OutboxEvent).where(OutboxEvent.dispatched_at.is_(None)).order_by(OutboxEvent.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        # two workers (two `serve` processes on one database) never fan out the same event
        query = query.with_for_update(skip_locked=True)
    events = list(session.scalars(query))
    if not events:
        return 0
    accounts = {e.account_id for e in events}
    endpoints = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.account_id, WebhookEndpoint.events).where(
            WebhookEndpoint.account_id.in_(accounts), WebhookEndpoint.enabled.is_(True)
        )
    ).all()
    bodies = render(session, events)
    expires = now + dt.timedelta(hours=settings.retry_hours)
    deliveries = []
    for event in events:
        event.dispatched_at = now
        body = bodies.get(event.id)
        if body is None:  # its subject became private (a do-not-track caller) or went away
            continue
        event.body = body
        for endpoint_id, account_id, types in endpoints:
            if account_id == event.account_id and f",{event.type}," in types:
                deliveries.append(
                    {
                        "outbox_id": event.id,
                        "endpoint_id": endpoint_id,
                        "state": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "expires_at": expires,
                        "created_at": now,
                    }
                )
    session.flush()
    if deliveries:
        table: Any = WebhookDelivery.__table__
        session.execute(table.insert(), deliveries)
    return len(events)


# --- claiming and recording attempts ---------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One delivery attempt, with everything the sender needs."""

    delivery_id: int
    endpoint_id: int
    url: str
    #: the secrets to sign with: the current one, and the previous one during a rotation's overlap
    secrets: tuple[str, ...]
    event_id: str
    type: str
    body: bytes
    #: 1 for the first attempt
    attempt: int


@dataclass(frozen=True)
class Outcome:
    delivery_id: int
    endpoint_id: int
    ok: bool
    #: the receiver's HTTP status; None when it did not answer
    status: int | None = None
    error: str | None = None
    #: seconds the receiver asked to wait (429/503 Retry-After)
    retry_after: float | None = None


def _due(now: dt.datetime, skip: Iterable[int]) -> Any:
    d = WebhookDelivery
    condition = and_(d.state == "pending", d.next_attempt_at <= now)
    skipped = list(skip)
    if skipped:
        condition = and_(condition, d.endpoint_id.not_in(skipped))
    return condition


def claim(
    session: Session,
    now: dt.datetime,
    *,
    slots: int,
    per_endpoint: int,
    in_flight: dict[int, int],
    held: Iterable[int] = (),
    lease_seconds: float,
) -> list[Job]:
    """Take up to *slots* due deliveries, at most *per_endpoint* in flight per endpoint.

    Endpoints in *held* (backing off after a failure) and those already at their limit
    are left out of the query, so a dead endpoint's backlog never hides the others'
    due deliveries. Each claim counts the attempt and moves ``next_attempt_at`` to the
    end of the lease.
    """
    d = WebhookDelivery
    held = set(held)
    busy = dict(in_flight)
    chosen: list[int] = []
    while len(chosen) < slots:
        full = {e for e, n in busy.items() if n >= per_endpoint} | held
        rows = session.execute(
            select(d.id, d.endpoint_id)
            .where(_due(now, full), d.id.not_in(chosen) if chosen else literal(True))
            .order_by(d.next_attempt_at, d.id)
            .limit(max(slots * 4, 50))
        ).all()
        picked = 0
        for delivery_id, endpoint_id in rows:
            if len(chosen) >= slots:
                break
            if busy.get(endpoint_id, 0) >= per_endpoint:
                continue
            busy[endpoint_id] = busy.get(endpoint_id, 0) + 1
            chosen.append(delivery_id)
            picked += 1
        if not picked:
            break
    if not chosen:
        return []
    lease = now + dt.timedelta(seconds=lease_seconds)
    claimed = [
        row[0]
        for row in session.execute(
            update(d)
            .where(d.id.in_(chosen), d.state == "pending", d.next_attempt_at <= now)
            .values(attempts=d.attempts + 1, next_attempt_at=lease, last_attempt_at=now)
            .returning(d.id)
            .execution_options(synchronize_session=False)
        )
    ]
    if not claimed:
        return []
    e, o = WebhookEndpoint, OutboxEvent
    details = session.execute(
        select(
            d.id,
            d.endpoint_id,
            d.attempts,
            e.url,
            e.secret,
            e.previous_secret,
            e.previous_secret_until,
            o.event_id,
            o.type,
            o.body,
        )
        .join(e, e.id == d.endpoint_id)
        .join(o, o.id == d.outbox_id)
        .where(d.id.in_(claimed))
        .order_by(d.id)
    ).all()
    jobs = []
    for row in details:
        secrets: tuple[str, ...] = (row.secret,)
        if row.previous_secret and row.previous_secret_until is not None and row.previous_secret_until > now:
            secrets = (row.secret, row.previous_secret)
        jobs.append(
            Job(
                delivery_id=row.id,
                endpoint_id=row.endpoint_id,
                url=row.url,
                secrets=secrets,
                event_id=row.event_id,
                type=row.type,
                body=(row.body or "").encode("utf-8"),
                attempt=row.attempts,
            )
        )
    return jobs


def backoff_seconds(attempts: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Wait after the *attempts*-th failure: base, 2*base, 4*base... up to *cap*, with "equal jitter"
    (half the wait fixed, half random) so that receivers coming back are not hit by every retry at once."""
    wait = min(cap, base * 2 ** max(attempts - 1, 0))
    return wait / 2 + (rng or random).uniform(0, wait / 2)


def record(
    session: Session,
    outcomes: Sequence[Outcome],
    now: dt.datetime,
    settings: Any,
    rng: random.Random | None = None,
) -> dict[int, dt.datetime | None]:
    """Store attempts' outcomes: delivered, due again later, or dead past ``expires_at``.

    Returns, per failed delivery, when it is due again (None once dead).
    """
    d = WebhookDelivery
    delivered = [o for o in outcomes if o.ok]
    if delivered:
        table: Any = d.__table__
        session.execute(
            table.update()
            .where(table.c.id == _bind("did"), table.c.state == "pending")
            .values(state="delivered", delivered_at=now, last_status=_bind("status"), last_error=None),
            [{"did": o.delivery_id, "status": o.status} for o in delivered],
        )
    failed = [o for o in outcomes if not o.ok]
    after: dict[int, dt.datetime | None] = {}
    if not failed:
        return after
    rows = {
        row.id: row
        for row in session.execute(
            select(d.id, d.attempts, d.expires_at, d.state).where(d.id.in_([o.delivery_id for o in failed]))
        )
    }
    updates = []
    for outcome in failed:
        row = rows.get(outcome.delivery_id)
        if row is None or row.state != "pending":
            continue
        error = (outcome.error or "")[:MAX_ERROR] or None
        if now >= row.expires_at:
            updates.append({"did": row.id, "state": "dead", "next": now, "status": outcome.status, "error": error})
            after[row.id] = None
            continue
        wait = backoff_seconds(row.attempts, settings.retry_base_seconds, settings.retry_max_seconds, rng)
        if outcome.retry_after is not None:
            wait = max(wait, min(outcome.retry_after, settings.retry_max_seconds))
        due = min(now + dt.timedelta(seconds=wait), row.expires_at)
        updates.append({"did": row.id, "state": "pending", "next": due, "status": outcome.status, "error": error})
        after[row.id] = due
    if updates:
        table_: Any = d.__table__
        session.execute(
            table_.update()
            .where(table_.c.id == _bind("did"))
            .values(
                state=_bind("state"),
                next_attempt_at=_bind("next"),
                last_status=_bind("status"),
                last_error=_bind("error"),
            ),
            updates,
        )
    return after


def _bind(name: str) -> Any:
    return bindparam(name)


def release(session: Session, delivery_ids: Sequence[int], now: dt.datetime) -> None:
    """Give back claims whose attempt never finished (a stopping worker): due now, the attempt not counted."""
    if not delivery_ids:
        return
    d = WebhookDelivery
    session.execute(
        update(d)
        .where(d.id.in_(list(delivery_ids)), d.state == "pending")
        .values(next_attempt_at=now, attempts=case((d.attempts > 0, d.attempts - 1), else_=0))
        .execution_options(synchronize_session=False)
    )


def retry(
    session: Session,
    settings: Any,
    *,
    ids: Sequence[int] = (),
    all_failed: bool = False,
    endpoint_id: int | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Make dead (or still failing) deliveries due now, with a fresh retry window; how many."""
    now = now or utcnow()
    d = WebhookDelivery
    query = update(d).values(
        state="pending", next_attempt_at=now, expires_at=now + dt.timedelta(hours=settings.retry_hours)
    )
    if ids:
        found = set(session.scalars(select(d.id).where(d.id.in_(list(ids)))))
        missing = [i for i in ids if i not in found]
        if missing:
            from tracking.errors import NotFound

            raise NotFound(f"no delivery {missing[0]} (see `calltrack webhooks deliveries`)")
        delivered = list(session.scalars(select(d.id).where(d.id.in_(list(ids)), d.state == "delivered")))
        if delivered:
            raise InvalidInput(f"delivery {delivered[0]} was delivered already; nothing to retry")
        query = query.where(d.id.in_(list(ids)))
    elif all_failed:
        query = query.where(or_(d.state == "dead", and_(d.state == "pending", d.last_error.is_not(None))))
    else:
        raise InvalidInput("give delivery ids or --all-failed")
    if endpoint_id is not None:
        query = query.where(d.endpoint_id == endpoint_id)
    result: Any = session.execute(query.execution_options(synchronize_session=False))
    return int(result.rowcount or 0)


def purge(session: Session, now: dt.datetime, keep_days: int) -> int:
    """Delete deliveries finished more than *keep_days* ago, and events left with no delivery to make."""
    if keep_days <= 0:
        return 0
    cutoff = now - dt.timedelta(days=keep_days)
    d, o = WebhookDelivery, OutboxEvent
    result: Any = session.execute(
        delete(d)
        .where(or_(d.state == "delivered", d.state == "dead"), d.created_at < cutoff)
        .execution_options(synchronize_session=False)
    )
    gone = int(result.rowcount or 0)
    session.execute(
        delete(o)
        .where(o.dispatched_at.is_not(None), o.dispatched_at < cutoff, ~exists().where(d.outbox_id == o.id))
        .execution_options(synchronize_session=False)
    )
    return gone


def pending_work(session: Session, now: dt.datetime) -> tuple[int, dt.datetime | None]:
    """(undispatched events, the next time a pending delivery is due)."""
    events = session.scalar(select(func.count()).select_from(OutboxEvent).where(OutboxEvent.dispatched_at.is_(None)))
    due = session.scalar(select(func.min(WebhookDelivery.next_attempt_at)).where(WebhookDelivery.state == "pending"))
    return int(events or 0), due
