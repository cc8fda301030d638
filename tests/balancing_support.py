"""Shared helpers for the balancing tests: a controllable clock, an rng stub, small drivers.

The balancing core is pure (clock and rng injected), so these tests never sleep and never
read the wall clock: time is whatever a ``ManualClock`` says, randomness is a seeded
``random.Random`` or a ``StubRng`` that returns chosen values.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Hashable, Iterable, Sequence

from lbctl.balancing import Backend, Pool, make_pool
from tests.support import ManualClock


class StubRng:
    """Returns the given values from ``random()`` in order; ``shuffle`` keeps the order.

    Lets a test decide exactly which backends a random algorithm draws.
    """

    def __init__(self, values: Iterable[float]) -> None:
        self.values = list(values)
        self.calls = 0

    def random(self) -> float:
        value = self.values[self.calls]
        self.calls += 1
        return value

    def shuffle(self, seq: list) -> None:
        pass


class ConstantRng(StubRng):
    """``random()`` always returns the same value."""

    def __init__(self, value: float) -> None:
        super().__init__([])
        self.value = value

    def random(self) -> float:
        self.calls += 1
        return self.value

    def shuffle(self, seq: list) -> None:
        pass


def backends(*names: str, weights: Sequence[float] | None = None) -> list[Backend]:
    weights = weights or [1.0] * len(names)
    return [Backend(n, weight=w) for n, w in zip(names, weights)]


def pool_of(algorithm: str, members: Sequence[Backend] | Sequence[str], *, seed: int = 1,
            rng=None, clock: ManualClock | None = None, **kwargs) -> Pool:
    if members and isinstance(members[0], str):
        members = backends(*members)
    return make_pool("test", list(members), algorithm,
                     rng=rng if rng is not None else random.Random(seed),
                     clock=clock if clock is not None else ManualClock(), **kwargs)


def pick(pool: Pool, key: Hashable | None = None, exclude=(), latency: float = 0.0) -> Backend:
    """One complete request: select, start, end. Returns the backend that served it."""
    b = pool.select(key, exclude=exclude)
    assert b is not None, "no backend selected"
    pool.on_start(b)
    pool.on_end(b, latency)
    return b


def names(pool: Pool, n: int, key: Hashable | None = None) -> list[str]:
    return [pick(pool, key).name for _ in range(n)]


def shares(pool: Pool, n: int, key: Hashable | None = None) -> Counter:
    return Counter(names(pool, n, key))


def check_exclusion(pool: Pool, seed: int = 5, rounds: int = 5000) -> None:
    """A retry's exclusion set is honoured for any subset; excluding all gives None."""
    import random as _random
    rng = _random.Random(seed)
    for _ in range(rounds):
        excluded = set(rng.sample(pool.backends, rng.randint(1, len(pool.backends) - 1)))
        chosen = pool.select(exclude=excluded)
        assert chosen is not None and chosen not in excluded
    assert pool.select(exclude=set(pool.backends)) is None
