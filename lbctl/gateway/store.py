"""Where rate-limit buckets live: the ``Store`` a process opens once from ``[store]``.

A store hands each route's ``Limit`` a limiter (``rate_limit.RateLimiter`` or
``SharedRateLimiter``) and reports its health. It outlives config reloads: the serve
composition root opens one per process and keeps it while ``[store]`` is unchanged, and the
gateway built for each config asks it for limiters (and keeps a route's limiter across a
reload while the route's limit is unchanged).

* ``LocalStore`` (``backend = "local"``, the default): buckets in this process's memory.
  For several workers of one instance, a store that keeps the same ``TokenBuckets`` counting
  in memory shared by the workers goes here, behind the same ``limiter(limit)``, so limits
  stay exact per instance without a network hop.
* ``redis_store.RedisStore`` (``backend = "redis"``): buckets in Redis, exact across every
  process, worker or instance that uses the same Redis; each process keeps its own
  connection pool. When the store is down it falls back to a ``LocalStore`` (``on_error``).
"""

from __future__ import annotations

from typing import Protocol

from lbctl.config.model import Store as StoreConfig
from lbctl.gateway.rate_limit import Limit, RateLimiter, SharedRateLimiter, TokenBuckets


class Store(Protocol):
    config: StoreConfig
    up: bool                # False while the store cannot be reached
    errors: int             # failed store calls since start

    def limiter(self, limit: Limit) -> RateLimiter | SharedRateLimiter: ...

    async def start(self) -> None: ...    # first contact (logged), before serving

    async def close(self) -> None: ...


class LocalStore:
    """Buckets in this process's memory; never down."""

    up = True
    errors = 0

    def __init__(self, config: StoreConfig | None = None) -> None:
        self.config = config or StoreConfig()

    def limiter(self, limit: Limit) -> TokenBuckets:
        return TokenBuckets(limit.rate, limit.burst, limit=limit)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


def open_store(config: StoreConfig) -> Store:
    """The store ``[store]`` describes; nothing is connected until ``start``."""
    if config.backend == "redis":
        # redis-py loads only for configs that use it.
        from lbctl.gateway.redis_store import RedisStore
        return RedisStore(config, fallback=LocalStore())
    return LocalStore(config)
