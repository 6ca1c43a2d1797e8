"""`calltrack agi`: the FastAGI server that routes calls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from calltrack.context import AppContext, pass_app

if TYPE_CHECKING:
    from asterisk_agi.service import AgiService


def _reloader(app: AppContext) -> Any:
    """Re-read the settings file for SIGHUP, keeping --database."""

    def reload() -> Any:
        app._settings = None
        return app.settings

    return reload


def service(app: AppContext) -> AgiService:
    """The `agi` entry of `calltrack serve` (always configured: it listens on agi.listen)."""
    from asterisk_agi.service import AgiService

    return AgiService(app.settings, reload_settings=_reloader(app))


@click.group("agi")
def group() -> None:
    """The FastAGI server that routes calls."""


@group.command("serve")
@click.option("--listen", help="HOST:PORT to listen on (default: agi.listen, 127.0.0.1:4573).")
@pass_app
def serve(app: AppContext, listen: str | None) -> None:
    """Run the FastAGI server until SIGTERM or Ctrl-C (SIGHUP reloads the settings)."""
    from asterisk_agi.service import AgiService
    from calltrack.logs import setup as setup_logging
    from calltrack.services import serve_blocking
    from config import system_name_problem

    setup_logging(app.settings.general.log_level)
    problem = system_name_problem(app.settings)
    if problem:
        raise click.ClickException(problem)
    app.ready_engine()
    try:
        agi = AgiService(app.settings, reload_settings=_reloader(app), listen=listen)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(
        f"calltrack agi: FastAGI on {agi.listen} (scripts: {', '.join(agi.router.names)}); stop with Ctrl-C", err=True
    )
    code = serve_blocking([agi])
    click.echo(f"calltrack agi: stopped; {agi.stats.line()}", err=True)
    raise SystemExit(code)


@group.command("replay")
@pass_app
def replay(app: AppContext) -> None:
    """Write the call rows spooled while the database was away (the server also does it every few seconds)."""
    from tracking.routing import CallSpool, RouteStore, spool_folder

    app.ready_engine()
    spool = CallSpool(spool_folder(app.settings))
    store = RouteStore(app.settings.database_url, connect_timeout=app.settings.database.connect_timeout)
    try:
        written = spool.replay(store)
    finally:
        store.close()
    click.echo(f"wrote {written} spooled call row(s); {spool.pending()} waiting")
