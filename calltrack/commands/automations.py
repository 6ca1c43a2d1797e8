"""`calltrack automations`: lead rules per account (tags, qualified leads, score, value, spam)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from calltrack.context import AppContext, pass_app
from calltrack.options import TimeType
from calltrack.output import emit, format_option

SYNTAX = """Conditions: caller said "..." | agent said "..." | said "..." | talk_time > 60 (or 2m) |
disposition = answered | source = "Google Ads" | first_time | after_hours |
landing_page contains "/pricing" | always; joined by and / or, with not and ( ).
Actions, comma-separated: tag "booked" | qualified | not_lead | spam | score +10 | value 150."""


@click.group("automations")
def group() -> None:
    """Lead rules: tag, qualify, score and value calls from what was said and how the call went."""


def _outcome_text(out: Any) -> str:
    parts = []
    if out.lead:
        parts.append(out.lead)
    if out.score:
        parts.append(f"score {out.score:+d}")
    if out.value is not None:
        parts.append(f"value {out.value:g}")
    if out.tags:
        parts.append("tags " + ", ".join(sorted(out.tags)))
    if out.spam_rules:
        parts.append("spam")
    return "; ".join(parts) or "nothing"


@group.command("add", epilog=SYNTAX)
@click.argument("name")
@click.option("--account", required=True, help="The account the rule belongs to.")
@click.option(
    "--when", "condition", required=True, help="The condition, e.g. 'caller said \"appointment\" and talk_time > 30'."
)
@click.option("--then", "action", required=True, help="What to do, e.g. 'tag \"booked\", qualified, value 150'.")
@pass_app
def add(app: AppContext, name: str, account: str, condition: str, action: str) -> None:
    """Add a rule NAME (checked now: a mistake is named, and nothing is added)."""
    from tracking.accounts import get_account
    from tracking.lead_rules import add_rule

    with app.session() as session:
        rule = add_rule(session, get_account(session, account).id, name, condition, action)
        click.echo(
            f"rule {rule.id} {name!r} added to {account}; `automations apply --account {account!r}` runs it on past calls"
        )


@group.command("list")
@click.option("--account", help="Only this account's rules.")
@format_option
@pass_app
def list_(app: AppContext, account: str | None, fmt: str) -> None:
    """Rules in the order they run."""
    from sqlalchemy import select

    from schema.models import Account, LeadRule
    from tracking.accounts import get_account

    with app.session() as session:
        query = select(LeadRule, Account.name).join(Account, Account.id == LeadRule.account_id).order_by(LeadRule.id)
        if account:
            query = query.where(LeadRule.account_id == get_account(session, account).id)
        rows = [
            {"id": r.id, "account": acc, "name": r.name, "when": r.condition, "then": r.action}
            for r, acc in session.execute(query)
        ]
    emit(rows, fmt, ["id", "account", "name", "when", "then"])


@group.command("remove")
@click.argument("rule_id", type=int)
@pass_app
def remove(app: AppContext, rule_id: int) -> None:
    """Remove a rule and the tags it set (the lead, score and value it gave are recomputed by `apply`)."""
    from sqlalchemy import delete

    from schema.models import CallTag, LeadRule
    from tracking.errors import NotFound

    with app.session() as session:
        rule = session.get(LeadRule, rule_id)
        if rule is None:
            raise NotFound(f"no rule {rule_id}")
        session.execute(delete(CallTag).where(CallTag.rule_id == rule_id))
        session.delete(rule)
    click.echo(f"rule {rule_id} removed")


@group.command("test", epilog=SYNTAX)
@click.argument("call_id", type=int)
@click.option("--rule", "rule_id", type=int, help="A rule's id (default: every rule of the call's account).")
@click.option("--when", "condition", help="A condition to try instead (with --then).")
@click.option("--then", "action", default='tag "test"', show_default=True, help="The action to try with --when.")
@pass_app
def test(app: AppContext, call_id: int, rule_id: int | None, condition: str | None, action: str) -> None:
    """What the rules would do to CALL_ID, without changing it."""
    from schema.models import Call, LeadRule
    from tracking.errors import NotFound
    from tracking.lead_rules import account_rules, compile_rule, evaluate, facts_of

    with app.session() as session:
        call = session.get(Call, call_id)
        if call is None:
            raise NotFound(f"no call {call_id}")
        if condition is not None:
            rules = [compile_rule("(given)", condition, action)]
        elif rule_id is not None:
            row = session.get(LeadRule, rule_id)
            if row is None:
                raise NotFound(f"no rule {rule_id}")
            rules = [compile_rule(row.name, row.condition, row.action, row.id)]
        else:
            rules = account_rules(session, call.account_id) if call.account_id else []
        facts = facts_of(session, call)
        for rule in rules:
            verdict = "matches" if rule.condition.holds(facts) else "does not match"
            click.echo(f"{rule.name}: {verdict}")
        click.echo(f"outcome: {_outcome_text(evaluate(rules, facts))}")


@group.command("apply")
@click.option("--account", help="Only this account's calls.")
@click.option("--since", type=TimeType(), help="Only calls started since: 2026-11-01, 7d or 12h.")
@pass_app
def apply(app: AppContext, account: str | None, since: dt.datetime | None) -> None:
    """Run the rules again over past calls (their rule tags, lead, score and value are recomputed)."""
    from tracking.accounts import get_account
    from tracking.lead_rules import apply_to_call, calls_since

    with app.session() as session:
        account_id = get_account(session, account).id if account else None
        ids = calls_since(session, account_id, since)
        for call_id in ids:
            apply_to_call(session, call_id, spam_settings=app.settings.spam)
    click.echo(f"rules applied to {len(ids)} call{'s' if len(ids) != 1 else ''}")
