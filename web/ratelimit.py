"""Requests allowed per client and minute (a token bucket per client address, in memory)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """*per_minute* requests a minute per key, with bursts of up to *per_minute*.

    Idle buckets are dropped so memory stays bounded by the clients of the last
    minute or so.  Each worker process has its own limiter.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        if per_minute <= 0:
            raise ValueError("rate limit must be positive")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._last_sweep = clock()

    def allow(self, key: str) -> float:
        """0.0 when the request may proceed, else the seconds to wait before retrying."""
        now = self.clock()
        with self._lock:
            if now - self._last_sweep > 60 or len(self._buckets) >= self.max_keys:
                self._sweep(now)
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _sweep(self, now: float) -> None:
        full = self.capacity / self.rate  # seconds for an empty bucket to refill
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}
        if len(self._buckets) >= self.max_keys:  # a flood of distinct keys: forget the oldest half
            keep = sorted(self._buckets.items(), key=lambda kv: kv[1][1])[len(self._buckets) // 2 :]
            self._buckets = dict(keep)
        self._last_sweep = now
