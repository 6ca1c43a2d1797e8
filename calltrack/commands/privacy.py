"""`calltrack privacy`: export and erase by phone number, retention windows."""

from __future__ import annotations

import json

import click

from calltrack.context import AppContext, pass_app


@click.group("privacy")
def group() -> None:
    """Export and erase what calltrack holds about a caller; retention windows."""


@group.command("export")
@click.argument("number")
@click.option("--to", "to", type=click.Path(dir_okay=False), help="Write the JSON here (default: stdout).")
@pass_app
def export(app: AppContext, number: str, to: str | None) -> None:
    """Everything held about the caller NUMBER, as JSON (calls, timelines, recordings, texts, form leads).

    NUMBER may be an e-mail address: the website form leads holding it.
    """
    from pathlib import Path

    from schema.models import AuditEntry
    from tracking.form_leads import export_email
    from tracking.privacy import cli_actor, export_caller, write_export

    target = Path(to) if to else None
    if target is not None and not target.parent.is_dir():
        raise click.ClickException(f"cannot write {to}: the folder {target.parent} does not exist")
    by_email = "@" in number  # an e-mail address: the website form leads that hold it
    with app.session() as session:
        data = export_email(session, number) if by_email else export_caller(session, app.settings, number)
        session.add(
            AuditEntry(
                actor=cli_actor(),
                action="privacy.export",
                target="e-mail address" if by_email else f"caller ending {data['number'][-4:]}",
                detail={"calls": len(data.get("calls", [])), "form_leads": len(data["form_leads"])},
            )
        )
        if target is not None:
            # Written inside the transaction: a file that cannot be written leaves no audit line behind.
            try:
                write_export(data, target)
            except OSError as exc:
                raise click.ClickException(f"cannot write {to}: {exc.strerror or exc}") from None
    if target is not None and by_email:
        click.echo(f"wrote {len(data['form_leads'])} form lead(s) about {data['email']} to {to}", err=True)
    elif target is not None:
        click.echo(f"wrote {len(data['calls'])} call(s) about {data['number']} to {to}", err=True)
    else:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@group.command("erase")
@click.argument("number")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def erase(app: AppContext, number: str, yes: bool) -> None:
    """Erase the caller NUMBER: calls, timelines, recordings and their files, raw events, texts, form leads.

    NUMBER may be an e-mail address: the website form leads holding it are erased.
    """
    from tracking import phone
    from tracking.form_leads import check_email, erase_email
    from tracking.privacy import cli_actor, erase_caller

    if "@" in number:  # an e-mail address: the website form leads that hold it
        address = check_email(number)
        if not yes:
            click.confirm(f"Erase every form lead holding {address}? This cannot be undone", abort=True)
        with app.session() as session:
            count = erase_email(session, address, cli_actor())
        click.echo(f"erased {address}: {count} form lead(s)")
        return
    e164 = phone.normalize(number, app.settings.numbers.default_region)
    if not yes:
        click.confirm(f"Erase everything calltrack holds about {e164}? This cannot be undone", abort=True)
    with app.session() as session:
        erased = erase_caller(session, app.settings, e164, cli_actor())
    click.echo(
        f"erased {e164}: {erased.calls} call(s), {erased.recordings} recording(s) ({erased.files} file(s)), "
        f"{erased.raw_events} raw event(s), {erased.sms} text(s), {erased.form_leads} form lead(s)"
    )
    for path in erased.missing_files:
        click.echo(f"warning: recording file {path} was already gone or could not be removed", err=True)


@group.command("set-retention")
@click.argument("account")
@click.option("--days", type=int, help="Keep calls and visitor sessions this many days (0 keeps them).")
@click.option("--recording-days", type=int, help="Keep recordings this many days (0 keeps them).")
@pass_app
def set_retention(app: AppContext, account: str, days: int | None, recording_days: int | None) -> None:
    """Set an account's retention windows (default: the [privacy] settings)."""
    from tracking.privacy import set_retention as apply

    if days is None and recording_days is None:
        raise click.UsageError("give --days and/or --recording-days")
    with app.session() as session:
        acct = apply(session, account, days, recording_days)
        click.echo(
            f"{acct.name}: calls kept {acct.retention_days} day(s), recordings {acct.recording_retention_days} day(s)"
        )


@group.command("retention")
@pass_app
def retention(app: AppContext) -> None:
    """Delete what is older than the retention windows (run it daily, e.g. from a systemd timer)."""
    from tracking.privacy import apply_retention, cli_actor

    with app.session() as session:
        erased = apply_retention(session, app.settings, cli_actor())
    click.echo(
        f"retention: {erased.calls} call(s), {erased.sessions} visitor session(s), {erased.recordings} recording(s), "
        f"{erased.raw_events} raw event(s) removed"
    )
