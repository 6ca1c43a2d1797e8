"""Which marketing source a website visit belongs to.

Rules are per account and tried in a fixed order of kinds, then by priority
(lower first) within a kind:

1. ``param``: a landing-page query parameter, ``utm_source=google`` (value
   compared without case), ``utm_source=*`` or just ``gclid`` (present, any value);
2. ``referrer``: a referring host, ``facebook.com`` (also matches its subdomains);
3. ``referrer_group``: ``search`` or ``social`` (well-known engines and networks);
4. ``default``: every other visit.

A referrer from the landing page's own host is navigation within the site, not
a referral.  The matching itself is pure (:func:`classify`), so the web service
can cache an account's rules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from schema.models import Account, Source, SourceRule
from tracking.accounts import get_account, get_source
from tracking.errors import InvalidInput, NotFound

KINDS = ("param", "referrer", "referrer_group", "default")
GROUPS: dict[str, tuple[str, ...]] = {
    "search": (
        "google.",
        "bing.com",
        "yahoo.",
        "duckduckgo.com",
        "baidu.com",
        "yandex.",
        "ecosia.org",
        "search.brave.com",
        "startpage.com",
        "qwant.com",
        "ask.com",
        "aol.com",
    ),
    "social": (
        "facebook.com",
        "fb.com",
        "instagram.com",
        "t.co",
        "twitter.com",
        "x.com",
        "linkedin.com",
        "lnkd.in",
        "pinterest.",
        "reddit.com",
        "tiktok.com",
        "youtube.com",
        "nextdoor.com",
        "threads.net",
        "snapchat.com",
    ),
}
CLICK_IDS = ("gclid", "gbraid", "wbraid", "msclkid")
UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")

# google.co.uk, yahoo.com.au: second-level labels under a country code
_SECOND_LEVEL = frozenset({"co", "com", "ac", "gov", "org", "net", "ne", "or", "edu"})
_PARAM_KEY = re.compile(r"^[A-Za-z0-9_.\-\[\]]{1,100}$")
_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Rule:
    """A rule as the matcher sees it (no database)."""

    id: int
    kind: str
    pattern: str
    priority: int
    source_id: int


@dataclass(frozen=True)
class Visit:
    """What a page view tells about where the visitor came from."""

    params: dict[str, str]
    landing_host: str
    referrer_host: str

    @property
    def external_referrer(self) -> str:
        """The referring host, or "" for none or the site itself."""
        if not self.referrer_host or self.referrer_host == self.landing_host:
            return ""
        return self.referrer_host


def _host(url: str) -> str:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.lower().rstrip(".")


def read_visit(url: str, referrer: str) -> Visit:
    """The query parameters of *url* (first value wins, keys lower-cased) and both hosts."""
    try:
        query = urlsplit(url).query
    except ValueError:
        query = ""
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(key.lower(), value)
    return Visit(params, _host(url), _host(referrer))


def _host_matches(host: str, pattern: str) -> bool:
    """``pattern`` ending in a dot (``google.``) matches any top-level domain."""
    if pattern.endswith("."):
        labels = host.split(".")
        base = pattern[:-1]
        for i, label in enumerate(labels[:-1]):
            rest = labels[i + 1 :]
            if label == base and (len(rest) == 1 or (len(rest) == 2 and rest[0] in _SECOND_LEVEL)):
                return True
        return False
    return host == pattern or host.endswith("." + pattern)


def in_group(host: str, group: str) -> bool:
    return any(_host_matches(host, pattern) for pattern in GROUPS.get(group, ()))


def _matches(rule: Rule, visit: Visit) -> bool:
    if rule.kind == "param":
        key, sep, want = rule.pattern.partition("=")
        value = visit.params.get(key.lower())
        if value is None or value == "":
            return False
        return not sep or want == "*" or value.lower() == want.lower()
    host = visit.external_referrer
    if rule.kind == "referrer":
        return bool(host) and _host_matches(host, rule.pattern)
    if rule.kind == "referrer_group":
        return bool(host) and in_group(host, rule.pattern)
    return rule.kind == "default"


def classify(rules: Sequence[Rule], visit: Visit) -> Rule | None:
    """The first matching rule in precedence order, or None when none matches."""
    order = {kind: i for i, kind in enumerate(KINDS)}
    for rule in sorted(rules, key=lambda r: (order[r.kind], r.priority, r.id)):
        if _matches(rule, visit):
            return rule
    return None


def has_campaign_signal(visit: Visit) -> bool:
    """Whether the visit names a source of its own (tagged link, click id or outside referrer)."""
    return bool(visit.external_referrer) or any(visit.params.get(k) for k in (*UTM_KEYS, *CLICK_IDS))


# --- storage ------------------------------------------------------------------------


def validate_pattern(kind: str, pattern: str) -> str:
    """The pattern in its stored form, or InvalidInput saying what is wrong."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown rule kind {kind!r} (use one of: {', '.join(KINDS)})")
    pattern = (pattern or "").strip()
    if kind == "default":
        if pattern:
            raise InvalidInput("a default rule takes no pattern")
        return ""
    if not pattern:
        raise InvalidInput(f"a {kind} rule needs a pattern")
    if kind == "param":
        key, sep, value = pattern.partition("=")
        if not _PARAM_KEY.match(key):
            raise InvalidInput(f"invalid parameter name {key!r} in {pattern!r} (expected NAME or NAME=VALUE)")
        if sep and (not value or any(ord(ch) < 32 for ch in value) or len(value) > 300):
            raise InvalidInput(f"invalid parameter value in {pattern!r} (expected NAME=VALUE or NAME=*)")
        return f"{key.lower()}={value}" if sep else key.lower()
    if kind == "referrer":
        host = pattern.lower()
        if "://" in host:
            host = _host(host)
        host = host.rstrip(".").removeprefix("www.")
        if not _HOST.match(host):
            raise InvalidInput(f"invalid referrer host {pattern!r} (expected a host such as facebook.com)")
        return host
    group = pattern.lower()
    if group not in GROUPS:
        raise InvalidInput(f"unknown referrer group {pattern!r} (use one of: {', '.join(GROUPS)})")
    return group


