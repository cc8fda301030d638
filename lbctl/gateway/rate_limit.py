"""Rate limiting: a token bucket per key, behind a small interface.

``RateLimiter.allow(key, now) -> Decision`` is all the proxy calls, with ``now`` from an
injected clock, so tests step time by hand and a shared store (Redis, say) can replace the
in-process ``TokenBuckets`` later without touching the proxy.

Memory stays bounded under many distinct keys: buckets are kept in least-recently-used
order, and a bucket untouched for ``burst / rate`` seconds is full again, exactly like a new
one, so it is dropped without changing any decision. If more than ``max_keys`` keys are
active inside that window, the least recently used bucket is dropped anyway (that key
starts again from a full bucket): the bound wins over exactness.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int              # the bucket size (burst)
    remaining: int          # whole tokens left after this request
    reset: float            # seconds until the bucket is full again
    retry_after: float      # refused: seconds until one token is available; else 0

    def headers(self) -> list[tuple[bytes, bytes]]:
        """RateLimit-* (draft-ietf-httpapi-ratelimit-headers), plus Retry-After when refused."""
        out = [(b"RateLimit-Limit", b"%d" % self.limit),
               (b"RateLimit-Remaining", b"%d" % self.remaining),
               (b"RateLimit-Reset", b"%d" % math.ceil(self.reset))]
        if not self.allowed:
            out.append((b"Retry-After", b"%d" % max(1, math.ceil(self.retry_after))))
        return out


class RateLimiter(Protocol):
    def allow(self, key: str, now: float) -> Decision: ...


class TokenBuckets:
    """In-process token buckets: ``rate`` tokens per second, at most ``burst``."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.idle_full = burst / rate           # untouched this long: full, same as new
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()   # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self.buckets)

    def allow(self, key: str, now: float) -> Decision:
        buckets = self.buckets
        self._evict(now)
        entry = buckets.pop(key, None)
        if entry is None:
            tokens = float(self.burst)
        else:
            tokens, at = entry
            tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        buckets[key] = (tokens, now)            # most recently used at the end
        if len(buckets) > self.max_keys:
            buckets.popitem(last=False)
        return Decision(allowed, self.burst, int(tokens), (self.burst - tokens) / self.rate,
                        0.0 if allowed else (1.0 - tokens) / self.rate)

    def _evict(self, now: float) -> None:
        buckets = self.buckets
        while buckets:
            key, (tokens, at) = next(iter(buckets.items()))
            if now - at < self.idle_full:
                break
            del buckets[key]
