"""Lead rules ("automations"): per-account conditions on a call and what to do when they hold.

A rule is two short texts a PBX administrator types:

condition (``--when``), clauses joined by ``and`` / ``or`` (``and`` binds first), ``not`` and
parentheses::

    caller said "appointment"        agent said "quote"        said "water heater"
    talk_time > 60                   talk_time >= 2m           (s, m, h; plain numbers are seconds)
    disposition = answered           (answered, missed, busy, abandoned, failed, blocked)
    source = "Google Ads"            first_time                after_hours
    landing_page contains "/pricing"
    always

action (``--then``), one or more joined by commas::

    tag "booked"      qualified      not_lead      spam      score +10      score -5      value 150

``said`` matches whole words, ignoring case and punctuation; on a mono recording (one channel for
both) ``caller said`` and ``agent said`` read the one transcript.  Rules run when a call ends and
again when its transcript arrives (and ``automations apply`` re-runs them over past calls): each run
recomputes the call's outcome from every enabled rule of its account, in the order they were added,
so running twice changes nothing.  ``qualified`` / ``not_lead``: the last rule that says wins;
``score``: the sum; ``value``: the last one set; tags of rules are replaced, tags added by hand kept.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from config import SpamSettings
from schema.models import Call as CallRow
from schema.models import (
    CallOutcome,
    CallTag,
    LeadRule,
    Source,
    Transcript,
    TranscriptSegment,
    VisitorSession,
    utcnow,
)
from tracking.errors import InvalidInput

DISPOSITIONS = ("answered", "missed", "busy", "abandoned", "failed", "blocked")
CONDITIONS = (
    'caller said "..."',
    'agent said "..."',
    'said "..."',
    "talk_time > N",
    "disposition = D",
    'source = "..."',
    "first_time",
    "after_hours",
    'landing_page contains "..."',
    "always",
)
ACTIONS = ('tag "..."', "qualified", "not_lead", "spam", "score +N", "value N")

_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>>=|<=|!=|=|>|<|\(|\)|,)|(?P<word>[^\s"(),=<>!]+))')
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h)?$")


class RuleError(InvalidInput):
    """A rule that does not parse; the message names the bad part."""


@dataclass(frozen=True)
class Tok:
    kind: str  # str, op, word
    text: str
    pos: int


def _tokens(text: str) -> list[Tok]:
    out = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            bad = text[pos:].strip()
            raise RuleError(f"cannot read {bad[:20]!r} at character {pos + 1}")
        kind = m.lastgroup or "word"
        value = m.group(kind)
        if kind == "str":
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out.append(Tok(kind, value, m.start(kind) + 1))
        pos = m.end()
    return out


# --- conditions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What a rule can know about a call."""

    talk_time: float | None = None
    disposition: str | None = None
    source: str | None = None
    first_time: bool | None = None
    after_hours: bool | None = None
    landing_page: str | None = None
    caller_text: str = ""
    agent_text: str = ""
    #: one channel for both (mono): either speaker's phrase is looked for in it
    mono_text: str = ""


def normalize(text: str) -> str:
    return " " + " ".join(re.findall(r"[\w']+", text.lower())) + " "


def _says(haystack: str, phrase: str) -> bool:
    needle = normalize(phrase)
    return needle.strip() != "" and needle in normalize(haystack)


@dataclass(frozen=True)
class Clause:
    name: str
    op: str = ""
    value: Any = None

    def holds(self, f: Facts) -> bool:
        if self.name == "always":
            return True
        if self.name == "said":
            who = self.op
            texts = {"caller": [f.caller_text, f.mono_text], "agent": [f.agent_text, f.mono_text]}.get(
                who, [f.caller_text, f.agent_text, f.mono_text]
            )
            return any(_says(t, self.value) for t in texts)
        if self.name == "talk_time":
            if f.talk_time is None:
                return False
            a, b = f.talk_time, float(self.value)
            return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b, "=": a == b, "!=": a != b}[self.op]
        if self.name == "disposition":
            return (f.disposition == self.value) == (self.op == "=")
        if self.name == "source":
            return ((f.source or "").lower() == self.value.lower()) == (self.op == "=")
        if self.name == "first_time":
            return bool(f.first_time)
        if self.name == "after_hours":
            return bool(f.after_hours)
        if self.name == "landing_page":
            return self.value.lower() in (f.landing_page or "").lower()
        raise AssertionError(self.name)


