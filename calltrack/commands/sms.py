"""`calltrack sms`: text messages to and from tracking numbers (Asterisk's PJSIP messaging)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from calltrack.context import AppContext, pass_app
from calltrack.options import TimeType
from calltrack.output import emit, format_option


@click.group("sms")
def group() -> None:
    """Texts: send one, list them, show a thread, opt-outs (STOP), where a number's texts go."""


def _ami_server(app: AppContext) -> Any:
    servers = app.settings.ami.servers
    wanted = app.settings.sms.ami_server
    if not servers:
        raise click.ClickException("no AMI server to send through: add an [[ami.servers]] table (README, AMI listener)")
    if wanted:
        for server in servers:
            if server.name == wanted:
                return server
        raise click.ClickException(f"[sms] ami_server {wanted!r} is not the name of any [[ami.servers]]")
    return servers[0]


@group.command("send")
@click.option("--from", "from_number", required=True, help="The tracking number the text comes from.")
@click.option("--to", "to_number", required=True, help="The number to text.")
@click.argument("text")
@pass_app
def send(app: AppContext, from_number: str, to_number: str, text: str) -> None:
    """Send TEXT through Asterisk (AMI MessageSend) and keep it in the thread with NUMBER's texts.

    Asterisk only says it queued the text: "sent" means that, not delivered (SIP MESSAGE
    has no delivery report). Refused: a number that texted STOP, a text over 1023 bytes.
    """
    import asyncio

    from calltrack.ami_action import MessageSendFailed, message_send
    from tracking.texts import prepare_send, record_sent

    server = _ami_server(app)
    with app.session() as session:
        out = prepare_send(session, app.settings, from_number, to_number, text)
    error = None
    try:
        asyncio.run(
            message_send(
                server, out.destination, out.from_header, out.body, variables={"X-CT-Message-Id": out.message_id}
            )
        )
    except MessageSendFailed as exc:
        error = str(exc)
    with app.session() as session:
        row = record_sent(session, out, server.name, error)
        row_id = row.id
    if error:
        raise click.ClickException(f"text {row_id} not sent: {error}")
    click.echo(f"text {row_id} sent from {out.from_number} to {out.to_number} (queued by Asterisk; no delivery report)")


@group.command("list")
@click.option("--account", help="Only this account's texts.")
@click.option("--number", help="Only texts from or to this number (a tracking number or a sender).")
@click.option("--since", type=TimeType(), help="Texts at or after this time (2026-11-29, 12h, 7d).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@format_option
@pass_app
def list_(
    app: AppContext, account: str | None, number: str | None, since: dt.datetime | None, limit: int, fmt: str
) -> None:
    """Texts in and out, newest first."""
    from tracking.texts import COLUMNS, list_texts

    with app.session() as session:
        rows = list_texts(session, app.settings, account=account, number=number, since=since, limit=limit)
    emit(rows, fmt, COLUMNS)


@group.command("thread")
@click.argument("number")
@click.option("--tracking", help="Only the texts with this tracking number.")
@format_option
@pass_app
def thread_(app: AppContext, number: str, tracking: str | None, fmt: str) -> None:
    """The conversation with NUMBER (texts in and replies out), oldest first."""
    from tracking.texts import COLUMNS, thread

    with app.session() as session:
        rows = thread(session, app.settings, number, tracking)
    emit(rows, fmt, COLUMNS)


@group.command("opt-outs")
@click.option("--account", help="Only this account's list.")
@format_option
@pass_app
def opt_outs_(app: AppContext, account: str | None, fmt: str) -> None:
    """Numbers that texted STOP (never texted by `sms send` until they text START)."""
    from tracking.texts import opt_outs

    with app.session() as session:
        rows = opt_outs(session, account)
    emit(rows, fmt, ["number", "account", "keyword", "since"])


@group.command("opt-in")
@click.argument("number")
@click.option("--account", required=True)
@pass_app
def opt_in(app: AppContext, number: str, account: str) -> None:
    """Take NUMBER off the account's opt-out list (they asked again by other means)."""
    from tracking.texts import remove_opt_out

    with app.session() as session:
        count = remove_opt_out(session, app.settings, number, account)
    click.echo(f"{number}: {'taken off' if count else 'was not on'} the opt-out list of {account}")


@group.command("forward")
@click.argument("tracking_number")
@click.argument("destination", required=False)
@pass_app
def forward(app: AppContext, tracking_number: str, destination: str | None) -> None:
    """Texts to TRACKING_NUMBER go to DESTINATION: a number (through [sms] trunk) or pjsip:ENDPOINT.

    Without DESTINATION: the endpoint the number's calls ring (PJSIP/100 -> pjsip:100).
    """
    from tracking.texts import set_forward

    with app.session() as session:
        tn = set_forward(session, app.settings, tracking_number, destination)
        shown = tn.sms_forward_to or "the endpoint its calls ring"
    click.echo(f"texts to {tn.number} go to {shown}")


@group.command("help-text")
@click.argument("account")
@click.argument("text", required=False)
@pass_app
def help_text(app: AppContext, account: str, text: str | None) -> None:
    """The answer ACCOUNT's numbers give to a text saying HELP (without TEXT: [sms] help_text)."""
    from tracking.texts import set_help_text

    with app.session() as session:
        set_help_text(session, account, text)
    click.echo(f"{account}: HELP is answered with {'its own text' if text else '[sms] help_text'}")
