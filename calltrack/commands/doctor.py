"""`calltrack doctor`: check a deployment, say what to do, exit 1 on a problem."""

from __future__ import annotations

import click

from calltrack.context import AppContext, pass_app


@click.command("doctor")
@click.option(
    "--user",
    "user",
    help="Check folders and files for this account (default: yours; calltrack's when run as root).",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_app
def command(app: AppContext, user: str | None, fmt: str) -> None:
    """Check settings, database, folders, ffmpeg, AMI servers, listeners and the dialplan.

    Each finding is ok, WARN or FAIL with what to do; the exit status is 1 when any
    check failed. Nothing is changed.
    """
    import json

    from calltrack.doctor.findings import fail
    from calltrack.doctor.run import failed, run_checks, service_account
    from config import ConfigError

    try:
        _ = app.settings  # loads and validates the file
    except ConfigError as exc:
        findings = [fail("settings", str(exc), "fix the file, then run calltrack doctor again")]
    else:
        try:
            service = service_account(user)
        except LookupError as exc:
            raise click.UsageError(str(exc)) from None
        findings = run_checks(app, service)
    if fmt == "json":
        click.echo(json.dumps([f.__dict__ for f in findings], indent=2, ensure_ascii=False))
    else:
        for finding in findings:
            click.echo(finding.line())
        problems = sum(f.status == "fail" for f in findings)
        warnings = sum(f.status == "warn" for f in findings)
        click.echo(f"{problems} problem(s), {warnings} warning(s)")
    if failed(findings):
        raise SystemExit(1)
