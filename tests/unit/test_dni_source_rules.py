"""Source rule matching and pattern validation (pure, no database)."""

from __future__ import annotations

import pytest

from tracking.errors import InvalidInput
from tracking.source_rules import Rule, classify, has_campaign_signal, in_group, read_visit, validate_pattern

RULES = [
    Rule(1, "default", "", 100, 10),
    Rule(2, "referrer_group", "search", 100, 20),
    Rule(3, "referrer_group", "social", 100, 30),
    Rule(4, "referrer", "facebook.com", 100, 40),
    Rule(5, "param", "utm_source=google", 100, 50),
    Rule(6, "param", "gclid", 100, 50),
    Rule(7, "param", "utm_medium=email", 5, 60),
    Rule(8, "param", "utm_campaign=*", 200, 70),
]


def source(url: str, referrer: str = "", rules: list[Rule] = RULES) -> int | None:
    rule = classify(rules, read_visit(url, referrer))
    return rule.source_id if rule else None


@pytest.mark.parametrize(
    ("url", "referrer", "expected"),
    [
        ("https://a.test/?utm_source=google", "", 50),
        ("https://a.test/?UTM_SOURCE=Google", "", 50),  # keys and values compared without case
        ("https://a.test/?gclid=abc", "https://www.facebook.com/", 50),  # parameters before referrers
        ("https://a.test/?gclid=", "", 10),  # an empty click id is no click id
        ("https://a.test/?utm_source=google&utm_medium=email", "", 60),  # priority within a kind
        ("https://a.test/?utm_campaign=spring", "", 70),
        ("https://a.test/", "https://m.facebook.com/x", 40),  # a specific referrer before its group
        ("https://a.test/", "https://www.instagram.com/", 30),
        ("https://a.test/", "https://www.bing.com/search?q=x", 20),
        ("https://a.test/", "https://www.google.com.au/", 20),
        ("https://a.test/", "https://google.attacker.example/", 10),
        ("https://a.test/", "https://notfacebook.com/", 10),
        ("https://a.test/page", "https://a.test/", 10),  # internal navigation is no referral
        ("https://a.test/", "", 10),
        ("not a url", "also not", 10),
    ],
)
def test_precedence(url: str, referrer: str, expected: int) -> None:
    assert source(url, referrer) == expected


def test_no_rule_no_source() -> None:
    assert source("https://a.test/", "https://www.bing.com/", rules=[RULES[3]]) is None


def test_first_value_of_a_repeated_parameter_counts() -> None:
    visit = read_visit("https://a.test/?utm_source=fb&utm_source=google", "")
    assert visit.params["utm_source"] == "fb"


def test_groups() -> None:
    assert in_group("duckduckgo.com", "search") and in_group("www.google.de", "search")
    assert in_group("t.co", "social") and not in_group("microsoft.co", "social")
    assert not in_group("google", "search")


def test_campaign_signal() -> None:
    assert has_campaign_signal(read_visit("https://a.test/?wbraid=x", ""))
    assert has_campaign_signal(read_visit("https://a.test/", "https://bing.com/"))
    assert not has_campaign_signal(read_visit("https://a.test/b", "https://a.test/a"))
    assert not has_campaign_signal(read_visit("https://a.test/?page=2", ""))


@pytest.mark.parametrize(
    ("kind", "pattern", "stored"),
    [
        ("param", "UTM_Source=Google", "utm_source=Google"),
        ("param", "gclid", "gclid"),
        ("param", "utm_campaign=*", "utm_campaign=*"),
        ("referrer", "https://www.Facebook.com/page", "facebook.com"),
        ("referrer", "yelp.com.", "yelp.com"),
        ("referrer_group", "Social", "social"),
        ("default", "", ""),
    ],
)
def test_patterns_stored_in_canonical_form(kind: str, pattern: str, stored: str) -> None:
    assert validate_pattern(kind, pattern) == stored


@pytest.mark.parametrize(
    ("kind", "pattern", "words"),
    [
        ("utm", "x", "unknown rule kind"),
        ("param", "", "needs a pattern"),
        ("param", "utm source=x", "invalid parameter name"),
        ("param", "utm_source=", "invalid parameter value"),
        ("param", "utm_source=a\nb", "invalid parameter value"),
        ("referrer", "face book.com", "invalid referrer host"),
        ("referrer", "-bad-.com", "invalid referrer host"),
        ("referrer_group", "video", "unknown referrer group"),
        ("default", "x", "takes no pattern"),
    ],
)
def test_bad_patterns(kind: str, pattern: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        validate_pattern(kind, pattern)


def test_peak_demand_counts_overlapping_spans() -> None:
    import datetime as dt

    from tracking.leases import peak_demand

    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    m = dt.timedelta(minutes=1)
    spans = [(t, t + 30 * m), (t + 10 * m, t + 40 * m), (t + 30 * m, t + 60 * m), (t + 35 * m, t + 36 * m)]
    assert peak_demand(spans) == 3  # at minute 35; a span ending at 30 frees its number for one starting at 30
    assert peak_demand([]) == 0
