"""Webhook endpoints of an account: add, list, remove, rotate the secret; deliveries listed.

The URL's shape and its network (server-side request forgery) are checked by the
caller with ``webhooks.guard`` before :func:`add_endpoint`: this module stores.
A secret is made here, returned once to be shown, and never listed again.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from schema.models import Account, OutboxEvent, WebhookDelivery, WebhookEndpoint, utcnow
from tracking import outbox
from tracking.accounts import get_account
from tracking.errors import InvalidInput, NotFound

SECRET_PREFIX = "whsec_"
MAX_DESCRIPTION = 200


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def add_endpoint(
    session: Session, account_name: str, url: str, types: list[str], description: str | None = None
) -> WebhookEndpoint:
    account = get_account(session, account_name)
    if description is not None:
        description = description.strip() or None
        if description and (len(description) > MAX_DESCRIPTION or any(ord(ch) < 32 for ch in description)):
            raise InvalidInput(f"description: at most {MAX_DESCRIPTION} characters, no control characters")
    endpoint = WebhookEndpoint(
        account_id=account.id,
        url=url,
        events=outbox.events_column(types),
        secret=new_secret(),
        description=description,
        enabled=True,
    )
    session.add(endpoint)
    session.flush()
    return endpoint


def get_endpoint(session: Session, endpoint_id: int) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFound(f"no webhook endpoint {endpoint_id} (see `calltrack webhooks list`)")
    return endpoint


def remove_endpoint(session: Session, endpoint_id: int) -> int:
    """Remove the endpoint with its deliveries; the number of deliveries still pending that go with it."""
    endpoint = get_endpoint(session, endpoint_id)
    pending = session.scalar(
        select(func.count())
        .select_from(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.state == "pending")
    )
    session.delete(endpoint)
    session.flush()
    return int(pending or 0)


def rotate_secret(session: Session, endpoint_id: int, overlap: dt.timedelta, now: dt.datetime | None = None) -> str:
    """A new secret; the old one keeps signing (beside the new) for *overlap*. The new secret, to show once."""
    if overlap < dt.timedelta(0):
        raise InvalidInput("the overlap cannot be negative")
    now = now or utcnow()
    endpoint = get_endpoint(session, endpoint_id)
    if overlap > dt.timedelta(0):
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_until = now + overlap
    else:
        endpoint.previous_secret = None
        endpoint.previous_secret_until = None
    endpoint.secret = new_secret()
    session.flush()
    return endpoint.secret


@dataclass(frozen=True)
class EndpointRow:
    id: int
    account: str
    url: str
    events: list[str]
    enabled: bool
    description: str | None
    old_secret_until: dt.datetime | None
    pending: int
    dead: int
    delivered: int
    last_error: str | None


def list_endpoints(
    session: Session, account_name: str | None = None, now: dt.datetime | None = None
) -> list[EndpointRow]:
    now = now or utcnow()
    d = WebhookDelivery
    counts = {
        row.endpoint_id: row
        for row in session.execute(
            select(
                d.endpoint_id,
                func.sum(case((d.state == "pending", 1), else_=0)).label("pending"),
                func.sum(case((d.state == "dead", 1), else_=0)).label("dead"),
                func.sum(case((d.state == "delivered", 1), else_=0)).label("delivered"),
            ).group_by(d.endpoint_id)
        )
    }
    query = (
        select(WebhookEndpoint, Account.name)
        .join(Account, Account.id == WebhookEndpoint.account_id)
        .order_by(Account.name, WebhookEndpoint.id)
    )
    if account_name:
        query = query.where(Account.id == get_account(session, account_name).id)
    rows = []
    for endpoint, account in session.execute(query).all():
        c = counts.get(endpoint.id)
        last_error = session.scalar(
            select(d.last_error)
            .where(d.endpoint_id == endpoint.id, d.last_error.is_not(None), d.state != "delivered")
            .order_by(d.last_attempt_at.desc())
            .limit(1)
        )
        until = endpoint.previous_secret_until
        rows.append(
            EndpointRow(
                id=endpoint.id,
                account=account,
                url=endpoint.url,
                events=outbox.event_types(endpoint.events),
                enabled=endpoint.enabled,
                description=endpoint.description,
                old_secret_until=until if until is not None and until > now else None,
                pending=int(c.pending or 0) if c else 0,
                dead=int(c.dead or 0) if c else 0,
                delivered=int(c.delivered or 0) if c else 0,
                last_error=last_error,
            )
        )
    return rows


def list_deliveries(
    session: Session,
    *,
    endpoint_id: int | None = None,
    account_name: str | None = None,
    failed: bool = False,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Newest first. *failed*: dead deliveries and pending ones whose last attempt failed."""
    d, o, e = WebhookDelivery, OutboxEvent, WebhookEndpoint
    query = (
        select(d, o.event_id, o.type, e.url, Account.name)
        .join(o, o.id == d.outbox_id)
        .join(e, e.id == d.endpoint_id)
        .join(Account, Account.id == e.account_id)
        .order_by(d.id.desc())
        .limit(limit)
    )
    if endpoint_id is not None:
        get_endpoint(session, endpoint_id)
        query = query.where(d.endpoint_id == endpoint_id)
    if account_name:
        query = query.where(Account.id == get_account(session, account_name).id)
    if failed:
        query = query.where((d.state == "dead") | ((d.state == "pending") & d.last_error.is_not(None)))
    out = []
    for delivery, event_id, type_, url, account in session.execute(query).all():
        out.append(
            {
                "id": delivery.id,
                "event": event_id,
                "type": type_,
                "endpoint": delivery.endpoint_id,
                "account": account,
                "url": url,
                "state": delivery.state,
                "attempts": delivery.attempts,
                "last_status": delivery.last_status,
                "last_error": delivery.last_error,
                "next_attempt_at": delivery.next_attempt_at if delivery.state == "pending" else None,
                "delivered_at": delivery.delivered_at,
                "created_at": delivery.created_at,
            }
        )
    return out
