"""Rate limits: token buckets with a clock stepped by hand, through the proxy and alone."""

from __future__ import annotations

import aiohttp
import pytest

from lbctl.gateway.rate_limit import Limit, LimitHeaders, TokenBuckets
from tests.gateway_support import load, pool, sha256_hex
from tests.support import ManualClock, raw_exchange, split_responses

KEY = "rate-limit-test-key-0123456789abcdef"


# ---- the buckets alone ----

def test_burst_then_refill_at_the_rate():
    # rate 2/s, burst 3: three at once, then one every half second.
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.allow("k", 0.0).allowed for _ in range(4)] == [True, True, True, False]
    refused = buckets.allow("k", 0.0)
    assert refused.retry_after == pytest.approx(0.5) and refused.remaining == 0
    assert not buckets.allow("k", 0.49).allowed
    assert buckets.allow("k", 0.5).allowed and not buckets.allow("k", 0.5).allowed
    # Idle long enough, the bucket is full again but never fuller than burst.
    assert [buckets.allow("k", 100.0).allowed for _ in range(4)] == [True, True, True, False]


def test_decision_numbers():
    buckets = TokenBuckets(rate=1.0, burst=5)
    d = buckets.allow("k", 0.0)
    assert (d.allowed, d.limit, d.remaining, d.reset) == (True, 5, 4, pytest.approx(1.0))
    legacy = dict(LimitHeaders(Limit("api", 1.0, 5), "legacy").fields(d))
    assert legacy == {b"RateLimit-Limit": b"5", b"RateLimit-Remaining": b"4", b"RateLimit-Reset": b"1"}


def test_ietf_draft_fields():
    # rate 2/s, burst 5: the policy is 5 requests per 3 s (2.5 s, rounded up: never
    # promises more than the limit gives); "t" is when one more request is possible.
    limit = Limit("/v1", 2.0, 5)
    buckets = TokenBuckets(limit.rate, limit.burst, limit=limit)
    fields = LimitHeaders(limit, "ietf").fields
    assert fields(buckets.allow("k", 0.0)) == [(b"RateLimit-Policy", b'"/v1";q=5;w=3'),
                                               (b"RateLimit", b'"/v1";r=4;t=1')]
    for _ in range(4):
        buckets.allow("k", 0.0)
    refused = dict(fields(buckets.allow("k", 0.2)))     # 0.4 tokens: the next one in 0.3 s
    assert refused[b"RateLimit"] == b'"/v1";r=0;t=1' and refused[b"Retry-After"] == b"1"
    both = dict(LimitHeaders(limit, "both").fields(buckets.allow("k", 0.5)))
    assert set(both) == {b"RateLimit-Policy", b"RateLimit", b"RateLimit-Limit",
                         b"RateLimit-Remaining", b"RateLimit-Reset"}
    assert LimitHeaders(limit, "off").fields(buckets.allow("k", 0.5)) == [(b"Retry-After", b"1")]


def test_keys_are_independent():
    buckets = TokenBuckets(rate=1.0, burst=1)
    assert buckets.allow("a", 0.0).allowed and buckets.allow("b", 0.0).allowed
    assert not buckets.allow("a", 0.0).allowed


def test_idle_buckets_are_evicted_without_changing_decisions():
    buckets = TokenBuckets(rate=10.0, burst=5)        # full again 0.5 s after last use
    for i in range(10_000):
        buckets.allow(f"client-{i}", i * 0.001)       # 10 000 clients within 10 s
    # Only the clients seen in the last 0.5 s are kept.
    assert len(buckets) <= 501
    assert buckets.allow("client-0", 20.0).remaining == 4    # as good as new


def test_memory_is_bounded_even_when_every_key_is_busy():
    buckets = TokenBuckets(rate=0.001, burst=5, max_keys=100)
    for i in range(5_000):
        buckets.allow(f"k{i}", 0.0)
    assert len(buckets) == 100


# ---- through the proxy ----

def limited_config(tmp_path, url: str, limit: str, listen: str = "", auth: str = ""):
    return load(tmp_path, f'''
[listen]
address = "127.0.0.1:1"
{listen}

[keys.team-a]
hash = "{sha256_hex(KEY)}"

[[routes]]
pool = "api"
rate_limit = {limit}
{auth}
''' + pool(url))


async def get(port: int, headers=None, path: str = "/"):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as r:
            return r.status, dict(r.headers)


async def test_burst_429_with_headers_and_refill_with_a_stepped_clock(backends, tmp_path, clock):
    a = await backends.start("a")
    proxy = await backends.proxy(limited_config(tmp_path, a.url, '{ rate = 1, burst = 3 }'),
                                 clock=clock)
    port = proxy.address[1]
    results = [await get(port) for _ in range(4)]
    assert [s for s, _ in results] == [200, 200, 200, 429]
    # Successful responses carry the counters too (the route's name: its path prefix).
    assert [h["RateLimit"] for _, h in results[:3]] == ['"/";r=2;t=1', '"/";r=1;t=1', '"/";r=0;t=1']
    assert {h["RateLimit-Policy"] for _, h in results} == {'"/";q=3;w=3'}
    status, headers = results[3]
    assert headers["Retry-After"] == "1"
    assert "RateLimit-Limit" not in headers
    assert len(a.seen) == 3
    clock.advance(0.5)
    assert (await get(port))[0] == 429
    clock.advance(0.5)                       # one token after one second
    assert (await get(port))[0] == 200
    assert (await get(port))[0] == 429
    clock.advance(60)                        # refills to the burst, no more
    assert [(await get(port))[0] for _ in range(4)] == [200, 200, 200, 429]


