"""`calltrack ami`: the AMI listener that records call events."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from calltrack.context import AppContext, pass_app
from calltrack.logs import setup as setup_logging

if TYPE_CHECKING:
    from ami_listener.listener import AmiListener


def service(app: AppContext) -> AmiListener | None:
    """The `calltrack serve` factory: None when no [[ami.servers]] is configured."""
    if not app.settings.ami.servers:
        return None
    from ami_listener.listener import AmiListener
    from schema.db import make_session_factory

    return AmiListener(app.settings, make_session_factory(app.ready_engine()))


@click.group("ami")
def group() -> None:
    """The AMI listener that records call events."""


@group.command("listen")
@click.option("--name", help="The Asterisk system name calls are keyed by (one server given by options).")
@click.option("--host", help="Asterisk's address.")
@click.option("--port", type=int, help="AMI port (5038).")
@click.option("--username", help="The manager.conf user.")
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False),
    help="A file holding the user's secret.",
)
@click.option("--tls/--no-tls", default=None, help="Connect with TLS (Asterisk's tlsbindport, 5039).")
@click.option("--ca-file", type=click.Path(dir_okay=False), help="CA bundle (PEM) for Asterisk's TLS certificate.")
@pass_app
def listen(
    app: AppContext,
    name: str | None,
    host: str | None,
    port: int | None,
    username: str | None,
    secret_file: str | None,
    tls: bool | None,
    ca_file: str | None,
) -> None:
    """Listen to Asterisk's AMI and record calls until Ctrl-C or SIGTERM.

    Without options, every [[ami.servers]] of the settings; with --host (and
    the others), that one server.
    """
    from ami_listener.client import read_secret
    from ami_listener.listener import AmiListener
    from calltrack.services import serve_blocking
    from config import AmiServer, system_name_problem
    from schema.db import make_session_factory

    settings = app.settings
    setup_logging(settings.general.log_level)
    one = any(v is not None for v in (name, host, port, username, secret_file, tls, ca_file))
    if one:
        base = AmiServer(name=settings.general.system_name)
        server = AmiServer(
            name=name or base.name,
            host=host or base.host,
            port=port or base.port,
            username=username or base.username,
            secret_file=secret_file or "",
            tls=bool(tls) or bool(ca_file),
            ca_file=ca_file or "",
        )
        servers: tuple[AmiServer, ...] = (server,)
    else:
        servers = settings.ami.servers
    if not servers:
        raise click.ClickException(
            "no AMI server to listen to: add an [[ami.servers]] table to the settings, or give --host "
            "--username --secret-file"
        )
    problem = system_name_problem(settings, servers if one else None)
    if problem and not one:
        raise click.ClickException(problem)
    if problem:
        # one server given by options, often on a machine without settings: said, not refused
        click.echo(f"calltrack ami: warning: {problem}", err=True)
    for server in servers:
        if not server.secret and not server.secret_file:
            raise click.ClickException(f"AMI server {server.name!r}: no secret (set secret_file or --secret-file)")
        try:
            read_secret(server.secret, server.secret_file)
        except OSError as exc:
            raise click.ClickException(
                f"AMI server {server.name!r}: cannot read the secret file {server.secret_file}: {exc.strerror}"
            ) from None
        if server.tls:
            import ssl

            try:
                ssl.create_default_context(cafile=server.ca_file or None)
            except (OSError, ssl.SSLError) as exc:
                raise click.ClickException(
                    f"AMI server {server.name!r}: cannot use the CA file {server.ca_file}: {exc}"
                ) from None
    listener = AmiListener(settings, make_session_factory(app.ready_engine()), servers)
    names = ", ".join(f"{s.name} ({s.host}:{s.port})" for s in servers)
    click.echo(f"calltrack ami: listening to {names}; stop with Ctrl-C", err=True)
    code = serve_blocking([listener])
    raise SystemExit(code)
