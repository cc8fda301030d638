"""ewma: peak-EWMA latency times (in-flight + 1), compared over two distinct random draws."""

from __future__ import annotations

import heapq
import itertools
import math
import random

import pytest

from tests.balancing_support import StubRng, backends, pool_of
from tests.support import ManualClock


def observe(pool, name, latency):
    """One finished request on a backend, at the pool's current clock."""
    b = pool.by_name[name]
    pool.on_start(b)
    pool.on_end(b, latency)
    return b


def simulate(latencies, n=20_000, gap=0.01, seed=1, decay=10.0, pool=None, clock=None):
    """Open-loop arrivals every ``gap`` seconds; each request holds its backend for that
    backend's latency. Virtual time only. Returns (share per backend, pool)."""
    clock = clock or ManualClock()
    pool = pool or pool_of("ewma", list(latencies), seed=seed, clock=clock, ewma_decay=decay)
    pending, seq = [], itertools.count()
    counts = dict.fromkeys(latencies, 0)
    start = clock.now
    for i in range(n):
        now = start + i * gap
        while pending and pending[0][0] <= now:
            t, _, b = heapq.heappop(pending)
            clock.now = t
            pool.on_end(b, latencies[b.name])
        clock.now = now
        b = pool.select()
        pool.on_start(b)
        counts[b.name] += 1
        heapq.heappush(pending, (now + latencies[b.name], next(seq), b))
    return {k: v / n for k, v in counts.items()}, pool


def test_exact_choice_cost_is_estimate_times_in_flight_plus_one(clock):
    # The draw is fixed to (a, c) each time: first = int(0.0 * 4) = 0, second = int(0.5 * 3)
    # = 1, shifted past the first -> 2.
    #   a: estimate 0.5, 0 in flight -> 0.5 * 1 = 0.5
    #   c: estimate 0.1, 2 in flight -> 0.1 * 3 = 0.3   -> c
    #   c: 5 in flight               -> 0.1 * 6 = 0.6   -> a
    pool = pool_of("ewma", ["a", "b", "c", "d"], rng=StubRng([0.0, 0.5] * 2), clock=clock)
    observe(pool, "a", 0.5)
    c = observe(pool, "c", 0.1)
    observe(pool, "b", 0.001)      # b and d are cheaper but never drawn
    for _ in range(2):
        pool.on_start(c)
    assert pool.select().name == "c"
    for _ in range(3):
        pool.on_start(c)
    assert pool.select().name == "a"


def test_backend_without_observations_is_tried_not_starved():
    # b has never answered: while idle it costs 0, so it wins against any observed backend.
    pool = pool_of("ewma", ["a", "b"], seed=1)
    observe(pool, "a", 0.001)
    assert pool.select().name == "b"
    # With one request in flight and still no answer it costs a penalty (Finagle's rule),
    # so a new backend is not flooded before it has answered once.
    pool.on_start(pool.by_name["b"])
    assert pool.select().name == "a"


def test_new_backend_gets_traffic_but_one_request_at_a_time_until_it_answers(clock):
    latencies = {"a": 0.05, "b": 0.05, "c": 0.05}
    pool = pool_of("ewma", backends("a", "b"), seed=2, clock=clock)
    simulate({"a": 0.05, "b": 0.05}, n=2000, pool=pool, clock=clock)
    pool.set_backends(pool.backends + backends("c"))
    c = pool.by_name["c"]
    # Open requests on a and b; c has none and no estimate.
    held = [pool.select(exclude={c}) for _ in range(10)]
    for b in held:
        pool.on_start(b)
    first = pool.select()
    assert first is c                       # tried at once: costs 0 while idle
    pool.on_start(c)
    for _ in range(50):
        assert pool.select() is not c       # not flooded before its first answer
    for b in held + [c]:
        pool.on_end(b, 0.05)
    # Once it has answered it takes its share like the others.
    shares, _ = simulate(latencies, n=3000, pool=pool, clock=clock)
    assert shares["c"] > 0.25


def test_estimate_jumps_up_on_a_slow_sample(clock):
    pool = pool_of("ewma", ["a", "b"], clock=clock, ewma_decay=10.0)
    a = observe(pool, "a", 0.1)
    clock.advance(1.0)
    observe(pool, "a", 2.0)
    assert a.ewma_cost(clock(), 10.0) == pytest.approx(2.0)     # at once, not averaged in


