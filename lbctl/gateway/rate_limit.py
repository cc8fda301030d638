"""Rate limiting: one counting rule (GCRA), wherever the buckets live.

A route's limit is ``rate`` tokens per second in a bucket of ``burst``; each request takes
one token and is refused when less than one is left. That is kept as GCRA: per key, one
number, the *theoretical arrival time* ``tat``, measured in tokens (``clock = now * rate``),
so one token is exactly 1.0 and a burst of 20 at one instant counts 20 exactly. The bucket
holds ``burst - (tat - clock)`` tokens; a key whose ``tat`` has passed is full, the same as
a key never seen, so its state can be dropped (evicted here, expired by TTL in Redis)
without changing any decision.

``gcra`` is that rule, and the only place it is written in Python; the Lua script the Redis
store runs (``redis_store.py``) performs the same floating-point operations in the same
order, so the same requests at the same times get the same decisions from either store
(``tests/test_store_redis.py`` checks this).

Where the buckets live is behind two small interfaces, chosen once per route when the
config is loaded:

* ``RateLimiter.allow(key, now) -> Decision``: synchronous, for state this process can
  reach without waiting: ``TokenBuckets`` (in-process), and the place for buckets in memory
  shared by the workers of one instance;
* ``SharedRateLimiter.allow(key, now)``: a coroutine, for a store across the network
  (``redis_store.RedisBuckets``), which applies ``on_error`` itself and so always decides.

``store.py`` says which one each route gets.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Awaitable, Protocol


@dataclass(frozen=True, slots=True)
class Limit:
    """One route's limit, in the units the counting rule uses."""
    name: str               # names the policy in headers and the store's keys
    rate: float             # tokens per second
    burst: int              # bucket size: requests allowed at once

    @classmethod
    def of(cls, config) -> Limit:
        """From a route's ``rate_limit`` (``config.model.RateLimit``; the loader names every
        limit, "default" stands in for one built in code without a name)."""
        burst = config.burst if config.burst is not None else max(1, math.ceil(config.rate))
        return cls(config.name or "default", config.rate / config.per, burst)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int              # the bucket size (burst)
    remaining: int          # whole tokens left after this request
    reset: float            # seconds until the bucket is full again
    retry_after: float      # refused: seconds until one token is available; else 0
    wait: float = 0.0       # seconds until one more token than ``remaining`` is available
    store_down: bool = False    # no decision could be made: the store is down (on_error "closed")


def gcra(tat: float | None, clock: float, burst: int) -> tuple[bool, float, float]:
    """One request against a bucket: ``(allowed, new tat, ahead)``.

    ``tat`` is the stored value (None: never seen), ``clock`` is ``now * rate``; ``ahead``
    is ``tat - clock`` after the request: the tokens missing from a full bucket.
    """
    if tat is None or tat < clock:
        tat = clock
    ahead = tat - clock
    if ahead + 1 <= burst:
        return True, tat + 1, ahead + 1
    return False, tat, ahead


def decision(allowed: bool, ahead: float, limit: Limit) -> Decision:
    """The numbers clients see, from what ``gcra`` (or the store's script) returned."""
    rate = limit.rate
    tokens = max(0.0, limit.burst - ahead)
    remaining = int(tokens)
    wait = (remaining + 1 - tokens) / rate
    return Decision(allowed, limit.burst, remaining, ahead / rate, 0.0 if allowed else wait, wait)


STORE_DOWN = Decision(False, 0, 0, 0.0, 1.0, 1.0, store_down=True)


class RateLimiter(Protocol):
    def allow(self, key: str, now: float) -> Decision: ...


class SharedRateLimiter(Protocol):
    shared: bool            # True: ``allow`` is a coroutine

    def allow(self, key: str, now: float) -> Awaitable[Decision | None]: ...


class TokenBuckets:
    """In-process buckets for one limit.

    Memory stays bounded under many distinct keys: keys are kept in least-recently-used
    order and a full bucket at the old end is dropped (it decides like a new one). If more
    than ``max_keys`` keys are not full, the least recently used is dropped anyway (that key
    starts again from a full bucket): the bound wins over exactness.
    """

    shared = False

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000,
                 limit: Limit | None = None) -> None:
        self.limit = limit or Limit("", rate, burst)
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.buckets: OrderedDict[str, float] = OrderedDict()   # key -> tat, oldest first

    def __len__(self) -> int:
        return len(self.buckets)

    def allow(self, key: str, now: float) -> Decision:
        buckets = self.buckets
        clock = now * self.rate
        while buckets:
            oldest = next(iter(buckets))
            if buckets[oldest] > clock:
                break
            del buckets[oldest]             # full: the same as a key never seen
        allowed, tat, ahead = gcra(buckets.pop(key, None), clock, self.burst)
        buckets[key] = tat                  # most recently used at the end
        if len(buckets) > self.max_keys:
            buckets.popitem(last=False)
        return decision(allowed, ahead, self.limit)


class LimitHeaders:
    """The response fields for one limit, compiled when the config is loaded.

    ``"ietf"`` follows draft-ietf-httpapi-ratelimit-headers-11: ``RateLimit-Policy`` states
    the policy (``q`` = the burst, ``w`` = the seconds a full bucket takes to refill, rounded
    up: the long-run rate and the largest burst), ``RateLimit`` the service limit now (``r``
    = whole tokens left, ``t`` = seconds until one more is available, rounded up: the time
    within which the client can use no more than ``r``). ``"legacy"`` is the older drafts'
    ``RateLimit-Limit/Remaining/Reset`` (``Reset``: seconds until the bucket is full again).
    A refusal always carries ``Retry-After``, never earlier than the end of ``t``.
    """

    def __init__(self, limit: Limit, style: str = "ietf") -> None:
        self.ietf = style in ("ietf", "both")
        self.legacy = style in ("legacy", "both")
        self.item = b'"' + limit.name.encode("ascii") + b'"'
        window = max(1, math.ceil(limit.burst / limit.rate - 1e-9))
        self.policy = (b"RateLimit-Policy", self.item + b";q=%d;w=%d" % (limit.burst, window))
        self.limit = b"%d" % limit.burst

    def fields(self, d: Decision) -> list[tuple[bytes, bytes]]:
        out = []
        if self.ietf:
            out.append(self.policy)
            out.append((b"RateLimit", self.item + b";r=%d;t=%d" % (d.remaining, math.ceil(d.wait))))
        if self.legacy:
            out.extend(((b"RateLimit-Limit", self.limit),
                        (b"RateLimit-Remaining", b"%d" % d.remaining),
                        (b"RateLimit-Reset", b"%d" % math.ceil(d.reset))))
        if not d.allowed:
            out.append((b"Retry-After", b"%d" % max(1, math.ceil(d.retry_after))))
        return out
