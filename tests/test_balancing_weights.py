"""Weights: one bounded range everywhere, rings of bounded size, and effective weights that
follow the clock rather than the traffic.

Before: ``1e308`` overflowed the ring (500), ``5e-324`` with least_conn and slow start divided
by zero (503), 20,000 built a 2-million-point ring (5.9 s, 265 MB), and ``effective_weight``
stayed at 10% in /stats and /metrics after slow start ended on an idle pool.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import replace

import aiohttp
import pytest

from lbctl.balancing.backend import MAX_WEIGHT, MIN_WEIGHT, checked_weight
from lbctl.balancing.consistent_hash import RING_CAP, VNODES
from lbctl.config.model import Address, Admin
from tests.balancing_support import backends, pool_of
from tests.support import ManualClock, backend_config, config


@pytest.mark.parametrize("value", [0, -1, 0.001, 1000.5, 1e5, 1e308, 5e-324, math.nan, math.inf,
                                   10**400, True, "2", None])
def test_a_weight_outside_the_range_is_refused_everywhere_it_enters_the_pool(value):
    pool = pool_of("weighted", ["a", "b"])
    with pytest.raises(ValueError, match="from 0.01 to 1000"):
        pool.set_weight(pool.backends[0], value)
    assert pool.backends[0].weight == 1.0


def test_the_ends_of_the_range_are_weights():
    assert (checked_weight(MIN_WEIGHT), checked_weight(MAX_WEIGHT), checked_weight(3)) == \
        (0.01, 1000.0, 3.0)


@pytest.mark.parametrize("algorithm", ["least_conn", "weighted", "random", "p2c", "ewma"])
def test_the_smallest_weight_ramping_up_divides_by_nothing(algorithm):
    """5e-324 x 10% was 0: least_conn's in-flight / weight raised ZeroDivisionError."""
    clock = ManualClock()
    pool = pool_of(algorithm, backends("a", "b", weights=[MIN_WEIGHT, MIN_WEIGHT]),
                   clock=clock, slow_start=30.0)
    pool.set_admin(pool.backends[0], pool.backends[0].admin.__class__.DISABLED)
    pool.set_admin(pool.backends[0], pool.backends[0].admin.__class__.ENABLED)   # ramps again
    assert pool.backends[0].effective_weight == pytest.approx(MIN_WEIGHT / 10)
    for _ in range(80):                     # 40 s: past the 30 s ramp
        b = pool.select()
        pool.on_start(b)
        clock.advance(0.5)
    assert pool.backends[0].effective_weight == MIN_WEIGHT


def test_the_ring_is_bounded_whatever_the_weights():
    pool = pool_of("consistent_hash", backends(*[f"b{i}" for i in range(50)],
                                               weights=[MAX_WEIGHT] * 50))
    ring = pool.algorithm
    assert len(ring._points) <= RING_CAP
    counts = {b.name: ring._owners.count(b) for b in pool.backends}
    assert min(counts.values()) >= RING_CAP // 50 - 1          # scaled evenly: same weights
    pool.set_weight(pool.backends[0], MIN_WEIGHT)
    assert len(ring._points) <= RING_CAP and ring._owners.count(pool.backends[0]) >= 1


def test_below_the_cap_a_backends_points_depend_on_its_own_weight_only():
    pool = pool_of("consistent_hash", backends("a", "b", "c", weights=[1, 2, 3]))
    ring = pool.algorithm
    before = {p for p, b in zip(ring._points, ring._owners) if b.name == "a"}
    assert len(before) == VNODES
    pool.set_weight(pool.by_name["c"], 7)        # re-weighting c moves none of a's points
    assert {p for p, b in zip(ring._points, ring._owners) if b.name == "a"} == before
    assert ring._owners.count(pool.by_name["c"]) == 7 * VNODES


# ---- effective weights follow the clock ------------------------------------------------------

def test_advance_ends_a_ramp_and_an_ejection_without_any_request():
    clock = ManualClock()
    pool = pool_of("weighted", ["a", "b"], clock=clock, slow_start=10.0)
    a, b = pool.backends
    pool.eject(b, clock() + 5.0)
    pool.set_admin(a, a.admin.__class__.DISABLED)
    pool.set_admin(a, a.admin.__class__.ENABLED)
    assert a.effective_weight == pytest.approx(0.1) and b.state == "ejected"
    clock.advance(60.0)                     # no select() in between: nobody asked
    pool.advance()
    assert a.effective_weight == 1.0 and b.state == "up"
    assert b.effective_weight == 1.0        # b's own ramp after the ejection is over too


async def slow_started_proxy(backends_fixture, clock):
    a, b = await backends_fixture.start("a"), await backends_fixture.start("b")
    cfg = config({"api": [backend_config(a.url, "a", weight=4), backend_config(b.url, "b")]},
                 algorithm="weighted", slow_start=30.0)
    cfg = replace(cfg, admin=Admin(Address("127.0.0.1", 0)))
    proxy = await backends_fixture.proxy(cfg, clock=clock)
    pool = proxy.runtime.pools["api"].pool
    pool.set_admin(pool.by_name["a"], pool.by_name["a"].admin.__class__.DISABLED)
    pool.set_admin(pool.by_name["a"], pool.by_name["a"].admin.__class__.ENABLED)
    return proxy, pool


async def test_stats_and_metrics_show_the_full_weight_once_slow_start_ends_with_no_traffic(backends):
    clock = ManualClock()
    proxy, pool = await slow_started_proxy(backends, clock)
    admin = f"http://127.0.0.1:{proxy.admin.bound[1]}"
    async with aiohttp.ClientSession() as session:
        async with session.get(admin + "/stats?history=0") as resp:
            doc = await resp.json()
        a = doc["pools"][0]["backends"][0]
        assert (a["state"], a["effective_weight"]) == ("slow_start", pytest.approx(0.4))
        clock.advance(31.0)                 # the ramp is over; no request has come since
        async with session.get(admin + "/stats?history=0") as resp:
            doc = await resp.json()
        a = doc["pools"][0]["backends"][0]
        assert (a["state"], a["weight"], a["effective_weight"]) == ("up", 4.0, 4.0)
        async with session.get(admin + "/metrics") as resp:
            text = await resp.text()
    assert 'lbctl_backend_effective_weight{backend="a",pool="api"} 4.0' in text


async def test_the_proxy_advances_idle_pools_itself(backends):
    """Nobody reads /stats and no request comes: the proxy's once-a-second sweep applies the
    end of the ramp, so the algorithm's tables are right before the next request arrives."""
    clock = ManualClock()
    proxy, pool = await slow_started_proxy(backends, clock)
    a = pool.by_name["a"]
    assert a.effective_weight == pytest.approx(0.4)
    clock.advance(31.0)
    deadline = asyncio.get_running_loop().time() + 5.0
    while a.effective_weight != 4.0 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)           # the sweep runs every second of real time
    assert a.effective_weight == 4.0
    assert json.dumps(a.effective_weight) == "4.0"