def test_estimate_decays_toward_faster_samples_at_the_configured_rate():
    # After a 1.0 s peak, a stream of 0.1 s samples pulls the estimate down as an EWMA with
    # time constant tau: estimate(t) = 0.1 + 0.9 * exp(-t / tau), whatever the sample rate.
    for tau in (1.0, 10.0):
        for step in (0.01, 0.1, 0.25):
            clock = ManualClock()
            pool = pool_of("ewma", ["a", "b"], clock=clock, ewma_decay=tau)
            a = observe(pool, "a", 1.0)
            t = 0.0
            while t < 1.0 - 1e-9:
                t = clock.advance(step)
                observe(pool, "a", 0.1)
            assert a.ewma == pytest.approx(0.1 + 0.9 * math.exp(-t / tau), rel=1e-6), (tau, step)


def test_one_fast_sample_after_a_peak_weighs_by_elapsed_time(clock):
    # Peak 1.0 at t=0, one 0.1 sample at t=tau: the old estimate keeps weight exp(-1).
    pool = pool_of("ewma", ["a", "b"], clock=clock, ewma_decay=5.0)
    a = observe(pool, "a", 1.0)
    clock.advance(5.0)
    observe(pool, "a", 0.1)
    w = math.exp(-1)
    assert a.ewma_cost(clock(), 5.0) == pytest.approx(1.0 * w + 0.1 * (1 - w))


def test_estimate_decays_while_idle_with_the_configured_time(clock):
    # No samples: the estimate decays toward zero by exp(-elapsed / decay), so a backend that
    # was slow once and then got no traffic is tried again rather than starved forever.
    pool = pool_of("ewma", ["a", "b"], clock=clock, ewma_decay=4.0)
    a = observe(pool, "a", 2.0)
    clock.advance(4.0)
    assert a.ewma_cost(clock(), 4.0) == pytest.approx(2.0 * math.exp(-1))
    clock.advance(4.0)
    assert a.ewma_cost(clock(), 4.0) == pytest.approx(2.0 * math.exp(-2))


@pytest.mark.parametrize("decay", [5.0, 10.0])
def test_backend_slow_once_is_tried_again_when_its_estimate_decays(decay, clock):
    # a answered once in 5 s; b keeps answering in 0.1 s, one request every 0.1 s. a's cost
    # 5 exp(-t / decay) drops below b's 0.1 exp(-0.1 / decay) at t = decay ln 50 + 0.1:
    # a is not tried before that, and is tried right after, so the decay time is honoured
    # by the choice itself, not only by the estimate.
    pool = pool_of("ewma", ["a", "b"], seed=3, clock=clock, ewma_decay=decay)
    observe(pool, "a", 5.0)
    first_a = None
    for _ in range(1000):
        t = clock.advance(0.1)
        b = pool.select()
        if b.name == "a":
            first_a = t
            break
        pool.on_start(b)
        pool.on_end(b, 0.1)
    expected = decay * math.log(50) + 0.1
    assert first_a is not None and abs(first_a - expected) <= 0.15, (first_a, expected)


def test_slow_backend_receives_less_traffic():
    # c answers 10 times slower than a and b. Tolerance: c may keep a trickle (its estimate
    # decays and it is re-probed), but under 2% of requests; a and b split the rest evenly
    # within 5 points.
    shares, _ = simulate({"a": 0.02, "b": 0.02, "c": 0.2}, seed=4)
    assert shares["c"] < 0.02
    assert abs(shares["a"] - shares["b"]) < 0.05


def test_equal_backends_share_evenly():
    # Equal latencies: shares 1/3 each. Tolerance 2 points: with n = 20,000 a 5-sigma binomial
    # band is 1.7 points, and the load feedback (more traffic -> more in flight -> higher
    # cost) only makes the spread tighter than independent draws.
    shares, _ = simulate({"a": 0.05, "b": 0.05, "c": 0.05}, seed=5)
    for name in "abc":
        assert abs(shares[name] - 1 / 3) < 0.02, shares


def test_retry_exclusion_never_returns_the_excluded(clock):
    pool = pool_of("ewma", ["a", "b", "c", "d"], seed=6, clock=clock)
    rng = random.Random(6)
    for _ in range(3000):
        clock.advance(0.01)
        excluded = set(rng.sample(pool.backends, rng.randint(1, 3)))
        chosen = pool.select(exclude=excluded)
        assert chosen is not None and chosen not in excluded
        pool.on_start(chosen)
        pool.on_end(chosen, rng.uniform(0.01, 0.5))
    assert pool.select(exclude=set(pool.backends)) is None


def test_seeded_simulation_repeats():
    first, _ = simulate({"a": 0.02, "b": 0.03, "c": 0.2}, n=3000, seed=9)
    again, _ = simulate({"a": 0.02, "b": 0.03, "c": 0.2}, n=3000, seed=9)
    assert first == again
