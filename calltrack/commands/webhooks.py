"""`calltrack webhooks`: signed event deliveries to an account's receivers (a CRM, a script)."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

import click

from calltrack.context import AppContext, pass_app
from calltrack.output import emit, format_option

if TYPE_CHECKING:
    from webhooks.guard import Guard

_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")


def parse_duration(text: str) -> dt.timedelta:
    """``24h``, ``30m``, ``2d``, ``90s`` or ``0``."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise click.BadParameter(f"{text!r} is not a duration: use 24h, 30m, 2d or 0", param_hint="'--overlap'")
    unit = {"": "seconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
    return dt.timedelta(**{unit: int(m.group(1))})


def _guard(app: AppContext) -> Guard:
    from webhooks.guard import Guard

    return Guard(app.settings.webhooks.allow_networks)


@click.group("webhooks")
def group() -> None:
    """Signed webhooks: an account's events sent to its receivers, retried until delivered."""


@group.command("add")
@click.argument("account")
@click.argument("url")
@click.option(
    "--events",
    default=None,
    help=(
        "Comma-separated event types (default: all): call.started, call.completed, call.updated, "
        "recording.ready, form.submitted."
    ),
)
@click.option("--description", help="A note for `webhooks list` (the receiver's name).")
@pass_app
def add(app: AppContext, account: str, url: str, events: str | None, description: str | None) -> None:
    """Send ACCOUNT's events to URL (https://; http:// only to localhost). Prints the secret once."""
    from tracking.outbox import EVENT_TYPES, parse_event_types
    from tracking.webhook_endpoints import add_endpoint
    from webhooks.guard import Refused

    types = parse_event_types(events) if events is not None else list(EVENT_TYPES)
    try:
        _guard(app).check_url(url)
    except Refused as exc:
        raise click.ClickException(f"{url}: {exc}") from None
    with app.session() as session:
        endpoint = add_endpoint(session, account, url, types, description)
        endpoint_id, secret = endpoint.id, endpoint.secret
    click.echo(f"added webhook endpoint {endpoint_id} for {account}: {url} ({', '.join(types)})", err=True)
    click.echo("signing secret (shown once; keep it in the receiver's settings):", err=True)
    click.echo(secret)


@group.command("list")
@click.option("--account", help="Only this account's endpoints.")
@format_option
@pass_app
def list_(app: AppContext, account: str | None, fmt: str) -> None:
    """Endpoints with their event types and deliveries (secrets are never shown)."""
    from tracking.webhook_endpoints import list_endpoints

    with app.session() as session:
        rows = [
            {
                "id": r.id,
                "account": r.account,
                "url": r.url,
                "events": ",".join(r.events),
                "enabled": r.enabled,
                "pending": r.pending,
                "delivered": r.delivered,
                "dead": r.dead,
                "old_secret_until": r.old_secret_until,
                "last_error": r.last_error,
                "description": r.description,
            }
            for r in list_endpoints(session, account)
        ]
    emit(rows, fmt, ["id", "account", "url", "events", "enabled", "pending", "delivered", "dead", "last_error"])


@group.command("remove")
@click.argument("endpoint", type=int)
@click.option("--yes", is_flag=True, help="Also when deliveries are still pending.")
@pass_app
def remove(app: AppContext, endpoint: int, yes: bool) -> None:
    """Stop sending to ENDPOINT (its id in `webhooks list`); its pending deliveries are dropped."""
    from tracking.webhook_endpoints import get_endpoint, list_deliveries, remove_endpoint

    with app.session() as session:
        get_endpoint(session, endpoint)
        pending = [
            d for d in list_deliveries(session, endpoint_id=endpoint, limit=1_000_000) if d["state"] == "pending"
        ]
        if pending and not yes:
            raise click.ClickException(
                f"endpoint {endpoint} has {len(pending)} delivery(ies) still pending; add --yes to drop them"
            )
        dropped = remove_endpoint(session, endpoint)
    click.echo(
        f"removed webhook endpoint {endpoint}" + (f" ({dropped} pending delivery(ies) dropped)" if dropped else "")
    )


@group.command("deliveries")
@click.option("--endpoint", type=int, help="Only this endpoint's deliveries.")
@click.option("--account", help="Only this account's deliveries.")
@click.option("--failed", is_flag=True, help="Only dead deliveries and those whose last attempt failed.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@format_option
@pass_app
def deliveries(app: AppContext, endpoint: int | None, account: str | None, failed: bool, limit: int, fmt: str) -> None:
    """Deliveries, newest first: state (pending, delivered, dead), attempts, the receiver's last answer."""
    from tracking.webhook_endpoints import list_deliveries

    with app.session() as session:
        rows = list_deliveries(session, endpoint_id=endpoint, account_name=account, failed=failed, limit=limit)
    columns = ["id", "event", "type", "endpoint", "state", "attempts", "last_status", "last_error", "next_attempt_at"]
    emit(rows, fmt, columns + (["delivered_at", "created_at", "account", "url"] if fmt != "table" else []))


@group.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option(
    "--all-failed", is_flag=True, help="Every dead delivery (and every pending one whose last attempt failed)."
)
@click.option("--endpoint", type=int, help="With --all-failed: only this endpoint's.")
@pass_app
def retry(app: AppContext, ids: tuple[int, ...], all_failed: bool, endpoint: int | None) -> None:
    """Send deliveries again now, with a fresh retry window (after fixing the receiver)."""
    from tracking.outbox import retry as do_retry

    if bool(ids) == all_failed:
        raise click.UsageError("give delivery ids or --all-failed (not both)")
    with app.session() as session:
        count = do_retry(session, app.settings.webhooks, ids=ids, all_failed=all_failed, endpoint_id=endpoint)
    click.echo(f"{count} delivery(ies) due again now (sent by `calltrack serve`)")


@group.command("test")
@click.argument("endpoint", type=int)
@click.option(
    "--event",
    "type_",
    default="call.completed",
    show_default=True,
    help="The event type of the sample.",
)
@pass_app
def test(app: AppContext, endpoint: int, type_: str) -> None:
    """Send ENDPOINT a signed sample event now ("test": true) and show its answer; exit 1 if it failed."""
    import asyncio

    from schema.models import Account, utcnow
    from tracking.events import dumps, sample
    from tracking.outbox import Job, Outcome, parse_event_types
    from tracking.webhook_endpoints import get_endpoint
    from webhooks.sender import Sender

    (type_,) = parse_event_types(type_)
    now = utcnow()
    with app.session() as session:
        row = get_endpoint(session, endpoint)
        account = session.get(Account, row.account_id)
        assert account is not None
        secrets: tuple[str, ...] = (row.secret,)
        if row.previous_secret and row.previous_secret_until and row.previous_secret_until > now:
            secrets = (row.secret, row.previous_secret)
        url = row.url
        payload = sample(type_, {"id": account.id, "name": account.name}, now)
    job = Job(0, endpoint, url, secrets, payload["id"], type_, dumps(payload).encode("utf-8"), 1)

    async def send() -> Outcome:
        async with Sender(_guard(app), app.settings.webhooks.timeout_seconds, app.settings.webhooks.ca_file) as sender:
            return await sender.send(job)

    outcome = asyncio.run(send())
    if outcome.ok:
        click.echo(f"sent {type_} sample {job.event_id} to {url}: HTTP {outcome.status}")
        return
    raise click.ClickException(f"{url}: {outcome.error}")


@group.command("rotate-secret")
@click.argument("endpoint", type=int)
@click.option(
    "--overlap",
    default="24h",
    show_default=True,
    help="How long the old secret keeps signing beside the new one (0: stop at once).",
)
@pass_app
def rotate_secret(app: AppContext, endpoint: int, overlap: str) -> None:
    """A new signing secret for ENDPOINT, printed once; during the overlap both signatures are sent."""
    from tracking.webhook_endpoints import rotate_secret as rotate

    span = parse_duration(overlap)
    with app.session() as session:
        secret = rotate(session, endpoint, span)
    if span:
        click.echo(
            f"endpoint {endpoint}: new secret below; requests carry both signatures for {overlap}, "
            "then only the new one",
            err=True,
        )
    else:
        click.echo(f"endpoint {endpoint}: new secret below; the old one no longer signs", err=True)
    click.echo(secret)
