"""`calltrack web`: the web service (dni.js, the DNI API)."""

from __future__ import annotations

import click

from calltrack.context import AppContext, pass_app
from calltrack.logs import setup as setup_logging


@click.group("web")
def group() -> None:
    """The web service: the dni.js script and its session API."""


@group.command("serve")
@click.option("--listen", help="HOST:PORT to listen on (default: web.listen from the settings).")
@pass_app
def serve(app: AppContext, listen: str | None) -> None:
    """Serve dni.js and the DNI API until Ctrl-C or SIGTERM."""
    from calltrack.services import serve_blocking
    from web.net import parse_networks
    from web.service import WebService, split_listen

    settings = app.settings
    try:
        split_listen(listen or settings.web.listen)
        parse_networks(settings.web.trusted_proxies)
        parse_networks(settings.web.metrics_networks, "web.metrics_networks")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    engine = app.ready_engine()
    setup_logging(settings.general.log_level)
    service = WebService(settings, engine, listen, alone=True)
    try:
        service.bind()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {service.listen}: {exc.strerror or exc}") from None
    click.echo(f"calltrack web: listening on http://{service.listen}; stop with Ctrl-C", err=True)
    code = serve_blocking([service])
    raise SystemExit(code)