def add_rule(
    session: Session, account_name: str, kind: str, pattern: str, source_name: str, priority: int = 100
) -> SourceRule:
    account = get_account(session, account_name)
    stored = validate_pattern(kind, pattern)
    if not 0 <= priority <= 1_000_000:
        raise InvalidInput(f"invalid priority {priority}: between 0 and 1000000")
    source = get_source(session, account, source_name)
    if kind == "default":
        existing = session.scalar(
            select(SourceRule.id).where(SourceRule.account_id == account.id, SourceRule.kind == "default")
        )
        if existing is not None:
            raise InvalidInput(f"account {account.name!r} already has a default rule (#{existing}); remove it first")
    rule = SourceRule(account_id=account.id, source_id=source.id, kind=kind, pattern=stored, priority=priority)
    session.add(rule)
    session.flush()
    return rule


def list_rules(session: Session, account_name: str | None = None) -> list[dict[str, Any]]:
    query = (
        select(SourceRule, Account.name, Source.name)
        .join(Account, Account.id == SourceRule.account_id)
        .join(Source, Source.id == SourceRule.source_id)
    )
    if account_name:
        query = query.where(SourceRule.account_id == get_account(session, account_name).id)
    order = {kind: i for i, kind in enumerate(KINDS)}
    rows: list[dict[str, Any]] = [
        {
            "id": rule.id,
            "account": account,
            "kind": rule.kind,
            "pattern": rule.pattern,
            "priority": rule.priority,
            "source": source,
        }
        for rule, account, source in session.execute(query)
    ]
    rows.sort(key=lambda r: (r["account"], order[r["kind"]], r["priority"], r["id"]))
    return rows


def remove_rule(session: Session, rule_id: int, account_name: str | None = None) -> None:
    rule = session.get(SourceRule, rule_id)
    if rule is None or (account_name and rule.account_id != get_account(session, account_name).id):
        raise NotFound(f"no source rule #{rule_id} (see `calltrack rules list`)")
    session.delete(rule)
    session.flush()


def load_rules(session: Session, account_id: int) -> list[Rule]:
    return [
        Rule(r.id, r.kind, r.pattern, r.priority, r.source_id)
        for r in session.scalars(select(SourceRule).where(SourceRule.account_id == account_id))
    ]
