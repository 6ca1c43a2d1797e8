"""Entry point of the `calltrack` command.

Subcommand groups are imported only when called, so `calltrack --help` and the
short commands start fast.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

from calltrack.context import AppContext

# name -> (module, attribute, one-line help shown by --help without importing the module)
GROUPS: dict[str, tuple[str, str, str]] = {
    "db": ("calltrack.commands.db", "group", "Create and migrate the database."),
    "accounts": ("calltrack.commands.accounts", "group", "Business customers."),
    "sources": ("calltrack.commands.sources", "group", "Marketing sources of an account."),
    "numbers": ("calltrack.commands.numbers", "group", "Tracking numbers: add, list, update, release, import."),
    "pools": ("calltrack.commands.pools", "group", "Number pools for website number insertion."),
    "calls": ("calltrack.commands.calls", "group", "Calls and their timelines."),
    "callers": ("calltrack.commands.callers", "group", "Blocked and do-not-track caller lists."),
    "recordings": ("calltrack.commands.recordings", "group", "Call recordings: process, list, verify, export."),
    "reports": ("calltrack.commands.reports", "group", "Which sources and numbers made the phone ring."),
    "privacy": ("calltrack.commands.privacy", "group", "Retention, erase and export by phone number."),
    "sites": ("calltrack.commands.sites", "group", "Websites that show tracking numbers (DNI)."),
    "rules": ("calltrack.commands.rules", "group", "Source rules for website visits."),
    "agi": ("calltrack.commands.agi", "group", "The FastAGI server that routes calls."),
    "ami": ("calltrack.commands.ami", "group", "The AMI listener that records call events."),
    "web": ("calltrack.commands.web", "group", "The web service: DNI script, API, dashboard."),
    "sms": ("calltrack.commands.sms", "group", "Text messages: send, list, threads, opt-outs."),
    "webhooks": ("calltrack.commands.webhooks", "group", "Signed webhooks to an account's receivers (a CRM)."),
    "users": ("calltrack.commands.users", "group", "Dashboard users: roles, accounts, passwords."),
    "conversions": ("calltrack.commands.conversions", "group", "Offline conversion files for ad platforms."),
    "transcripts": ("calltrack.commands.transcripts", "group", "Call transcripts: transcribe, list, show, search."),
    "automations": ("calltrack.commands.automations", "group", "Lead rules: tag, qualify, score calls."),
    "spam": ("calltrack.commands.spam", "group", "Likely spam calls and known spam numbers."),
    "leads": ("calltrack.commands.leads", "group", "Calls and website form leads in one list."),
    "serve": ("calltrack.commands.serve", "command", "Run every long-running service in one process."),
    "doctor": ("calltrack.commands.doctor", "command", "Check a deployment and say what to fix."),
}


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, (module, _, _) in GROUPS.items() if _available(module))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = GROUPS.get(cmd_name)
        if entry is None or not _available(entry[0]):
            return None
        module = importlib.import_module(entry[0])
        command: click.Command = getattr(module, entry[1])
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, GROUPS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        from calltrack.errors import translate

        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:  # turned into one clear line, or re-raised when it is a bug
            message = translate(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    envvar="CALLTRACK_CONFIG",
    type=click.Path(dir_okay=False),
    help="Settings file (default: ./calltrack.toml, then /etc/calltrack/calltrack.toml). Env: CALLTRACK_CONFIG.",
)
@click.option(
    "--database",
    "database_url",
    envvar="CALLTRACK_DATABASE_URL",
    help="Database URL, overriding the settings (sqlite:///path or postgresql://...). Env: CALLTRACK_DATABASE_URL.",
)
@click.version_option(package_name="calltrack")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, database_url: str | None) -> None:
    """Self-hosted call tracking for the Asterisk PBX."""
    ctx.obj = AppContext(config_path=config_path, database_url=database_url)
    ctx.call_on_close(ctx.obj.close)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="calltrack")


if __name__ == "__main__":  # pragma: no cover
    main()
