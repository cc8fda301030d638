"""The interface every balancing algorithm implements.

An algorithm *ranks*: ``candidates(key)`` yields backends from the active set in order of
preference, lazily, so the usual request costs one step. The pool filters what it yields
(exclusion set of a retry, eligibility, an ``accept`` predicate) and calls ``chosen`` on
the one it takes. Load feedback arrives through ``on_start``/``on_end`` after the pool has
updated ``Backend.inflight`` (and the EWMA estimate, for an algorithm that reads it).

Algorithms never read the clock or module-level ``random``: the pool hands them its
``rng`` and ``clock``, so the proxy and the simulator drive identical code.
"""

from __future__ import annotations

import random
from typing import Callable, Hashable, Iterator, Sequence

from lbctl.balancing.backend import Backend


class Algorithm:
    """Base class: holds the active set and the injected rng/clock."""

    name = ""
    uses_key = False
    # candidates() draws its first two together (power of two choices): a trace may take
    # the second before the first is refused without changing anything (Pool.select).
    draws_pair = False
    # It reads the backends' peak-EWMA latency: only then does the pool keep it up to date
    # (two exponentials per request that nothing else would read).
    reads_latency = False

    def __init__(self, rng: random.Random, clock: Callable[[], float], *,
                 ewma_decay: float = 10.0) -> None:
        self.rng = rng
        self.clock = clock
        self.ewma_decay = ewma_decay
        self.active: list[Backend] = []

    def set_members(self, members: Sequence[Backend]) -> None:
        """Every backend of the pool, eligible or not; called when membership or weights change."""

    def rebuild(self, active: Sequence[Backend]) -> None:
        """Take a new active set (membership, eligibility or weights changed)."""
        self.active = list(active)

    def candidates(self, key: Hashable | None = None) -> Iterator[Backend]:
        raise NotImplementedError

    def chosen(self, backend: Backend) -> None:
        """The pool took ``backend`` from the candidates."""

    def on_start(self, backend: Backend) -> None:
        """A request started on ``backend`` (inflight already incremented)."""

    def on_end(self, backend: Backend) -> None:
        """A request ended on ``backend`` (inflight already decremented)."""


def weights_differ(backends: Sequence[Backend]) -> bool:
    """True when a weighted draw would differ from a uniform one."""
    if not backends:
        return False
    first = backends[0].effective_weight
    return any(b.effective_weight != first for b in backends)


def remaining_in_random_order(rng: random.Random, backends: Sequence[Backend],
                              skip: Sequence[Backend]) -> list[Backend]:
    """The fallback order once an algorithm's own proposals were all refused."""
    rest = [b for b in backends if b not in skip]
    rng.shuffle(rest)
    return rest
