"""What the pool does with health, through the proxy: slow start, backup takeover, panic on
and off, and draining a backend while its requests in flight finish."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import replace

import aiohttp
import pytest

from lbctl.balancing import AdminState
from lbctl.config.model import Health
from tests.health_support import get, load, proxy, start
from tests.support import backend_config, config

MANUAL = Health(path="/healthz", interval=3600.0, rise=1, fall=1)   # the test calls check()


@pytest.mark.parametrize("algorithm", ["weighted", "least_conn"])
async def test_slow_start_ramps_the_share_of_a_recovered_backend(backends, algorithm, clock):
    a, _ = await start(backends, "a")
    b, _ = await start(backends, "b")
    server = await proxy(backends, config({"p": [backend_config(a.url, "a"),
                                                 backend_config(b.url, "b")]},
                                          algorithm=algorithm, slow_start=10.0),
                         clock=clock, rng=random.Random(1))
    pool = server.runtime.pools["p"].pool
    rb = pool.by_name["b"]
    pool.set_healthy(rb, False)
    clock.advance(60.0)
    pool.set_healthy(rb, True)                  # recovered now: the ramp starts here

    def share(results):
        return Counter(who for _, who in results)["b"] / len(results)
    port = server.address[1]
    # Expected shares of b, with a at full weight 1 and b at weight w: w / (1 + w).
    # t=0: w = 0.1 (the floor) -> 9%; t=5s: w = 0.5 -> 33%; t=10s: w = 1 -> 50%.
    # weighted: the tolerance covers where the deterministic rotation starts within its
    # cycle. least_conn draws among tied (idle) backends by weight: more requests, and a
    # tolerance of 4 binomial standard deviations (still far from the 50% of no ramp).
    scale = 1 if algorithm == "weighted" else 4
    phases = [(110 * scale, 0.1 / 1.1, 0.03), (60 * scale, 1 / 3, 0.04), (40 * scale, 0.5, 0.05)]
    for k, (n, expected, tolerance) in enumerate(phases):
        if k:
            clock.advance(5.0)
        if algorithm != "weighted":
            tolerance = 4 * (expected * (1 - expected) / n) ** 0.5
        assert abs(share(await load(port, n)) - expected) <= tolerance, (k, algorithm)
    assert pool.slow_start_progress(rb) is None     # ramp over


async def test_backup_takes_over_only_when_no_primary_is_eligible(backends):
    a, a_behaviour = await start(backends, "a")
    c, _ = await start(backends, "c")
    server = await proxy(backends, config({"p": [backend_config(a.url, "a"),
                                                 backend_config(c.url, "c", backup=True)]},
                                          health=MANUAL))
    state = server.runtime.pools["p"]
    ra = state.pool.by_name["a"]
    port = server.address[1]
    assert await load(port, 3) == [(200, "a")] * 3          # the backup idles while a is up

    a_behaviour.status = 500
    await server.health.probe_backend(state.pool, MANUAL, ra)
    assert state.pool.mode == "backup"
    assert await load(port, 3) == [(200, "c")] * 3

    a_behaviour.status = 200
    await server.health.probe_backend(state.pool, MANUAL, ra)
    assert state.pool.mode == "normal"
    assert await load(port, 3) == [(200, "a")] * 3


async def test_without_panic_nothing_eligible_is_a_fast_503_with_retry_after(backends):
    started = [await start(backends, n) for n in "abc"]
    server = await proxy(backends, config({"p": [backend_config(tb.url, tb.name)
                                                 for tb, _ in started]}))
    pool = server.runtime.pools["p"].pool
    pool.set_healthy(pool.by_name["b"], False)
    pool.set_healthy(pool.by_name["c"], False)
    port = server.address[1]
    assert await load(port, 4) == [(200, "a")] * 4          # 1 of 3 up: it carries everything
    pool.set_healthy(pool.by_name["a"], False)
    async with aiohttp.ClientSession() as session:
        status, _, headers = await get(session, port)
    assert status == 503 and headers["Retry-After"] == "1"
    assert sum(behaviour.traffic for _, behaviour in started) == 4


async def test_panic_spreads_over_all_backends_below_the_threshold(backends):
    started = [await start(backends, n) for n in "abc"]
    server = await proxy(backends, config({"p": [backend_config(tb.url, tb.name)
                                                 for tb, _ in started]}, panic_threshold=50.0))
    pool = server.runtime.pools["p"].pool
    port = server.address[1]
    pool.set_healthy(pool.by_name["b"], False)
    assert pool.mode == "normal"                            # 2 of 3 = 67% >= 50%
    assert Counter(who for _, who in await load(port, 4)) == {"a": 2, "c": 2}

    pool.set_healthy(pool.by_name["c"], False)              # 1 of 3 = 33% < 50%: panic
    assert pool.mode == "panic"
    assert Counter(who for _, who in await load(port, 6)) == {"a": 2, "b": 2, "c": 2}

    pool.set_healthy(pool.by_name["a"], False)              # none healthy: still served
    assert Counter(who for _, who in await load(port, 3)) == {"a": 1, "b": 1, "c": 1}

    for name in "abc":
        pool.set_healthy(pool.by_name[name], True)
    assert pool.mode == "normal"


async def test_draining_a_backend_finishes_its_requests_in_flight_and_sends_new_ones_elsewhere(
        backends):
    a, a_behaviour = await start(backends, "a")
    b, _ = await start(backends, "b")
    server = await proxy(backends, config({"p": [backend_config(a.url, "a"),
                                                 backend_config(b.url, "b")]}))
    pool = server.runtime.pools["p"].pool
    ra = pool.by_name["a"]
    port = server.address[1]
    a_behaviour.hold = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        in_flight = asyncio.create_task(get(session, port))     # round robin: a first
        await asyncio.wait_for(a_behaviour.entered.wait(), 5)
        assert ra.inflight == 1

        pool.set_admin(ra, AdminState.DRAINING)
        assert ra.state == "draining" and ra.healthy           # admin never touches health
        assert await load(port, 4) == [(200, "b")] * 4
        assert not in_flight.done()

        a_behaviour.hold.set()
        status, who, _ = await asyncio.wait_for(in_flight, 5)
        assert (status, who) == (200, "a") and ra.inflight == 0

    pool.set_healthy(ra, False)
    pool.set_admin(ra, AdminState.ENABLED)
    assert ra.state == "down"                                   # enabling does not mark it up
    pool.set_healthy(ra, True)
    a_behaviour.hold = None
    assert sorted(who for _, who in await load(port, 2)) == ["a", "b"]


async def test_disabled_backend_gets_nothing_and_keeps_its_health(backends):
    a, a_behaviour = await start(backends, "a")
    b, _ = await start(backends, "b")
    server = await proxy(backends, config({"p": [backend_config(a.url, "a"),
                                                 backend_config(b.url, "b")]},
                                          health=replace(MANUAL, fall=2)))
    state = server.runtime.pools["p"]
    ra = state.pool.by_name["a"]
    state.pool.set_admin(ra, AdminState.DISABLED)
    assert await load(server.address[1], 3) == [(200, "b")] * 3
    a_behaviour.status = 500
    for _ in range(2):                      # probes go on while disabled
        await server.health.probe_backend(state.pool, state.config.health, ra)
    assert not ra.healthy and ra.state == "disabled"
    state.pool.set_admin(ra, AdminState.ENABLED)
    assert ra.state == "down" and not ra.eligible
