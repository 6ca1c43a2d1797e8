"""The DNI API's session keys and visitor ids (web.dni.new_token)."""

from __future__ import annotations

import re

import pytest

from web import dni


def test_tokens_sort_in_the_order_they_were_made_and_keep_128_random_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """New rows go to the end of the key and visitor indexes (bench/session_keys_bench.py: a
    quarter of the time per new session on SQLite with 300,000 sessions stored), and a token
    is still unguessable: 128 random bits after the time."""
    clock = iter(range(1_764_000_000_000_000_000, 1_764_000_000_000_000_000 + 10**12, 7 * 10**8))
    monkeypatch.setattr(dni.time, "time_ns", lambda: next(clock))
    made = [dni.new_token() for _ in range(500)]
    assert made == sorted(made), "a later token sorts after an earlier one"
    assert len(set(made)) == len(made)
    for token in made:
        # 12 hex digits of milliseconds, then 16 random bytes in URL-safe base64 (22 characters)
        assert re.fullmatch(r"[0-9a-f]{12}[A-Za-z0-9_-]{22}", token), token
    # made within one millisecond, tokens differ by their random part alone
    monkeypatch.setattr(dni.time, "time_ns", lambda: 1_764_000_000_000_000_000)
    same_ms = {dni.new_token()[12:] for _ in range(1000)}
    assert len(same_ms) == 1000
    assert len(dni.new_token()) <= 64  # visitor_sessions.key and visitor_id are String(64)