@dataclass(frozen=True)
class Not:
    inner: Any

    def holds(self, f: Facts) -> bool:
        return not self.inner.holds(f)


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Any, ...]

    def holds(self, f: Facts) -> bool:
        return all(p.holds(f) for p in self.parts)


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Any, ...]

    def holds(self, f: Facts) -> bool:
        return any(p.holds(f) for p in self.parts)


class _Parser:
    def __init__(self, text: str) -> None:
        if not text.strip():
            raise RuleError("the condition is empty (use `always` for every call)")
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> Tok:
        tok = self.peek()
        if tok is None:
            raise RuleError("the condition ends too early")
        self.i += 1
        return tok

    def word(self, tok: Tok | None) -> str:
        return tok.text.lower() if tok is not None and tok.kind == "word" else ""

    def parse(self) -> Any:
        node = self.expr()
        tok = self.peek()
        if tok is not None:
            raise RuleError(f"unexpected {tok.text!r} at character {tok.pos} (join clauses with `and` or `or`)")
        return node

    def expr(self) -> Any:
        parts = [self.conj()]
        while self.word(self.peek()) == "or":
            self.take()
            parts.append(self.conj())
        return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))

    def conj(self) -> Any:
        parts = [self.unary()]
        while self.word(self.peek()) == "and":
            self.take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def unary(self) -> Any:
        tok = self.peek()
        if self.word(tok) == "not":
            self.take()
            return Not(self.unary())
        if tok is not None and tok.kind == "op" and tok.text == "(":
            self.take()
            node = self.expr()
            close = self.take()
            if close.text != ")":
                raise RuleError(f"expected ')' at character {close.pos}, found {close.text!r}")
            return node
        return self.clause()

    def string(self, what: str) -> str:
        tok = self.take()
        if tok.kind == "op":
            raise RuleError(f"{what} needs a value, found {tok.text!r} at character {tok.pos}")
        if not tok.text.strip():
            raise RuleError(f"{what} needs a non-empty value (character {tok.pos})")
        return tok.text

    def clause(self) -> Clause:
        tok = self.take()
        name = self.word(tok)
        if name in ("caller", "agent"):
            nxt = self.take()
            if self.word(nxt) != "said":
                raise RuleError(f"expected `said` after {name!r} at character {nxt.pos}, found {nxt.text!r}")
            return Clause("said", name, self.string(f"{name} said"))
        if name == "said":
            return Clause("said", "either", self.string("said"))
        if name in ("talk_time", "talktime", "talk"):
            op = self.take()
            if op.kind != "op" or op.text not in (">", ">=", "<", "<=", "=", "!="):
                raise RuleError(
                    f"talk_time needs a comparison (> >= < <= = !=) at character {op.pos}, found {op.text!r}"
                )
            value = self.take()
            m = _DURATION.match(value.text.lower())
            if not m:
                raise RuleError(
                    f"talk_time: {value.text!r} at character {value.pos} is not a duration (60, 90s, 2m, 1h)"
                )
            seconds = float(m.group(1)) * {"s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]
            return Clause("talk_time", op.text, seconds)
        if name in ("disposition", "source"):
            op = self.take()
            if op.text not in ("=", "!="):
                raise RuleError(f"{name} needs = or != at character {op.pos}, found {op.text!r}")
            given = self.string(name)
            if name == "disposition":
                given = given.lower()
                if given not in DISPOSITIONS:
                    raise RuleError(f"disposition: {given!r} is not one of {', '.join(DISPOSITIONS)}")
            return Clause(name, op.text, given)
        if name in ("first_time", "after_hours", "always"):
            return Clause(name)
        if name == "landing_page":
            op = self.take()
            if self.word(op) != "contains":
                raise RuleError(f"landing_page needs `contains` at character {op.pos}, found {op.text!r}")
            return Clause("landing_page", "contains", self.string("landing_page contains"))
        raise RuleError(f"unknown condition {tok.text!r} at character {tok.pos} (known: {'; '.join(CONDITIONS)})")


def parse_condition(text: str) -> Any:
    return _Parser(text).parse()


# --- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    kind: str  # tag, lead, spam, score, value
    value: Any = None


def parse_actions(text: str) -> list[Action]:
    if not text.strip():
        raise RuleError(f"the action is empty (one or more of: {', '.join(ACTIONS)})")
    toks = _tokens(text)
    actions: list[Action] = []
    i = 0

    def need(what: str) -> Tok:
        nonlocal i
        if i >= len(toks):
            raise RuleError(f"{what} needs a value")
        tok = toks[i]
        i += 1
        return tok

    while i < len(toks):
        tok = toks[i]
        i += 1
        name = tok.text.lower() if tok.kind == "word" else ""
        if name == "tag":
            value = need("tag")
            if value.kind == "op" or not value.text.strip():
                raise RuleError(f"tag needs a name at character {value.pos}")
            if len(value.text) > 100:
                raise RuleError("a tag is at most 100 characters")
            actions.append(Action("tag", value.text.strip()))
        elif name in ("qualified", "qualify"):
            actions.append(Action("lead", "qualified"))
        elif name in ("not_lead", "not-lead", "notlead"):
            actions.append(Action("lead", "not-lead"))
        elif name == "spam":
            actions.append(Action("spam", True))
        elif name in ("score", "value"):
            value = need(name)
            try:
                number = float(value.text)
            except ValueError:
                raise RuleError(f"{name}: {value.text!r} at character {value.pos} is not a number") from None
            if name == "score" and number != int(number):
                raise RuleError(f"score: {value.text!r} at character {value.pos} is not a whole number")
            actions.append(Action(name, int(number) if name == "score" else number))
        else:
            raise RuleError(f"unknown action {tok.text!r} at character {tok.pos} (known: {', '.join(ACTIONS)})")
        if i < len(toks):
            sep = toks[i]
            if not (sep.kind == "op" and sep.text == ",") and sep.text.lower() != "and":
                raise RuleError(f"expected ',' between actions at character {sep.pos}, found {sep.text!r}")
            i += 1
            if i >= len(toks):
                raise RuleError("an action is missing after the last ','")
    return actions


@dataclass(frozen=True)
class Rule:
    id: int | None
    name: str
    condition: Any
    actions: tuple[Action, ...]


def compile_rule(name: str, condition: str, action: str, rule_id: int | None = None) -> Rule:
    try:
        cond = parse_condition(condition)
    except RuleError as exc:
        raise RuleError(f"condition: {exc}") from None
    try:
        acts = parse_actions(action)
    except RuleError as exc:
        raise RuleError(f"action: {exc}") from None
    return Rule(rule_id, name, cond, tuple(acts))


@dataclass
class Outcome:
    lead: str | None = None
    score: int = 0
    value: float | None = None
    spam_rules: list[str] = field(default_factory=list)
    #: tag -> the rule that set it
    tags: dict[str, int | None] = field(default_factory=dict)
    matched: list[str] = field(default_factory=list)


def evaluate(rules: Sequence[Rule], facts: Facts) -> Outcome:
    """What *rules* make of a call, pure: the outcome from every rule whose condition holds."""
    out = Outcome()
    for rule in rules:
        if not rule.condition.holds(facts):
            continue
        out.matched.append(rule.name)
        for a in rule.actions:
            if a.kind == "tag":
                out.tags.setdefault(a.value, rule.id)
            elif a.kind == "lead":
                out.lead = a.value
            elif a.kind == "spam":
                out.spam_rules.append(rule.name)
            elif a.kind == "score":
                out.score += a.value
            elif a.kind == "value":
                out.value = a.value
    return out


# --- the database side ---------------------------------------------------------------------------


def account_rules(session: Session, account_id: int) -> list[Rule]:
    rows = session.scalars(
        select(LeadRule).where(LeadRule.account_id == account_id, LeadRule.enabled.is_(True)).order_by(LeadRule.id)
    )
    return [compile_rule(r.name, r.condition, r.action, r.id) for r in rows]


def facts_of(session: Session, call: CallRow) -> Facts:
    source = session.scalar(select(Source.name).where(Source.id == call.source_id)) if call.source_id else None
    landing = (
        session.scalar(select(VisitorSession.landing_url).where(VisitorSession.id == call.visitor_session_id))
        if call.visitor_session_id
        else None
    )
    texts: dict[str, list[str]] = {"caller": [], "agent": [], "mono": []}
    rows = session.execute(
        select(TranscriptSegment.speaker, TranscriptSegment.text)
        .join(Transcript, Transcript.id == TranscriptSegment.transcript_id)
        .where(Transcript.call_id == call.id, Transcript.state == "done")
        .order_by(TranscriptSegment.start)
    )
    for speaker, text in rows:
        texts.setdefault(speaker, []).append(text)
    return Facts(
        talk_time=call.talk_time,
        disposition=call.disposition,
        source=source,
        first_time=call.first_time,
        after_hours=call.after_hours,
        landing_page=landing,
        caller_text=" ".join(texts["caller"]),
        agent_text=" ".join(texts["agent"]),
        mono_text=" ".join(texts["mono"]),
    )


def outcome_row(session: Session, call_id: int) -> CallOutcome:
    row = session.get(CallOutcome, call_id)
    if row is None:
        row = CallOutcome(call_id=call_id, score=0, spam=False)
        session.add(row)
    return row


def apply_to_call(
    session: Session,
    call_id: int,
    now: dt.datetime | None = None,
    *,
    also: Mapping[str, Mapping[str, Any]] | None = None,
    spam_settings: SpamSettings | None = None,
) -> Outcome | None:
    """Run the call's account's rules on it and store the outcome; None for a call of no account.

    The spam signals are checked again with *spam_settings* (``[spam]``; the defaults when None).

    When the outcome (lead, score, value, spam, tags) changed, a ``call.updated`` names what did,
    together with *also* (what else changed in this transaction: a transcript); a run that
    changes nothing announces nothing.
    """
    from tracking import call_updates, spam  # the spam signals share the outcome row

    call = session.get(CallRow, call_id)
    if call is None or call.account_id is None:
        return None
    now = now or utcnow()
    out = evaluate(account_rules(session, call.account_id), facts_of(session, call))
    before = call_updates.rules_state(session, call_id, session.get(CallOutcome, call_id))
    row = outcome_row(session, call_id)
    row.lead, row.score, row.value, row.rules_at = out.lead, out.score, out.value, now
    session.execute(delete(CallTag).where(CallTag.call_id == call_id, CallTag.rule_id.is_not(None)))
    kept = set(session.scalars(select(CallTag.tag).where(CallTag.call_id == call_id)))
    for tag, rule_id in out.tags.items():
        if tag not in kept:
            session.add(CallTag(call_id=call_id, tag=tag, rule_id=rule_id, created_at=now))
    spam.refresh(
        session,
        call,
        row,
        rule_reasons=[f"rule {name!r}" for name in out.spam_rules],
        now=now,
        thresholds=spam_settings,
    )
    session.flush()
    after = call_updates.rules_state(session, call_id, row)
    call_updates.announce(session, call, {**(also or {}), "rules": call_updates.changed(before, after)})
    return out


def add_rule(session: Session, account_id: int, name: str, condition: str, action: str) -> LeadRule:
    from tracking.errors import Conflict

    if not name.strip():
        raise RuleError("a rule needs a name")
    compile_rule(name, condition, action)
    exists = session.scalar(select(LeadRule.id).where(LeadRule.account_id == account_id, LeadRule.name == name))
    if exists is not None:
        raise Conflict(f"the account has a rule named {name!r} already")
    rule = LeadRule(account_id=account_id, name=name, condition=condition.strip(), action=action.strip(), enabled=True)
    session.add(rule)
    session.flush()
    return rule


def calls_since(session: Session, account_id: int | None, since: dt.datetime | None) -> list[int]:
    query = select(CallRow.id).where(CallRow.account_id.is_not(None), CallRow.ended_at.is_not(None))
    if account_id is not None:
        query = query.where(CallRow.account_id == account_id)
    if since is not None:
        query = query.where(CallRow.started_at >= since)
    return list(session.scalars(query.order_by(CallRow.id)))


def unruled_calls(session: Session, limit: int = 500) -> list[int]:
    """Ended calls of an account that no rules run has seen yet (the sweep after a call ends)."""
    query = (
        select(CallRow.id)
        .outerjoin(CallOutcome, CallOutcome.call_id == CallRow.id)
        .where(CallRow.account_id.is_not(None), CallRow.ended_at.is_not(None), CallOutcome.rules_at.is_(None))
        .order_by(CallRow.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def sweep(session: Session, limit: int = 500, spam_settings: SpamSettings | None = None) -> int:
    """Apply the rules to every call that ended since the last sweep; how many."""
    ids = unruled_calls(session, limit)
    for call_id in ids:
        apply_to_call(session, call_id, spam_settings=spam_settings)
    return len(ids)
