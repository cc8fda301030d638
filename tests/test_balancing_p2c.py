"""p2c: two distinct backends drawn at random, the one with fewer in flight wins."""

from __future__ import annotations

import math

from tests.balancing_support import ConstantRng, StubRng, backends, check_exclusion, pool_of, shares


def five_sigma(n: int, p: float) -> float:
    return 5 * math.sqrt(n * p * (1 - p))


def hold(pool, name, n=1):
    b = pool.by_name[name]
    for _ in range(n):
        pool.on_start(b)


def test_exact_choice_between_the_two_drawn():
    # Uniform over 4: first = int(0.0 * 4) = 0 (a); second = int(0.5 * 3) = 1, shifted past
    # the first -> 2 (c). In flight a=3, c=1, so c wins; b and d are not compared at all
    # (b is idle but was not drawn).
    rng = StubRng([0.0, 0.5])
    pool = pool_of("p2c", ["a", "b", "c", "d"], rng=rng)
    hold(pool, "a", 3)
    hold(pool, "c", 1)
    assert pool.select().name == "c"
    assert rng.calls == 2           # no coin flip: no tie


def test_tie_between_the_two_drawn_is_a_coin_flip():
    # Same draw (a, c), both idle: the third value is the coin; < 0.5 swaps the pair.
    pool = pool_of("p2c", ["a", "b", "c", "d"], rng=StubRng([0.0, 0.5, 0.4]))
    assert pool.select().name == "c"
    pool = pool_of("p2c", ["a", "b", "c", "d"], rng=StubRng([0.0, 0.5, 0.6]))
    assert pool.select().name == "a"


def test_the_two_drawn_are_distinct_even_when_the_rng_repeats_itself():
    # An rng that always returns the same value would draw the same index twice; the second
    # draw must still land on a different backend, uniform or weighted.
    for members in (backends("a", "b", "c"), backends("a", "b", "c", weights=[1, 5, 1])):
        for value in (0.0, 0.3, 0.999):
            pool = pool_of("p2c", members, rng=ConstantRng(value))
            it = pool.algorithm.candidates()
            first, second = next(it), next(it)
            it.close()
            assert first is not second


def test_the_two_drawn_are_distinct_over_many_seeded_draws():
    for weights in ([1, 1, 1, 1, 1], [1, 2, 3, 50, 1]):
        pool = pool_of("p2c", backends(*"abcde", weights=weights), seed=8)
        for _ in range(5000):
            it = pool.algorithm.candidates()
            first, second = next(it), next(it)
            it.close()
            assert first is not second


def test_busiest_backend_never_wins():
    # Whatever pair is drawn, the backend with the most in flight loses the comparison,
    # because the other one drawn is always a different, less loaded backend.
    pool = pool_of("p2c", ["a", "b", "c"], seed=3)
    hold(pool, "c", 5)
    for _ in range(2000):
        assert pool.select().name != "c"


def test_uniform_distribution_when_idle():
    # All idle: each pair is uniform and the tie a fair coin, so each backend's share is 1/n.
    # Tolerance: 5 binomial standard deviations (a miss means bias, not bad luck: ~1 in 10^6).
    n = 40_000
    counts = shares(pool_of("p2c", ["a", "b", "c", "d"], seed=13), n)
    for name in "abcd":
        assert abs(counts[name] - n / 4) < five_sigma(n, 1 / 4), counts


def test_weights_act_through_the_draw():
    # Weights 2, 1, 1, all idle. The pair is drawn weight-proportionally: a is in it with
    # probability 1/2 + 2 * (1/4 * 2/3) = 5/6, and wins half its ties: p(a) = 5/12,
    # p(b) = p(c) = 7/24. Same 5-sigma binomial tolerance.
    n = 40_000
    counts = shares(pool_of("p2c", backends("a", "b", "c", weights=[2, 1, 1]), seed=14), n)
    for name, p in (("a", 5 / 12), ("b", 7 / 24), ("c", 7 / 24)):
        assert abs(counts[name] - n * p) < five_sigma(n, p), counts


def test_retry_exclusion_never_returns_the_excluded():
    pool = pool_of("p2c", backends("a", "b", "c", "d", weights=[1, 1, 1, 20]), seed=5)
    check_exclusion(pool)


def test_single_backend_is_served():
    pool = pool_of("p2c", ["only"], seed=1)
    assert pool.select().name == "only"


def test_seeded_runs_repeat():
    def run(seed):
        pool = pool_of("p2c", ["a", "b", "c"], seed=seed)
        return [pool.select().name for _ in range(200)]
    assert run(42) == run(42)
    assert run(42) != run(43)
