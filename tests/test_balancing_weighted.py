"""weighted: smooth weighted round-robin (NGINX)."""

from __future__ import annotations

import random

from tests.balancing_support import backends, names, pick, pool_of


def test_exact_order_5_1_1_is_interleaved():
    # Each pick adds every weight to its running value; the largest wins and gives back the
    # total (7). Ties go to the first. The state before and after each pick:
    #
    #   pick | current before (a, b, c) | chosen | current after
    #   -----+--------------------------+--------+--------------
    #    1   |  5,  1,  1               |   a    | -2,  1,  1
    #    2   |  3,  2,  2               |   a    | -4,  2,  2
    #    3   |  1,  3,  3               |   b    |  1, -4,  3
    #    4   |  6, -3,  4               |   a    | -1, -3,  4
    #    5   |  4, -2,  5               |   c    |  4, -2, -2
    #    6   |  9, -1, -1               |   a    |  2, -1, -1
    #    7   |  7,  0,  0               |   a    |  0,  0,  0   (back to the start)
    pool = pool_of("weighted", backends("a", "b", "c", weights=[5, 1, 1]))
    assert "".join(names(pool, 7)) == "aabacaa"
    # Back to the start: from here it picks exactly as a pool that never picked.
    fresh = pool_of("weighted", backends("a", "b", "c", weights=[5, 1, 1]))
    assert names(pool, 21) == names(fresh, 21) == list("aabacaa" * 3)


def test_equal_weights_rotate():
    pool = pool_of("weighted", ["a", "b", "c"])
    assert "".join(names(pool, 6)) == "abcabc"


def test_distribution_matches_weights_exactly_per_cycle():
    # Tolerance: zero over whole cycles, and less than one pick at any prefix. Smooth WRR is
    # deterministic: every run of sum(weights) picks gives each backend exactly its weight,
    # and the running values stay bounded, so no backend drifts a whole turn off its ideal share.
    weights = {"a": 3, "b": 2, "c": 1, "d": 4}
    pool = pool_of("weighted", backends(*weights, weights=list(weights.values())))
    total = sum(weights.values())
    counts = dict.fromkeys(weights, 0)
    for k in range(1, 100 * total + 1):
        counts[pick(pool).name] += 1
        for n, w in weights.items():
            assert abs(counts[n] - k * w / total) < 1.0 + 1e-9
    assert counts == {n: 100 * w for n, w in weights.items()}


def test_fractional_weights_are_honoured():
    # Slow start hands the algorithm fractional effective weights.
    pool = pool_of("weighted", backends("a", "b", weights=[0.25, 1.0]))
    counts = {"a": 0, "b": 0}
    for n in names(pool, 500):
        counts[n] += 1
    assert counts == {"a": 100, "b": 400}


def test_retry_exclusion_never_returns_the_excluded():
    pool = pool_of("weighted", backends("a", "b", "c", weights=[5, 1, 1]))
    a, b, c = pool.backends
    # a would win; excluded, the next by running value (b and c tie, first wins) is offered.
    assert pool.select(exclude={a}) is b
    rng = random.Random(3)
    for _ in range(2000):
        excluded = set(rng.sample(pool.backends, rng.randint(1, 2)))
        chosen = pool.select(exclude=excluded)
        assert chosen is not None and chosen not in excluded
    assert pool.select(exclude={a, b, c}) is None


def test_a_flip_elsewhere_keeps_the_cycle_of_the_others():
    # Rebuilding the active set keeps running values of backends that stay, so taking c out
    # and back does not restart a's and b's interleaving from scratch.
    pool = pool_of("weighted", backends("a", "b", "c", weights=[2, 1, 1]))
    seen = names(pool, 400)
    pool.set_healthy(pool.by_name["c"], False)
    without_c = names(pool, 300)
    assert "c" not in without_c
    assert without_c.count("a") == 200 and without_c.count("b") == 100
    pool.set_healthy(pool.by_name["c"], True)
    seen += names(pool, 400)
    assert seen.count("a") == 400 and seen.count("b") == 200 and seen.count("c") == 200
