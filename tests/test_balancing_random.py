"""random: a uniform draw, weight-proportional when weights differ."""

from __future__ import annotations

import math

from tests.balancing_support import StubRng, backends, check_exclusion, names, pool_of, shares


def five_sigma(n: int, p: float) -> float:
    return 5 * math.sqrt(n * p * (1 - p))


def test_exact_choice_from_the_drawn_value():
    # Uniform over 4: index = int(r * 4).
    pool = pool_of("random", ["a", "b", "c", "d"], rng=StubRng([0.0, 0.26, 0.5, 0.99]))
    assert names(pool, 4) == ["a", "b", "c", "d"]
    # Weights 1, 3: cumulative [1, 4]; r * 4 falls in [0, 1) -> a, [1, 4) -> b.
    pool = pool_of("random", backends("a", "b", weights=[1, 3]),
                   rng=StubRng([0.2, 0.25, 0.3, 0.99]))
    assert names(pool, 4) == ["a", "b", "b", "b"]


def test_uniform_distribution():
    # Tolerance: 5 binomial standard deviations, sqrt(n p (1 - p)) with p = 1/4, so the test
    # fails only if the draw is biased, not because of the seed (a 5-sigma miss is ~1 in 10^6).
    n = 40_000
    counts = shares(pool_of("random", ["a", "b", "c", "d"], seed=11), n)
    for name in "abcd":
        assert abs(counts[name] - n / 4) < five_sigma(n, 1 / 4), counts


def test_weighted_distribution():
    # Weights 1, 2, 5: expected shares 1/8, 2/8, 5/8; same 5-sigma binomial tolerance.
    n = 40_000
    pool = pool_of("random", backends("a", "b", "c", weights=[1, 2, 5]), seed=12)
    counts = shares(pool, n)
    for name, p in (("a", 1 / 8), ("b", 2 / 8), ("c", 5 / 8)):
        assert abs(counts[name] - n * p) < five_sigma(n, p), counts


def test_retry_exclusion_never_returns_the_excluded():
    pool = pool_of("random", backends("a", "b", "c", "d", weights=[1, 1, 1, 10]), seed=5)
    check_exclusion(pool)


def test_exclusion_leaves_the_others_uniform():
    # With a excluded, the retry is spread over b, c, d; 5-sigma binomial tolerance, p = 1/3.
    pool = pool_of("random", ["a", "b", "c", "d"], seed=6)
    a = pool.by_name["a"]
    n = 30_000
    counts = {}
    for _ in range(n):
        b = pool.select(exclude={a})
        counts[b.name] = counts.get(b.name, 0) + 1
    assert set(counts) == {"b", "c", "d"}
    for name in "bcd":
        assert abs(counts[name] - n / 3) < five_sigma(n, 1 / 3), counts


def test_seeded_runs_repeat():
    run = lambda: names(pool_of("random", ["a", "b", "c"], seed=42), 200)
    assert run() == run()
    assert run() != names(pool_of("random", ["a", "b", "c"], seed=43), 200)