async def test_legacy_fields_on_request(backends, tmp_path):
    a = await backends.start("a")
    proxy = await backends.proxy(limited_config(
        tmp_path, a.url, '{ rate = 1, burst = 3, headers = "legacy", name = "api" }'),
        clock=ManualClock())
    port = proxy.address[1]
    results = [await get(port) for _ in range(4)]
    assert [h["RateLimit-Remaining"] for _, h in results[:3]] == ["2", "1", "0"]
    status, headers = results[3]
    assert status == 429 and headers["Retry-After"] == "1"
    assert (headers["RateLimit-Limit"], headers["RateLimit-Remaining"], headers["RateLimit-Reset"]) \
        == ("3", "0", "3")
    assert "RateLimit" not in headers and "RateLimit-Policy" not in headers


async def test_spoofed_forwarded_for_from_an_untrusted_peer_cannot_dodge_the_limit(backends, tmp_path):
    a = await backends.start("a")
    proxy = await backends.proxy(limited_config(tmp_path, a.url, '{ rate = 1, burst = 2 }'),
                                 clock=ManualClock())
    port = proxy.address[1]
    statuses = [(await get(port, {"X-Forwarded-For": f"203.0.113.{i}",
                                  "Forwarded": f"for=198.51.100.{i}"}))[0] for i in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    # And the backend was told the real peer, not the spoofed address.
    assert {s.headers["X-Forwarded-For"] for s in a.seen} == {"127.0.0.1"}
    assert all("Forwarded" not in s.headers for s in a.seen)


async def test_a_trusted_proxy_chain_gives_each_client_its_own_bucket(backends, tmp_path):
    a = await backends.start("a")
    cfg = limited_config(tmp_path, a.url, '{ rate = 1, burst = 1 }',
                         listen='trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]')
    proxy = await backends.proxy(cfg, clock=ManualClock())
    port = proxy.address[1]
    # Two clients behind two trusted hops; the left-most entry is whatever the client wrote.
    one = {"X-Forwarded-For": "6.6.6.6, 198.51.100.1, 10.1.2.3"}
    two = {"X-Forwarded-For": "6.6.6.6, 198.51.100.2, 10.1.2.3"}
    assert (await get(port, one))[0] == 200
    assert (await get(port, two))[0] == 200
    assert (await get(port, one))[0] == 429
    assert a.seen[0].headers["X-Forwarded-For"] == "6.6.6.6, 198.51.100.1, 10.1.2.3, 127.0.0.1"


async def test_limit_by_consumer_counts_after_authentication(backends, tmp_path):
    a = await backends.start("a")
    cfg = limited_config(tmp_path, a.url, '{ rate = 1, burst = 2, key = "consumer" }',
                         auth='auth = { type = "api_key" }')
    proxy = await backends.proxy(cfg, clock=ManualClock())
    port = proxy.address[1]
    assert [(await get(port, {"X-API-Key": "bad"}))[0] for _ in range(3)] == [401] * 3
    assert [(await get(port, {"X-API-Key": KEY}))[0] for _ in range(3)] == [200, 200, 429]


async def test_limit_by_header_and_without_it_by_address(backends, tmp_path):
    a = await backends.start("a")
    cfg = limited_config(tmp_path, a.url, '{ rate = 1, burst = 1, key = "header:X-Tenant" }')
    proxy = await backends.proxy(cfg, clock=ManualClock())
    port = proxy.address[1]
    assert (await get(port, {"X-Tenant": "t1"}))[0] == 200
    assert (await get(port, {"X-Tenant": "t2"}))[0] == 200
    assert (await get(port, {"X-Tenant": "t1"}))[0] == 429
    assert (await get(port))[0] == 200          # no header: the client address's bucket
    assert (await get(port))[0] == 429


async def test_rate_per_minute_and_429_on_a_kept_alive_connection(backends, tmp_path, clock):
    a = await backends.start("a")
    proxy = await backends.proxy(limited_config(tmp_path, a.url, '{ rate = 2, per = "1m" }'),
                                 clock=clock)
    raw = await raw_exchange(proxy.address[1], b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 2
                             + b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    responses = split_responses(raw)
    assert [r[0] for r in responses] == [200, 200, 429]
    assert responses[2][1]["retry-after"] == "30"


async def test_buckets_survive_a_reload_unless_the_limit_changes(backends, tmp_path):
    a = await backends.start("a")
    proxy = await backends.proxy(limited_config(tmp_path, a.url, '{ rate = 1, burst = 2 }'),
                                 clock=ManualClock())
    port = proxy.address[1]
    assert [(await get(port))[0] for _ in range(3)] == [200, 200, 429]
    proxy.reload(limited_config(tmp_path, a.url, '{ rate = 1, burst = 2 }'))
    assert (await get(port))[0] == 429                 # a SIGHUP is no way around a limit
    proxy.reload(limited_config(tmp_path, a.url, '{ rate = 1, burst = 3 }'))
    assert [(await get(port))[0] for _ in range(4)] == [200, 200, 200, 429]
