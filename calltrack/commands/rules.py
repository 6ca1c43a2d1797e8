"""`calltrack rules`: how a website visit picks its source."""

from __future__ import annotations

import click

from calltrack.context import AppContext, pass_app
from calltrack.output import emit, format_option


@click.group("rules")
def group() -> None:
    """Source rules for website visits.

    Tried in this order: landing-page parameter rules (param), then a specific
    referring host (referrer), then referrer groups (search, social), then the
    default.  Within a kind, lower --priority first.
    """


@group.command("add")
@click.argument("kind", type=click.Choice(["param", "referrer", "referrer_group", "default"]))
@click.argument("pattern", required=False, default="")
@click.option("--account", required=True, help="The account's name.")
@click.option("--source", required=True, help="The source a matching visit gets.")
@click.option("--priority", type=int, default=100, show_default=True, help="Lower runs first within a kind.")
@pass_app
def add(app: AppContext, kind: str, pattern: str, account: str, source: str, priority: int) -> None:
    """Add a rule.

    \b
    Examples:
      calltrack rules add param utm_source=google --account Acme --source "Google Ads"
      calltrack rules add param gclid --account Acme --source "Google Ads"
      calltrack rules add referrer yelp.com --account Acme --source Yelp
      calltrack rules add referrer_group search --account Acme --source Organic
      calltrack rules add default --account Acme --source Website
    """
    from tracking.source_rules import add_rule

    with app.session() as session:
        rule = add_rule(session, account, kind, pattern, source, priority)
        rule_id, stored = rule.id, rule.pattern
    shown = f" {stored}" if stored else ""
    click.echo(f"added rule #{rule_id}: {kind}{shown} -> {source}")


@group.command("list")
@click.option("--account", help="Only this account's rules.")
@format_option
@pass_app
def list_(app: AppContext, account: str | None, fmt: str) -> None:
    """List rules in the order they are tried."""
    from tracking.source_rules import list_rules

    with app.session() as session:
        rows = list_rules(session, account)
    emit(rows, fmt, ["id", "account", "kind", "pattern", "priority", "source"])


@group.command("remove")
@click.argument("rule_id", type=int)
@click.option("--account", help="Refuse unless the rule belongs to this account.")
@pass_app
def remove(app: AppContext, rule_id: int, account: str | None) -> None:
    """Remove a rule by its id (see `rules list`)."""
    from tracking.source_rules import remove_rule

    with app.session() as session:
        remove_rule(session, rule_id, account)
    click.echo(f"removed rule #{rule_id}")
