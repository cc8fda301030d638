"""round_robin: strict rotation over the eligible backends, weights ignored."""

from __future__ import annotations

import random

from tests.balancing_support import backends, names, pick, pool_of


def test_exact_rotation_order():
    pool = pool_of("round_robin", ["a", "b", "c"])
    assert names(pool, 7) == ["a", "b", "c", "a", "b", "c", "a"]


def test_weights_are_ignored():
    # round_robin ignores weights (README): a weight of 5 does not earn extra turns.
    pool = pool_of("round_robin", backends("a", "b", weights=[5, 1]))
    assert names(pool, 4) == ["a", "b", "a", "b"]


def test_rotation_skips_ineligible_and_takes_it_back():
    pool = pool_of("round_robin", ["a", "b", "c"])
    assert names(pool, 2) == ["a", "b"]
    pool.set_healthy(pool.by_name["c"], False)
    assert names(pool, 4) == ["a", "b", "a", "b"]
    pool.set_healthy(pool.by_name["c"], True)
    assert names(pool, 3) == ["c", "a", "b"]


def test_backend_leaving_before_the_cursor_does_not_make_the_rotation_skip_anyone():
    # Served a; a goes down. The next turn is b's: the rotation must not jump to c
    # because the active list shifted left under the cursor.
    pool = pool_of("round_robin", ["a", "b", "c", "d"])
    assert names(pool, 1) == ["a"]
    pool.set_healthy(pool.by_name["a"], False)
    assert names(pool, 3) == ["b", "c", "d"]


def test_backend_returning_before_the_cursor_does_not_serve_anyone_twice():
    # a is down; b, c served. a comes back: d's turn is next, then a, b, c.
    pool = pool_of("round_robin", ["a", "b", "c", "d"])
    pool.set_healthy(pool.by_name["a"], False)
    assert names(pool, 2) == ["b", "c"]
    pool.set_healthy(pool.by_name["a"], True)
    assert names(pool, 4) == ["d", "a", "b", "c"]


def test_retry_exclusion_takes_the_next_in_rotation_and_never_the_excluded():
    pool = pool_of("round_robin", ["a", "b", "c"])
    a, b, c = pool.backends
    assert pool.select(exclude={a}) is b
    rng = random.Random(7)
    for _ in range(2000):
        excluded = set(rng.sample(pool.backends, rng.randint(1, 2)))
        chosen = pool.select(exclude=excluded)
        assert chosen is not None and chosen not in excluded
    assert pool.select(exclude={a, b, c}) is None


def test_distribution_is_exactly_even_at_every_prefix():
    # Tolerance: zero. Strict rotation means that after any number of picks no backend is
    # more than one turn ahead of another, so max - min <= 1 at every prefix (no statistics).
    pool = pool_of("round_robin", ["a", "b", "c", "d", "e"])
    counts = dict.fromkeys("abcde", 0)
    for _ in range(10_000):
        counts[pick(pool).name] += 1
        assert max(counts.values()) - min(counts.values()) <= 1
    assert counts == dict.fromkeys("abcde", 2000)
