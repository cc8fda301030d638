"""The Redis store alone, against a real redis-server: the same counting as the local
buckets, namespaced keys with TTLs, memory bounded under many clients, health and
``on_error`` when the store goes away and comes back."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time

import pytest

from lbctl.config.model import Store as StoreConfig
from lbctl.gateway.rate_limit import STORE_DOWN, Limit, TokenBuckets
from lbctl.gateway.redis_store import RedisStore
from lbctl.gateway.store import LocalStore
from tests.redis_support import PASSWORD, RedisServer


def store_config(server: RedisServer, **kw) -> StoreConfig:
    kw.setdefault("timeout", 2.0)       # generous: the machine is shared; failures are forced
    return StoreConfig(backend="redis", url=server.bare_url, password=server.password, **kw)


async def flush(server: RedisServer) -> None:
    client = server.client()
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def stepped_store(redis_server):
    """A store whose script counts in the time the test passes (a clock stepped by hand)."""
    await flush(redis_server)
    store = RedisStore(store_config(redis_server), fallback=LocalStore(), client_clock=True)
    await store.start()
    yield store
    await store.close()


@pytest.fixture
async def store(redis_server):
    """A store as serve opens it: the server's clock."""
    await flush(redis_server)
    store = RedisStore(store_config(redis_server), fallback=LocalStore())
    await store.start()
    yield store
    await store.close()


async def test_local_and_redis_buckets_count_the_same(stepped_store):
    # The same requests at the same times through the in-process buckets and the script:
    # every decision, down to the float seconds in it, is the same. Rates are low enough
    # that no key's TTL (real time) can run out while the test's clock says it is not full.
    rng = random.Random(15)
    decisions = []
    for rate, burst in ((2.0, 3), (1.0, 5), (0.5, 1), (2.0, 20), (100 / 60, 100)):
        limit = Limit(f"same-{rate:g}-{burst}", rate, burst)
        local = TokenBuckets(rate, burst, limit=limit)
        shared = stepped_store.limiter(limit)
        now = 1000.0
        for _ in range(300):
            now += rng.choice((0.0, 0.0, 0.0, 0.001, 0.1 / rate, 1 / rate, rng.random() / rate))
            key = rng.choice(("a", "b", "c"))
            expected = local.allow(key, now)
            assert await shared.allow(key, now) == expected, (rate, burst, key, now)
            decisions.append(expected.allowed)
    assert decisions.count(False) > 100 and decisions.count(True) > 100   # both compared
    assert stepped_store.errors == 0


async def test_keys_are_namespaced_and_expire_when_the_bucket_is_full(store, redis_server):
    limit = Limit("api.example.com/v1", 10.0, 20)
    buckets = store.limiter(limit)
    for _ in range(3):
        assert (await buckets.allow("ip:192.0.2.1", 0.0)).allowed
    long_key = "h:" + "x" * 500            # a client-chosen header value
    await buckets.allow(long_key, 0.0)
    client = redis_server.client()
    try:
        keys = sorted(await client.keys("*"))
        digest = hashlib.sha256(long_key.encode()).hexdigest()
        assert keys == [b"lbctl:rl:api.example.com/v1:ip:192.0.2.1",
                        f"lbctl:rl:api.example.com/v1:sha256:{digest}".encode()]
        # 3 tokens taken at 10/s: full again in 0.3 s, and the key goes with it.
        assert 0 < await client.pttl(keys[0]) <= 300
    finally:
        await client.aclose()


async def test_100000_clients_leave_only_keys_that_are_not_full(store, redis_server):
    # rate 20/s, burst 1: each client's key lives 50 ms after its request. Driven through
    # the limiter itself by 32 concurrent callers; bounded: 100 000 decisions.
    buckets = store.limiter(Limit("many", 20.0, 1))
    client = redis_server.client()
    refused = 0
    peak = 0

    async def caller(first: int) -> None:
        nonlocal refused, peak
        for n in range(first, 100_000, 32):
            if not (await buckets.allow(f"ip:10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", 0.0)).allowed:
                refused += 1
            if n % 10_000 == 0:
                peak = max(peak, await client.dbsize())

    try:
        await asyncio.wait_for(asyncio.gather(*(caller(i) for i in range(32))), timeout=120)
        assert refused == 0 and store.errors == 0 and store.up
        # At any moment only the keys of the last few milliseconds' clients exist...
        assert 0 < peak < 50_000, peak
        # ... and once their buckets are full, none do (polled, bounded).
        deadline = time.monotonic() + 10
        while await client.dbsize() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await client.dbsize() == 0
    finally:
        await client.aclose()


