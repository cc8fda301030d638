"""consistent_hash: a ring with virtual nodes; keys stick, few move when membership changes."""

from __future__ import annotations

import math
import random
from collections import Counter

from tests.balancing_support import backends, names, pool_of
from lbctl.balancing.consistent_hash import VNODES

KEYS = [f"user-{i}" for i in range(20_000)]


def owners(pool, keys=KEYS):
    return {k: pool.select(k).name for k in keys}


def test_same_key_same_backend_every_time():
    pool = pool_of("consistent_hash", ["a", "b", "c", "d"])
    first = owners(pool, KEYS[:500])
    for _ in range(3):
        assert owners(pool, KEYS[:500]) == first
    # Traffic to other keys in between does not disturb a key's owner.
    names(pool, 100)
    assert owners(pool, KEYS[:500]) == first


def test_ring_is_the_same_in_every_process():
    # BLAKE2b, not Python's salted hash(): these owners are fixed for these names forever, so
    # two lbctl processes (or a restart) agree. The expected values were computed once.
    pool = pool_of("consistent_hash", backends("a", "b", "c", "d", weights=[3, 1, 1, 1]))
    assert pool.select("user-42").name == "d"
    assert pool.select("10.0.0.1").name == "b"
    # A second, independently built pool agrees on every key.
    again = pool_of("consistent_hash", backends("a", "b", "c", "d", weights=[3, 1, 1, 1]), seed=99)
    assert owners(again, KEYS[:2000]) == owners(pool, KEYS[:2000])


def test_keys_spread_by_weight():
    # Expected share = weight / total. Tolerance: a backend owns VNODES x weight points, and
    # its share of the ring then has a relative standard deviation of about
    # 1 / sqrt(VNODES x weight) (a sum of that many random arc lengths): 10% for weight 1.
    # We allow 4 such sigmas, relative to the expected share (sampling 20,000 keys adds
    # under 2% more). A ring that ignored weights would put d at 25%, not 50%: far outside.
    weights = {"a": 1, "b": 1, "c": 2, "d": 4}
    pool = pool_of("consistent_hash", backends(*weights, weights=list(weights.values())))
    counts = Counter(owners(pool).values())
    total = sum(weights.values())
    for name, w in weights.items():
        expected = len(KEYS) * w / total
        tolerance = 4 / math.sqrt(VNODES * w)
        assert abs(counts[name] - expected) / expected < tolerance, (name, counts)


def moved_keys(before, after):
    return [k for k in KEYS if before[k] != after[k]]


def test_removing_one_of_n_moves_about_one_nth_and_only_its_keys():
    # Tolerance on the moved fraction: the removed backend owned a share with relative sd
    # about 1 / sqrt(VNODES) = 10%; 4 sigmas = +-40% of 1/n.
    n = 5
    members = backends(*(f"b{i}" for i in range(n)))
    pool = pool_of("consistent_hash", members)
    before = owners(pool)
    pool.set_backends([b for b in members if b.name != "b2"])
    after = owners(pool)
    moved = moved_keys(before, after)
    assert abs(len(moved) / len(KEYS) - 1 / n) < 0.4 / n
    assert all(before[k] == "b2" for k in moved)
    assert {k for k in KEYS if before[k] == "b2"} == set(moved)
    # The displaced keys spread over the survivors rather than piling onto one neighbour.
    landed = Counter(after[k] for k in moved)
    assert set(landed) == {"b0", "b1", "b3", "b4"}


def test_removing_the_heaviest_backend_moves_only_its_keys():
    # Point counts must not be scaled by the pool's largest weight, or every survivor's
    # points change when the heaviest leaves and keys move between backends that stayed.
    members = backends("a", "b", "c", "d", weights=[3, 1, 1, 1])
    pool = pool_of("consistent_hash", members)
    before = owners(pool)
    pool.set_backends(members[1:])
    moved = moved_keys(before, owners(pool))
    assert moved and all(before[k] == "a" for k in moved)


def test_reweighting_one_backend_moves_keys_only_to_or_from_it():
    members = backends("a", "b", "c", "d")
    pool = pool_of("consistent_hash", members)
    before = owners(pool)
    pool.set_weight(pool.by_name["a"], 2)
    after = owners(pool)
    moved = moved_keys(before, after)
    assert moved and all(after[k] == "a" for k in moved)


