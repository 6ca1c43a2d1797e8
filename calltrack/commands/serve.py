"""`calltrack serve`: every long-running service in one process."""

from __future__ import annotations

import logging

import click

from calltrack.context import AppContext, pass_app


@click.command("serve")
@click.option("--only", multiple=True, help="Run only this service (repeatable).")
@pass_app
def command(app: AppContext, only: tuple[str, ...]) -> None:
    """Run every configured long-running service until SIGTERM or Ctrl-C."""
    from calltrack.services import SERVICES, build_services, serve_blocking

    logging.basicConfig(
        level=app.settings.general.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app.ready_engine()
    try:
        services = build_services(app, only)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not services:
        known = ", ".join(SERVICES) or "none yet"
        raise click.ClickException(f"no service is configured to run (services known: {known})")
    click.echo(f"calltrack serve: running {', '.join(s.name for s in services)}; stop with Ctrl-C", err=True)
    code = serve_blocking(services)
    click.echo("calltrack serve: stopped", err=True)
    raise SystemExit(code)