async def test_a_reload_that_changes_the_store_swaps_it(backends, tmp_path, redis_server):
    from tests.gateway_support import load
    from tests.test_gateway_rate_limit import get
    await flush(redis_server)
    a = await backends.start("a")
    route = f'''
[[routes]]
pool = "api"
rate_limit = {{ rate = 1, per = "1m", burst = 2 }}

[pools.api]
[[pools.api.backends]]
url = "{a.url}"
'''
    proxy = await backends.proxy(load(tmp_path, route))
    port = proxy.address[1]
    assert [(await get(port))[0] for _ in range(3)] == [200, 200, 429]
    old = proxy.store
    proxy.reload(load(tmp_path, f'[store]\nbackend = "redis"\nurl = "{redis_server.url}"\n'
                                f'timeout = "2s"\n' + route, name="redis.toml"))
    new = proxy.store
    assert new is not old and new.config.backend == "redis"
    deadline = time.monotonic() + 10
    while not new.checked:                  # first contact made (polled, bounded)
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    # The shared store's bucket is a new one: the local count does not carry over.
    assert [(await get(port))[0] for _ in range(3)] == [200, 200, 429]
    client = redis_server.client()
    try:
        assert await client.keys("lbctl:rl:*") == [b"lbctl:rl:/:ip:127.0.0.1"]
    finally:
        await client.aclose()


async def test_a_small_pool_serves_many_concurrent_callers(redis_server):
    await flush(redis_server)
    store = RedisStore(store_config(redis_server, max_connections=2), fallback=LocalStore())
    await store.start()
    try:
        buckets = store.limiter(Limit("pool", 1.0, 50))
        decisions = await asyncio.wait_for(
            asyncio.gather(*(buckets.allow("k", 0.0) for _ in range(60))), timeout=30)
        # One bucket of 50, shared by every caller through two connections.
        assert [d.allowed for d in decisions].count(True) in (50, 51)
        assert store.errors == 0 and store.pool.count <= 2
    finally:
        await store.close()


async def test_a_hung_store_is_bounded_by_the_timeout_then_not_waited_for(caplog):
    caplog.set_level(logging.INFO, logger="lbctl.store")
    server = RedisServer()
    server.start()
    import os
    import signal
    store = RedisStore(store_config(server, timeout=0.2), fallback=LocalStore())
    try:
        await store.start()
        buckets = store.limiter(Limit("hung", 10.0, 3))
        assert (await buckets.allow("k", 0.0)).remaining == 2        # from Redis
        os.kill(server.proc.pid, signal.SIGSTOP)                   # alive, but not answering
        started = time.monotonic()
        decision = await asyncio.wait_for(buckets.allow("k", 0.0), timeout=10)
        waited = time.monotonic() - started
        # This instance's own bucket answered once the store was given up on.
        assert decision.allowed and decision.remaining == 2 and not store.up
        assert waited < 5, waited       # the store's timeout, not a socket's default
        # Down: decided without waiting for anything (the coroutine never suspends).
        pending = buckets.allow("k", 0.0)
        with pytest.raises(StopIteration) as done:
            pending.send(None)
        assert done.value.value.remaining == 1
        assert "down (no answer within 200ms)" in caplog.text
        os.kill(server.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while not store.up:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert "up again" in caplog.text
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        await store.close()
        server.cleanup()


async def test_over_tls_verified_with_the_configured_ca(tmp_path, caplog):
    import trustme
    ca = trustme.CA()
    server = RedisServer(tls_ca=ca)
    server.start()
    url = f"rediss://127.0.0.1:{server.port}/0"
    try:
        good = RedisStore(StoreConfig(backend="redis", url=url, password=PASSWORD, timeout=2.0,
                                      ca=server.ca_file), fallback=LocalStore())
        await good.start()
        assert good.up and (await good.limiter(Limit("tls", 1.0, 2)).allow("k", 0.0)).remaining == 1
        await good.close()
        # Another CA: the certificate is not trusted, the store is down, and says why.
        other = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        bad = RedisStore(StoreConfig(backend="redis", url=url, password=PASSWORD, timeout=2.0,
                                     ca=str(other)), fallback=LocalStore())
        await bad.start()
        assert not bad.up and "certificate verify failed" in caplog.text
        await bad.close()
    finally:
        server.cleanup()


async def test_over_a_unix_socket():
    server = RedisServer(unix=True)
    server.start()
    try:
        store = RedisStore(StoreConfig(backend="redis", url=f"unix://{server.socket}?db=3",
                                       password=PASSWORD, timeout=2.0), fallback=LocalStore())
        await store.start()
        assert store.up and (await store.limiter(Limit("unix", 1.0, 2)).allow("k", 0.0)).allowed
        await store.close()
        client = server.client(unix_socket_path=server.socket, db=3)
        assert await client.keys("*") == [b"lbctl:rl:unix:k"]
        await client.aclose()
    finally:
        server.cleanup()