def test_adding_a_backend_takes_keys_only_onto_it():
    members = backends("a", "b", "c", "d")
    pool = pool_of("consistent_hash", members)
    before = owners(pool)
    pool.set_backends(members + backends("e"))
    after = owners(pool)
    moved = moved_keys(before, after)
    assert abs(len(moved) / len(KEYS) - 1 / 5) < 0.4 / 5
    assert all(after[k] == "e" for k in moved)


def test_ineligible_backend_moves_only_its_keys_and_gets_them_back():
    pool = pool_of("consistent_hash", [f"b{i}" for i in range(5)])
    before = owners(pool)
    for how in ("health", "admin", "ejection"):
        b = pool.by_name["b3"]
        if how == "health":
            pool.set_healthy(b, False)
        elif how == "admin":
            from lbctl.balancing import AdminState
            pool.set_admin(b, AdminState.DISABLED)
        else:
            pool.eject(b, until=1e9)
        during = owners(pool)
        moved = moved_keys(before, during)
        assert abs(len(moved) / len(KEYS) - 1 / 5) < 0.4 / 5
        assert all(before[k] == "b3" for k in moved)
        assert "b3" not in during.values()
        # Recovery hands back exactly the keys it had: the ring was never rebuilt.
        if how == "health":
            pool.set_healthy(b, True)
        elif how == "admin":
            from lbctl.balancing import AdminState
            pool.set_admin(b, AdminState.ENABLED)
        else:
            pool.eject(b, until=0.0)
        assert owners(pool) == before


def test_exact_exclusion_walks_the_ring():
    # A retry excluding the key's owner goes to the next distinct backend clockwise, the
    # same one every time (and the same one that inherits the key if the owner leaves).
    members = backends("a", "b", "c", "d")
    pool = pool_of("consistent_hash", members)
    for key in KEYS[:200]:
        owner = pool.select(key)
        second = pool.select(key, exclude={owner})
        assert second is not owner
        assert pool.select(key, exclude={owner}) is second
        pool.set_healthy(owner, False)
        assert pool.select(key) is second
        pool.set_healthy(owner, True)


def test_retry_exclusion_never_returns_the_excluded():
    pool = pool_of("consistent_hash", ["a", "b", "c", "d", "e"])
    rng = random.Random(2)
    for i in range(3000):
        excluded = set(rng.sample(pool.backends, rng.randint(1, 4)))
        key = KEYS[i] if i % 3 else None
        chosen = pool.select(key, exclude=excluded)
        assert chosen is not None and chosen not in excluded
    assert pool.select("k", exclude=set(pool.backends)) is None


def test_requests_without_a_key_fall_back_to_weighted_round_robin_over_all():
    # No key (no such header/cookie): smooth weighted round-robin over the active set, so
    # keyless traffic is spread by weight instead of all landing on one backend.
    pool = pool_of("consistent_hash", backends("a", "b", "c", weights=[2, 1, 1]))
    seq = names(pool, 400, key=None)
    assert Counter(seq) == {"a": 200, "b": 100, "c": 100}
    assert "".join(seq[:4]) == "abca"
    pool.set_healthy(pool.by_name["b"], False)
    assert "b" not in names(pool, 100, key=None)


def test_keyless_requests_do_not_disturb_keyed_ones():
    pool = pool_of("consistent_hash", ["a", "b", "c"])
    before = owners(pool, KEYS[:300])
    names(pool, 77, key=None)
    assert owners(pool, KEYS[:300]) == before


def test_cached_key_positions_follow_a_rebuilt_ring():
    """Keys seen before a re-weight must map as a freshly built ring maps them."""
    import random as _random

    from lbctl.balancing import Backend, make_pool
    clock = lambda: 0.0  # noqa: E731

    def fresh(weights):
        return make_pool("p", [Backend(n, weight=w) for n, w in weights], "consistent_hash",
                         rng=_random.Random(1), clock=clock)
    pool = fresh([("a", 1), ("b", 1), ("c", 1)])
    keys = [f"user-{i}" for i in range(500)]
    for k in keys:
        pool.select(k)                                   # fills the position cache
    pool.set_weight(pool.by_name["b"], 3)
    expected = fresh([("a", 1), ("b", 3), ("c", 1)])
    assert [pool.select(k).name for k in keys] == [expected.select(k).name for k in keys]
