"""`calltrack serve`: every long-running service in one process."""

from __future__ import annotations

import click

from calltrack.context import AppContext, pass_app
from calltrack.logs import setup as setup_logging


@click.command("serve")
@click.option("--only", multiple=True, help="Run only this service (repeatable).")
@pass_app
def command(app: AppContext, only: tuple[str, ...]) -> None:
    """Run every configured long-running service until SIGTERM or Ctrl-C."""
    from calltrack.services import SERVICES, build_services, describe, serve_blocking
    from config import system_name_problem

    settings = app.settings
    setup_logging(settings.general.log_level)
    problem = system_name_problem(settings)
    if problem:
        raise click.ClickException(problem)
    if "recorder" in (only or SERVICES):
        from pathlib import Path

        from calltrack.commands.recordings import spool_problem

        problem = spool_problem(Path(settings.recorder.spool_dir))
        if problem:
            raise click.ClickException(f"{problem} (or leave the recorder out: serve --only agi --only web ...)")
    app.ready_engine()
    try:
        services = build_services(app, only)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not services:
        known = ", ".join(SERVICES) or "none yet"
        raise click.ClickException(f"no service is configured to run (services known: {known})")
    if not settings.ami.servers and (not only or "ami" in only):
        click.echo(
            "calltrack serve: no [[ami.servers]] in the settings, so the AMI listener is off and calls are routed "
            "but never completed (no answer, end, duration or disposition); add an [[ami.servers]] table "
            '(README, "AMI listener")',
            err=True,
        )
    click.echo(f"calltrack serve: running {', '.join(describe(s) for s in services)}; stop with Ctrl-C", err=True)
    code = serve_blocking(services)
    click.echo("calltrack serve: stopped", err=True)
    raise SystemExit(code)
